"""Classification metrics on label arrays: confusion matrix and per-class accuracy.

The conventions are scikit-learn's (``sklearn.metrics.confusion_matrix``): row
``i`` counts the samples whose true class is ``i``, column ``j`` those predicted
as ``j``, so per-class accuracy (recall) is the diagonal over the row sums.
``Sequential.evaluate(x, y, per_class=True)`` returns both.
"""

import numpy as np

__all__ = ["confusion_matrix", "per_class_accuracy"]


def _labels(owner, name, a):
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise TypeError(f"{owner}: {name} must be integer class labels, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{owner}: {name} must be 1-D class labels (N,), got shape {a.shape}")
    if a.size and a.min() < 0:
        raise ValueError(f"{owner}: {name} must be >= 0, got a label {a.min()}")
    return a.astype(np.int64, copy=False)


def confusion_matrix(y_true, y_pred, num_classes=None):
    """Counts of (true class, predicted class) pairs.

    Parameters
    ----------
    y_true, y_pred : array_like of shape (N,), integer class labels >= 0
    num_classes : int, optional
        Size of the matrix; default ``max(y_true.max(), y_pred.max()) + 1``.

    Returns
    -------
    ndarray of shape (num_classes, num_classes), dtype int64
        ``cm[i, j]`` = number of samples of class ``i`` predicted as ``j``.

    Raises
    ------
    TypeError, ValueError
        Non-integer labels, shapes that differ, a label >= ``num_classes``.

    Examples
    --------
    >>> confusion_matrix([0, 1, 1], [0, 1, 0])
    array([[1, 0],
           [1, 1]])
    """
    owner = "confusion_matrix"
    t = _labels(owner, "y_true", y_true)
    p = _labels(owner, "y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"{owner}: y_true and y_pred must have the same length, got "
                         f"{len(t)} and {len(p)}")
    top = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    if num_classes is None:
        num_classes = top
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"{owner}: num_classes must be an int >= 1, got {num_classes!r}")
    elif top > num_classes:
        raise ValueError(f"{owner}: labels must be < num_classes={num_classes}, got a "
                         f"label {top - 1}")
    k = int(num_classes)
    # one bincount over the flattened (true, predicted) index: exact integer counts
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def per_class_accuracy(cm):
    """Fraction of each class's samples predicted correctly (recall per class).

    Parameters
    ----------
    cm : ndarray of shape (C, C)
        A confusion matrix (rows: true class).

    Returns
    -------
    ndarray of shape (C,), float64
        ``cm[i, i] / cm[i].sum()``; NaN for a class with no samples.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"per_class_accuracy: cm must be a square (C, C) matrix, got shape {cm.shape}")
    rows = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / rows, np.nan)
