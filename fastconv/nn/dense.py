"""Dense layers: ``Linear`` (alias ``Dense``) over ``fastconv.linear`` / ``linear_backward``,
``Flatten``, and the ONNX forms ``Gemm`` (a transposed input or a per-row bias) and ``Cast``."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .. import functional as F
from . import init as _init
from .._validate import check_float_dtype, check_int, check_rng
from .layer_base import Initializer, RngLike, _check_input, _Layer, register_layer
from .module import Parameter, is_grad_enabled

__all__ = ["Linear", "Dense", "Flatten", "Gemm", "Cast"]


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
    """Reshape (N, d1, d2, ...) to (N, d1*d2*...) (a view when possible).

    Parameters
    ----------
    axis : int, default 1
        ONNX's ``Flatten(axis)``: the output is 2-D,
        ``(prod(shape[:axis]), prod(shape[axis:]))``; negative counts from the
        end. 1 (the default) keeps the batch axis (Keras's ``Flatten``,
        PyTorch's ``nn.Flatten()``). Any other axis merges the batch with
        other axes (0: one row holding the whole batch; 2 of (N, C, H, W):
        N*C rows), so a sample's output depends on the batch: ``predict``
        then runs the whole input as one batch (see ``Sequential.predict``).
    """

    axis = 1  # (a Flatten pickled before the argument existed)

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = check_int("Flatten", "axis", axis, minimum=-32, maximum=32)

    @property
    def _whole_batch(self):
        # not row by row: the rows of the output are not the samples
        return self.axis != 1

    def forward(self, x):
        """Flatten all but the first axis (or at ``axis``)."""
        if not isinstance(x, np.ndarray) or x.ndim < 1:
            raise ValueError(f"Flatten: expected an array with a batch axis, got {x!r}")
        self._x_shape = x.shape
        if self.axis == 1:
            return x.reshape(x.shape[0], -1)
        axis = self.axis + x.ndim if self.axis < 0 else self.axis
        if not 0 <= axis <= x.ndim:
            raise ValueError(f"Flatten: axis={self.axis} is out of range for input of shape "
                             f"{x.shape} (rank {x.ndim})")
        return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))

    def backward(self, grad_out):
        """Reshape ``grad_out`` back to the input shape."""
        return grad_out.reshape(self._saved("_x_shape"))

    def get_config(self):
        """Constructor arguments, JSON-serialisable (empty for the default axis)."""
        return {} if self.axis == 1 else {"axis": self.axis}


@register_layer
class Gemm(_Layer):
    """ONNX's ``Gemm`` where it is not a ``Linear``: ``y = op(x) @ weight.T + bias``.

    ``op(x)`` is ``x`` or, with ``trans_a``, ``x.T``; ``bias`` broadcasts to
    the output (N_out, out_features) and may differ between rows. (ONNX's
    ``alpha``, ``beta`` and ``transB`` are folded into ``weight`` and ``bias``
    when loading.) A ``Gemm`` with neither is a ``Linear``, and
    ``fastconv.onnx.load`` makes it one.

    Parameters
    ----------
    in_features, out_features : int
        ``op(x)`` is (rows, in_features).
    trans_a : bool, default False
        Transpose the input: a (in_features, rows) input, whose batch axis is
        summed over (every output row mixes the whole batch).
    bias : bool, default True
    bias_shape : tuple of int, optional
        Default ``(out_features,)``; also ``()``, ``(1, out_features)``,
        ``(rows, 1)`` or ``(rows, out_features)``. A bias with ``rows > 1``
        rows fixes the number of output rows and adds a different bias to
        each (ONNX's matrix ``C``).
    weight_init : str or callable, default "he_normal"
    bias_init : str or callable, default "zeros"
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64, default float32

    Attributes
    ----------
    weight : Parameter of shape (out_features, in_features)
    bias : Parameter of shape ``bias_shape`` or None (``bias=False``)

    Notes
    -----
    With ``trans_a`` or a bias that differs between rows the output is not
    row by row of the input: ``predict`` runs the whole input as one batch.
    The products run on fastconv's own kernels, as ``Linear``'s.
    """

    def __init__(self, in_features: int, out_features: int, trans_a: bool = False,
                 bias: bool = True, bias_shape=None, *, weight_init: Initializer = "he_normal",
                 bias_init: Initializer = "zeros", rng: RngLike = None,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.in_features = check_int("Gemm", "in_features", in_features, minimum=1)
        self.out_features = check_int("Gemm", "out_features", out_features, minimum=1)
        if not isinstance(trans_a, (bool, np.bool_)):
            raise TypeError(f"Gemm: trans_a must be a bool, got {type(trans_a).__name__}")
        self.trans_a = bool(trans_a)
        self.dtype = check_float_dtype("Gemm", "dtype", dtype)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Gemm: bias must be a bool, got {type(bias).__name__}")
        self.bias_shape = (None if not bias else (self.out_features,) if bias_shape is None
                           else _gemm_bias_shape(bias_shape, self.out_features))
        self.weight_init, self.bias_init = weight_init, bias_init
        rng = check_rng("Gemm", "rng", rng)
        self.weight = Parameter(
            _init.get(weight_init)((self.out_features, self.in_features), rng, self.dtype))
        self.bias = (None if self.bias_shape is None else Parameter(
            _init.get(bias_init)(self.bias_shape, rng, self.dtype), regularize=False))
        self._x = None

    @property
    def _whole_batch(self):
        rows = self.bias_shape[0] if self.bias_shape and len(self.bias_shape) == 2 else 1
        return self.trans_a or rows > 1

    def forward(self, x):
        """``x`` of shape (rows, in_features), or (in_features, rows) with ``trans_a``."""
        _check_input("Gemm", x, 2, self.dtype)
        a = np.ascontiguousarray(x.T) if self.trans_a else x
        want = "(in_features, rows)" if self.trans_a else "(rows, in_features)"
        if a.shape[1] != self.in_features:
            raise ValueError(f"Gemm: expected input of shape {want} with in_features="
                             f"{self.in_features}, got shape {x.shape}")
        b = self.bias
        if b is not None and b.data.ndim == 2 and b.data.shape[0] not in (1, a.shape[0]):
            raise ValueError(f"Gemm: bias of shape {b.data.shape} needs {b.data.shape[0]} "
                             f"output rows, the input {x.shape} gives {a.shape[0]}")
        y = self._buffer("y", (a.shape[0], self.out_features), x.dtype)
        F.linear(a, self.weight.data, None, out=y)
        if b is not None:
            y += b.data
        self._x = a if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        """Add dL/dweight, dL/dbias into ``.grad``; return dL/dx (None if not needed)."""
        a = self._saved("_x")
        w, b = self.weight, self.bias
        if b is not None and b.requires_grad:
            g = grad_out
            if b.data.ndim < 2 or b.data.shape[0] == 1:
                g = g.sum(axis=0, keepdims=b.data.ndim == 2)
            if b.data.ndim == 2 and b.data.shape[1] == 1:
                g = g.sum(axis=1, keepdims=True)
            b.grad += g.sum() if b.data.ndim == 0 else g
        mask = (bool(self.needs_input_grad), w.requires_grad, False)
        if not any(mask):
            return None
        ga, gw, _ = F.linear_backward(np.ascontiguousarray(grad_out, dtype=a.dtype), a, w.data,
                                      output_mask=mask)
        if mask[1]:
            w.grad += gw
        if not mask[0]:
            return None
        return np.ascontiguousarray(ga.T) if self.trans_a else ga

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        cfg = {"in_features": self.in_features, "out_features": self.out_features,
               "trans_a": self.trans_a, "bias": self.bias_shape is not None,
               "dtype": self.dtype.name}
        if self.bias_shape is not None:
            cfg["bias_shape"] = list(self.bias_shape)
        for key in ("weight_init", "bias_init"):
            if isinstance(getattr(self, key), str):
                cfg[key] = getattr(self, key)
        return cfg


def _gemm_bias_shape(shape, out_features):
    """``bias_shape`` of a Gemm checked: a shape that broadcasts to (rows, out_features)."""
    if not isinstance(shape, (tuple, list)) or len(shape) > 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
            for v in shape):
        raise ValueError(f"Gemm: bias_shape must be a tuple of at most 2 ints >= 1, "
                         f"got {shape!r}")
    shape = tuple(int(v) for v in shape)
    if shape and shape[-1] not in (1, out_features):
        raise ValueError(f"Gemm: bias_shape {shape} does not broadcast to (rows, "
                         f"{out_features}) (its last axis must be 1 or out_features)")
    return shape


#: Element types a ``Cast`` converts to: the float types the layers compute in,
#: and the integer types whose values a float64 holds exactly (ONNX's uint8
#: max pooling loads as Cast(float64) -> MaxPool2d -> Cast(uint8))
_CAST_TYPES = ("float32", "float64", "uint8", "int8", "uint16", "int16", "uint32", "int32")


@register_layer
class Cast(_Layer):
    """Convert the input to ``dtype`` (ONNX's ``Cast``); the gradient passes through.

    Parameters
    ----------
    dtype : str or numpy dtype
        float32, float64, or an integer type of at most 32 bits (uint8, int8,
        uint16, int16, uint32, int32). Float to integer conversion truncates
        towards zero and wraps out-of-range values (NumPy's ``astype``), so
        it is meant for values that are integers of that type already (e.g.
        the max pool of an integer image).
    """

    def __init__(self, dtype="float32") -> None:
        super().__init__()
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"Cast: dtype must be one of {list(_CAST_TYPES)}, got {dtype!r}") \
                from None
        if dt.name not in _CAST_TYPES:
            raise TypeError(f"Cast: dtype must be one of {list(_CAST_TYPES)}, got {dt.name}")
        self.dtype = dt

    def forward(self, x):
        """``x.astype(dtype)`` (the input itself when it already has that dtype)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"Cast: input must be a numpy.ndarray, got {type(x).__name__}")
        self._in_dtype = x.dtype
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def backward(self, grad_out):
        """``grad_out`` in the input's dtype (an integer input gets no gradient)."""
        dt = self._saved("_in_dtype")
        if not self.needs_input_grad or dt.kind != "f":
            return None
        return grad_out.astype(dt, copy=False)

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {"dtype": self.dtype.name}
