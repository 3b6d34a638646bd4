"""Dense layers: ``Linear`` (alias ``Dense``) over ``fastconv.linear`` / ``linear_backward``, and ``Flatten``."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .. import functional as F
from . import init as _init
from .._validate import check_float_dtype, check_int, check_rng
from .layer_base import Initializer, RngLike, _check_input, _Layer, register_layer
from .module import Parameter, is_grad_enabled

__all__ = ["Linear", "Dense", "Flatten"]


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
        self.in_features = check_int("Linear", "in_features", in_features, minimum=1)
        self.out_features = check_int("Linear", "out_features", out_features, minimum=1)
        self.dtype = check_float_dtype("Linear", "dtype", dtype)
        self.weight_init = weight_init
        self.bias_init = bias_init
        rng = check_rng("Linear", "rng", rng)
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
