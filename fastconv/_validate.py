"""Argument checks shared by every public entry point of fastconv.

One argument order everywhere: ``check_*(fn, name, value, ...)``, where ``fn``
is the public function or class the user called (it starts every message) and
``name`` the argument as the user spelled it. Every message says what was
expected and what was received, e.g.
``conv2d: stride must be >= 1, got (0, 1)``.

``TypeError`` means the kind of value is wrong (a float where an int is
needed, an int64 array where float32/float64 is); ``ValueError`` means the kind
is right and the value is not (a negative count, a wrong shape, mismatched
lengths). Checks return the normalised value (a Python int, a pair, a float, a
Generator, a dtype), so callers write ``n = check_int(fn, "n", n, minimum=1)``.

Nothing here uses ``assert``: it vanishes under ``python -O``.
"""

import math
import numbers
import operator

import numpy as np

__all__ = [
    "MAX_PARAM",
    "FLOAT_DTYPES",
    "check_int",
    "check_pair",
    "check_number",
    "check_fraction",
    "check_rng",
    "check_float_dtype",
    "check_float_array",
    "check_ndim",
    "check_same_dtype",
    "check_xy",
    "check_targets",
]

# A kernel size, stride, padding or dilation past this is a mistake, not a
# workload: the C kernels take these as 32-bit ints.
MAX_PARAM = 2**31 - 1

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_int(fn, name, value, minimum=None, maximum=None):
    """Return ``value`` as a Python int in ``[minimum, maximum]`` (either bound optional).

    Anything with ``__index__`` is an int (numpy integers included); bools and
    floats are not, even ``2.0``: a float here is almost always a unit mix-up.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be an int, got bool {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{fn}: {name} must be <= {maximum}, got {v}")
    return v


def check_pair(fn, name, value, minimum=1, maximum=MAX_PARAM):
    """Return ``(h, w)`` from an int or an (h, w) pair, each in ``[minimum, maximum]``.

    A tuple, list or 1-D array of two ints is a pair; a sequence of any other
    length is a ``ValueError``. The messages quote the argument as given.
    """
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(
                f"{fn}: {name} must be an int or a pair of ints (h, w), got {value!r}")
        items = value
    else:
        items = (value, value)
    pair = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            item = None  # refused below, with the whole argument in the message
        try:
            pair.append(operator.index(item))
        except TypeError:
            raise TypeError(
                f"{fn}: {name} must be an int or a pair of ints (h, w), got {value!r}") from None
    for v in pair:
        if v < minimum:
            raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
        if maximum is not None and v > maximum:
            bound = "2**31 - 1" if maximum == MAX_PARAM else maximum
            raise ValueError(f"{fn}: {name} must be <= {bound}, got {value!r}")
    return pair[0], pair[1]


def check_number(fn, name, value, minimum=0.0):
    """Return ``value`` as a finite float ``>= minimum`` (NaN and inf refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{fn}: {name} must be a number, got {value!r}") from None
    # written so that NaN fails too
    if not v >= minimum or math.isinf(v):
        bound = f"{minimum:g}" if minimum == int(minimum) else f"{minimum}"
        raise ValueError(f"{fn}: {name} must be a finite number >= {bound}, got {v}")
    return v


def check_fraction(fn, name, value):
    """Return ``value`` as a float in ``[0, 1)``: a decay rate such as Adam's betas."""
    v = check_number(fn, name, value)
    if v >= 1.0:
        raise ValueError(f"{fn}: {name} must be in [0, 1), got {v}")
    return v


def check_rng(fn, name, rng):
    """Return a ``numpy.random.Generator`` from a Generator, a seed or None.

    A Generator is used as is (the caller's stream advances); an int seed, a
    ``SeedSequence`` or None (fresh entropy) makes a new one.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, np.random.SeedSequence) or (
            isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_))):
        return np.random.default_rng(rng)
    raise TypeError(
        f"{fn}: {name} must be None, an int seed or a numpy.random.Generator, "
        f"got {type(rng).__name__}")


def check_float_dtype(fn, name, dtype):
    """Return ``np.dtype(dtype)``, which must be float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must be float32 or float64, got {dt}")
    return dt


def check_float_array(fn, name, a):
    """Return ``a`` as an ndarray of dtype float32 or float64 (never cast)."""
    if not isinstance(a, np.ndarray):
        if a is None:
            raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got None")
        a = np.asarray(a)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {a.dtype}")
    return a


def check_ndim(fn, name, a, ndim, layout):
    """Require ``a.ndim == ndim``; ``layout`` names the axes, e.g. ``"(N, C, H, W)"``.

    A 3-D image batch missing its batch axis is the common slip, so that
    message says how to add it.
    """
    if a.ndim == ndim:
        return
    if ndim == 4 and a.ndim == 3 and layout == "(N, C, H, W)":
        raise ValueError(
            f"{fn}: {name} must be 4-D {layout}, got 3-D shape {a.shape}; "
            f"add the batch axis, e.g. {name}[None]")
    raise ValueError(f"{fn}: {name} must be {ndim}-D {layout}, got shape {a.shape}")


def check_same_dtype(fn, ref_name, ref, **others):
    """Require every array in ``others`` (None skipped) to have ``ref``'s dtype."""
    for name, a in others.items():
        if a is not None and a.dtype != ref.dtype:
            raise TypeError(
                f"{fn}: {name} has dtype {a.dtype} but {ref_name} has dtype {ref.dtype}; "
                "mixing float32 and float64 is not supported, cast one of them")


def check_xy(fn, x, y, xname="x", yname="y", *, numeric=False, min_ndim=1):
    """Return ``(x, y)`` as arrays with one sample per row of each.

    ``numeric``: ``x`` must be a real number array (float, int or uint), as the
    models train on. ``min_ndim``: ``x`` needs at least this many axes (2 for
    a model's input: the batch axis and the features).
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if numeric and x.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: {xname} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim < max(min_ndim, 1):
        if min_ndim >= 2:
            raise ValueError(
                f"{fn}: {xname} must have a batch axis and at least {min_ndim} dimensions "
                f"(N, C, H, W) or (N, features), got shape {x.shape}")
        raise ValueError(
            f"{fn}: {xname} and {yname} must be arrays with a leading sample axis, "
            f"got {xname} of shape {x.shape}")
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != len(x):
        # Two phrasings of one fact, both kept: callers and tests match on each.
        got = len(y) if y.ndim else "a scalar"
        raise ValueError(
            f"{fn}: {xname} and {yname} must have the same length, got {len(x)} samples in "
            f"{xname} and {got} in {yname} ({xname} has {len(x)} samples but {yname} "
            f"has {got})")
    return x, y


def check_targets(fn, name, y):
    """Require training targets: int class labels (N,), or float (N,) / (N, classes)."""
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            raise ValueError(
                f"{fn}: integer {name} must be class labels of shape (N,), got shape {y.shape}")
    elif y.dtype.kind in "fb":
        if y.ndim not in (1, 2):
            raise ValueError(
                f"{fn}: float {name} must be (N, classes) one-hot/probabilities or (N,) "
                f"targets, got shape {y.shape}")
    else:
        raise TypeError(
            f"{fn}: {name} must be int64 class labels or float one-hot targets, "
            f"got dtype {y.dtype}")
    return y
