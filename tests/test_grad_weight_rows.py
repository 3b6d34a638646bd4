"""grad_weight's dot route with 3-row tiles (csrc/fc_conv_grad_weight.c): the 4-row bits.

Where 3-row tiles pad fewer output channels than the table kernel's 4 (6
channels: 6 rows, not 8) and the 5 offsets of every call are one kernel row,
the AVX-512 float32 dot route runs a 3-row kernel. A weight's chain does not
depend on the tile height, so the oracle is the 4-row route, forced with
``set_route_override("dw_dot_rows", 4)``; both are also checked against the
plain-loop reference.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, reference
from fastconv import functional as F

from avx512_route import restoring, skip_without_avx512

pytestmark = skip_without_avx512("the kernel")
_restore = restoring("dw_dot_rows")


@pytest.fixture(autouse=True)
def _dot_route():
    """Batches from 12 images take the image-lanes route
    (test_grad_weight_lanes.py); these tests are about the dot route's tiles."""
    _kernels.set_route_override("dw_lanes", 0)
    yield
    _kernels.set_route_override("dw_lanes", None)


# LeNet's conv1; 2, 3, 5 (per group of 2) and 6 output channels per group
# take 3-row tiles, 7 stays on 4 rows; more input channels, kernel heights,
# padding per side, a batch of one
CASES = [
    ((64, 1, 28, 28), (6, 1, 5, 5), 2, 1),
    ((9, 1, 12, 17), (2, 1, 5, 5), 0, 1),
    ((9, 2, 12, 17), (3, 2, 5, 5), 1, 1),
    ((5, 1, 10, 9), (5, 1, 3, 5), ((1, 0), (2, 1)), 1),
    ((3, 4, 9, 21), (10, 2, 2, 5), 0, 2),
    ((1, 1, 7, 7), (7, 1, 5, 5), 2, 1),
]


@pytest.mark.parametrize("xs, ws, padding, groups", CASES)
def test_three_row_tiles_give_the_four_row_bits(xs, ws, padding, groups):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    y = F.conv2d(x, w, padding=padding, groups=groups)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    args = dict(padding=padding, groups=groups, output_mask=(False, True, True))
    _kernels.set_route_override("dw_dot_rows", 4)
    _, gw4, gb4 = F.conv2d_backward(gy, x, w, **args)
    _kernels.set_route_override("dw_dot_rows", None)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        _, gw, gb = F.conv2d_backward(gy, x, w, **args)
        assert gw.tobytes() == gw4.tobytes() and gb.tobytes() == gb4.tobytes()
    want = reference.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                     w.astype(np.float64), padding=padding, groups=groups)[1]
    np.testing.assert_allclose(gw, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
