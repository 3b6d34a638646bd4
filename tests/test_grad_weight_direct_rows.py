"""grad_weight's direct-rows variant (fc_conv_grad_weight_impl.h, dw_block_direct): im2col's bits.

Where groups is 1, dilation along w is 1 and kw * C is a multiple of every
micro-kernel tile width in use, the packed route reads each patch row in place
from per-block NHWC rows instead of from an im2col copy of a whole-input NHWC
copy. Per weight its arithmetic is meant to be the copying variant's; the
oracle is that variant, forced with ``set_route_override("dw_direct_rows", 0)``,
and both are checked against the plain-loop reference.
"""

import numpy as np
import pytest

import fastconv
from fastconv import reference
from fastconv import functional as F

# (x shape, weight shape, stride, padding, dilation), all with 64 input channels
# and kw = 3 (kw * C = 192: a multiple of every tile width at every level and
# dtype, with the tail panels of 12 and 14 output channels): bench shape h's
# layer ('same', stride 2) and e's (stride 1); odd sizes; a block of pixels
# that spans many rows (a narrow output); dilation along h; kh 1 and 5;
# padding per side; more images than chunks and a last block of one pixel
CASES = [
    ((2, 64, 16, 16), (16, 64, 3, 3), 2, "same", 1),
    ((2, 64, 11, 13), (12, 64, 3, 3), 1, 1, 1),
    ((3, 64, 40, 4), (14, 64, 3, 3), (1, 2), 1, 1),
    ((2, 64, 13, 9), (8, 64, 3, 3), 1, 1, (2, 1)),
    ((2, 64, 9, 10), (13, 64, 1, 3), 2, 0, 1),
    ((2, 64, 12, 9), (10, 64, 5, 3), (2, 1), ((1, 3), (0, 2)), 1),
    ((9, 64, 17, 17), (16, 64, 3, 3), 1, 0, 1),
]


def _grad_weight(gy, x, w, stride, padding, dilation):
    return F.conv2d_backward(gy, x, w, stride=stride, padding=padding, dilation=dilation,
                             output_mask=(False, True, True))[1:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, stride, padding, dilation", CASES)
def test_direct_rows_give_the_im2col_bits(simd, route_override, xs, ws, stride, padding,
                                          dilation, dtype):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gy[gy < -1.5] = 0  # exact zeros (ReLU masks)
    route_override("dw_direct_rows", 0)
    gw_copy, gb_copy = _grad_weight(gy, x, w, stride, padding, dilation)
    route_override("dw_direct_rows", None)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        gw, gb = _grad_weight(gy, x, w, stride, padding, dilation)
        assert gw.tobytes() == gw_copy.tobytes()
        assert gb.tobytes() == gb_copy.tobytes()
    _, want, want_b = reference.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                                w.astype(np.float64), stride=stride,
                                                padding=padding, dilation=dilation)
    np.testing.assert_allclose(gw, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(gb, want_b, rtol=1e-4, atol=1e-4 * np.abs(want_b).max())
