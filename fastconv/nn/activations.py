"""More activations and global / adaptive pooling, in NumPy.

Activations whose derivative needs the input (``LeakyReLU``, ``ELU``,
``GELU``, ``SiLU``) keep a reference to it for ``backward``; ``LogSoftmax``
keeps its output. Pooling layers keep the input shape (and, for
``GlobalMaxPool2d``, the argmax). All follow the layer contract of
``fastconv.nn.layers``: nothing is kept inside ``no_grad()``, outputs go into
reused buffers inside a ``Sequential``, ``backward`` returns None when the
input gradient is not needed, and ``get_config`` gives the constructor
arguments (the layers are registered, so ``load_model`` rebuilds them).
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Tuple, Union

import numpy as np

from .layers import _check_input, _Layer, register_layer
from .module import is_grad_enabled

__all__ = [
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "LogSoftmax",
    "GlobalAvgPool2d",
    "GlobalMaxPool2d",
    "AdaptiveAvgPool2d",
]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_KAPPA = 0.044715
# math.erf is applied in blocks of this many elements when SciPy is missing:
# it bounds the temporary Python floats to a few MB whatever the input size
_ERF_BLOCK = 1 << 16

try:  # SciPy's erf is a ufunc; NumPy has none
    from scipy.special import erf as _scipy_erf
except ImportError:  # pragma: no cover - exercised only without SciPy
    _scipy_erf = None


def _erf(x):
    """erf of a float64 array, element-wise.

    SciPy's ufunc when installed, else the C library's ``math.erf`` element by
    element (slower, same accuracy: both are within about one ulp).
    """
    if _scipy_erf is not None:
        return _scipy_erf(x)
    flat = x.ravel()
    out = np.empty(flat.shape, np.float64)
    for start in range(0, flat.size, _ERF_BLOCK):
        block = flat[start:start + _ERF_BLOCK].tolist()
        out[start:start + len(block)] = [math.erf(v) for v in block]
    return out.reshape(x.shape)


def _number(owner, name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value}")
    return value


class _InputActivation(_Layer):
    """Element-wise activation whose derivative is a function of its input."""

    def forward(self, x):
        """Apply the activation element-wise (any shape, float32 or float64)."""
        _check_input(type(self).__name__, x, range(1, 33))
        y = self._buffer("y", x.shape, x.dtype)
        self._apply(x, y)
        self._x = x if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """dL/dx from dL/dy, using the cached input."""
        x = self._saved("_x")
        if not self.needs_input_grad:
            return None
        if grad_out.shape != x.shape:
            raise ValueError(f"{type(self).__name__}.backward: grad_out has shape "
                             f"{grad_out.shape}, the forward output had shape {x.shape}")
        gx = self._buffer("gx", x.shape, x.dtype)
        self._grad(grad_out, x, gx)
        return gx


@register_layer
class LeakyReLU(_InputActivation):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise (``torch.nn.LeakyReLU``).

    Parameters
    ----------
    negative_slope : float, default 0.01
        Keras calls it ``alpha`` (Keras's default is 0.3).

    Notes
    -----
    The derivative at 0 is taken as ``negative_slope``, as in PyTorch.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = _number("LeakyReLU", "negative_slope", negative_slope)

    def _apply(self, x, y):
        np.multiply(x, self.negative_slope, out=y)
        np.copyto(y, x, where=x > 0)

    def _grad(self, g, x, gx):
        np.multiply(g, self.negative_slope, out=gx)
        np.copyto(gx, g, where=x > 0)

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"negative_slope": self.negative_slope}


@register_layer
class ELU(_InputActivation):
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise (``torch.nn.ELU``).

    Parameters
    ----------
    alpha : float, default 1.0
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = _number("ELU", "alpha", alpha)

    def _apply(self, x, y):
        # expm1 on the negative part only: exp of a large positive x would overflow
        np.minimum(x, 0, out=y)
        np.expm1(y, out=y)
        y *= self.alpha
        np.copyto(y, x, where=x > 0)

    def _grad(self, g, x, gx):
        np.minimum(x, 0, out=gx)
        np.exp(gx, out=gx)
        gx *= self.alpha
        gx *= g
        np.copyto(gx, g, where=x > 0)

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"alpha": self.alpha}


@register_layer
class GELU(_InputActivation):
    """Gaussian error linear unit ``x * Phi(x)`` (``torch.nn.GELU``).

    Parameters
    ----------
    approximate : {"none", "tanh"}, default "none"
        "none": exact, ``Phi(x) = (1 + erf(x / sqrt(2))) / 2``; "tanh":
        ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``.

    Notes
    -----
    Computed in float64 and rounded to the input's dtype. The exact form uses
    ``scipy.special.erf`` when SciPy is installed and ``math.erf`` element by
    element otherwise (much slower on large inputs).
    """

    def __init__(self, approximate: Literal["none", "tanh"] = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _apply(self, x, y):
        x64 = x.astype(np.float64, copy=False)
        if self.approximate == "tanh":
            inner = np.tanh(_SQRT_2_OVER_PI * (x64 + _GELU_KAPPA * x64 * x64 * x64))
        else:
            inner = _erf(x64 * _INV_SQRT_2)
        inner += 1.0
        inner *= 0.5
        np.multiply(x64, inner, out=y, casting="same_kind")

    def _grad(self, g, x, gx):
        x64 = x.astype(np.float64, copy=False)
        if self.approximate == "tanh":
            # d/dx of 0.5*x*(1+t), t = tanh(u), u = k*(x + c*x^3)
            t = np.tanh(_SQRT_2_OVER_PI * (x64 + _GELU_KAPPA * x64 * x64 * x64))
            du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_KAPPA * x64 * x64)
            d = 0.5 * (1.0 + t) + 0.5 * x64 * (1.0 - t * t) * du
        else:
            # Phi(x) + x * phi(x)
            d = 0.5 * (1.0 + _erf(x64 * _INV_SQRT_2))
            d += x64 * _INV_SQRT_2PI * np.exp(-0.5 * x64 * x64)
        np.multiply(g, d, out=gx, casting="same_kind")

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"approximate": self.approximate}


@register_layer
class SiLU(_InputActivation):
    """``x * sigmoid(x)``, also called swish (``torch.nn.SiLU``).

    Notes
    -----
    The sigmoid is ``(1 + tanh(x/2)) / 2``, which does not overflow.
    """

    @staticmethod
    def _sigmoid(x, out):
        np.multiply(x, 0.5, out=out)
        np.tanh(out, out=out)
        out += 1
        out *= 0.5
        return out

    def _apply(self, x, y):
        self._sigmoid(x, y)
        y *= x

    def _grad(self, g, x, gx):
        # s * (1 + x * (1 - s))
        s = self._sigmoid(x, np.empty_like(x))
        np.subtract(1, s, out=gx)
        gx *= x
        gx += 1
        gx *= s
        gx *= g


@register_layer
class LogSoftmax(_Layer):
    """``log(softmax(x))`` along ``axis`` (default 1), computed as ``x - logsumexp(x)``.

    Parameters
    ----------
    axis : int, default 1

    Notes
    -----
    Pair with ``NLLLoss`` (the two together are ``CrossEntropyLoss`` on the
    logits). ``backward``: ``g - exp(y) * sum(g)`` along ``axis``.
    """

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = int(axis)

    def forward(self, x):
        """Log-probabilities of ``x`` (any shape with ``axis``, float32 or float64)."""
        _check_input("LogSoftmax", x, range(1, 33))
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"LogSoftmax: axis {self.axis} is out of range for input of "
                             f"shape {x.shape}")
        y = self._buffer("y", x.shape, x.dtype)
        np.subtract(x, x.max(axis=self.axis, keepdims=True), out=y)
        y -= np.log(np.exp(y).sum(axis=self.axis, keepdims=True))
        self._y = y if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """dL/dx from dL/dy."""
        y = self._saved("_y")
        if not self.needs_input_grad:
            return None
        gx = self._buffer("gx", y.shape, y.dtype)
        np.exp(y, out=gx)
        gx *= grad_out.sum(axis=self.axis, keepdims=True)
        np.subtract(grad_out, gx, out=gx)
        return gx

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"axis": self.axis}


# -- global and adaptive pooling ------------------------------------------------
@register_layer
class GlobalAvgPool2d(_Layer):
    """Mean over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with ``keepdims``.

    Parameters
    ----------
    keepdims : bool, default False
        False gives Keras's ``GlobalAveragePooling2D`` shape (ready for
        ``Linear``); True gives that of PyTorch's ``AdaptiveAvgPool2d(1)``.
    """

    def __init__(self, keepdims: bool = False) -> None:
        super().__init__()
        self.keepdims = bool(keepdims)

    def forward(self, x):
        """Average each channel of ``x`` (N, C, H, W)."""
        _check_input(type(self).__name__, x, 4)
        if x.shape[2] * x.shape[3] == 0:
            raise ValueError(f"{type(self).__name__}: input has no pixels, shape {x.shape}")
        n, c = x.shape[:2]
        y = self._buffer("y", (n, c, 1, 1) if self.keepdims else (n, c), x.dtype)
        np.mean(x, axis=(2, 3), out=y.reshape(n, c))
        self._x_shape = x.shape if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """Spread each gradient evenly over its channel's H*W pixels."""
        shape = self._saved("_x_shape")
        if not self.needs_input_grad:
            return None
        n, c, h, w = shape
        gx = self._buffer("gx", shape, grad_out.dtype)
        gx[...] = grad_out.reshape(n, c, 1, 1)
        gx /= h * w
        return gx

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"keepdims": self.keepdims}


@register_layer
class GlobalMaxPool2d(GlobalAvgPool2d):
    """Maximum over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with ``keepdims``.

    Parameters
    ----------
    keepdims : bool, default False

    Notes
    -----
    Ties go to the first pixel in raster order (as ``MaxPool2d``); a NaN
    pixel is the maximum (NumPy's and PyTorch's rule).
    """

    def forward(self, x):
        """Maximum of each channel of ``x`` (N, C, H, W)."""
        _check_input("GlobalMaxPool2d", x, 4)
        n, c, h, w = x.shape
        if h * w == 0:
            raise ValueError(f"GlobalMaxPool2d: input has no pixels, shape {x.shape}")
        flat = x.reshape(n, c, h * w)
        idx = np.argmax(flat, axis=2)
        y = self._buffer("y", (n, c, 1, 1) if self.keepdims else (n, c), x.dtype)
        y.reshape(n, c)[...] = np.take_along_axis(flat, idx[:, :, None], axis=2)[:, :, 0]
        if is_grad_enabled():
            self._x_shape, self._idx = x.shape, idx
        else:
            self._x_shape = self._idx = None
        return y

    def backward(self, grad_out):
        """Route each gradient to its channel's argmax pixel."""
        shape = self._saved("_x_shape")
        if not self.needs_input_grad:
            return None
        n, c, h, w = shape
        gx = self._buffer("gx", shape, grad_out.dtype)
        gx.fill(0)
        np.put_along_axis(gx.reshape(n, c, h * w), self._idx[:, :, None],
                          grad_out.reshape(n, c, 1), axis=2)
        return gx


def _adaptive_bins(size, out):
    """PyTorch's adaptive bins: ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


@register_layer
class AdaptiveAvgPool2d(_Layer):
    """Average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``).

    Parameters
    ----------
    output_size : int, (int or None, int or None)
        ``(H_out, W_out)``; None keeps that input dimension.

    Notes
    -----
    Output cell ``(i, j)`` averages rows ``floor(i*H/H_out)`` to
    ``ceil((i+1)*H/H_out) - 1`` and the same for columns, so neighbouring
    bins overlap when ``H_out`` does not divide ``H``.
    """

    def __init__(self, output_size: Union[int, Tuple[Optional[int], Optional[int]]]) -> None:
        super().__init__()
        pair = (output_size, output_size) if not isinstance(output_size, (tuple, list)) \
            else tuple(output_size)
        if len(pair) != 2 or not all(
                v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                              and v >= 1) for v in pair):
            raise ValueError(
                "AdaptiveAvgPool2d: output_size must be an int >= 1 or a pair of ints >= 1 "
                f"(or None), got {output_size!r}")
        self.output_size = tuple(None if v is None else int(v) for v in pair)

    def _out_hw(self, h, w):
        oh, ow = self.output_size
        return (h if oh is None else oh), (w if ow is None else ow)

    def forward(self, x):
        """Pool ``x`` (N, C, H, W) to (N, C, H_out, W_out)."""
        _check_input("AdaptiveAvgPool2d", x, 4)
        n, c, h, w = x.shape
        oh, ow = self._out_hw(h, w)
        if h == 0 or w == 0:
            raise ValueError(f"AdaptiveAvgPool2d: input has no pixels, shape {x.shape}")
        y = self._buffer("y", (n, c, oh, ow), x.dtype)
        rows, cols = _adaptive_bins(h, oh), _adaptive_bins(w, ow)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                np.mean(x[:, :, r0:r1, c0:c1], axis=(2, 3), out=y[:, :, i, j])
        self._x_shape = x.shape if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """Spread each output gradient evenly over its bin (overlaps add up)."""
        shape = self._saved("_x_shape")
        if not self.needs_input_grad:
            return None
        n, c, h, w = shape
        oh, ow = self._out_hw(h, w)
        gx = self._buffer("gx", shape, grad_out.dtype)
        gx.fill(0)
        for i, (r0, r1) in enumerate(_adaptive_bins(h, oh)):
            for j, (c0, c1) in enumerate(_adaptive_bins(w, ow)):
                share = grad_out[:, :, i, j] / grad_out.dtype.type((r1 - r0) * (c1 - c0))
                gx[:, :, r0:r1, c0:c1] += share[:, :, None, None]
        return gx

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"output_size": list(self.output_size)}
