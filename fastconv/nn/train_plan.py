"""A training step of a ``Sequential`` compiled once into kernel calls.

``fit`` spends about 0.3 ms per step of LeNet-5 in Python around the kernels
(a batch-1 step costs 0.4 ms): every layer call re-validates its arrays,
re-derives the convolution geometry and route, looks up its buffers and
checks its outputs for overlap, although within one run nothing of that
changes from batch to batch. A ``TrainPlan`` does that work once per input
shape: the geometry, the routes and the buffers are fixed when it is built,
and a step is the list of compiled calls the layers would make, with the
same arguments in the same order. So the parameters after a run are bitwise
those of the layer-by-layer path (``tests/test_train_plan.py`` compares
them), and a model the plan cannot express simply trains through the layers.

What a plan covers: a flat ``Sequential`` of exactly ``Conv2d``, ``ReLU``,
``MaxPool2d``, ``Flatten`` and ``Linear`` (subclasses may override
``forward``, so they are not assumed to compute the same), in the fusion
plan the layers use (``fastconv.nn.fusion``). Each step first checks, by
identity, that the layer list, the fusion switches, the parameters' arrays
and flags, the Winograd mode and the grad mode are those the plan was built
for; if anything changed (a callback froze a layer, replaced a weight, ...)
the plan is dropped and built again, or the step goes through the layers.
Layer hyper-parameters (stride, padding, ...) are taken as fixed while a
``fit`` runs.

The plan keeps its own activations and gradients: the layers' caches are
not updated, so after a step through the plan ``Sequential.backward`` needs
a forward pass of its own first (it says so).
"""

import numpy as np

from .. import _kernels, _routes
from .._geometry import ConvGeom, pool_geom
from .._runtime import get_num_threads
from .activations import ReLU
from .conv import Conv2d
from .dense import Flatten, Linear
from .module import is_grad_enabled
from .pooling import MaxPool2d
from .relu import relu_uses_kernel

__all__ = ["TrainPlan", "plan_supported"]

_BIAS_COLS = 1  # fc_gemm's bias_mode: C[i, j] += bias[j] (as functional.linear)
_SUPPORTED = (Conv2d, ReLU, MaxPool2d, Flatten, Linear)


def plan_supported(model):
    """Whether every layer of ``model`` is one the plan reproduces exactly."""
    layers = model.layers
    if not layers or any(type(m) not in _SUPPORTED for m in layers):
        return False
    # a layer that returns several arrays or whose rows are not the samples
    # (Flatten(axis=0), MaxPool2d(return_indices=True), ...) runs through the layers
    if any(getattr(m, "_n_outputs", 1) != 1 or getattr(m, "_whole_batch", False)
           for m in layers):
        return False
    for m in layers:
        if type(m) in (Conv2d, Linear):
            # the parameters a step reads: weight and bias, nothing attached besides
            own = [m.weight] + ([m.bias] if m.bias is not None else [])
            if [id(p) for p in m.parameters()] != [id(p) for p in own]:
                return False
    return True


def _param_states(layers):
    """What a plan assumes of the parameters, compared by identity at every step:
    ``(layer, attribute, Parameter, data array, grad array, requires_grad)``."""
    states = []
    for m in layers:
        if type(m) in (Conv2d, Linear):
            for name in ("weight", "bias"):
                p = getattr(m, name)
                if p is not None:
                    states.append((m, name, p, p._data, p.grad, p.requires_grad))
    return tuple(states)


def _grad_writable(p, data):
    g = p.grad
    return (isinstance(g, np.ndarray) and g.dtype == data.dtype and g.shape == data.shape
            and g.flags.c_contiguous and g.flags.writeable)


# -- steps: forward(x, nt) -> y and backward(g, nt) -> gx (None: stop) ------------
class _ConvStep:
    """``Conv2d`` (with the following ``ReLU`` when fused): ``_conv_forward`` and
    ``_conv_backward`` of ``fastconv.functional`` with the checks done once."""

    __slots__ = ("layer", "relu", "geom", "fwd_route", "fwd", "gi_route", "gi", "gw_route",
                 "gw", "mask", "x", "y", "gx", "gwbuf", "gbbuf")

    def __init__(self, layer, relu, x_shape, dtype):
        g = ConvGeom("conv2d", x_shape, layer.weight.shape, *layer._hyper())
        self.layer, self.relu, self.geom = layer, relu, g.as_tuple()
        self.fwd_route, self.fwd = _routes.conv_forward(g, dtype)
        self.gi_route, self.gi = _routes.conv_grad_input(g, dtype)
        self.gw_route, self.gw = _routes.conv_grad_weight(g, dtype)
        w, b = layer.weight, layer.bias
        self.mask = (bool(layer.needs_input_grad), w.requires_grad,
                     b is not None and b.requires_grad)
        self.x = None
        self.y = np.empty(g.out_shape, dtype)
        self.gx = np.empty(x_shape, dtype) if self.mask[0] else None
        self.gwbuf = np.empty(w.shape, dtype)
        self.gbbuf = np.empty(b.shape, dtype) if self.mask[2] else None

    def out_shape(self):
        return self.y.shape

    def forward(self, x, nt):
        layer = self.layer
        b = layer.bias
        _routes.record("forward", self.fwd_route)
        self.fwd(x, layer.weight.data, None if b is None else b.data, self.geom, self.relu, nt,
                 self.y)
        self.x = x
        return self.y

    def backward(self, gy, nt):
        mask = self.mask
        if not (mask[0] or mask[1] or mask[2]):
            return None
        w, b = self.layer.weight, self.layer.bias
        if mask[0]:
            _routes.record("grad_input", self.gi_route)
            self.gi(gy, w.data, self.geom, nt, self.gx)
        if mask[1] or mask[2]:
            _routes.record("grad_weight", self.gw_route)
            self.gw(gy, self.x, self.geom, nt, self.gwbuf, self.gbbuf)
            # into .grad as Conv2d.backward adds its scratch (0 + g, not a copy:
            # the same bits, -0.0 included)
            if mask[1]:
                np.add(w.grad, self.gwbuf, out=w.grad)
            if mask[2]:
                np.add(b.grad, self.gbbuf, out=b.grad)
        return self.gx


class _ReluStep:
    """A ``ReLU`` on its own (forward and backward), or only the backward of one
    fused into the preceding conv (``y`` is then the conv's rectified output)."""

    __slots__ = ("layer", "y", "gx", "kernel", "source")

    def __init__(self, layer, shape, dtype, source=None):
        self.layer, self.source = layer, source
        self.y = np.empty(shape, dtype) if source is None else None
        self.gx = np.empty(shape, dtype)
        self.kernel = relu_uses_kernel(int(np.prod(shape)))

    def out_shape(self):
        return self.gx.shape

    def forward(self, x, nt):
        y = self.y
        if self.kernel:  # ReLU._apply: the kernel from its size on, else np.maximum
            _kernels.relu_forward(x.reshape(-1), nt, y.reshape(-1))
        else:
            np.maximum(x, 0, out=y)
        return y

    def backward(self, g, nt):
        if not self.layer.needs_input_grad:
            return None
        y = self.y if self.source is None else self.source.y
        _kernels.relu_backward(g.reshape(-1), y.reshape(-1), nt, self.gx.reshape(-1))
        return self.gx


class _MaxPoolStep:
    """``MaxPool2d``, its backward after the preceding ``ReLU`` when fused
    (``MaxPool2d._backward_after_relu``: the mask on the pooled grid)."""

    __slots__ = ("layer", "after_relu", "geom", "bgeom", "y", "idx", "g_relu", "gx")

    def __init__(self, layer, after_relu, x_shape, dtype):
        self.geom, oshape = pool_geom("max_pool2d", tuple(x_shape), layer.kernel_size,
                                      layer.stride, layer.padding, layer.dilation,
                                      layer.ceil_mode)
        self.layer, self.after_relu = layer, after_relu
        self.y = np.empty(oshape, dtype)
        self.idx = np.empty(oshape, np.int64)
        self.g_relu = np.empty(oshape, dtype) if after_relu else None
        self.gx = np.empty(x_shape, dtype)
        n, c, h, w = x_shape
        ho, wo = oshape[2:]
        th, tw = max(h // max(ho, 1), 1), max(w // max(wo, 1), 1)
        # the tile guess _max_pool_backward hands the kernel (it checks it)
        self.bgeom = (n, c, h, w, th, tw, ho, wo, th, tw, 0, 0, 0, 0, 1, 1)

    def out_shape(self):
        return self.y.shape

    def forward(self, x, nt):
        _kernels.max_pool2d_forward(x, self.geom, nt, self.y, self.idx)
        return self.y

    def backward(self, g, nt):
        if not self.layer.needs_input_grad:
            return None
        if self.after_relu:
            _kernels.relu_backward(g.reshape(-1), self.y.reshape(-1), nt,
                                   self.g_relu.reshape(-1))
            g = self.g_relu
        if not _kernels.max_pool2d_backward(g, self.idx, self.bgeom, nt, self.gx):
            raise RuntimeError("TrainPlan: a max-pool index fell outside its plane")
        return self.gx


class _FlattenStep:
    __slots__ = ("in_shape", "shape")

    def __init__(self, x_shape):
        self.in_shape = tuple(x_shape)
        self.shape = (x_shape[0], int(np.prod(x_shape[1:])))

    def out_shape(self):
        return self.shape

    def forward(self, x, nt):
        return x.reshape(self.shape)

    def backward(self, g, nt):
        return g.reshape(self.in_shape)


class _LinearStep:
    """``Linear``: ``functional.linear`` / ``linear_backward(accumulate=True)`` into ``.grad``."""

    __slots__ = ("layer", "x", "y", "gx", "mask")

    def __init__(self, layer, x_shape, dtype):
        self.layer = layer
        w, b = layer.weight, layer.bias
        self.mask = (bool(layer.needs_input_grad), w.requires_grad,
                     b is not None and b.requires_grad)
        self.x = None
        self.y = np.empty((x_shape[0], layer.out_features), dtype)
        self.gx = np.empty(x_shape, dtype) if self.mask[0] else None

    def out_shape(self):
        return self.y.shape

    def forward(self, x, nt):
        b = self.layer.bias
        _kernels.gemm(False, True, x, self.layer.weight.data, None if b is None else b.data,
                      _BIAS_COLS, False, nt, self.y)
        self.x = x
        return self.y

    def backward(self, gy, nt):
        mask = self.mask
        if not (mask[0] or mask[1] or mask[2]):
            return None
        w, b = self.layer.weight, self.layer.bias
        _kernels.linear_backward(gy, self.x, w.data, True, nt, self.gx,
                                 w.grad if mask[1] else None, b.grad if mask[2] else None)
        return self.gx


class TrainPlan:
    """Forward and backward of one training step for one input shape and dtype.

    Build with :meth:`build` (None when the model is not one a plan covers);
    before each step ask :meth:`fits`.
    """

    def __init__(self, model, fusion, x_shape, dtype):
        self.layers = list(model.layers)
        self.fusion = fusion
        self.x_shape, self.dtype = tuple(x_shape), np.dtype(dtype)
        self.state = _param_states(self.layers)
        self.flags = tuple(bool(m.needs_input_grad) for m in self.layers)
        self.winograd = _routes.winograd_mode()
        layers = self.layers
        fwd, by_index = [], {}
        shape = self.x_shape
        for i, fused in fusion.forward:
            layer = layers[i]
            kind = type(layer)
            if kind in (Conv2d, Linear) and layer.dtype != self.dtype:
                raise TypeError("TrainPlan: a layer of another dtype")
            if kind is Conv2d:
                if len(shape) != 4 or shape[1] != layer.in_channels:
                    raise ValueError("TrainPlan: the layer raises its own error")
                step = _ConvStep(layer, fused, shape, self.dtype)
                if fused:  # the ReLU's backward reads the conv's rectified output
                    by_index[i + 1] = _ReluStep(layers[i + 1], step.out_shape(), self.dtype,
                                                source=step)
            elif kind is ReLU:
                step = _ReluStep(layer, shape, self.dtype)
            elif kind is MaxPool2d:
                if len(shape) != 4:
                    raise ValueError("TrainPlan: the layer raises its own error")
                after_relu = any(j == i and f for j, f in fusion.backward)
                step = _MaxPoolStep(layer, after_relu, shape, self.dtype)
            elif kind is Flatten:
                step = _FlattenStep(shape)
            else:
                if len(shape) != 2 or shape[1] != layer.in_features:
                    raise ValueError("TrainPlan: the layer raises its own error")
                step = _LinearStep(layer, shape, self.dtype)
            by_index[i] = step
            fwd.append(step)
            shape = step.out_shape()
        self.forward_steps = fwd
        self.backward_steps = [by_index[i] for i, _ in fusion.backward]
        self.out_shape = shape

    @classmethod
    def build(cls, model, x):
        """A plan for batches shaped like ``x``, or None (train through the layers)."""
        if not plan_supported(model) or not is_grad_enabled():
            return None
        dtype = model.dtype
        if x.dtype != dtype or not x.flags.c_contiguous:
            return None
        if any(p._data.dtype != dtype or not p._data.flags.c_contiguous
               or not _grad_writable(p, p._data) for p in model.parameters()):
            return None
        try:
            return cls(model, model._fusion(), x.shape, dtype)
        except (ValueError, TypeError):
            return None  # the layers raise the user's error, with its hints

    def fits(self, model, x):
        """Whether this plan still describes ``model`` and batch ``x``."""
        if x.shape != self.x_shape or x.dtype != self.dtype or not x.flags.c_contiguous:
            return False
        if model._fusion() is not self.fusion or _routes.winograd_mode() != self.winograd:
            return False
        for layer, name, p, data, grad, requires_grad in self.state:
            if (getattr(layer, name) is not p or p._data is not data or p.grad is not grad
                    or p.requires_grad != requires_grad):
                return False
        if tuple(bool(m.needs_input_grad) for m in self.layers) != self.flags:
            return False
        return is_grad_enabled()

    def forward(self, x):
        """The model's output for batch ``x`` (the plan's buffer, valid until the next step)."""
        nt = get_num_threads()
        for step in self.forward_steps:
            x = step.forward(x, nt)
        return x

    def backward(self, grad):
        """Back-propagate ``grad`` (dL/doutput): parameter gradients added into ``.grad``."""
        nt = get_num_threads()
        g = np.ascontiguousarray(grad, dtype=self.dtype)
        for step in self.backward_steps:
            g = step.backward(g, nt)
            if g is None:
                return
