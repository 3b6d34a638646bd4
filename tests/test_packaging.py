"""What a user installs: sdist contents, version, stubs, API docs, ``fastconv info``.

Fast tests (default run, no network, a few seconds; mypy's first run ~10 s):

* MANIFEST.in puts every source the wheel build needs into the sdist and keeps
  build products (Cython's generated ``fastconv/_kernels.c``, ``.so``) out;
* the version lives in one place and the installed metadata agrees with it;
* ``python -m fastconv info`` reports version, build, SIMD path, threads, numpy;
* the type stubs match the compiled module (``mypy.stubtest``, if mypy is installed);
* public callables have numpydoc docstrings with a Parameters section.

Release checks (``pytest -m slow tests/test_packaging.py``, minutes, needs PyPI):
``scripts/check_wheel.sh`` end to end - sdist, wheel from the sdist, bare venv -
and docs/api.md being what ``scripts/gen_api_docs.py`` generates now.
"""

import ast
import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

import fastconv
from fastconv import cli

ROOT = Path(__file__).resolve().parents[1]
PKG_PARENT = Path(fastconv.__file__).resolve().parents[1]

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None


def _pyproject():
    if tomllib is None:
        pytest.skip("tomllib needs Python >= 3.11")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ sdist ---
def _setup_py_sources():
    """The C sources setup.py compiles (its CSRC list), read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CSRC"
                                                 for t in node.targets)):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no CSRC list")


def _manifest_file_list(extra_files=()):
    """Apply MANIFEST.in to the checkout the way setuptools' sdist does.

    Starts, like setuptools, from its defaults - which include the extension's
    sources *after* cythonize, i.e. the generated fastconv/_kernels.c - plus
    ``extra_files`` (build products that may lie in a developer's tree), then
    runs every MANIFEST.in line. No build, no network, well under a second.
    """
    egg_info = pytest.importorskip("setuptools.command.egg_info")
    files = [str(p.relative_to(ROOT)).replace(os.sep, "/") for p in ROOT.rglob("*")
             if p.is_file() and ".git" not in p.parts]
    fl = egg_info.FileList()
    fl.allfiles = sorted(set(files) | set(extra_files))
    fl.files = ["fastconv/_kernels.c", *extra_files]
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            fl.process_template_line(line)
    return set(fl.files)


def test_sdist_carries_the_sources_and_no_build_products():
    products = ["fastconv/_kernels.c", "fastconv/_kernels.cpython-311-x86_64-linux-gnu.so",
                "fastconv/_kernels.cp311-win_amd64.pyd", "build/lib/fastconv/x.so",
                "csrc/fc_conv.o"]
    files = _manifest_file_list(products)
    required = ["README.md", "pyproject.toml", "setup.py", "fastconv/_kernels.pyx",
                "fastconv/_kernels.pxd", "fastconv/_kernels.pyi", "fastconv/functional.pyi",
                "fastconv/py.typed", "fastconv/nn/__init__.py",
                *_setup_py_sources(),
                *(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.h"))]
    missing = [f for f in required if f not in files]
    assert not missing, f"MANIFEST.in leaves these out of the sdist: {missing}"
    shipped = sorted(set(products) & files)
    assert not shipped, f"MANIFEST.in ships build products: {shipped}"


def test_every_c_source_setup_py_compiles_exists():
    missing = [f for f in _setup_py_sources() if not (ROOT / f).is_file()]
    assert not missing, f"setup.py compiles files that do not exist: {missing}"


# ---------------------------------------------------------------- version ---
def test_version_has_one_source():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project.get("dynamic", [])
    attr = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "fastconv._version.__version__"
    text = (ROOT / "fastconv" / "_version.py").read_text()
    assert re.search(r'__version__ = "\d+\.\d+\.\d+', text)
    others = [p for p in (ROOT / "fastconv").rglob("*.py")
              if p.name != "_version.py" and re.search(r'__version__\s*=\s*["\']', p.read_text())]
    assert not others, f"a second hard-coded version: {others}"


def test_installed_metadata_version_matches():
    try:
        dist = md.distribution("fastconv")
    except md.PackageNotFoundError:
        pytest.skip("fastconv is not installed (in-place build): no metadata to compare")
    assert dist.version == fastconv.__version__, (
        f"installed metadata says {dist.version}, fastconv.__version__ is "
        f"{fastconv.__version__} (imported from {fastconv.__file__}): reinstall")


# ---------------------------------------------------------- fastconv info ---
def test_info_reports_build_simd_threads_numpy(capsys):
    import numpy as np

    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    fields = dict(line.split(None, 1) for line in text.strip().splitlines())
    assert fields["version"] == fastconv.__version__
    assert fields["openmp"] in ("True", "False") and fields["compiler"]
    assert fields["simd"] in ("generic", "avx2", "avx512")
    assert int(fields["threads"]) == fastconv.get_num_threads() >= 1
    assert fields["numpy"] == np.__version__


def test_python_m_fastconv_info_json():
    env = dict(os.environ, PYTHONPATH=str(PKG_PARENT))
    r = subprocess.run([sys.executable, "-m", "fastconv", "info", "--json"], env=env,
                       cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import json

    info = json.loads(r.stdout)
    for key in ("version", "openmp", "compiler", "simd", "threads", "numpy"):
        assert key in info, f"'fastconv info' lacks {key}: {info}"


# ------------------------------------------------------------------ types ---
def test_stubs_ship_with_the_package():
    pkg = Path(fastconv.__file__).parent
    for name in ("_kernels.pyi", "functional.pyi", "py.typed"):
        assert (pkg / name).is_file(), f"{name} is missing next to {fastconv.__file__}"


def _stub_signatures(path):
    """{name: [(param, kind)]} of the top-level functions in a .pyi (first overload)."""
    sigs = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name not in sigs:
            a = node.args
            sigs[node.name] = ([(x.arg, "POSITIONAL_OR_KEYWORD") for x in a.posonlyargs + a.args]
                               + [(x.arg, "KEYWORD_ONLY") for x in a.kwonlyargs])
    return sigs


@pytest.mark.parametrize("modname", ["fastconv._kernels", "fastconv.functional"])
def test_stubs_match_the_runtime_signatures(modname):
    """Every public function of the module is in its stub, with the same parameters.

    A quick, always-on version of ``mypy.stubtest`` (see the slow test below):
    a changed signature in fastconv/_kernels.pyx or fastconv/functional.py
    fails here until fastconv/_kernels.pyi / fastconv/functional.pyi follow.
    """
    import inspect

    module = importlib.import_module(modname)
    stub = Path(module.__file__).parent / (modname.rsplit(".", 1)[1] + ".pyi")
    stubs = _stub_signatures(stub)
    problems = []
    for name, obj in vars(module).items():
        if name.startswith("_") or not callable(obj) or inspect.isclass(obj):
            continue
        if getattr(obj, "__module__", modname) != modname:
            continue  # imported from elsewhere
        if name not in stubs:
            problems.append(f"{name}: not in {stub.name}")
            continue
        runtime = [(p.name, "KEYWORD_ONLY" if p.kind == p.KEYWORD_ONLY else
                    "POSITIONAL_OR_KEYWORD") for p in inspect.signature(obj).parameters.values()]
        if runtime != stubs[name]:
            problems.append(f"{name}: runtime {runtime} != stub {stubs[name]}")
    problems += [f"{name}: in {stub.name} but not at runtime" for name in stubs
                 if not hasattr(module, name)]
    assert not problems, f"{stub} is out of date:\n" + "\n".join(problems)


def _mypy_env():
    env = dict(os.environ, PYTHONPATH=str(PKG_PARENT))
    site = {os.path.realpath(p) for p in sysconfig.get_paths().values()}
    if os.path.realpath(PKG_PARENT) not in site:  # in-place build: show mypy the stubs
        env["MYPYPATH"] = str(PKG_PARENT)
    return env


def test_mypy_passes_on_the_package():
    """``mypy`` over fastconv/ with the project's config (typed stubs, py.typed)."""
    pytest.importorskip("mypy", reason="mypy not installed (pip install '.[dev]')")
    # incremental cache outside the repo, kept between runs: ~1 s warm, ~6 s cold
    cache = Path(tempfile.gettempdir()) / "fastconv-mypy-cache"
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.slow
def test_stubtest_on_the_compiled_module():
    """mypy.stubtest: the stubs agree with the built module (types, defaults, names).

    Opt-in because stubtest cannot use mypy's cache (~10 s per run).
    """
    pytest.importorskip("mypy", reason="mypy not installed (pip install '.[dev]')")
    cmd = [sys.executable, "-m", "mypy.stubtest", "fastconv._kernels", "fastconv.functional",
           "--mypy-config-file", str(ROOT / "pyproject.toml")]
    r = subprocess.run(cmd, env=_mypy_env(), cwd=tempfile.gettempdir(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


# ------------------------------------------------------------------- docs ---
# Public callables that lacked a numpydoc Parameters section when this test was
# written (reported to their owners). New ones fail the test; this list may only shrink.
KNOWN_MISSING_PARAMETERS = {
    "fastconv.conv2d_output_shape",
    "fastconv.nn.BatchNorm1d",
    "fastconv.nn.get_layer_class",
    "fastconv.nn.init.ones",
    "fastconv.nn.init.uniform",
    "fastconv.nn.init.glorot_uniform",
    "fastconv.nn.init.glorot_normal",
    "fastconv.nn.init.xavier_uniform",
    "fastconv.nn.init.xavier_normal",
    "fastconv.nn.init.he_normal",
    "fastconv.nn.init.he_uniform",
    "fastconv.nn.init.kaiming_normal",
    "fastconv.nn.init.kaiming_uniform",
    "fastconv.optim.register_optimizer",
}


def test_public_callables_have_numpydoc_docstrings():
    gen = _load_script("gen_api_docs")
    problems = [p for p in gen.missing_docs() if p.split(":")[0] not in KNOWN_MISSING_PARAMETERS]
    assert not problems, "public callables without numpydoc docs:\n" + "\n".join(problems)


@pytest.mark.slow
def test_api_reference_is_up_to_date():
    """docs/api.md == what gen_api_docs.py renders now (a release check, opt-in).

    Opt-in with the other release checks (``-m slow``) rather than in every run:
    any docstring edit makes it fail until docs/api.md is regenerated, which would
    block unrelated work; the test above guards what matters day to day.
    """
    gen = _load_script("gen_api_docs")
    expected = gen.render()
    actual = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert actual == expected, (
        "docs/api.md is stale (a docstring or signature changed): "
        "run `python scripts/gen_api_docs.py` and commit docs/api.md")


# Linked from README.md but written by another engineer; allowed to be missing
# only until it lands.
PENDING_DOCS = {"docs/reliability.md"}


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text)
    missing = [link for link in links if not (ROOT / link).exists() and link not in PENDING_DOCS]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_readme_setup_commands_unchanged():
    """CI (.ci/run) runs exactly these two commands; the README must keep saying them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install . && python -m fastconv train --model lenet5 --data-dir ../shared/mnist" in text
    assert 'pip install ".[test,torch]" && pytest' in text
    assert "## Benchmarks" in text and "<!-- bench-table -->" in text


def test_readme_kernel_quick_start_runs():
    """The kernel quick start in README.md runs as written and gives the shapes it claims."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start: the kernels", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2
    ns = {}
    exec(compile(blocks[0], "README.md (kernel quick start)", "exec"), ns)
    assert ns["y"].shape == (64, 6, 28, 28) and ns["p"].shape == (64, 6, 14, 14)
    assert ns["gx"].shape == (64, 1, 28, 28) and ns["idx"].dtype.name == "int64"
    assert ns["a"].shape == ns["ga"].shape[:2] + (14, 14) and ns["gy"].shape == ns["y"].shape
    loop = blocks[1].replace("range(100)", "range(2)")
    exec(compile(loop, "README.md (out= buffers)", "exec"), ns)
    assert ns["grads"][1].shape == (6, 1, 5, 5)


# ----------------------------------------------------------- cibuildwheel ---
def test_cibuildwheel_config_is_minimal_and_standard():
    cfg = _pyproject()["tool"]["cibuildwheel"]
    for pattern in ("pp*", "*-win32", "*_i686"):
        assert pattern in cfg["skip"], f"cibuildwheel should skip {pattern}"
    assert cfg["environment"]["FASTCONV_FAIL_NO_OPENMP"] == "1"
    assert any("openmp_enabled" in c for c in cfg["test-command"])
    assert "brew install libomp" in cfg["macos"]["before-all"]


# --------------------------------------------------- the wheel, end to end ---
@pytest.mark.slow
def test_check_wheel_script(tmp_path):
    """sdist -> wheel from the sdist -> bare venv (numpy only) -> import, OpenMP, results."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    if importlib.util.find_spec("build") is None:
        pytest.skip("needs pypa/build: pip install build (or '.[dev]')")
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    r = subprocess.run(["bash", str(ROOT / "scripts" / "check_wheel.sh"), str(ROOT)], env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-6000:] + "\n" + r.stderr[-3000:]
    assert "OK:" in r.stdout


def test_a_checkout_without_kernels_defers_to_the_installed_package(tmp_path):
    """`python -m fastconv` from the root of an unbuilt checkout (the current folder
    comes first on the import path) uses the fastconv installed elsewhere."""
    import shutil
    import subprocess
    import sys

    import fastconv

    installed = os.path.dirname(os.path.abspath(fastconv.__file__))
    checkout = tmp_path / "checkout"
    shutil.copytree(installed, checkout / "fastconv",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(installed))
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=checkout, env=env,
                                       capture_output=True, text=True, timeout=120)
    info = run("-m", "fastconv", "info")
    assert info.returncode == 0, info.stderr
    assert "openmp" in info.stdout
    where = run("-c", "import fastconv, fastconv.nn; print(fastconv.__file__); "
                      "print(fastconv.nn.__file__); print(fastconv.conv2d.__module__)")
    assert where.returncode == 0, where.stderr
    init, nn_init, _ = where.stdout.split()
    assert os.path.dirname(init) == installed and nn_init.startswith(installed)
