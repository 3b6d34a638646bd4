"""Minibatches, one-hot labels and train/validation splits (re-exported by ``fastconv.datasets``)."""

import numbers

import numpy as np

from ._validate import check_int, check_rng, check_xy

__all__ = ["iterate_minibatches", "one_hot", "train_val_split"]


def iterate_minibatches(x, y, batch_size, shuffle=True, rng=None, drop_last=False):
    """Yield ``(x_batch, y_batch)`` pairs covering the data once.

    Parameters
    ----------
    x : ndarray of shape (N, ...)
    y : ndarray of shape (N, ...)
    batch_size : int
        Samples per batch; the last batch is smaller unless ``drop_last``.
    shuffle : bool, default True
        Visit samples in a random order drawn from ``rng``.
    rng : None, int or numpy.random.Generator
        Source of the permutation; an int seeds a fresh generator, so the same
        seed gives the same batches.
    drop_last : bool, default False
        Skip a final incomplete batch.

    Yields
    ------
    x_batch, y_batch : ndarray
        Copies when shuffling, views otherwise.
    """
    x, y = check_xy("iterate_minibatches", x, y)
    batch_size = check_int("iterate_minibatches", "batch_size", batch_size, minimum=1)
    n = len(x)
    order = check_rng("iterate_minibatches", "rng", rng).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]


def one_hot(y, num_classes=10, dtype=np.float32):
    """One-hot encode integer labels.

    Parameters
    ----------
    y : array_like of int, shape (N,)
    num_classes : int, default 10
    dtype : dtype, default float32

    Returns
    -------
    ndarray of shape (N, num_classes)
    """
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(f"one_hot: y must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
    num_classes = check_int("one_hot", "num_classes", num_classes, minimum=1)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"one_hot: labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    out = np.zeros((len(y), num_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


def train_val_split(x, y, val_size=0.1, *, shuffle=True, rng=0):
    """Split off a validation set.

    Parameters
    ----------
    x, y : ndarray with the same leading length N
    val_size : float in (0, 1) or int in [1, N)
        Fraction or number of samples for validation.
    shuffle : bool, default True
        Pick the validation samples at random (from ``rng``); otherwise take the
        last ``val_size`` samples.
    rng : None, int or numpy.random.Generator, default 0
        Fixed by default so the split is reproducible.

    Returns
    -------
    (x_train, y_train), (x_val, y_val)
    """
    x, y = check_xy("train_val_split", x, y)
    n = len(x)
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise TypeError(f"train_val_split: val_size must be a float or int, got {type(val_size).__name__}")
    if isinstance(val_size, numbers.Integral):
        n_val = int(val_size)
    elif 0 < val_size < 1:
        n_val = int(round(val_size * n))
    else:
        raise ValueError(f"train_val_split: a float val_size must lie in (0, 1), got {val_size}")
    if not 1 <= n_val < n:
        raise ValueError(f"train_val_split: val_size gives {n_val} validation samples of {n}; need 1 <= n_val < N")
    if shuffle:
        order = check_rng("train_val_split", "rng", rng).permutation(n)
        tr, va = np.sort(order[n_val:]), np.sort(order[:n_val])
        return (x[tr], y[tr]), (x[va], y[va])
    return (x[:n - n_val], y[:n - n_val]), (x[n - n_val:], y[n - n_val:])
