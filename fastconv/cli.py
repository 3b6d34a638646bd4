"""The ``fastconv`` command line: ``train``, ``info`` and ``bench``.

``python -m fastconv train`` trains LeNet-5 (or the larger TensorFlow-tutorial
CNN) on MNIST (or Fashion-MNIST, or any 28x28 ten-class IDX data set: ``--dataset``)
with a tested default recipe, prints per-epoch progress and the
final test accuracy, and can write metrics (JSON), the final model and
per-epoch checkpoints. A run resumed with ``--resume`` from the checkpoint of
epoch k gives bitwise the same model as an uninterrupted run, because every
random draw of epoch e (shuffling order, augmentation) comes from a generator
seeded by ``(seed, e)`` alone, and the checkpoint holds everything else
(weights, optimiser slots and counters, dropout generator states).

Exit status: 0 success, 1 a runtime failure (unreadable data, download
failure, NaN/Inf loss), 2 bad arguments (argparse usage message), 130 Ctrl-C.

This module is the entry point: it picks the command and turns its outcome
into the exit status. The rest lives in one module per job:

==================== ===========================================================
``_cli_parser``      the argument parser (``build_parser``)
``_cli_types``       argument types (text -> value or argparse's error)
``_cli_settings``    recipes, defaults, the settings of a fresh run
``_cli_resume``      ``--resume``: the checkpoint's settings, each checked
``_cli_data``        download decision, loading, subsets and validation split
``_cli_train``       ``train``: session, model, the epochs, evaluation
``_cli_report``      output paths, the result line, ``--metrics-out``
``_cli_commands``    ``info`` and ``bench``
``_cli_status``      exit statuses and ``CommandError``
==================== ===========================================================
"""

import sys

from ._cli_commands import cmd_bench
from ._cli_parser import build_parser
from ._cli_status import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CommandError

# Names of the single-module CLI, still importable from here (tests use the private ones).
from ._cli_commands import cmd_info  # noqa: F401
from ._cli_data import dataset_download as _dataset_download  # noqa: F401
from ._cli_report import atomic_write_text as _atomic_write_text  # noqa: F401
from ._cli_settings import AUGMENT_DEFAULT, DATASETS, DEFAULT_LR, OPTIMIZERS, RECIPES  # noqa: F401
from ._cli_status import EXIT_OK  # noqa: F401
from ._cli_train import cmd_train  # noqa: F401
from ._cli_types import parse_augment  # noqa: F401

__all__ = ["main", "build_parser", "RECIPES"]


def main(argv=None):
    """Entry point of ``fastconv`` and ``python -m fastconv``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 1 failure, 2 bad arguments, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] == ["bench"]:
            return cmd_bench(argv[1:])
        args = parser.parse_args(argv)
        args._argv = argv[1:] if argv else []
        return args.func(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except CommandError as exc:
        print(f"fastconv: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("fastconv: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
