"""Every route the Python layer chooses for a kernel call, in one place.

A route is which compiled kernel runs a pass; the arithmetic differs between
routes (Winograd rounds differently from the direct convolution), so the choice
is made here from the problem's shape and dtype alone, and recorded for
``fastconv.info()["last_conv_algorithm"]``. Routes chosen inside the C drivers
(col2im or implicit grad-input, dot-product or packed grad-weight, the GEMM
plan) are the C layer's; tests force those through
``_kernels.set_route_override``.

Python routes (pass: routes, rule):

- Linear forward in an inference plan: panels (1 row) / k-major copy of the weight / in place,
  :func:`linear_weight_copy` (same bits either way)

- conv2d forward: winograd (F(2x2, 5x5) for 5x5, F(4x4, 3x3) for 3x3) / winograd_rows
  (row-Winograd F(5, 5), 5x5 layers with few channels) / direct, :func:`winograd_ok`
  then :func:`winograd_rows_ok`
- conv2d grad_input: winograd (the same two) / winograd_rows / direct, the same rules
- conv2d grad_weight (+ grad_bias): winograd (the same two) / winograd_rows / direct,
  ``winograd_ok(..., grad_weight=True)`` then ``winograd_rows_ok(..., grad_weight=True)``
"""

import os
from typing import Dict

import numpy as np

from . import _kernels

__all__ = [
    "set_winograd",
    "winograd_mode",
    "winograd_ok",
    "winograd_rows_ok",
    "conv_forward",
    "conv_grad_input",
    "conv_grad_weight",
    "record",
    "last_algorithms",
    "linear_weight_copy",
]

# None = auto (measured rule in winograd_ok), True = wherever supported, False = never.
_WINOGRAD_ENV = {"": None, "auto": None, "1": True, "on": True, "0": False, "off": False}
_winograd = _WINOGRAD_ENV.get(os.environ.get("FASTCONV_WINOGRAD", "").strip().lower())
# Which algorithm each conv pass ran last ('winograd', 'winograd_rows' or 'direct'); for tests
# and debugging.
_last_algorithm: Dict[str, str] = {}


def set_winograd(mode):
    """Choose when float32 5x5 and 3x3 stride-1 convolutions use the Winograd kernels.

    Parameters
    ----------
    mode : None, True or False
        None (the default, also ``FASTCONV_WINOGRAD=auto``): where measured to
        be faster, per pass. 5x5: forward and grad_input with at least 16 input
        and 16 output channels and 512 channel pairs; grad_weight with at least
        32 of each (its GEMM pads small output-channel counts to the kernel
        width, 48 or 64 on AVX-512). 3x3: forward and grad_input with at least
        16 input and 16 output channels and at least 16 4x4 output tiles per
        image (``ceil(H_out / 4) * ceil(W_out / 4)``: 13x13 outputs and up);
        grad_weight with 32 to 64 input and output channels and at least 49
        tiles per image (25x25 outputs and up). 5x5 layers with fewer channels
        (LeNet-5's conv2, 6 -> 16) run all three passes on the row-Winograd
        F(5, 5) kernels where measured faster (AVX-512 CPUs;
        :func:`winograd_rows_ok`). True
        (``FASTCONV_WINOGRAD=1``): the 2-D kernels for every supported layer.
        False (``FASTCONV_WINOGRAD=0``): never (neither 2-D nor row-Winograd);
        the direct kernels run.

    Supported: float32, 5x5 or 3x3 kernel, stride 1, dilation 1, groups 1,
    padding <= 4 (5x5) or <= 2 (3x3) on every side.
    Winograd F(2x2, 5x5) does 2.78x and F(4x4, 3x3) 4x fewer multiplies; both
    round differently: on N(0, 1) data their results differ from the direct
    kernels by about 1e-5 of the output's largest magnitude (docs/design.md
    has the figures); so does row-Winograd F(5, 5) (1e-5, 2.78x fewer).

    Returns
    -------
    previous : None, True or False
        The mode in force before the call (to restore it).
    """
    global _winograd
    if mode is not None and not isinstance(mode, bool):
        raise TypeError(f"set_winograd: mode must be None, True or False, got {mode!r}")
    previous, _winograd = _winograd, mode
    return previous


def winograd_ok(g, dtype, grad_weight=False):
    """True if this convolution pass should run on the Winograd kernels.

    ``g`` is the checked geometry (``fastconv._geometry.ConvGeom``).

    The 5x5 auto rule is measured (1 thread, AVX-512, batch 64, 14x14 and
    28x28): forward and grad-input gain from 16 -> 32 channels up (16 -> 16 is
    a tie); grad-weight loses below 32 output channels and gains from 32 -> 32
    up.

    The 3x3 rule (F(4x4, 3x3), forward and grad-input; thread_time at 1
    thread, AVX-512) depends on the image, never on the batch, so a sample's
    output does not depend on the batch it is in. From 16 -> 16 channels up
    Winograd is 1.0-2.6x faster at batch 64 (32x64x56x56 -> 64: 1.9x / 2.4x;
    64x16x28x28 -> 32: 1.2x / 1.4x; 64x32x14x14 -> 64: 1.5x / 1.7x;
    16x128x28x28 -> 128: 1.8x / 2.3x; 64x16x14x14 -> 16: 1.0x). Its GEMMs'
    narrowest kernel is 48 tiles wide, so a call with few tiles pads them:
    7x7 outputs (4 tiles an image) gain at batch 8 (1.4x) but lose at batch 1
    (0.46x); 14x14 (16 tiles) is a tie at batch 1 with the weights transformed
    ahead (an inference plan) and 0.4-0.7x with the transform in the call
    (1x256x14x14 -> 256: 0.38x), 1.04x from batch 2. 7x7 stays direct, 14x14
    and up takes Winograd. Below 16 channels it gains nothing (8 -> 16:
    1.05x, 8 -> 32: 0.84x) and a first layer loses (32x3x32x32 -> 16: 0.8x).

    3x3 grad-weight gains less (its dY transform and channels-last copy cost
    as much as a quarter of its GEMMs) and only in a band: 1.5x on bench e,
    1.2-1.5x for 32 -> 32 .. 64 -> 64 channels at 28x28 and 56x56 (batch 8-64;
    32x32x56x56 -> 32 a tie), but 0.84-0.97x with 128 channels, 0.7-0.9x with
    16, 0.7-1.2x at 14x14 and 0.12x at 1x128x14x14 (the per-chunk partial sums
    dominate); batch 1 at 28x28 is 0.81x (56x56: 1.3x).
    """
    if _winograd is False or dtype != np.float32:
        return False
    if (g.kh, g.kw) not in ((5, 5), (3, 3)) or g.stride != (1, 1) or g.dilation != (1, 1):
        return False
    # grad_input runs as a convolution of grad_out padded kh-1 - top / kw-1 - left;
    # bottom and right are held to the same bound, the range the tests cover
    if g.groups != 1 or max(g.pad[0] + g.pad[1]) > g.kh - 1:
        return False
    if _winograd is True:
        return True
    if g.kh == 3:
        tiles = -(-g.ho // 4) * -(-g.wo // 4)
        if grad_weight:
            return (32 <= g.c <= 64 and 32 <= g.k <= 64
                    and tiles >= WINOGRAD3_GRAD_WEIGHT_MIN_TILES)
        return g.c >= 16 and g.k >= 16 and tiles >= WINOGRAD3_MIN_TILES
    if grad_weight:
        return g.c >= 32 and g.k >= 32
    return g.c >= 16 and g.k >= 16 and g.c * g.k >= 512


# 4x4 output tiles per image from which F(4x4, 3x3) pays (see winograd_ok):
# forward and grad_input from 13x13 outputs, grad_weight from 25x25
WINOGRAD3_MIN_TILES = 16
WINOGRAD3_GRAD_WEIGHT_MIN_TILES = 49


def winograd_rows_ok(g, dtype, grad_weight=False, grad_input=False):
    """True if this 5x5 pass should run on the row-Winograd F(5, 5) kernels.

    ``g`` is the checked geometry (``fastconv._geometry.ConvGeom``), for the
    forward pass, grad_input (``grad_input=True``) or grad_weight
    (``grad_weight=True``: its own measured rule, :func:`_rows_grad_weight_pays`).
    A layer
    that :func:`winograd_ok` takes stays on the 2-D Winograd kernels (so
    ``set_winograd(True)`` keeps its choice). Supported: float32, 5x5,
    stride 1, dilation 1, groups 1, padding <= 4 on every side, a CPU with
    AVX-512 (below that SIMD level, when set, the kernel runs the direct one:
    :func:`conv_forward` then reports "direct"). ``set_winograd(False)``
    turns it off. The rule
    depends on the layer, never on the batch, so a sample's output does not
    depend on the batch it is in (the kernel gives every image the same
    operations: csrc/fc_rowwino.c).

    Measured (thread_time, 1 thread, AVX-512, while other builds shared the
    machine; direct -> rows, batch 64 / batch 1, microseconds):

    ====================  ======================  ======================
    layer                 forward                 grad_input
    ====================  ======================  ======================
    6->16, 14x14          139 -> 77 / 7.0 -> 7.9  138 -> 123 / 13 -> 18
    8->16, 14x14          179 -> 96               177 -> 147
    16->16, 14x14         540 -> 182              1062 -> 256
    6->32, 14x14          270 -> 139              268 -> 248
    3->16, 32x32          700 -> 428 / 13 -> 20   1334 -> 725 / 24 -> 86
    1->32, 28x28 pad 2    616 -> 406              621 -> 1202
    1->6, 32x32           97 -> 103 / 3.9 -> 9.1  155 -> 270 / 7.9 -> 30
    1->6, 28x28 pad 2     90 -> 94 / 4.0 -> 9.2   138 -> 208 / 6.9 -> 25
    ====================  ======================  ======================

    The forward gains at batch 64 from 16 output channels on (3->16: 1.6x,
    1->32: 1.5x, LeNet's conv2 6->16: 1.8x, 16->16: 3x) and loses on LeNet's
    conv1 (1->6: its 5-term reduction does not pay for the transforms).
    grad_input (the forward of grad_out with the channels swapped: C output
    channels) gains from 6 input channels (6->16: 1.1x, 16->16: 4x) and
    loses with 1 (1->32: 0.5x). A batch's last n % 16 images (and batch 1)
    run one at a time, output channels in the vector lanes, and with few
    input channels that path loses at batch 1: forward 3->16 0.65x, and
    1->32 (the MNIST CNN's conv1, padding 2, with ReLU) 15.3 -> 24.1 us
    (0.63x; lead, idle), which cost the MNIST CNN's batch-1 inference ~5%.
    The rule cannot look at the batch (a sample's bits would depend on
    it), so both passes take the route from 6 input and 16 output channels.
    """
    if _winograd is False or dtype != np.float32:
        return False
    if (g.kh, g.kw) != (5, 5) or g.stride != (1, 1) or g.dilation != (1, 1) or g.groups != 1:
        return False
    if max(g.pad[0] + g.pad[1]) > 4 or winograd_ok(g, dtype, grad_weight=grad_weight):
        return False
    if grad_weight:
        # a sum over the batch: no sample's output depends on this choice. The
        # kernel runs the direct routes itself where it does not fit (no AVX-512
        # at the level in force, scratch bounds); the query reports that
        return _rows_grad_weight_pays(g) and _kernels.winograd_rows_grad_weight_fits(g.as_tuple())
    # the CPU's support, not the level in force: a plan made at one level runs at
    # another, and the kernel runs the direct one below AVX-512 (what this rule
    # would choose there), so the kernel chosen never depends on the level
    if _kernels.simd_supported() < _kernels.SIMD_LEVELS["avx512"]:
        return False
    return g.c >= ROWS_MIN_C and g.k >= ROWS_MIN_K


# The row-Winograd rule's thresholds for forward and grad_input (measured: see
# winograd_rows_ok)
ROWS_MIN_C = 6    # input channels
ROWS_MIN_K = 16   # output channels


# The row-Winograd grad_weight rule (see _rows_grad_weight_pays)
ROWS_GW_MIN_C = 2            # input channels
ROWS_GW_WO = (8, 32)         # output columns
ROWS_GW_MAX_PLANE = 32 * 32  # output pixels per plane
ROWS_GW_MIN_LAST = 8         # images in a last, partial block of 16


def _rows_grad_weight_pays(g):
    """The measured part of ``winograd_rows_ok(..., grad_weight=True)``.

    Measured (thread_time, 1 thread, AVX-512; direct route's
    time / row Winograd's at batch 64, then 16; taken while other builds shared
    the machine): 6 -> 16 on 14x14 (LeNet conv2) 1.55x / 1.35x, 8 -> 16
    1.59x / 1.43x, 16 -> 16 1.73x / 1.43x, 6 -> 32 1.64x / 1.35x, 16 -> 32
    1.84x / 1.54x, 32 -> 16 1.75x / 1.51x, 64 -> 16 1.84x / 1.54x, 16 -> 64
    1.84x / 1.62x; 128 -> 8 on 10x10 padded 2 3.18x; 2 -> 6 on 32x32
    1.07x / 1.05x, 3 -> 16 1.34x / 1.28x; 2 -> 16, 8 -> 16, 16 -> 16 and
    16 -> 32 on 28x28 padded 2: 1.08x, 1.70x, 3.01x, 2.46x. It loses with one
    input channel (a grad_y transform then serves 5 products per point):
    1 -> 6 on 32x32 and on 28x28 padded 2 0.85x, 1 -> 32 on 28x28 0.86x; ties
    on large images, where the direct routes run near peak (3 -> 32 on 64x64:
    1.01x / 0.97x); and 7 output columns take two 5-column segments (6 -> 16 on
    7x7 padded 2: 1.14x / 0.99x). Hence: at least 2 input channels, 8 to 32
    output columns and at most 32x32 outputs.

    A block of 16 images costs the same however many it holds (the lanes past
    the batch are zeros), so the last block must be well filled: batch 1 loses
    (0.16x-0.43x), 17 images (a block for one) 0.70x-0.94x; with 8 or more in
    the last block it gains or ties (batch 8: 0.92x-2.43x, 12: 1.11x-1.55x, 24:
    1.05x-1.93x). Hence: a multiple of 16 images, or 8 or more in the last block.
    """
    last = g.n % 16
    return (g.c >= ROWS_GW_MIN_C and ROWS_GW_WO[0] <= g.wo <= ROWS_GW_WO[1]
            and g.ho * g.wo <= ROWS_GW_MAX_PLANE
            and (last == 0 or last >= ROWS_GW_MIN_LAST))


def winograd_mode():
    """The mode :func:`set_winograd` set: None (auto), True or False.

    Part of any cache key for work planned ahead (an inference plan picks its
    kernels once), so a later ``set_winograd`` is not silently ignored.
    """
    return _winograd


def _rows_name():
    """What the row-Winograd kernels run at the SIMD level in force."""
    return ("winograd_rows" if _kernels.simd_level() >= _kernels.SIMD_LEVELS["avx512"]
            else "direct")


def conv_forward(g, dtype):
    """``(route, kernel)`` for conv2d's forward pass."""
    if winograd_ok(g, dtype):
        return "winograd", _kernels.conv2d_forward_winograd
    if winograd_rows_ok(g, dtype):
        return _rows_name(), _kernels.conv2d_forward_winograd_rows
    return "direct", _kernels.conv2d_forward


def conv_grad_input(g, dtype):
    """``(route, kernel)`` for conv2d's grad_input pass."""
    if winograd_ok(g, dtype):
        return "winograd", _kernels.conv2d_grad_input_winograd
    if winograd_rows_ok(g, dtype, grad_input=True):
        return _rows_name(), _kernels.conv2d_grad_input_winograd_rows
    return "direct", _kernels.conv2d_grad_input


def conv_grad_weight(g, dtype):
    """``(route, kernel)`` for conv2d's grad_weight (and grad_bias) pass."""
    if winograd_ok(g, dtype, grad_weight=True):
        return "winograd", _kernels.conv2d_grad_weight_winograd
    if winograd_rows_ok(g, dtype, grad_weight=True):
        return "winograd_rows", _kernels.conv2d_grad_weight_winograd_rows
    return "direct", _kernels.conv2d_grad_weight


def record(conv_pass, route):
    """Note the route a pass ran ('forward', 'grad_input' or 'grad_weight')."""
    _last_algorithm[conv_pass] = route


def last_algorithms():
    """A copy of the route each conv pass ran last."""
    return dict(_last_algorithm)


# Rows of x up to which an inference plan's Linear reads a k-major copy of its
# weight. Measured (1 thread, 3136->1024, 400->120, 84->10): the copy is 1.4-2.4x
# faster at 1-8 rows; at 16 the driver starts copying tiles of it (two row
# panels share them) and the in-place product is 1.4-1.6x faster again. One row
# reads the copy in panels of outputs, each streamed front to back by its
# thread: 1.3x the k-major copy for the MNIST CNN's 3136->1024 (L3-bound).
LINEAR_KMAJOR_MAX_ROWS = 8


def linear_weight_copy(n, nout, nin):
    """Which copy of its weight an inference plan's Linear of ``nin -> nout``
    features on ``n`` rows keeps and reads: ``"panels"``
    (``_kernels.linear_forward_panels``), ``"kmajor"``
    (``_kernels.linear_forward_kmajor``) or None (``gemm`` on the weight as it is)."""
    if nout < 1 or nin < 1 or not 1 <= n <= LINEAR_KMAJOR_MAX_ROWS:
        return None
    return "panels" if n == 1 else "kmajor"
