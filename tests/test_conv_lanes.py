"""conv2d forward's image-lanes route (csrc/fc_conv_fwd.c): the implicit route's bits.

The route runs for float32 at the AVX-512 level when a layer has 1-8 input
channels, 5 taps per row and stride 1 (LeNet's conv1 and conv2). The oracle is the
implicit route itself, forced with ``set_route_override("fwd_lanes_max_c", 0)``,
and the plain-loop reference.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, reference
from fastconv import functional as F

from avx512_route import restoring, skip_without_avx512

pytestmark = skip_without_avx512("the route")
_restore = restoring("fwd_lanes_max_c")


# LeNet's conv2, every input-channel count the route takes, output channels
# past one block of 8, kernel heights 1-7, batches around the 16 lanes,
# outputs wider than a vector, padding per side and 'same', a 1x1 output
CASES = [
    ((64, 6, 14, 14), (16, 6, 5, 5), 0),
    ((20, 1, 28, 28), (6, 1, 5, 5), 2),
    ((17, 2, 9, 12), (3, 2, 3, 5), 1),
    ((16, 7, 11, 10), (9, 7, 1, 5), 0),
    ((15, 8, 8, 23), (17, 8, 7, 5), ((3, 1), (4, 0))),
    ((33, 3, 6, 5), (2, 3, 5, 5), "same"),
    ((1, 4, 5, 5), (4, 4, 5, 5), 0),
    ((2, 5, 13, 40), (5, 5, 2, 5), ((0, 2), (1, 3))),
]


@pytest.mark.parametrize("xs, ws, padding", CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [None, "relu"])
def test_lanes_route_gives_the_implicit_routes_bits(xs, ws, padding, bias, relu):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(np.float32)
    x[x < -1.5] = 0  # exact zeros (a ReLU'd input)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    _kernels.set_route_override("fwd_lanes_max_c", 0)
    implicit = F.conv2d(x, w, b, padding=padding, activation=relu)
    _kernels.set_route_override("fwd_lanes_max_c", None)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        lanes = F.conv2d(x, w, b, padding=padding, activation=relu)
        assert lanes.tobytes() == implicit.tobytes()
    want = reference.conv2d(x.astype(np.float64), w.astype(np.float64),
                            None if b is None else b.astype(np.float64), padding=padding)
    if relu:
        want = np.maximum(want, 0)
    np.testing.assert_allclose(lanes, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_lanes_route_keeps_nan_through_the_fused_relu():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    x[5, 1, 3, 3] = np.nan
    _kernels.set_route_override("fwd_lanes_max_c", 0)
    implicit = F.conv2d(x, w, activation="relu")
    _kernels.set_route_override("fwd_lanes_max_c", None)
    lanes = F.conv2d(x, w, activation="relu")
    np.testing.assert_array_equal(np.isnan(lanes), np.isnan(implicit))
    assert np.isnan(lanes[5]).any() and not np.isnan(lanes[6]).any()
    finite = np.isfinite(implicit)
    assert lanes[finite].tobytes() == implicit[finite].tobytes()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_weight_gives_the_same_bits_on_every_route(bad):
    """The lanes route skips taps on the zero padding; 0 * inf is NaN on the
    implicit route. A layer with a non-finite weight therefore keeps to the
    implicit route: each image's output is the same for a batch of 32 (lanes
    blocks) and for the image alone (implicit), forward and grad_input."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    w[3, 2, 0, 4] = bad  # a corner tap: it lands on padding for border outputs
    gy = rng.standard_normal((32, 16, 14, 14)).astype(np.float32)
    y = F.conv2d(x, w, padding=2)
    gx = F.conv2d_backward(gy, x, w, padding=2, output_mask=(True, False, False))[0]
    for i in (0, 17, 31):
        y1 = F.conv2d(x[i:i + 1], w, padding=2)
        gx1 = F.conv2d_backward(gy[i:i + 1], x[i:i + 1], w, padding=2,
                                output_mask=(True, False, False))[0]
        assert y[i:i + 1].tobytes() == y1.tobytes(), i
        assert gx[i:i + 1].tobytes() == gx1.tobytes(), i
    assert not np.isfinite(y[:, 3]).any()  # every output of channel 3 meets the bad tap
