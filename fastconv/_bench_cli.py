"""``python -m fastconv bench [args]``: run the benchmark suite of a source checkout.

The suite lives in the repository's ``bench/`` directory, which is not part of
the installed package (it needs PyTorch and writes result files). This module
finds it and hands the arguments to ``bench/run.py``. Searched, in order:
``$FASTCONV_BENCH_DIR``, ``bench/`` next to this package (an in-place or
editable install), and ``./bench`` in the current directory.
"""

import os
import sys
from pathlib import Path

__all__ = ["find_bench_dir", "main"]


def find_bench_dir():
    """The ``bench/`` directory holding ``run.py``, or None."""
    candidates = [os.environ.get("FASTCONV_BENCH_DIR"),
                  Path(__file__).resolve().parent.parent / "bench",
                  Path.cwd() / "bench"]
    for c in candidates:
        if c and (Path(c) / "run.py").is_file():
            return Path(c).resolve()
    return None


def main(argv=None):
    """Run ``bench/run.py`` with ``argv``; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:   # `fastconv bench -- --shapes a` separates our options
        argv = argv[1:]
    bench = find_bench_dir()
    if bench is None:
        print("fastconv bench: no bench/ directory found. The benchmarks ship with the source\n"
              "tree, not the wheel: run from a checkout (python bench/run.py --help) or set\n"
              "FASTCONV_BENCH_DIR to its bench/ directory.", file=sys.stderr)
        return 2
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    import run

    return int(run.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
