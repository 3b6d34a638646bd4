"""Row-Winograd F(5, 5) forward and grad_input (float32, AVX-512; csrc/fc_rowwino.c).

Each output row is 5 row convolutions done with one-dimensional Winograd along
the width (5 outputs from 9 inputs with 9 multiplies), so it rounds differently
from the direct kernels. Checked against float64 oracles with the tolerance of
the 2-D Winograd tests (tests/test_winograd.py):

    |got - want| <= WINO_ATOL * max|want|,   WINO_ATOL = 5e-5

Measured worst case over this file's grid plus 64x6x14x14 -> 16, 16x16x14x14
-> 16 pad 2 and 16x1x28x28 -> 32 pad 2, five seeds (N(0, 1) data): 8.2e-6 of
the largest output (forward), 1.1e-5 (grad_input); the direct float32 kernel
reaches 5e-7 on LeNet's conv2. The tolerance leaves a 4x margin.

Its bits must not depend on the batch: whole blocks of 16 images run with one
image per vector lane, the rest one image at a time with the output channels
in the lanes, and both give every element the same operations.
"""

import numpy as np
import pytest

import oracle
from avx512_route import skip_without_avx512

import fastconv
from fastconv import _kernels, _routes, models
from fastconv import functional as F
from fastconv._geometry import ConvGeom
from fastconv.nn import plan_steps

pytestmark = skip_without_avx512("the row-Winograd route")

WINO_ATOL = 5e-5
f32 = np.float32


@pytest.fixture(autouse=True)
def _avx512_auto():
    level, mode, nt = F.simd_level(), F.set_winograd(None), fastconv.get_num_threads()
    F.set_simd_level("avx512")
    yield
    F.set_simd_level(level)
    F.set_winograd(mode)
    fastconv.set_num_threads(nt)


def _geom(x_shape, w_shape, pad):
    return ConvGeom("conv2d", tuple(x_shape), tuple(w_shape), 1, pad, 1, 1)


def _forward(x, w, b, pad, relu=False, nt=1):
    g = _geom(x.shape, w.shape, pad)
    y = np.full(g.out_shape, np.nan, f32)
    _kernels.conv2d_forward_winograd_rows(x, w, b, g.as_tuple(), relu, nt, y)
    return y


def _grad_input(gy, w, x_shape, pad, nt=1):
    g = _geom(x_shape, w.shape, pad)
    gx = np.full(x_shape, np.nan, f32)
    _kernels.conv2d_grad_input_winograd_rows(gy, w, g.as_tuple(), nt, gx)
    return gx


def _close(got, want, what):
    err = np.abs(got.astype(np.float64) - want).max()
    scale = np.abs(want).max()
    assert err <= WINO_ATOL * scale, f"{what}: max error {err:.3g} > {WINO_ATOL} * {scale:.3g}"


# (N, C, H, W, K, padding): LeNet's conv2 and conv1, output widths 1, 4, 6, 11
# (partial last tiles), padding 0..4 and unequal, 1 and 20 channels, more than
# one block of 16 output channels, a whole block of images plus a tail
CASES = [
    (3, 6, 14, 14, 16, 0),
    (2, 1, 28, 28, 6, 2),
    (2, 3, 7, 5, 5, 0),          # W_out 1
    (2, 4, 6, 8, 7, 0),          # W_out 4
    (2, 2, 9, 10, 3, 0),         # W_out 6
    (1, 5, 8, 11, 20, 2),        # W_out 11
    (2, 3, 5, 5, 4, 4),          # padding 4: rows of outputs on padding only
    (2, 4, 9, 12, 18, (1, 3)),   # unequal padding
    (17, 6, 12, 13, 9, (3, 1)),  # a block of 16 and one more
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_rows_match_float64_oracle(case, rng):
    n, c, h, w, k, pad = case
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c, 5, 5))
    b = rng.standard_normal(k)
    want = oracle.conv2d(x, wt, b, padding=pad)
    _close(_forward(x.astype(f32), wt.astype(f32), b.astype(f32), pad), want, "y")
    got = _forward(x.astype(f32), wt.astype(f32), b.astype(f32), pad, relu=True)
    _close(got, np.maximum(want, 0), "relu(y)")
    assert (got >= 0).all()
    nobias = oracle.conv2d(x, wt, None, padding=pad)
    _close(_forward(x.astype(f32), wt.astype(f32), None, pad), nobias, "y without bias")
    gy = rng.standard_normal(want.shape)
    want_gx = oracle.conv2d_backward(gy, x, wt, padding=pad)[0]
    _close(_grad_input(gy.astype(f32), wt.astype(f32), x.shape, pad), want_gx, "grad_x")


def test_lenet_conv2_takes_the_route_and_matches(rng):
    x = rng.standard_normal((4, 6, 14, 14))
    wt = rng.standard_normal((16, 6, 5, 5))
    b = rng.standard_normal(16)
    y = F.conv2d(x.astype(f32), wt.astype(f32), b.astype(f32))
    assert F.info()["last_conv_algorithm"]["forward"] == "winograd_rows"
    _close(y, oracle.conv2d(x, wt, b), "y")
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = F.conv2d_backward(gy.astype(f32), x.astype(f32), wt.astype(f32))
    algo = F.info()["last_conv_algorithm"]
    assert (algo["grad_input"], algo["grad_weight"]) == ("winograd_rows", "direct")
    want_gx, want_gw, _ = oracle.conv2d_backward(gy, x, wt)
    _close(gx, want_gx, "grad_x")
    _close(gw, want_gw, "grad_w")


@pytest.mark.parametrize("pad", [0, 2, (1, 3)])
def test_rows_bits_do_not_depend_on_batch_or_threads(pad, rng):
    """Whole blocks in image lanes, the rest one image at a time: the same bits
    for an image whatever its batch, its place in it and the thread count."""
    x = rng.standard_normal((64, 6, 14, 13)).astype(f32)
    wt = rng.standard_normal((16, 6, 5, 5)).astype(f32)
    b = rng.standard_normal(16).astype(f32)
    y64 = _forward(x, wt, b, pad, relu=True)
    gy = rng.standard_normal(y64.shape).astype(f32)
    gx64 = _grad_input(gy, wt, x.shape, pad)
    for n in (1, 5, 17, 63, 64):
        for s in sorted({0, 64 - n, 7 if n <= 57 else 0}):
            sl = slice(s, s + n)
            for nt in (1, 2):
                oracle.assert_bitwise_equal(
                    _forward(x[sl], wt, b, pad, relu=True, nt=nt), y64[sl], f"y n={n} at {s}")
                oracle.assert_bitwise_equal(
                    _grad_input(gy[sl], wt, x[sl].shape, pad, nt=nt), gx64[sl],
                    f"grad_x n={n} at {s}")


def test_fused_pool_is_bitwise_the_steps(rng):
    """LeNet's inference plan runs conv2 and its 2x2 max-pool as one op
    (fc_conv2d_fwd_rowwino_maxpool2_f32): the bits of the steps one by one,
    for whole blocks and for the images after them."""
    model = models.lenet5(seed=0).eval()
    for n in (37, 1):
        x = rng.standard_normal((n, 1, 28, 28)).astype(f32)
        model.forward(x)
        plan = model._plans[next(k for k in model._plans if k[0] == x.shape)]
        assert plan.program is not None
        pairs = zip(plan.steps, plan.steps[1:])
        assert _kernels.OP_WINO_ROWS_POOL in [plan_steps.fuse_pool(a, b) for a, b in pairs]
        fused = plan.run(x).copy()
        program, plan.program = plan.program, None
        try:
            oracle.assert_bitwise_equal(plan.run(x), fused, f"n={n}")
        finally:
            plan.program = program
        oracle.assert_bitwise_equal(fused, model.forward(x), f"forward n={n}")


# (C, K, H, padding) -> (forward, grad_input) routes under the auto rule
RULE = [
    ((6, 16, 14, 0), ("winograd_rows", "winograd_rows")),   # LeNet conv2
    ((1, 6, 28, 2), ("direct", "direct")),                  # LeNet conv1
    ((1, 32, 28, 2), ("direct", "direct")),                 # MNIST CNN conv1
    ((3, 16, 32, 0), ("direct", "direct")),                 # batch 1 loses
    ((5, 16, 14, 0), ("direct", "direct")),
    ((8, 16, 14, 0), ("winograd_rows", "winograd_rows")),
    ((16, 16, 14, 2), ("winograd_rows", "winograd_rows")),
    ((6, 32, 14, 0), ("winograd_rows", "winograd_rows")),
    ((6, 8, 14, 0), ("direct", "direct")),                  # too few outputs
    ((16, 32, 14, 2), ("winograd", "winograd")),            # the 2-D rule's
    ((6, 16, 14, 5), ("direct", "direct")),                 # padding > 4
]


@pytest.mark.parametrize("layer, expect", RULE, ids=lambda v: str(v))
def test_rule(layer, expect):
    c, k, h, pad = layer
    g = _geom((2, c, h, h), (k, c, 5, 5), pad)
    f = np.dtype(f32)
    assert (_routes.conv_forward(g, f)[0], _routes.conv_grad_input(g, f)[0]) == expect
    assert _routes.winograd_rows_ok(g, f, grad_weight=True) is False
    assert _routes.winograd_rows_ok(g, np.dtype(np.float64)) is False


def test_rule_needs_stride_1_dilation_1_groups_1():
    f = np.dtype(f32)
    for kw in (dict(stride=2), dict(dilation=2), dict(groups=2)):
        g = ConvGeom("conv2d", (2, 8, 14, 14), (16, 8 // kw.get("groups", 1), 5, 5),
                     kw.get("stride", 1), 0, kw.get("dilation", 1), kw.get("groups", 1))
        assert not _routes.winograd_rows_ok(g, f), kw
    g = ConvGeom("conv2d", (2, 8, 14, 14), (16, 8, 3, 3), 1, 0, 1, 1)
    assert not _routes.winograd_rows_ok(g, f)


def test_set_winograd_turns_it_off_and_true_keeps_2d(rng):
    x = rng.standard_normal((2, 6, 14, 14)).astype(f32)
    wt = rng.standard_normal((16, 6, 5, 5)).astype(f32)
    F.set_winograd(False)
    F.conv2d(x, wt)
    assert F.info()["last_conv_algorithm"]["forward"] == "direct"
    F.set_winograd(True)
    F.conv2d(x, wt)
    assert F.info()["last_conv_algorithm"]["forward"] == "winograd"
    F.set_winograd(None)
    F.conv2d(x, wt)
    assert F.info()["last_conv_algorithm"]["forward"] == "winograd_rows"


def test_below_avx512_the_kernels_run_the_direct_ones(rng):
    """A plan made at AVX-512 and run after a switch to a lower level: the
    route's kernels then give the direct kernels' bits, what the rule would
    have chosen there."""
    x = rng.standard_normal((3, 6, 14, 14)).astype(f32)
    wt = rng.standard_normal((16, 6, 5, 5)).astype(f32)
    b = rng.standard_normal(16).astype(f32)
    g = _geom(x.shape, wt.shape, 0)
    gy = rng.standard_normal(g.out_shape).astype(f32)
    F.set_simd_level("avx2")
    assert _routes.conv_forward(g, np.dtype(f32))[0] == "direct"
    want = np.empty(g.out_shape, f32)
    _kernels.conv2d_forward(x, wt, b, g.as_tuple(), True, 1, want)
    oracle.assert_bitwise_equal(_forward(x, wt, b, 0, relu=True), want, "y")
    want_gx = np.empty(x.shape, f32)
    _kernels.conv2d_grad_input(gy, wt, g.as_tuple(), 1, want_gx)
    oracle.assert_bitwise_equal(_grad_input(gy, wt, x.shape, 0), want_gx, "grad_x")


def test_non_finite_input_spreads_within_its_tiles(rng):
    """A NaN or Inf reaches the outputs whose window covers it (as the direct
    kernel) and, in those rows, the rest of every 5-column tile whose 9-column
    input segment holds it (fc_rowwino.h), never further."""
    x = rng.standard_normal((1, 6, 14, 14)).astype(f32)
    wt = rng.standard_normal((16, 6, 5, 5)).astype(f32)
    r, col = 6, 7
    rows = np.zeros(10, bool)
    rows[r - 4:r + 1] = True
    window = np.zeros(10, bool)
    window[col - 4:col + 1] = True
    tiles = np.zeros(10, bool)
    for t in range(2):
        if 5 * t <= col <= 5 * t + 8:
            tiles[5 * t:5 * t + 5] = True
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[0, 3, r, col] = bad
        for n in (1, 16):  # the image path and the block path
            y = _forward(np.repeat(xb, n, axis=0), wt, None, 0)[0]
            hit = ~np.isfinite(y)
            assert hit[:, rows][:, :, window].all(), bad
            assert not hit[:, ~rows].any() and not hit[:, :, ~tiles].any(), bad


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_weight_runs_the_direct_kernels(bad, rng):
    """The route skips kernel rows on padding rows, where the direct kernels'
    implicit route multiplies them (0 * inf = NaN): such a layer runs the direct
    kernels, with their bits, for any batch."""
    x = rng.standard_normal((17, 6, 14, 14)).astype(f32)
    wt = rng.standard_normal((16, 6, 5, 5)).astype(f32)
    wt[3, 2, 0, 4] = bad
    g = _geom(x.shape, wt.shape, 2)
    gy = rng.standard_normal(g.out_shape).astype(f32)
    want = np.empty(g.out_shape, f32)
    _kernels.conv2d_forward(x, wt, None, g.as_tuple(), False, 1, want)
    oracle.assert_bitwise_equal(_forward(x, wt, None, 2), want, "y")
    want_gx = np.empty(x.shape, f32)
    _kernels.conv2d_grad_input(gy, wt, g.as_tuple(), 1, want_gx)
    oracle.assert_bitwise_equal(_grad_input(gy, wt, x.shape, 2), want_gx, "grad_x")
    assert not np.isfinite(want[:, 3]).any()
