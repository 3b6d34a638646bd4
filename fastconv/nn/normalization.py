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
    return_mask : bool, default False
        ``forward`` returns ``(y, keep)``, ``keep`` a bool array of the input's
        shape, True where the element was kept: all True in evaluation mode
        (ONNX's ``Dropout`` mask output). Only as the last layer of a
        ``Sequential`` (the model then returns the pair).

    Attributes
    ----------
    mask : ndarray or None
        The scaled keep-mask (0 or ``1/(1-p)``) of the last training forward.
    """

    def __init__(self, p: float = 0.5, rng: RngLike = None, *,
                 return_mask: bool = False) -> None:
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = check_rng("Dropout", "rng", rng)
        if not isinstance(return_mask, (bool, np.bool_)):
            raise TypeError(f"Dropout: return_mask must be a bool, got "
                            f"{type(return_mask).__name__} {return_mask!r}")
        self.return_mask = bool(return_mask)
        self.mask = None

    @property
    def _n_outputs(self):
        return 2 if getattr(self, "return_mask", False) else 1

    def forward(self, x):
        """Apply a fresh random mask in training; return ``x`` unchanged in eval.

        With ``return_mask``, ``(y, keep)``.
        """
        y = self._dropout(x)
        if not getattr(self, "return_mask", False):  # (unpickled from before it existed)
            return y
        keep = np.ones(x.shape, bool) if self.mask is None else self.mask != 0
        return y, keep

    def _dropout(self, x):
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
        return {"p": self.p, "return_mask": True} if self._n_outputs == 2 else {"p": self.p}


# -- batch normalisation -----------------------------------------------------
class _BatchNorm(_Layer):
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ndims: Tuple[int, ...] = ()  # the input ranks the subclass accepts

    track_running_stats = True
    return_running_stats = False

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Union[float, None] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 return_running_stats: bool = False, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        owner = type(self).__name__
        for name, flag in (("track_running_stats", track_running_stats),
                           ("return_running_stats", return_running_stats)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{owner}: {name} must be a bool, got {type(flag).__name__} "
                                f"{flag!r}")
        if return_running_stats and (track_running_stats or momentum is None):
            raise ValueError(
                f"{owner}: return_running_stats=True (ONNX's training-mode outputs) needs "
                "track_running_stats=False and a float momentum, got "
                f"track_running_stats={track_running_stats}, momentum={momentum}")
        self.track_running_stats = bool(track_running_stats)
        self.return_running_stats = bool(return_running_stats)
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

    @property
    def _n_outputs(self):
        return 3 if self.return_running_stats else 1

    @property
    def _whole_batch(self):
        # batch statistics in evaluation too: a sample's output depends on the batch
        return not self.track_running_stats

    def forward(self, x):
        """Normalise per channel: batch statistics in training, running ones in eval.

        With ``track_running_stats=False``, batch statistics in both (the
        running statistics are left alone); with ``return_running_stats``,
        ``(y, running_mean, running_var)`` (see the class notes).
        """
        owner = type(self).__name__
        _check_input(owner, x, self._ndims, self.dtype)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{owner}: expected {self.num_features} channels on axis 1, got input of shape {x.shape}"
            )
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        m = x.size // self.num_features
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
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
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1
                mom = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                       else self.momentum)
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
            self._batch_stats = batch_stats
        else:
            self._xhat = None
        if not self.return_running_stats:
            return y
        # ONNX's BatchNormalization training mode: the running statistics updated
        # with this batch's mean and (biased) variance, returned, not stored
        mom = self.momentum
        new_mean = (self.running_mean * (1.0 - mom) + mean * mom).astype(self.dtype)
        new_var = (self.running_var * (1.0 - mom) + var * mom).astype(self.dtype)
        return y, new_mean, new_var

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
        config = {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "dtype": self.dtype.name,
        }
        if not self.track_running_stats:
            config["track_running_stats"] = False
        if self.return_running_stats:
            config["return_running_stats"] = True
        return config


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
    track_running_stats : bool, default True
        False (PyTorch's meaning): normalise with the batch's statistics in
        evaluation mode too, and never update the running ones; a sample's
        output then depends on its batch, so ``predict`` runs the whole input
        as one batch.
    return_running_stats : bool, default False
        With ``track_running_stats=False``: ``forward`` returns ``(y,
        running_mean, running_var)``, the running statistics updated with
        this batch as ONNX's ``BatchNormalization`` in training mode writes
        them: ``running*(1 - momentum) + batch*momentum``, with the biased
        batch variance (the layer's own arrays are left as they are). Only as
        the last layer of a ``Sequential``.
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
