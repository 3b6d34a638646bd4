"""grad_input's image-lanes route (csrc/fc_conv_grad_input.c) by column block.

The route splits each output row into a left border block (the taps with
d = q - j >= 0 meet grad_y), inner blocks (every tap does) of 4 columns, or 3
for 7 and 8 channels, with a narrower remainder, and a right border block
(d < 0), each with its tap range fixed at compile time; a layer whose padding
passes 4 or whose grad_y is narrower than 4 columns takes a tested path. Every
kind of block must give the implicit route's bits (the oracle, forced with
``set_route_override("dx_lanes_max_c", 0)``), at any thread count (when the
blocks of 16 images do not share out evenly, each block's rows are split among
the threads), and the route must really run for LeNet's conv2 (bench shape b)
at the batch sizes a user trains with.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, reference
from fastconv import functional as F

from avx512_route import restoring, skip_without_avx512

pytestmark = skip_without_avx512("the route")
_restore = restoring("dx_lanes_max_c")


@pytest.fixture(autouse=True)
def _full_team():
    """Two threads really split the blocks, even while other processes keep a
    core busy (the adaptive team would otherwise run on one for a while)."""
    before = _kernels.team_adaptive()
    _kernels.team_adaptive(False)
    yield
    _kernels.team_adaptive(before)


def _grad_input(gy, x, w, padding):
    return F.conv2d_backward(gy, x, w, padding=padding, output_mask=(True, False, False))[0]


def _case(rng, xs, ws, padding):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    gy = rng.standard_normal(F.conv2d(x, w, padding=padding).shape).astype(np.float32)
    gy[gy < -1.5] = 0  # exact zeros, as a ReLU leaves
    return gy, x, w


def _implicit(gy, x, w, padding):
    _kernels.set_route_override("dx_lanes_max_c", 0)
    try:
        return _grad_input(gy, x, w, padding)
    finally:
        _kernels.set_route_override("dx_lanes_max_c", None)


def _check_against_reference(got, gy, x, w, padding):
    want = reference.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                     w.astype(np.float64), padding=padding)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _lane_scratch_bytes(x_shape, w_shape, gy_shape):
    """What fc_malloc keeps of the route's one per-thread scratch block: the lane
    copies of 16 images' grad_y and grad_x, rounded to 64 bytes plus a header."""
    k, ho, wo = gy_shape[1:]
    c, h, w = x_shape[1:]
    nbytes = (k * ho * wo + c * h * w) * 16 * 4
    return (nbytes + 63) // 64 * 64 + 64


def _scratch_after(fn):
    _kernels.release_scratch()
    fn()
    return _kernels.scratch_bytes()


@pytest.mark.parametrize("n, threads", [(16, 1), (32, 1), (63, 1), (64, 1), (128, 1), (6, 1),
                                        (11, 1), (64, 2), (16, 2), (48, 2), (8, 2)])
@pytest.mark.parametrize("xs, ws", [((6, 14, 14), (16, 6, 5, 5)),   # LeNet conv2 (shape b)
                                    ((6, 12, 12), (16, 6, 5, 5)),
                                    ((5, 14, 14), (12, 5, 5, 5))])
def test_route_runs_for_shape_b_like_layers(rng, n, threads, xs, ws):
    """Also where the blocks do not share out evenly among the threads (16 or 48
    images on 2: each block's rows are split) and for a lone partial block."""
    gy, x, w = _case(rng, (n,) + xs, ws, 0)
    fastconv.set_num_threads(threads)
    if _scratch_after(lambda: _implicit(gy, x, w, 0)) == 0:
        pytest.skip("this build keeps no scratch cache (sanitizer build)")
    # the implicit route's scratch is a padded grid of all n images, not this block;
    # here each thread takes one block's lane copies (a thread that starts after
    # another has finished may take the same block back from the cache)
    block = _lane_scratch_bytes(x.shape, w.shape, gy.shape)
    expected = {block * t for t in range(1, threads + 1)}
    assert _scratch_after(lambda: _implicit(gy, x, w, 0)) not in expected
    assert _scratch_after(lambda: _grad_input(gy, x, w, 0)) in expected


@pytest.mark.parametrize("n", [1, 5, 6, 11, 12, 15, 16, 17, 22, 31, 33, 48, 63, 64, 65, 100])
def test_lenet_conv2_any_batch_and_thread_count(rng, n):
    gy, x, w = _case(rng, (n, 6, 14, 14), (16, 6, 5, 5), 0)
    implicit = _implicit(gy, x, w, 0)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        got = _grad_input(gy, x, w, 0)
        assert got.tobytes() == implicit.tobytes(), f"{threads} threads"
    _check_against_reference(got, gy, x, w, 0)


# (C, W, padding): every channel count (border blocks of 4 columns, or 2 and 2
# for C = 7, 8), inner remainders of 0-3 columns, left and right padding 0-4
# (border columns outside grad_x), and layers without borders: grad_y narrower
# than 4 columns, or a padding past 4
BLOCK_CASES = [
    (6, 14, 0), (6, 15, 0), (6, 16, 0), (6, 17, 0), (6, 8, 0), (6, 9, 0),
    (1, 13, 0), (2, 11, 1), (3, 10, 2), (4, 12, ((0, 0), (1, 3))), (5, 14, ((0, 0), (4, 0))),
    (7, 14, 0), (7, 15, 0), (8, 16, 0), (8, 13, ((1, 2), (3, 4))), (7, 9, 2),
    (6, 7, ((0, 0), (0, 2))), (6, 5, 1), (8, 6, 0), (3, 4, ((0, 0), (5, 0))),
    (6, 12, ((0, 0), (2, 6))),
]


@pytest.mark.parametrize("c, width, padding", BLOCK_CASES)
def test_every_column_block_gives_the_implicit_routes_bits(rng, c, width, padding):
    # 2 blocks of 16 (so 2 threads split them) and 4 images for the implicit route
    gy, x, w = _case(rng, (36, c, 7, width), (5, c, 3, 5), padding)
    implicit = _implicit(gy, x, w, padding)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        got = _grad_input(gy, x, w, padding)
        assert got.tobytes() == implicit.tobytes(), f"{threads} threads"
    _check_against_reference(got, gy, x, w, padding)


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
def test_lenet_conv2_at_every_simd_level(rng, level):
    gy, x, w = _case(rng, (64, 6, 14, 14), (16, 6, 5, 5), 0)
    assert F.set_simd_level(level) == level
    runs = []
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        runs.append(_grad_input(gy, x, w, 0))
    assert runs[0].tobytes() == runs[1].tobytes()
    _check_against_reference(runs[0], gy, x, w, 0)
    # each level is its own oracle: the implicit route at that level
    assert runs[0].tobytes() == _implicit(gy, x, w, 0).tobytes()
