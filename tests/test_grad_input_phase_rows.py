"""grad_input's phase-row runner (csrc/fc_conv_grad_input_impl.h, gi_run_rows): run_jobs's bits.

For groups 1 the implicit route runs every stride phase of an image's column
block in one task, column tile by column tile, and writes whole grad_x rows
(stride 2: the two column phases interleaved; stride 1: one phase). Per
element its arithmetic is meant to be that of run_jobs, which gives each phase
its own tasks; the oracle is that runner itself, forced with
``set_route_override("dx_phase_rows", 0)``, and both are checked against the
plain-loop reference.
"""

import numpy as np
import pytest

import fastconv
from fastconv import reference
from fastconv import functional as F

# (x shape, weight shape, stride, padding, dilation): bench shape h's layer
# (TensorFlow 'same', two column blocks, the second shorter); odd heights and
# widths (an even phase one row / column longer than the odd); strides 3, (2, 1)
# and (1, 2) (the writer of one phase at a time); a stride past the kernel
# (phases no tap lands on); dilation; channels not a multiple of the kernel's
# rows; a grid of several blocks; one pixel per phase; stride 1 (bench shape
# e's layer), with a reduction past one block of the kernel (600 output
# channels x 9 taps) and with dilation; a batch of one (a block per thread)
CASES = [
    ((2, 64, 20, 20), (64, 64, 3, 3), 1, 1, 1),
    ((2, 13, 9, 11), (600, 13, 3, 3), 1, 1, 1),
    ((2, 17, 10, 10), (9, 17, 3, 2), 1, ((0, 2), (1, 0)), (1, 2)),
    ((1, 16, 40, 40), (8, 16, 3, 3), 2, 1, 1),
    ((2, 64, 56, 56), (128, 64, 3, 3), 2, "same", 1),
    ((2, 13, 17, 15), (9, 13, 3, 3), 2, 1, 1),
    ((3, 20, 11, 12), (7, 20, 3, 2), (2, 3), ((0, 1), (1, 0)), 1),
    ((2, 17, 9, 10), (33, 17, 5, 5), 3, 2, 1),
    ((1, 24, 13, 13), (10, 24, 3, 3), 2, 1, 2),
    ((2, 12, 7, 9), (5, 12, 4, 4), 2, "same", 1),
    ((2, 10, 8, 8), (6, 10, 2, 2), 4, 0, 1),
    ((5, 16, 12, 12), (16, 16, 3, 3), (1, 2), 1, 1),
    ((2, 16, 12, 11), (16, 16, 3, 3), (2, 1), 1, 1),
    ((2, 40, 71, 70), (24, 40, 7, 7), 2, 3, 1),
    ((2, 12, 2, 2), (8, 12, 3, 3), 2, 1, 1),
]


def _grad_input(gy, x, w, stride, padding, dilation):
    return F.conv2d_backward(gy, x, w, stride=stride, padding=padding, dilation=dilation,
                             output_mask=(True, False, False))[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, stride, padding, dilation", CASES)
def test_phase_rows_give_run_jobs_bits(simd, route_override, xs, ws, stride, padding, dilation,
                                       dtype):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gy[gy < -1.5] = 0  # exact zeros (ReLU masks) among the taps
    route_override("dx_phase_rows", 0)
    per_phase = _grad_input(gy, x, w, stride, padding, dilation)
    route_override("dx_phase_rows", None)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        rows = _grad_input(gy, x, w, stride, padding, dilation)
        assert rows.tobytes() == per_phase.tobytes()
    want = reference.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                     w.astype(np.float64), stride=stride, padding=padding,
                                     dilation=dilation)[0]
    np.testing.assert_allclose(rows, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

