"""grad_weight's image-lanes route (csrc/fc_conv_grad_weight.c, AVX-512 float32).

Layers of small images (LeNet's conv1 and conv2, the MNIST CNN's conv1, 1x1
and 3x3 layers on 7x7 to 14x14 maps, up to 40,960 weights per group) run with
16 images in the lanes of a vector instead of the dot or packed route, from 12
images on: whole blocks of 16 by lanes, a remainder under 12 by the route the
layer would otherwise take, the two sums added. These bits are the route's own (not the dot
route's), so the checks are: the route is really taken (the default call gives
the bits of the route forced on with ``set_route_override("dw_lanes", 1)``, not
those of the other route, forced with ``0``); the thread count never changes a
bit; the split adds exactly lanes(first images) + other(rest); and every case
agrees with the float64 plain-loop reference.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, reference
from fastconv import functional as F

from avx512_route import restoring, skip_without_avx512

pytestmark = skip_without_avx512("the route")
_restore = restoring("dw_lanes")
MASK = (False, True, True)


def threads_used():
    return fastconv.info()["team"]["threads_last_call"]


def problem(xs, ws, stride=1, padding=0, dilation=1, groups=1, seed=0):
    rng = np.random.default_rng(seed + sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = F.conv2d(x, w, **args)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    return gy, x, w, args


def grads(gy, x, w, args, lanes=None, mask=MASK):
    # the direct routes: LeNet's conv2 otherwise runs on row Winograd
    # (tests/test_winograd_rows_grad_weight.py)
    _kernels.set_route_override("dw_lanes", lanes)
    previous = F.set_winograd(False)
    try:
        _, gw, gb = F.conv2d_backward(gy, x, w, output_mask=mask, **args)
    finally:
        F.set_winograd(previous)
        _kernels.set_route_override("dw_lanes", None)
    return gw, gb


def same_bits(a, b):
    return all(u.tobytes() == v.tobytes() for u, v in zip(a, b))


def check_reference(gw, gb, gy, x, w, args):
    want = reference.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                     w.astype(np.float64), **args)
    for got, exp in ((gw, want[1]), (gb, want[2])):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-4 * np.abs(exp).max())


# LeNet conv2 (bench shape b) and conv1 (a), the MNIST CNN's conv1 (c), LeNet
# conv1 with pads (2, 3) (g), a 1x1 layer; past the dot route's 4,096 weights
# (the packed route's otherwise): 9,216 and 36,864
BENCH = [
    ((64, 6, 14, 14), (16, 6, 5, 5), dict()),
    ((64, 1, 28, 28), (6, 1, 5, 5), dict(padding=2)),
    ((64, 1, 28, 28), (32, 1, 5, 5), dict(padding=2)),
    ((64, 1, 28, 28), (6, 1, 5, 5), dict(padding=((2, 3), (2, 3)))),
    ((64, 16, 6, 6), (32, 16, 1, 1), dict()),
    ((32, 16, 7, 7), (64, 16, 3, 3), dict(padding=1)),
    ((16, 64, 5, 5), (64, 64, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("xs, ws, kw", BENCH)
def test_small_layers_take_the_lanes_route(xs, ws, kw):
    gy, x, w, args = problem(xs, ws, **kw)
    got = grads(gy, x, w, args)
    assert same_bits(got, grads(gy, x, w, args, lanes=1))
    assert not same_bits(got, grads(gy, x, w, args, lanes=0))
    check_reference(*got, gy, x, w, args)


# every padding side, stride, dilation, groups (edge tiles of 1-2 rows), taps
# not a multiple of 5 or 6, a batch of 200 (13 blocks in 8 chunks)
SHAPES = [
    ((200, 6, 14, 14), (16, 6, 5, 5), dict()),
    ((32, 3, 11, 13), (7, 3, 3, 2), dict(stride=(2, 1), padding=((1, 2), (0, 3)))),
    ((16, 4, 12, 12), (10, 2, 3, 3), dict(padding=1, dilation=(2, 1), groups=2)),
    ((48, 4, 9, 8), (2, 2, 4, 3), dict(stride=2, padding=(2, 1), groups=2)),
    ((16, 1, 5, 5), (1, 1, 5, 5), dict()),
    ((16, 5, 7, 7), (4, 5, 1, 1), dict(stride=3)),
]


@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
@pytest.mark.parametrize("xs, ws, kw", SHAPES + BENCH[:1])
def test_thread_count_does_not_change_a_bit(xs, ws, kw):
    gy, x, w, args = problem(xs, ws, **kw)
    fastconv.set_num_threads(1)
    one = grads(gy, x, w, args, lanes=1)
    check_reference(*one, gy, x, w, args)
    for threads in (2, 3):
        fastconv.set_num_threads(threads)
        assert same_bits(grads(gy, x, w, args, lanes=1), one), threads
        if xs[0] >= 64:  # the smaller ones are under the work a team is woken for
            assert threads_used() == threads


@pytest.mark.parametrize("n, c, h, k, kh", [(n, 6, 14, 16, 5) for n in (12, 17, 20, 28, 33, 75)]
                         + [(20, 16, 7, 64, 3), (44, 16, 7, 64, 3)])
def test_a_batch_off_the_blocks_adds_lanes_then_the_other_route(n, c, h, k, kh):
    """Blocks of 16 by lanes and a rest under 12 by the dot route (or the
    packed one, 16 -> 64 3x3), or every image by lanes when the last block has
    12 or more."""
    gy, x, w, args = problem((n, c, h, h), (k, c, kh, kh), padding=kh // 2, seed=n)
    nl = n if n % 16 >= 12 else n - n % 16
    lanes = grads(gy[:nl], x[:nl], w, args, lanes=1)
    if nl < n:
        dot = grads(gy[nl:], x[nl:], w, args, lanes=0)
        want = [a + b for a, b in zip(lanes, dot)]
    else:
        want = lanes
    got = grads(gy, x, w, args)
    assert same_bits(got, want)
    check_reference(*got, gy, x, w, args)


@pytest.mark.parametrize("n", [1, 4, 11])
def test_a_small_batch_takes_the_dot_route(n):
    gy, x, w, args = problem((n, 6, 14, 14), (16, 6, 5, 5), seed=n)
    got = grads(gy, x, w, args)
    assert same_bits(got, grads(gy, x, w, args, lanes=0))
    forced = grads(gy, x, w, args, lanes=1)   # one block, mostly zero lanes
    assert not same_bits(got, forced)
    check_reference(*forced, gy, x, w, args)


@pytest.mark.parametrize("k, lanes", [(32, True), (36, False)])
def test_layers_past_its_weights_keep_the_packed_route(k, lanes):
    """128 -> 32 3x3 is 36,864 weights, 128 -> 36 41,472: past the cut-off."""
    gy, x, w, args = problem((16, 128, 4, 4), (k, 128, 3, 3), padding=1)
    got = grads(gy, x, w, args)
    assert same_bits(got, grads(gy, x, w, args, lanes=0)) != lanes
    check_reference(*got, gy, x, w, args)


def test_grad_weight_alone_has_the_same_bits():
    gy, x, w, args = problem((40, 6, 14, 14), (16, 6, 5, 5))
    gw, _ = grads(gy, x, w, args)
    alone, gb = grads(gy, x, w, args, mask=(False, True, False))
    assert gb is None and alone.tobytes() == gw.tobytes()


@pytest.mark.parametrize("level", ["avx2", "generic"])
def test_other_levels_keep_the_dot_route(level):
    gy, x, w, args = problem((64, 6, 14, 14), (16, 6, 5, 5))
    assert F.set_simd_level(level) == level
    got = grads(gy, x, w, args)
    assert same_bits(got, grads(gy, x, w, args, lanes=0))
    check_reference(*got, gy, x, w, args)


def test_float64_keeps_the_dot_route():
    gy, x, w, args = problem((64, 6, 14, 14), (16, 6, 5, 5))
    gy, x, w = (a.astype(np.float64) for a in (gy, x, w))
    got = grads(gy, x, w, args)
    assert same_bits(got, grads(gy, x, w, args, lanes=0))
    want = reference.conv2d_backward(gy, x, w, **args)
    np.testing.assert_allclose(got[0], want[1], rtol=1e-10, atol=1e-10)
