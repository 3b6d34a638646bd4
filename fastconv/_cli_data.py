"""``fastconv train``'s data: whether to download, loading, and the splits trained on.

``load_data`` reads the chosen data set, turns every way reading can fail into
one line the user can act on (exit status 1), refuses data the models cannot
take, and cuts the subsets and the validation split the settings ask for.
"""

import functools
import time

from ._cli_status import CommandError

__all__ = ["dataset_download", "load_data"]

# What --dataset idx needs when a file is missing.
_IDX_FILES_HINT = ("--dataset idx needs train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                   "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may be .gz)")


def dataset_download(no_download, dataset):
    """Whether missing files of the chosen data set may be downloaded.

    Never for idx (no source is known). Under mpiexec only MNIST: rank 0 of
    fastconv.distributed's session downloads MNIST before the ranks read, and
    for any other data set that pre-download would put MNIST's files into its
    directory, so every rank must find the files already there.
    """
    if no_download or dataset == "idx":
        return False
    if dataset != "mnist":
        from .distributed import launched_by_mpiexec

        return launched_by_mpiexec() <= 1
    return True


def load_data(args, s, parser, log, download, no_download_given):
    """``((x_train, y_train), validation or None, (x_test, y_test))`` for settings ``s``."""
    title = _check_data_dir(args.data_dir, s["dataset"], parser, log)
    t0 = time.perf_counter()
    train, test = _read(s, args, title, download, no_download_given)
    for what, (x, y) in (("training", train), ("test", test)):
        _check_fits_the_models(title, what, x, y)
    train, val, test = _split(s, train, test, parser)
    log(f"data ({s['dataset']}): {len(train[0])} train, {len(val[0]) if val else 0} validation, "
        f"{len(test[0])} test images ({time.perf_counter() - t0:.1f} s to load)")
    return train, val, test


def _check_data_dir(data_dir, name, parser, log):
    """Refuse a --data-dir that cannot be read; returns the data set's title for messages."""
    from . import datasets as ds

    if data_dir is not None and not data_dir.is_dir():
        parser.error(f"--data-dir: {data_dir} is not a directory")
    if name == "idx" and data_dir is None:
        parser.error("--dataset idx needs --data-dir (the directory with the four IDX files)")
    if name == "idx":
        log(f"dataset idx: {data_dir}; checksums NOT verified (only the IDX structure is "
            "checked): use --dataset mnist or fashion_mnist for the published sets")
    if name in ds.IDX_DATASETS:
        return ds.IDX_DATASETS[name].title
    return f"the IDX files in {data_dir}"


def _read(s, args, title, download, no_download_given):
    """The data set's (train, test) pairs; a failure to read it is a CommandError."""
    import numpy as np

    from . import datasets as ds

    name = s["dataset"]
    # looked up on each call: tests replace ds.load_mnist
    loaders = {
        "mnist": ds.load_mnist,
        "fashion_mnist": ds.load_fashion_mnist,
        "idx": functools.partial(ds.load_idx_dataset, names=ds.MNIST_FILES),
    }
    try:
        return loaders[name](args.data_dir, download=download, dtype=np.dtype(s["dtype"]),
                             progress=not args.quiet)
    except FileNotFoundError as exc:
        if name == "idx":
            hint = _IDX_FILES_HINT
        elif name != "mnist" and not no_download_given:
            hint = f"{title} is not downloaded under mpiexec; put the files in --data-dir"
        else:
            hint = f"drop --no-download to fetch {title}"
        raise CommandError(f"{exc} ({hint})") from None
    except ds.ChecksumError as exc:
        raise CommandError(
            f"cannot load {title}: {exc.name}: {exc.algorithm.upper()} {exc.actual} is not the "
            f"published {exc.expected}: the file is corrupt or not {title}. For other IDX files "
            f"with these names use --dataset idx (checksums not verified)") from None
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot load {title}: {exc}") from None


def _check_fits_the_models(title, what, x, y):
    # the models take 28x28 single-channel images and have 10 outputs; an idx
    # set that differs would fail deep inside the first batch, or train on
    # labels the loss cannot represent
    if x.shape[1:] != (1, 28, 28):
        raise CommandError(f"cannot train on {title}: {what} images are "
                           f"{x.shape[2]}x{x.shape[3]}, the models take 28x28")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise CommandError(f"cannot train on {title}: {what} labels range over "
                           f"{y.min()}..{y.max()}, the models have 10 classes (0..9)")


def _split(s, train, test, parser):
    """Cut --train-subset, --test-subset, then hold out the last --val-size training images."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    if s["train_subset"] is not None:
        x_tr, y_tr = x_tr[:s["train_subset"]], y_tr[:s["train_subset"]]
    if s["test_subset"] is not None:
        x_te, y_te = x_te[:s["test_subset"]], y_te[:s["test_subset"]]
    val = None
    if s["val_size"]:
        if s["val_size"] >= len(x_tr):
            parser.error(f"--val-size {s['val_size']} leaves no training images of {len(x_tr)}")
        n = len(x_tr) - s["val_size"]
        val = (x_tr[n:], y_tr[n:])
        x_tr, y_tr = x_tr[:n], y_tr[:n]
    return (x_tr, y_tr), val, (x_te, y_te)
