"""``Conv2d``: a thin layer over ``fastconv.conv2d`` / ``conv2d_backward``; nothing convolves in Python."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .. import functional as F
from . import init as _init
from .._validate import check_float_dtype, check_int, check_pair, check_rng
from .layer_base import (
    Initializer,
    IntPair,
    Padding,
    RngLike,
    _check_input,
    _compact,
    _Layer,
    register_layer,
)
from .module import Parameter, is_grad_enabled

__all__ = ["Conv2d"]


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
        self.in_channels = check_int(owner, "in_channels", in_channels, minimum=1)
        self.out_channels = check_int(owner, "out_channels", out_channels, minimum=1)
        self.kernel_size = check_pair(owner, "kernel_size", kernel_size)
        self.stride = check_pair(owner, "stride", stride)
        self.dilation = check_pair(owner, "dilation", dilation)
        self.groups = check_int(owner, "groups", groups, minimum=1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"Conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' needs stride 1, got stride {stride!r}")
            self.padding = padding
        else:
            self.padding = check_pair(owner, "padding", padding, minimum=0)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"Conv2d: in_channels ({self.in_channels}) and out_channels "
                f"({self.out_channels}) must be divisible by groups ({self.groups})"
            )
        self.dtype = check_float_dtype(owner, "dtype", dtype)
        self.weight_init = weight_init
        self.bias_init = bias_init
        rng = check_rng("Conv2d", "rng", rng)
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
