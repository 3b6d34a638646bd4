"""What ``fit`` / ``evaluate`` check of their arguments and derive from the targets.

Shared by the single-process trainer (``fastconv.nn.trainer``) and the
data-parallel one (``fastconv.distributed``): integer arguments, the ``(x, y)``
pair, validation splits, per-sample weights, class labels from targets and the
predicted class of an output row.
"""

import math
import warnings

import numpy as np

from .._validate import check_int, check_targets, check_xy

def _check_xy(owner, x, y, xname="x", yname="y"):
    """``(x, y)`` for a model: ``x`` a real numeric array with a batch axis, ``y``
    (None for ``predict``) training targets with one row per sample of ``x``."""
    x = np.asarray(x)
    # without targets, x stands in for them: only x's own checks can fail
    x, y_checked = check_xy(owner, x, x if y is None else y, xname, yname, numeric=True,
                            min_ndim=2)
    if y is None:
        return x, None
    return x, check_targets(owner, yname, y_checked)


def _validation_split(owner, x, y, weights, fraction):
    """Keras's split: the last ``fraction`` of the samples, taken before any
    shuffling, is held out. Returns the training part, the validation pair and
    the training part of ``weights``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
            or not 0 < fraction < 1:
        raise ValueError(f"{owner}: validation_split must be a float in (0, 1), got {fraction!r}")
    n = len(x)
    split_at = int(math.ceil(n * (1.0 - fraction)))  # as Keras rounds
    if split_at == 0 or split_at == n:
        raise ValueError(
            f"{owner}: validation_split={fraction} of {n} samples leaves "
            f"{split_at} for training and {n - split_at} for validation; both must be >= 1")
    w = None if weights is None else weights[:split_at]
    return x[:split_at], y[:split_at], (x[split_at:], y[split_at:]), w


def _sample_weights(owner, n, labels, sample_weight, class_weight):
    """Per-sample loss weights (float64, (N,)) from ``sample_weight`` and
    ``class_weight`` (multiplied when both are given, as Keras does), or None."""
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight)
        if w.dtype.kind not in "iuf":
            raise TypeError(f"{owner}: sample_weight must be a real numeric array, got dtype {w.dtype}")
        if w.shape != (n,):
            raise ValueError(f"{owner}: sample_weight must have shape ({n},) (one weight per "
                             f"sample of x), got shape {w.shape}")
        w = w.astype(np.float64)
        if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
            raise ValueError(f"{owner}: sample_weight must be finite and >= 0")
    if class_weight is not None:
        if not isinstance(class_weight, dict):
            raise TypeError(f"{owner}: class_weight must be a dict {{class: weight}}, got "
                            f"{type(class_weight).__name__}")
        if labels is None:
            raise ValueError(f"{owner}: class_weight needs class targets (integer labels or "
                             "one-hot rows) in y")
        k = int(labels.max()) + 1 if len(labels) else 0
        # classes not in the dict keep weight 1 (Keras does the same)
        table = np.ones(max(k, 1), np.float64)
        for c, cw in class_weight.items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                raise ValueError(f"{owner}: class_weight keys must be class indices >= 0, "
                                 f"got {c!r}")
            if isinstance(cw, bool) or not isinstance(cw, (int, float, np.number)) \
                    or not math.isfinite(cw) or cw < 0:
                raise ValueError(f"{owner}: class_weight[{c}] must be a finite number >= 0, "
                                 f"got {cw!r}")
            if c < len(table):
                table[c] = float(cw)
        cw = table[labels]
        w = cw if w is None else w * cw
    return w


def _weighted_batch_loss(row_loss, out, yb, wb):
    """Keras's weighted loss (reduction 'sum_over_batch_size'): ``sum(w_i * l_i) / m``
    for a "mean" loss, ``sum(w_i * l_i)`` for a "sum" loss, where ``l_i`` is
    sample i's own loss (its row through ``row_loss``, a copy of the loss)."""
    per = np.array([row_loss.forward(out[i:i + 1], yb[i:i + 1]) for i in range(len(out))])
    total = float(np.dot(wb, per))
    return total / len(out) if row_loss.reduction == "mean" else total


def _warn_unscaled(owner, x, stacklevel):
    """Warn (once per call) when ``x`` looks like raw pixel values: integers above
    1, or floats that are whole numbers in [0, 255] with some above 1 (pixels
    converted with ``astype`` but not divided). Standardised data (negative
    values) and fractions do not warn. ``stacklevel`` counts the frames from
    the caller of this function to the user's call."""
    if not x.size:
        return
    if x.dtype.kind in "iu":
        kind = str(x.dtype)
    elif x.dtype.kind == "f":
        head = x[:64]  # whole-number test on a sample: no copy of a large x
        if not (np.all(head >= 0) and np.all(head == np.floor(head))):
            return
        kind = f"{x.dtype} holding whole numbers"
    else:
        return
    lo, hi = x.min(), x.max()
    if hi > 1 and lo >= 0 and (x.dtype.kind in "iu" or hi <= 255):
        scale = 255.0 if hi <= 255 else float(hi)
        warnings.warn(
            f"{owner}: x is {kind} with values in [{lo:g}, {hi:g}]; scale it to [0, 1] "
            f"first (x / {scale}): unscaled inputs make training slow or unstable",
            UserWarning, stacklevel=stacklevel + 1)



def _sample_weighted(loss, value, m):
    """Batch loss times batch size, so that sums over batches average over samples."""
    return value * m if loss.reduction == "mean" else value


def _true_labels(y):
    """Class indices for the accuracy metric (None when not a classification target).

    Integer labels as they are; one-hot rows by their largest entry; binary
    targets (a single 0/1 column, or 0/1 floats for a one-output model) by the
    0.5 cut, as Keras's binary accuracy does.
    """
    if y.dtype.kind in "iu":
        return y
    if y.ndim == 2 and y.shape[1] == 1:
        return (y[:, 0] > 0.5).astype(np.int64)
    if y.ndim == 2:
        return y.argmax(axis=1)
    if y.ndim == 1 and y.dtype.kind == "f" and np.all((y == 0) | (y == 1)):
        return y.astype(np.int64)
    return None


def _fit_settings(owner, x, batch_size, epochs, initial_epoch, verbose, augment,
                  validation_data, validation_batch_size):
    """The checks every fit loop makes of its common arguments (``Sequential.fit``,
    ``fastconv.distributed.fit``).

    Returns ``(batch_size, epochs, initial_epoch, (x_val, y_val), validation
    batch size)``; the pair is ``(None, None)`` without validation data.
    """
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    epochs = check_int(owner, "epochs", epochs, minimum=0)
    initial_epoch = check_int(owner, "initial_epoch", initial_epoch, minimum=0)
    if verbose not in (0, 1, 2):
        raise ValueError(f"{owner}: verbose must be 0, 1 or 2, got {verbose!r}")
    if augment is not None and not callable(augment):
        raise TypeError(f"{owner}: augment must be callable (x_batch, rng) -> x_batch")
    if len(x) == 0:
        raise ValueError(f"{owner}: x is empty")
    xv = yv = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(f"{owner}: validation_data must be a pair (x_val, y_val)")
        xv, yv = _check_xy(owner, *validation_data, xname="validation_data[0]",
                           yname="validation_data[1]")
        if xv.shape[1:] != x.shape[1:]:
            raise ValueError(f"{owner}: validation_data[0] samples have shape {xv.shape[1:]}, "
                             f"x samples have shape {x.shape[1:]}")
    val_bs = max(batch_size, 256) if validation_batch_size is None else \
        check_int(owner, "validation_batch_size", validation_batch_size, minimum=1)
    return batch_size, epochs, initial_epoch, (xv, yv), val_bs


def _predicted_classes(out, probabilities):
    """Predicted class per row: the largest output, or for a single output
    column (binary models) the 0.5 cut of a probability / the 0 cut of a logit."""
    if out.ndim == 2 and out.shape[1] == 1:
        return (out[:, 0] > (0.5 if probabilities else 0.0)).astype(np.int64)
    return out.argmax(axis=1)

