"""Leaks: RSS and NumPy's traced allocations stay flat over thousands of
forward/backward calls and over training epochs (the full MNIST epoch is
marked slow).
"""

import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import _kernels

from workloads import rss_bytes


def _fwd_bwd_once(x, w, b, gy):
    y = fastconv.conv2d(x, w, b, padding=1)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, padding=1)
    p, idx = fastconv.max_pool2d(y, 2, return_indices=True)
    fastconv.max_pool2d_backward(p, idx, y.shape)
    a = fastconv.avg_pool2d(y, 3, 1, 1)
    fastconv.avg_pool2d_backward(a, y.shape, 3, 1, 1)
    return gx


# each iteration is 6 kernel calls, so 2000 iterations are 12,000 calls
LEAK_CALLS = int(os.environ.get("FASTCONV_LEAK_CALLS", "2000"))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rss_flat_over_thousands_of_calls(dtype, threads, restore_threads):
    # Two OpenMP threads on a loaded 2-core machine can make small calls 100x
    # slower (the team waits for a descheduled worker at every barrier), so the
    # parallel variant does a tenth of the calls, on a layer whose convolutions
    # are above the parallel cut-off (2e5 multiply-adds; the 1-thread layer is
    # below it): per-thread scratch, allocated inside the parallel region, is
    # exercised hundreds of times, and the region count says so.
    calls = LEAK_CALLS if threads == 1 else LEAK_CALLS // 10
    (n, c, hw), k = ((2, 4, 12), 8) if threads == 1 else ((2, 8, 16), 16)
    fastconv.set_num_threads(threads)
    _kernels.team_adaptive(False)  # every call gets the team it asks for
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
    w = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    gy = rng.standard_normal((n, k, hw, hw)).astype(dtype)
    try:
        for _ in range(100):  # warm-up: allocator pools, OpenMP team, thread stacks
            _fwd_bwd_once(x, w, b, gy)
        gc.collect()
        before, regions = rss_bytes(), fastconv.info()["team"]["parallel_regions"]
        for _ in range(calls):
            _fwd_bwd_once(x, w, b, gy)
        gc.collect()
        grown = rss_bytes() - before
        regions = fastconv.info()["team"]["parallel_regions"] - regions
    finally:
        _kernels.team_adaptive(True)
        _kernels.team_reset()
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over {6 * calls} calls"
    if threads == 2 and fastconv.openmp_enabled():
        assert regions >= 2 * calls, f"{regions} parallel regions in {calls} iterations"
    else:
        assert regions == 0


def test_tracemalloc_no_numpy_growth(restore_threads):
    fastconv.set_num_threads(1)  # tracemalloc sees Python-side allocations only
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 12, 12))
    w = rng.standard_normal((8, 4, 3, 3))
    b = rng.standard_normal(8)
    gy = rng.standard_normal((2, 8, 12, 12))
    tracemalloc.start()
    try:
        for _ in range(100):
            _fwd_bwd_once(x, w, b, gy)
        gc.collect()
        snap0 = tracemalloc.take_snapshot()
        for _ in range(500):
            _fwd_bwd_once(x, w, b, gy)
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    numpy_domain = np.lib.tracemalloc_domain
    filt = [tracemalloc.DomainFilter(True, numpy_domain)]
    diff = snap1.filter_traces(filt).compare_to(snap0.filter_traces(filt), "lineno")
    grown = sum(d.size_diff for d in diff)
    assert grown < 64 * 1024, f"NumPy allocations grew by {grown} bytes:\n" + "\n".join(
        map(str, diff[:5]))
    all_diff = snap1.compare_to(snap0, "filename")
    assert sum(d.size_diff for d in all_diff) < 256 * 1024


def _rss_over_training(model, x, y, warm_epochs, epochs, batch_size):
    model.fit(x, y, batch_size=batch_size, epochs=warm_epochs, verbose=0, seed=0)
    gc.collect()
    before = rss_bytes()
    model.fit(x, y, batch_size=batch_size, epochs=warm_epochs + epochs,
              initial_epoch=warm_epochs, verbose=0, seed=1)
    gc.collect()
    return rss_bytes() - before


def test_rss_flat_over_training_epochs_small():
    from fastconv import models

    rng = np.random.default_rng(0)
    x = rng.random((512, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 512)
    model = models.lenet5(seed=0)
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    grown = _rss_over_training(model, x, y, warm_epochs=1, epochs=4, batch_size=64)
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 4 epochs"


# MNIST sits beside the checkout (tests/ -> repo -> its parent), wherever fastconv is installed
MNIST_DIR = Path(os.environ.get("FASTCONV_MNIST_DIR")
                 or Path(__file__).resolve().parents[1].parent / "shared" / "mnist")


@pytest.mark.slow
def test_rss_flat_over_full_lenet5_mnist_epoch():
    from fastconv import datasets, models

    try:
        (x, y), _ = datasets.load_mnist(MNIST_DIR, download=False)
    except (OSError, ValueError) as exc:
        pytest.skip(f"MNIST not available: {exc}")
    model = models.lenet5(seed=0)
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    # warm-up on a slice, then one full 60,000-image epoch
    model.fit(x[:4096], y[:4096], batch_size=64, epochs=1, verbose=0, seed=0)
    gc.collect()
    before = rss_bytes()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, seed=1)
    gc.collect()
    grown = rss_bytes() - before
    print(f"RSS growth over one LeNet-5 MNIST epoch: {grown / 2**20:.2f} MiB")
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over a full epoch"
