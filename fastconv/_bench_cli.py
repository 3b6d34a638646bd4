"""``python -m fastconv bench [args]``: run ``bench/run.py`` of the source checkout this package is in.

The benchmark suite lives in the repository's ``bench/`` directory, which is not
part of the wheel (it needs PyTorch and writes result files). When this
package is imported from a source checkout (``python -m fastconv`` from the
repository root, an in-place build, an editable install) the runner next to it
is started in a subprocess with the checkout's root first on ``PYTHONPATH``, so
it measures this fastconv. An installed wheel has no checkout beside it: the
command then says so and how to run the suite.
"""

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv=None):
    """Run ``bench/run.py`` with ``argv``; returns its exit status (2: no checkout)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:   # `fastconv bench -- --shapes a` separates our options
        argv = argv[1:]
    root = Path(__file__).resolve().parent.parent
    runner = root / "bench" / "run.py"
    if not runner.is_file():
        print(f"fastconv bench: this fastconv ({Path(__file__).parent}) is not in a source\n"
              "checkout, and the benchmarks ship with the source tree, not the wheel. From the\n"
              "root of a checkout run `python -m fastconv bench` or `python bench/run.py --help`.",
              file=sys.stderr)
        return 2
    paths = [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([sys.executable, str(runner), *argv], env=env).returncode
