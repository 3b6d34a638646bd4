"""The kernels' runtime: thread count, SIMD code path, scratch memory, build info.

Process-wide settings read on every kernel call (``get_num_threads``) or set
once by the user; re-exported by ``fastconv.functional`` and ``fastconv``.
"""

import os
import platform

import numpy as np

from . import _kernels, _routes
from ._validate import check_int
from ._version import __version__

__all__ = [
    "set_num_threads",
    "get_num_threads",
    "max_num_threads",
    "openmp_enabled",
    "simd_level",
    "set_simd_level",
    "release_memory",
    "info",
]

# The compiled runtime's numbering of the SIMD code paths (fc_simd_level).
SIMD_NAMES = _kernels.SIMD_LEVELS  # name -> level, from csrc/fastconv.h

# ---------------------------------------------------------------- threads ---
_thread_cap = None  # set by set_num_threads; None = follow the OpenMP runtime


def max_num_threads():
    """The largest thread count :func:`set_num_threads` accepts.

    ``4 * os.cpu_count()`` (more threads than that only wait for each other),
    and never more than the compiled runtime can start: 256, or the OpenMP
    thread limit (``OMP_THREAD_LIMIT``) if that is lower. Fixed for the process,
    so computed once: ``get_num_threads`` runs on every model call, and
    ``os.cpu_count()`` alone took 6 us of a 37 us batch-1 LeNet-5 forward.
    """
    global _MAX_THREADS
    if _MAX_THREADS is None:
        _MAX_THREADS = max(1, min(4 * (os.cpu_count() or 1), _kernels.thread_limit()))
    return _MAX_THREADS


_MAX_THREADS = None


def set_num_threads(n):
    """Set the number of threads the kernels use.

    Parameters
    ----------
    n : int, 1 <= n <= 4 * os.cpu_count()
        Thread count. Also passed to ``omp_set_num_threads`` so that the OpenMP
        runtime (and ``threadpoolctl``) report it. A larger count (or one above
        the OpenMP thread limit, or 256) is refused with ``ValueError``: the
        OpenMP runtime cannot start an arbitrary number of threads (GNU libgomp
        crashes or aborts the process).

    Notes
    -----
    This is an upper bound. While other processes or thread pools keep the
    cores busy, the kernels run on fewer threads for a while and then try the
    full count again (see ``info()["team"]``); results are bitwise identical
    for any thread count.
    """
    global _thread_cap
    n = check_int("set_num_threads", "n", n)
    limit = max_num_threads()
    if n < 1 or n > limit:
        raise ValueError(
            f"set_num_threads: n must be between 1 and {limit} (4 x os.cpu_count(), "
            f"at most the OpenMP thread limit), got {n}")
    _thread_cap = n
    _kernels.set_max_threads(n)


def get_num_threads():
    """Return the number of threads the next kernel call may use.

    That is the OpenMP runtime's ``omp_get_max_threads()`` for the calling
    thread (which honours ``OMP_NUM_THREADS`` and ``threadpoolctl`` limits),
    capped by :func:`set_num_threads` if it was called, and never more than
    :func:`set_num_threads` accepts. A kernel may run on fewer: see :func:`info`.
    """
    n = min(_kernels.max_threads(), max_num_threads())
    if _thread_cap is not None:
        n = min(n, _thread_cap)
    return max(1, n)


def openmp_enabled():
    """True if the compiled kernels were built with OpenMP (parallel)."""
    return _kernels.openmp_enabled()


def simd_level():
    """Name of the SIMD code path the kernels use: 'avx512', 'avx2' or 'generic'."""
    return _kernels.simd_name(_kernels.simd_level())


def set_simd_level(name):
    """Select a SIMD code path ('generic', 'avx2', 'avx512'); for tests and debugging.

    The level is capped at what this CPU supports; the path actually selected
    is returned. The environment variable ``FASTCONV_SIMD`` sets the same at
    start-up.
    """
    if name not in SIMD_NAMES:
        raise ValueError(
            f"set_simd_level: name must be one of {sorted(SIMD_NAMES)}, got {name!r}")
    return _kernels.simd_name(_kernels.set_simd_level(SIMD_NAMES[name]))


def release_memory():
    """Return the kernels' cached scratch memory to the system.

    Large temporary buffers are kept between calls (reusing them avoids the
    cost of fresh pages); ``info()["scratch_pool_bytes"]`` shows how much.
    """
    _kernels.release_scratch()


def info():
    """Describe this build and machine as a dict (version, OpenMP, SIMD path, threads).

    ``info()["team"]`` is what the thread-team controller knows:
    ``threads_last_call`` (the largest team a parallel region of the most recent
    kernel call really ran with; 1 if it ran serially), ``cap`` (while backing
    off, the most threads a kernel gets; 0 otherwise), ``cap_left_s`` (until
    the full team is tried again), ``backoff_s`` (length of the last back-off;
    lateness soon after it doubles it), and counts of ``parallel_regions``,
    ``late_regions`` (the caller waited for a descheduled helper), ``backoffs``
    and ``scout_late`` (back-offs renewed because a spare thread found no free
    core: it woke late, or every core had a runnable thread), ``waited_s`` (time
    callers spent waiting for late helpers or off their own core, summed over
    regions), ``descheduled_regions`` (regions whose calling thread was off
    its core for longer than a helper's wake-up takes) and ``stalled_regions``
    (late regions in which no thread of the process waited for a CPU: a stall
    of the work itself, such as page faults on a fresh output, which does not
    make the team smaller); ``adaptive`` is False
    only while a test holds the team fixed. Process-wide: with several Python
    threads calling kernels, "last call" is whichever finished last.
    """
    return {
        "version": __version__,
        "openmp": openmp_enabled(),
        "compiler": _kernels.compiler(),
        "simd": simd_level(),
        "simd_supported": _kernels.simd_name(_kernels.simd_supported()),
        "threads": get_num_threads(),
        "team": _kernels.team_stats(),
        "forked_child_serial": _kernels.forked_child(),
        "scratch_pool_bytes": _kernels.scratch_bytes(),
        "winograd": {None: "auto", True: "on", False: "off"}[_routes.winograd_mode()],
        "last_conv_algorithm": _routes.last_algorithms(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
