"""Convolution features of issue #13: per-side padding, TensorFlow 'same' at any
stride, and 1-D convolution (``conv1d``, ``nn.Conv1d``).

Oracles: PyTorch (``F.pad`` then an unpadded ``conv2d`` for per-side padding and
'same'; its own ``conv1d``) and ``fastconv.reference``. Every C route is forced
in turn with asymmetric padding: grad_input implicit and col2im, grad_weight dot
and packed (``route_override``), Winograd and direct (``set_winograd``, observed
through ``info()["last_conv_algorithm"]``).

TensorFlow's 'same' (ONNX SAME_UPPER) is written out here from its definition
rather than imported from fastconv: ``ceil(n / s)`` outputs, total padding
``max((out - 1)*s + d*(k - 1) + 1 - n, 0)``, the odd pixel after.
"""

import math
import os

import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import nn
from fastconv import reference as R

import oracle
from oracle import assert_bitwise_equal, assert_close, numerical_grad
from workloads import fixed_team, parallel_regions

torch = pytest.importorskip("torch")
TF = torch.nn.functional

DTYPES = [np.float32, np.float64]
# PyTorch's note that it copies the input for an even 'same' kernel.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
WINO_ATOL = 5e-5  # as tests/test_winograd.py: |got - want| <= WINO_ATOL * max|want|


def tf_same(n, k, s, d):
    """(before, after) of TensorFlow's 'same' along one axis."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def sides(padding, xs, ws, stride, dilation):
    """((top, bottom), (left, right)) of a 2-D padding argument, by the tests' own rule."""
    s, d = pair(stride), pair(dilation)
    if padding == "same":
        return (tf_same(xs[2], ws[2], s[0], d[0]), tf_same(xs[3], ws[3], s[1], d[1]))
    if isinstance(padding[0], (tuple, list)):
        return tuple(map(tuple, padding))
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def torch_conv2d(x, w, b, stride, padding, dilation, groups):
    (t, bo), (le, r) = sides(padding, x.shape, w.shape, stride, dilation)
    xt = TF.pad(torch.from_numpy(x), (le, r, t, bo))
    bt = None if b is None else torch.from_numpy(b)
    return TF.conv2d(xt, torch.from_numpy(w), bt, pair(stride), 0, pair(dilation),
                     groups).numpy()


def torch_conv2d_backward(gy, x, w, stride, padding, dilation, groups):
    (t, bo), (le, r) = sides(padding, x.shape, w.shape, stride, dilation)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.zeros(w.shape[0], dtype=xt.dtype, requires_grad=True)
    y = TF.conv2d(TF.pad(xt, (le, r, t, bo)), wt, bt, pair(stride), 0, pair(dilation), groups)
    y.backward(torch.from_numpy(gy))
    return tuple(a.grad.numpy() for a in (xt, wt, bt))


def case(x, w, stride=1, padding=0, dilation=1, groups=1):
    return dict(x=x, w=w, stride=stride, padding=padding, dilation=dilation, groups=groups)


def hyper(c):
    return c["stride"], c["padding"], c["dilation"], c["groups"]


# per-side padding, 'same' with strides; small enough for the reference loops
CASES = {
    "bottom_right_more": case((2, 3, 9, 8), (4, 3, 3, 4), 1, ((1, 2), (0, 3))),
    "top_left_more_strided": case((2, 3, 9, 8), (4, 3, 3, 3), 2, ((3, 0), (2, 1))),
    "one_side_only": case((1, 2, 7, 7), (3, 2, 2, 2), 1, ((0, 1), (0, 1))),
    "dilated_grouped": case((2, 4, 10, 9), (6, 2, 3, 2), (2, 1), ((2, 0), (1, 3)), (1, 2), 2),
    "stride_past_kernel": case((1, 2, 8, 8), (2, 2, 2, 2), 3, ((0, 4), (3, 0))),
    "stride_past_input": case((1, 1, 3, 4), (2, 1, 2, 2), 9, ((1, 3), (0, 2))),
    "one_by_one": case((2, 3, 4, 5), (4, 3, 1, 1), 1, ((1, 0), (0, 2))),
    "col2im_shaped": case((2, 2, 9, 8), (16, 2, 3, 3), 2, ((0, 2), (1, 0))),
    "packed_shaped": case((2, 16, 7, 6), (32, 16, 3, 3), 1, ((2, 0), (0, 2))),
    "same_stride2": case((2, 3, 9, 8), (4, 3, 3, 3), 2, "same"),
    "same_stride2_even": case((2, 3, 10, 7), (4, 3, 4, 2), 2, "same"),
    "same_stride3_dilated": case((1, 2, 11, 9), (3, 2, 3, 3), 3, "same", 2),
    "same_stride_pair": case((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), "same"),
    "same_1x1_stride2": case((2, 3, 7, 7), (4, 3, 1, 1), 2, "same"),
    "same_stride2_col2im": case((2, 1, 9, 10), (16, 1, 5, 5), 2, "same"),
}


@pytest.fixture(params=["dot", "packed"])
def dw_route(request, route_override):
    route_override("dw_dot_max", 10**9 if request.param == "dot" else 0)
    return request.param


@pytest.fixture(params=["implicit", "col2im"])
def dx_route(request, route_override):
    route_override("dx_col2im_max_c", 0 if request.param == "implicit" else 64)
    return request.param


@pytest.fixture
def direct():
    previous = F.set_winograd(False)
    yield
    F.set_winograd(previous)


@pytest.fixture
def wino():
    previous = F.set_winograd(True)
    yield
    F.set_winograd(previous)


def make(rng, xs, ws, dtype):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b


# --------------------------------------------------------------------------
# conv2d with per-side padding and 'same' at any stride, every direct route
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_conv2d_per_side_against_torch_and_reference(name, dtype, dx_route, dw_route, direct,
                                                     rng):
    c = CASES[name]
    x, w, b = make(rng, c["x"], c["w"], dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    y = fastconv.conv2d(x, w, b, *hyper(c))
    assert F.info()["last_conv_algorithm"]["forward"] == "direct"
    assert y.shape == fastconv.conv2d_output_shape(c["x"], c["w"], *hyper(c))
    assert_close(y, torch_conv2d(x64, w64, b64, *hyper(c)), dtype, f"{name} vs torch")
    assert_close(y, R.conv2d(x64, w64, b64, *hyper(c)), dtype, f"{name} vs reference")
    gy = rng.standard_normal(y.shape).astype(dtype)
    got = fastconv.conv2d_backward(gy, x, w, *hyper(c))
    want_t = torch_conv2d_backward(gy.astype(np.float64), x64, w64, *hyper(c))
    want_r = R.conv2d_backward(gy.astype(np.float64), x64, w64, *hyper(c))
    for what, a, et, er in zip(("grad_x", "grad_w", "grad_b"), got, want_t, want_r):
        assert_close(a, et, dtype, f"{name} {what} ({dx_route}, {dw_route}) vs torch")
        assert_close(a, er, dtype, f"{name} {what} ({dx_route}, {dw_route}) vs reference")


def test_random_geometries_against_reference(route_override):
    """Seeded random shapes, strides (past the kernel and past the padded input),
    dilations, groups and per-side or 'same' padding, on random routes: the
    kernels and the reference agree, or both refuse the geometry."""
    rng = np.random.default_rng(13)
    checked = 0
    for _ in range(150):
        c = int(rng.integers(1, 4))
        g = int(rng.choice([1, c]))
        xs = (int(rng.integers(1, 3)), c) + tuple(int(v) for v in rng.integers(1, 8, size=2))
        ws = (g * int(rng.integers(1, 4)), c // g) + tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.choice([1, 2, 3, 5, 9], size=2))
        d = tuple(int(v) for v in rng.integers(1, 3, size=2))
        pad = "same" if rng.random() < 0.3 else tuple(
            tuple(int(v) for v in rng.integers(0, 6, size=2)) for _ in range(2))
        x, w, b = make(rng, xs, ws, np.float64)
        try:
            want = R.conv2d(x, w, b, s, pad, d, g)
        except ValueError:
            with pytest.raises(ValueError, match="conv2d: "):
                fastconv.conv2d(x, w, b, s, pad, d, g)
            continue
        route_override("dw_dot_max", int(rng.choice([0, 10**9])))
        route_override("dx_col2im_max_c", int(rng.choice([0, 64])))
        what = f"x {xs} w {ws} stride {s} padding {pad} dilation {d} groups {g}"
        y = fastconv.conv2d(x, w, b, s, pad, d, g)
        assert_close(y, want, np.float64, what)
        gy = rng.standard_normal(y.shape)
        for a, e in zip(fastconv.conv2d_backward(gy, x, w, s, pad, d, g),
                        R.conv2d_backward(gy, x, w, s, pad, d, g)):
            assert_close(a, e, np.float64, what)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("name", ["same_stride2", "same_stride2_even", "same_stride3_dilated",
                                  "same_stride_pair", "same_1x1_stride2"])
def test_same_gives_ceil_of_input_over_stride(name):
    c = CASES[name]
    n, _, h, w = c["x"]
    sh, sw = pair(c["stride"])
    assert fastconv.conv2d_output_shape(c["x"], c["w"], *hyper(c)) == (
        n, c["w"][0], math.ceil(h / sh), math.ceil(w / sw))


def test_same_at_stride_1_is_pytorchs_same(rng):
    """The TensorFlow rule reduces to PyTorch's 'same' at stride 1 (even kernels too)."""
    x, w, b = make(rng, (2, 3, 7, 8), (4, 3, 4, 3), np.float64)
    want = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                     padding="same", dilation=(1, 2)).numpy()
    assert_close(fastconv.conv2d(x, w, b, padding="same", dilation=(1, 2)), want, np.float64)


@pytest.mark.parametrize("padding", [((1, 1), (2, 2)), ((0, 0), (0, 0)), ((3, 3), (1, 1))])
def test_symmetric_per_side_is_the_pair_form_bitwise(padding, rng):
    x, w, b = make(rng, (2, 3, 8, 9), (4, 3, 3, 3), np.float32)
    pw = (padding[0][0], padding[1][0])
    y = fastconv.conv2d(x, w, b, padding=padding)
    assert_bitwise_equal(y, fastconv.conv2d(x, w, b, padding=pw))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    for a, e in zip(fastconv.conv2d_backward(gy, x, w, padding=padding),
                    fastconv.conv2d_backward(gy, x, w, padding=pw)):
        assert_bitwise_equal(a, e)


# --------------------------------------------------------------------------
# Winograd (5x5, stride 1) with unequal sides
# --------------------------------------------------------------------------

WINO_CASES = [
    ((2, 16, 12, 11), (16, 16, 5, 5), ((1, 3), (4, 0))),
    ((1, 3, 9, 10), (4, 3, 5, 5), ((2, 0), (1, 2))),
    ((2, 4, 7, 13), (6, 4, 5, 5), ((0, 4), (3, 1))),
]


def _wino_close(got, want, what):
    assert got.dtype == np.float32 and got.shape == want.shape, what
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= WINO_ATOL * np.abs(want).max(), f"{what}: max error {err:.3g}"


@pytest.mark.parametrize("xs, ws, padding", WINO_CASES)
def test_winograd_per_side_against_torch(xs, ws, padding, wino, rng):
    x, w, b = make(rng, xs, ws, np.float64)
    f = np.float32
    y = fastconv.conv2d(x.astype(f), w.astype(f), b.astype(f), padding=padding)
    assert F.info()["last_conv_algorithm"]["forward"] == "winograd"
    _wino_close(y, torch_conv2d(x, w, b, 1, padding, 1, 1), "y")
    gy = rng.standard_normal(y.shape)
    got = fastconv.conv2d_backward(gy.astype(f), x.astype(f), w.astype(f), padding=padding)
    assert F.info()["last_conv_algorithm"]["grad_input"] == "winograd"
    assert F.info()["last_conv_algorithm"]["grad_weight"] == "winograd"
    for a, e, what in zip(got, torch_conv2d_backward(gy, x, w, 1, padding, 1, 1),
                          ("grad_x", "grad_w", "grad_b")):
        _wino_close(a, e, what)


def test_winograd_needs_every_side_within_4(wino, rng):
    """grad_input runs as a convolution padded 4 - top / 4 - left: a side of 5 goes direct."""
    x, w, b = make(rng, (1, 4, 8, 8), (4, 4, 5, 5), np.float32)
    for padding in (((0, 5), (2, 2)), ((2, 2), (5, 0))):
        y = fastconv.conv2d(x, w, b, padding=padding)
        assert F.info()["last_conv_algorithm"]["forward"] == "direct"
        fastconv.conv2d_backward(rng.standard_normal(y.shape).astype(np.float32), x, w,
                                 padding=padding)
        assert F.info()["last_conv_algorithm"]["grad_input"] == "direct"


# --------------------------------------------------------------------------
# conv1d
# --------------------------------------------------------------------------

CASES_1D = {
    "plain": case((2, 3, 11), (4, 3, 3)),
    "padded": case((2, 3, 11), (4, 3, 3), 1, 2),
    "left_right": case((2, 3, 11), (4, 3, 4), 1, (1, 2)),
    "strided_dilated": case((1, 4, 17), (6, 4, 3), 2, (3, 0), 2),
    "grouped": case((2, 4, 9), (6, 2, 2), 1, (0, 1), 1, 2),
    "same": case((2, 3, 10), (5, 3, 4), 1, "same"),
    "same_stride2": case((2, 3, 11), (5, 3, 3), 2, "same"),
    "same_stride3_dilated": case((1, 2, 13), (3, 2, 3), 3, "same", 2),
    "valid": case((2, 3, 8), (2, 3, 8), 1, "valid"),
    "batch_of_one_1x1": case((1, 5, 6), (3, 5, 1)),
    "col2im_shaped": case((2, 1, 40), (16, 1, 5), 2, (2, 1)),
    "wide": case((2, 16, 60), (32, 16, 7), 1, "same"),
}


def torch_conv1d_pads(c):
    s, d = c["stride"], c["dilation"]
    p = c["padding"]
    if p == "same":
        return tf_same(c["x"][2], c["w"][2], s, d)
    if p == "valid":
        return (0, 0)
    return pair(p)


def torch_conv1d(c, x, w, b):
    le, r = torch_conv1d_pads(c)
    xt = TF.pad(torch.from_numpy(x), (le, r))
    return TF.conv1d(xt, torch.from_numpy(w), torch.from_numpy(b), c["stride"], 0,
                     c["dilation"], c["groups"]).numpy()


def torch_conv1d_backward(c, gy, x, w):
    le, r = torch_conv1d_pads(c)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.zeros(w.shape[0], dtype=xt.dtype, requires_grad=True)
    y = TF.conv1d(TF.pad(xt, (le, r)), wt, bt, c["stride"], 0, c["dilation"], c["groups"])
    y.backward(torch.from_numpy(gy))
    return tuple(a.grad.numpy() for a in (xt, wt, bt))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES_1D)
def test_conv1d_against_torch_and_reference(name, dtype, dx_route, rng):
    c = CASES_1D[name]
    x, w, b = make(rng, c["x"], c["w"], dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    y = fastconv.conv1d(x, w, b, *hyper(c))
    assert_close(y, torch_conv1d(c, x64, w64, b64), dtype, f"{name} vs torch")
    assert_close(y, R.conv1d(x64, w64, b64, *hyper(c)), dtype, f"{name} vs reference")
    gy = rng.standard_normal(y.shape).astype(dtype)
    got = fastconv.conv1d_backward(gy, x, w, *hyper(c))
    want_t = torch_conv1d_backward(c, gy.astype(np.float64), x64, w64)
    want_r = R.conv1d_backward(gy.astype(np.float64), x64, w64, *hyper(c))
    for what, a, et, er in zip(("grad_x", "grad_w", "grad_b"), got, want_t, want_r):
        assert_close(a, et, dtype, f"{name} {what} ({dx_route}) vs torch")
        assert_close(a, er, dtype, f"{name} {what} ({dx_route}) vs reference")


def test_conv1d_without_padding_matches_torchs_conv1d_directly(rng):
    """No F.pad in the oracle: torch's own conv1d padding and 'same' (stride 1)."""
    x, w, b = make(rng, (2, 3, 12), (4, 3, 4), np.float64)
    xt, wt, bt = map(torch.from_numpy, (x, w, b))
    assert_close(fastconv.conv1d(x, w, b, 2, 3, 2), TF.conv1d(xt, wt, bt, 2, 3, 2).numpy(),
                 np.float64)
    assert_close(fastconv.conv1d(x, w, b, padding="same", dilation=2),
                 TF.conv1d(xt, wt, bt, padding="same", dilation=2).numpy(), np.float64)


def test_conv1d_is_conv2d_on_a_height_1_view(rng):
    """Bitwise the 2-D kernels with H = 1 and the 1-D padding on the width axis."""
    x, w, b = make(rng, (3, 4, 23), (6, 2, 5), np.float32)
    y = fastconv.conv1d(x, w, b, 2, (1, 3), 1, 2, activation="relu")
    y2 = fastconv.conv2d(x[:, :, None], w[:, :, None], b, (1, 2), ((0, 0), (1, 3)), 1, 2,
                         activation="relu")
    assert_bitwise_equal(y, y2[:, :, 0])
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = fastconv.conv1d_backward(gy, x, w, 2, (1, 3), 1, 2, relu_output=y)
    want = fastconv.conv2d_backward(gy[:, :, None], x[:, :, None], w[:, :, None], (1, 2),
                                    ((0, 0), (1, 3)), 1, 2, relu_output=y2)
    assert_bitwise_equal(got[0], want[0][:, :, 0])
    assert_bitwise_equal(got[1], want[1][:, :, 0])
    assert_bitwise_equal(got[2], want[2])


def test_conv1d_out_buffers_and_mask(rng):
    x, w, b = make(rng, (2, 3, 10), (4, 3, 3), np.float64)
    out = np.empty((2, 4, 5))
    assert fastconv.conv1d(x, w, b, 2, "same", out=out) is out
    gy = rng.standard_normal(out.shape)
    full = fastconv.conv1d_backward(gy, x, w, 2, "same")
    outs = (np.empty(x.shape), None, np.empty(4))
    got = fastconv.conv1d_backward(gy, x, w, 2, "same", output_mask=(True, False, True),
                                   out=outs)
    assert got[0] is outs[0] and got[1] is None and got[2] is outs[2]
    assert_bitwise_equal(got[0], full[0])
    assert_bitwise_equal(got[2], full[2])


# --------------------------------------------------------------------------
# Central differences (float64)
# --------------------------------------------------------------------------

GRAD_2D = [
    case((1, 2, 5, 6), (2, 2, 3, 2), (2, 1), ((0, 2), (3, 1))),
    case((2, 2, 5, 5), (2, 2, 2, 3), 2, "same"),
]


@pytest.mark.parametrize("c", GRAD_2D, ids=["per_side", "same_stride2"])
def test_conv2d_gradients_central_differences(c, rng):
    x, w, b = make(rng, c["x"], c["w"], np.float64)
    gy = rng.standard_normal(fastconv.conv2d_output_shape(c["x"], c["w"], *hyper(c)))

    def loss():
        return float(np.sum(fastconv.conv2d(x, w, b, *hyper(c)) * gy))

    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, *hyper(c))
    for got, arr in ((gx, x), (gw, w), (gb, b)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-7, atol=1e-7)


def test_conv1d_gradients_central_differences(rng):
    c = case((2, 4, 9), (4, 2, 3), 2, (2, 1), 1, 2)
    x, w, b = make(rng, c["x"], c["w"], np.float64)
    gy = rng.standard_normal((2, 4, 5))

    def loss():
        return float(np.sum(fastconv.conv1d(x, w, b, *hyper(c)) * gy))

    gx, gw, gb = fastconv.conv1d_backward(gy, x, w, *hyper(c))
    for got, arr in ((gx, x), (gw, w), (gb, b)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-7, atol=1e-7)


# --------------------------------------------------------------------------
# Thread count: bitwise, with the 2-thread team shown to have run
# --------------------------------------------------------------------------

THREAD_CASES = [  # each well above the kernels' parallel cut-off (1e6 multiply-adds forward)
    ("conv2d", (4, 16, 21, 19), (24, 16, 3, 3), 1, ((0, 2), (3, 1))),
    ("conv2d", (12, 2, 23, 22), (16, 2, 5, 5), 2, "same"),       # col2im-shaped
    ("conv2d", (4, 16, 14, 13), (16, 16, 5, 5), 1, ((1, 3), (4, 0))),  # Winograd if forced
    ("conv1d", (8, 16, 200), (32, 16, 5), 2, "same"),
]


@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
@pytest.mark.parametrize("winograd", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_bitwise(dtype, winograd, restore_threads, rng):
    previous = F.set_winograd(winograd)
    try:
        for fn, xs, ws, s, p in THREAD_CASES:
            x, w, b = make(rng, xs, ws, dtype)
            conv = fastconv.conv1d if fn == "conv1d" else fastconv.conv2d
            back = fastconv.conv1d_backward if fn == "conv1d" else fastconv.conv2d_backward
            res = []
            for threads in (1, 2):
                fastconv.set_num_threads(threads)
                with fixed_team():
                    y = conv(x, w, b, s, p)
                    assert fastconv.info()["team"]["threads_last_call"] == threads
                    regions = parallel_regions()
                    gy = np.cos(y)  # a deterministic grad_out of y's shape
                    got = back(gy, x, w, s, p)
                    assert (parallel_regions() > regions) == (threads > 1)
                res.append((y,) + got)
            for a, e, what in zip(res[1], res[0], ("y", "grad_x", "grad_w", "grad_b")):
                assert_bitwise_equal(a, e, f"{fn} {xs} {p} {what}: 2 threads vs 1")
    finally:
        F.set_winograd(previous)


# --------------------------------------------------------------------------
# Layers: nn.Conv1d, nn.Conv2d's new padding forms, save/load, inference plans
# --------------------------------------------------------------------------

def test_conv1d_layer_is_the_functional(rng):
    layer = nn.Conv1d(3, 4, 3, stride=2, padding=(0, 2), rng=0, dtype=np.float64)
    x = rng.standard_normal((2, 3, 11))
    y = layer(x)
    assert_bitwise_equal(y, fastconv.conv1d(x, layer.weight.data, layer.bias.data, 2, (0, 2)))
    gy = rng.standard_normal(y.shape)
    gx = layer.backward(gy)
    want = fastconv.conv1d_backward(gy, x, layer.weight.data, 2, (0, 2))
    assert_bitwise_equal(gx, want[0])
    assert_bitwise_equal(layer.weight.grad, want[1])
    assert_bitwise_equal(layer.bias.grad, want[2])
    assert layer.weight.data.shape == (4, 3, 3)
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == (3, 2, (0, 2), 1)


def _models():
    return {
        "conv1d": (nn.Sequential([
            nn.Conv1d(2, 8, 4, stride=2, padding="same", rng=0), nn.ReLU(),
            nn.Conv1d(8, 4, 3, padding=(2, 0), dilation=2, groups=2, rng=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * 8, 5, rng=2)]), (6, 2, 20)),
        "conv2d": (nn.Sequential([
            nn.Conv2d(1, 6, 5, padding=((2, 3), (2, 3)), rng=0), nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding="same", rng=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(8 * 15 * 15, 5, rng=2)]), (3, 1, 28, 28)),
    }


@pytest.mark.parametrize("kind", ["conv1d", "conv2d"])
def test_models_fit_save_load_and_plan(kind, tmp_path, rng):
    model, shape = _models()[kind]
    x = rng.standard_normal(shape).astype(np.float32)
    y = np.arange(shape[0]) % 5
    model.compile(optimizer="sgd", loss="cross_entropy")
    model.fit(x, y, epochs=1, batch_size=3, verbose=0)
    # the plan (eval forward) is bitwise the layer-by-layer forward
    model.eval()
    planned = model.forward(x)
    model.train()
    from fastconv.nn.plan import plannable

    assert plannable(model)
    unplanned = model.forward(x)
    assert_bitwise_equal(planned, unplanned, f"{kind}: plan vs layers")
    path = os.path.join(tmp_path, "m.npz")
    model.save(path)
    loaded = nn.load_model(path)
    for a, b in zip(model.layers, loaded.layers):
        assert type(a) is type(b) and a.get_config() == b.get_config()
    assert_bitwise_equal(loaded.predict(x), model.predict(x), f"{kind}: reloaded")


def test_conv1d_relu_fusion_is_bitwise(rng):
    x = rng.standard_normal((4, 3, 30)).astype(np.float32)
    models = []
    for fuse in (True, False):
        m = nn.Sequential([nn.Conv1d(3, 6, 5, padding="same", rng=0), nn.ReLU()])
        m.fuse_conv_relu = fuse
        models.append(m)
    from fastconv.nn.fusion import forward_steps

    assert forward_steps(models[0].layers) == ((0, True),)
    y = [m.forward(x) for m in models]
    assert_bitwise_equal(y[0], y[1])
    gy = rng.standard_normal(y[0].shape).astype(np.float32)
    for m in models:
        m.backward(gy)
    assert_bitwise_equal(models[0].layers[0].weight.grad, models[1].layers[0].weight.grad)
    assert_bitwise_equal(models[0].layers[0].bias.grad, models[1].layers[0].bias.grad)


def test_conv1d_layer_errors_name_the_layer(rng):
    model = nn.Sequential([nn.Conv1d(2, 4, 3, rng=0), nn.ReLU()])
    with pytest.raises(nn.LayerInputError,
                       match=r"layer 0 \(Conv1d\(2 -> 4, 3\)\): Conv1d: expected 3-D input.*"
                             r"no batch axis: add it with x\[None\] or x.reshape\(1, 2, L\)"):
        model.predict(rng.standard_normal((2, 9)).astype(np.float32))


def test_conv2d_layer_padding_attribute():
    assert nn.Conv2d(1, 1, 3, padding=((1, 1), (2, 2))).padding == (1, 2)
    layer = nn.Conv2d(1, 1, 3, padding=((0, 1), (2, 0)))
    assert layer.padding == ((0, 1), (2, 0))
    assert layer.get_config()["padding"] == [[0, 1], [2, 0]]
    assert nn.Conv2d(1, 1, 3, stride=2, padding="same").padding == "same"


# --------------------------------------------------------------------------
# Bad input: ValueError / TypeError naming the function, argument, expected, received
# --------------------------------------------------------------------------

X2, W2 = np.zeros((1, 2, 6, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32)
X1, W1 = np.zeros((1, 2, 9), np.float32), np.zeros((3, 2, 3), np.float32)

BAD = [
    (ValueError,
     r"conv2d: padding must be an int, a pair \(ph, pw\), per side .*got \(\(1, 2\), 3\)",
     lambda: fastconv.conv2d(X2, W2, padding=((1, 2), 3))),
    (ValueError, r"conv2d: padding must be >= 0, got \(\(1, -1\), \(0, 0\)\)",
     lambda: fastconv.conv2d(X2, W2, padding=((1, -1), (0, 0)))),
    (ValueError, r"conv2d: padding must be .*got \(\(1, 2, 3\), \(0, 0\)\)",
     lambda: fastconv.conv2d(X2, W2, padding=((1, 2, 3), (0, 0)))),
    (TypeError, r"conv2d: padding must be .*, with ints, got \(\(1\.5, 2\), \(0, 0\)\)",
     lambda: fastconv.conv2d(X2, W2, padding=((1.5, 2), (0, 0)))),
    (ValueError, r"conv2d_backward: padding must be >= 0",
     lambda: fastconv.conv2d_backward(np.zeros((1, 3, 4, 4), np.float32), X2, W2,
                                      padding=((0, 0), (-1, 0)))),
    (ValueError, r"conv2d: padding .* scratch copy",
     lambda: fastconv.conv2d(X2, W2, stride=2**30, padding=((0, 2**30), (0, 0)))),
    (ValueError, r"conv2d: .*along height is larger than the padded input 5 "
                 r"\(size 2, padding 0 before, 3 after\)",
     lambda: fastconv.conv2d(np.zeros((1, 2, 2, 6), np.float32), np.zeros((3, 2, 6, 3),
                                                                            np.float32),
                             padding=((0, 3), (0, 0)))),
    (ValueError, r"conv2d_output_shape: padding must be >= 0",
     lambda: fastconv.conv2d_output_shape((1, 2, 6, 6), (3, 2, 3, 3), padding=((0, -1), (0, 0)))),
    (ValueError, r"conv1d: input must be 3-D \(N, C, L\)",
     lambda: fastconv.conv1d(X2, W1)),
    (ValueError, r"conv1d: weight must be 3-D",
     lambda: fastconv.conv1d(X1, W2)),
    (ValueError, r"conv1d: padding must be an int, a pair \(left, right\), 'valid' or 'same', "
                 r"got \(\(1, 2\), \(3, 4\)\)",
     lambda: fastconv.conv1d(X1, W1, padding=((1, 2), (3, 4)))),
    (ValueError, r"conv1d: padding must be .*got \(1, 2, 3\)",
     lambda: fastconv.conv1d(X1, W1, padding=(1, 2, 3))),
    (ValueError, r"conv1d: padding must be an int, a pair \(left, right\), 'valid' or 'same', "
                 r"got 'full'",
     lambda: fastconv.conv1d(X1, W1, padding="full")),
    (ValueError, r"conv1d: stride must be an int, got \(1, 2\)",
     lambda: fastconv.conv1d(X1, W1, stride=(1, 2))),
    (ValueError, r"conv1d: dilation must be >= 1, got 0",
     lambda: fastconv.conv1d(X1, W1, dilation=0)),
    (TypeError, r"conv1d: stride must be an int, got float 2\.0",
     lambda: fastconv.conv1d(X1, W1, stride=2.0)),
    (ValueError, r"conv1d: weight of shape \(3, 4, 3\) expects input with 4 channels "
                 r"\(groups=1\), got input of shape \(1, 2, 9\)",
     lambda: fastconv.conv1d(X1, np.zeros((3, 4, 3), np.float32))),
    (ValueError, r"conv1d: kernel extent 11 \(kernel 11, dilation 1\) along length is larger "
                 r"than the padded input 10",
     lambda: fastconv.conv1d(X1, np.zeros((3, 2, 11), np.float32), padding=(0, 1))),
    (TypeError, r"conv1d: .*dtype",
     lambda: fastconv.conv1d(X1, W1.astype(np.float64))),
    (ValueError, r"conv1d_backward: grad_out must have the conv1d output shape \(1, 3, 7\)",
     lambda: fastconv.conv1d_backward(np.zeros((1, 3, 8), np.float32), X1, W1)),
    (ValueError, r"Conv1d: padding must be an int, a pair \(left, right\), 'same' or 'valid', "
                 r"got 'full'",
     lambda: nn.Conv1d(2, 3, 3, padding="full")),
    (ValueError, r"Conv1d: kernel_size must be an int, got \(3, 3\)",
     lambda: nn.Conv1d(2, 3, (3, 3))),
    (ValueError, r"Conv1d: expected 3-D input, got input of shape \(1, 2, 6, 6\)",
     lambda: nn.Conv1d(2, 3, 3)(X2)),
    (ValueError, r"Conv2d: padding must be >= 0, got \(\(0, 1\), \(-2, 0\)\)",
     lambda: nn.Conv2d(2, 3, 3, padding=((0, 1), (-2, 0)))),
    (ValueError, r"conv1d: padding must be .*got \(\(1, 2\), \(3, 4\)\)",
     lambda: R.conv1d(X1, W1, padding=((1, 2), (3, 4)))),
]


@pytest.mark.parametrize("exc, match, call", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_refused_with_a_message(exc, match, call):
    with pytest.raises(exc, match=match):
        call()
