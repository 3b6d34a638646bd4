"""grad_input's image-lanes route (csrc/fc_conv_grad_input.c): the implicit route's bits.

The route runs for float32 at the AVX-512 level when a layer has 1-8 input
channels (not col2im's), 5 taps per row and stride 1. Its per-element
arithmetic is meant to be the implicit route's, so the oracle is that route
itself, forced with ``set_route_override("dx_lanes_max_c", 0)``; both are
also checked against the plain-loop reference.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, reference
from fastconv import functional as F

from avx512_route import restoring, skip_without_avx512

pytestmark = skip_without_avx512("the route")
_restore = restoring("dx_lanes_max_c")


# (x shape, weight shape, padding): LeNet's conv2 and conv1, every channel count
# the route takes, kernel heights 1-7, batches around the 16 lanes, widths past
# one vector of the write-out, padding per side and 'same', a 1x1 output
CASES = [
    ((64, 6, 14, 14), (16, 6, 5, 5), 0),
    ((4, 1, 28, 28), (6, 1, 5, 5), 2),
    ((17, 5, 9, 12), (7, 5, 3, 5), 1),
    ((16, 7, 11, 10), (3, 7, 1, 5), 0),
    ((15, 8, 8, 23), (9, 8, 7, 5), ((3, 1), (4, 0))),
    ((33, 3, 6, 5), (2, 3, 5, 5), "same"),
    ((1, 2, 5, 5), (4, 2, 5, 5), 0),
    ((2, 4, 13, 40), (5, 4, 2, 5), ((0, 2), (1, 3))),
]


def _grad_input(gy, x, w, padding):
    return F.conv2d_backward(gy, x, w, padding=padding, output_mask=(True, False, False))[0]


@pytest.mark.parametrize("xs, ws, padding", CASES)
def test_lanes_route_gives_the_implicit_routes_bits(xs, ws, padding):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    y = F.conv2d(x, w, padding=padding)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gy[gy < -1.5] = 0  # exact zeros (ReLU masks) among the taps
    _kernels.set_route_override("dx_lanes_max_c", 0)
    implicit = _grad_input(gy, x, w, padding)
    _kernels.set_route_override("dx_lanes_max_c", None)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        lanes = _grad_input(gy, x, w, padding)
        assert lanes.tobytes() == implicit.tobytes()
    want = reference.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                     w.astype(np.float64), padding=padding)[0]
    np.testing.assert_allclose(lanes, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_lanes_route_keeps_nan_and_inf_of_grad_out():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    gy = rng.standard_normal((20, 16, 10, 10)).astype(np.float32)
    gy[3, 2, 4, 5] = np.nan
    gy[17, 0, 0, 0] = np.inf
    _kernels.set_route_override("dx_lanes_max_c", 0)
    implicit = _grad_input(gy, x, w, 0)
    _kernels.set_route_override("dx_lanes_max_c", None)
    lanes = _grad_input(gy, x, w, 0)
    np.testing.assert_array_equal(np.isnan(lanes), np.isnan(implicit))
    assert np.isnan(lanes[3]).any() and not np.isnan(lanes[4]).any()
    finite = np.isfinite(implicit)
    assert lanes[finite].tobytes() == implicit[finite].tobytes()
