"""Every code path the kernels can take, against the plain-loop reference.

The compiled kernels choose a SIMD level at run time (AVX-512, AVX2, generic C)
and, for grad-weight, one of two routes (dot product over the column grid for
small layers, packed GEMM otherwise). A test grid that only ever runs the
default path on the CI machine would leave the others untested, so this file
forces each one.
"""

import numpy as np
import pytest

import oracle

import fastconv
from conftest import SIMD_LEVELS
from fastconv import functional as F
from fastconv import reference as R

from workloads import fixed_team, parallel_regions

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


# the `simd` fixture (every supported SIMD level) is in conftest.py


@pytest.fixture(params=["dot", "gemm"])
def dw_route(request, route_override):
    # grad_weight takes the dot route up to this many weights per group
    route_override("dw_dot_max", 1000000000 if request.param == "dot" else 0)
    return request.param


@pytest.fixture(params=["implicit", "col2im"])
def dx_route(request, route_override):
    # dx_col2im_max_c: input channels per group up to which grad-input uses
    # dcols = W^T gy + col2im (also needs >= 16 output channels per group).
    route_override("dx_col2im_max_c", 0 if request.param == "implicit" else 64)
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
    # the direct kernels' paths (this layer takes row-Winograd on AVX-512 by default:
    # test_winograd_rows.py)
    previous = F.set_winograd(False)
    try:
        _every_path_float32()
    finally:
        F.set_winograd(previous)


def _every_path_float32():
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
    assert info["simd"] in SIMD_LEVELS
    # asking for more than the CPU has gives what it has
    before = F.simd_level()
    try:
        assert F.set_simd_level("avx512") == info["simd_supported"]
    finally:
        F.set_simd_level(before)
    with pytest.raises(ValueError, match="set_simd_level: name"):
        F.set_simd_level("sse9")


@pytest.mark.parametrize("xs, ws, kw", [
    ((1, 5, 4, 4), (10, 5, 2, 1), dict(dilation=(2, 1))),
    ((4, 4, 4, 8), (10, 4, 3, 5), dict(stride=(3, 1), padding=(2, 1), dilation=(2, 2))),
])
def test_regression_grad_weight_tile_overhang(xs, ws, kw, simd, route_override):
    """BUG (found by the reference suite): the packed grad-weight route sized its patch
    rows by the wider kernel's rounding, but a narrower kernel's last tile can reach
    further (10 columns: 8-wide tiles end at 16, 12-wide at 12) and wrote into the next
    row: grad_weight off by ~5 on AVX2 and AVX-512 with 10 output channels."""
    route_override("dw_dot_max", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    g = rng.standard_normal(R.conv2d(x, w, **kw).shape)
    got = fastconv.conv2d_backward(g, x, w, **kw)[1]
    np.testing.assert_allclose(got, R.conv2d_backward(g, x, w, **kw)[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", range(1, 27))
def test_every_row_count_and_tail_kernel(k, simd, dw_route, dx_route):
    """K = 1..26 walks every (full panel, tail panel) kernel pairing at each SIMD level;
    the patch widths 3*2*1=6 and 2*3*3=18 make the last column tiles overhang.
    Checked against the einsum oracle (the loop reference is too slow for 300 cases)."""
    rng = np.random.default_rng(k)
    for c, kh, kw in ((3, 2, 1), (2, 3, 3)):
        x = rng.standard_normal((2, c, 6, 5))
        w = rng.standard_normal((k, c, kh, kw))
        y = fastconv.conv2d(x, w, None, 1, 1)
        np.testing.assert_allclose(y, oracle.conv2d(x, w, None, 1, 1), rtol=1e-12, atol=1e-12)
        g = rng.standard_normal(y.shape)
        got = fastconv.conv2d_backward(g, x, w, 1, 1)
        want = oracle.conv2d_backward(g, x, w, 1, 1)
        for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-11, err_msg=name)


def _thread_runs(fn):
    """fn() on 1, 2, 1, 2 threads; the 2-thread runs must really form teams."""
    before = fastconv.get_num_threads()
    try:
        out = []
        for n in (1, 2, 1, 2):
            fastconv.set_num_threads(n)
            with fixed_team():
                regions = parallel_regions()
                out.append(fn())
                ran_parallel = parallel_regions() > regions
            assert ran_parallel == (n > 1 and fastconv.openmp_enabled()), f"{n} thread(s)"
        return out
    finally:
        fastconv.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_enough_to_run_parallel_is_bitwise_thread_independent(dtype, simd, dw_route,
                                                                   dx_route):
    """Kernels below ~2e5 multiply-adds run on one thread (fc_threads_for), so the
    determinism check needs shapes big enough to really use two threads on every route."""
    rng = np.random.default_rng(5)
    cases = [((6, 3, 20, 18), (16, 3, 5, 5), dict(stride=1, padding=2)),        # col2im dX
             ((4, 8, 16, 16), (12, 4, 3, 3), dict(stride=(2, 1), padding=1, groups=2)),
             ((3, 12, 15, 17), (40, 12, 3, 3), dict(stride=1, padding=1, dilation=2))]
    for xs, ws, kw in cases:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        y = fastconv.conv2d(x, w, None, **kw)
        g = rng.standard_normal(y.shape).astype(dtype)
        runs = _thread_runs(lambda: (fastconv.conv2d(x, w, None, **kw),)
                            + fastconv.conv2d_backward(g, x, w, **kw))
        for r in runs[1:]:
            for a, b in zip(runs[0], r):
                np.testing.assert_array_equal(a, b)
    x = rng.standard_normal((8, 16, 30, 28)).astype(dtype)
    for pool in (lambda: fastconv.max_pool2d(x, 2, return_indices=True),
                 lambda: fastconv.max_pool2d(x, 3, 2, 1, return_indices=True),
                 lambda: (fastconv.avg_pool2d(x, 3, 2, 1),
                          fastconv.avg_pool2d_backward(np.ones((8, 16, 15, 14), dtype),
                                                       x.shape, 3, 2, 1))):
        runs = _thread_runs(pool)
        for r in runs[1:]:
            for a, b in zip(runs[0], r):
                np.testing.assert_array_equal(a, b)


def test_max_pool_indices_out_is_used_and_checked():
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    idx = np.empty((2, 3, 4, 4), np.int64)
    y, got = fastconv.max_pool2d(x, 2, return_indices=True, indices_out=idx)
    assert got is idx
    np.testing.assert_array_equal(idx, R.max_pool2d(x, 2, return_indices=True)[1])
    with pytest.raises(ValueError, match="indices_out must have shape"):
        fastconv.max_pool2d(x, 2, return_indices=True, indices_out=np.empty((2, 3, 4), np.int64))
    with pytest.raises(TypeError, match="indices_out must have dtype int64"):
        fastconv.max_pool2d(x, 2, return_indices=True, indices_out=np.empty((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="only used with return_indices"):
        fastconv.max_pool2d(x, 2, indices_out=idx)


@pytest.mark.parametrize("groups", [2, 4, 16])
def test_regression_grouped_conv_reads_within_its_scratch(groups, simd):
    """BUG (found under ASan by the reliability suite): the read slack after the padded
    copy was sized for group 0, but the last group's channels start (G-1)*C/G planes
    further in, so grouped convolutions read past the allocation (a crash before the
    scratch pool; hidden by it since). Results were right: the extra columns are
    dropped. Checked for correctness here; the sanitizer build checks the reads."""
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((2, 16, 13, 11))
    w = rng.standard_normal((16, 16 // groups, 3, 3))
    y = fastconv.conv2d(x, w, None, 1, 1, 1, groups)
    np.testing.assert_allclose(y, oracle.conv2d(x, w, None, 1, 1, 1, groups), rtol=1e-12,
                               atol=1e-12)
    g = rng.standard_normal(y.shape)
    for a, e in zip(fastconv.conv2d_backward(g, x, w, 1, 1, 1, groups),
                    oracle.conv2d_backward(g, x, w, 1, 1, 1, groups)):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-11)


def test_route_overrides_really_change_the_route(route_override):
    """The forced routes are taken: the dot and packed grad-weight routes (and the
    implicit and col2im grad-input routes) sum in different orders, so float32
    results differ in the last bits; with no override the default returns."""
    from fastconv import _kernels

    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((8, 16, 10, 10)).astype(np.float32)

    def grads():
        gx, gw, _ = fastconv.conv2d_backward(g, x, w)
        return gx, gw

    default = grads()
    route_override("dw_dot_max", 10**9)
    dot = grads()[1]
    route_override("dw_dot_max", 0)
    packed = grads()[1]
    assert not np.array_equal(dot, packed), "dw_dot_max did not switch the grad_weight route"
    route_override("dx_col2im_max_c", 0)
    implicit = grads()[0]
    route_override("dx_col2im_max_c", 64)
    col2im = grads()[0]
    assert not np.array_equal(implicit, col2im), "dx_col2im_max_c did not switch grad_input"
    for name in ("dw_dot_max", "dx_col2im_max_c"):
        _kernels.set_route_override(name, None)
    assert all(np.array_equal(a, b) for a, b in zip(grads(), default))
    with pytest.raises(ValueError, match="set_route_override: name must be one of"):
        _kernels.set_route_override("FASTCONV_DW_DOT_MAX", 0)
