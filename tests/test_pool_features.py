"""The pooling features of issue #13: ceil_mode, per-side padding (up to the
window), max- and average-pool dilation and 1-D pooling, forward and backward, against
PyTorch, the plain-loop reference and central differences; bitwise the same
on 1 and 2 threads and at every SIMD level; the layers (save/load, inference
plans); and the argument checks."""

import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import nn, reference
from fastconv.nn.plan import InferencePlan, plannable

import oracle
from oracle import numerical_grad
from test_simd_fallbacks import level, ran_only  # noqa: F401 (a fixture)
from workloads import fixed_team, parallel_regions

DTYPES = [np.float32, np.float64]
TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}


def rand(shape, dtype=np.float64, seed=0):
    # continuous values: no ties, so indices and gradients are well defined
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def close(a, b, dtype, what=""):
    np.testing.assert_allclose(a, b, rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)],
                               err_msg=what)


def torch_mods():
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional


# (shape, kernel, stride, padding, dilation, ceil_mode): within PyTorch's own limits
# (symmetric padding at most half the (dilated) window)
TORCH_CASES = {
    "googlenet_3x3s2_ceil": ((2, 3, 14, 14), 3, 2, 0, 1, True),
    "squeezenet_3x3s2_ceil_odd": ((1, 4, 13, 15), 3, 2, 0, 1, True),
    "2x2s2_ceil_odd": ((2, 2, 7, 9), 2, 2, 0, 1, True),
    "ceil_padded": ((1, 2, 10, 11), 3, 2, 1, 1, True),
    "ceil_drops_last": ((1, 1, 5, 6), 2, 2, 1, 1, True),  # PyTorch's drop rule
    "ceil_stride3": ((2, 2, 8, 10), (2, 3), 3, (1, 0), 1, True),
    "dilated": ((2, 3, 11, 12), 3, 1, 0, 2, False),
    "dilated_strided_padded": ((1, 2, 13, 9), (3, 2), 2, (1, 1), (2, 3), False),
    "dilated_ceil": ((2, 2, 10, 9), 2, 3, 1, (3, 2), True),
    "floor_nonsquare": ((2, 2, 9, 7), (3, 2), (2, 1), (1, 1), 1, False),
    "batch_of_one_1x1": ((1, 3, 5, 4), 1, 2, 0, 1, True),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_max_pool2d_matches_torch(name, dtype):
    torch, T = torch_mods()
    shape, k, s, p, d, ceil = TORCH_CASES[name]
    x = rand(shape, dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt, it = T.max_pool2d(xt, k, s, p, d, ceil_mode=ceil, return_indices=True)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    gy = rand(y.shape, dtype, seed=1)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(F.max_pool2d_backward(gy, idx, x.shape), xt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("name", [n for n, c in TORCH_CASES.items() if c[4] == 1])
def test_avg_pool2d_matches_torch(name, cip, dtype):
    torch, T = torch_mods()
    shape, k, s, p, _, ceil = TORCH_CASES[name]
    x = rand(shape, dtype)
    y = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = T.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=cip)
    assert y.shape == tuple(yt.shape)
    close(y, yt.detach().numpy(), dtype, "y")
    gy = rand(y.shape, dtype, seed=1)
    yt.backward(torch.from_numpy(gy))
    gx = F.avg_pool2d_backward(gy, x.shape, k, s, p, ceil_mode=ceil, count_include_pad=cip)
    close(gx, xt.grad.numpy(), dtype, "gx")


# per-side padding ((top, bottom), (left, right)), also past half the window
ASYM_CASES = {
    "same_upper_2x2s2_odd": ((2, 3, 7, 9), 2, 2, ((0, 1), (0, 1)), 1, False),
    "same_lower_3x3s2": ((1, 2, 8, 8), 3, 2, ((1, 0), (1, 0)), 1, False),
    "same_upper_3x3s1": ((2, 2, 6, 5), 3, 1, ((1, 1), (1, 1)), 1, False),
    "asym_ceil": ((1, 2, 9, 10), 3, 2, ((0, 2), (1, 0)), 1, True),
    "pad_k_minus_1": ((2, 2, 5, 6), 3, 2, ((2, 2), (2, 1)), 1, False),
    "pad_k_minus_1_ceil": ((1, 2, 4, 5), (4, 3), (3, 2), ((3, 1), (2, 2)), 1, True),
    "asym_dilated": ((1, 2, 11, 10), 3, 2, ((3, 0), (0, 4)), 2, False),
    "big_window_small_input": ((2, 1, 2, 3), 5, 1, ((4, 3), (2, 4)), 1, False),
}


def torch_padded(torch, T, x, pad, fill):
    (t, b), (left, r) = pad
    return T.pad(x, (left, r, t, b), value=fill)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ASYM_CASES))
def test_max_pool2d_per_side_padding_matches_torch_on_a_padded_input(name, dtype):
    torch, T = torch_mods()
    shape, k, s, pad, d, ceil = ASYM_CASES[name]
    x = rand(shape, dtype)
    y, idx = F.max_pool2d(x, k, s, pad, d, ceil_mode=ceil, return_indices=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = T.max_pool2d(torch_padded(torch, T, xt, pad, -float("inf")), k, s, 0, d,
                      ceil_mode=ceil)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    gy = rand(y.shape, dtype, seed=1)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(F.max_pool2d_backward(gy, idx, x.shape), xt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("name", [n for n, c in ASYM_CASES.items() if c[4] == 1])
def test_avg_pool2d_per_side_padding_matches_torch_sum_over_count(name, cip, dtype):
    """The divisor rule: the window clipped to the padded input [-top, H + bottom)
    (count_include_pad) or to the input, computed in torch as a window sum of the
    zero-padded input over a window sum of ones over the same region."""
    torch, T = torch_mods()
    shape, k, s, pad, _, ceil = ASYM_CASES[name]
    x = rand(shape, dtype)
    y = F.avg_pool2d(x, k, s, pad, ceil_mode=ceil, count_include_pad=cip)
    xt = torch.from_numpy(x).requires_grad_(True)
    args = dict(kernel_size=k, stride=s, ceil_mode=ceil, divisor_override=1)
    total = T.avg_pool2d(torch_padded(torch, T, xt, pad, 0.0), **args)
    ones = torch.ones((1, 1) + shape[2:], dtype=xt.dtype)
    region = T.pad(ones, (pad[1][0], pad[1][1], pad[0][0], pad[0][1]), value=1.0 if cip else 0.0)
    yt = total / T.avg_pool2d(region, **args)
    close(y, yt.detach().numpy(), dtype, "y")
    gy = rand(y.shape, dtype, seed=1)
    yt.backward(torch.from_numpy(gy))
    gx = F.avg_pool2d_backward(gy, x.shape, k, s, pad, ceil_mode=ceil, count_include_pad=cip)
    close(gx, xt.grad.numpy(), dtype, "gx")


# against the plain loops: every feature together, including what torch refuses
REF_CASES = {**TORCH_CASES, **ASYM_CASES,
             "empty_batch_ceil": ((0, 2, 5, 5), 2, 2, ((0, 1), (1, 0)), 1, True),
             "wide_dilation_tiny_input": ((1, 2, 3, 3), 3, 1, ((2, 2), (2, 2)), 2, True)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(REF_CASES))
def test_max_pool2d_matches_reference(name, dtype):
    shape, k, s, pad, d, ceil = REF_CASES[name]
    x = rand(shape, dtype)
    y, idx = F.max_pool2d(x, k, s, pad, d, ceil_mode=ceil, return_indices=True)
    ry, ridx = reference.max_pool2d(x, k, s, pad, d, ceil_mode=ceil, return_indices=True)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    gy = rand(y.shape, dtype, seed=1)
    # overlapping windows sum gradients: float32 rounds each sum, the reference once
    close(F.max_pool2d_backward(gy, idx, x.shape),
          reference.max_pool2d_backward(gy, idx, x.shape), dtype, "gx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("name", [n for n, c in REF_CASES.items() if c[4] == 1])
def test_avg_pool2d_matches_reference(name, cip, dtype):
    shape, k, s, pad, _, ceil = REF_CASES[name]
    x = rand(shape, dtype)
    kw = dict(ceil_mode=ceil, count_include_pad=cip)
    y = F.avg_pool2d(x, k, s, pad, **kw)
    close(y, reference.avg_pool2d(x, k, s, pad, **kw), dtype, "y")
    gy = rand(y.shape, dtype, seed=1)
    close(F.avg_pool2d_backward(gy, x.shape, k, s, pad, **kw),
          reference.avg_pool2d_backward(gy, x.shape, k, s, pad, **kw), dtype, "gx")


# average-pool dilation (ONNX's AveragePool, opset 19): PyTorch has none, so the
# oracles are the plain loops and ONNX's own reference implementation
def _avg_allows(case):
    """Average pooling keeps each side's padding below the undilated window."""
    _, k, _, pad, _, _ = case
    kh, kw = (k, k) if isinstance(k, int) else k
    if isinstance(pad, int):
        pad = ((pad, pad), (pad, pad))
    pad = [(p, p) if isinstance(p, int) else p for p in pad]
    return max(pad[0]) < kh and max(pad[1]) < kw


AVG_DILATED = {n: c for n, c in REF_CASES.items() if c[4] != 1 and _avg_allows(c)}
AVG_DILATED.update({
    "onnx_2d_dilations": ((1, 1, 4, 4), 2, 1, 0, 2, False),
    "dilated_ceil_padded_sides": ((2, 3, 11, 10), (3, 2), (2, 3), ((2, 1), (1, 0)), (2, 3), True),
    "dilated_1x1_kernel": ((1, 2, 5, 6), 1, 2, 0, 3, True),
    "dilated_batch_of_one": ((1, 1, 9, 9), 3, 3, 1, 2, False),
})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("name", list(AVG_DILATED))
def test_avg_pool2d_dilation_matches_reference(name, cip, dtype):
    shape, k, s, pad, d, ceil = AVG_DILATED[name]
    x = rand(shape, dtype)
    kw = dict(ceil_mode=ceil, count_include_pad=cip, dilation=d)
    y = F.avg_pool2d(x, k, s, pad, **kw)
    close(y, reference.avg_pool2d(x, k, s, pad, **kw), dtype, "y")
    gy = rand(y.shape, dtype, seed=1)
    close(F.avg_pool2d_backward(gy, x.shape, k, s, pad, **kw),
          reference.avg_pool2d_backward(gy, x.shape, k, s, pad, **kw), dtype, "gx")


def _onnx_avg_pool(x, k, s, pads, d, ceil, cip):
    """ONNX's reference AveragePool (opset 19) on ``x``."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    pair = (lambda v: [v, v] if isinstance(v, int) else list(v))
    (t, b), (left, r) = pads
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=pair(k),
                            strides=pair(s), dilations=pair(d), pads=[t, left, b, r],
                            ceil_mode=int(ceil), count_include_pad=int(cip))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, None)],
                              [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("case", [
    ((1, 1, 4, 4), 2, 1, ((0, 0), (0, 0)), 2, False),
    ((2, 2, 9, 8), 3, 2, ((1, 2), (2, 0)), (2, 1), False),
    ((1, 2, 10, 11), (2, 3), (3, 2), ((1, 0), (0, 2)), 2, True),
    ((1, 1, 7, 7), 3, 1, ((1, 1), (1, 1)), 3, False),
])
def test_avg_pool2d_dilation_matches_onnx_reference(case, cip):
    shape, k, s, pads, d, ceil = case
    x = rand(shape, np.float32)
    want = _onnx_avg_pool(x, k, s, pads, d, ceil, cip)
    y = F.avg_pool2d(x, k, s, pads, ceil_mode=ceil, count_include_pad=cip, dilation=d)
    assert y.shape == want.shape
    close(y, want, np.float32, "y")


def test_avg_pool_dilation_divisor_by_hand():
    """Row [1, 2, 3, 4, 5], window 3 with dilation 2, stride 2, padding (2, 1),
    ceil_mode: windows start at -2, 0 and 2 and read taps {-2, 0, 2}, {0, 2, 4}
    and {2, 4, 6}; the padded row is [-2, 6)."""
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)
    args = (3, 2, (2, 1))
    # count_include_pad: the taps inside [-2, 6): 3, 3 and 2
    np.testing.assert_array_equal(
        F.avg_pool1d(x, *args, ceil_mode=True, dilation=2, count_include_pad=True),
        [[[4 / 3, 3.0, 4.0]]])
    # else only the taps inside [0, 5): 2, 3 and 2
    np.testing.assert_array_equal(
        F.avg_pool1d(x, *args, ceil_mode=True, dilation=2, count_include_pad=False),
        [[[2.0, 3.0, 4.0]]])
    # dilation 1 is the undilated pooling, bit for bit
    z = rand((2, 3, 9, 8))
    np.testing.assert_array_equal(F.avg_pool2d(z, 3, 2, 1, dilation=1), F.avg_pool2d(z, 3, 2, 1))


def test_count_include_pad_divisor_by_hand():
    """Row [1, 2, 3, 4], window 3, stride 2, padding (2, 0), ceil_mode: windows
    [-2, 1), [0, 3) and [2, 5), the last running past the padded row [-2, 4)."""
    x = np.arange(1.0, 5.0).reshape(1, 1, 1, 4)
    args = ((1, 3), (1, 2), ((0, 0), (2, 0)))
    # count_include_pad: clipped to the padded row: 3, 3 and 2
    np.testing.assert_array_equal(
        F.avg_pool2d(x, *args, ceil_mode=True, count_include_pad=True), [[[[1 / 3, 2.0, 3.5]]]])
    # else clipped to the input: 1, 3 and 2
    np.testing.assert_array_equal(
        F.avg_pool2d(x, *args, ceil_mode=True, count_include_pad=False), [[[[1.0, 2.0, 3.5]]]])
    assert F.avg_pool2d(x, *args).shape == (1, 1, 1, 2)  # floor mode drops the overhang


# ------------------------------------------------------------------ 1-D ---
CASES_1D = [
    # (shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 17), 3, 2, 1, 1, True),
    ((1, 2, 10), 2, 2, 0, 1, True),
    ((2, 2, 12), 3, 1, 1, 2, False),
    ((1, 4, 9), 4, 3, 1, 1, False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES_1D)
def test_pool1d_matches_torch(case, dtype):
    torch, T = torch_mods()
    shape, k, s, p, d, ceil = case
    x = rand(shape, dtype)
    y, idx = F.max_pool1d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt, it = T.max_pool1d(xt, k, s, p, d, ceil_mode=ceil, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    gy = rand(y.shape, dtype, seed=1)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(F.max_pool1d_backward(gy, idx, x.shape), xt.grad.numpy())
    if d == 1:
        xt.grad = None
        at = T.avg_pool1d(xt, k, s, p, ceil_mode=ceil, count_include_pad=False)
        a = F.avg_pool1d(x, k, s, p, ceil_mode=ceil, count_include_pad=False)
        close(a, at.detach().numpy(), dtype, "avg y")
        at.backward(torch.from_numpy(gy))
        close(F.avg_pool1d_backward(gy, x.shape, k, s, p, ceil_mode=ceil,
                                    count_include_pad=False), xt.grad.numpy(), dtype, "avg gx")


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool1d_per_side_padding_matches_reference(dtype):
    x = rand((2, 3, 11), dtype)
    for k, s, pad, d, ceil in [(3, 2, (0, 2), 1, True), (4, 3, (3, 1), 1, False),
                               (3, 2, (4, 0), 2, True), (3, 2, (2, 1), 3, True)]:
        y, idx = F.max_pool1d(x, k, s, pad, d, ceil_mode=ceil, return_indices=True)
        ry, ridx = reference.max_pool1d(x, k, s, pad, d, ceil_mode=ceil, return_indices=True)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(idx, ridx)
        gy = rand(y.shape, dtype, seed=2)
        close(F.max_pool1d_backward(gy, idx, x.shape),
              reference.max_pool1d_backward(gy, idx, x.shape), dtype, "gx")
        if max(pad) < k:  # average pooling's padding limit is the undilated window
            for cip in (True, False):
                kw = dict(ceil_mode=ceil, count_include_pad=cip, dilation=d)
                a = F.avg_pool1d(x, k, s, pad, **kw)
                close(a, reference.avg_pool1d(x, k, s, pad, **kw), dtype, "avg y")
                ga = rand(a.shape, dtype, seed=3)
                close(F.avg_pool1d_backward(ga, x.shape, k, s, pad, **kw),
                      reference.avg_pool1d_backward(ga, x.shape, k, s, pad, **kw), dtype,
                      "avg gx")


# ------------------------------------------------------------ gradients ---
def test_gradients_by_central_differences():
    x = rand((1, 2, 7, 6))
    k, s, pad, d = 3, 2, ((2, 1), (0, 2)), (2, 1)
    y, idx = F.max_pool2d(x, k, s, pad, d, ceil_mode=True, return_indices=True)
    gy = rand(y.shape, seed=3)
    xx = x.copy()  # perturbed in place by numerical_grad
    num = numerical_grad(
        lambda: float(np.sum(F.max_pool2d(xx, k, s, pad, d, ceil_mode=True) * gy)), xx,
        eps=1e-6)
    np.testing.assert_allclose(F.max_pool2d_backward(gy, idx, x.shape), num, atol=1e-7)
    for cip in (True, False):
        kw = dict(ceil_mode=True, count_include_pad=cip)
        ya = F.avg_pool2d(x, k, s, pad, **kw)
        ga = rand(ya.shape, seed=4)
        num = numerical_grad(lambda: float(np.sum(F.avg_pool2d(xx, k, s, pad, **kw) * ga)),
                             xx, eps=1e-6)
        np.testing.assert_allclose(F.avg_pool2d_backward(ga, x.shape, k, s, pad, **kw), num,
                                   atol=1e-7)
        kw["dilation"] = d
        ya = F.avg_pool2d(x, k, s, pad, **kw)
        ga = rand(ya.shape, seed=5)
        num = numerical_grad(lambda: float(np.sum(F.avg_pool2d(xx, k, s, pad, **kw) * ga)),
                             xx, eps=1e-6)
        np.testing.assert_allclose(F.avg_pool2d_backward(ga, x.shape, k, s, pad, **kw), num,
                                   atol=1e-7)


def test_float32_agrees_with_float64():
    x = rand((2, 3, 13, 11))
    pad = ((1, 2), (0, 1))
    y64 = F.avg_pool2d(x, 3, 2, pad, ceil_mode=True)
    y32 = F.avg_pool2d(x.astype(np.float32), 3, 2, pad, ceil_mode=True)
    np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-6)
    m64 = F.max_pool2d(x, 3, 2, pad, 2, ceil_mode=True)
    m32 = F.max_pool2d(x.astype(np.float32), 3, 2, pad, 2, ceil_mode=True)
    np.testing.assert_array_equal(m32, m64.astype(np.float32))


# --------------------------------------------------- threads, SIMD levels ---
def all_features(x, dtype):
    """Every new feature's forward and backward on ``x``: a list of arrays."""
    pad = ((1, 2), (0, 2))
    out = []
    y, idx = F.max_pool2d(x, 3, 2, pad, 2, ceil_mode=True, return_indices=True)
    gy = rand(y.shape, dtype, seed=5)
    out += [y, idx, F.max_pool2d_backward(gy, idx, x.shape)]
    for cip in (True, False):
        for d in (1, (2, 3)):
            kw = dict(ceil_mode=True, count_include_pad=cip, dilation=d)
            a = F.avg_pool2d(x, 3, 2, pad, **kw)
            out += [a, F.avg_pool2d_backward(rand(a.shape, dtype, 6), x.shape, 3, 2, pad, **kw)]
    y1, i1 = F.max_pool1d(x[:, :, 0], 3, 2, (0, 2), ceil_mode=True, return_indices=True)
    out += [y1, i1, F.avg_pool1d(x[:, :, 0], 4, 3, (3, 1), ceil_mode=True)]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_on_one_and_two_threads(dtype):
    x = rand((16, 32, 29, 31), dtype)
    previous = F.get_num_threads()
    try:
        F.set_num_threads(1)
        one = all_features(x, dtype)
        if not fastconv.openmp_enabled():
            pytest.skip("built without OpenMP: one thread only")
        F.set_num_threads(2)
        with fixed_team():
            before = parallel_regions()
            two = all_features(x, dtype)
            assert parallel_regions() > before, "the 2-thread team never ran"
    finally:
        F.set_num_threads(previous)
    for a, b in zip(one, two):
        oracle.assert_bitwise_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_simd_level_matches_reference(level, dtype):  # noqa: F811 (fixture)
    x = rand((2, 3, 12, 29), dtype)
    for k, s, pad, d, ceil in [(3, 2, ((1, 2), (0, 2)), 2, True), (2, 2, ((0, 1), (0, 1)), 1, True),
                               ((2, 3), (1, 2), ((1, 0), (2, 2)), 1, False)]:
        y, idx = F.max_pool2d(x, k, s, pad, d, ceil_mode=ceil, return_indices=True)
        ry, ridx = reference.max_pool2d(x, k, s, pad, d, ceil_mode=ceil, return_indices=True)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(idx, ridx)
        gy = rand(y.shape, dtype, seed=7)
        close(F.max_pool2d_backward(gy, idx, x.shape),
              reference.max_pool2d_backward(gy, idx, x.shape), dtype, "gx")
        kw = dict(ceil_mode=ceil, count_include_pad=False, dilation=d)
        a = F.avg_pool2d(x, k, s, pad, **kw)
        close(a, reference.avg_pool2d(x, k, s, pad, **kw), dtype, "avg y")
        ga = rand(a.shape, dtype, seed=8)
        close(F.avg_pool2d_backward(ga, x.shape, k, s, pad, **kw),
              reference.avg_pool2d_backward(ga, x.shape, k, s, pad, **kw), dtype, "avg gx")
    ran_only(level, "pooling features")


# --------------------------------------------------------------- layers ---
def test_layers_forward_backward_and_attributes():
    x = rand((2, 3, 9, 10))
    m = nn.MaxPool2d(3, 2, ((0, 1), (1, 1)), dilation=(1, 2), ceil_mode=True)
    assert (m.kernel_size, m.stride, m.dilation, m.ceil_mode) == ((3, 3), (2, 2), (1, 2), True)
    assert m.padding == ((0, 1), (1, 1))
    assert nn.MaxPool2d(3, 2, 1).padding == (1, 1)  # symmetric: the (ph, pw) pair as before
    y = m.forward(x)
    ry, ridx = reference.max_pool2d(x, 3, 2, ((0, 1), (1, 1)), (1, 2), ceil_mode=True,
                                    return_indices=True)
    np.testing.assert_array_equal(y, ry)
    gy = rand(y.shape, seed=1)
    np.testing.assert_array_equal(m.backward(gy), reference.max_pool2d_backward(gy, ridx, x.shape))
    a = nn.AvgPool2d(3, 2, ((2, 0), (0, 2)), ceil_mode=True, count_include_pad=False)
    kw = dict(ceil_mode=True, count_include_pad=False)
    ya = a.forward(x)
    close(ya, reference.avg_pool2d(x, 3, 2, ((2, 0), (0, 2)), **kw), np.float64)
    ga = rand(ya.shape, seed=2)
    close(a.backward(ga), reference.avg_pool2d_backward(ga, x.shape, 3, 2, ((2, 0), (0, 2)), **kw),
          np.float64)
    x1 = x[:, :, 0]
    m1 = nn.MaxPool1d(3, 2, (0, 2), dilation=2, ceil_mode=True)
    assert (m1.kernel_size, m1.stride, m1.padding, m1.dilation) == (3, 2, (0, 2), 2)
    y1 = m1.forward(x1)
    np.testing.assert_array_equal(y1, reference.max_pool1d(x1, 3, 2, (0, 2), 2, ceil_mode=True))
    g1 = rand(y1.shape, seed=3)
    _, i1 = reference.max_pool1d(x1, 3, 2, (0, 2), 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(m1.backward(g1), reference.max_pool1d_backward(g1, i1, x1.shape))
    a1 = nn.AvgPool1d(4, 3, 1, ceil_mode=True, count_include_pad=False)
    ya1 = a1.forward(x1)
    close(ya1, reference.avg_pool1d(x1, 4, 3, 1, ceil_mode=True, count_include_pad=False),
          np.float64)
    assert a1.backward(rand(ya1.shape)).shape == x1.shape


def test_layers_save_load_and_inference_plan(tmp_path):
    model2d = nn.Sequential(nn.MaxPool2d(3, 2, ((0, 1), (1, 0)), dilation=(2, 1), ceil_mode=True),
                            nn.AvgPool2d(2, 2, ((1, 0), (0, 1)), ceil_mode=True,
                                         count_include_pad=False),
                            nn.AvgPool2d(2, 1, ((1, 0), (0, 1)), count_include_pad=False,
                                         dilation=(1, 2)),
                            nn.Flatten())
    model1d = nn.Sequential(nn.MaxPool1d(3, 2, (0, 2), dilation=2, ceil_mode=True),
                            nn.AvgPool1d(2, 1, (1, 0), ceil_mode=True),
                            nn.AvgPool1d(2, 1, (1, 1), dilation=2), nn.Flatten())
    for model, x in ((model2d, rand((3, 2, 11, 12), np.float32)),
                     (model1d, rand((3, 2, 15), np.float32))):
        want = x
        with nn.no_grad():
            for layer in model.layers:  # layer by layer, not through a plan
                want = layer.forward(want)
        assert plannable(model)
        np.testing.assert_array_equal(InferencePlan(model, x.shape, x.dtype).run(x), want)
        path = tmp_path / "m.npz"
        nn.save_model(model, path)
        loaded = nn.load_model(path)
        for a, b in zip(model.layers, loaded.layers):
            assert type(a) is type(b) and a.get_config() == b.get_config()
        np.testing.assert_array_equal(InferencePlan(loaded, x.shape, x.dtype).run(x), want)


# ------------------------------------------------------------ bad input ---
BAD = [
    (lambda: F.max_pool2d(rand((1, 1, 5, 5)), 3, padding=((1, 3), (0, 0))), ValueError,
     r"max_pool2d: padding on each side must be smaller than kernel_size 3, got padding "
     r"\(\(1, 3\), \(0, 0\)\)"),
    (lambda: F.avg_pool2d(rand((1, 1, 5, 5)), 2, padding=((0, 2), (0, 0))), ValueError,
     r"avg_pool2d: padding on each side must be smaller than kernel_size 2"),
    (lambda: F.max_pool2d(rand((1, 1, 5, 5)), 2, dilation=2, padding=3), ValueError,
     r"max_pool2d: padding on each side must be smaller than the dilated window 3"),
    (lambda: F.max_pool2d(rand((1, 1, 5, 1)), 2, 2, padding=(0, 1), dilation=2), ValueError,
     r"max_pool2d: padding \(1, 1\) along width leaves output 0 with a window .* no input"),
    (lambda: F.max_pool2d(rand((1, 1, 5, 5)), 2, padding=((1, 0), 1)), ValueError,
     r"max_pool2d: padding must be an int, a pair \(h, w\) or per side"),
    (lambda: F.max_pool2d(rand((1, 1, 5, 5)), 2, padding=((1, 0), (1.5, 0))), TypeError,
     r"max_pool2d: padding must be .* got \(\(1, 0\), \(1.5, 0\)\)"),
    (lambda: F.max_pool2d(rand((1, 1, 5, 5)), 2, padding=((1, -1), (0, 0))), ValueError,
     r"max_pool2d: padding must be .*>= 0"),
    (lambda: F.max_pool2d(rand((1, 1, 5, 5)), 2, dilation=0), ValueError,
     r"max_pool2d: dilation must be >= 1, got 0"),
    (lambda: F.max_pool2d(rand((1, 1, 5, 5)), 2, ceil_mode="yes"), TypeError,
     r"max_pool2d: ceil_mode must be a bool, got str 'yes'"),
    (lambda: F.avg_pool2d(rand((1, 1, 5, 5)), 2, count_include_pad=None), TypeError,
     r"avg_pool2d: count_include_pad must be a bool, got NoneType None"),
    (lambda: F.avg_pool2d(rand((1, 1, 5, 5)), 2, dilation=0), ValueError,
     r"avg_pool2d: dilation must be >= 1, got 0"),
    (lambda: F.avg_pool2d(rand((1, 1, 5, 5)), 2, dilation=1.5), TypeError,
     r"avg_pool2d: dilation must be"),
    (lambda: F.avg_pool1d(rand((1, 1, 2)), 2, 1, padding=1, dilation=3), ValueError,
     r"avg_pool1d: padding \(1, 1\) along the length leaves output 0 with a window .* no "
     r"input"),
    (lambda: F.avg_pool2d_backward(rand((1, 1, 4, 4)), (1, 1, 5, 5), 2, 1, dilation=2),
     ValueError, r"avg_pool2d_backward: grad_out must have shape \(1, 1, 3, 3\)"),
    (lambda: nn.AvgPool2d(2, dilation=(1, 0)), ValueError, r"AvgPool2d: dilation must be >= 1"),
    (lambda: nn.AvgPool1d(2, dilation=-1), ValueError, r"AvgPool1d: dilation must be >= 1"),
    (lambda: F.max_pool2d(rand((1, 1, 2, 2)), 4), ValueError,
     r"max_pool2d: kernel_size 4 along height is larger than the padded input 2"),
    (lambda: F.avg_pool2d_backward(rand((1, 1, 2, 2)), (1, 1, 5, 5), 2, ceil_mode=True),
     ValueError, r"avg_pool2d_backward: grad_out must have shape \(1, 1, 3, 3\)"),
    (lambda: F.max_pool1d(rand((1, 1, 5, 5)), 2), ValueError,
     r"max_pool1d: input must be 3-D \(N, C, L\)"),
    (lambda: F.max_pool1d(rand((1, 1, 5)), (2, 2)), TypeError, r"max_pool1d: kernel_size must"),
    (lambda: F.avg_pool1d(rand((1, 1, 5)), 2, padding=(1, 2, 3)), ValueError,
     r"avg_pool1d: padding must be an int or a pair \(left, right\)"),
    (lambda: F.avg_pool1d(rand((1, 1, 5)), 2, padding=(0, 2)), ValueError,
     r"avg_pool1d: padding on each side must be smaller than kernel_size"),
    (lambda: F.max_pool1d(rand((1, 1, 2)), 5), ValueError,
     r"max_pool1d: kernel_size 5 along the length is larger than the padded input 2"),
    (lambda: F.max_pool1d_backward(rand((1, 1, 2)), np.zeros((1, 1, 2), np.int64) + 7, (1, 1, 5)),
     ValueError, r"max_pool1d_backward: indices must lie in \[0, L\) = \[0, 5\) for input_shape "
                 r"\(1, 1, 5\)"),
    (lambda: F.max_pool1d_backward(rand((1, 1, 2)), np.zeros((1, 1, 2), np.int32), (1, 1, 5)),
     TypeError, r"max_pool1d_backward: indices must be an int64 array, got int32"),
    (lambda: F.avg_pool1d_backward(rand((1, 1, 2)), (1, 1), 2), ValueError,
     r"avg_pool1d_backward: input_shape must be 3 non-negative ints \(N, C, L\)"),
    (lambda: nn.MaxPool2d(2, padding=((0, 2), (0, 0))), ValueError,
     r"MaxPool2d: padding on each side must be smaller than kernel_size 2"),
    (lambda: nn.AvgPool2d(3, ceil_mode=2), TypeError, r"AvgPool2d: ceil_mode must be a bool"),
    (lambda: nn.MaxPool1d(2, padding=(1, 2)), ValueError,
     r"MaxPool1d: padding on each side must be smaller than kernel_size"),
    (lambda: nn.AvgPool1d(0), ValueError, r"AvgPool1d: kernel_size must be >= 1, got 0"),
    (lambda: nn.MaxPool1d(2).forward(rand((1, 2, 3, 4))), ValueError,
     r"MaxPool1d: expected 3-D input"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_names_function_argument_and_values(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------- max-pool backward, 2x2 tiles ---
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (1, 2, 9, 35), (2, 1, 2, 2)])
def test_max_backward_written_once_per_tile_equals_the_scatter(shape, dtype):
    """2x2/2 windows: grad_x is written once per element (no memset, no scatter)
    when every index lies in its own 2x2 tile; bitwise the scatter's result,
    -0 gradients included (0 + -0 is +0), and odd edges zero."""
    x = rand(shape, dtype)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    gy = rand(y.shape, dtype, seed=9)
    gy.flat[::3] = -0.0
    got = F.max_pool2d_backward(gy, idx, x.shape)
    want = reference.max_pool2d_backward(gy, idx, x.shape)
    oracle.assert_bitwise_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_backward_index_outside_its_tile_falls_back_to_the_scatter(dtype):
    """Indices that do not come from 2x2/2 pooling (here from 3x3 windows with
    stride 2 and padding 1, whose output has the same shape, and two outputs
    sharing an element) must still be scattered and summed, not dropped."""
    x = rand((2, 3, 12, 12), dtype)
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert y.shape[2:] == (6, 6)  # a 2x2/2 pool of 12x12 has this shape too
    gy = rand(y.shape, dtype, seed=4)
    idx = idx.copy()
    idx[0, 0, 0, 1] = idx[0, 0, 0, 0]  # two outputs, one element: the sum
    close(F.max_pool2d_backward(gy, idx, x.shape),
          reference.max_pool2d_backward(gy, idx, x.shape), dtype, "gx")


# --------------------------------------- return_indices on the layers ---
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_layers_return_indices_as_torch(dtype):
    torch = pytest.importorskip("torch")
    x = rand((2, 3, 9, 8), dtype)
    ours = nn.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True, return_indices=True)
    theirs = torch.nn.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True, return_indices=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt, it = theirs(xt)
    y, idx = ours.forward(x)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    ours.needs_input_grad = True
    gy = rand(y.shape, dtype, seed=2)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(ours.backward(gy), xt.grad.numpy())
    # the flat layouts index the whole input (ONNX's Indices)
    _, flat = nn.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True, return_indices=True,
                           indices_layout="flat").forward(x)
    np.testing.assert_array_equal(x.reshape(-1)[flat], y)
    _, col = nn.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True, return_indices=True,
                          indices_layout="flat_column").forward(x)
    np.testing.assert_array_equal(x.transpose(0, 1, 3, 2).reshape(-1)[col], y)
    # 1-D
    x1 = rand((2, 3, 11), dtype)
    y1, i1 = nn.MaxPool1d(3, 2, (1, 2), return_indices=True).forward(x1)
    yt1, it1 = torch.nn.functional.max_pool1d(torch.from_numpy(np.pad(x1, ((0, 0), (0, 0), (1, 2)),
                                                                     constant_values=-np.inf)),
                                              3, 2, return_indices=True)
    np.testing.assert_array_equal(y1, yt1.numpy())
    np.testing.assert_array_equal(i1, it1.numpy() - 1)  # torch indexed the padded row
    _, f1 = nn.MaxPool1d(3, 2, (1, 2), return_indices=True, indices_layout="flat").forward(x1)
    np.testing.assert_array_equal(x1.reshape(-1)[f1], y1)


def test_layer_with_several_outputs_is_last_and_saved(tmp_path):
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(ValueError, match=r"Sequential: layers\[1\] \(MaxPool2d\) returns 2 "
                                         r"arrays, so it can only be the last layer; got ReLU"):
        model.add(nn.ReLU())
    x = rand((2, 2, 6, 6), np.float32)
    model.eval()
    y, idx = model(x)
    assert not plannable(model)  # the plan computes one array per layer
    path = tmp_path / "m.npz"
    model.save(path)
    again = fastconv.load_model(path)
    again.eval()
    for a, b in zip(again(x), (y, idx)):
        np.testing.assert_array_equal(a, b)
    assert "(1, 2, 3, 3), (1, 2, 3, 3)" in model.summary((2, 6, 6), print_fn=lambda s: None)
    for bad, exc, match in ((dict(return_indices="yes"), TypeError,
                             r"MaxPool2d: return_indices must be a bool, got str"),
                            (dict(return_indices=True, indices_layout="onnx"), ValueError,
                             r"MaxPool2d: indices_layout must be one of \['plane', 'flat', "
                             r"'flat_column'\], got 'onnx'")):
        with pytest.raises(exc, match=match):
            nn.MaxPool2d(2, **bad)
    with pytest.raises(TypeError, match=r"MaxPool1d: return_indices must be a bool"):
        nn.MaxPool1d(2, return_indices=1)
