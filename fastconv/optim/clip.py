"""Gradient clipping, as ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``."""

import math

import numpy as np

from .._validate import check_number
from .base import is_parameter


def _grad_params(params, owner):
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    params = [params] if is_parameter(params) else list(params)
    for i, p in enumerate(params):
        if not is_parameter(p):
            raise TypeError(
                f"{owner}: parameters[{i}] must be a fastconv.nn.Parameter, got {type(p).__name__}")
    return [p for p in params if p.requires_grad]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so that their joint norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the norm is taken over all the
    gradients as if concatenated into one vector; every gradient is multiplied
    by ``min(1, max_norm / (total_norm + 1e-6))``.

    Parameters
    ----------
    parameters : Parameter, iterable of Parameter, or a Module
        Frozen parameters (``requires_grad=False``) are left out.
    max_norm : float
        Must be >= 0.
    norm_type : float, default 2.0
        Order of the norm (> 0); ``float("inf")`` for the largest absolute value.
    error_if_nonfinite : bool, default False
        Raise if the total norm is NaN or infinite (otherwise gradients are
        scaled by a NaN factor, as in PyTorch).

    Returns
    -------
    float
        The total norm of the gradients before clipping.

    Raises
    ------
    ValueError
        Bad ``max_norm`` / ``norm_type``, or a non-finite norm when
        ``error_if_nonfinite``.
    """
    owner = "clip_grad_norm_"
    params = _grad_params(parameters, owner)
    max_norm = check_number(owner, "max_norm", max_norm)
    try:
        norm_type = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: norm_type must be a number, got {norm_type!r}") from None
    if not norm_type > 0:
        raise ValueError(f"{owner}: norm_type must be > 0 (or inf), got {norm_type}")
    if not params:
        return 0.0
    # per-parameter norms in float64 (PyTorch takes them in the gradient's dtype,
    # so float32 results agree to float32 rounding)
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(p.grad))) if p.grad.size else 0.0 for p in params)
    else:
        norms = np.array([np.linalg.norm(p.grad.ravel().astype(np.float64), norm_type)
                          if p.grad.size else 0.0 for p in params])
        total = float(np.linalg.norm(norms, norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(
            f"{owner}: the total norm of order {norm_type} of the gradients is {total}; "
            "pass error_if_nonfinite=False to scale them anyway")
    coef = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
    if coef < 1.0 or math.isnan(coef):
        for p in params:
            p.grad *= coef
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]``, in place.

    As ``torch.nn.utils.clip_grad_value_``.

    Parameters
    ----------
    parameters : Parameter, iterable of Parameter, or a Module
        Frozen parameters are left out.
    clip_value : float
        Must be >= 0.

    Raises
    ------
    ValueError
        ``clip_value`` negative, NaN or infinite.
    """
    owner = "clip_grad_value_"
    params = _grad_params(parameters, owner)
    clip_value = check_number(owner, "clip_value", clip_value)
    for p in params:
        np.clip(p.grad, -clip_value, clip_value, out=p.grad)
