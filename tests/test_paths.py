"""Every code path the kernels can take, against the plain-loop reference.

The compiled kernels choose a SIMD level at run time (AVX-512, AVX2, generic C)
and, for grad-weight, one of two routes (dot product over the column grid for
small layers, packed GEMM otherwise). A test grid that only ever runs the
default path on the CI machine would leave the others untested, so this file
forces each one.
"""

import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import reference as R

LEVELS = [lv for lv in ("generic", "avx2", "avx512")
          if F._SIMD_NAMES[lv] <= F._SIMD_NAMES[fastconv.info()["simd_supported"]]]

# (N, C, H, W, K, kh, kw, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 9, 11, 4, 3, 3, 1, 1, 1, 1),
    (2, 1, 12, 12, 6, 5, 5, 1, 2, 1, 1),
    (1, 4, 13, 10, 6, 3, 2, 2, 1, 1, 2),
    (1, 3, 15, 15, 5, 7, 7, 2, 3, 1, 1),
    (2, 4, 9, 9, 4, 3, 3, 3, 2, 2, 4),
    (1, 2, 7, 6, 3, 3, 3, 1, (1, 2), (2, 1), 1),
    (1, 8, 6, 6, 16, 3, 3, (2, 3), (1, 0), 1, 2),
    (2, 2, 5, 5, 19, 1, 1, 1, 0, 1, 1),  # M = 19: full panels plus a tail panel
    (1, 2, 3, 3, 2, 3, 3, 1, 4, 1, 1),   # padding larger than the kernel
    # >= 16 output and <= 4 input channels per group: grad-input may go col2im
    (2, 3, 15, 15, 16, 7, 7, 2, 3, 1, 1),
    (1, 2, 9, 8, 16, 3, 3, 2, (1, 2), (2, 1), 1),
    (2, 4, 8, 8, 32, 3, 3, 1, 1, 1, 2),
    (2, 1, 10, 10, 16, 5, 5, 1, 2, 1, 1),
]


@pytest.fixture(params=LEVELS)
def simd(request):
    before = F.simd_level()
    assert F.set_simd_level(request.param) == request.param
    yield request.param
    F.set_simd_level(before)


@pytest.fixture(params=["dot", "gemm"])
def dw_route(request, monkeypatch):
    # FASTCONV_DW_DOT_MAX is read by the C code at each call.
    monkeypatch.setenv("FASTCONV_DW_DOT_MAX", "1000000000" if request.param == "dot" else "0")
    return request.param


@pytest.fixture(params=["implicit", "col2im"])
def dx_route(request, monkeypatch):
    # FASTCONV_DX_COL2IM_MAX_C: input channels per group up to which grad-input
    # uses dcols = W^T gy + col2im (also needs >= 16 output channels per group).
    monkeypatch.setenv("FASTCONV_DX_COL2IM_MAX_C", "0" if request.param == "implicit" else "64")
    return request.param


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_conv_every_path_matches_reference(case, simd, dw_route, dx_route):
    n, c, h, w, k, kh, kw, s, p, d, g = case
    rng = np.random.default_rng(sum(map(hash, map(str, case))) % 2**32)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c // g, kh, kw))
    b = rng.standard_normal(k)
    y = fastconv.conv2d(x, wt, b, s, p, d, g)
    np.testing.assert_allclose(y, R.conv2d(x, wt, b, s, p, d, g), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    got = fastconv.conv2d_backward(gy, x, wt, s, p, d, g)
    want = R.conv2d_backward(gy, x, wt, s, p, d, g)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-11, err_msg=name)


def test_every_path_float32(simd, dw_route):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 14, 14)).astype(np.float32)
    wt = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    y = fastconv.conv2d(x, wt, None, 1, 2)
    y64 = fastconv.conv2d(x.astype(np.float64), wt.astype(np.float64), None, 1, 2)
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-4)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    g32 = fastconv.conv2d_backward(gy, x, wt, 1, 2)
    g64 = fastconv.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                   wt.astype(np.float64), 1, 2)
    for a, e in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-3 * np.abs(e).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (1, 2, 9, 70), (2, 2, 33, 35), (1, 1, 2, 2)])
def test_max_pool_2x2_fast_path_ties_and_nan(simd, shape, dtype):
    """The 2x2/2 max-pool has its own vector code; check its tie and NaN rules."""
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal(shape), 1).astype(dtype)  # rounding makes ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 7), replace=False)] = np.nan
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    ey, eidx = R.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(idx, eidx)


def test_simd_level_is_reported_and_capped():
    info = fastconv.info()
    assert info["simd"] in LEVELS
    # asking for more than the CPU has gives what it has
    before = F.simd_level()
    try:
        assert F.set_simd_level("avx512") == info["simd_supported"]
    finally:
        F.set_simd_level(before)
    with pytest.raises(ValueError, match="set_simd_level: name"):
        F.set_simd_level("sse9")
