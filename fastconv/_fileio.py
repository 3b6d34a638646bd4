"""File helpers shared by the loaders and writers: untrusted input, atomic output.

Reading: :func:`open_regular` refuses anything but a regular file before any
byte is read, so a FIFO, a character device or a directory named as a model
or dataset gives a ``ValueError`` instead of blocking forever or reading an
endless stream.

Writing: :func:`atomic_write` writes next to the destination and renames, so
readers see the old file or the new one, never a partial one. The temporary
file is created with mode ``0o666`` and the kernel applies the process umask,
exactly as for ``open(path, "w")``: ``tempfile.mkstemp`` would make every saved
model ``0600`` whatever the umask, and reading the umask needs ``os.umask``,
which changes it process-wide for a moment (a race with other threads).
"""

import os
import secrets
import stat
import time

__all__ = ["open_regular", "atomic_write", "check_writable_target", "create_temp", "remove_stale"]

# A writer killed by SIGKILL or a power loss leaves its temporary file behind.
# The next writer to the same destination removes such files once they have
# not been modified for this long: a live writer keeps its file's mtime fresh
# while it writes (downloads also stop at an overall deadline shorter than this).
STALE_SECONDS = 3600.0
_TOKEN_HEX = 12  # characters of randomness in a temporary name


def open_regular(path, func):
    """Open ``path`` for binary reading if it is a regular file.

    Parameters
    ----------
    path : str or os.PathLike
    func : str
        Name of the public function, for messages.

    Returns
    -------
    (file object, int)
        The open file (the caller closes it) and its size in bytes.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        ``path`` is a directory, FIFO, socket or device.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{func}: no such file: {path!r}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{func}: {path!r} is not a regular file (a directory, FIFO or device)")
    # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open()
    # returns at once instead of waiting for a writer; fstat then refuses it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{func}: {path!r} is not a regular file (a directory, FIFO or device)")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f, st.st_size


def create_temp(directory, prefix, suffix):
    """Create a new file ``<directory>/<prefix><random><suffix>``, mode 0o666 & ~umask.

    Returns
    -------
    (int, str)
        An open write-only descriptor and the path.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(directory, prefix + secrets.token_hex(_TOKEN_HEX // 2) + suffix)
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file {prefix}*{suffix} in {directory!r}")


def remove_stale(directory, prefix, suffix, max_age=None):
    """Delete ``create_temp`` leftovers (same prefix and suffix) older than ``max_age`` seconds."""
    max_age = STALE_SECONDS if max_age is None else max_age
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        token = name[len(prefix):len(name) - len(suffix)]
        if not (name.startswith(prefix) and name.endswith(suffix) and len(token) == _TOKEN_HEX
                and all(c in "0123456789abcdef" for c in token)):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            pass  # another process cleaned it up first, or it is not ours to remove


def atomic_write(path, write):
    """Write a file so that readers never see a partial one.

    ``write(f)`` fills a binary file object opened on a temporary file in the
    destination's directory; the file is flushed, fsync'ed and renamed over
    ``path`` with ``os.replace``. On any failure the temporary file is removed
    and the destination is untouched. The new file's permissions follow the
    umask (``0o666 & ~umask``), like any file the user creates.

    Parameters
    ----------
    path : str or os.PathLike
    write : callable taking a binary file object
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    remove_stale(directory, prefix, ".tmp")
    fd, tmp = create_temp(directory, prefix, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def check_writable_target(path):
    """Why ``path`` cannot be written by :func:`atomic_write`, or None if it can.

    Probes by creating (and removing) a temporary file in the destination's
    directory, which catches read-only file systems and ACLs that
    ``os.access`` misses.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return f"{path} is a directory; give a file name"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    try:
        fd, tmp = create_temp(directory, "." + os.path.basename(path) + ".", ".tmp")
    except OSError as exc:
        return f"cannot create files in {directory} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(tmp)
    return None
