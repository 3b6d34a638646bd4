"""max_pool2d / avg_pool2d and their gradients against the reference, the
oracle and PyTorch; the tie, NaN and padding rules on hand-made inputs."""

import numpy as np
import pytest

import fastconv
from fastconv import reference

import oracle
from oracle import numerical_grad
from oracle import assert_close

DTYPES = [np.float32, np.float64]


def case(x, kernel_size, stride=None, padding=0):
    return dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding)


SMALL = {
    "2x2": case((2, 3, 6, 8), 2),
    "3x3_s2_p1": case((2, 2, 7, 7), 3, 2, 1),
    "nonsquare": case((1, 2, 5, 9), (2, 3), (1, 2), (1, 1)),
    "kernel_1": case((2, 2, 3, 4), 1),
    "kernel_1_strided": case((1, 2, 5, 5), 1, 2),
    "global": case((2, 3, 5, 4), (5, 4)),
    "one_pixel": case((2, 2, 1, 1), 1),
    "overlapping": case((1, 2, 6, 5), 3, 1, 1),
    "stride_gt_kernel": case((1, 1, 9, 9), 2, 3),
    "floor_drops_tail": case((2, 1, 7, 5), 2),
    "pad_half_even_kernel": case((1, 2, 4, 4), 4, 2, 2),
    "pairs": case((2, 2, 7, 6), (3, 2), (2, 1), (1, 0)),
    "batch_of_one": case((1, 3, 8, 8), 2, 2),
    "empty_batch": case((0, 3, 6, 6), 2),
}
MEDIUM = {
    "lenet_s2": case((16, 6, 28, 28), 2),
    "medium_3x3_s2_p1": case((4, 16, 17, 19), 3, 2, 1),
    "wide": case((2, 8, 13, 67), (2, 3), 2, (1, 1)),
}
ALL = {**SMALL, **MEDIUM}
SOURCES = ["reference", "oracle", "torch"]
GRID = [pytest.param(c, s, id=f"{c}-{s}") for c in ALL for s in SOURCES
        if s != "reference" or c in SMALL]


def params(c):
    return dict(kernel_size=c["kernel_size"], stride=c["stride"], padding=c["padding"])


def torch_F():
    return pytest.importorskip("torch").nn.functional


def max_by(source, c, x):
    """(y, indices) by ``source``, y in the dtype of x."""
    if source == "reference":
        return reference.max_pool2d(x, **params(c), return_indices=True)
    if source == "oracle":
        y, idx = oracle.max_pool2d(x, **params(c))
        return y.astype(x.dtype), idx
    import torch

    y, idx = torch_F().max_pool2d(torch.from_numpy(x), **params(c), return_indices=True)
    return y.numpy(), idx.numpy()


def max_backward_by(source, c, g, x, idx):
    g64 = g.astype(np.float64)
    if source == "reference":
        return reference.max_pool2d_backward(g64, idx, x.shape)
    if source == "oracle":
        return oracle.max_pool2d_backward(g64, idx, x.shape)
    import torch

    F = torch_F()
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    F.max_pool2d(xt, **params(c)).backward(torch.from_numpy(g64))
    return xt.grad.numpy()


def avg_by(source, c, x, cip):
    x64 = x.astype(np.float64)
    if source == "reference":
        return reference.avg_pool2d(x64, **params(c), count_include_pad=cip)
    if source == "oracle":
        return oracle.avg_pool2d(x64, **params(c), count_include_pad=cip)
    import torch

    return torch_F().avg_pool2d(torch.from_numpy(x64), **params(c),
                                count_include_pad=cip).numpy()


def avg_backward_by(source, c, g, shape, cip):
    g64 = g.astype(np.float64)
    if source == "reference":
        return reference.avg_pool2d_backward(g64, shape, **params(c), count_include_pad=cip)
    if source == "oracle":
        return oracle.avg_pool2d_backward(g64, shape, **params(c), count_include_pad=cip)
    import torch

    F = torch_F()
    xt = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    F.avg_pool2d(xt, **params(c), count_include_pad=cip).backward(torch.from_numpy(g64))
    return xt.grad.numpy()


def pool_shape(c):
    return reference.avg_pool2d(np.zeros((1, 1) + c["x"][2:]), **params(c)).shape[2:]


# --------------------------------------------------------------------------
# max_pool2d
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, source", GRID)
def test_max_pool2d(name, source, dtype, rng):
    c = ALL[name]
    x = rng.standard_normal(c["x"]).astype(dtype)
    y, idx = fastconv.max_pool2d(x, **params(c), return_indices=True)
    want_y, want_idx = max_by(source, c, x)
    assert y.dtype == dtype and idx.dtype == np.int64
    # no arithmetic happens in a max: the values are exact copies
    np.testing.assert_array_equal(y, want_y, err_msg=f"max_pool2d {name} vs {source}")
    np.testing.assert_array_equal(idx, want_idx, err_msg=f"indices {name} vs {source}")
    y_only = fastconv.max_pool2d(x, **params(c))
    assert isinstance(y_only, np.ndarray)
    np.testing.assert_array_equal(y_only, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, source", GRID)
def test_max_pool2d_backward(name, source, dtype, rng):
    c = ALL[name]
    x = rng.standard_normal(c["x"]).astype(dtype)
    _, idx = fastconv.max_pool2d(x, **params(c), return_indices=True)
    g = rng.standard_normal(idx.shape).astype(dtype)
    gx = fastconv.max_pool2d_backward(g, idx, x.shape)
    assert_close(gx, max_backward_by(source, c, g, x, idx), dtype,
                 f"max_pool2d_backward {name} vs {source}")


# --------------------------------------------------------------------------
# avg_pool2d
# --------------------------------------------------------------------------

@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, source", GRID)
def test_avg_pool2d(name, source, dtype, count_include_pad, rng):
    c = ALL[name]
    x = rng.standard_normal(c["x"]).astype(dtype)
    y = fastconv.avg_pool2d(x, **params(c), count_include_pad=count_include_pad)
    assert_close(y, avg_by(source, c, x, count_include_pad), dtype,
                 f"avg_pool2d {name} vs {source}")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, source", GRID)
def test_avg_pool2d_backward(name, source, dtype, count_include_pad, rng):
    c = ALL[name]
    g = rng.standard_normal(c["x"][:2] + pool_shape(c)).astype(dtype)
    gx = fastconv.avg_pool2d_backward(g, c["x"], **params(c),
                                      count_include_pad=count_include_pad)
    assert_close(gx, avg_backward_by(source, c, g, c["x"], count_include_pad), dtype,
                 f"avg_pool2d_backward {name} vs {source}")


def test_avg_pool2d_defaults_count_the_padding():
    x = np.ones((1, 1, 2, 2))
    # each 2x2 window at stride 1 with padding 1 holds exactly one real pixel
    y = fastconv.avg_pool2d(x, 2, 2, 1)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 0.25))
    y = fastconv.avg_pool2d(x, 2, 2, 1, count_include_pad=False)
    np.testing.assert_array_equal(y, np.ones((1, 1, 2, 2)))


# --------------------------------------------------------------------------
# Central differences (float64)
# --------------------------------------------------------------------------

GRADCHECK = {
    "3x3_s2_p1": case((1, 2, 5, 5), 3, 2, 1),
    "overlapping": case((2, 1, 4, 5), 3, 1, 1),
    "nonsquare": case((1, 2, 4, 6), (2, 3), (1, 2), (1, 1)),
    "global": case((1, 2, 3, 4), (3, 4)),
}


@pytest.mark.parametrize("impl", ["fastconv", "reference"])
@pytest.mark.parametrize("name", GRADCHECK)
def test_max_pool2d_backward_central_differences(name, impl, rng):
    mod = fastconv if impl == "fastconv" else reference
    c = GRADCHECK[name]
    # distinct values 0.1 apart, so a step of 1e-3 never reorders a window
    x = rng.permutation(np.prod(c["x"])).reshape(c["x"]) * 0.1
    y, idx = mod.max_pool2d(x, **params(c), return_indices=True)
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(r * mod.max_pool2d(x, **params(c))))

    np.testing.assert_allclose(mod.max_pool2d_backward(r, idx, x.shape),
                               numerical_grad(loss, x, 1e-3),
                               rtol=oracle.GRADCHECK_RTOL, atol=oracle.GRADCHECK_RTOL)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("impl", ["fastconv", "reference"])
@pytest.mark.parametrize("name", GRADCHECK)
def test_avg_pool2d_backward_central_differences(name, impl, count_include_pad, rng):
    mod = fastconv if impl == "fastconv" else reference
    c = GRADCHECK[name]
    kw = dict(params(c), count_include_pad=count_include_pad)
    x = rng.standard_normal(c["x"])
    r = rng.standard_normal(c["x"][:2] + pool_shape(c))

    def loss():
        return float(np.sum(r * mod.avg_pool2d(x, **kw)))

    np.testing.assert_allclose(mod.avg_pool2d_backward(r, x.shape, **kw),
                               numerical_grad(loss, x, 1e-3),
                               rtol=oracle.GRADCHECK_RTOL, atol=oracle.GRADCHECK_RTOL)


# --------------------------------------------------------------------------
# Tie rule: the first maximum in raster order wins
# --------------------------------------------------------------------------

IMPLS = ["fastconv", "reference", "oracle", "torch"]


def max_pool(impl, x, kernel_size, stride=None, padding=0):
    if impl == "fastconv":
        return fastconv.max_pool2d(x, kernel_size, stride, padding, return_indices=True)
    return max_by(impl, case(x.shape, kernel_size, stride, padding), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_max_pool2d_ties_go_to_first_in_raster_order(impl, dtype):
    x = np.array([[1, 3, 3],
                  [3, 2, 0],
                  [0, 3, 1]], dtype=dtype)[None, None]
    y, idx = max_pool(impl, x, 2, 1)
    np.testing.assert_array_equal(y[0, 0], [[3, 3], [3, 3]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 1], [3, 7]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_max_pool2d_constant_input_picks_first_real_pixel(impl, dtype):
    # padding never wins a tie: with padding 1 the first pixel of each window
    # is padding, and the first *real* pixel must be reported
    x = np.full((2, 3, 5, 4), 7.0, dtype=dtype)
    y, idx = max_pool(impl, x, 3, 2, 1)
    W = 4
    want = np.array([[max(2 * i - 1, 0) * W + max(2 * j - 1, 0) for j in range(2)]
                     for i in range(3)])
    np.testing.assert_array_equal(y, np.full((2, 3, 3, 2), 7.0))
    np.testing.assert_array_equal(idx, np.broadcast_to(want, idx.shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_max_pool2d_all_minus_inf_window(impl, dtype):
    x = np.full((1, 1, 3, 3), -np.inf, dtype=dtype)
    y, idx = max_pool(impl, x, 3, 1, 1)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])


@pytest.mark.parametrize("impl", IMPLS)
def test_max_pool2d_signed_zero_tie_keeps_first(impl):
    # -0.0 == 0.0, so the first one wins and its sign bit survives
    x = np.array([[[[-0.0, 0.0], [0.0, -0.0]]]])
    y, idx = max_pool(impl, x, 2)
    assert idx[0, 0, 0, 0] == 0 and np.signbit(y[0, 0, 0, 0])
    y, idx = max_pool(impl, -x, 2)
    assert idx[0, 0, 0, 0] == 0 and not np.signbit(y[0, 0, 0, 0])


# --------------------------------------------------------------------------
# NaN rule: a NaN in the window wins
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [(0, 0), (0, 2), (2, 1), (2, 2)])
@pytest.mark.parametrize("impl", IMPLS)
def test_max_pool2d_nan_wins(impl, where, dtype):
    x = np.arange(36, dtype=dtype).reshape(1, 1, 6, 6)
    x[0, 0, 5, 5] = np.inf  # a NaN must beat +inf too
    x[0, 0, 3 + where[0], 3 + where[1]] = np.nan  # in the last 3x3 window only
    y, idx = max_pool(impl, x, 3)
    assert np.isnan(y[0, 0, 1, 1])
    assert idx[0, 0, 1, 1] == (3 + where[0]) * 6 + 3 + where[1]
    # the other windows are untouched
    assert not np.isnan(y[0, 0].ravel()[:3]).any()
    np.testing.assert_array_equal(idx[0, 0].ravel()[:3], [14, 17, 32])


@pytest.mark.parametrize("impl", IMPLS)
def test_max_pool2d_several_nans_report_the_last(impl):
    # design.md only says NaN propagates; PyTorch's loop (val > max || isnan(val))
    # lets every NaN take over, so the last one is reported, and fastconv follows.
    x = np.array([[[[1.0, np.nan, 5.0], [np.nan, 2.0, 7.0]]]])
    y, idx = max_pool(impl, x, 2, 1)
    assert np.isnan(y[0, 0, 0]).all()
    np.testing.assert_array_equal(idx[0, 0, 0], [3, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool2d_nan_propagates(dtype):
    x = np.ones((1, 1, 4, 4), dtype=dtype)
    x[0, 0, 0, 0] = np.nan
    y = fastconv.avg_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0])
    np.testing.assert_array_equal(y[0, 0].ravel()[1:], [1, 1, 1])


# --------------------------------------------------------------------------
# The reference and the oracle on their own
# --------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["oracle", "torch"])
@pytest.mark.parametrize("name", SMALL)
def test_reference_pools(name, source, rng):
    c = SMALL[name]
    x = rng.standard_normal(c["x"])
    y, idx = reference.max_pool2d(x, **params(c), return_indices=True)
    want_y, want_idx = max_by(source, c, x)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    g = rng.standard_normal(y.shape)
    assert_close(reference.max_pool2d_backward(g, idx, x.shape),
                 max_backward_by(source, c, g, x, idx), np.float64, name)
    for cip in (True, False):
        assert_close(reference.avg_pool2d(x, **params(c), count_include_pad=cip),
                     avg_by(source, c, x, cip), np.float64, name)
        assert_close(reference.avg_pool2d_backward(g, x.shape, **params(c),
                                                   count_include_pad=cip),
                     avg_backward_by(source, c, g, x.shape, cip), np.float64, name)


@pytest.mark.parametrize("name", ALL)
def test_oracle_pools_vs_torch(name, rng):
    c = ALL[name]
    x = rng.standard_normal(c["x"])
    y, idx = oracle.max_pool2d(x, **params(c))
    want_y, want_idx = max_by("torch", c, x)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    g = rng.standard_normal(y.shape)
    assert_close(oracle.max_pool2d_backward(g, idx, x.shape),
                 max_backward_by("torch", c, g, x, idx), np.float64, name)
    for cip in (True, False):
        assert_close(oracle.avg_pool2d(x, **params(c), count_include_pad=cip),
                     avg_by("torch", c, x, cip), np.float64, name)
        assert_close(oracle.avg_pool2d_backward(g, x.shape, **params(c),
                                                count_include_pad=cip),
                     avg_backward_by("torch", c, g, x.shape, cip), np.float64, name)


def test_reference_max_pool2d_out_and_dtype():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = reference.max_pool2d(x, 2)
    assert y.dtype == np.float32
    buf = (np.empty_like(y), np.empty(y.shape, np.int64))
    got = reference.max_pool2d(x, 2, return_indices=True, out=buf)
    assert got[0] is buf[0] and got[1] is buf[1]
    np.testing.assert_array_equal(buf[1][0, 0], [[5, 7], [13, 15]])


# --------------------------------------------------------------------------
# Past 2**31 elements in one plane (opt in: -m large; ~9 GiB)
# --------------------------------------------------------------------------

@pytest.mark.large
def test_max_pool2d_indices_past_2_31():
    """Flat indices h*W + w beyond 2**31 must not wrap (int64 all the way)."""
    H, W = 46341, 46344  # H*W = 2_147_627_304 > 2**31
    x = np.zeros((1, 1, H, W), np.float32)
    x[0, 0, -1, -1] = 5.0
    x[0, 0, -2, -4] = 4.0
    y, idx = fastconv.max_pool2d(x, 4, return_indices=True)  # floor drops the last row
    assert y.shape == (1, 1, H // 4, W // 4)
    # the last full window covers rows H-5..H-2 (H = 4*11585 + 1)
    assert y[0, 0, -1, -1] == 4.0
    assert idx[0, 0, -1, -1] == (H - 2) * W + (W - 4)
    assert idx[0, 0, -1, -1] > 2**31
    g = np.zeros(y.shape, np.float32)
    g[0, 0, -1, -1] = 1.5
    del x
    gx = fastconv.max_pool2d_backward(g, idx, (1, 1, H, W))
    assert gx[0, 0, -2, -4] == 1.5
    gx[0, 0, -2, -4] = 0
    assert not gx[0, 0, -8:].any()
