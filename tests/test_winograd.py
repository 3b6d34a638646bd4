"""Winograd F(2x2, 5x5) convolution (float32; csrc/fc_winograd.c). F(4x4, 3x3):
test_winograd3x3.py.

Winograd computes each 2x2 output tile from transformed 6x6 input tiles and
transformed weights (G holds 1/6 and 1/24), so it rounds differently from the
direct kernels and is not exact even on integer data. It is checked here against
float64 oracles with one stated tolerance:

    |got - want| <= WINO_ATOL * max|want|,   WINO_ATOL = 5e-5

Measured worst cases (max error / max|want|, 64x32x14x14 -> 64 channels, pad 2):
N(0, 1) data 4.5e-6 (y), 4.9e-6 (grad_x), 7.2e-6 (grad_w); MNIST-like data
(x in [0, 1], He-scaled weights) 1.6e-6, 5.0e-6, 3.6e-6. The direct float32
kernels reach about 7e-7 on the same data. The tolerance leaves a 7x margin.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import oracle

import fastconv
from fastconv import functional as F
from fastconv import reference as R

WINO_ATOL = 5e-5


# (N, C, H, W, K, padding): odd sizes (partial edge tiles), every padding 0..4,
# 1 channel, channel counts off every kernel width, one image
CASES = [
    (2, 3, 7, 9, 5, 2),
    (3, 4, 6, 5, 7, 0),
    (2, 17, 13, 11, 19, 2),
    (1, 2, 5, 5, 3, 4),
    (2, 1, 12, 12, 6, 2),
    (3, 5, 9, 8, 4, 1),
    (2, 3, 8, 8, 4, 3),
    (1, 16, 14, 14, 16, 2),
    (2, 6, 14, 14, 16, 0),
    (1, 9, 33, 35, 13, 2),       # rows of more than 16 tiles
    (2, 20, 6, 40, 33, (1, 3)),  # unequal padding
]


@pytest.fixture
def wino():
    previous = F.set_winograd(True)
    yield
    F.set_winograd(previous)


# the `simd` fixture (every supported SIMD level) is in conftest.py


def _close(got, want, what):
    assert got.dtype == np.float32 and got.shape == want.shape, what
    err = np.abs(got.astype(np.float64) - want).max()
    scale = np.abs(want).max()
    assert err <= WINO_ATOL * scale, f"{what}: max error {err:.3g} > {WINO_ATOL} * {scale:.3g}"


def _data(rng, n, c, h, w, k, pad):
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c, 5, 5))
    b = rng.standard_normal(k)
    return x, wt, b


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_winograd_matches_float64_oracle(case, simd, wino, rng):
    n, c, h, w, k, pad = case
    x, wt, b = _data(rng, n, c, h, w, k, pad)
    f = np.float32
    want_y = oracle.conv2d(x, wt, b, padding=pad)
    gy = rng.standard_normal(want_y.shape)
    want_gx, want_gw, want_gb = oracle.conv2d_backward(gy, x, wt, padding=pad)
    y = F.conv2d(x.astype(f), wt.astype(f), b.astype(f), padding=pad)
    assert F.info()["last_conv_algorithm"]["forward"] == "winograd"
    _close(y, want_y, "y")
    gx, gw, gb = F.conv2d_backward(gy.astype(f), x.astype(f), wt.astype(f), padding=pad)
    assert F.info()["last_conv_algorithm"]["grad_input"] == "winograd"
    assert F.info()["last_conv_algorithm"]["grad_weight"] == "winograd"
    _close(gx, want_gx, "grad_x")
    _close(gw, want_gw, "grad_w")
    _close(gb, want_gb, "grad_b")


def test_winograd_matches_plain_loop_reference(wino, rng):
    x, wt, b = _data(rng, 2, 3, 7, 6, 4, 2)
    f = np.float32
    want = R.conv2d(x, wt, b, padding=2)
    _close(F.conv2d(x.astype(f), wt.astype(f), b.astype(f), padding=2), want, "y")
    gy = rng.standard_normal(want.shape)
    wants = R.conv2d_backward(gy, x, wt, padding=2)
    gots = F.conv2d_backward(gy.astype(f), x.astype(f), wt.astype(f), padding=2)
    for got, w_, what in zip(gots, wants, ("grad_x", "grad_w", "grad_b")):
        _close(got, w_, what)


def test_winograd_mnist_like_data(wino, rng):
    """Inputs in [0, 1], He-scaled weights, small gradients: the MNIST CNN's conv2."""
    x = rng.random((8, 32, 14, 14))
    wt = rng.standard_normal((64, 32, 5, 5)) * np.sqrt(2 / (32 * 25))
    b = np.zeros(64)
    gy = rng.standard_normal((8, 64, 14, 14)) * 1e-3
    f = np.float32
    _close(F.conv2d(x.astype(f), wt.astype(f), b.astype(f), padding=2),
           oracle.conv2d(x, wt, b, padding=2), "y")
    gots = F.conv2d_backward(gy.astype(f), x.astype(f), wt.astype(f), padding=2)
    for got, want, what in zip(gots, oracle.conv2d_backward(gy, x, wt, padding=2),
                               ("grad_x", "grad_w", "grad_b")):
        _close(got, want, what)


def test_winograd_options_match_direct_semantics(wino, rng):
    """No bias, fused ReLU, relu_output masking, output_mask and out= as the direct path."""
    f = np.float32
    x = rng.standard_normal((2, 16, 9, 11)).astype(f)
    wt = rng.standard_normal((18, 16, 5, 5)).astype(f)
    want = oracle.conv2d(x.astype(np.float64), wt.astype(np.float64), None, padding=2)
    y = F.conv2d(x, wt, None, padding=2)
    _close(y, want, "y without bias")
    out = np.full(want.shape, np.nan, dtype=f)
    yr = F.conv2d(x, wt, None, padding=2, activation="relu", out=out)
    assert yr is out
    np.testing.assert_array_equal(yr, np.maximum(y, 0))  # same arithmetic, then max(., 0)
    gy = rng.standard_normal(want.shape).astype(f)
    masked = np.where(yr > 0, gy, 0).astype(f)
    ref = F.conv2d_backward(masked, x, wt, padding=2)
    got = F.conv2d_backward(gy, x, wt, padding=2, relu_output=yr)
    for a, b_ in zip(got, ref):
        np.testing.assert_array_equal(a, b_)
    gx_only = F.conv2d_backward(gy, x, wt, padding=2, output_mask=(True, False, False))
    np.testing.assert_array_equal(gx_only[0], F.conv2d_backward(gy, x, wt, padding=2)[0])
    assert gx_only[1] is None and gx_only[2] is None
    outs = (np.empty(x.shape, f), np.empty(wt.shape, f), np.empty(18, f))
    res = F.conv2d_backward(gy, x, wt, padding=2, out=outs)
    assert all(r is o for r, o in zip(res, outs))
    gw_only = F.conv2d_backward(gy, x, wt, padding=2, output_mask=(False, True, False))
    np.testing.assert_array_equal(gw_only[1], res[1])


@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
def test_winograd_1_and_2_threads_bitwise_equal(wino, rng, restore_threads):
    """Fixed tile blocks and fixed grad-weight chunks: any thread count, same bits.
    The MNIST CNN's conv2 at batch 64 is large enough for both threads to work;
    the team is fixed by conftest (an adaptive team may run a 2-thread call on one thread on
    a busy machine, and the test would compare 1 thread with 1 thread)."""
    _check_threads_bitwise(rng)


def _check_threads_bitwise(rng):
    f = np.float32
    x = rng.standard_normal((64, 32, 14, 14)).astype(f)
    wt = rng.standard_normal((64, 32, 5, 5)).astype(f)
    b = rng.standard_normal(64).astype(f)
    gy = rng.standard_normal((64, 64, 14, 14)).astype(f)
    res = []
    for nt in (1, 2):
        fastconv.set_num_threads(nt)
        y = F.conv2d(x, wt, b, padding=2, activation="relu")
        res.append((y,) + F.conv2d_backward(gy, x, wt, padding=2, relu_output=y))
        assert fastconv.info()["team"]["threads_last_call"] == nt
    for a, b_, what in zip(res[0], res[1], ("y", "grad_x", "grad_w", "grad_b")):
        oracle.assert_bitwise_equal(a, b_, what)


@pytest.mark.parametrize("n, k, pad", [(1, 64, 2), (2, 64, 2), (1, 24, 0), (3, 40, 1)])
@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
def test_winograd_small_batches_split_channels_bitwise(wino, rng, restore_threads, n, k, pad):
    """With fewer tile blocks than threads (a batch of one) the forward and
    grad-input cut each block's output channels between the threads too; every
    output is still made one way: 1 and 2 threads give the same bits."""
    _check_small_batch_threads(rng, n, k, pad)


def _check_small_batch_threads(rng, n, k, pad):
    f = np.float32
    x = rng.standard_normal((n, 32, 14, 14)).astype(f)
    wt = rng.standard_normal((k, 32, 5, 5)).astype(f)
    b = rng.standard_normal(k).astype(f)
    res = []
    for nt in (1, 2):
        fastconv.set_num_threads(nt)
        y = F.conv2d(x, wt, b, padding=pad, activation="relu")
        gy = np.ascontiguousarray(np.cos(np.arange(y.size, dtype=f)).reshape(y.shape))
        assert fastconv.info()["team"]["threads_last_call"] == nt
        res.append((y, F.conv2d_backward(gy, x, wt, padding=pad, relu_output=y)[0]))
    for a, b_, what in zip(res[0], res[1], ("y", "grad_x")):
        oracle.assert_bitwise_equal(a, b_, what)


W, D = "winograd", "direct"
# LeNet-5 conv2 and 16 -> 16 take the row-Winograd forward and grad_input where
# the level allows (tests/test_winograd_rows.py)
RW = "winograd_rows" if fastconv._kernels.simd_level() >= fastconv._kernels.SIMD_LEVELS["avx512"] else D


@pytest.mark.parametrize("kw, expect", [
    (dict(), (W, W, W)),                          # 32 -> 32 channels
    (dict(k=64), (W, W, W)),                      # the MNIST CNN's conv2
    (dict(dtype=np.float64), (D, D, D)),
    (dict(stride=2), (D, D, D)),
    (dict(dilation=2), (D, D, D)),
    (dict(groups=2), (D, D, D)),
    (dict(padding=5), (D, D, D)),                 # grad-input needs padding <= 4
    (dict(ksize=3), (W, W, D)),                   # F(4x4, 3x3): test_winograd3x3.py
    (dict(ksize=7), (D, D, D)),
    (dict(c=6, k=16), (RW, RW, D)),               # LeNet-5 conv2: too few channels for 2-D
    (dict(c=16, k=16), (RW, RW, D)),              # 2-D measured a tie
    (dict(c=16), (W, W, D)),                      # grad-weight wants >= 32 of each
    (dict(padding="same"), (W, W, W)),
    (dict(padding="valid"), (W, W, W)),
])
def test_winograd_dispatch_auto(kw, expect, rng):
    previous = F.set_winograd(None)
    try:
        dtype = kw.get("dtype", np.float32)
        c, k = kw.get("c", 32), kw.get("k", 32)
        ks, groups = kw.get("ksize", 5), kw.get("groups", 1)
        x = rng.standard_normal((2, c, 14, 14)).astype(dtype)
        wt = rng.standard_normal((k, c // groups, ks, ks)).astype(dtype)
        args = dict(stride=kw.get("stride", 1), padding=kw.get("padding", 2),
                    dilation=kw.get("dilation", 1), groups=groups)
        y = F.conv2d(x, wt, None, **args)
        F.conv2d_backward(np.ones_like(y), x, wt, **args)
        algo = F.info()["last_conv_algorithm"]
        assert (algo["forward"], algo["grad_input"], algo["grad_weight"]) == expect
        assert F.info()["winograd"] == "auto"
    finally:
        F.set_winograd(previous)


def test_set_winograd_switch_and_validation(rng):
    x = rng.standard_normal((1, 32, 8, 8)).astype(np.float32)
    wt = rng.standard_normal((32, 32, 5, 5)).astype(np.float32)
    previous = F.set_winograd(False)
    try:
        F.conv2d(x, wt, padding=2)
        assert F.info()["last_conv_algorithm"]["forward"] == "direct"
        assert F.info()["winograd"] == "off"
        assert F.set_winograd(True) is False
        F.conv2d(x[:, :2], wt[:, :2], padding=2)  # forced: even with 2 channels
        assert F.info()["last_conv_algorithm"]["forward"] == "winograd"
        assert F.info()["winograd"] == "on"
        with pytest.raises(TypeError, match="set_winograd: mode"):
            F.set_winograd("yes")
    finally:
        F.set_winograd(previous)


@pytest.mark.parametrize("value, mode", [("0", "off"), ("1", "on"), ("auto", "auto")])
def test_fastconv_winograd_environment_variable(value, mode):
    env = dict(os.environ, FASTCONV_WINOGRAD=value)
    out = subprocess.run(
        [sys.executable, "-c", "import fastconv; print(fastconv.info()['winograd'])"],
        env=env, capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__))))
    assert out.stdout.strip() == mode


def test_winograd_non_finite_inputs(rng):
    """A NaN input poisons exactly the outputs whose 5x5 window holds it, as in the
    direct path (the zeros of B^T and A^T keep each output's dependence to its
    window). An Inf does too, but there Winograd mostly gives NaN where the
    direct path gives +-Inf (Inf - Inf inside the transforms; docs/design.md)."""
    f = np.float32
    x = rng.standard_normal((1, 16, 9, 9)).astype(f)
    wt = rng.standard_normal((32, 16, 5, 5)).astype(f)
    window = np.zeros((1, 32, 9, 9), bool)
    window[:, :, 2:7, 3:8] = True            # |oh - 4| <= 2, |ow - 5| <= 2
    previous = F.set_winograd(True)
    try:
        for bad in (np.nan, np.inf):
            xb = x.copy()
            xb[0, 3, 4, 5] = bad
            y = F.conv2d(xb, wt, padding=2)
            assert (~np.isfinite(y) == window).all(), bad
    finally:
        F.set_winograd(previous)
