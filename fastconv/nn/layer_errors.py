"""Errors of a layer in a ``Sequential``: the layer's message with its index, its
name and a hint for the usual causes (used by plans and by the layer-by-layer path)."""

import numpy as np

from .. import functional as F
from .activations import ReLU, Sigmoid, Tanh
from .conv import Conv1d, Conv2d
from .dense import Flatten, Linear
from .normalization import BatchNorm2d, Dropout
from .pooling import AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d

__all__ = ["LayerInputError", "layer_input_error"]


class LayerInputError(ValueError):
    """A layer of a ``Sequential`` rejected its input: the layer's message, prefixed
    with the layer's index (``"2.1"`` inside nested models) and name, plus a hint
    when the cause is a common one (no batch axis, channels last, a ``Linear``
    sized for another image size).

    Parameters
    ----------
    path : tuple of int
        Index of the layer, outermost model first.
    layer : Module
        The layer that rejected its input.
    reason : str
        The layer's own message, with the hint.

    Attributes
    ----------
    path, layer, reason
        As given.
    """

    def __init__(self, path, layer, reason):
        self.path, self.layer, self.reason = tuple(path), layer, reason
        super().__init__(f"layer {'.'.join(map(str, self.path))} ({_short_name(layer)}): {reason}")

    def nested_in(self, index):
        """The same error seen from the model that holds this layer at ``index``."""
        return LayerInputError((index,) + self.path, self.layer, self.reason)


def _short_name(layer):
    """``Linear(400 -> 120)``, ``Conv2d(1 -> 6, 5x5)``: enough to find the layer
    in the model's definition (the full repr lists every default)."""
    kind = type(layer)
    if kind is Linear:
        return f"Linear({layer.in_features} -> {layer.out_features})"
    if kind is Conv2d:
        kh, kw = layer.weight.data.shape[2:]
        return f"Conv2d({layer.in_channels} -> {layer.out_channels}, {kh}x{kw})"
    if kind is Conv1d:
        return f"Conv1d({layer.in_channels} -> {layer.out_channels}, {layer.weight.data.shape[2]})"
    return kind.__name__


def _shape_before(layers, shape):
    """Output shape of ``layers`` (shape arithmetic only) for an input of ``shape``,
    or None when a layer is not one whose output shape is known here."""
    for layer in layers:
        kind = type(layer)
        if kind is Conv2d:
            shape = F.conv2d_output_shape(shape, layer.weight.data.shape, layer.stride,
                                          layer.padding, layer.dilation, layer.groups)
        elif kind in (MaxPool2d, AvgPool2d, MaxPool1d, AvgPool1d):
            shape = layer._pool_out_shape(shape)
        elif kind in (ReLU, Sigmoid, Tanh, Dropout, BatchNorm2d):
            pass
        else:
            return None
        if min(shape[1:]) < 1:
            raise ValueError("too small")  # the caller tries the next size
    return shape


def _built_for(layers, flatten_at, in_features, channels):
    """The square image size ``s`` for which the layers before the ``Flatten`` at
    ``flatten_at`` give ``in_features`` values, or None (searched up to 1024)."""
    before = layers[:flatten_at]
    if not before or type(before[0]) is not Conv2d:
        return None
    for s in range(1, 1025):
        try:
            shape = _shape_before(before, (1, channels, s, s))
        except ValueError:
            continue
        if shape is None:
            return None
        if int(np.prod(shape[1:])) == in_features:
            return s
    return None


def layer_input_error(layers, i, shape, exc, model_shape=None, labels=None):
    """``exc`` (a layer's ValueError for input of ``shape``) as a ``LayerInputError``
    for layer ``i`` of ``layers``, with a hint for the usual causes.

    ``model_shape`` is the shape of the model's input, when known; ``labels``
    the names of the layers in hints (default: their indices).
    """
    layer = layers[i]
    labels = labels or [str(j) for j in range(len(layers))]
    reason = str(exc)
    kind = type(layer)
    hint = None
    if kind is Conv2d and len(shape) == 3:
        c = layer.in_channels
        hint = ("a single sample has no batch axis: add it with x[None] or "
                f"x.reshape(1, {c}, H, W)")
    elif kind is Conv1d and len(shape) == 2:
        hint = ("a single sample has no batch axis: add it with x[None] or "
                f"x.reshape(1, {layer.in_channels}, L)")
    elif kind is Conv2d and len(shape) == 4 and shape[1] != layer.in_channels \
            and shape[-1] == layer.in_channels:
        hint = ("the input looks like NHWC (channels last); fastconv expects NCHW: "
                "transpose with x.transpose(0, 3, 1, 2)")
    elif kind is Linear and len(shape) == 2 and shape[1] != layer.in_features:
        flat = [j for j in range(i) if type(layers[j]) is Flatten]
        if flat and model_shape is not None and len(model_shape) == 4:
            s = _built_for(layers, flat[-1], layer.in_features, model_shape[1])
            got = f"{model_shape[2]}x{model_shape[3]}"
            if s is not None and (s, s) != tuple(model_shape[2:]):
                hint = (f"the layers before Flatten give {layer.in_features} features for "
                        f"{s}x{s} images; this input is {got}: resize the images to "
                        f"{s}x{s} or change layer {labels[i]}'s in_features to {shape[1]}")
            else:
                hint = (f"the layers before Flatten (layer {labels[flat[-1]]}) give {shape[1]} "
                        f"features for {got} images; set layer {labels[i]}'s in_features "
                        f"to {shape[1]}")
    if hint is not None:
        reason = f"{reason}; {hint}"
    return LayerInputError((i,), layer, reason)
