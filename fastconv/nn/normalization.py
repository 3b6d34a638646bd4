"""Normalisation and regularisation layers: ``Dropout``, ``BatchNorm1d``, ``BatchNorm2d`` (whole-array NumPy)."""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from .._validate import check_float_dtype, check_int, check_rng
from .layer_base import RngLike, _check_input, _Layer, register_layer
from .module import Parameter, is_grad_enabled

__all__ = ["Dropout", "BatchNorm1d", "BatchNorm2d"]


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
        self.rng = check_rng("Dropout", "rng", rng)
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
    _ndims: Tuple[int, ...] = ()  # the input ranks the subclass accepts

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Union[float, None] = 0.1,
                 affine: bool = True, *, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_features = check_int(owner, "num_features", num_features, minimum=1)
        self.eps = float(eps)
        if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{owner}: momentum must be in [0, 1] or None, got {momentum}")
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.dtype = check_float_dtype(owner, "dtype", dtype)
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
