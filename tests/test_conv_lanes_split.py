"""The forward's image-lanes route (csrc/fc_conv_fwd.c) at any batch and thread count.

Blocks of 16 images are its tasks while they share out evenly among the threads;
otherwise (16 or 48 images on 2 threads) each block's output channels are split
among the threads in blocks of 8, and a last partial block is taken from 10
images on. Every split must give the implicit route's bits (the oracle, forced
with ``set_route_override("fwd_lanes_max_c", 0)``), with and without the fused
ReLU, and the route must really run at those batches (read from the scratch it
leaves in fc_malloc's cache: one block's lane copies per thread).
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, reference
from fastconv import functional as F

from avx512_route import restoring, skip_without_avx512

pytestmark = skip_without_avx512("the route")
_restore = restoring("fwd_lanes_max_c")


@pytest.fixture(autouse=True)
def _full_team():
    """Two threads really split the work, even while other processes keep a core
    busy (the adaptive team would otherwise run on one for a while)."""
    before = _kernels.team_adaptive()
    _kernels.team_adaptive(False)
    yield
    _kernels.team_adaptive(before)


def _case(rng, n, c, hw, k):
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    x[x < -1.5] = 0
    w = rng.standard_normal((k, c, 5, 5)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, w, b


def _implicit(x, w, b, relu):
    _kernels.set_route_override("fwd_lanes_max_c", 0)
    try:
        return F.conv2d(x, w, b, activation=relu)
    finally:
        _kernels.set_route_override("fwd_lanes_max_c", None)


@pytest.mark.parametrize("n", [1, 9, 10, 15, 16, 17, 26, 31, 48, 63, 64, 80])
@pytest.mark.parametrize("k", [16, 17, 8])
@pytest.mark.parametrize("relu", [None, "relu"])
def test_any_batch_and_thread_count_gives_the_implicit_routes_bits(rng, n, k, relu):
    x, w, b = _case(rng, n, 6, 14, k)
    implicit = _implicit(x, w, b, relu)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        got = F.conv2d(x, w, b, activation=relu)
        assert got.tobytes() == implicit.tobytes(), f"{threads} threads"
    want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    if relu:
        want = np.maximum(want, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _lane_scratch_bytes(c, hw, k):
    """One block's lane copies of x (rows of an even width, no padding) and y."""
    ho = hw - 4
    nbytes = (c * hw * hw + k * ho * ho) * 16 * 4
    return (nbytes + 63) // 64 * 64 + 64


def _scratch_cached():
    """Whether fc_malloc keeps large blocks (not in sanitizer builds): grad_input's
    implicit route leaves its padded grid of grad_out there."""
    gy = np.ones((64, 16, 10, 10), np.float32)
    _kernels.set_route_override("dx_lanes_max_c", 0)
    try:
        _kernels.release_scratch()
        F.conv2d_backward(gy, np.ones((64, 6, 14, 14), np.float32),
                          np.ones((16, 6, 5, 5), np.float32), output_mask=(True, False, False))
        return _kernels.scratch_bytes() > 0
    finally:
        _kernels.set_route_override("dx_lanes_max_c", None)


@pytest.mark.parametrize("n, threads", [(64, 1), (10, 1), (16, 2), (48, 2), (64, 2), (12, 2)])
def test_route_runs_for_lenet_conv2(rng, n, threads):
    if not _scratch_cached():
        pytest.skip("this build keeps no scratch cache (sanitizer build)")
    x, w, b = _case(rng, n, 6, 14, 16)
    fastconv.set_num_threads(threads)
    _kernels.release_scratch()
    _implicit(x, w, b, None)
    implicit_bytes = _kernels.scratch_bytes()
    _kernels.release_scratch()
    F.conv2d(x, w, b)
    lanes_bytes = _kernels.scratch_bytes()
    # a thread that starts after another has finished may take its block back
    expected = {_lane_scratch_bytes(6, 14, 16) * t for t in range(1, threads + 1)}
    assert implicit_bytes not in expected
    assert lanes_bytes in expected
