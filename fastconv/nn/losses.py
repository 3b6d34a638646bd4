"""Loss functions: ``forward(output, target) -> float``, ``backward() -> dL/doutput``."""

from __future__ import annotations

from typing import Any, Dict, Literal, Type, Union

import numpy as np
from numpy.typing import ArrayLike

from .module import Array

__all__ = ["Loss", "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss", "BCELoss", "NLLLoss",
           "get_loss", "register_loss"]

_LOSSES = {}


def register_loss(*names):
    """Class decorator: make a ``Loss`` subclass reachable by the given names."""

    def deco(cls):
        for name in (cls.__name__,) + names:
            _LOSSES[name.lower()] = cls
        return cls

    return deco


def get_loss(loss: Union[str, Loss, Type[Loss]]) -> Loss:
    """Resolve a loss given as an instance, a class or a name.

    Parameters
    ----------
    loss : Loss, type or str
        Names: ``"cross_entropy"`` (aliases ``"crossentropy"``,
        ``"categorical_crossentropy"``, ``"sparse_categorical_crossentropy"``,
        ``"ce"``), ``"mse"`` (aliases ``"mean_squared_error"``,
        ``"quadratic"``), ``"bce_with_logits"`` (alias
        ``"binary_cross_entropy_with_logits"``), ``"bce"`` (aliases
        ``"binary_crossentropy"``, ``"binary_cross_entropy"``; on
        probabilities, as in Keras and PyTorch) and ``"nll"`` (aliases
        ``"nll_loss"``, ``"negative_log_likelihood"``); case-insensitive.

    Returns
    -------
    Loss

    Raises
    ------
    ValueError
        Unknown name.
    TypeError
        Not a loss.
    """
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if isinstance(loss, str):
        cls = _LOSSES.get(loss.lower())
        if cls is None:
            raise ValueError(f"loss: unknown loss {loss!r}; expected one of {sorted(_LOSSES)}")
        return cls()
    raise TypeError(f"loss: expected a Loss instance or a name, got {type(loss).__name__}")


def _check_output(owner, output):
    if not isinstance(output, np.ndarray) or output.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{owner}: output must be a float32 or float64 ndarray, got "
            f"{getattr(output, 'dtype', type(output).__name__)}"
        )
    if output.ndim != 2:
        raise ValueError(f"{owner}: output must be 2-D (N, classes), got shape {output.shape}")


def _labels_or_dense(owner, target, output):
    """Integer labels of shape (N,) or float targets of the output's shape."""
    target = np.asarray(target)
    n, c = output.shape
    if target.dtype.kind in "iu":
        if target.shape != (n,):
            raise ValueError(
                f"{owner}: integer target must have shape ({n},) for output of shape "
                f"{output.shape}, got shape {target.shape}"
            )
        if n and (target.min() < 0 or target.max() >= c):
            raise ValueError(
                f"{owner}: class labels must be in [0, {c}), got values in "
                f"[{target.min()}, {target.max()}]"
            )
        return target, None
    if target.dtype.kind == "f" or target.dtype == np.bool_:
        if target.shape != output.shape:
            raise ValueError(
                f"{owner}: float target must have the output's shape {output.shape}, "
                f"got shape {target.shape}"
            )
        return None, target.astype(output.dtype, copy=False)
    raise TypeError(
        f"{owner}: target must be integer class labels or float one-hot/probabilities, "
        f"got dtype {target.dtype}"
    )


_ROWS = np.arange(0)


def _row_indices(n):
    """``np.arange(n)``, kept between calls (a training loop asks for the same n)."""
    global _ROWS
    rows = _ROWS
    if len(rows) < n:
        rows = _ROWS = np.arange(max(n, 2 * len(rows)))
    return rows[:n]


def loss_from_config(spec):
    """Build a loss from ``{"class": name, "config": {...}}``."""
    cls = _LOSSES.get(str(spec.get("class")).lower())
    if cls is None:
        raise ValueError(f"loss: unknown loss class {spec.get('class')!r}")
    return cls(**spec.get("config", {}))


class Loss:
    """Base class: ``loss = forward(output, target)``, then ``grad = backward()``.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        Average or sum over the batch.
    """

    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def __call__(self, output: Array, target: ArrayLike) -> float:
        return self.forward(output, target)

    def forward(self, output: Array, target: ArrayLike) -> float:
        """Scalar loss of ``output`` against ``target``."""
        raise NotImplementedError

    def backward(self) -> Array:
        """dL/doutput for the last ``forward`` (same shape and dtype as ``output``)."""
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        """Constructor arguments, JSON-serialisable."""
        return {"reduction": self.reduction}

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"


@register_loss("cross_entropy", "crossentropy", "categorical_crossentropy",
               "sparse_categorical_crossentropy", "ce")
class CrossEntropyLoss(Loss):
    """Softmax cross-entropy over logits (softmax fused, log-sum-exp stable).

    ``L_i = logsumexp(z_i) - sum_c t_ic * z_ic`` for targets summing to one;
    ``L_i = logsumexp(z_i) - z_i[y_i]`` for integer labels.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"

    Notes
    -----
    ``forward(logits, target)``: ``logits`` (N, C) float32/float64; ``target``
    integer labels (N,) in [0, C) or float (N, C) one-hot / probabilities.
    ``backward()`` returns ``(softmax(z) * sum_c t_c - t) / N`` (mean
    reduction), which is ``(softmax(z) - onehot(y)) / N`` for labels.
    """

    def forward(self, output: Array, target: ArrayLike) -> float:
        """Mean (or summed) cross-entropy; returns a Python float."""
        _check_output("CrossEntropyLoss", output)
        labels, dense = _labels_or_dense("CrossEntropyLoss", target, output)
        n = output.shape[0]
        if n == 0:
            raise ValueError("CrossEntropyLoss: empty batch")
        shifted = output - output.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        sums = probs.sum(axis=1, keepdims=True)
        log_z = np.log(sums)
        probs /= sums
        if labels is not None:
            # plain fancy indexing (take_along_axis costs 6 us of a 30 us call)
            picked = shifted[_row_indices(n), labels]
            per_sample = log_z.ravel() - picked
        else:
            # -sum t * (shifted - log_z) with t possibly not summing to one
            per_sample = log_z.ravel() * dense.sum(axis=1) - np.einsum("ij,ij->i", dense, shifted)
        self._probs, self._labels, self._dense = probs, labels, dense
        total = float(per_sample.sum(dtype=np.float64))
        return total / n if self.reduction == "mean" else total

    def backward(self) -> Array:
        """dL/dlogits, shape (N, C)."""
        probs = getattr(self, "_probs", None)
        if probs is None:
            raise RuntimeError("CrossEntropyLoss.backward called before forward")
        n = probs.shape[0]
        grad = probs.copy()
        if self._labels is not None:
            grad[_row_indices(n), self._labels] -= 1
        else:
            grad *= self._dense.sum(axis=1, keepdims=True)
            grad -= self._dense
        if self.reduction == "mean":
            grad /= n
        return grad

    @property
    def probabilities(self):
        """Softmax of the logits of the last ``forward`` (N, C), or None."""
        return getattr(self, "_probs", None)


@register_loss("mse", "mean_squared_error", "quadratic")
class MSELoss(Loss):
    """Mean squared error (quadratic cost) ``mean((output - target)**2)``.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        "mean" averages over all N*C elements (the PyTorch convention);
        "sum" sums them.

    Notes
    -----
    ``target`` is a float array of the output's shape, or integer labels (N,)
    which are one-hot encoded (the classic quadratic cost of a classifier,
    usually after a ``Sigmoid`` or ``Softmax`` output layer).
    ``backward()`` returns ``2 * (output - target) / (N*C)`` for "mean".
    """

    def forward(self, output: Array, target: ArrayLike) -> float:
        """Mean (or summed) squared error; returns a Python float."""
        _check_output("MSELoss", output)
        labels, dense = _labels_or_dense("MSELoss", target, output)
        diff = output.copy()
        if labels is not None:
            diff[np.arange(output.shape[0]), labels] -= 1
        else:
            diff -= dense
        self._diff = diff
        total = float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
        return total / diff.size if self.reduction == "mean" else total

    def backward(self) -> Array:
        """dL/doutput, same shape as the output."""
        diff = getattr(self, "_diff", None)
        if diff is None:
            raise RuntimeError("MSELoss.backward called before forward")
        scale = 2.0 / diff.size if self.reduction == "mean" else 2.0
        return diff * diff.dtype.type(scale)


def _binary_target(owner, target, output):
    """0/1 (or probability) targets of the output's shape, in its dtype.

    A target of shape (N,) is accepted for an output of shape (N, 1), the usual
    single-unit binary classifier (Keras does the same).
    """
    target = np.asarray(target)
    if target.dtype.kind not in "iufb":
        raise TypeError(f"{owner}: target must be numeric 0/1 labels or probabilities, "
                        f"got dtype {target.dtype}")
    if target.shape != output.shape:
        if output.shape[1:] == (1,) and target.shape == output.shape[:1]:
            target = target.reshape(output.shape)
        else:
            raise ValueError(
                f"{owner}: target must have the output's shape {output.shape} "
                f"(or ({output.shape[0]},) for an output of shape (N, 1)), got shape {target.shape}")
    target = target.astype(output.dtype, copy=False)
    if target.size and not (target.min() >= 0 and target.max() <= 1):   # also rejects NaN
        raise ValueError(f"{owner}: target values must be in [0, 1], got values in "
                         f"[{target.min()}, {target.max()}]")
    return target


@register_loss("bce_with_logits", "binary_cross_entropy_with_logits")
class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits, sigmoid fused (``torch.nn.BCEWithLogitsLoss``).

    ``L = max(z, 0) - z*t + log(1 + exp(-|z|))`` per element, which is
    ``-(t*log(sigmoid(z)) + (1-t)*log(1-sigmoid(z)))`` without overflow for
    any ``z``; averaged over all N*C elements ("mean") or summed.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"

    Notes
    -----
    ``forward(logits, target)``: ``logits`` (N, C) float32/float64, one
    independent binary problem per column (multi-label); ``target`` 0/1 labels
    or probabilities of the same shape, or (N,) for ``logits`` of shape (N, 1).
    ``backward()`` returns ``(sigmoid(z) - t) / (N*C)`` for "mean".
    """

    def forward(self, output: Array, target: ArrayLike) -> float:
        """Mean (or summed) binary cross-entropy; returns a Python float."""
        owner = "BCEWithLogitsLoss"
        _check_output(owner, output)
        t = _binary_target(owner, target, output)
        if output.size == 0:
            raise ValueError(f"{owner}: empty batch")
        e = np.exp(-np.abs(output))                  # in (0, 1]: never overflows
        per_elem = np.maximum(output, 0) - output * t + np.log1p(e)
        # sigmoid(z) = 1/(1+e) for z >= 0, e/(1+e) for z < 0, from the same e
        sig = np.where(output >= 0, 1.0, e) / (1.0 + e)
        self._diff = (sig - t).astype(output.dtype, copy=False)
        total = float(per_elem.sum(dtype=np.float64))
        return total / output.size if self.reduction == "mean" else total

    def backward(self) -> Array:
        """dL/dlogits, same shape as the logits."""
        diff = getattr(self, "_diff", None)
        if diff is None:
            raise RuntimeError("BCEWithLogitsLoss.backward called before forward")
        scale = 1.0 / diff.size if self.reduction == "mean" else 1.0
        return diff * diff.dtype.type(scale)


# PyTorch's lower bound on p*(1-p) in BCELoss's gradient: 1e-12 as a float32
# constant (9.99999996e-13), kept so that saturated gradients agree with torch
_BCE_EPS = float(np.float32(1e-12))


@register_loss("bce", "binary_crossentropy", "binary_cross_entropy")
class BCELoss(Loss):
    """Binary cross-entropy on probabilities (``torch.nn.BCELoss``, Keras ``binary_crossentropy``).

    ``L = -(t*log(p) + (1-t)*log(1-p))`` per element, with each log clamped to
    >= -100 as PyTorch does (so ``p`` of exactly 0 or 1 gives a finite loss).

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"

    Notes
    -----
    For a model whose last layer is ``Sigmoid``. With logits (no final
    ``Sigmoid``) use ``BCEWithLogitsLoss``, which is also more accurate.
    ``backward()`` returns ``(p - t) / (p*(1-p)) / (N*C)`` for "mean", with
    ``p*(1-p)`` kept >= 1e-12 (PyTorch's bound) so it stays finite.
    """

    def forward(self, output: Array, target: ArrayLike) -> float:
        """Mean (or summed) binary cross-entropy; returns a Python float."""
        owner = "BCELoss"
        _check_output(owner, output)
        t = _binary_target(owner, target, output)
        if output.size == 0:
            raise ValueError(f"{owner}: empty batch")
        if not (output.min() >= 0 and output.max() <= 1):
            raise ValueError(
                f"{owner}: output must be probabilities in [0, 1], got values in "
                f"[{output.min()}, {output.max()}]; for logits use BCEWithLogitsLoss "
                "(loss='bce_with_logits')")
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(output), -100.0)
            log_1p = np.maximum(np.log1p(-output), -100.0)
        per_elem = -(t * log_p + (1 - t) * log_1p)
        self._saved_pt = (output.copy(), t)
        total = float(per_elem.sum(dtype=np.float64))
        return total / output.size if self.reduction == "mean" else total

    def backward(self) -> Array:
        """dL/dprobabilities, same shape as the output."""
        saved = getattr(self, "_saved_pt", None)
        if saved is None:
            raise RuntimeError("BCELoss.backward called before forward")
        p, t = saved
        grad = (p - t) / np.maximum(p * (1 - p), _BCE_EPS)
        scale = 1.0 / p.size if self.reduction == "mean" else 1.0
        return (grad * scale).astype(p.dtype, copy=False)


@register_loss("nll", "nll_loss", "negative_log_likelihood")
class NLLLoss(Loss):
    """Negative log-likelihood of log-probabilities (``torch.nn.NLLLoss``).

    ``L_i = -logp[i, y_i]``; use after ``LogSoftmax`` (together they are
    ``CrossEntropyLoss`` on the logits).

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"

    Notes
    -----
    ``forward(log_probs, target)``: ``log_probs`` (N, C) float32/float64;
    ``target`` integer labels (N,) in [0, C). ``backward()`` is ``-1/N`` at
    each sample's label and 0 elsewhere ("mean").
    """

    def forward(self, output: Array, target: ArrayLike) -> float:
        """Mean (or summed) negative log-likelihood; returns a Python float."""
        owner = "NLLLoss"
        _check_output(owner, output)
        if np.asarray(target).dtype.kind not in "iu":
            raise TypeError(f"{owner}: target must be integer class labels (N,), "
                            f"got dtype {np.asarray(target).dtype}")
        labels, _ = _labels_or_dense(owner, target, output)
        n = output.shape[0]
        if n == 0:
            raise ValueError(f"{owner}: empty batch")
        picked = np.take_along_axis(output, labels[:, None], axis=1)
        self._shape_labels = (output.shape, output.dtype, labels)
        total = -float(picked.sum(dtype=np.float64))
        return total / n if self.reduction == "mean" else total

    def backward(self) -> Array:
        """dL/dlog_probs, shape (N, C)."""
        saved = getattr(self, "_shape_labels", None)
        if saved is None:
            raise RuntimeError("NLLLoss.backward called before forward")
        shape, dtype, labels = saved
        grad = np.zeros(shape, dtype)
        grad[np.arange(shape[0]), labels] = -1.0 / shape[0] if self.reduction == "mean" else -1.0
        return grad
