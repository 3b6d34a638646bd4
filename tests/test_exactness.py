"""Bit-exact results on real network layers, against an integer oracle.

With small integer inputs every product and every partial sum is an integer far
below 2**24, so float32 and float64 arithmetic is exact in *any* summation
order: the kernels (whatever blocking, SIMD path or thread count) must agree
with an exact oracle bit for bit, not just within a tolerance. The oracle here
works in int64 with ``sliding_window_view`` + ``einsum`` (and a per-tap scatter
for the input gradient), so it shares no arithmetic with fastconv or with
``fastconv.reference``.

The layer list keeps the kernel / stride / padding / channel / groups structure
of LeNet-5, the TensorFlow MNIST CNN, AlexNet, VGG-16 and ResNet-50 (ResNeXt for
a grouped 3x3). The default run shrinks the spatial size (and the widest
channel counts) to stay fast; ``-m slow`` runs the full ImageNet sizes at batch 1.

Average pooling divides, so its inputs are chosen to keep results exact:
forward ``sum / count`` is one correctly rounded division on both sides, and the
backward grad_out is an integer multiple of each window's divisor.
"""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import fastconv

from workloads import fixed_team, parallel_regions

DTYPES = [np.float64, np.float32]
# largest magnitude an exactly representable integer may reach, per dtype
EXACT_LIMIT = {np.float64: 2**53, np.float32: 2**24}
VMAX = 3  # inputs, weights and grad_out are integers in [-VMAX, VMAX]


@pytest.fixture(autouse=True)
def _direct_conv():
    """Pin the direct conv kernels: Winograd's transforms divide (G holds 1/6 and
    1/24), so it is not exact on integer data. tests/test_winograd.py checks it
    against float64 with a stated tolerance instead."""
    previous = fastconv.functional.set_winograd(False)
    yield
    fastconv.functional.set_winograd(previous)


# ----------------------------------------------------------- int64 oracle ---
def _pad4(a, ph, pw, value=0):
    return np.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _conv_windows(xp, kh, kw, s, d):
    win = sliding_window_view(xp, (d * (kh - 1) + 1, d * (kw - 1) + 1), axis=(2, 3))
    return win[:, :, ::s, ::s, ::d, ::d]  # (N, C, Ho, Wo, kh, kw)


def conv_int(x, w, b, s, p, d, g):
    n, c, _, _ = x.shape
    k, cg, kh, kw = w.shape
    win = _conv_windows(_pad4(x, p, p), kh, kw, s, d)
    ho, wo = win.shape[2:4]
    y = np.einsum("ngchwij,gkcij->ngkhw", win.reshape(n, g, cg, ho, wo, kh, kw),
                  w.reshape(g, k // g, cg, kh, kw)).reshape(n, k, ho, wo)
    return y + b[None, :, None, None]


def conv_backward_int(gy, x, w, s, p, d, g):
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    ho, wo = gy.shape[2:]
    win = _conv_windows(_pad4(x, p, p), kh, kw, s, d).reshape(n, g, cg, ho, wo, kh, kw)
    gyg = gy.reshape(n, g, k // g, ho, wo)
    gw = np.einsum("ngchwij,ngkhw->gkcij", win, gyg).reshape(k, cg, kh, kw)
    gb = gy.sum(axis=(0, 2, 3))
    # input gradient: every tap (i, j) scatters grad_out back onto the pixels it read
    gxp = np.zeros((n, g, cg, h + 2 * p, wd + 2 * p), np.int64)
    wg = w.reshape(g, k // g, cg, kh, kw)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * d, j * d
            gxp[:, :, :, r0:r0 + s * (ho - 1) + 1:s, c0:c0 + s * (wo - 1) + 1:s] += \
                np.einsum("ngkhw,gkc->ngchw", gyg, wg[:, :, :, i, j])
    gx = gxp.reshape(n, c, h + 2 * p, wd + 2 * p)[:, :, p:p + h, p:p + wd]
    return gx, gw, gb


def max_pool_int(x, k, s, p):
    """Values and first-in-raster-order argmax (h * W + w) of every window."""
    n, c, h, wd = x.shape
    big = np.iinfo(np.int64).min
    xp = _pad4(x, p, p, value=big)
    pos = _pad4(np.arange(h * wd, dtype=np.int64).reshape(1, 1, h, wd), p, p, value=-1)
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    pwin = sliding_window_view(pos, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    ho, wo = win.shape[2:4]
    flat = win.reshape(n, c, ho, wo, k * k)
    arg = flat.argmax(axis=-1)  # numpy returns the first maximum: the raster-order tie rule
    y = np.take_along_axis(flat, arg[..., None], -1)[..., 0]
    idx = np.take_along_axis(np.broadcast_to(pwin.reshape(1, 1, ho, wo, k * k),
                                             flat.shape), arg[..., None], -1)[..., 0]
    return y, idx


def max_pool_backward_int(gy, idx, shape):
    n, c, h, wd = shape
    gx = np.zeros((n * c, h * wd), np.int64)
    rows = np.repeat(np.arange(n * c), gy[0, 0].size)
    np.add.at(gx, (rows, idx.reshape(-1)), gy.reshape(-1))
    return gx.reshape(shape)


def avg_divisors(h, wd, k, s, p, count_include_pad):
    """(Ho, Wo) window divisors of avg_pool2d."""
    ones = _pad4(np.ones((1, 1, h, wd), np.int64), p, p)
    win = sliding_window_view(ones, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    real = win.sum(axis=(-1, -2))[0, 0]
    return np.full_like(real, k * k) if count_include_pad else real


def avg_pool_sum_int(x, k, s, p):
    win = sliding_window_view(_pad4(x, p, p), (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return win.sum(axis=(-1, -2))


def avg_pool_backward_int(q, shape, k, s, p):
    """Input gradient when grad_out = q * divisor (so grad_out / divisor = q exactly)."""
    n, c, h, wd = shape
    ho, wo = q.shape[2:]
    gxp = np.zeros((n, c, h + 2 * p, wd + 2 * p), np.int64)
    for i in range(k):
        for j in range(k):
            gxp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] += q
    return gxp[:, :, p:p + h, p:p + wd]


# ---------------------------------------------------------------- layers ---
def conv_layer(name, cin, cout, k, s, p, hw, n=2, g=1, d=1, marks=()):
    return pytest.param(dict(cin=cin, cout=cout, k=k, s=s, p=p, hw=hw, n=n, g=g, d=d),
                        id=name, marks=marks)


slow = pytest.mark.slow
# (name, C_in, C_out, kernel, stride, padding, input H=W): the default run keeps
# each layer's kernel/stride/padding/groups and shrinks H=W (and, for the widest
# layers, the channels) so that the whole file runs in seconds.
CONV_LAYERS = [
    # LeNet-5 (fastconv.models.lenet5: conv1 pads 2 on 28x28 MNIST)
    conv_layer("lenet5-conv1", 1, 6, 5, 1, 2, 28, n=4),
    conv_layer("lenet5-conv2", 6, 16, 5, 1, 0, 14, n=4),
    # TensorFlow tutorial MNIST CNN ('same' 5x5 = padding 2)
    conv_layer("mnist_cnn-conv1", 1, 32, 5, 1, 2, 28),
    conv_layer("mnist_cnn-conv2", 32, 64, 5, 1, 2, 14),
    # AlexNet (torchvision): 11x11/4 p2, 5x5 p2, 3x3 p1 x3
    conv_layer("alexnet-conv1-small", 3, 64, 11, 4, 2, 63),
    conv_layer("alexnet-conv2-small", 64, 192, 5, 1, 2, 9),
    conv_layer("alexnet-conv3-small", 192, 384, 3, 1, 1, 6, n=1),
    conv_layer("alexnet-conv4-small", 384, 256, 3, 1, 1, 6, n=1),
    conv_layer("alexnet-conv5-small", 256, 256, 3, 1, 1, 6, n=1),
    # VGG-16: 3x3 p1 everywhere
    conv_layer("vgg-conv1_1-small", 3, 64, 3, 1, 1, 32),
    conv_layer("vgg-conv1_2-small", 64, 64, 3, 1, 1, 16),
    conv_layer("vgg-conv3_2-small", 256, 256, 3, 1, 1, 5, n=1),
    conv_layer("vgg-conv5_3-small", 512, 512, 3, 1, 1, 3, n=1),
    # ResNet-50: 7x7/2 p3 stem, bottleneck 1x1 / 3x3 / 1x1, strided 1x1 downsample,
    # strided 3x3 (v1.5), ResNeXt grouped 3x3 (32 groups)
    conv_layer("resnet50-stem-small", 3, 64, 7, 2, 3, 32),
    conv_layer("resnet50-1x1-reduce-small", 256, 64, 1, 1, 0, 8),
    conv_layer("resnet50-3x3-small", 64, 64, 3, 1, 1, 8),
    conv_layer("resnet50-1x1-expand-small", 64, 256, 1, 1, 0, 8),
    conv_layer("resnet50-downsample-1x1s2-small", 256, 512, 1, 2, 0, 8, n=1),
    conv_layer("resnet50-3x3s2-small", 128, 128, 3, 2, 1, 9),
    conv_layer("resnext50-3x3-g32-small", 128, 128, 3, 1, 1, 8, g=32),
    conv_layer("deeplab-3x3-dilated2-small", 64, 64, 3, 1, 2, 9, d=2),
    # full ImageNet sizes at batch 1
    conv_layer("alexnet-conv1", 3, 64, 11, 4, 2, 224, n=1, marks=slow),
    conv_layer("alexnet-conv2", 64, 192, 5, 1, 2, 27, n=1, marks=slow),
    conv_layer("alexnet-conv3", 192, 384, 3, 1, 1, 13, n=1, marks=slow),
    conv_layer("alexnet-conv4", 384, 256, 3, 1, 1, 13, n=1, marks=slow),
    conv_layer("alexnet-conv5", 256, 256, 3, 1, 1, 13, n=1, marks=slow),
    conv_layer("vgg-conv1_1", 3, 64, 3, 1, 1, 224, n=1, marks=slow),
    conv_layer("vgg-conv2_2", 128, 128, 3, 1, 1, 112, n=1, marks=slow),
    conv_layer("vgg-conv4_3", 512, 512, 3, 1, 1, 28, n=1, marks=slow),
    conv_layer("resnet50-stem", 3, 64, 7, 2, 3, 224, n=1, marks=slow),
    conv_layer("resnet50-layer1-3x3", 64, 64, 3, 1, 1, 56, n=1, marks=slow),
    conv_layer("resnet50-layer1-1x1", 256, 64, 1, 1, 0, 56, n=1, marks=slow),
    conv_layer("resnet50-layer2-downsample", 256, 512, 1, 2, 0, 56, n=1, marks=slow),
    conv_layer("resnet50-layer4-3x3", 512, 512, 3, 1, 1, 7, n=1, marks=slow),
    conv_layer("resnext50-layer1-g32", 128, 128, 3, 1, 1, 56, n=1, g=32, marks=slow),
]


def ints(rng, shape):
    return rng.integers(-VMAX, VMAX + 1, size=shape, dtype=np.int64)


def assert_bitwise(got, want_int, dtype, what):
    assert np.abs(want_int).max(initial=0) < EXACT_LIMIT[dtype], f"{what}: oracle not exact"
    want = want_int.astype(dtype)
    assert got.dtype == dtype and got.shape == want.shape, what
    if got.tobytes() != want.tobytes():
        bad = np.argwhere(got != want)
        i = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} elements differ, first at {i}: "
                             f"got {got[i]!r}, exact {want[i]!r}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("layer", CONV_LAYERS)
def test_conv_layer_exact(layer, dtype, rng):
    L = layer
    x = ints(rng, (L["n"], L["cin"], L["hw"], L["hw"]))
    w = ints(rng, (L["cout"], L["cin"] // L["g"], L["k"], L["k"]))
    b = ints(rng, (L["cout"],))
    geo = dict(stride=L["s"], padding=L["p"], dilation=L["d"], groups=L["g"])
    y = fastconv.conv2d(x.astype(dtype), w.astype(dtype), b.astype(dtype), **geo)
    y_int = conv_int(x, w, b, L["s"], L["p"], L["d"], L["g"])
    assert_bitwise(y, y_int, dtype, "conv2d")
    gy = ints(rng, y_int.shape)
    got = fastconv.conv2d_backward(gy.astype(dtype), x.astype(dtype), w.astype(dtype), **geo)
    want = conv_backward_int(gy, x, w, L["s"], L["p"], L["d"], L["g"])
    for what, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        assert_bitwise(a, e, dtype, what)


POOL_LAYERS = [
    # (name, C, kernel, stride, padding, H=W)
    ("lenet5-pool-2x2s2", 6, 2, 2, 0, 28),
    ("alexnet-pool-3x3s2", 64, 3, 2, 0, 27),
    ("vgg-pool-2x2s2", 64, 2, 2, 0, 32),
    ("resnet50-pool-3x3s2p1", 64, 3, 2, 1, 28),
    ("inception-pool-3x3s1p1", 32, 3, 1, 1, 17),
    ("resnet50-global-7x7", 256, 7, 7, 0, 7),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name, c, k, s, p, hw", POOL_LAYERS, ids=[p[0] for p in POOL_LAYERS])
def test_max_pool_layer_exact(name, c, k, s, p, hw, dtype, rng):
    x = ints(rng, (2, c, hw, hw))  # few distinct values: many ties, exercising the tie rule
    y, idx = fastconv.max_pool2d(x.astype(dtype), k, s, p, return_indices=True)
    y_int, idx_int = max_pool_int(x, k, s, p)
    assert_bitwise(y, y_int, dtype, "max_pool2d")
    np.testing.assert_array_equal(idx, idx_int, err_msg="max_pool2d indices")
    gy = ints(rng, y.shape)
    gx = fastconv.max_pool2d_backward(gy.astype(dtype), idx, x.shape)
    assert_bitwise(gx, max_pool_backward_int(gy, idx_int, x.shape), dtype, "max_pool2d_backward")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name, c, k, s, p, hw", POOL_LAYERS, ids=[p[0] for p in POOL_LAYERS])
def test_avg_pool_layer_exact(name, c, k, s, p, hw, dtype, count_include_pad, rng):
    x = ints(rng, (2, c, hw, hw))
    kw = dict(count_include_pad=count_include_pad)
    y = fastconv.avg_pool2d(x.astype(dtype), k, s, p, **kw)
    div = avg_divisors(hw, hw, k, s, p, count_include_pad)
    # one correctly rounded division of an exact integer sum, as in the oracle
    want = avg_pool_sum_int(x, k, s, p).astype(dtype) / div.astype(dtype)
    assert y.tobytes() == want.astype(dtype).tobytes(), "avg_pool2d"
    q = ints(rng, y.shape)
    gy = q * div  # grad_out / divisor is the integer q exactly
    gx = fastconv.avg_pool2d_backward(gy.astype(dtype), x.shape, k, s, p, **kw)
    assert_bitwise(gx, avg_pool_backward_int(q, x.shape, k, s, p), dtype,
                   "avg_pool2d_backward")


@pytest.mark.parametrize("simd", ["generic", "avx2", "avx512"])
def test_exact_on_every_simd_path_and_thread_count(simd, rng, restore_threads):
    """The same exact answers on each SIMD path (capped at the CPU's) and 1 or 2 threads."""
    from fastconv import functional as F

    before = F.simd_level()
    try:
        F.set_simd_level(simd)
        x = ints(rng, (8, 16, 13, 13))
        w = ints(rng, (24, 16, 3, 3))
        b = ints(rng, (24,))
        gy = ints(rng, (8, 24, 7, 7))
        want = conv_int(x, w, b, 2, 1, 1, 1)
        wantb = conv_backward_int(gy, x, w, 2, 1, 1, 1)
        for threads in (1, 2):
            fastconv.set_num_threads(threads)
            for dtype in DTYPES:
                with fixed_team():
                    y = fastconv.conv2d(x.astype(dtype), w.astype(dtype), b.astype(dtype),
                                        stride=2, padding=1)
                    # 1.4e6 multiply-adds, above the cut-off: the team asked for ran
                    assert fastconv.info()["team"]["threads_last_call"] == (
                        threads if fastconv.openmp_enabled() else 1)
                    regions = parallel_regions()
                    got = fastconv.conv2d_backward(gy.astype(dtype), x.astype(dtype),
                                                   w.astype(dtype), stride=2, padding=1)
                    assert (parallel_regions() > regions) == (
                        threads > 1 and fastconv.openmp_enabled())
                assert_bitwise(y, want, dtype, f"conv2d {simd} {threads}t")
                for a, e in zip(got, wantb):
                    assert_bitwise(a, e, dtype, f"conv2d_backward {simd} {threads}t")
    finally:
        F.set_simd_level(before)


def test_oracle_agrees_with_reference_on_a_small_case(rng):
    """The int64 oracle itself against fastconv.reference (plain loops)."""
    from fastconv import reference

    x, w, b = ints(rng, (2, 4, 7, 6)), ints(rng, (6, 2, 3, 2)), ints(rng, (6,))
    args = dict(stride=2, padding=1, dilation=1, groups=2)
    y = conv_int(x, w, b, 2, 1, 1, 2)
    np.testing.assert_array_equal(y, reference.conv2d(*(a.astype(float) for a in (x, w, b)),
                                                      **args))
    gy = ints(rng, y.shape)
    for a, e in zip(conv_backward_int(gy, x, w, 2, 1, 1, 2),
                    reference.conv2d_backward(gy.astype(float), x.astype(float),
                                              w.astype(float), **args)):
        np.testing.assert_array_equal(a, e)
    yp, ip = max_pool_int(x, 3, 2, 1)
    ry, ri = reference.max_pool2d(x.astype(float), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(yp, ry)
    np.testing.assert_array_equal(ip, ri)
