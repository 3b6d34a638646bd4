"""Helpers shared by the thread, fork and leak tests (test_threadsafe,
test_threads, test_fork, test_leaks, and the thread-count checks elsewhere): one
fixed set of kernel calls whose bytes can be compared across threads and
processes, a fixed team and a count of the parallel regions that really ran,
how to start a child process on the fastconv under test, and the resident set
size. Like oracle.py, imported by name (pytest puts tests/ on sys.path).
"""

import contextlib
import os
from pathlib import Path

import numpy as np

import fastconv

# Children import the fastconv under test (the installed one in CI, the in-place
# build in a checkout) and run from its parent directory: a child started with
# `python -c` in the repository root would import the uncompiled source tree.
PKG_PARENT = str(Path(fastconv.__file__).resolve().parent.parent)
SUBPROCESS_ENV = dict(os.environ, PYTHONPATH=PKG_PARENT)


def rss_bytes():
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# (x shape, weight shape, conv kwargs, pool kernel) - different paths on purpose:
# 1x1, strided, dilated, grouped, depthwise-ish, col2im grad-input (C=1)
WORKLOADS = [
    ((2, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), 2),
    ((2, 6, 14, 14), (16, 6, 5, 5), dict(), 2),
    ((1, 16, 17, 15), (32, 16, 3, 3), dict(stride=2, padding=1), 3),
    ((3, 8, 12, 12), (8, 8, 1, 1), dict(), 2),
    ((2, 8, 16, 16), (8, 4, 3, 3), dict(padding=2, dilation=2, groups=2), 2),
    ((1, 3, 31, 31), (12, 3, 7, 7), dict(stride=2, padding=3), 3),
    ((4, 4, 9, 9), (4, 4, 3, 3), dict(padding="same"), 3),
    ((2, 12, 10, 10), (24, 12, 3, 3), dict(padding=1), 2),
]


def run_workload(i, dtype, seed=0):
    """Every kernel once on workload i; returns the outputs as bytes."""
    xs, ws, kw, pk = WORKLOADS[i]
    rng = np.random.default_rng(seed + 100 * i)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = fastconv.conv2d(x, w, b, **kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **kw)
    p, idx = fastconv.max_pool2d(y, pk, return_indices=True)
    gp = fastconv.max_pool2d_backward(p, idx, y.shape)
    a = fastconv.avg_pool2d(y, pk, 1, pk // 2, count_include_pad=False)
    ga = fastconv.avg_pool2d_backward(a, y.shape, pk, 1, pk // 2, count_include_pad=False)
    return [t.tobytes() for t in (y, gx, gw, gb, p, idx, gp, a, ga)]


def parallel_regions():
    """Parallel regions run so far with a team of 2 or more threads, process-wide."""
    return fastconv.info()["team"]["parallel_regions"]


@contextlib.contextmanager
def fixed_team():
    """Every kernel call above the parallel cut-off gets the team it asks for: on
    a busy machine the adaptive controller would otherwise run some calls on one
    thread (same bits, but a thread-count test would then compare serial runs).
    Leaving resets the controller and its counters (parallel_regions too)."""
    from fastconv import _kernels

    _kernels.team_adaptive(False)
    try:
        yield
    finally:
        _kernels.team_adaptive(True)
        _kernels.team_reset()
