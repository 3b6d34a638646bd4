"""Ops an inference plan's program fuses (``fastconv/nn/plan.py``): a direct conv
with the 2x2/2 max-pool after it (``fc_conv2d_fwd_maxpool2``: the conv output is
never stored) and a Linear with the ReLU after it.

Each must give the bits of the two kernel calls it replaces: every output
size (the vector code's masked tails), ReLU or not, no bias, NaN with payloads,
-0.0, groups, strides, float32 and float64, every SIMD level, 1 and 2 threads,
and each sample alone and inside a batch.
"""

import numpy as np
import pytest

from fastconv import _kernels
from fastconv import functional as F
from fastconv import nn
from fastconv.nn.plan import InferencePlan
from fastconv.nn.plan_steps import kernel_relu_matches_numpy

from test_inference_plan import layer_path

DTYPES = [np.float32, np.float64]


def _conv_geom(x_shape, w_shape, stride, padding, groups):
    kernel, geom, out_shape = F._conv2d_prepared(x_shape, np.float32, w_shape, stride,
                                                 padding, 1, groups)
    # the direct route, or (LeNet's conv2 on AVX-512) row-Winograd: the geometry is
    # the same, and the tests name the ops they run (OP_CONV, OP_CONV_POOL)
    assert kernel in (_kernels.conv2d_forward, _kernels.conv2d_forward_winograd_rows)
    return geom, out_shape


def _pool_geom(shape):
    n, c, h, w = shape
    return (n, c, h, w, 2, 2, h // 2, w // 2, 2, 2, 0, 0, 0, 0, 1, 1)


def fused_and_separate(x, w, b, geom, out_shape, relu, nthreads):
    """(the fused op's output, the conv kernel then the max-pool kernel's)."""
    dtype = x.dtype
    pooled = out_shape[:2] + (out_shape[2] // 2, out_shape[3] // 2)
    y = np.empty(out_shape, dtype)
    want = np.full(pooled, 7, dtype)
    got = np.full(pooled, 7, dtype)
    f64 = dtype == np.float64
    conv = (_kernels.OP_CONV, f64, 0, 1, 4, 5, relu, geom, None)
    pool = (_kernels.OP_MAXPOOL, f64, 1, 2, -1, -1, False, _pool_geom(out_shape), False)
    fused = (_kernels.OP_CONV_POOL, f64, 0, 3, 4, 5, relu, geom, None)
    arrays = [x, y, want, got, w, b]
    _kernels.PlanProgram([conv, pool], 6).run(arrays, [0, 0], nthreads)
    _kernels.PlanProgram([fused], 6).run(arrays, [0], nthreads)
    return got, want


@pytest.fixture(params=["generic", "avx2", "avx512"])
def simd(request):
    previous = F.simd_level()
    if F.set_simd_level(request.param) != request.param:
        F.set_simd_level(previous)
        pytest.skip(f"no {request.param} on this CPU")
    yield request.param
    F.set_simd_level(previous)


def special_values(rng, shape, dtype):
    """Normal values with -0.0, +-inf and NaNs of different payloads and signs."""
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
    if dtype == np.float32:
        nans = np.array([0x7FC00001, 0xFFC00002, 0x7FC00003], np.uint32).view(np.float32)
    else:
        nans = np.array([0x7FF8000000000001, 0xFFF8000000000002, 0x7FF8000000000003],
                        np.uint64).view(np.float64)
    vals = np.concatenate([nans, np.array([-0.0, np.inf, -np.inf], dtype)])
    flat[idx] = np.resize(vals, idx.size)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
def test_conv_pool_is_bitwise_conv_then_pool(simd, dtype, relu):
    """Output widths 1..40 (vector bodies and every tail), odd heights and widths
    (the last conv row / column is read by no window), no bias, NaN, -0.0."""
    rng = np.random.default_rng(3)
    for wo in list(range(1, 12)) + [31, 32, 33, 40]:
        for hi in (3, 6):
            x = special_values(rng, (2, 3, hi + 2, wo + 2), dtype)
            w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
            w[0, 0, 0, 0] = -0.0
            b = None if wo % 3 == 0 else rng.standard_normal(4).astype(dtype)
            geom, out_shape = _conv_geom(x.shape, w.shape, 1, 0, 1)
            for nt in (1, 2):
                got, want = fused_and_separate(x, w, b, geom, out_shape, relu, nt)
                assert got.tobytes() == want.tobytes(), (wo, hi, nt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_pool_strided_padded_grouped(dtype):
    """Geometries the direct route handles: stride 2, per-side padding, groups;
    many row blocks per image (the fused pool cuts rows in even blocks)."""
    rng = np.random.default_rng(4)
    cases = [((2, 4, 30, 29), (6, 2, 3, 3), 1, 1, 2),
             ((1, 2, 19, 23), (5, 2, 5, 5), 2, 2, 1),
             ((3, 1, 70, 66), (2, 1, 3, 3), 1, ((2, 1), (0, 3)), 1),
             ((1, 3, 2, 2), (2, 3, 1, 1), 1, 0, 1)]
    for xs, ws, stride, pad, groups in cases:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        geom, out_shape = _conv_geom(xs, ws, stride, pad, groups)
        for relu in (False, True):
            for nt in (1, 2):
                got, want = fused_and_separate(x, w, b, geom, out_shape, relu, nt)
                assert got.tobytes() == want.tobytes(), (xs, ws, relu, nt)


def pool_net(dtype, pool, relu=True, seed=0):
    rng = np.random.default_rng(seed)
    kw = {"rng": rng, "dtype": dtype}
    layers = [nn.Conv2d(1, 5, 3, padding=1, **kw)]
    if relu:
        layers.append(nn.ReLU())
    layers += [pool, nn.Conv2d(5, 4, 3, **kw), nn.MaxPool2d(2), nn.Flatten()]
    return nn.Sequential(layers)


def _fused_ops(plan):
    return len(plan._unused)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool,relu,fused", [
    (lambda: nn.MaxPool2d(2), True, 2),
    (lambda: nn.MaxPool2d(2), False, 2),
    (lambda: nn.MaxPool2d(2, ceil_mode=True), True, 1),   # a window past the edge
    (lambda: nn.MaxPool2d(3, stride=2), True, 1),
    (lambda: nn.MaxPool2d(2, padding=1), True, 1),
    (lambda: nn.MaxPool2d(2, dilation=2), True, 1),
    (lambda: nn.AvgPool2d(2), True, 1),
])
def test_plan_fuses_only_2x2_pools_and_keeps_bits(dtype, pool, relu, fused):
    """The plan fuses the pools the kernel computes (and nothing else), its
    output is bitwise the layer path's, per sample for any batch and thread count."""
    model = pool_net(dtype, pool(), relu).eval()
    rng = np.random.default_rng(5)
    x = special_values(rng, (5, 1, 15, 17), dtype)
    plan = InferencePlan(model, x.shape, x.dtype)
    assert plan.program is not None and _fused_ops(plan) == fused
    want = layer_path(model, x)
    previous = F.get_num_threads()
    for nt in (1, 2):
        F.set_num_threads(nt)
        try:
            assert model.forward(x).tobytes() == want.tobytes(), nt
            for i in range(len(x)):
                assert model.forward(x[i:i + 1]).tobytes() == want[i:i + 1].tobytes(), (nt, i)
        finally:
            F.set_num_threads(previous)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_relu_is_bitwise_the_relu_layer(dtype):
    """Linear -> ReLU in one op: NumPy's bits below the ReLU layer's kernel size
    (the plan checks once that the compiled ReLU agrees with np.maximum)."""
    assert kernel_relu_matches_numpy()
    rng = np.random.default_rng(6)
    kw = {"rng": rng, "dtype": dtype}
    model = nn.Sequential([nn.Linear(9, 33, **kw), nn.ReLU(), nn.Linear(33, 17, **kw),
                           nn.ReLU()]).eval()
    model.layers[0].bias.data[:5] = -model.layers[0].weight.data[:5].sum(1)  # exact zeros
    for n in (1, 3, 40):
        x = special_values(rng, (n, 9), dtype)
        x[:, :] = np.where(np.arange(9) < 4, x, 1.0)
        plan = InferencePlan(model, x.shape, x.dtype)
        assert plan.program is not None and len(plan._relu_fused) == 2
        assert model.forward(x).tobytes() == layer_path(model, x).tobytes(), n


def _wino_geom(x_shape, w_shape, padding):
    from fastconv import _routes
    previous = _routes.set_winograd(True)
    try:
        kernel, geom, out_shape = F._conv2d_prepared(x_shape, np.float32, w_shape, 1, padding,
                                                     1, 1)
    finally:
        _routes.set_winograd(previous)
    assert kernel is _kernels.conv2d_forward_winograd
    return geom, out_shape


@pytest.mark.parametrize("relu", [False, True])
def test_winograd_pool_is_bitwise_winograd_then_pool(simd, relu):
    """Each F(2x2, 5x5) tile is one window: odd heights and widths (a cut tile is
    in no window), narrow rows (tile rows in pairs, also across images) and wide
    ones (several lane groups), batches of 1-3, the weights transformed on the
    call and kept (variants 0 and 1), NaN and -0.0, 1 and 2 threads."""
    rng = np.random.default_rng(7)
    for ho, wo in [(1, 1), (2, 2), (3, 5), (5, 3), (7, 7), (14, 14), (9, 17), (4, 33),
                   (6, 40), (11, 2)]:
        for n in (1, 2, 3):
            x = special_values(rng, (n, 3, ho, wo), np.float32)
            w = rng.standard_normal((5, 3, 5, 5)).astype(np.float32)
            b = None if (ho + wo) % 4 == 0 else rng.standard_normal(5).astype(np.float32)
            geom, out_shape = _wino_geom(x.shape, w.shape, 2)
            # variant 1 reads the plan's kept copy: U followed by its packing
            # (a bare U would be read past its end)
            u = np.empty(_kernels.winograd_packed_len(geom), np.float32)
            _kernels.winograd_weights(w, 1, u[:36 * 5 * 3].reshape(36, 5, 3))
            _kernels.winograd_pack(u, geom)
            pooled = out_shape[:2] + (out_shape[2] // 2, out_shape[3] // 2)
            y = np.empty(out_shape, np.float32)
            for variant, wt in ((0, w), (1, u)):
                for nt in (1, 2):
                    want = np.full(pooled, 7, np.float32)
                    got = np.full(pooled, 7, np.float32)
                    arrays = [x, y, want, got, wt, b]
                    conv = (_kernels.OP_WINO, False, 0, 1, 4, 5, relu, geom, None)
                    pool = (_kernels.OP_MAXPOOL, False, 1, 2, -1, -1, False,
                            _pool_geom(out_shape), False)
                    fused = (_kernels.OP_WINO_POOL, False, 0, 3, 4, 5, relu, geom, None)
                    _kernels.PlanProgram([conv, pool], 6).run(arrays, [variant, 0], nt)
                    _kernels.PlanProgram([fused], 6).run(arrays, [variant], nt)
                    assert got.tobytes() == want.tobytes(), (ho, wo, n, variant, nt)


def test_mnist_cnn_plan_fuses_both_pools():
    """The MNIST CNN's two conv -> ReLU -> pool stages (direct, then Winograd)
    and its Linear -> ReLU each run as one op, with the layer path's bits."""
    from fastconv import models
    model = models.mnist_cnn(seed=0).eval()
    x = special_values(np.random.default_rng(8), (3, 1, 28, 28), np.float32)
    plan = InferencePlan(model, x.shape, x.dtype)
    assert plan._unused == [0, 2] and len(plan._relu_fused) == 1
    assert plan.run(x).tobytes() == layer_path(model, x).tobytes()


@pytest.mark.parametrize("relu", [False, True])
def test_conv_pool_on_a_lanes_sized_batch(simd, relu):
    """A LeNet-shaped conv (5x5, few input channels) at batches the forward's
    image-lanes route takes on its own (whole blocks of 16 images): the fused
    op must not hand the pooled buffer to that route, which writes the full conv
    output (it did once, and wrote past the buffer); the route pools in its lanes."""
    rng = np.random.default_rng(11)
    # LeNet's conv1 and conv2; an odd 9x9 output (its last row and column are in
    # no window) over 28 images (one whole block, the rest on the implicit route)
    for n, c, hw, k, pad in ((32, 1, 28, 6, 2), (48, 6, 14, 16, 0), (28, 3, 13, 9, 0)):
        x = special_values(rng, (n, c, hw, hw), np.float32)
        w = rng.standard_normal((k, c, 5, 5)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        geom, out_shape = _conv_geom(x.shape, w.shape, 1, pad, 1)
        for nt in (1, 2):
            got, want = fused_and_separate(x, w, b, geom, out_shape, relu, nt)
            assert got.tobytes() == want.tobytes(), (n, c, nt)
