"""Pooling layers: ``MaxPool2d`` / ``AvgPool2d`` (and the 1-D ``MaxPool1d`` /
``AvgPool1d``) over the kernels, global and adaptive pooling in NumPy.

Each is a ``_Pool``: its forward keeps the input shape (outside
``no_grad()``) and its ``backward`` returns None when the input gradient is
not needed, else ``_grad_input(grad_out, input_shape)``.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from .. import functional as F
from .._geometry import check_flag, pool1d_params, pool_geom, pool_params
from .layer_base import IntPair, _check_input, _compact, _Layer, register_layer
from .module import is_grad_enabled
from .relu import relu_grad

__all__ = ["MaxPool2d", "AvgPool2d", "MaxPool1d", "AvgPool1d", "GlobalAvgPool2d",
           "GlobalMaxPool2d", "AdaptiveAvgPool2d"]

# p, (ph, pw) or per side ((top, bottom), (left, right))
PoolPadding = Union[int, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]


class _Pool(_Layer):
    """Scaffold of the pooling layers (see the module notes)."""

    _x_shape = None

    def backward(self, grad_out):
        """dL/dx from dL/dy (None when the input gradient is not needed)."""
        shape = self._saved("_x_shape")
        if not self.needs_input_grad:
            return None
        return self._grad_input(grad_out, shape)

    def _grad_input(self, grad_out, shape):
        raise NotImplementedError


def _padding_attr(pads):
    """The ``padding`` attribute: ``(ph, pw)`` when each axis is padded alike on
    both sides (as before per-side padding existed), else ``((top, bottom),
    (left, right))``."""
    (t, b), (left, r) = pads
    return (t, left) if t == b and left == r else ((t, b), (left, r))


#: How ``return_indices`` numbers each maximum's position (see ``MaxPool2d``).
INDICES_LAYOUTS = ("plane", "flat", "flat_column")


def _check_indices(owner, return_indices, indices_layout):
    if not isinstance(return_indices, (bool, np.bool_)):
        raise TypeError(f"{owner}: return_indices must be a bool, got "
                        f"{type(return_indices).__name__} {return_indices!r}")
    if indices_layout not in INDICES_LAYOUTS:
        raise ValueError(f"{owner}: indices_layout must be one of {list(INDICES_LAYOUTS)}, "
                         f"got {indices_layout!r}")
    return bool(return_indices), indices_layout


def _layout_indices(idx, x_shape, layout):
    """Per-plane argmax indices (``h*W + w``) in ``layout``: ``flat`` adds the plane's
    offset in the whole (N, C, ...) array (ONNX's MaxPool ``Indices``,
    ``storage_order=0``); ``flat_column`` numbers each plane column by column
    (``storage_order=1``: ``w*H + h``)."""
    if layout == "plane":
        return idx
    n, c = x_shape[:2]
    h, w = (x_shape[2], x_shape[3]) if len(x_shape) == 4 else (1, x_shape[2])
    base = (np.arange(n * c, dtype=np.int64) * (h * w)).reshape((n, c) + (1,) * (idx.ndim - 2))
    if layout == "flat_column":
        idx = (idx % w) * h + idx // w
    return idx + base


def _padding_config(padding):
    if isinstance(padding[0], tuple):
        return [list(padding[0]), list(padding[1])]
    return _compact(padding)


class _Pool2d(_Pool):
    _avg = False
    return_indices = False
    indices_layout = "plane"

    @property
    def _n_outputs(self):
        return 2 if self.return_indices else 1

    @property
    def _whole_batch(self):
        # flat indices count the samples before this one
        return self.return_indices and self.indices_layout != "plane"

    def __init__(self, kernel_size: IntPair, stride: Union[IntPair, None] = None,
                 padding: PoolPadding = 0, dilation: IntPair = 1,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        owner = type(self).__name__
        k, s, pads, d, ceil = pool_params(owner, kernel_size, stride, padding, dilation,
                                          ceil_mode, avg=self._avg)
        self.kernel_size, self.stride, self.dilation, self.ceil_mode = k, s, d, ceil
        self.padding = _padding_attr(pads)
        self._x_shape = None
        self._geom_for = (None, None)  # (input shape, output shape) of the last call

    def _pool_out_shape(self, shape):
        # (a layer unpickled from before this cache existed has no _geom_for)
        if getattr(self, "_geom_for", (None,))[0] != tuple(shape):
            fn = "avg_pool2d" if self._avg else "max_pool2d"
            _, oshape = pool_geom(fn, tuple(shape), self.kernel_size, self.stride,
                                  self.padding, self.dilation, self.ceil_mode, avg=self._avg)
            self._geom_for = (tuple(shape), oshape)
        return self._geom_for[1]

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        config = {
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": _padding_config(self.padding),
        }
        if not self._avg or self.dilation != (1, 1):
            config["dilation"] = _compact(self.dilation)
        config["ceil_mode"] = self.ceil_mode
        if self.return_indices:
            config["return_indices"] = True
            config["indices_layout"] = self.indices_layout
        return config


@register_layer
class MaxPool2d(_Pool2d):
    """2-D max pooling over NCHW input.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int, (int, int) or ((int, int), (int, int)), default 0
        Implicit -inf padding: ``p``, ``(ph, pw)`` or per side ``((top, bottom),
        (left, right))``; each side smaller than the dilated window.
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
        Round the output size up (PyTorch's rule).
    return_indices : bool, default False
        ``forward`` returns ``(y, indices)``, as PyTorch's: int64, the shape of
        ``y``, where each maximum came from. Only as the last layer of a
        ``Sequential`` (the model then returns the pair; see its notes).
    indices_layout : {"plane", "flat", "flat_column"}, default "plane"
        ``"plane"``: ``h*W + w`` within the (n, c) plane (PyTorch's, what
        ``max_pool2d_backward`` takes); ``"flat"``: the position in the whole
        input, ``x.reshape(-1)[indices] == y`` (ONNX's ``MaxPool`` Indices,
        ``storage_order=0``); ``"flat_column"``: the same with each plane
        numbered column by column, ``(n*C + c)*H*W + w*H + h``
        (``storage_order=1``). The flat layouts depend on the sample's position
        in the batch, so ``predict`` runs the whole input as one batch.

    Attributes
    ----------
    kernel_size, stride, dilation : (int, int)
    padding : (int, int), or ((top, bottom), (left, right)) when a side differs
    ceil_mode, return_indices : bool
    indices_layout : str

    Notes
    -----
    ``H_out = (H + top + bottom - dilation*(kh - 1) - 1) // stride + 1`` (rounded
    up with ``ceil_mode``). Ties go to the first element in raster order. In
    training (outside ``no_grad``) the argmax indices are kept for ``backward``.
    """

    def __init__(self, kernel_size: IntPair, stride: Union[IntPair, None] = None,
                 padding: PoolPadding = 0, dilation: IntPair = 1, ceil_mode: bool = False,
                 return_indices: bool = False, indices_layout: str = "plane") -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.return_indices, self.indices_layout = _check_indices(
            "MaxPool2d", return_indices, indices_layout)

    def forward(self, x):
        """Pool ``x`` of shape (N, C, H, W); ``(y, indices)`` with ``return_indices``."""
        _check_input("MaxPool2d", x, 4)
        args = (self.kernel_size, self.stride, self.padding, self.dilation)
        kw = {"ceil_mode": self.ceil_mode}
        if self.return_indices:
            # fresh arrays: both are handed to the caller
            y, idx = F.max_pool2d(x, *args, return_indices=True, **kw)
            keep = is_grad_enabled()
            self._x_shape, self._indices, self._y = (x.shape, idx, y) if keep else (None,) * 3
            return y, _layout_indices(idx, x.shape, self.indices_layout)
        if not is_grad_enabled():
            self._x_shape = self._indices = self._y = None
            out = self._buffer("y", self._pool_out_shape(x.shape), x.dtype) if self.reuse_buffers else None
            return F.max_pool2d(x, *args, out=out, **kw)
        oshape = self._pool_out_shape(x.shape)
        out = self._buffer("y", oshape, x.dtype) if self.reuse_buffers else None
        idx = self._buffer("indices", oshape, np.int64) if self.reuse_buffers else None
        y, self._indices = F.max_pool2d(x, *args, return_indices=True, out=out, indices_out=idx,
                                        **kw)
        self._x_shape = x.shape
        self._y = y
        return y

    def _grad_input(self, grad_out, shape):
        """Route ``grad_out`` to the argmax positions; return dL/dx."""
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
        relu_grad(grad_out, y, g)
        return self.backward(g)


@register_layer
class AvgPool2d(_Pool2d):
    """2-D average pooling over NCHW input.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int, (int, int) or ((int, int), (int, int)), default 0
        Implicit zero padding: ``p``, ``(ph, pw)`` or per side ``((top, bottom),
        (left, right))``; each side smaller than ``kernel_size``.
    ceil_mode : bool, default False
        Round the output size up (PyTorch's rule).
    count_include_pad : bool, default True
        Divide by the window clipped to the padded input (True) or to the
        input (False).
    dilation : int or (int, int), default 1
        Spacing of the window's taps, as ONNX's ``AveragePool`` (PyTorch's has
        none); the divisor counts the taps (see ``fastconv.avg_pool2d``).

    Notes
    -----
    ``H_out = (H + top + bottom - dilation*(kh - 1) - 1) // stride + 1``
    (rounded up with ``ceil_mode``).
    """

    _avg = True

    def __init__(self, kernel_size: IntPair, stride: Union[IntPair, None] = None,
                 padding: PoolPadding = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, *, dilation: IntPair = 1) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.count_include_pad = check_flag("AvgPool2d", "count_include_pad", count_include_pad)

    def forward(self, x):
        """Pool ``x`` of shape (N, C, H, W)."""
        _check_input("AvgPool2d", x, 4)
        out = self._buffer("y", self._pool_out_shape(x.shape), x.dtype) if self.reuse_buffers else None
        y = F.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad, dilation=self.dilation, out=out,
        )
        self._x_shape = x.shape if is_grad_enabled() else None
        return y

    def _grad_input(self, grad_out, shape):
        """Spread ``grad_out`` evenly over each window; return dL/dx."""
        out = self._buffer("gx", shape, grad_out.dtype) if self.reuse_buffers else None
        return F.avg_pool2d_backward(
            grad_out, shape, self.kernel_size, self.stride, self.padding,
            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
            dilation=self.dilation, out=out,
        )

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


# -- 1-D pooling: views over the 2-D kernels (see fastconv.functional) ----------
class _Pool1d(_Pool):
    _avg = False
    return_indices = False
    indices_layout = "plane"
    _n_outputs = _Pool2d._n_outputs
    _whole_batch = _Pool2d._whole_batch

    def __init__(self, kernel_size: int, stride: Optional[int] = None,
                 padding: Union[int, Tuple[int, int]] = 0, dilation: int = 1,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        k, s, lr, d, ceil = pool1d_params(type(self).__name__, kernel_size, stride, padding,
                                          dilation, ceil_mode, avg=self._avg)
        self.kernel_size, self.stride, self.dilation, self.ceil_mode = k, s, d, ceil
        self.padding = lr[0] if lr[0] == lr[1] else lr
        self._x_shape = None

    def _pool_out_shape(self, shape):
        n, c, length = shape
        fn = "avg_pool1d" if self._avg else "max_pool1d"
        _, (n, c, _, lo) = pool_geom(fn, (n, c, 1, length), (1, self.kernel_size),
                                     (1, self.stride), ((0, 0), self._lr()),
                                     (1, self.dilation), self.ceil_mode, avg=self._avg)
        return (n, c, lo)

    def _lr(self):
        return self.padding if isinstance(self.padding, tuple) else (self.padding,) * 2

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        config = {"kernel_size": self.kernel_size, "stride": self.stride,
                  "padding": list(self.padding) if isinstance(self.padding, tuple)
                  else self.padding}
        if not self._avg or self.dilation != 1:
            config["dilation"] = self.dilation
        config["ceil_mode"] = self.ceil_mode
        if self.return_indices:
            config["return_indices"] = True
            config["indices_layout"] = self.indices_layout
        return config


@register_layer
class MaxPool1d(_Pool1d):
    """1-D max pooling over (N, C, L) input (``torch.nn.MaxPool1d``).

    Parameters
    ----------
    kernel_size : int
    stride : int, default ``kernel_size``
    padding : int or (int, int), default 0
        Implicit -inf padding, ``p`` or ``(left, right)``; each side smaller
        than ``dilation*(kernel_size - 1) + 1``.
    dilation : int, default 1
    ceil_mode : bool, default False
    return_indices : bool, default False
        ``forward`` returns ``(y, indices)`` (see ``MaxPool2d``).
    indices_layout : {"plane", "flat", "flat_column"}, default "plane"
        ``"plane"``: the position in L; ``"flat"`` (and ``"flat_column"``, the
        same in 1-D): ``(n*C + c)*L + l``, ONNX's Indices.

    Notes
    -----
    ``L_out = (L + left + right - dilation*(k - 1) - 1) // stride + 1`` (rounded
    up with ``ceil_mode``). Ties go to the first element.
    """

    def __init__(self, kernel_size: int, stride: Optional[int] = None,
                 padding: Union[int, Tuple[int, int]] = 0, dilation: int = 1,
                 ceil_mode: bool = False, return_indices: bool = False,
                 indices_layout: str = "plane") -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.return_indices, self.indices_layout = _check_indices(
            "MaxPool1d", return_indices, indices_layout)

    def forward(self, x):
        """Pool ``x`` of shape (N, C, L); ``(y, indices)`` with ``return_indices``."""
        _check_input("MaxPool1d", x, 3)
        args = (self.kernel_size, self.stride, self._lr(), self.dilation)
        if self.return_indices:
            y, idx = F.max_pool1d(x, *args, ceil_mode=self.ceil_mode, return_indices=True)
            keep = is_grad_enabled()
            self._x_shape, self._indices = (x.shape, idx) if keep else (None, None)
            return y, _layout_indices(idx, x.shape, self.indices_layout)
        if not is_grad_enabled():
            self._x_shape = self._indices = None
            return F.max_pool1d(x, *args, ceil_mode=self.ceil_mode)
        y, self._indices = F.max_pool1d(x, *args, ceil_mode=self.ceil_mode,
                                        return_indices=True)
        self._x_shape = x.shape
        return y

    def _grad_input(self, grad_out, shape):
        """Route ``grad_out`` to the argmax positions; return dL/dx."""
        return F.max_pool1d_backward(grad_out, self._indices, shape)


@register_layer
class AvgPool1d(_Pool1d):
    """1-D average pooling over (N, C, L) input (``torch.nn.AvgPool1d``).

    Parameters
    ----------
    kernel_size : int
    stride : int, default ``kernel_size``
    padding : int or (int, int), default 0
        Implicit zero padding, ``p`` or ``(left, right)``; each side smaller
        than ``kernel_size``.
    ceil_mode : bool, default False
    count_include_pad : bool, default True
    dilation : int, default 1
        Spacing of the window's taps, as ONNX's ``AveragePool`` (PyTorch's has
        none); the divisor counts the taps.

    Notes
    -----
    ``L_out = (L + left + right - dilation*(k - 1) - 1) // stride + 1`` (rounded
    up with ``ceil_mode``).
    """

    _avg = True

    def __init__(self, kernel_size: int, stride: Optional[int] = None,
                 padding: Union[int, Tuple[int, int]] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, *, dilation: int = 1) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.count_include_pad = check_flag("AvgPool1d", "count_include_pad", count_include_pad)

    def forward(self, x):
        """Pool ``x`` of shape (N, C, L)."""
        _check_input("AvgPool1d", x, 3)
        y = F.avg_pool1d(x, self.kernel_size, self.stride, self._lr(), ceil_mode=self.ceil_mode,
                         count_include_pad=self.count_include_pad, dilation=self.dilation)
        self._x_shape = x.shape if is_grad_enabled() else None
        return y

    def _grad_input(self, grad_out, shape):
        """Spread ``grad_out`` evenly over each window; return dL/dx."""
        return F.avg_pool1d_backward(grad_out, shape, self.kernel_size, self.stride, self._lr(),
                                     ceil_mode=self.ceil_mode,
                                     count_include_pad=self.count_include_pad,
                                     dilation=self.dilation)

    def get_config(self):
        """Constructor arguments, JSON-serialisable."""
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


# -- global and adaptive pooling ------------------------------------------------
@register_layer
class GlobalAvgPool2d(_Pool):
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

    def _grad_input(self, grad_out, shape):
        """Spread each gradient evenly over its channel's H*W pixels."""
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

    def _grad_input(self, grad_out, shape):
        """Route each gradient to its channel's argmax pixel."""
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
class AdaptiveAvgPool2d(_Pool):
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

    def _grad_input(self, grad_out, shape):
        """Spread each output gradient evenly over its bin (overlaps add up)."""
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
