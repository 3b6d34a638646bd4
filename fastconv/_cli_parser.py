"""The ``fastconv`` argument parser: subcommands ``train``, ``info`` and ``bench``.

``train``'s options are added in the order ``--help`` lists them, a group at a
time; their types are in ``_cli_types``, their defaults in ``_cli_settings``
(``None`` here means "the recipe's, or the checkpoint's with --resume").
"""

import argparse
import math
from pathlib import Path

from ._cli_commands import cmd_info
from ._cli_settings import AUGMENT_DEFAULT, DATASETS, DEFAULT_LR, OPTIMIZERS, RECIPES
from ._cli_train import cmd_train
from ._cli_types import augment_arg, float_in, int_at_least, thread_count

__all__ = ["build_parser"]


def build_parser():
    """The ``fastconv`` argument parser (subcommands ``train``, ``info``, ``bench``).

    Returns
    -------
    argparse.ArgumentParser
    """
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="Fast CPU CNN kernels: train LeNet-5 on MNIST, show the build, run benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)

    i = sub.add_parser("info", help="show version, build, OpenMP, SIMD path and threads")
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=cmd_info, _parser=i)

    # Listed for --help only: main() hands everything after "bench" to the
    # runner untouched (argparse's REMAINDER would still claim "--options").
    sub.add_parser("bench", help="run the kernel benchmarks (arguments are passed on)",
                   add_help=False)
    return parser


def _add_train(sub):
    lenet = RECIPES["lenet5"]
    t = sub.add_parser(
        "train",
        help="train a CNN on MNIST, Fashion-MNIST or any IDX data set",
        description=(
            "Train a CNN on MNIST (or --dataset fashion_mnist / idx) and report the test "
            "accuracy. Without options this runs the "
            f"LeNet-5 recipe: Adam, lr {lenet['lr']:g} decayed by {lenet['lr_decay']:g} per epoch, "
            f"batch {lenet['batch_size']}, {lenet['epochs']} epochs, augment {lenet['augment']}, aiming at "
            ">= 99.0% test accuracy."
        ),
    )
    _add_recipe_options(t)
    _add_data_source_options(t)
    _add_parallel_options(t)
    _add_data_use_options(t, lenet)
    _add_output_options(t)
    t.set_defaults(func=cmd_train, _parser=t)


def _add_recipe_options(t):
    """The model and how it is optimised."""
    t.add_argument("--model", choices=sorted(RECIPES), default=None,
                   help="network (default: lenet5, or the checkpoint's with --resume)")
    t.add_argument("--epochs", type=int_at_least(1), default=None, metavar="N",
                   help="total epochs (default: the model's recipe)")
    t.add_argument("--batch-size", type=int_at_least(1), default=None, metavar="N",
                   help="training batch size (default: the model's recipe)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="optimiser; momentum = SGD with momentum 0.9 (default: adam)")
    t.add_argument("--lr", type=float_in(0, math.inf), default=None,
                   help="initial learning rate (default: the recipe's; else "
                        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    t.add_argument("--lr-decay", type=float_in(0, 1), default=None, metavar="GAMMA",
                   help="exponential decay: lr of epoch e = lr * GAMMA**e (1 = constant; "
                        "default: the recipe's)")
    t.add_argument("--weight-decay", type=float_in(0, math.inf, low_open=False), default=None,
                   metavar="L2", help="L2 penalty (default 0)")
    t.add_argument("--seed", type=int_at_least(0), default=None,
                   help="seeds the initial weights, shuffling and augmentation (default 0)")


def _add_data_source_options(t):
    """Which data set, and where its files are."""
    t.add_argument("--dataset", choices=DATASETS, default=None,
                   help="mnist (default, or the checkpoint's with --resume); fashion_mnist "
                        "(Zalando's clothing images, the .gz files checked against their "
                        "published MD5); idx: the four files with MNIST's names "
                        "(train-images-idx3-ubyte[.gz], ...) in --data-dir, 28x28 images, "
                        "labels 0-9, checksums NOT verified")
    t.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="directory with the data set's IDX files (default: mnist "
                        "$FASTCONV_DATA, else ~/.cache/fastconv/mnist; fashion_mnist "
                        "~/.cache/fastconv/fashion_mnist; downloading if needed; idx needs it)")
    t.add_argument("--no-download", action="store_true",
                   help="never download (mnist and fashion_mnist download missing files)")


def _add_parallel_options(t):
    """Threads, and data-parallel training over MPI ranks or micro-batches."""
    t.add_argument("--threads", type=thread_count, default=None, metavar="N",
                   help="OpenMP threads for the kernels (default: the library's choice)")
    t.add_argument("--micro-batches", type=int_at_least(1), default=None, metavar="N",
                   help="data-parallel training (fastconv.distributed; on by itself under "
                        "mpiexec): cut every batch into N slices whose gradients are summed in a "
                        "fixed order (default: the number of MPI ranks). The result depends on N, "
                        "not on the ranks: 'mpiexec -n 2 fastconv train' equals 'fastconv train "
                        "--micro-batches 2' bitwise")
    t.add_argument("--mpi-timeout", type=float_in(0, math.inf), default=None, metavar="SECONDS",
                   help="abort an MPI run when another rank makes no progress for this long "
                        "(default 300)")


def _add_data_use_options(t, lenet):
    """How much of the data is used, how it is expanded, and the compute precision."""
    t.add_argument("--train-subset", type=int_at_least(1), default=None, metavar="N",
                   help="use only the first N training images (quick runs)")
    t.add_argument("--test-subset", type=int_at_least(1), default=None, metavar="N",
                   help="use only the first N test images")
    t.add_argument("--val-size", type=int_at_least(0), default=None, metavar="N",
                   help="hold out the last N training images for per-epoch validation "
                        "(default 0: none)")
    t.add_argument("--augment", nargs="?", const=AUGMENT_DEFAULT, default=None, type=augment_arg,
                   metavar="SPEC",
                   help="random data expansion of each batch: comma-separated shift[:PIXELS], "
                        f"rotate[:DEGREES], noise[:STD] or none; bare --augment means "
                        f"{AUGMENT_DEFAULT} (default: the recipe's, lenet5 {lenet['augment']})")
    t.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute precision (default float32)")


def _add_output_options(t):
    """What the run writes and prints, and the checkpoint it resumes from."""
    t.add_argument("--save", type=Path, default=None, metavar="PATH",
                   help="write the final model (.npz, atomically; fastconv.nn.load_model reads it)")
    t.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="write a resumable checkpoint after every epoch (atomically)")
    t.add_argument("--resume", type=Path, default=None, metavar="PATH",
                   help="continue from a checkpoint; the result equals an uninterrupted run")
    t.add_argument("--metrics-out", type=Path, default=None, metavar="FILE",
                   help="write metrics and per-epoch history as JSON")
    t.add_argument("--quiet", "-q", action="store_true",
                   help="print only the final test accuracy")
