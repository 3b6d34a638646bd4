"""Which neighbouring layers of a ``Sequential`` run as one call: decided once per layer list.

Two pairs are fused, each with bitwise the results of the two layers run
one after the other:

* ``Conv2d`` (or ``Conv1d``) then ``ReLU`` (forward): the conv kernel
  rectifies its output in the same pass (``conv2d(..., activation="relu")``), and the ReLU layer
  adopts the rectified output for its backward. Only with kernels whose
  fused ReLU keeps NaN (``kernel_relu_propagates_nan``), so that a diverged
  network still shows a NaN loss.
* ``ReLU`` then ``MaxPool2d`` (backward): the pool applies ReLU's mask on its
  own, smaller, grid (``MaxPool2d._backward_after_relu``) and the ReLU's pass
  over the input is skipped.

``Sequential`` asks for a ``FusionPlan`` when its layer list (or one of its
two switches, ``fuse_conv_relu`` / ``fuse_relu_pool``) differs from the one
the last plan was made for, and then only walks the plan's steps; the
inference plan (``fastconv.nn.plan``) takes its conv+ReLU pairs from
``forward_steps`` too. Exact types are matched: a subclass may override
``forward``, so it is not assumed to compute the same.
"""

from .activations import ReLU
from .conv import Conv1d, Conv2d
from .pooling import MaxPool2d
from .relu import kernel_relu_propagates_nan

__all__ = ["FusionPlan", "forward_steps", "backward_steps"]


def forward_steps(layers, conv_relu=True):
    """The forward pass of ``layers`` as ``(index, fused)`` steps, in order.

    ``fused`` is True for a ``Conv2d`` or ``Conv1d`` at ``index`` run together with the
    ``ReLU`` at ``index + 1`` (which then has no step of its own).
    """
    fuse = conv_relu and kernel_relu_propagates_nan()
    steps = []
    i, n = 0, len(layers)
    while i < n:
        fused = (fuse and i + 1 < n and type(layers[i]) in (Conv2d, Conv1d)
                 and type(layers[i + 1]) is ReLU)
        steps.append((i, fused))
        i += 2 if fused else 1
    return tuple(steps)


def backward_steps(layers, relu_pool=True):
    """The backward pass of ``layers`` as ``(index, fused)`` steps, last layer first.

    ``fused`` is True for a ``MaxPool2d`` at ``index`` that back-propagates
    through the ``ReLU`` at ``index - 1`` too (which then has no step).
    """
    steps = []
    i = len(layers) - 1
    while i >= 0:
        fused = relu_pool and i > 0 and type(layers[i]) is MaxPool2d and type(layers[i - 1]) is ReLU
        steps.append((i, fused))
        i -= 2 if fused else 1
    return tuple(steps)


class FusionPlan:
    """The forward and backward steps of one layer list under one pair of switches.

    Parameters
    ----------
    layers : list of Module
    conv_relu, relu_pool : bool
        Whether the two kinds of pair may be fused.
    """

    __slots__ = ("layers", "key", "forward", "backward")

    def __init__(self, layers, conv_relu, relu_pool):
        self.layers = list(layers)  # a snapshot: the model's list may be edited in place
        self.key = (bool(conv_relu), bool(relu_pool))
        self.forward = forward_steps(self.layers, conv_relu)
        self.backward = backward_steps(self.layers, relu_pool)

    def fits(self, layers, conv_relu, relu_pool):
        """Whether this plan was made for ``layers`` (same objects, same order) and switches."""
        return self.key == (bool(conv_relu), bool(relu_pool)) and self.layers == layers
