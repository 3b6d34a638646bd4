"""``Conv2d`` and ``Conv1d``: thin layers over ``fastconv.conv2d`` / ``conv1d`` and their
backwards; nothing convolves in Python."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .. import functional as F
from . import init as _init
from .._geometry import ConvGeom, check_int1, check_padding
from .._validate import check_float_dtype, check_int, check_pair, check_rng
from .layer_base import (
    Initializer,
    IntPair,
    Padding,
    Padding1d,
    RngLike,
    _check_input,
    _compact,
    _Layer,
    register_layer,
)
from .module import Parameter, is_grad_enabled

__all__ = ["Conv2d", "Conv1d"]

_PADDING_WORDS = ("same", "valid")


class _Conv(_Layer):
    """What ``Conv2d`` and ``Conv1d`` share: parameters, forward, backward, config.

    A subclass sets ``_ndim`` (input dimensions), checks its own
    hyper-parameters and, unless it is 2-D, overrides ``_conv`` and
    ``_conv_backward`` (the functional pair it calls).
    """

    _ndim = 4

    def _conv(self, x, w, b, out, activation):
        return F.conv2d(x, w, b, *self._hyper(), out=out, activation=activation)

    def _conv_backward(self, grad_out, x, w, mask, out):
        return F.conv2d_backward(grad_out, x, w, *self._hyper(), output_mask=mask, out=out)

    def _init_channels(self, owner, in_channels, out_channels):
        self.in_channels = check_int(owner, "in_channels", in_channels, minimum=1)
        self.out_channels = check_int(owner, "out_channels", out_channels, minimum=1)

    def _init_params(self, owner, kernel, bias, weight_init, bias_init, rng, dtype):
        """After the subclass's checks (``groups`` included): the parameters."""
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{owner}: in_channels ({self.in_channels}) and out_channels "
                f"({self.out_channels}) must be divisible by groups ({self.groups})"
            )
        self.dtype = check_float_dtype(owner, "dtype", dtype)
        self.weight_init = weight_init
        self.bias_init = bias_init
        rng = check_rng(owner, "rng", rng)
        shape = (self.out_channels, self.in_channels // self.groups) + kernel
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
        """Convolve ``x`` (see the class docstring for its shape)."""
        return self._forward(x, None)

    def _forward(self, x, activation):
        # activation="relu" is used by Sequential when a ReLU layer follows:
        # the kernel rectifies in the same pass over the output
        owner = type(self).__name__
        _check_input(owner, x, self._ndim, self.dtype)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{owner}: expected input with {self.in_channels} channels, "
                f"got input of shape {x.shape}"
            )
        w = self.weight.data
        b = None if self.bias is None else self.bias.data
        out = None
        if self.reuse_buffers:
            shape = ConvGeom(owner.lower(), x.shape, w.shape, *self._hyper()).out_shape
            out = self._buffer("y", shape, x.dtype)
        y = self._conv(x, w, b, out, activation)
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
        gx, gw, gb = self._conv_backward(grad_out, x, w.data, mask, out)
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
        def compact(v):  # Conv1d's kernel_size, stride and dilation are ints
            return v if isinstance(v, int) else _compact(v)

        cfg = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": compact(self.kernel_size),
            "stride": compact(self.stride),
            "padding": compact(self.padding),
            "dilation": compact(self.dilation),
            "groups": self.groups,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }
        for key in ("weight_init", "bias_init"):
            if isinstance(getattr(self, key), str):
                cfg[key] = getattr(self, key)
        return cfg


def _padding_word(owner, padding, forms):
    if padding not in _PADDING_WORDS:
        raise ValueError(f"{owner}: padding must be {forms}, got {padding!r}")
    return padding


@register_layer
class Conv2d(_Conv):
    """2-D convolution (cross-correlation) over NCHW input.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int, (int, int), ((int, int), (int, int)), 'same' or 'valid', default 0
        Zero padding: ``p`` on every side, ``(ph, pw)`` on top and bottom /
        left and right, or per side ``((top, bottom), (left, right))``.
        ``'same'`` gives ``ceil(H / stride)`` rows (TensorFlow's rule; for
        stride 1 the size of the input), the odd row/column at the bottom/right.
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
    padding : (ph, pw), ((top, bottom), (left, right)) when the sides differ, or the word

    Notes
    -----
    ``x`` of shape (N, in_channels, H, W) gives (N, out_channels, H_out, W_out)
    with ``H_out = (H + top + bottom - dilation*(kh-1) - 1) // stride + 1``.
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
        self._init_channels(owner, in_channels, out_channels)
        self.kernel_size = check_pair(owner, "kernel_size", kernel_size)
        self.stride = check_pair(owner, "stride", stride)
        self.dilation = check_pair(owner, "dilation", dilation)
        self.groups = check_int(owner, "groups", groups, minimum=1)
        if isinstance(padding, str):
            self.padding = _padding_word(
                owner, padding, "an int, a pair, per side ((top, bottom), (left, right)), "
                "'same' or 'valid'")
        else:
            (top, bottom), (left, right) = check_padding(owner, padding)
            # symmetric per axis: the (ph, pw) pair, as before per-side padding existed
            self.padding = ((top, left) if (top, left) == (bottom, right)
                            else ((top, bottom), (left, right)))
        self._init_params(owner, self.kernel_size, bias, weight_init, bias_init, rng, dtype)

    def get_config(self):
        cfg = super().get_config()
        if isinstance(self.padding[0], tuple):  # per side: JSON lists
            cfg["padding"] = [list(self.padding[0]), list(self.padding[1])]
        return cfg


@register_layer
class Conv1d(_Conv):
    """1-D convolution (cross-correlation) over (N, C, L) input.

    Runs the 2-D kernels on height-1 views (``fastconv.conv1d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
    stride : int, default 1
    padding : int, (int, int), 'same' or 'valid', default 0
        Zeros at both ends, or ``(left, right)``; ``'same'`` gives
        ``ceil(L / stride)`` outputs (TensorFlow's rule, the odd one at the right).
    dilation : int, default 1
    groups : int, default 1
    bias : bool, default True
    weight_init, bias_init, rng, dtype
        As for ``Conv2d``.

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels // groups, kernel_size)
    bias : Parameter of shape (out_channels,) or None
    kernel_size, stride, dilation : int
    padding : (left, right) or the word

    Notes
    -----
    ``x`` of shape (N, in_channels, L) gives (N, out_channels, L_out) with
    ``L_out = (L + left + right - dilation*(kernel_size-1) - 1) // stride + 1``.
    """

    _ndim = 3

    def _conv(self, x, w, b, out, activation):
        return F.conv1d(x, w, b, *self._hyper(), out=out, activation=activation)

    def _conv_backward(self, grad_out, x, w, mask, out):
        return F.conv1d_backward(grad_out, x, w, *self._hyper(), output_mask=mask, out=out)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: Padding1d = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        weight_init: Initializer = "he_normal",
        bias_init: Initializer = "zeros",
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        owner = "Conv1d"
        self._init_channels(owner, in_channels, out_channels)
        self.kernel_size = check_int1(owner, "kernel_size", kernel_size)
        self.stride = check_int1(owner, "stride", stride)
        self.dilation = check_int1(owner, "dilation", dilation)
        self.groups = check_int(owner, "groups", groups, minimum=1)
        if isinstance(padding, str):
            self.padding = _padding_word(owner, padding, "an int, a pair (left, right), "
                                         "'same' or 'valid'")
        else:
            self.padding = check_padding(owner, padding, 1)[1]
        self._init_params(owner, (self.kernel_size,), bias, weight_init, bias_init, rng, dtype)
