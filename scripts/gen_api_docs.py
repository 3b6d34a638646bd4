"""Generate docs/api.md, the API reference, from the numpydoc docstrings.

Walks the public names (``__all__``) of fastconv, fastconv.nn, fastconv.nn.init,
fastconv.optim, fastconv.models and fastconv.datasets, in that order, and writes
one section per function or class: signature, then the docstring with its
numpydoc sections (Parameters, Returns, ...) turned into Markdown. Classes list
the public methods they define themselves.

    python scripts/gen_api_docs.py            # rewrite docs/api.md
    python scripts/gen_api_docs.py --check    # exit 1 if docs/api.md is stale
    python scripts/gen_api_docs.py --missing  # list public callables lacking a
                                              # numpydoc Parameters section

It documents whichever ``fastconv`` Python imports, so run it with the package
built (in place, or installed from this checkout).
"""

import argparse
import difflib
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"

MODULES = [
    ("fastconv", "Kernels: convolution, pooling, ReLU and threads (`fastconv/functional.py`)"),
    ("fastconv.nn", "Layers, losses, `Sequential`, callbacks, persistence"),
    ("fastconv.nn.init", "Weight initialisers"),
    ("fastconv.optim", "Optimisers and learning-rate schedules"),
    ("fastconv.models", "Ready-made models"),
    ("fastconv.datasets", "MNIST loading, batching and data expansion"),
]

SECTIONS = ("Parameters", "Other Parameters", "Returns", "Yields", "Raises", "Warns",
            "Attributes", "Methods", "See Also", "Notes", "References", "Examples")
LISTED = {"Parameters", "Other Parameters", "Returns", "Yields", "Raises", "Warns",
          "Attributes", "Methods"}


def public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    out = []
    for name in names:
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        if inspect.isclass(obj) or callable(obj):
            out.append((name, obj))
    return out


class _Annotation:
    """An annotation kept as source text (modules with ``from __future__ import
    annotations`` hold every annotation as a string): printed as written, not
    repr'd as a quoted string (``-> None``, not ``-> 'None'``)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _unquoted(sig):
    """``sig`` with its string annotations printed unquoted (defaults keep their repr)."""
    def fix(annotation):
        return _Annotation(annotation) if isinstance(annotation, str) else annotation

    params = [p.replace(annotation=fix(p.annotation)) for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=fix(sig.return_annotation))


def signature(name, obj):
    try:
        # not eval_str=True: evaluating would fail on names imported only for
        # type checkers and would spell typing aliases out in full
        sig = str(_unquoted(inspect.signature(obj)))
    except (TypeError, ValueError):
        sig = "(...)"
    # default values that print an address would make the output differ per run
    sig = re.sub(r" at 0x[0-9a-fA-F]+", "", sig)
    return f"{name}{sig}"


def split_sections(doc):
    """Return (summary_lines, [(section_title, lines)]) of a cleaned docstring."""
    lines = doc.splitlines()
    head, sections, title, body = [], [], None, []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (line.strip() in SECTIONS and nxt.strip() and set(nxt.strip()) == {"-"}
                and len(nxt.strip()) >= len(line.strip()) - 1):
            if title is None:
                head = body
            else:
                sections.append((title, body))
            title, body = line.strip(), []
            i += 2
            continue
        body.append(line)
        i += 1
    if title is None:
        head = body
    else:
        sections.append((title, body))
    return head, sections


def render_listed(lines):
    """numpydoc 'name : type' + indented description -> one Markdown list item each."""
    out, head, desc = [], None, []

    def flush():
        if head is not None:
            out.append(head + (" — " + " ".join(desc) if desc else ""))

    for line in lines:
        if not line.strip():
            continue
        if line.startswith((" ", "\t")) and head is not None:
            desc.append(line.strip())
            continue
        flush()
        name, sep, typ = line.strip().partition(" : ")
        head, desc = f"- `{name.strip()}`" + (f" : {typ.strip()}" if sep else ""), []
    flush()
    return out


def render_text(lines):
    """Free text; doctest blocks and literal blocks ('::') become code blocks."""
    out, code = [], False
    for line in lines:
        is_code = line.lstrip().startswith((">>>", "...")) or (code and line.strip())
        if is_code and not code:
            out.append("```python")
            code = True
        elif code and not is_code:
            out.append("```")
            code = False
        out.append(line.rstrip() if code else line.strip() if not line.startswith("    ")
                   else line.rstrip())
    if code:
        out.append("```")
    return out


def render_doc(obj):
    doc = inspect.getdoc(obj)
    if not doc:
        return ["*(no docstring)*"]
    # Sphinx roles and reST literals -> Markdown code spans
    doc = re.sub(r":(?:func|class|meth|attr|mod|data|obj|exc):`~?([^`]+)`", r"`\1`", doc)
    doc = doc.replace("``", "`")
    head, sections = split_sections(doc)
    out = [line.rstrip() for line in head]
    for title, body in sections:
        while out and not out[-1].strip():
            out.pop()
        out += ["", f"**{title}**", ""]
        out += render_listed(body) if title in LISTED else render_text(body)
    while out and not out[-1].strip():
        out.pop()
    return out


def own_methods(cls):
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            yield name, member, True
        elif inspect.isfunction(member):
            yield name, member, False


def render_object(qualname, name, obj):
    out = [f"### `{qualname}`", ""]
    if inspect.isclass(obj):
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        out += ["```python", f"class {signature(name, obj)}" + (
            f"  # bases: {', '.join(bases)}" if bases else ""), "```", ""]
        out += render_doc(obj)
        for mname, member, is_prop in own_methods(obj):
            if is_prop:
                out += ["", f"#### `{name}.{mname}` (property)", ""]
            else:
                out += ["", f"#### `{name}.{signature(mname, member)}`", ""]
            out += render_doc(member)
    else:
        out += ["```python", signature(name, obj), "```", ""]
        out += render_doc(obj)
    return out + [""]


def render():
    import fastconv

    out = [
        "# fastconv API reference",
        "",
        "<!-- Generated by scripts/gen_api_docs.py from the docstrings: do not edit by hand.",
        "     Regenerate with `python scripts/gen_api_docs.py`. -->",
        "",
        f"Version {fastconv.__version__}. Conventions (NCHW input, OIHW weight, float32 or "
        "float64, output size `H_out = (H + 2*padding - dilation*(k - 1) - 1) // stride + 1`) "
        "are in [design.md](design.md).",
        "",
        "## Contents",
        "",
    ]
    body = []
    for modname, blurb in MODULES:
        module = importlib.import_module(modname)
        anchor = modname.replace(".", "")
        out.append(f"- [`{modname}`](#{anchor}): {blurb}")
        body += [f"## {modname}", "", blurb + ".", ""]
        for name, obj in public_names(module):
            body += render_object(f"{modname}.{name}", name, obj)
    text = "\n".join(out + [""] + body)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def has_parameters(obj):
    """True unless obj takes parameters and its docstring has no Parameters section."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = [p for p in inspect.signature(target).parameters.values()
                  if p.name not in ("self", "cls")]
    except (TypeError, ValueError):
        return True
    if not params:
        return True
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and target is not object.__init__:
        doc += "\n" + (inspect.getdoc(target) or "")
    _, sections = split_sections(doc)
    return any(t == "Parameters" for t, _ in sections)


def missing_docs():
    """Public functions/classes (and classes' own public methods) without proper docs."""
    problems = []
    for modname, _ in MODULES:
        module = importlib.import_module(modname)
        for name, obj in public_names(module):
            qual = f"{modname}.{name}"
            if not inspect.getdoc(obj):
                problems.append(f"{qual}: no docstring")
            elif not has_parameters(obj):
                problems.append(f"{qual}: no numpydoc 'Parameters' section")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    ap.add_argument("--missing", action="store_true",
                    help="list public callables without a numpydoc Parameters section")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.missing:
        problems = missing_docs()
        print("\n".join(problems) or "every public callable has a Parameters section")
        return 1 if problems else 0
    text = render()
    if args.check:
        old = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), text.splitlines(True), str(args.out), "generated", n=1))
            print(f"\n{args.out} is stale: run python scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    # Prefer this checkout's in-place build when there is one (python setup.py
    # build_ext --inplace), else whatever fastconv is installed.
    if any((ROOT / "fastconv").glob("_kernels*.*")) and any(
            p.suffix in (".so", ".pyd") for p in (ROOT / "fastconv").glob("_kernels*")):
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
