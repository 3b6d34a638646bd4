"""ReLU's routes, decided in one place for the layer, the fusions and the inference plan.

Whether the compiled ReLU paths keep NaN (they are used only if so), which
size of forward goes to the kernel rather than ``np.maximum``, and the
gradient select shared by ``ReLU.backward`` and the fused ReLU -> MaxPool2d
backward.
"""

import numpy as np

from .. import functional as F

__all__ = ["kernel_relu_propagates_nan", "relu_uses_kernel", "relu_grad"]

_RELU_NAN_OK = None


def kernel_relu_propagates_nan():
    """Whether ``fastconv.relu`` and ``conv2d(..., activation='relu')`` keep NaN.

    ``ReLU`` must propagate NaN (as ``np.maximum`` and PyTorch do) so that a
    diverged network shows up as a NaN loss instead of being silently
    rectified to zero. The compiled ReLU paths are used only when they do;
    checked once, on two one-element calls.
    """
    global _RELU_NAN_OK
    if _RELU_NAN_OK is None:
        nan = np.full((1, 1, 1, 1), np.nan, np.float32)
        one = np.ones((1, 1, 1, 1), np.float32)
        try:
            _RELU_NAN_OK = bool(np.isnan(F.relu(nan)).all()
                                and np.isnan(F.conv2d(nan, one, activation="relu")).all())
        except (AttributeError, TypeError, ValueError):  # kernels without fused ReLU
            _RELU_NAN_OK = False
    return _RELU_NAN_OK


# Below this many elements np.maximum beats the compiled forward's call overhead.
_RELU_KERNEL_MIN_SIZE = 16384


def relu_uses_kernel(size):
    """Whether the forward of ``ReLU`` on ``size`` contiguous elements runs the
    compiled kernel (else ``np.maximum``): the one rule for the layer and the
    inference plan, so that both give the same bits."""
    return size >= _RELU_KERNEL_MIN_SIZE and kernel_relu_propagates_nan()


def relu_grad(g, y, gx):
    """``gx = g`` where the ReLU output ``y > 0`` (or NaN), else 0: ReLU's backward."""
    # the compiled select beats NumPy at every size (3.8 us against 4.5 us
    # at 7,680 elements, 10.5 against 25 us at 75,264)
    if g.flags.c_contiguous and y.flags.c_contiguous:
        F.relu_backward(g, y, out=gx)
    else:
        # PyTorch's threshold_backward: zero where y <= 0, so a NaN output
        # passes its gradient on. A select, like the compiled path (a
        # multiply by the mask would turn -g into -0.0 and inf into NaN).
        np.copyto(gx, g)
        np.copyto(gx, 0, where=y <= 0)
