"""MNIST-style (IDX) data sets: loading, minibatching and data expansion.

Everything here is NumPy plus the standard library (``urllib`` for downloads);
``tqdm`` draws the download progress bar when it is installed.

Data loading
    :func:`load_mnist` finds, downloads (optionally), verifies and decodes the
    four MNIST IDX files and :func:`load_fashion_mnist` the four Fashion-MNIST
    ones; :data:`IDX_DATASETS` holds what is known about each (file names,
    checksums, class names). :func:`load_idx_dataset` does the same for any
    dataset in that layout (KMNIST, EMNIST splits, your own); :func:`read_idx`
    reads one IDX file of any type and rank.
Batching
    :func:`iterate_minibatches`, :func:`train_val_split`, :func:`one_hot`.
Data expansion
    Callables ``transform(x_batch, rng) -> x_batch`` on float batches of shape
    ``(N, C, H, W)`` in ``[0, 1]``, usable as ``Sequential.fit(..., augment=...)``:
    :class:`RandomShift`, :class:`RandomRotation`, :class:`GaussianNoise`,
    :class:`Compose`; :func:`expand_dataset` applies one to build an enlarged
    training set once, up front.

This module finds, downloads and loads the files; IDX decoding and checksums
live in ``_idx``, batching in ``_batching``, data expansion in ``_augment``
(all re-exported here).
"""

from __future__ import annotations

import http.client
import os
import time
from dataclasses import dataclass
import urllib.request
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import _fileio
from ._augment import (
    Compose,
    GaussianNoise,
    RandomRotation,
    RandomShift,
    expand_dataset,
    rotate_images,
    shift_images,
)
from ._batching import iterate_minibatches, one_hot, train_val_split
from ._idx import (
    CHUNK,
    GZIP_MAGIC,
    ChecksumError,
    check_digest,
    file_digest,
    read_idx,
    read_idx_checked,
)
# tests/test_datasets.py and scripts/fuzz_loaders.py read the IDX type table here
from ._idx import IDX_DTYPES as _IDX_DTYPES  # noqa: F401
from ._progress import DownloadProgress
from ._validate import check_float_dtype

__all__ = [
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_MIRRORS",
    "MNIST_CLASSES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_MIRRORS",
    "FASHION_MNIST_CLASSES",
    "IDXDatasetInfo",
    "IDX_DATASETS",
    "ChecksumError",
    "default_data_dir",
    "read_idx",
    "load_idx_dataset",
    "load_mnist",
    "load_fashion_mnist",
    "iterate_minibatches",
    "one_hot",
    "train_val_split",
    "shift_images",
    "rotate_images",
    "RandomShift",
    "RandomRotation",
    "GaussianNoise",
    "Compose",
    "expand_dataset",
]

# Base names, in the order (train images, train labels, test images, test labels).
# Fashion-MNIST and KMNIST ship files with exactly these names too.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# SHA-256 of the *decompressed* files (shared/mnist/README.md). The .gz files
# differ between mirrors (recompression), the decompressed bytes do not.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Tried in order; each serves ``<base>/<name>.gz``. The original site comes last
# because it has often refused anonymous downloads.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))

# MD5 of the *.gz files* as Zalando publishes them (the table in the README of
# github.com/zalandoresearch/fashion-mnist; torchvision's FashionMNIST checks
# the same). Unlike MNIST's, these checksums cover the compressed bytes, so a
# Fashion-MNIST file can be verified only in the .gz form it was published in.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
# Zalando's download location (the README's links); same layout as MNIST's mirrors.
FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class IDXDatasetInfo:
    """What is known about a published data set stored as four IDX files.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"fashion_mnist"``.
    title : str
        Name for messages, e.g. ``"Fashion-MNIST"``.
    files : tuple of 4 str
        Base names of (train images, train labels, test images, test labels).
    algorithm : {"sha256", "md5"}
        Hash of the published checksums.
    checksum_of : {"data", "gzip"}
        What the checksums cover: the decompressed bytes (``"data"``: any
        recompression passes) or the ``.gz`` file as published (``"gzip"``).
    checksums : mapping of str to str
        Expected hex digest by base name.
    mirrors : tuple of str
        Download base URLs, tried in order.
    classes : tuple of str
        Class names, indexed by label.
    """

    name: str
    title: str
    files: tuple
    algorithm: str
    checksum_of: str
    checksums: dict
    mirrors: tuple
    classes: tuple


# The data sets known by name. load_mnist reads the module-level MNIST_SHA256
# and MNIST_MIRRORS (so both can still be patched); the entry here describes them.
IDX_DATASETS = {
    "mnist": IDXDatasetInfo("mnist", "MNIST", MNIST_FILES, "sha256", "data", MNIST_SHA256,
                            MNIST_MIRRORS, MNIST_CLASSES),
    "fashion_mnist": IDXDatasetInfo("fashion_mnist", "Fashion-MNIST", MNIST_FILES, "md5", "gzip",
                                    FASHION_MNIST_MD5, FASHION_MNIST_MIRRORS,
                                    FASHION_MNIST_CLASSES),
}

# Environment overrides: the data directory, and a comma/space separated list
# of mirror base URLs (used by the tests to point at a local server).
ENV_DATA_DIR = "FASTCONV_DATA"
ENV_MIRRORS = "FASTCONV_MNIST_MIRRORS"

# Downloads: seconds without data before a read fails, seconds for one file
# across all mirrors, and the most bytes accepted for one file (the largest
# MNIST-layout files, EMNIST byclass, are about 0.2 GB compressed).
_DOWNLOAD_TIMEOUT = 60.0
_DOWNLOAD_DEADLINE = 1800.0
_MAX_DOWNLOAD_BYTES = 1 << 30
# A live download writes at least once per _DOWNLOAD_TIMEOUT, so a .part file
# untouched for longer than this belongs to a killed process.
_STALE_PART_SECONDS = 3 * _DOWNLOAD_TIMEOUT


# --------------------------------------------------------------------------- #
# Finding and downloading files
# --------------------------------------------------------------------------- #


def default_data_dir(dataset="mnist"):
    """Directory :func:`load_mnist` (or another loader) uses when no ``data_dir`` is given.

    Parameters
    ----------
    dataset : str, default "mnist"
        A key of :data:`IDX_DATASETS`.

    Returns
    -------
    pathlib.Path
        For MNIST ``$FASTCONV_DATA`` if set; otherwise
        ``$XDG_CACHE_HOME/fastconv/<dataset>``, else ``~/.cache/fastconv/<dataset>``.
        (``$FASTCONV_DATA`` names the MNIST directory, so other data sets
        never read MNIST's files by mistake.)
    """
    if dataset not in IDX_DATASETS:
        raise ValueError(f"default_data_dir: dataset must be one of {sorted(IDX_DATASETS)}, "
                         f"got {dataset!r}")
    env = os.environ.get(ENV_DATA_DIR)
    if env and dataset == "mnist":
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fastconv" / dataset


def _find(data_dir, name, gzip_only=False):
    """Path of ``name`` or ``name.gz`` in ``data_dir`` (uncompressed preferred), or None."""
    names = (name + ".gz",) if gzip_only else (name, name + ".gz")
    for candidate in (data_dir / n for n in names):
        if candidate.is_file():
            return candidate
    return None


def _mirror_list(mirrors):
    if mirrors is None:
        env = os.environ.get(ENV_MIRRORS, "")
        mirrors = env.replace(",", " ").split() or MNIST_MIRRORS
    elif isinstance(mirrors, str):
        mirrors = [mirrors]
    mirrors = [str(m) for m in mirrors]
    if not mirrors:
        raise ValueError("mirrors: need at least one base URL, got an empty list")
    return mirrors


def _fetch(url, out, name, progress, deadline):
    """Copy the body at ``url`` into ``out``; at most the expected size, before ``deadline``."""
    req = urllib.request.Request(url, headers={"User-Agent": "fastconv"})
    timeout = min(_DOWNLOAD_TIMEOUT, max(deadline - time.monotonic(), 0.001))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None and expected > _MAX_DOWNLOAD_BYTES:
            raise ValueError(f"{name} from {url}: the server announces {expected} bytes, more "
                             f"than the {_MAX_DOWNLOAD_BYTES}-byte limit")
        limit = _MAX_DOWNLOAD_BYTES if expected is None else expected
        bar = DownloadProgress(expected, name + ".gz", progress)
        received = 0
        try:
            # never ask for more than one byte past the limit: a server that
            # keeps sending is cut off there, not when the disk is full
            # read1: whatever has arrived (up to a chunk), so the deadline is
            # checked as data trickles in rather than after a full chunk
            while chunk := resp.read1(min(CHUNK, limit + 1 - received)):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if received > limit:
                    raise ValueError(f"{name} from {url}: the server sent more than "
                                     f"{'the announced' if expected is not None else 'the limit of'} "
                                     f"{limit} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gave up after {_DOWNLOAD_DEADLINE:g} s "
                                       f"({received} bytes received)")
        finally:
            bar.close()
        if expected is not None and received != expected:
            raise ConnectionError(f"connection closed after {received} of {expected} bytes")


def _download(name, data_dir, mirrors, sha256, md5, progress):
    """Fetch ``name`` from the first mirror that serves it intact; return its path.

    The body goes to a temporary ``.part`` file in ``data_dir`` that is checked
    (gzip, IDX structure, checksum) and only then renamed into place with
    ``os.replace``; on any failure it is removed, so the directory never holds
    a partial or unverified file under the real name. A download stops at the
    size the server announced (at most ``_MAX_DOWNLOAD_BYTES``) and all
    mirrors together get ``_DOWNLOAD_DEADLINE`` seconds. ``.part`` files left
    by a killed download are removed once they are stale.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    _fileio.remove_stale(data_dir, f".{name}.", ".part", _STALE_PART_SECONDS)
    deadline = time.monotonic() + _DOWNLOAD_DEADLINE
    errors = []
    corrupt = False
    for base in mirrors:
        url = base.rstrip("/") + "/" + name + ".gz"
        if time.monotonic() > deadline:
            errors.append(f"{url}: not tried, the {_DOWNLOAD_DEADLINE:g} s deadline has passed")
            continue
        fd, tmp = _fileio.create_temp(str(data_dir), f".{name}.", ".part")
        try:
            # unbuffered: every chunk reaches the file at once and refreshes its
            # mtime, which is how a live download is told from a dead one
            with os.fdopen(fd, "wb", buffering=0) as out:
                _fetch(url, out, name, progress, deadline)
            with open(tmp, "rb") as f:
                is_gzip = f.read(2) == GZIP_MAGIC
            read_idx_checked(tmp, sha256, f"{name} from {url}")
            if md5 is not None:
                check_digest(file_digest(tmp, "md5"), md5, "md5", f"{name} from {url}",
                              "the file")
            dest = data_dir / (name + ".gz" if is_gzip else name)
            os.replace(tmp, dest)
            return dest
        except ValueError as exc:
            corrupt = True
            errors.append(str(exc).replace(tmp, f"{name} from {url}"))
        except (OSError, http.client.HTTPException) as exc:
            # URLError/HTTPError and timeouts are OSErrors; a connection closed
            # before Content-Length bytes arrived is an IncompleteRead.
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    detail = "\n  ".join(errors)
    msg = f"could not download {name} from any of {len(mirrors)} mirror(s):\n  {detail}"
    # Bad data is a ValueError like a bad local file; pure network failure is an OSError.
    raise (ValueError if corrupt else OSError)(msg)


# --------------------------------------------------------------------------- #
# Loading datasets
# --------------------------------------------------------------------------- #


def load_idx_dataset(data_dir, names=MNIST_FILES, *, dtype=np.float32, download=False,
                     mirrors=None, sha256=None, md5=None, progress=True):
    """Load an image-classification dataset stored as four IDX files.

    Works for any dataset in MNIST's layout (Fashion-MNIST, KMNIST, EMNIST
    splits): unsigned-byte images of shape ``(N, H, W)`` and labels of shape ``(N,)``.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Directory holding the files, each as ``<name>`` or ``<name>.gz``.
    names : sequence of 4 str, default :data:`MNIST_FILES`
        Base names of (train images, train labels, test images, test labels).
    dtype : {float32, float64}, default float32
        dtype of the returned images.
    download : bool, default False
        Fetch missing files as ``<mirror>/<name>.gz`` from ``mirrors``.
    mirrors : sequence of str, optional
        Base URLs tried in order. Default: ``$FASTCONV_MNIST_MIRRORS``
        (comma or space separated) if set, else :data:`MNIST_MIRRORS`.
    sha256 : mapping of str to str, optional
        Expected SHA-256 of the decompressed file, by base name. Files not in the
        mapping (or all files, if None) are checked for IDX structure only.
    md5 : mapping of str to str, optional
        Expected MD5 of the file *as stored*, by base name: the checksum form
        Fashion-MNIST publishes for its ``.gz`` files. A file in this mapping is
        looked for only as ``<name>.gz``, since the published digest cannot
        check a decompressed copy.
    progress : bool, default True
        Show a download progress bar (tqdm if installed).

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x`` of shape ``(N, 1, H, W)`` and ``dtype``, scaled to ``[0, 1]``;
        ``y`` of shape ``(N,)``, int64.

    Raises
    ------
    FileNotFoundError
        A file is missing and ``download`` is False.
    ValueError
        A file is corrupt (see :func:`read_idx`) or the four do not fit together;
        :class:`ChecksumError` (a ValueError) if a checksum differs.
    OSError
        Downloading failed on every mirror for network reasons.
    """
    dt = check_float_dtype("load_idx_dataset", "dtype", dtype)
    if isinstance(names, str) or len(names) != 4:
        raise ValueError(
            "load_idx_dataset: names must be 4 base names (train images, train labels,"
            f" test images, test labels), got {names!r}"
        )
    data_dir = Path(data_dir).expanduser()
    sha256 = dict(sha256 or {})
    md5 = dict(md5 or {})

    paths = [_locate(data_dir, name, download, mirrors, sha256.get(name), md5.get(name),
                     progress) for name in names]
    arrays = []
    for path, name in zip(paths, names):
        arrays.append(read_idx(path, sha256=sha256.get(name)))
        # after read_idx: "truncated" or "bad magic" says more than a hash mismatch
        if name in md5:
            check_digest(file_digest(path, "md5"), md5[name], "md5", str(path), "the file")
    return (_xy_of_split(arrays[0], arrays[1], paths[0], paths[1], dt),
            _xy_of_split(arrays[2], arrays[3], paths[2], paths[3], dt))


def _locate(data_dir, name, download, mirrors, sha256, md5, progress):
    """The path of IDX file ``name`` in ``data_dir`` (``.gz`` or not), downloaded if allowed."""
    path = _find(data_dir, name, gzip_only=md5 is not None)
    if path is None and md5 is not None and _find(data_dir, name) is not None:
        raise ValueError(
            f"{data_dir / name}: the published MD5 covers {name}.gz, which is not in "
            f"{data_dir}, and cannot check this decompressed copy; put the .gz file there "
            "or pass md5=None to skip the check"
        )
    if path is None:
        if not download:
            raise FileNotFoundError(
                f"{name} (or {name}.gz) not found in {data_dir}; pass download=True"
                " or put the file there"
            )
        path = _download(name, data_dir, _mirror_list(mirrors), sha256, md5, progress)
    return path


def _xy_of_split(images, labels, pi, pl, dt):
    """``(x, y)`` of one split: images as (N, 1, H, W) floats in [0, 1], labels as int64."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{pi}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{pl}: expected integer labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{pi} has {len(images)} images but {pl} has {len(labels)} labels")
    x = images.reshape(images.shape[0], 1, *images.shape[1:]).astype(dt)
    x /= 255  # exact division: pixel k maps to the float nearest k/255
    return x, labels.astype(np.int64)


# ((x_train, y_train), (x_test, y_test)): images of the requested float dtype, int64 labels.
Splits = Tuple[Tuple[NDArray[Any], NDArray[np.int64]], Tuple[NDArray[Any], NDArray[np.int64]]]


def load_mnist(data_dir: Union[None, str, os.PathLike[str]] = None, *, download: bool = True,
               dtype: DTypeLike = np.float32, verify: bool = True,
               mirrors: Optional[Sequence[str]] = None, progress: bool = True) -> Splits:
    """Load MNIST, downloading and verifying it on first use.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory with the four IDX files (plain or ``.gz``). Default:
        :func:`default_data_dir` (``$FASTCONV_DATA``, else the user cache dir).
    download : bool, default True
        Download missing files from ``mirrors`` into ``data_dir``.
    dtype : {float32, float64}, default float32
        dtype of the images.
    verify : bool, default True
        Check each file's decompressed SHA-256 against :data:`MNIST_SHA256`.
        Pass False to load another dataset stored under MNIST's file names
        (e.g. Fashion-MNIST); the IDX structure is still checked.
    mirrors : sequence of str, optional
        Download base URLs, tried in order (see :func:`load_idx_dataset`).
    progress : bool, default True
        Show a progress bar while downloading.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x_train`` of shape (60000, 1, 28, 28), ``x_test`` of shape
        (10000, 1, 28, 28), ``dtype``, values in ``[0, 1]``; labels int64 in 0..9.

    Raises
    ------
    ValueError
        A file is corrupt, truncated or fails its checksum; the message names it.
    FileNotFoundError
        A file is missing and ``download`` is False.
    OSError
        No mirror could be reached.
    """
    if data_dir is None:
        data_dir = default_data_dir()
    return load_idx_dataset(
        data_dir, MNIST_FILES, dtype=dtype, download=download, mirrors=mirrors,
        sha256=MNIST_SHA256 if verify else None, progress=progress,
    )


def load_fashion_mnist(data_dir: Union[None, str, os.PathLike[str]] = None, *,
                       download: bool = True, dtype: DTypeLike = np.float32, verify: bool = True,
                       mirrors: Optional[Sequence[str]] = None, progress: bool = True) -> Splits:
    """Load Fashion-MNIST (Zalando's clothing images in MNIST's layout).

    Ten classes, named in :data:`FASHION_MNIST_CLASSES` (label 0 is
    "T-shirt/top", 9 "Ankle boot"); 60,000 training and 10,000 test images of
    28x28 pixels, in four IDX files with MNIST's file names.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory with the four ``.gz`` files as published. Default:
        ``default_data_dir("fashion_mnist")`` (the user cache dir).
    download : bool, default True
        Download missing files from ``mirrors`` into ``data_dir``.
    dtype : {float32, float64}, default float32
        dtype of the images.
    verify : bool, default True
        Check each ``.gz`` file's MD5 against :data:`FASHION_MNIST_MD5` (the
        checksums Zalando publishes cover the compressed files, so with
        ``verify`` the files must be the ``.gz`` ones). Pass False to read
        decompressed copies or other data; the IDX structure is still checked.
    mirrors : sequence of str, optional
        Download base URLs, tried in order (default :data:`FASHION_MNIST_MIRRORS`).
    progress : bool, default True
        Show a progress bar while downloading.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x_train`` of shape (60000, 1, 28, 28), ``x_test`` of shape
        (10000, 1, 28, 28), ``dtype``, values in ``[0, 1]``; labels int64 in 0..9.

    Raises
    ------
    ValueError
        A file is corrupt, truncated or fails its checksum
        (:class:`ChecksumError`); the message names it.
    FileNotFoundError
        A file is missing and ``download`` is False.
    OSError
        No mirror could be reached.
    """
    # looked up at call time, so the checksums can be patched (the tests do)
    info = IDX_DATASETS["fashion_mnist"]
    if data_dir is None:
        data_dir = default_data_dir("fashion_mnist")
    return load_idx_dataset(
        data_dir, info.files, dtype=dtype, download=download,
        mirrors=info.mirrors if mirrors is None else mirrors,
        md5=info.checksums if verify else None, progress=progress,
    )


