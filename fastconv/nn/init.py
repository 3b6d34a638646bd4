"""Weight initialisers.

Every initialiser has the signature ``f(shape, rng=None, dtype=np.float32)``
and returns a new array. ``rng`` is a ``numpy.random.Generator`` (or an int
seed, or None for fresh entropy). Fans follow the layer layouts of this
package: a conv weight ``(out_channels, in_channels/groups, kh, kw)`` has
``fan_in = in_channels/groups * kh * kw`` and ``fan_out = out_channels * kh * kw``;
a dense weight ``(out_features, in_features)`` has ``fan_in = in_features``,
``fan_out = out_features``.

Defaults used by the layers: conv and dense weights use He (Kaiming) normal,
``std = sqrt(2 / fan_in)``, which keeps activation variance constant through
ReLU layers (He et al., 2015) - the networks of this package are ReLU nets.
For a layer not followed by ReLU (e.g. the logits layer, or sigmoid/tanh
nets) Glorot uniform is the usual choice; pass ``weight_init="glorot_uniform"``.
Biases start at zero; batch-norm scale at one, shift at zero.
"""

import math

import numpy as np

from .._validate import check_float_dtype, check_rng

__all__ = [
    "compute_fans",
    "zeros",
    "ones",
    "normal",
    "uniform",
    "glorot_uniform",
    "glorot_normal",
    "xavier_uniform",
    "xavier_normal",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "get",
]


def _rng(rng):
    return check_rng("init", "rng", rng)


def _check(shape, dtype):
    shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    return shape, check_float_dtype("init", "dtype", dtype)


def compute_fans(shape):
    """``(fan_in, fan_out)`` of a weight shape.

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` for dense weights, ``(out, in, kh, kw)`` for conv
        weights; 1-D shapes use ``fan_in = fan_out = shape[0]``.

    Returns
    -------
    fan_in, fan_out : int
    """
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def zeros(shape, rng=None, dtype=np.float32):
    """All zeros (the default for biases).

    Parameters
    ----------
    shape : tuple of int
    rng : ignored
        Accepted so that every initialiser has the same signature.
    dtype : float32 or float64, default float32

    Returns
    -------
    ndarray of shape ``shape``
    """
    shape, dtype = _check(shape, dtype)
    return np.zeros(shape, dtype)


def ones(shape, rng=None, dtype=np.float32):
    """All ones (the default batch-norm scale). Same parameters as ``zeros``."""
    shape, dtype = _check(shape, dtype)
    return np.ones(shape, dtype)


def normal(shape, rng=None, dtype=np.float32, std=0.01, mean=0.0):
    """Gaussian ``N(mean, std**2)``, by default small values near zero (std 0.01).

    Parameters
    ----------
    shape : tuple of int
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64, default float32
    std : float, default 0.01
    mean : float, default 0.0

    Returns
    -------
    ndarray of shape ``shape``
    """
    shape, dtype = _check(shape, dtype)
    return _rng(rng).normal(mean, std, size=shape).astype(dtype)


def uniform(shape, rng=None, dtype=np.float32, limit=0.05):
    """Uniform on ``[-limit, limit)``. Same parameters as ``normal``."""
    shape, dtype = _check(shape, dtype)
    return _rng(rng).uniform(-limit, limit, size=shape).astype(dtype)


def glorot_uniform(shape, rng=None, dtype=np.float32):
    """Glorot/Xavier uniform: ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``.

    Variance ``2 / (fan_in + fan_out)`` (Glorot & Bengio, 2010). Parameters as
    ``normal``.
    """
    fan_in, fan_out = compute_fans(shape)
    return uniform(shape, rng, dtype, limit=math.sqrt(6.0 / (fan_in + fan_out)))


def glorot_normal(shape, rng=None, dtype=np.float32):
    """Glorot/Xavier normal: ``N(0, 2 / (fan_in + fan_out))``. Parameters as ``normal``."""
    fan_in, fan_out = compute_fans(shape)
    return normal(shape, rng, dtype, std=math.sqrt(2.0 / (fan_in + fan_out)))


def he_normal(shape, rng=None, dtype=np.float32):
    """He/Kaiming normal: ``N(0, 2 / fan_in)`` (default for conv and dense weights).

    Parameters as ``normal``.
    """
    fan_in, _ = compute_fans(shape)
    return normal(shape, rng, dtype, std=math.sqrt(2.0 / fan_in))


def he_uniform(shape, rng=None, dtype=np.float32):
    """He/Kaiming uniform: ``U(-a, a)``, ``a = sqrt(6 / fan_in)``. Parameters as ``normal``."""
    fan_in, _ = compute_fans(shape)
    return uniform(shape, rng, dtype, limit=math.sqrt(6.0 / fan_in))


xavier_uniform = glorot_uniform
xavier_normal = glorot_normal
kaiming_normal = he_normal
kaiming_uniform = he_uniform

_BY_NAME = {
    "zeros": zeros,
    "ones": ones,
    "normal": normal,
    "uniform": uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "kaiming_uniform": he_uniform,
}


def get(init):
    """Resolve an initialiser given by name or as a callable.

    Parameters
    ----------
    init : str or callable
        One of ``zeros``, ``ones``, ``normal``, ``uniform``,
        ``glorot_uniform``, ``glorot_normal``, ``he_normal``, ``he_uniform``
        (``xavier_*`` and ``kaiming_*`` are aliases), or a callable
        ``f(shape, rng, dtype) -> ndarray``.

    Returns
    -------
    callable

    Raises
    ------
    ValueError
        Unknown name.
    """
    if callable(init):
        return init
    if isinstance(init, str) and init.lower() in _BY_NAME:
        return _BY_NAME[init.lower()]
    raise ValueError(
        f"init: unknown initialiser {init!r}; expected one of {sorted(_BY_NAME)} or a callable"
    )
