"""grad_weight by row Winograd F(5, 5) (csrc/fc_rowwino_grad_weight.c, AVX-512
float32): few-channel 5x5 stride-1 layers such as LeNet-5's conv2.

It rounds differently from the direct routes (the grad_y transform G holds
powers of 1/2 and the point products are untransformed by A^T with weights up
to 81/16), so it is checked against the float64 plain-loop reference with the
tolerance tests/test_winograd.py gives the 2-D Winograd routes:

    |got - want| <= WINO_ATOL * max|want|,   WINO_ATOL = 5e-5

Measured (max error / max|want|, 6 -> 16 on 14x14, uniform [-1, 1] and N(0, 1)
data): 3.0e-6 / 3.3e-6 at batch 64, 3.7e-6 / 3.8e-6 at batch 1024; the direct
routes 2.0e-7 / 1.9e-7 and 2.1e-7 / 2.6e-7. The 2-D F(2x2, 5x5) grad_weight
reaches 7.2e-6 (tests/test_winograd.py).
"""

import numpy as np
import pytest

import oracle

import fastconv
from fastconv import _geometry, _kernels, _routes, reference
from fastconv import functional as F

from avx512_route import restoring, skip_without_avx512

pytestmark = skip_without_avx512("the route")
_restore = restoring("dw_lanes")

WINO_ATOL = 5e-5
MASK = (False, True, True)
ROWS = "winograd_rows"


@pytest.fixture(autouse=True)
def _auto_winograd(_restore):
    # after _restore, which turns Winograd off for the direct lanes-route modules
    previous = F.set_winograd(None)
    yield
    F.set_winograd(previous)


def problem(n, c, k, h, w, padding, seed=0):
    rng = np.random.default_rng(seed + n + 7 * c + 11 * k + 13 * h + 17 * w)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, 5, 5)).astype(np.float32)
    y = F.conv2d(x, wt, padding=padding)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    return gy, x, wt


def grad_weight(gy, x, wt, padding, threads=1):
    fastconv.set_num_threads(threads)
    _, gw, gb = F.conv2d_backward(gy, x, wt, padding=padding, output_mask=MASK)
    return gw, gb, _routes.last_algorithms()["grad_weight"]


def check_reference(gw, gb, gy, x, wt, padding):
    # large batches against the independent oracle (einsum; the plain loops
    # took 8 s at batch 1024)
    ref = oracle if x.shape[0] > 256 else reference
    want = ref.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                               wt.astype(np.float64), padding=padding)
    for got, exp, what in ((gw, want[1], "grad_weight"), (gb, want[2], "grad_bias")):
        assert got.dtype == np.float32 and got.shape == exp.shape, what
        err = np.abs(got.astype(np.float64) - exp).max()
        scale = np.abs(exp).max()
        assert err <= WINO_ATOL * scale, f"{what}: max error {err:.3g} > {WINO_ATOL} * {scale:.3g}"


# (N, C, K, H, W, padding): LeNet conv2 and its batch sizes; output widths off
# and on the 5-column segment (8, 11, 14 with padding, 28, 32); every padding
# 0..4 and unequal ones; channel counts off the register tiles (3 or 4 rows,
# 5 or 6 (c, i) pairs): K = 5, 7, 17; C = 2, 3, 7
CASES = [
    (64, 6, 16, 14, 14, 0),
    (1024, 6, 16, 14, 14, 0),   # sums over many images (32 blocks per chunk)
    (16, 6, 16, 14, 14, 0),
    (24, 6, 16, 14, 14, 0),     # a last block of 8 images
    (17 + 12, 3, 5, 9, 12, 1),  # wo 10, hp 11
    (16, 2, 7, 12, 15, (2, 3)),  # unequal padding: wo 17 (4 segments, the last of 2)
    (32, 7, 17, 10, 11, 4),     # wo 15, padding 4
    (16, 2, 6, 32, 32, 0),      # wo 28
    (12, 4, 16, 28, 28, 2),     # wo 28, a single partial block
    (16, 3, 4, 8, 12, ((1, 2), (0, 1))),  # wo 9: a segment of 4 columns
    (48, 5, 9, 20, 32, 2),      # wo 32: the widest the rule takes
    (16, 3, 16, 36, 36, 0),     # 32x32 outputs: the largest plane it takes
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_route_taken_and_matches_float64(case):
    n, c, k, h, w, pad = case
    gy, x, wt = problem(n, c, k, h, w, pad)
    gw, gb, route = grad_weight(gy, x, wt, pad)
    assert route == ROWS
    check_reference(gw, gb, gy, x, wt, pad)


# Output widths the rule leaves to the direct routes (1, 4, 6) and batches of
# one: the kernel itself still runs them (called directly) and must be right.
KERNEL_CASES = [
    (1, 6, 16, 14, 14, 0),
    (17, 6, 16, 14, 14, 0),
    (64, 6, 16, 14, 14, 0),
    (17, 2, 3, 5, 5, 0),       # wo 1
    (1, 3, 5, 6, 8, 0),        # wo 4: one short segment
    (17, 4, 6, 7, 6, (1, 2)),  # wo 6: a segment of one column
    (3, 5, 7, 9, 11, 2),       # wo 11
    (64, 1, 6, 28, 28, 2),     # one input channel (LeNet conv1)
]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_kernel_matches_float64(case):
    n, c, k, h, w, pad = case
    gy, x, wt = problem(n, c, k, h, w, pad)
    g = _geometry.conv_geom("test", x.shape, wt.shape, 1, pad, 1, 1)
    assert _kernels.winograd_rows_grad_weight_fits(g.as_tuple())
    gw, gb = np.full(wt.shape, np.nan, np.float32), np.full(k, np.nan, np.float32)
    _kernels.conv2d_grad_weight_winograd_rows(gy, x, g.as_tuple(), 1, gw, gb)
    check_reference(gw, gb, gy, x, wt, pad)
    # and differs from the direct routes' bits: the route really ran (sums of
    # enough terms that the rounding differs)
    gwd = np.empty_like(gw)
    _kernels.conv2d_grad_weight(gy, x, g.as_tuple(), 1, gwd, None)
    if n * g.ho * g.wo >= 16:
        assert gw.tobytes() != gwd.tobytes()


@pytest.mark.parametrize("n", [16, 17, 24, 64, 112])
@pytest.mark.parametrize("shape", [(6, 16, 14, 14, 0), (3, 5, 9, 12, 1)])
def test_thread_counts_bitwise_identical(n, shape):
    c, k, h, w, pad = shape
    gy, x, wt = problem(n, c, k, h, w, pad)
    g = _geometry.conv_geom("test", x.shape, wt.shape, 1, pad, 1, 1).as_tuple()
    got = []
    for threads in (1, 2, 3):
        gw, gb = np.empty_like(wt), np.empty(k, np.float32)
        _kernels.conv2d_grad_weight_winograd_rows(gy, x, g, threads, gw, gb)
        got.append((gw.tobytes(), gb.tobytes()))
    assert got[0] == got[1] == got[2]


def test_bias_is_the_image_lanes_bits():
    """The bias sums grad_y as the image-lanes route does (fc_conv_grad_weight.c)."""
    gy, x, wt = problem(64, 6, 16, 14, 14, 0)
    _, gb, route = grad_weight(gy, x, wt, 0)
    assert route == ROWS
    F.set_winograd(False)
    _kernels.set_route_override("dw_lanes", 1)
    _, _, gb_lanes, = F.conv2d_backward(gy, x, wt, output_mask=MASK)
    assert _routes.last_algorithms()["grad_weight"] == "direct"
    assert gb.tobytes() == gb_lanes.tobytes()


def test_without_bias():
    gy, x, wt = problem(32, 6, 16, 14, 14, 0)
    _, gw, gb = F.conv2d_backward(gy, x, wt, output_mask=(False, True, False))
    assert gb is None and _routes.last_algorithms()["grad_weight"] == ROWS
    _, gw2, _ = F.conv2d_backward(gy, x, wt, output_mask=MASK)
    assert gw.tobytes() == gw2.tobytes()


@pytest.mark.parametrize("n, c, k, h, w, pad, dtype, kw, want", [
    (64, 6, 16, 14, 14, 0, np.float32, {}, ROWS),           # LeNet conv2
    (8, 6, 16, 14, 14, 0, np.float32, {}, ROWS),            # a block half full
    (7, 6, 16, 14, 14, 0, np.float32, {}, "direct"),        # under half: direct
    (17, 6, 16, 14, 14, 0, np.float32, {}, "direct"),       # a block for one image
    (1, 6, 16, 14, 14, 0, np.float32, {}, "direct"),
    (64, 1, 6, 28, 28, 2, np.float32, {}, "direct"),        # one input channel
    (64, 6, 16, 11, 11, 0, np.float32, {}, "direct"),       # 7 output columns
    (16, 3, 16, 36, 36, 0, np.float32, {}, ROWS),           # 32x32 outputs
    (16, 3, 16, 44, 36, 0, np.float32, {}, "direct"),       # 40x32 outputs
    (16, 3, 16, 36, 37, 0, np.float32, {}, "direct"),       # 33 output columns
    (16, 3, 16, 36, 36, 2, np.float32, {}, "direct"),       # 36x36 outputs
    (64, 6, 16, 14, 14, 0, np.float64, {}, "direct"),
    (64, 6, 16, 14, 14, 0, np.float32, dict(stride=2), "direct"),
    (64, 6, 16, 14, 14, 0, np.float32, dict(dilation=2), "direct"),
    (64, 6, 16, 14, 14, 0, np.float32, dict(groups=2), "direct"),
    (64, 6, 16, 14, 14, 5, np.float32, {}, "direct"),       # padding > 4
    (64, 32, 32, 14, 14, 2, np.float32, {}, "winograd"),    # the 2-D route's layers
])
def test_rule(n, c, k, h, w, pad, dtype, kw, want):
    rng = np.random.default_rng(0)
    groups = kw.get("groups", 1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 5, 5)).astype(dtype)
    args = dict(padding=pad, stride=kw.get("stride", 1), dilation=kw.get("dilation", 1),
                groups=groups)
    y = F.conv2d(x, wt, **args)
    F.conv2d_backward(np.ones_like(y), x, wt, output_mask=MASK, **args)
    assert _routes.last_algorithms()["grad_weight"] == want


def test_rule_only_at_avx512():
    gy, x, wt = problem(64, 6, 16, 14, 14, 0)
    F.set_simd_level("avx2")
    _, gw, _ = F.conv2d_backward(gy, x, wt, output_mask=MASK)
    assert _routes.last_algorithms()["grad_weight"] == "direct"
    g = _geometry.conv_geom("test", x.shape, wt.shape, 1, 0, 1, 1).as_tuple()
    assert not _kernels.winograd_rows_grad_weight_fits(g)
    # called anyway, the kernel runs the direct routes: their bits
    gw2, gb2 = np.empty_like(wt), np.empty(16, np.float32)
    _kernels.conv2d_grad_weight_winograd_rows(gy, x, g, 1, gw2, gb2)
    assert gw2.tobytes() == gw.tobytes()


def test_set_winograd_false_turns_it_off_and_true_keeps_the_2d_choice():
    gy, x, wt = problem(64, 6, 16, 14, 14, 0)
    F.set_winograd(False)
    F.conv2d_backward(gy, x, wt, output_mask=MASK)
    assert _routes.last_algorithms()["grad_weight"] == "direct"
    F.set_winograd(True)  # every supported layer on the 2-D routes, as before
    F.conv2d_backward(gy, x, wt, output_mask=MASK)
    assert _routes.last_algorithms()["grad_weight"] == "winograd"


def test_training_plan_takes_the_route():
    """LeNet-5's fit step (fastconv/nn/train_plan.py) picks its grad_weight kernel
    from the same rule."""
    from fastconv.nn import train_plan

    g = _geometry.conv_geom("test", (64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)
    route, kernel = _routes.conv_grad_weight(g, np.float32)
    assert route == ROWS and kernel is _kernels.conv2d_grad_weight_winograd_rows
    assert hasattr(train_plan, "_routes")


def test_non_finite_inputs_spread_over_the_segment():
    """A NaN in x reaches every tap j of the weights whose rows read it, not only
    the taps whose window covers it (the direct routes): B^T mixes a 9-column
    segment. x[., 2, 0, 2] is read by kernel row i = 0 only, in segment 0 at
    column 2; the direct route gives NaN at taps j <= 2, this route at all 5
    (B^T's column 2 reaches 8 of the 9 points, and A^T's every row reads one)."""
    gy, x, wt = problem(16, 6, 16, 14, 14, 0)
    x[3, 2, 0, 2] = np.nan
    gw, _, route = grad_weight(gy, x, wt, 0)
    assert route == ROWS
    want = np.zeros(gw.shape, bool)
    want[:, 2, 0, :] = True
    assert (np.isnan(gw) == want).all()
    F.set_winograd(False)
    _, gwd, _ = F.conv2d_backward(gy, x, wt, output_mask=MASK)
    want[:, 2, 0, 3:] = False
    assert (np.isnan(gwd) == want).all()
    # an Inf in grad_y: every weight of that output channel, and only those
    F.set_winograd(None)
    x[3, 2, 0, 2] = 1.0
    gy[5, 9, 4, 4] = np.inf
    gw2, _, route = grad_weight(gy, x, wt, 0)
    assert route == ROWS
    assert np.isfinite(np.delete(gw2, 9, axis=0)).all()
    assert not np.isfinite(gw2[9]).any()
