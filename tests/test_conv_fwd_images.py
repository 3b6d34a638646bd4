"""The direct forward's image-by-image runner (csrc/fc_conv_fwd_impl.h,
run_fwd_images): run_fwd's bits.

With at least two images per thread a task pads one image into its thread's
grid and runs all its column blocks; with fewer, one whole-batch copy and
(image, block, part) tasks (run_fwd). Per element both are meant to make the
same kernel calls. The oracle is each image alone (a batch of one always takes
run_fwd, at one thread as at two), and both are checked against the plain-loop
reference. Shapes: bench shape h's layer (stride 2, 'same', two column blocks),
bench shape e's (stride 1, a reduction past one block of the kernel), output
channels not a multiple of the kernel's rows (a tail panel of another width),
groups, strides 3 and (2, 1), dilation, a 1x1 layer, and the fused 2x2/2 pool.
"""

import numpy as np
import pytest

import fastconv
from fastconv import reference

from test_plan_fused_ops import _conv_geom, fused_and_separate

# (x shape, weight shape, stride, padding, dilation, groups)
CASES = [
    ((4, 64, 24, 24), (128, 64, 3, 3), 2, "same", 1, 1),
    ((4, 64, 20, 20), (64, 64, 3, 3), 1, 1, 1, 1),
    ((5, 13, 9, 11), (600, 13, 3, 3), 1, 1, 1, 1),
    ((4, 7, 17, 15), (12, 7, 3, 2), 2, ((0, 2), (1, 0)), 1, 1),
    ((5, 8, 11, 12), (20, 4, 3, 3), (2, 1), 1, 1, 2),
    ((4, 5, 19, 19), (9, 5, 5, 5), 3, 2, 1, 1),
    ((4, 6, 13, 13), (10, 6, 3, 3), 1, 1, 2, 1),
    ((4, 16, 9, 10), (36, 16, 1, 1), 1, 0, 1, 1),
]
TOL = {np.float32: 1e-4, np.float64: 1e-10}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_batch_is_bitwise_each_image_alone(simd, dtype, case):
    x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        alone = np.concatenate([fastconv.conv2d(x[i:i + 1], w, b, **kw)
                                for i in range(x.shape[0])])
        for nt in (1, 2):  # 2 threads: images (4, 5) and blocks of pairs (2, 3)
            fastconv.set_num_threads(nt)
            for n in (x.shape[0], 2, 3):
                y = fastconv.conv2d(x[:n], w, b, **kw)
                assert y.tobytes() == alone[:n].tobytes(), (nt, n)
    finally:
        fastconv.set_num_threads(before)
    want = reference.conv2d(x, w, b, **kw)
    np.testing.assert_allclose(alone, want, rtol=TOL[dtype], atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_pool_batch_is_bitwise_each_image_alone(dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 6, 30, 33)).astype(dtype)
    w = rng.standard_normal((12, 6, 3, 3)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    geom, out_shape = _conv_geom(x.shape, w.shape, 1, 1, 1)
    got, want = fused_and_separate(x, w, b, geom, out_shape, True, 1)
    assert got.tobytes() == want.tobytes()
    for i in range(x.shape[0]):
        g1, o1 = _conv_geom(x[i:i + 1].shape, w.shape, 1, 1, 1)
        one, _ = fused_and_separate(np.ascontiguousarray(x[i:i + 1]), w, b, g1, o1, True, 1)
        assert one.tobytes() == got[i:i + 1].tobytes(), i
