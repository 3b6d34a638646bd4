"""Inference plans: a ``Sequential`` turned once into a list of kernel calls.

``Sequential.predict``, ``evaluate`` and ``forward`` in evaluation mode run a
plan instead of calling the layers one by one. A plan is built for one input
shape and dtype; building it does, once, what every layer call would
otherwise repeat: the input checks (with the layers' own error messages),
output shapes, fusion (a ``Conv2d`` followed by ``ReLU`` is one kernel call,
as in ``Sequential._forward``; both ask ``fastconv.nn.fusion``) and the choice of kernel. Running it is a loop
over calls into ``fastconv._kernels`` with nothing left to check but the
identity of each parameter array.

Parameters are read at every call, so training updates, ``load_state_dict``
and optimiser steps are seen; a parameter replaced by an array of another
shape makes the owner rebuild the plan. Outputs go into buffers that belong to
the calling thread (``threading.local``), never into the layers' own buffers:
any number of threads may run one plan at once, and each gets the result a
single thread would (bitwise: the kernels' results do not depend on the
thread count, and every sample's result does not depend on its batch).

The computation is evaluation mode whatever the layers' ``training`` flags
say: ``Dropout`` is the identity and batch normalisation uses the running
statistics. Results are bitwise those of the layer-by-layer forward in
evaluation mode.
"""

import threading

import numpy as np

from .. import _kernels
from .. import functional as F
from .._geometry import pool_geom
from .._validate import check_float_array, check_same_dtype
from .fusion import forward_steps
from .activations import ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv1d, Conv2d
from .dense import Flatten, Linear
from .layer_base import _check_input
from .normalization import BatchNorm1d, BatchNorm2d, Dropout
from .pooling import AvgPool2d, MaxPool2d
from .relu import relu_uses_kernel

__all__ = ["InferencePlan", "LayerInputError", "plannable"]

# How a step produces its output.
_BUFFER = 0   # writes into an output array of its own (a per-thread buffer)
_INPLACE = 1  # overwrites its input, which is a buffer of the plan
_VIEW = 2     # returns a view of its input (no arithmetic)


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
        elif kind in (MaxPool2d, AvgPool2d):
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


class StalePlan(Exception):
    """A parameter array no longer has the shape or dtype the plan was built for."""


def _probe(shape, dtype):
    """A zero-strided stand-in for an input of this shape and dtype (no memory):
    the layers' own input checks run on it and raise their usual messages."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _specialized(kernel, dtype):
    """The float or double version of a Cython fused-type kernel, chosen once:
    calling it skips the per-call dispatch on the arguments' dtype (~0.2 us)."""
    name = "float" if np.dtype(dtype) == np.float32 else "double"
    if name in (getattr(kernel, "__signatures__", None) or {}):
        return kernel[name]
    return kernel


def _admit(arr, shape, dtype):
    """``arr`` as the kernels may read it, or StalePlan when it no longer fits.

    Called only when a parameter's array object is not the one last admitted,
    so the common call costs one identity test.
    """
    if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
        raise StalePlan
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


class _Step:
    """One call of a plan: ``run(x, y, nthreads)`` returns the output for input ``x``."""

    __slots__ = ("kind", "out_shape")

    def __init__(self, kind, out_shape):
        self.kind = kind
        self.out_shape = tuple(out_shape)


class _ParamStep(_Step):
    """A step that reads ``layer.weight`` and ``layer.bias`` live at every call."""

    __slots__ = ("layer", "dtype", "wshape", "bshape", "w_ok", "b_ok")

    def __init__(self, kind, out_shape, layer, dtype):
        super().__init__(kind, out_shape)
        self.layer = layer
        self.dtype = np.dtype(dtype)
        self.wshape = layer.weight.data.shape
        self.bshape = (self.wshape[0],)
        self.w_ok = self.b_ok = None  # the arrays last admitted (identity fast path)

    def _params(self):
        layer = self.layer
        w = layer.weight.data
        if w is not self.w_ok:
            w = _admit(w, self.wshape, self.dtype)
            if w is layer.weight.data:
                self.w_ok = w
        b = layer.bias
        if b is not None:
            b = b.data
            if b is not self.b_ok:
                b = _admit(b, self.bshape, self.dtype)
                if b is layer.bias.data:
                    self.b_ok = b
        return w, b


class _Conv(_ParamStep):
    __slots__ = ("kernel", "geom", "relu")

    def __init__(self, layer, shape, dtype, relu):
        owner = type(layer).__name__
        ndim = 3 if owner == "Conv1d" else 4
        x = _probe(shape, dtype)
        _check_input(owner, x, ndim, layer.dtype)
        if shape[1] != layer.in_channels:
            raise ValueError(
                f"{owner}: expected input with {layer.in_channels} channels, "
                f"got input of shape {tuple(shape)}"
            )
        w = layer.weight.data
        b = None if layer.bias is None else layer.bias.data
        F._conv_inputs(owner.lower(), x, w, b, ndim)
        kernel, geom, out_shape = F._conv2d_prepared(
            shape, dtype, w.shape, layer.stride, layer.padding, layer.dilation, layer.groups)
        super().__init__(_BUFFER, out_shape, layer, dtype)
        self.kernel = _specialized(kernel, dtype)
        if ndim == 3:
            self.kernel = _height_one_view(self.kernel)
        self.geom, self.relu = geom, relu

    def run(self, x, y, nt):
        w, b = self._params()
        self.kernel(x, w, b, self.geom, self.relu, nt, y)
        return y


def _height_one_view(kernel):
    """A 2-D conv kernel called on (N, C, L) arrays through (N, C, 1, L) views (Conv1d)."""
    def run(x, w, b, geom, relu, nt, y):
        kernel(F._as4(x), F._as4(w), b, geom, relu, nt, F._as4(y))
    return run


class _Linear(_ParamStep):
    __slots__ = ("gemm",)

    def __init__(self, layer, shape, dtype):
        x = _probe(shape, dtype)
        _check_input("Linear", x, 2, layer.dtype)
        if shape[1] != layer.in_features:
            raise ValueError(
                f"Linear: expected input of shape (N, {layer.in_features}), got shape {tuple(shape)}"
            )
        w = layer.weight.data
        F._linear_inputs("linear", x, w)
        if layer.bias is not None:
            b = check_float_array("linear", "bias", layer.bias.data)
            check_same_dtype("linear", "input", x, bias=b)
            if b.shape != (w.shape[0],):
                raise ValueError(
                    f"linear: bias must have shape ({w.shape[0]},) to match weight of "
                    f"shape {w.shape}, got {b.shape}")
        super().__init__(_BUFFER, (shape[0], w.shape[0]), layer, dtype)
        self.gemm = _specialized(_kernels.gemm, dtype)

    def run(self, x, y, nt):
        w, b = self._params()
        self.gemm(False, True, x, w, b, F._BIAS_COLS, False, nt, y)
        return y


def _pool_geom(owner, layer, shape, dtype):
    x = _probe(shape, dtype)
    _check_input(owner, x, 4)
    fn = "max_pool2d" if owner == "MaxPool2d" else "avg_pool2d"
    return pool_geom(fn, shape, layer.kernel_size, layer.stride, layer.padding)


class _MaxPool(_Step):
    __slots__ = ("geom", "kernel")

    def __init__(self, layer, shape, dtype):
        self.geom, out_shape = _pool_geom("MaxPool2d", layer, shape, dtype)
        super().__init__(_BUFFER, out_shape)
        self.kernel = _specialized(_kernels.max_pool2d_forward, dtype)

    def run(self, x, y, nt):
        self.kernel(x, self.geom, nt, y, None)
        return y


class _AvgPool(_Step):
    __slots__ = ("geom", "count_include_pad", "kernel")

    def __init__(self, layer, shape, dtype):
        self.geom, out_shape = _pool_geom("AvgPool2d", layer, shape, dtype)
        super().__init__(_BUFFER, out_shape)
        self.count_include_pad = layer.count_include_pad
        self.kernel = _specialized(_kernels.avg_pool2d_forward, dtype)

    def run(self, x, y, nt):
        self.kernel(x, self.geom, self.count_include_pad, nt, y)
        return y


class _Relu(_Step):
    """``ReLU.forward``'s arithmetic; in place when its input is a plan buffer."""

    __slots__ = ("compiled",)

    def __init__(self, shape, dtype, inplace):
        _check_input("ReLU", _probe(shape, dtype), range(1, 33))
        super().__init__(_INPLACE if inplace else _BUFFER, shape)
        # ReLU._apply's rule, decided once for this shape (plan buffers are contiguous)
        self.compiled = None
        if relu_uses_kernel(int(np.prod(shape))):
            self.compiled = _specialized(_kernels.relu_forward, dtype)

    def run(self, x, y, nt):
        if y is None:
            y = x
        if self.compiled is not None:
            self.compiled(x.reshape(-1), nt, y.reshape(-1))
        else:
            np.maximum(x, 0, out=y)
        return y


class _Activation(_Step):
    """Sigmoid, Tanh, Softmax: the layer's own ``_apply`` (it reads only its config)."""

    __slots__ = ("apply",)

    def __init__(self, layer, shape, dtype):
        _check_input(type(layer).__name__, _probe(shape, dtype), range(1, 33))
        super().__init__(_BUFFER, shape)
        self.apply = layer._apply

    def run(self, x, y, nt):
        self.apply(x, y)
        return y


class _BatchNorm(_Step):
    """Evaluation-mode batch norm with the running statistics read at every call:
    the operations of ``_BatchNorm.forward`` in the same order (same bits)."""

    __slots__ = ("layer", "bshape")

    def __init__(self, layer, shape, dtype):
        owner = type(layer).__name__
        _check_input(owner, _probe(shape, dtype), layer._ndims, layer.dtype)
        if shape[1] != layer.num_features:
            raise ValueError(
                f"{owner}: expected {layer.num_features} channels on axis 1, got input of "
                f"shape {tuple(shape)}"
            )
        super().__init__(_BUFFER, shape)
        self.layer = layer
        self.bshape = (1, -1) + (1,) * (len(shape) - 2)

    def run(self, x, y, nt):
        layer, bshape = self.layer, self.bshape
        invstd = (1.0 / np.sqrt(layer.running_var + layer.eps)).astype(x.dtype)
        np.subtract(x, layer.running_mean.reshape(bshape), out=y)
        y *= invstd.reshape(bshape)
        if layer.affine:
            np.multiply(y, layer.weight.data.reshape(bshape), out=y)
            y += layer.bias.data.reshape(bshape)
        return y


class _Reshape(_Step):
    """Flatten: a view of the input."""

    __slots__ = ()

    def __init__(self, shape):
        n = shape[0]
        super().__init__(_VIEW, (n, int(np.prod(shape[1:]))))

    def run(self, x, y, nt):
        return x.reshape(self.out_shape)


class _Identity(_Step):
    """Dropout in evaluation mode."""

    __slots__ = ()

    def __init__(self, shape, dtype):
        _check_input("Dropout", _probe(shape, dtype), range(1, 33))
        super().__init__(_VIEW, shape)

    def run(self, x, y, nt):
        return x


# Layers whose evaluation-mode forward the plan computes itself. Exact types:
# a subclass may override forward, so it is not assumed to compute the same.
_KNOWN = (Conv2d, Conv1d, ReLU, MaxPool2d, AvgPool2d, Linear, Flatten, Dropout, Sigmoid, Tanh,
          Softmax, BatchNorm1d, BatchNorm2d)


def _flat_layers(model):
    """The layers of ``model`` with nested ``Sequential`` models spliced in."""
    return [layer for _, layer in _flat_paths(model)]


def _flat_paths(model, prefix=()):
    """``(path, layer)`` for the layers of ``_flat_layers``; ``path`` is the index
    in each enclosing model, outermost first (for error messages)."""
    out = []
    for j, layer in enumerate(model.layers):
        if type(layer) is type(model):
            out.extend(_flat_paths(layer, prefix + (j,)))
        else:
            out.append((prefix + (j,), layer))
    return out


def plannable(model):
    """Whether every layer of ``model`` (nested Sequentials included) can be planned."""
    return all(type(layer) in _KNOWN for layer in _flat_layers(model))


class InferencePlan:
    """The evaluation-mode forward of a ``Sequential`` for one input shape and dtype.

    Parameters
    ----------
    model : Sequential
        Every layer must be of a type in ``_KNOWN`` (see ``plannable``).
    shape : tuple of int
        Input shape, batch axis included.
    dtype : numpy dtype

    Raises
    ------
    ValueError, TypeError
        The input does not fit the layers: the message the layer (or the
        kernel API) would give for the same input.

    Attributes
    ----------
    out_shape : tuple of int
    mode_layers : list of Module
        Layers whose forward depends on ``training`` (dropout, batch norm): a
        ``forward`` with any of them in training mode must not use the plan.
    """

    def __init__(self, model, shape, dtype):
        dtype = np.dtype(dtype)
        paths = _flat_paths(model)
        layers = [layer for _, layer in paths]
        self.shape = tuple(shape)
        self.dtype = dtype
        self.mode_layers = [m for m in layers if isinstance(m, (Dropout, BatchNorm1d, BatchNorm2d))]
        steps = []
        shape = self.shape
        owned = False  # whether the current value is a buffer of the plan (not the caller's x)
        # the conv+ReLU pairs Sequential._forward fuses, decided by the same function
        for i, fused in forward_steps(layers, model.fuse_conv_relu):
            try:
                step = self._step(layers[i], shape, dtype, fused, owned)
            except LayerInputError:
                raise
            except ValueError as exc:
                # the message Sequential._forward gives for the same input
                labels = [".".join(map(str, p)) for p, _ in paths]
                err = layer_input_error(layers, i, shape, exc, self.shape, labels)
                raise LayerInputError(paths[i][0], err.layer, err.reason) from exc
            if step.kind == _BUFFER:
                owned = True
            steps.append(step)
            shape = step.out_shape
        self.steps = steps
        self.out_shape = shape
        self._finish()

    @staticmethod
    def _step(layer, shape, dtype, relu, owned):
        """The step for ``layer`` (``relu``: a conv layer that applies the next layer's ReLU)."""
        kind = type(layer)
        if kind in (Conv2d, Conv1d):
            return _Conv(layer, shape, dtype, relu)
        if kind is Linear:
            step = _Linear(layer, shape, dtype)
        elif kind is MaxPool2d:
            step = _MaxPool(layer, shape, dtype)
        elif kind is AvgPool2d:
            step = _AvgPool(layer, shape, dtype)
        elif kind is ReLU:
            step = _Relu(shape, dtype, inplace=owned)
        elif kind in (Sigmoid, Tanh, Softmax):
            step = _Activation(layer, shape, dtype)
        elif kind in (BatchNorm1d, BatchNorm2d):
            step = _BatchNorm(layer, shape, dtype)
        elif kind is Flatten:
            step = _Reshape(shape)
        elif kind is Dropout:
            step = _Identity(shape, dtype)
        else:
            raise TypeError(f"InferencePlan: cannot plan a {kind.__name__} layer")
        return step

    def _finish(self):
        steps, shape = self.steps, self.out_shape
        # The step whose buffer the result is: a caller's `out` can take its
        # place when only in-place steps follow it and the shapes agree.
        self.producer = None
        for j in range(len(steps) - 1, -1, -1):
            if steps[j].kind == _BUFFER:
                if steps[j].out_shape == shape:
                    self.producer = j
                break
            if steps[j].kind != _INPLACE:
                break
        self._buffer_shapes = [s.out_shape if s.kind == _BUFFER else None for s in steps]
        self._local = threading.local()

    def _buffers(self):
        """This thread's output arrays, one per buffer-writing step (made on first use)."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            bufs = [None if s is None else np.empty(s, self.dtype) for s in self._buffer_shapes]
            self._local.bufs = bufs
        return bufs

    def run(self, x, out=None):
        """Evaluate the model on ``x``.

        Parameters
        ----------
        x : ndarray of the plan's shape and dtype
        out : ndarray of shape ``out_shape``, C-contiguous, optional
            Where to write the result (the last kernel writes straight into
            it when it can).

        Returns
        -------
        ndarray
            ``out``, or else an array that belongs to the calling thread and
            is overwritten by its next run of this plan.

        Raises
        ------
        StalePlan
            A parameter was replaced by an array of another shape or dtype.
        """
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        if x.shape[0] == 0:  # the kernels are not called for empty batches
            y = np.empty(self.out_shape, self.dtype)
            if out is not None:
                return out
            return y
        bufs = self._buffers()
        nt = F.get_num_threads()
        producer = self.producer if out is not None else None
        for i, step in enumerate(self.steps):
            x = step.run(x, out if i == producer else bufs[i], nt)
        if out is not None and x is not out:
            np.copyto(out, x)
            return out
        return x
