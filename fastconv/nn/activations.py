"""Activation layers: element-wise functions and (log-)softmax, in NumPy (ReLU in the kernels).

Each is an ``_ElementWise`` layer: ``_apply(x, y)`` writes the output and
``_grad(grad_out, kept, gx)`` the input gradient, from the forward's output
(``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax``, ``LogSoftmax``) or its input
(``LeakyReLU``, ``ELU``, ``GELU``, ``SiLU``), whichever the derivative is a
function of. The scaffold keeps that array only outside ``no_grad()``,
writes into reused buffers inside a ``Sequential``, and returns None from
``backward`` when the input gradient is not needed. ``get_config`` gives
the constructor arguments (the layers are registered, so ``load_model``
rebuilds them).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .. import functional as F
from .layer_base import _check_input, _Layer, register_layer
from .module import is_grad_enabled
# the global and adaptive pools lived here: their old import path keeps working
from .pooling import _adaptive_bins, AdaptiveAvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d  # noqa: F401
from .relu import kernel_relu_propagates_nan, relu_grad, relu_uses_kernel

__all__ = [
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "LogSoftmax",
    "kernel_relu_propagates_nan",
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


class _ElementWise(_Layer):
    """An activation whose derivative is a function of its output or of its input.

    Subclasses define ``_apply(x, y)`` and ``_grad(g, kept, gx)``, where
    ``kept`` is the forward's output (``_keeps = "output"``) or its input
    (``"input"``), and may check the input further in ``_check_shape``.
    """

    _keeps = "output"

    def _check_shape(self, x):
        """Further checks of the input (after the rank and dtype checks)."""

    def forward(self, x):
        """Apply the activation (any shape, float32 or float64)."""
        _check_input(type(self).__name__, x, range(1, 33))
        self._check_shape(x)
        y = self._buffer("y", x.shape, x.dtype)
        self._apply(x, y)
        self._kept = (y if self._keeps == "output" else x) if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """dL/dx from dL/dy, using the array kept by ``forward``."""
        kept = self._saved("_kept")
        if not self.needs_input_grad:
            return None
        if grad_out.shape != kept.shape:
            raise ValueError(f"{type(self).__name__}.backward: grad_out has shape "
                             f"{grad_out.shape}, the forward output had shape {kept.shape}")
        gx = self._buffer("gx", kept.shape, kept.dtype)
        self._grad(grad_out, kept, gx)
        return gx


@register_layer
class ReLU(_ElementWise):
    """``max(x, 0)``; the derivative at 0 is taken as 0."""

    def _apply(self, x, y):
        if x.flags.c_contiguous and relu_uses_kernel(x.size):
            F.relu(x, out=y)
        else:
            np.maximum(x, 0, out=y)

    @staticmethod
    def _grad(g, y, gx):
        relu_grad(g, y, gx)

    def _adopt(self, y):
        """Take ``y``, already rectified by the preceding conv kernel, as this layer's output."""
        self._kept = y if is_grad_enabled() else None
        return y


@register_layer
class Sigmoid(_ElementWise):
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
class Tanh(_ElementWise):
    """Hyperbolic tangent."""

    def _apply(self, x, y):
        np.tanh(x, out=y)

    def _grad(self, g, y, gx):
        np.multiply(y, y, out=gx)
        np.subtract(1, gx, out=gx)
        gx *= g


def _not_batch_by_accident(layer, x):
    """A negative ``axis`` that is the batch axis of this input: refused, since
    ``predict`` would split the batch it normalises over (axis 0 says it)."""
    if layer.axis < 0 and layer.axis + x.ndim == 0:
        raise ValueError(
            f"{type(layer).__name__}: axis={layer.axis} is the batch axis of input of shape "
            f"{x.shape}; write axis=0 to normalise across the batch")


@register_layer
class Softmax(_ElementWise):
    """Softmax along ``axis`` (default 1, the class axis), max-shifted for stability.

    Parameters
    ----------
    axis : int, default 1
        0 normalises across the batch (ONNX's ``Softmax(axis=0)``): a sample's
        output then depends on its batch, and ``predict`` runs the whole input
        as one batch. A negative axis that lands on the batch axis is refused
        (write 0).

    Notes
    -----
    For classification prefer raw logits with ``CrossEntropyLoss``, which
    fuses the softmax; use this layer for MSE-on-probabilities nets or to get
    probabilities out of a model.
    """

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = int(axis)

    @property
    def _whole_batch(self):
        return self.axis == 0

    def _apply(self, x, y):
        _not_batch_by_accident(self, x)
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


# -- LeakyReLU, ELU, GELU, SiLU (derivatives of the input) and LogSoftmax ---------
@register_layer
class LeakyReLU(_ElementWise):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise (``torch.nn.LeakyReLU``).

    Parameters
    ----------
    negative_slope : float, default 0.01
        Keras calls it ``alpha`` (Keras's default is 0.3).

    Notes
    -----
    The derivative at 0 is taken as ``negative_slope``, as in PyTorch.
    """

    _keeps = "input"

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
class ELU(_ElementWise):
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise (``torch.nn.ELU``).

    Parameters
    ----------
    alpha : float, default 1.0
    """

    _keeps = "input"

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
class GELU(_ElementWise):
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

    _keeps = "input"

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
class SiLU(_ElementWise):
    """``x * sigmoid(x)``, also called swish (``torch.nn.SiLU``).

    Notes
    -----
    The sigmoid is ``(1 + tanh(x/2)) / 2``, which does not overflow.
    """

    _keeps = "input"

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
class LogSoftmax(_ElementWise):
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

    def _check_shape(self, x):
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"LogSoftmax: axis {self.axis} is out of range for input of "
                             f"shape {x.shape}")

    @property
    def _whole_batch(self):
        return self.axis == 0

    def _apply(self, x, y):
        _not_batch_by_accident(self, x)
        np.subtract(x, x.max(axis=self.axis, keepdims=True), out=y)
        y -= np.log(np.exp(y).sum(axis=self.axis, keepdims=True))

    def _grad(self, g, y, gx):
        np.exp(y, out=gx)
        gx *= g.sum(axis=self.axis, keepdims=True)
        np.subtract(g, gx, out=gx)

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"axis": self.axis}
