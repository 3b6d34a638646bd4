"""The small subcommands: ``fastconv info`` and ``fastconv bench`` (``train``: ``_cli_train``)."""

import json
import sys

from ._cli_status import EXIT_FAILURE, EXIT_OK

__all__ = ["cmd_info", "cmd_bench"]


def cmd_info(args):
    """Run ``fastconv info``; returns the exit status."""
    import numpy as np

    import fastconv

    info = dict(fastconv.info())
    info.setdefault("version", fastconv.__version__)
    info.setdefault("numpy", np.__version__)
    info.setdefault("python", sys.version.split()[0])
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(str(k)) for k in info)
        for key, value in info.items():
            print(f"{str(key):<{width}}  {value}")
    return EXIT_OK


def cmd_bench(bench_args):
    """Run ``fastconv bench ARGS``: the benchmark runner when installed, else instructions.

    ``bench_args`` are passed on untouched, not parsed: they are the runner's.
    """
    import importlib

    try:
        runner = importlib.import_module("fastconv._bench_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "fastconv._bench_cli":
            raise
        print("the benchmark runner is not part of this installation; from a source checkout run:\n"
              "    python bench/run.py --help", file=sys.stderr)
        return EXIT_FAILURE
    return int(runner.main(list(bench_args)) or 0)
