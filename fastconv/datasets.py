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
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import _fileio
from ._validate import (check_float_array, check_float_dtype, check_int, check_ndim,
                        check_number, check_rng, check_xy)

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

# IDX type byte -> big-endian dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
# Deflate cannot expand data by more than about 1032:1, so a gzip file of n
# bytes whose IDX header declares more than 1032 * n is forged or truncated.
_MAX_INFLATE = 1032
# No IDX dataset comes near this; a header declaring more is refused outright.
_MAX_IDX_BYTES = 1 << 34
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
# IDX reading
# --------------------------------------------------------------------------- #


def _idx_header(stream, name):
    """Read and check an IDX header from ``stream``: (dtype, shape, header bytes)."""
    head = stream.read(4)
    if len(head) < 4:
        raise ValueError(f"{name}: not an IDX file (only {len(head)} bytes)")
    if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{name}: not an IDX file (bad magic number 0x{head.hex()}; "
            "expected 0x0000TTNN with type TT in 08, 09, 0B, 0C, 0D, 0E)"
        )
    ndim = head[3]
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{name}: truncated IDX header ({4 + len(dims)} bytes, need {4 + 4 * ndim})")
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    return _IDX_DTYPES[head[2]], shape, head + dims


def _read_idx(path, sha256, name):
    """Stream-decode one IDX file (gzip or not); ``name`` is used in messages.

    The header is read first and the size it declares is checked before
    anything else is read or allocated: against the file size for a plain
    file, and against what the compressed file could inflate to for gzip. The
    data is then read into the result array in chunks, so memory stays at the
    array's size plus one chunk, and the stream must end exactly there.
    """
    f, size = _fileio.open_regular(path, "read_idx")
    with f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if gz else f
        digest = hashlib.sha256() if sha256 is not None else None
        try:
            dtype, shape, header = _idx_header(stream, name)
            nbytes = math.prod(shape) * dtype.itemsize
            total = len(header) + nbytes
            what = f"header declares shape {shape} of {dtype.str[1:]} ({total} bytes in all)"
            if not gz and total != size:
                raise ValueError(
                    f"{name}: {'truncated' if size < total else 'has trailing bytes'}: {what}, "
                    f"file has {size} bytes")
            if gz and total > _MAX_INFLATE * size:
                raise ValueError(
                    f"{name}: truncated or forged: {what}, more than {size} bytes of gzip "
                    "can inflate to")
            if nbytes > _MAX_IDX_BYTES:
                raise ValueError(f"{name}: {what}, more than the {_MAX_IDX_BYTES}-byte limit")
            if digest is not None:
                digest.update(header)
            native = dtype.newbyteorder("=")
            arr = np.empty(math.prod(shape), native)
            view = memoryview(arr).cast("B")
            pos = 0
            while pos < nbytes:
                n = stream.readinto(view[pos:pos + _CHUNK])
                if not n:
                    raise ValueError(f"{name}: truncated: {what}, data ends after "
                                     f"{len(header) + pos} bytes")
                if digest is not None:
                    digest.update(view[pos:pos + n])
                pos += n
            if stream.read(1):
                raise ValueError(f"{name}: has trailing bytes: {what}, the data goes on")
        except (OSError, EOFError, zlib.error) as exc:
            if not gz:
                raise
            # gzip raises BadGzipFile (OSError), EOFError for truncation, zlib.error
            # for damaged deflate streams: all mean "this file is corrupt".
            raise ValueError(f"{name}: corrupt gzip data ({exc})") from None
        except ValueError:
            # Damaged deflate data often inflates to a nonsense header before
            # zlib notices; "corrupt gzip" is then the better diagnosis.
            damage = _gzip_damage(stream) if gz else None
            if damage is None:
                raise
            raise ValueError(f"{name}: corrupt gzip data ({damage})") from None
    # Structure first: "truncated" or "bad magic" says more than a hash mismatch.
    if digest is not None:
        _check_digest(digest.hexdigest(), sha256, "sha256", name, "the decompressed data")
    if dtype != native:
        arr.byteswap(inplace=True)  # the bytes were big-endian; now they match native
    return arr.reshape(shape)


def _gzip_damage(stream, max_bytes=64 << 20):
    """The error that reading on in ``stream`` runs into within ``max_bytes``, or None.

    Inflated data is discarded chunk by chunk: constant memory, bounded time.
    """
    try:
        for _ in range(max_bytes // _CHUNK):
            if not stream.read(_CHUNK):
                return None
    except (OSError, EOFError, zlib.error) as exc:
        return exc
    return None


class ChecksumError(ValueError):
    """A file is well-formed IDX but its checksum is not the published one.

    A ``ValueError``; its attributes let a caller (the command line) word its
    own advice.

    Parameters
    ----------
    message : str
        The full message.
    name : str
        The file (path, or base name and URL for a download).
    algorithm : {"sha256", "md5"}
    actual, expected : str
        Hex digests.
    """

    def __init__(self, message, name, algorithm, actual, expected):
        super().__init__(message)
        self.name = name
        self.algorithm = algorithm
        self.actual = actual
        self.expected = expected


def _check_digest(actual, expected, algorithm, name, subject):
    """Raise :class:`ChecksumError` unless the hex digest ``actual`` is ``expected``.

    The one place checksums are compared, whatever the algorithm and whether
    they cover the decompressed data or the file as stored (``subject``).
    """
    if actual != expected.lower():
        label = {"sha256": "SHA-256", "md5": "MD5"}[algorithm]
        raise ChecksumError(
            f"{name}: {label} of {subject} is {actual}, expected {expected}"
            " (file corrupt or not the expected dataset; delete it to re-download,"
            " or pass verify=False / sha256=None / md5=None for a different dataset)",
            name, algorithm, actual, expected,
        )


def _file_digest(path, algorithm):
    """Hex digest of the bytes of ``path`` as stored (read in chunks: constant memory)."""
    # an integrity check, not security: lets MD5 work where FIPS mode forbids it otherwise
    h = hashlib.new(algorithm, usedforsecurity=False)
    f, _ = _fileio.open_regular(path, "read_idx")
    with f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path, *, sha256=None):
    """Read one IDX file (gzip-compressed or not) into an array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip compression is detected from the content, not the name.
    sha256 : str, optional
        Expected SHA-256 (hex) of the *decompressed* bytes; checked if given.

    Returns
    -------
    ndarray
        Native byte order, writable, with the shape and element type the header
        declares (uint8, int8, int16, int32, float32 or float64).

    Raises
    ------
    ValueError
        Naming the file, if it is not valid IDX: bad magic number, unknown type,
        truncated or over-long data, corrupt gzip stream, checksum mismatch, a
        header declaring more data than the file can hold, or not a regular
        file (FIFO, device, directory).
    FileNotFoundError
        If ``path`` does not exist.

    Notes
    -----
    Memory: the returned array plus one 64 KiB chunk. The header is checked
    before the data is read: a plain file must be exactly as long as the
    header declares, and a gzip file cannot declare more than 1032 times its
    size (deflate's largest expansion).
    """
    return _read_idx(path, sha256, str(path))


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


class _Progress:
    """tqdm bar when tqdm is installed, else a plain one-line counter on stderr."""

    def __init__(self, total, desc, enabled):
        self._bar = None
        self._enabled = enabled
        self._desc = desc
        self._total = total
        self._done = 0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            print(f"downloading {desc} ...", file=sys.stderr, flush=True)
        else:
            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True,
                             unit_divisor=1024, leave=False)

    def update(self, n):
        self._done += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif self._enabled:
            print(f"downloaded {self._desc} ({self._done} bytes)", file=sys.stderr, flush=True)


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
        bar = _Progress(expected, name + ".gz", progress)
        received = 0
        try:
            # never ask for more than one byte past the limit: a server that
            # keeps sending is cut off there, not when the disk is full
            # read1: whatever has arrived (up to a chunk), so the deadline is
            # checked as data trickles in rather than after a full chunk
            while chunk := resp.read1(min(_CHUNK, limit + 1 - received)):
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
                is_gzip = f.read(2) == _GZIP_MAGIC
            _read_idx(tmp, sha256, f"{name} from {url}")
            if md5 is not None:
                _check_digest(_file_digest(tmp, "md5"), md5, "md5", f"{name} from {url}",
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

    paths = []
    for name in names:
        path = _find(data_dir, name, gzip_only=name in md5)
        if path is None and name in md5 and _find(data_dir, name) is not None:
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
            path = _download(name, data_dir, _mirror_list(mirrors), sha256.get(name),
                             md5.get(name), progress)
        paths.append(path)

    arrays = []
    for path, name in zip(paths, names):
        arrays.append(read_idx(path, sha256=sha256.get(name)))
        # after read_idx: "truncated" or "bad magic" says more than a hash mismatch
        if name in md5:
            _check_digest(_file_digest(path, "md5"), md5[name], "md5", str(path), "the file")
    out = []
    for (images, labels), (pi, pl) in zip(
        ((arrays[0], arrays[1]), (arrays[2], arrays[3])), ((paths[0], paths[1]), (paths[2], paths[3]))
    ):
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
        out.append((x, labels.astype(np.int64)))
    return out[0], out[1]


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


# --------------------------------------------------------------------------- #
# Batching
# --------------------------------------------------------------------------- #


def iterate_minibatches(x, y, batch_size, shuffle=True, rng=None, drop_last=False):
    """Yield ``(x_batch, y_batch)`` pairs covering the data once.

    Parameters
    ----------
    x : ndarray of shape (N, ...)
    y : ndarray of shape (N, ...)
    batch_size : int
        Samples per batch; the last batch is smaller unless ``drop_last``.
    shuffle : bool, default True
        Visit samples in a random order drawn from ``rng``.
    rng : None, int or numpy.random.Generator
        Source of the permutation; an int seeds a fresh generator, so the same
        seed gives the same batches.
    drop_last : bool, default False
        Skip a final incomplete batch.

    Yields
    ------
    x_batch, y_batch : ndarray
        Copies when shuffling, views otherwise.
    """
    x, y = check_xy("iterate_minibatches", x, y)
    batch_size = check_int("iterate_minibatches", "batch_size", batch_size, minimum=1)
    n = len(x)
    order = check_rng("iterate_minibatches", "rng", rng).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]


def one_hot(y, num_classes=10, dtype=np.float32):
    """One-hot encode integer labels.

    Parameters
    ----------
    y : array_like of int, shape (N,)
    num_classes : int, default 10
    dtype : dtype, default float32

    Returns
    -------
    ndarray of shape (N, num_classes)
    """
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(f"one_hot: y must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
    num_classes = check_int("one_hot", "num_classes", num_classes, minimum=1)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"one_hot: labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    out = np.zeros((len(y), num_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


def train_val_split(x, y, val_size=0.1, *, shuffle=True, rng=0):
    """Split off a validation set.

    Parameters
    ----------
    x, y : ndarray with the same leading length N
    val_size : float in (0, 1) or int in [1, N)
        Fraction or number of samples for validation.
    shuffle : bool, default True
        Pick the validation samples at random (from ``rng``); otherwise take the
        last ``val_size`` samples.
    rng : None, int or numpy.random.Generator, default 0
        Fixed by default so the split is reproducible.

    Returns
    -------
    (x_train, y_train), (x_val, y_val)
    """
    x, y = check_xy("train_val_split", x, y)
    n = len(x)
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise TypeError(f"train_val_split: val_size must be a float or int, got {type(val_size).__name__}")
    if isinstance(val_size, numbers.Integral):
        n_val = int(val_size)
    elif 0 < val_size < 1:
        n_val = int(round(val_size * n))
    else:
        raise ValueError(f"train_val_split: a float val_size must lie in (0, 1), got {val_size}")
    if not 1 <= n_val < n:
        raise ValueError(f"train_val_split: val_size gives {n_val} validation samples of {n}; need 1 <= n_val < N")
    if shuffle:
        order = check_rng("train_val_split", "rng", rng).permutation(n)
        tr, va = np.sort(order[n_val:]), np.sort(order[:n_val])
        return (x[tr], y[tr]), (x[va], y[va])
    return (x[:n - n_val], y[:n - n_val]), (x[n - n_val:], y[n - n_val:])


# --------------------------------------------------------------------------- #
# Data expansion
# --------------------------------------------------------------------------- #


def _check_batch(x, func):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{func}: x must be an ndarray, got {type(x).__name__}")
    check_ndim(func, "x", x, 4, "(N, C, H, W)")
    return check_float_array(func, "x", x)


def _per_image(v, n, name, func):
    v = np.asarray(v)
    if v.ndim == 0:
        v = np.full(n, v)
    if v.shape != (n,):
        raise ValueError(f"{func}: {name} must be a scalar or have shape ({n},), got shape {v.shape}")
    return v


def shift_images(x, dy, dx):
    """Translate images by whole pixels, filling with zeros.

    ``out[n, c, i, j] = x[n, c, i - dy[n], j - dx[n]]`` (zero outside), so a
    positive ``dy`` moves the content down and a positive ``dx`` moves it right.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    dy, dx : int or array of int, shape (N,)

    Returns
    -------
    ndarray of the shape and dtype of ``x`` (a new array).
    """
    x = _check_batch(x, "shift_images")
    n, c, h, w = x.shape
    dy = _per_image(dy, n, "dy", "shift_images").astype(np.intp)
    dx = _per_image(dx, n, "dx", "shift_images").astype(np.intp)
    m = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    m = min(m, max(h, w))  # shifting farther than the image is the same as blanking it
    dy = np.clip(dy, -m, m)
    dx = np.clip(dx, -m, m)
    padded = np.zeros((n, c, h + 2 * m, w + 2 * m), dtype=x.dtype)
    padded[:, :, m:m + h, m:m + w] = x
    rows = np.arange(h)[None, :] + m - dy[:, None]  # (N, H)
    cols = np.arange(w)[None, :] + m - dx[:, None]  # (N, W)
    return padded[
        np.arange(n)[:, None, None, None],
        np.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def rotate_images(x, degrees):
    """Rotate images about their centres with bilinear interpolation, zero fill.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    degrees : float or array of float, shape (N,)
        Anticlockwise angle (as displayed, row 0 at the top) for each image.

    Returns
    -------
    ndarray of the shape and dtype of ``x`` (a new array). A convex combination
    of input pixels and zeros, so values stay within the input's range and 0.
    """
    x = _check_batch(x, "rotate_images")
    n, c, h, w = x.shape
    theta = np.deg2rad(_per_image(degrees, n, "degrees", "rotate_images").astype(np.float64))
    cos = np.cos(theta)[:, None, None]
    sin = np.sin(theta)[:, None, None]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy = (np.arange(h, dtype=np.float64) - cy)[None, :, None]
    xx = (np.arange(w, dtype=np.float64) - cx)[None, None, :]
    # Inverse map: the source point that lands on each output pixel (N, H, W).
    # With rows pointing down, an anticlockwise display rotation by t sends
    # (y, x) -> (y cos t - x sin t, x cos t + y sin t); invert with -t.
    sy = cos * yy + sin * xx + cy
    sx = cos * xx - sin * yy + cx
    y0 = np.floor(sy)
    x0 = np.floor(sx)
    wy = (sy - y0).astype(x.dtype)[:, None]
    wx = (sx - x0).astype(x.dtype)[:, None]
    # One ring of zero padding; indices clipped into it read zeros, which makes
    # sources outside the image (or half outside) fade to the fill value.
    padded = np.zeros((n, c, h + 2, w + 2), dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    y0i = np.clip(y0.astype(np.intp), -1, h) + 1
    x0i = np.clip(x0.astype(np.intp), -1, w) + 1
    y1i = np.clip(y0.astype(np.intp) + 1, -1, h) + 1
    x1i = np.clip(x0.astype(np.intp) + 1, -1, w) + 1
    ni = np.arange(n)[:, None, None, None]
    ci = np.arange(c)[None, :, None, None]
    y0i, x0i, y1i, x1i = (a[:, None] for a in (y0i, x0i, y1i, x1i))
    top = padded[ni, ci, y0i, x0i] * (1 - wx) + padded[ni, ci, y0i, x1i] * wx
    bottom = padded[ni, ci, y1i, x0i] * (1 - wx) + padded[ni, ci, y1i, x1i] * wx
    return top * (1 - wy) + bottom * wy


class RandomShift:
    """Shift each image by a random whole number of pixels in each direction.

    Parameters
    ----------
    max_shift : int, default 2
        Shifts are drawn uniformly from ``-max_shift .. max_shift`` independently
        for rows and columns; vacated pixels are zero.

    Examples
    --------
    >>> aug = RandomShift(2)
    >>> x_aug = aug(x_batch, np.random.default_rng(0))   # doctest: +SKIP
    """

    def __init__(self, max_shift=2):
        self.max_shift = check_int("RandomShift", "max_shift", max_shift, minimum=0)

    def __call__(self, x, rng):
        x = _check_batch(x, "RandomShift")
        rng = check_rng("RandomShift", "rng", rng)
        m = self.max_shift
        d = rng.integers(-m, m + 1, size=(2, len(x)))
        return shift_images(x, d[0], d[1])

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"


class RandomRotation:
    """Rotate each image by a random angle (bilinear interpolation, zero fill).

    Parameters
    ----------
    max_degrees : float, default 10
        Angles are drawn uniformly from ``[-max_degrees, max_degrees]``.
    """

    def __init__(self, max_degrees=10):
        max_degrees = check_number("RandomRotation", "max_degrees", max_degrees)
        if max_degrees > 180:
            raise ValueError(f"RandomRotation: max_degrees must lie in [0, 180], got {max_degrees}")
        self.max_degrees = float(max_degrees)

    def __call__(self, x, rng):
        x = _check_batch(x, "RandomRotation")
        rng = check_rng("RandomRotation", "rng", rng)
        angles = rng.uniform(-self.max_degrees, self.max_degrees, size=len(x))
        return rotate_images(x, angles)

    def __repr__(self):
        return f"RandomRotation(max_degrees={self.max_degrees:g})"


class GaussianNoise:
    """Add i.i.d. Gaussian noise, then clip to ``[0, 1]``.

    Parameters
    ----------
    std : float, default 0.05
        Standard deviation of the noise.
    """

    def __init__(self, std=0.05):
        self.std = check_number("GaussianNoise", "std", std)

    def __call__(self, x, rng):
        x = _check_batch(x, "GaussianNoise")
        rng = check_rng("GaussianNoise", "rng", rng)
        noise = rng.standard_normal(x.shape, dtype=x.dtype)
        noise *= x.dtype.type(self.std)
        noise += x
        return np.clip(noise, 0, 1, out=noise)

    def __repr__(self):
        return f"GaussianNoise(std={self.std:g})"


class Compose:
    """Apply transforms in order, all drawing from the same generator.

    Parameters
    ----------
    transforms : sequence of callables ``(x_batch, rng) -> x_batch``
    """

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] is not callable: {t!r}")
        self.transforms = transforms

    def __call__(self, x, rng):
        rng = check_rng("Compose", "rng", rng)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return f"Compose({self.transforms!r})"


def expand_dataset(x, y, copies, transform, seed=0, *, include_original=True, chunk_size=4096):
    """Enlarge a training set with transformed copies (the classic "expand MNIST").

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    y : ndarray of shape (N, ...)
    copies : int >= 0
        Transformed copies of the whole set to add.
    transform : callable ``(x_batch, rng) -> x_batch``
        E.g. ``Compose([RandomShift(2), RandomRotation(10)])``.
    seed : int or numpy.random.Generator, default 0
        Same seed -> same expanded set.
    include_original : bool, default True
        Put the untransformed data first.
    chunk_size : int, default 4096
        Images transformed per call, to bound temporary memory.

    Returns
    -------
    x_expanded, y_expanded
        ``(copies + include_original) * N`` samples, in blocks of N: the
        original (if included), then copy 1, copy 2, ...
    """
    x = _check_batch(x, "expand_dataset")
    x, y = check_xy("expand_dataset", x, y)
    copies = check_int("expand_dataset", "copies", copies, minimum=0)
    chunk_size = check_int("expand_dataset", "chunk_size", chunk_size, minimum=1)
    if not callable(transform):
        raise TypeError(f"expand_dataset: transform must be callable, got {transform!r}")
    rng = check_rng("expand_dataset", "seed", seed)
    n = len(x)
    blocks = copies + bool(include_original)
    x_out = np.empty((blocks * n,) + x.shape[1:], dtype=x.dtype)
    y_out = np.concatenate([y] * blocks) if blocks else y[:0].copy()
    pos = 0
    if include_original:
        x_out[:n] = x
        pos = n
    for _ in range(copies):
        for start in range(0, n, chunk_size):
            xb = transform(x[start:start + chunk_size], rng)
            x_out[pos + start:pos + start + len(xb)] = xb
        pos += n
    return x_out, y_out
