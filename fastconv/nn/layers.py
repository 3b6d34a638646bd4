"""Layers: thin objects that hold parameters and call the functional kernels.

Convolution and pooling go through ``fastconv.conv2d`` / ``conv2d_backward`` /
``max_pool2d`` / ``avg_pool2d`` and their backward kernels; nothing convolves
in Python. Dense layers go through ``fastconv.linear`` / ``linear_backward``
(fastconv's GEMM, not NumPy's BLAS); activation, dropout and batch-norm layers
are a few whole-array NumPy calls each.

All layers take and return NCHW arrays (dense layers ``(N, features)``) of the
layer's dtype (float32 by default, float64 for gradient checks); a layer with
parameters raises ``TypeError`` for input of another dtype rather than
silently copying it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Literal, Tuple, Type, TypeVar, Union

import numpy as np
from numpy.typing import DTypeLike

from .. import functional as F
from . import init as _init
from .module import Array, Module, Parameter, is_grad_enabled

# Types of the constructor arguments, for type checkers (the run-time checks are
# the validators below). Padding's Literal makes a typo such as 'samee' a type error.
IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], Literal["same", "valid"]]
# A name in fastconv.nn.init or a callable (shape, rng, dtype) -> ndarray.
Initializer = Union[str, Callable[..., Any]]
RngLike = Union[None, int, np.random.Generator]
_ModuleT = TypeVar("_ModuleT", bound=Type[Module])

__all__ = [
    "register_layer",
    "get_layer_class",
    "layer_from_config",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "Linear",
    "Dense",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Dropout",
    "BatchNorm1d",
    "BatchNorm2d",
]

_LAYERS: Dict[str, Type[Module]] = {}


def register_layer(cls: _ModuleT) -> _ModuleT:
    """Class decorator: make a ``Module`` subclass loadable by name.

    ``load_model`` rebuilds every layer as ``cls(**config)`` from the class
    name and ``get_config()`` saved in the file, so a custom layer must be
    registered (and its module imported) before loading a model that uses it.

    Parameters
    ----------
    cls : type
        A ``Module`` subclass whose ``get_config()`` returns its constructor
        arguments.

    Returns
    -------
    cls
    """
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_layer: expected a Module subclass, got {cls!r}")
    _LAYERS[cls.__name__] = cls
    return cls


# Type[Any], not Type[Module]: the registered classes are called through
# ``from_config``, which only the concrete layer classes (not Module) define.
def get_layer_class(name: str) -> Type[Any]:
    """The registered layer class called ``name``.

    Raises
    ------
    ValueError
        No layer of that name is registered.
    """
    try:
        return _LAYERS[name]
    except KeyError:
        raise ValueError(
            f"unknown layer class {name!r}; registered layers: {sorted(_LAYERS)} "
            "(register custom layers with fastconv.nn.register_layer)"
        ) from None


def layer_from_config(spec: Dict[str, Any]) -> Module:
    """Build a layer from ``{"class": name, "config": {...}}``.

    Parameters
    ----------
    spec : dict

    Returns
    -------
    Module
    """
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(f"layer spec must be a dict with a 'class' key, got {spec!r}")
    return get_layer_class(spec["class"]).from_config(spec.get("config", {}))


def _layer_spec(layer):
    return {"class": type(layer).__name__, "config": layer.get_config()}


# -- argument checking -------------------------------------------------------
def _pair(name, value, allow_zero=False, owner=""):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    low = 0 if allow_zero else 1
    if min(pair) < low:
        raise ValueError(f"{owner}: {name} must be >= {low}, got {value!r}")
    return pair


def _positive_int(name, value, owner):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be >= 1, got {value}")
    return int(value)


def _float_dtype(dtype, owner):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dt}")
    return dt


def _compact(pair):
    """(3, 3) -> 3 for configs and reprs; asymmetric pairs stay as lists."""
    if isinstance(pair, str):
        return pair
    return pair[0] if pair[0] == pair[1] else list(pair)


def _check_input(owner, x, ndim, dtype=None):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: input must be a numpy.ndarray, got {type(x).__name__}")
    if isinstance(ndim, int):
        ndim = (ndim,)
    if x.ndim not in ndim:
        want = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(f"{owner}: expected {want} input, got input of shape {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: expected input of dtype {dtype} (the layer's dtype), got {x.dtype}; "
            f"convert with x.astype(np.{dtype})"
        )
    if dtype is None and x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{owner}: expected float32 or float64 input, got {x.dtype}")


def _rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class _Layer(Module):
    @classmethod
    def from_config(cls, config):
        """Rebuild the layer from ``get_config()`` output (weights are fresh)."""
        return cls(**config)


# -- convolution -------------------------------------------------------------
@register_layer
class Conv2d(_Layer):
    """2-D convolution (cross-correlation) over NCHW input.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int, (int, int), 'same' or 'valid', default 0
        Zero padding on both sides; ``'same'`` (stride 1 only) keeps H and W.
    dilation : int or (int, int), default 1
    groups : int, default 1
        ``in_channels`` and ``out_channels`` must both be divisible by it.
    bias : bool, default True
    weight_init : str or callable, default "he_normal"
        See ``fastconv.nn.init`` (He suits the ReLU nets this package builds).
    bias_init : str or callable, default "zeros"
    rng : numpy.random.Generator, int or None
        Source of the initial weights.
    dtype : float32 or float64, default float32

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels // groups, kh, kw)
    bias : Parameter of shape (out_channels,) or None

    Notes
    -----
    ``x`` of shape (N, in_channels, H, W) gives (N, out_channels, H_out, W_out)
    with ``H_out = (H + 2*pad - dilation*(kh-1) - 1) // stride + 1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        weight_init: Initializer = "he_normal",
        bias_init: Initializer = "zeros",
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        owner = "Conv2d"
        self.in_channels = _positive_int("in_channels", in_channels, owner)
        self.out_channels = _positive_int("out_channels", out_channels, owner)
        self.kernel_size = _pair("kernel_size", kernel_size, owner=owner)
        self.stride = _pair("stride", stride, owner=owner)
        self.dilation = _pair("dilation", dilation, owner=owner)
        self.groups = _positive_int("groups", groups, owner)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"Conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' needs stride 1, got stride {stride!r}")
            self.padding = padding
        else:
            self.padding = _pair("padding", padding, allow_zero=True, owner=owner)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"Conv2d: in_channels ({self.in_channels}) and out_channels "
                f"({self.out_channels}) must be divisible by groups ({self.groups})"
            )
        self.dtype = _float_dtype(dtype, owner)
        self.weight_init = weight_init
        self.bias_init = bias_init
        rng = _rng(rng)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(_init.get(weight_init)(shape, rng, self.dtype))
        self.bias = (
            Parameter(_init.get(bias_init)((self.out_channels,), rng, self.dtype), regularize=False)
            if bias
            else None
        )
        self._x = None

    def _hyper(self):
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, x):
        """Convolve ``x`` of shape (N, in_channels, H, W)."""
        return self._forward(x, None)

    def _forward(self, x, activation):
        # activation="relu" is used by Sequential when a ReLU layer follows:
        # the kernel rectifies in the same pass over the output
        _check_input("Conv2d", x, 4, self.dtype)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv2d: expected input with {self.in_channels} channels, "
                f"got input of shape {x.shape}"
            )
        w = self.weight.data
        b = None if self.bias is None else self.bias.data
        out = None
        if self.reuse_buffers:
            shape = F.conv2d_output_shape(x.shape, w.shape, self.stride, self.padding,
                                          self.dilation, self.groups)
            out = self._buffer("y", shape, x.dtype)
        y = F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups, out=out,
                     activation=activation)
        self._x = x if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """Add dL/dweight, dL/dbias into ``.grad``; return dL/dx (None if not needed)."""
        x = self._saved("_x")
        w = self.weight
        b = self.bias
        mask = (
            bool(self.needs_input_grad),
            w.requires_grad,
            b is not None and b.requires_grad,
        )
        if not any(mask):
            return None
        # Parameter-gradient scratch never escapes the layer, so it is always
        # reused; grad-input is a fresh array unless the owner allows reuse.
        out = (
            self._buffer("gx", x.shape, x.dtype) if mask[0] and self.reuse_buffers else None,
            self._scratch_array("gw", w.data) if mask[1] else None,
            self._scratch_array("gb", b.data) if mask[2] else None,
        )
        gx, gw, gb = F.conv2d_backward(
            grad_out, x, w.data, *self._hyper(), output_mask=mask, out=out
        )
        if mask[1]:
            np.add(w.grad, gw, out=w.grad)
        if mask[2]:
            np.add(b.grad, gb, out=b.grad)
        return gx

    def _scratch_array(self, name, like):
        buf = self._scratch.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = np.empty_like(like)
            self._scratch[name] = buf
        return buf

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        cfg = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": _compact(self.padding),
            "dilation": _compact(self.dilation),
            "groups": self.groups,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }
        for key in ("weight_init", "bias_init"):
            if isinstance(getattr(self, key), str):
                cfg[key] = getattr(self, key)
        return cfg


# -- pooling -----------------------------------------------------------------
class _Pool2d(_Layer):
    def __init__(self, kernel_size: IntPair, stride: Union[IntPair, None] = None,
                 padding: IntPair = 0) -> None:
        super().__init__()
        owner = type(self).__name__
        self.kernel_size = _pair("kernel_size", kernel_size, owner=owner)
        self.stride = self.kernel_size if stride is None else _pair("stride", stride, owner=owner)
        self.padding = _pair("padding", padding, allow_zero=True, owner=owner)
        if self.padding[0] * 2 > self.kernel_size[0] or self.padding[1] * 2 > self.kernel_size[1]:
            raise ValueError(
                f"{owner}: padding {padding!r} must be at most half of kernel_size {kernel_size!r}"
            )
        self._x_shape = None

    def _pool_out_shape(self, shape):
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": _compact(self.padding),
        }


@register_layer
class MaxPool2d(_Pool2d):
    """2-D max pooling over NCHW input.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0
        Implicit -inf padding, at most half the kernel.

    Notes
    -----
    ``H_out = (H + 2*pad - kh) // stride + 1``. Ties go to the first element in
    raster order. In training (outside ``no_grad``) the argmax indices are
    kept for ``backward``.
    """

    def forward(self, x):
        """Pool ``x`` of shape (N, C, H, W)."""
        _check_input("MaxPool2d", x, 4)
        args = (self.kernel_size, self.stride, self.padding)
        if not is_grad_enabled():
            self._x_shape = self._indices = self._y = None
            out = self._buffer("y", self._pool_out_shape(x.shape), x.dtype) if self.reuse_buffers else None
            return F.max_pool2d(x, *args, out=out)
        oshape = self._pool_out_shape(x.shape)
        out = self._buffer("y", oshape, x.dtype) if self.reuse_buffers else None
        idx = self._buffer("indices", oshape, np.int64) if self.reuse_buffers else None
        y, self._indices = F.max_pool2d(x, *args, return_indices=True, out=out, indices_out=idx)
        self._x_shape = x.shape
        self._y = y
        return y

    def backward(self, grad_out):
        """Route ``grad_out`` to the argmax positions; return dL/dx."""
        shape = self._saved("_x_shape")
        if not self.needs_input_grad:
            return None
        out = self._buffer("gx", shape, grad_out.dtype) if self.reuse_buffers else None
        return F.max_pool2d_backward(grad_out, self._indices, shape, out=out)

    def _backward_after_relu(self, grad_out):
        """Backward of ``ReLU`` followed by this layer, in one trip over the input.

        Every input position that receives gradient is the argmax of a window,
        and there the ReLU output equals this layer's output; elsewhere the
        gradient is zero either way. So ReLU's mask (zero where output <= 0)
        is applied to ``grad_out`` on the pooled grid, four times smaller for
        a 2x2 pool, and the ReLU layer's own pass over the input is skipped.
        The result is bitwise the one of ``ReLU.backward(self.backward(g))``.
        """
        y = self._saved("_y")
        if not self.needs_input_grad:
            return None
        g = self._buffer("g_relu", y.shape, y.dtype) if self.reuse_buffers else np.empty_like(y)
        ReLU._grad(grad_out, y, g)
        return self.backward(g)


@register_layer
class AvgPool2d(_Pool2d):
    """2-D average pooling over NCHW input.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0
    count_include_pad : bool, default True
        Whether zero padding counts in the divisor.

    Notes
    -----
    ``H_out = (H + 2*pad - kh) // stride + 1``.
    """

    def __init__(self, kernel_size: IntPair, stride: Union[IntPair, None] = None,
                 padding: IntPair = 0, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        """Pool ``x`` of shape (N, C, H, W)."""
        _check_input("AvgPool2d", x, 4)
        out = self._buffer("y", self._pool_out_shape(x.shape), x.dtype) if self.reuse_buffers else None
        y = F.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding,
            count_include_pad=self.count_include_pad, out=out,
        )
        self._x_shape = x.shape if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """Spread ``grad_out`` evenly over each window; return dL/dx."""
        shape = self._saved("_x_shape")
        if not self.needs_input_grad:
            return None
        out = self._buffer("gx", shape, grad_out.dtype) if self.reuse_buffers else None
        return F.avg_pool2d_backward(
            grad_out, shape, self.kernel_size, self.stride, self.padding,
            count_include_pad=self.count_include_pad, out=out,
        )

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


# -- dense -------------------------------------------------------------------
@register_layer
class Linear(_Layer):
    """Fully connected layer ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    weight_init : str or callable, default "he_normal"
    bias_init : str or callable, default "zeros"
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64, default float32

    Attributes
    ----------
    weight : Parameter of shape (out_features, in_features)
    bias : Parameter of shape (out_features,) or None

    Notes
    -----
    Input (N, in_features), output (N, out_features). ``Dense`` is an alias.

    Every product runs on fastconv's own kernels (``fastconv.linear`` and
    ``linear_backward``), on the same OpenMP team as the convolutions, never
    on NumPy's BLAS: a second thread pool in the same process would compete
    with the team for the cores, and a route that changed with the batch size
    would change a sample's output with the batch it is in. Each output row
    is bitwise the same in any batch, at any position, for any thread count.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        weight_init: Initializer = "he_normal",
        bias_init: Initializer = "zeros",
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = _positive_int("in_features", in_features, "Linear")
        self.out_features = _positive_int("out_features", out_features, "Linear")
        self.dtype = _float_dtype(dtype, "Linear")
        self.weight_init = weight_init
        self.bias_init = bias_init
        rng = _rng(rng)
        self.weight = Parameter(
            _init.get(weight_init)((self.out_features, self.in_features), rng, self.dtype)
        )
        self.bias = (
            Parameter(_init.get(bias_init)((self.out_features,), rng, self.dtype), regularize=False)
            if bias
            else None
        )
        self._x = None

    def forward(self, x):
        """``x`` of shape (N, in_features) -> (N, out_features)."""
        _check_input("Linear", x, 2, self.dtype)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"Linear: expected input of shape (N, {self.in_features}), got shape {x.shape}"
            )
        y = self._buffer("y", (x.shape[0], self.out_features), x.dtype)
        F.linear(x, self.weight.data, None if self.bias is None else self.bias.data, out=y)
        self._x = x if is_grad_enabled() else None
        return y

    @staticmethod
    def _grad_target(p):
        """``p.grad`` if fastconv's kernels can add into it in place, else None."""
        g = p.grad
        ok = (isinstance(g, np.ndarray) and g.dtype == p.data.dtype and g.shape == p.data.shape
              and g.flags.c_contiguous and g.flags.writeable)
        return g if ok else None

    def backward(self, grad_out):
        """Add dL/dweight, dL/dbias into ``.grad``; return dL/dx (None if not needed).

        ``grad_out`` of another float dtype is converted to the layer's dtype.
        """
        x = self._saved("_x")
        w, b = self.weight, self.bias
        mask = (bool(self.needs_input_grad), w.requires_grad, b is not None and b.requires_grad)
        if not any(mask):
            return None
        if isinstance(grad_out, np.ndarray) and grad_out.dtype != x.dtype:
            grad_out = grad_out.astype(x.dtype)
        gx = self._buffer("gx", x.shape, x.dtype) if mask[0] else None
        # .grad is added into in place; a grad array the kernels cannot write
        # (replaced by the caller with a view, another dtype, ...) gets the
        # product in scratch first
        targets = [None, None]
        for i, p in ((0, w), (1, b)):
            if mask[i + 1]:
                targets[i] = self._grad_target(p)
                if targets[i] is None:
                    targets[i] = self._scratch.setdefault(f"g{i}", np.zeros_like(p.data))
                    targets[i].fill(0)
        F.linear_backward(grad_out, x, w.data, output_mask=mask, out=(gx, *targets),
                          accumulate=True)
        for i, p in ((0, w), (1, b)):
            if mask[i + 1] and targets[i] is not p.grad:
                p.grad += targets[i]
        return gx

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        cfg = {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }
        for key in ("weight_init", "bias_init"):
            if isinstance(getattr(self, key), str):
                cfg[key] = getattr(self, key)
        return cfg


Dense = Linear


@register_layer
class Flatten(_Layer):
    """Reshape (N, d1, d2, ...) to (N, d1*d2*...) (a view when possible)."""

    def forward(self, x):
        """Flatten all but the first axis."""
        if not isinstance(x, np.ndarray) or x.ndim < 1:
            raise ValueError(f"Flatten: expected an array with a batch axis, got {x!r}")
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out):
        """Reshape ``grad_out`` back to the input shape."""
        return grad_out.reshape(self._saved("_x_shape"))


# -- activations -------------------------------------------------------------
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


class _Activation(_Layer):
    """Element-wise activation whose derivative is a function of its output."""

    def forward(self, x):
        """Apply the activation element-wise (any shape, float32 or float64)."""
        _check_input(type(self).__name__, x, range(1, 33))
        y = self._buffer("y", x.shape, x.dtype)
        self._apply(x, y)
        self._y = y if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """dL/dx from dL/dy, using the cached output ``y``."""
        y = self._saved("_y")
        if not self.needs_input_grad:
            return None
        gx = self._buffer("gx", y.shape, y.dtype)
        self._grad(grad_out, y, gx)
        return gx


@register_layer
class ReLU(_Activation):
    """``max(x, 0)``; the derivative at 0 is taken as 0."""

    def _apply(self, x, y):
        if x.flags.c_contiguous and relu_uses_kernel(x.size):
            F.relu(x, out=y)
        else:
            np.maximum(x, 0, out=y)

    @staticmethod
    def _grad(g, y, gx):
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

    def _adopt(self, y):
        """Take ``y``, already rectified by the preceding conv kernel, as this layer's output."""
        self._y = y if is_grad_enabled() else None
        return y


@register_layer
class Sigmoid(_Activation):
    """Logistic ``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` (no overflow)."""

    def _apply(self, x, y):
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5

    def _grad(self, g, y, gx):
        np.subtract(1, y, out=gx)
        gx *= y
        gx *= g


@register_layer
class Tanh(_Activation):
    """Hyperbolic tangent."""

    def _apply(self, x, y):
        np.tanh(x, out=y)

    def _grad(self, g, y, gx):
        np.multiply(y, y, out=gx)
        np.subtract(1, gx, out=gx)
        gx *= g


@register_layer
class Softmax(_Activation):
    """Softmax along ``axis`` (default 1, the class axis), max-shifted for stability.

    Parameters
    ----------
    axis : int, default 1

    Notes
    -----
    For classification prefer raw logits with ``CrossEntropyLoss``, which
    fuses the softmax; use this layer for MSE-on-probabilities nets or to get
    probabilities out of a model.
    """

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = int(axis)

    def _apply(self, x, y):
        np.subtract(x, x.max(axis=self.axis, keepdims=True), out=y)
        np.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)

    def _grad(self, g, y, gx):
        np.multiply(g, y, out=gx)
        s = gx.sum(axis=self.axis, keepdims=True)
        np.subtract(g, s, out=gx)
        gx *= y

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"axis": self.axis}


# -- dropout -----------------------------------------------------------------
@register_layer
class Dropout(_Layer):
    """Inverted dropout: in training zero each element with probability ``p``
    and scale the survivors by ``1 / (1 - p)``; identity in evaluation mode.

    Parameters
    ----------
    p : float in [0, 1), default 0.5
        Drop probability.
    rng : numpy.random.Generator, int or None
        Source of the masks; an int seeds a private generator. Its state is
        saved in checkpoints so a resumed run draws the same masks.

    Attributes
    ----------
    mask : ndarray or None
        The scaled keep-mask (0 or ``1/(1-p)``) of the last training forward.
    """

    def __init__(self, p: float = 0.5, rng: RngLike = None) -> None:
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = _rng(rng)
        self.mask = None

    def forward(self, x):
        """Apply a fresh random mask in training; return ``x`` unchanged in eval."""
        _check_input("Dropout", x, range(1, 33))
        if not self.training or self.p == 0.0:
            self.mask = None
            return x
        mask = self._buffer("mask", x.shape, x.dtype)
        self.rng.random(out=mask, dtype=x.dtype)
        # mask <- (u >= p) / (1 - p), in place: no bool temporary
        np.greater_equal(mask, self.p, out=mask, casting="unsafe")
        mask *= 1.0 / (1.0 - self.p)
        self.mask = mask
        y = self._buffer("y", x.shape, x.dtype)
        return np.multiply(x, mask, out=y)

    def backward(self, grad_out):
        """``grad_out * mask`` (or ``grad_out`` itself in eval mode)."""
        if not self.needs_input_grad:
            return None
        if self.mask is None:
            return grad_out
        gx = self._buffer("gx", grad_out.shape, grad_out.dtype)
        return np.multiply(grad_out, self.mask, out=gx)

    def get_config(self):
        """Constructor arguments, JSON-serialisable (the RNG state is saved separately)."""
        return {"p": self.p}


# -- batch normalisation -----------------------------------------------------
class _BatchNorm(_Layer):
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ndims = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Union[float, None] = 0.1,
                 affine: bool = True, *, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_features = _positive_int("num_features", num_features, owner)
        self.eps = float(eps)
        if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{owner}: momentum must be in [0, 1] or None, got {momentum}")
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.dtype = _float_dtype(dtype, owner)
        c = self.num_features
        self.weight = Parameter(np.ones(c, self.dtype), regularize=False) if affine else None
        self.bias = Parameter(np.zeros(c, self.dtype), regularize=False) if affine else None
        self.running_mean = np.zeros(c, self.dtype)
        self.running_var = np.ones(c, self.dtype)
        self.num_batches_tracked = np.zeros((), np.int64)
        self._xhat = None

    def forward(self, x):
        """Normalise per channel: batch statistics in training, running ones in eval."""
        owner = type(self).__name__
        _check_input(owner, x, self._ndims, self.dtype)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{owner}: expected {self.num_features} channels on axis 1, got input of shape {x.shape}"
            )
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        m = x.size // self.num_features
        if self.training:
            if m < 2:
                raise ValueError(
                    f"{owner}: training needs more than one value per channel, got input of shape {x.shape}"
                )
            mean = x.mean(axis=axes)
            xhat = self._buffer("xhat", x.shape, x.dtype)
            np.subtract(x, mean.reshape(bshape), out=xhat)
            var = np.mean(np.square(xhat), axis=axes)
            invstd = 1.0 / np.sqrt(var + self.eps)
            xhat *= invstd.reshape(bshape)
            self.num_batches_tracked += 1
            mom = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean *= 1.0 - mom
            self.running_mean += mom * mean
            self.running_var *= 1.0 - mom
            self.running_var += (mom * m / (m - 1)) * var  # unbiased, as in PyTorch
        else:
            invstd = (1.0 / np.sqrt(self.running_var + self.eps)).astype(x.dtype)
            xhat = self._buffer("xhat", x.shape, x.dtype)
            np.subtract(x, self.running_mean.reshape(bshape), out=xhat)
            xhat *= invstd.reshape(bshape)
        if self.affine:
            y = self._buffer("y", x.shape, x.dtype)
            np.multiply(xhat, self.weight.data.reshape(bshape), out=y)
            y += self.bias.data.reshape(bshape)
        else:
            y = self._buffer("y", x.shape, x.dtype) if self.reuse_buffers else xhat.copy()
            if y is not xhat:
                np.copyto(y, xhat)
        if is_grad_enabled():
            self._xhat, self._invstd, self._bshape, self._axes = xhat, invstd, bshape, axes
            self._batch_stats = self.training
        else:
            self._xhat = None
        return y

    def backward(self, grad_out):
        """Add dL/dweight, dL/dbias into ``.grad``; return dL/dx."""
        xhat = self._saved("_xhat")
        axes, bshape, invstd = self._axes, self._bshape, self._invstd
        if self.affine:
            if self.weight.requires_grad:
                self.weight.grad += np.sum(grad_out * xhat, axis=axes)
            if self.bias.requires_grad:
                self.bias.grad += grad_out.sum(axis=axes)
        if not self.needs_input_grad:
            return None
        gx = self._buffer("gx", xhat.shape, xhat.dtype)
        if self.affine:
            np.multiply(grad_out, self.weight.data.reshape(bshape), out=gx)
        else:
            np.copyto(gx, grad_out)
        if self._batch_stats:
            # dx = invstd * (g - mean(g) - xhat * mean(g * xhat)), g = dL/dxhat
            mean_g = gx.mean(axis=axes).reshape(bshape)
            mean_gx = np.mean(gx * xhat, axis=axes).reshape(bshape)
            gx -= mean_g
            gx -= xhat * mean_gx
        gx *= invstd.reshape(bshape)
        return gx

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "dtype": self.dtype.name,
        }


@register_layer
class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W), per channel C.

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        ``running = (1 - momentum) * running + momentum * batch_stat``
        (PyTorch convention; Keras' ``momentum=0.99`` is ``momentum=0.01``
        here). None uses a cumulative average.
    affine : bool, default True
        Learnable scale ``weight`` (init 1) and shift ``bias`` (init 0).
    dtype : float32 or float64, default float32

    Notes
    -----
    Training mode normalises with the batch mean and biased variance and
    updates ``running_mean`` / ``running_var`` (unbiased variance); eval mode
    uses the running statistics.
    """

    _ndims = (4,)


@register_layer
class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L), per feature C.

    Parameters and behaviour as ``BatchNorm2d``.
    """

    _ndims = (2, 3)
