"""IDX files (the MNIST format) from untrusted sources: header checks, bounded reads, checksums.

A file's header declares its size; that is checked against the file (or what
a gzip file could inflate to) before anything is allocated, the data is read
in chunks into the result, and the stream must end exactly there. Used by
``fastconv.datasets`` (which re-exports ``read_idx`` and ``ChecksumError``).
"""

import gzip
import hashlib
import math
import zlib

import numpy as np

from . import _fileio

__all__ = ["read_idx", "ChecksumError", "read_idx_checked", "check_digest", "file_digest",
           "IDX_DTYPES", "GZIP_MAGIC", "CHUNK"]

# IDX type byte -> big-endian dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 16
# Deflate cannot expand data by more than about 1032:1, so a gzip file of n
# bytes whose IDX header declares more than 1032 * n is forged or truncated.
MAX_INFLATE = 1032
# No IDX dataset comes near this; a header declaring more is refused outright.
MAX_IDX_BYTES = 1 << 34


def _idx_header(stream, name):
    """Read and check an IDX header from ``stream``: (dtype, shape, header bytes)."""
    head = stream.read(4)
    if len(head) < 4:
        raise ValueError(f"{name}: not an IDX file (only {len(head)} bytes)")
    if head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
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
    return IDX_DTYPES[head[2]], shape, head + dims


def read_idx_checked(path, sha256, name):
    """Stream-decode one IDX file (gzip or not); ``name`` is used in messages.

    The header is read first and the size it declares is checked before
    anything else is read or allocated: against the file size for a plain
    file, and against what the compressed file could inflate to for gzip. The
    data is then read into the result array in chunks, so memory stays at the
    array's size plus one chunk, and the stream must end exactly there.
    """
    f, size = _fileio.open_regular(path, "read_idx")
    with f:
        gz = f.read(2) == GZIP_MAGIC
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
            if gz and total > MAX_INFLATE * size:
                raise ValueError(
                    f"{name}: truncated or forged: {what}, more than {size} bytes of gzip "
                    "can inflate to")
            if nbytes > MAX_IDX_BYTES:
                raise ValueError(f"{name}: {what}, more than the {MAX_IDX_BYTES}-byte limit")
            if digest is not None:
                digest.update(header)
            native = dtype.newbyteorder("=")
            arr = np.empty(math.prod(shape), native)
            view = memoryview(arr).cast("B")
            pos = 0
            while pos < nbytes:
                n = stream.readinto(view[pos:pos + CHUNK])
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
        check_digest(digest.hexdigest(), sha256, "sha256", name, "the decompressed data")
    if dtype != native:
        arr.byteswap(inplace=True)  # the bytes were big-endian; now they match native
    return arr.reshape(shape)


def _gzip_damage(stream, max_bytes=64 << 20):
    """The error that reading on in ``stream`` runs into within ``max_bytes``, or None.

    Inflated data is discarded chunk by chunk: constant memory, bounded time.
    """
    try:
        for _ in range(max_bytes // CHUNK):
            if not stream.read(CHUNK):
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


def check_digest(actual, expected, algorithm, name, subject):
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


def file_digest(path, algorithm):
    """Hex digest of the bytes of ``path`` as stored (read in chunks: constant memory)."""
    # an integrity check, not security: lets MD5 work where FIPS mode forbids it otherwise
    h = hashlib.new(algorithm, usedforsecurity=False)
    f, _ = _fileio.open_regular(path, "read_idx")
    with f:
        while chunk := f.read(CHUNK):
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
    return read_idx_checked(path, sha256, str(path))
