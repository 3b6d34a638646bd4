"""Every kernel at every SIMD level the machine supports, against the float64 oracle.

The C side has one SIMD dispatch (csrc/fc_internal.h, ``fc_simd_dispatch``):
every vector path -- micro-kernel tables, loops compiled per level
(``FC_SIMD_PROC``), the Winograd transforms, the optimiser ranges, the 2x2
max-pool row kernel -- runs at the level ``set_simd_level`` chose, and notes
that level. ``_kernels._simd_levels_used(reset=True)`` reads that record, so
these tests can assert that at 'generic' only scalar fallbacks ran (on CI's
AVX-512 machines nothing else would exercise them) and that each result still
matches the oracle.
"""

import numpy as np
import pytest

import oracle

from fastconv import _kernels, optim
from fastconv import functional as F
from fastconv.nn import Parameter

LEVELS = [name for name in ("generic", "avx2", "avx512")
          if ["generic", "avx2", "avx512"].index(name) <= _kernels.simd_supported()]


@pytest.fixture(params=LEVELS)
def level(request):
    previous = F.simd_level()
    previous_wino = F.set_winograd(None)
    assert F.set_simd_level(request.param) == request.param
    _kernels._simd_levels_used(reset=True)
    yield request.param
    F.set_simd_level(previous)
    F.set_winograd(previous_wino)


def ran_only(level, what):
    used = _kernels._simd_levels_used(reset=True)
    assert used == {level}, f"{what} at simd level {level!r} ran vector paths at {sorted(used)}"


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# (x shape, w shape, stride, padding, dilation, groups, route overrides)
CONV_CASES = [
    ((2, 3, 11, 9), (4, 3, 3, 3), 1, 1, 1, 1, {}),
    ((2, 4, 12, 10), (6, 2, 3, 2), 2, (1, 0), (1, 2), 2, {}),
    # col2im grad_input (needs >= 16 output channels per group) and dot-product
    # grad_weight, forced on
    ((2, 1, 14, 14), (16, 1, 5, 5), 1, 2, 1, 1, {"dx_col2im_max_c": 64, "dw_dot_max": 1 << 20}),
    ((3, 2, 9, 8), (16, 2, 3, 3), 2, 1, 1, 1, {"dx_col2im_max_c": 64, "dw_dot_max": 1 << 20}),
    # implicit grad_input and packed grad_weight, forced on
    ((2, 3, 10, 10), (5, 3, 3, 3), 1, 1, 1, 1, {"dx_col2im_max_c": 0, "dw_dot_max": 0}),
    ((1, 2, 7, 5), (3, 2, 1, 1), 1, 0, 1, 1, {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=range(len(CONV_CASES)))
def test_conv_at_every_level(level, case, dtype):
    xs, ws, stride, padding, dilation, groups, routes = case
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, xs, dtype), rand(rng, ws, dtype), rand(rng, ws[:1], dtype)
    F.set_winograd(False)
    for name, value in routes.items():
        _kernels.set_route_override(name, value)
    try:
        y = F.conv2d(x, w, b, stride, padding, dilation, groups)
        ran_only(level, "conv2d")
        oracle.assert_close(y, oracle.conv2d(x, w, b, stride, padding, dilation, groups),
                            dtype, "y")
        gy = rand(rng, y.shape, dtype)
        got = F.conv2d_backward(gy, x, w, stride, padding, dilation, groups)
        ran_only(level, "conv2d_backward")
        want = oracle.conv2d_backward(gy, x, w, stride, padding, dilation, groups)
        for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
            oracle.assert_close(a, e, dtype, name)
    finally:
        for name in routes:
            _kernels.set_route_override(name, None)


@pytest.mark.parametrize("shape,padding", [((2, 3, 14, 14), 2), ((1, 2, 9, 20), 4)])
def test_winograd_at_every_level(level, shape, padding):
    """At 'generic' the input transform is the plain-C loop, not the vector one."""
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, shape, np.float32), rand(rng, (4, shape[1], 5, 5), np.float32), None
    F.set_winograd(True)
    y = F.conv2d(x, w, b, padding=padding)
    gy = rand(rng, y.shape, np.float32)
    got = F.conv2d_backward(gy, x, w, padding=padding)
    assert set(F.info()["last_conv_algorithm"].values()) == {"winograd"}
    ran_only(level, "winograd conv2d")
    # Winograd rounds differently: compare at a few float32 ulps of the scale
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, gy))
    want_y = oracle.conv2d(x64, w64, None, padding=padding)
    np.testing.assert_allclose(y, want_y, atol=1e-4 * max(1.0, np.abs(want_y).max()))
    for a, e in zip(got, oracle.conv2d_backward(gy64, x64, w64, padding=padding)):
        np.testing.assert_allclose(a, e, atol=1e-4 * max(1.0, np.abs(e).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), ((2, 3), 1, (1, 0))])
def test_pooling_at_every_level(level, dtype, kernel, stride, padding):
    rng = np.random.default_rng(3)
    x = rand(rng, (2, 3, 12, 28), dtype)  # continuous values: no ties
    y, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    want_y, want_idx = oracle.max_pool2d(x, kernel, stride, padding)
    oracle.assert_close(y, want_y, dtype, "max y")
    np.testing.assert_array_equal(idx, want_idx)
    gy = rand(rng, y.shape, dtype)
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    oracle.assert_close(gx, oracle.max_pool2d_backward(gy, idx, x.shape), dtype, "max gx")
    a = F.avg_pool2d(x, kernel, stride, padding)
    oracle.assert_close(a, oracle.avg_pool2d(x, kernel, stride, padding), dtype, "avg y")
    ga = F.avg_pool2d_backward(gy, x.shape, kernel, stride, padding)
    oracle.assert_close(ga, oracle.avg_pool2d_backward(gy, x.shape, kernel, stride, padding),
                        dtype, "avg gx")
    ran_only(level, "pooling")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_linear_at_every_level(level, dtype):
    rng = np.random.default_rng(4)
    x = rand(rng, (300, 7), dtype)
    x[0, 0] = np.nan
    y = F.relu(x)
    np.testing.assert_array_equal(y, np.where(x <= 0, 0, x))
    gy = rand(rng, x.shape, dtype)
    np.testing.assert_array_equal(F.relu_backward(gy, y), np.where(y <= 0, 0, gy))
    w, b = rand(rng, (5, 7), dtype), rand(rng, (5,), dtype)
    for rows in (1, 3, 300):  # the narrow and the single-column kernels too
        xs = np.ascontiguousarray(x[:rows])
        xs[np.isnan(xs)] = 0.5
        x64 = xs.astype(np.float64)
        out = F.linear(xs, w, b)
        oracle.assert_close(out, x64 @ w.T.astype(np.float64) + b, dtype, "linear")
        g = rand(rng, out.shape, dtype)
        gx, gw, gb = F.linear_backward(g, xs, w)
        g64 = g.astype(np.float64)
        oracle.assert_close(gx, g64 @ w.astype(np.float64), dtype, "linear gx")
        oracle.assert_close(gw, g64.T @ x64, dtype, "linear gw")
        oracle.assert_close(gb, g64.sum(axis=0), dtype, "linear gb")
    ran_only(level, "relu / linear")


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)),
                                         ("Adam", dict(lr=1e-3, weight_decay=1e-2))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_optimiser_at_every_level(level, name, kwargs, dtype):
    """The fused step equals optim.py's NumPy path bit for bit at every level."""
    rng = np.random.default_rng(5)
    data = [rand(rng, s, dtype) for s in ((33,), (4, 17))]
    grads = [rand(rng, a.shape, dtype) for a in data]
    results = []
    for fused in (True, False):
        ps = [Parameter(a.copy()) for a in data]
        opt = getattr(optim, name)(ps, **kwargs)
        opt.fused = fused
        for _ in range(3):
            opt.zero_grad()
            for p, g in zip(ps, grads):
                p.grad += g
            opt.step()
        if fused:
            ran_only(level, f"fused {name}")
        results.append([p.data for p in ps])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_simd_level_constants_name_the_levels():
    """_kernels.SIMD_LEVELS (from fastconv.h) is what set_simd_level / simd_name use."""
    assert sorted(_kernels.SIMD_LEVELS) == ["avx2", "avx512", "generic"]
    for name, lv in _kernels.SIMD_LEVELS.items():
        assert _kernels.simd_name(lv) == name
    previous = F.simd_level()
    try:
        assert _kernels.set_simd_level(_kernels.SIMD_LEVELS["generic"]) == 0
        assert F.simd_level() == "generic"
    finally:
        F.set_simd_level(previous)
