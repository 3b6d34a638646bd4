"""The fastconv kernels written as plain nested loops.

Every function here has the signature and semantics of its namesake in
``fastconv`` (see ``docs/design.md``), which are those of
``torch.nn.functional``: NCHW input, OIHW weight, cross-correlation, max-pool
padding with ``-inf``, ties to the first element in raster order, NaN wins a
max-pool window, average-pool padding counted when ``count_include_pad``.

The point of this module is to be checked by eye, not to be fast: the only
vectorisation is the product over one window, written with NumPy slicing.
It is the test oracle for the compiled kernels and the baseline of the
benchmarks. Sums are accumulated in float64 and rounded once to the input
dtype, so for float32 input the reference is the more accurate of the two.

Output size, for every kernel and each spatial axis::

    H_out = (H + pad_top + pad_bottom - dilation*(kh-1) - 1) // stride + 1

(average pooling has ``dilation = 1``; pooling with ``ceil_mode`` rounds up,
dropping a last window that would start past the input and the top padding).
"""

import numpy as np

from ._validate import check_int, check_pair, check_same_dtype

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv2d_output_shape",
    "conv1d",
    "conv1d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
]
from ._reference_common import (
    _array,
    _conv_geometry,
    _conv_padding,
    _finish,
    _out_size,
    _pad,
    _shape4,
)
from ._reference_pool import (  # noqa: F401  (pooling twins: public here)
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
)


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------

def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1,
                        groups=1):
    """Shape of ``conv2d(x, weight, ...)``, with the same checks.

    Parameters
    ----------
    input_shape : tuple of 4 ints (N, C, H, W)
    weight_shape : tuple of 4 ints (K, C // groups, kh, kw)
    stride, padding, dilation, groups : as for :func:`conv2d`

    Returns
    -------
    tuple (N, K, H_out, W_out)
        ``H_out = (H + pad_top + pad_bottom - dilation*(kh-1) - 1) // stride + 1``.
    """
    func = "conv2d_output_shape"
    x_shape = _shape4(input_shape, "input_shape", func)
    w_shape = _shape4(weight_shape, "weight_shape", func)
    *_, Ho, Wo = _conv_geometry(x_shape, w_shape, stride, padding, dilation, groups, func)
    return (x_shape[0], w_shape[0], Ho, Wo)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    weight : ndarray of shape (K, C // groups, kh, kw), same dtype as ``x``
    bias : ndarray of shape (K,), same dtype as ``x``, optional
    stride, dilation : int or (h, w) pair, >= 1
    padding : int or (h, w) pair >= 0, per side ``((top, bottom), (left,
        right))``, ``'valid'`` (no padding) or ``'same'`` (``ceil(H / stride)``
        outputs, TensorFlow's rule: see ``_conv_padding``)
    groups : int, divides C and K
    out : ndarray of shape (N, K, H_out, W_out), optional
        Buffer for the result; returned.

    Returns
    -------
    y : ndarray of shape (N, K, H_out, W_out), dtype of ``x``
        ``H_out = (H + pad_top + pad_bottom - dilation*(kh-1) - 1) // stride + 1``
        and likewise for ``W_out``::

            y[n, k, i, j] = bias[k] + sum over c in group(k), a, b of
                weight[k, c, a, b] * xpad[n, c, i*sh + a*dh, j*sw + b*dw]
    """
    func = "conv2d"
    x = _array(func, "x", x)
    weight = _array(func, "weight", weight, 4, "(out_channels, in_channels/groups, kH, kW)")
    if bias is not None:
        bias = _array(func, "bias", bias, 1, "(out_channels,)")
    check_same_dtype(func, "x", x, weight=weight, bias=bias)
    (sh, sw), pads, (dh, dw), groups, Ho, Wo = _conv_geometry(
        x.shape, weight.shape, stride, padding, dilation, groups, func)
    N = x.shape[0]
    K, Cg, kh, kw = weight.shape
    if bias is not None and bias.shape != (K,):
        raise ValueError(f"{func}: bias must have shape ({K},), got {bias.shape}")
    Kg = K // groups

    xpad = _pad(x.astype(np.float64), pads)
    w = weight.astype(np.float64)
    y = np.zeros((N, K, Ho, Wo))
    for n in range(N):
        for k in range(K):
            c0 = (k // Kg) * Cg  # first input channel of k's group
            for i in range(Ho):
                for j in range(Wo):
                    h, v = i * sh, j * sw
                    window = xpad[n, c0:c0 + Cg,
                                  h:h + dh * (kh - 1) + 1:dh,
                                  v:v + dw * (kw - 1) + 1:dw]
                    y[n, k, i, j] = np.sum(window * w[k])
            if bias is not None:
                y[n, k] += bias[k]
    return _finish(y.astype(x.dtype), out, "out", func)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), out=None):
    """Gradients of :func:`conv2d` with respect to ``x``, ``weight`` and ``bias``.

    Parameters
    ----------
    grad_out : ndarray of shape (N, K, H_out, W_out), dtype of ``x``
        Gradient of the loss with respect to ``conv2d(x, weight, ...)``.
    x, weight, stride, padding, dilation, groups : as for :func:`conv2d`
    output_mask : three bools, optional
        Which of ``(grad_x, grad_weight, grad_bias)`` to compute; a ``False``
        entry returns ``None`` in that place.
    out : tuple of three ndarrays or None, optional
        Buffers for the gradients (entries may be None); used ones are returned.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H, W) or None
    grad_weight : ndarray of shape (K, C // groups, kh, kw) or None
    grad_bias : ndarray of shape (K,) or None

    Notes
    -----
    Each output element ``y[n, k, i, j]`` read one window of ``xpad`` with
    weight ``weight[k]``; its gradient flows back to exactly those places::

        grad_xpad[n, group(k), window(i, j)] += grad_out[n, k, i, j] * weight[k]
        grad_weight[k] += grad_out[n, k, i, j] * xpad[n, group(k), window(i, j)]
        grad_bias[k] += grad_out[n, k, i, j]

    and ``grad_x`` is ``grad_xpad`` with the padding cut off.
    """
    func = "conv2d_backward"
    grad_out = _array(func, "grad_out", grad_out)
    x = _array(func, "x", x)
    weight = _array(func, "weight", weight, 4, "(out_channels, in_channels/groups, kH, kW)")
    check_same_dtype(func, "x", x, grad_out=grad_out, weight=weight)
    (sh, sw), pads, (dh, dw), groups, Ho, Wo = _conv_geometry(
        x.shape, weight.shape, stride, padding, dilation, groups, func)
    N, C, H, W = x.shape
    K, Cg, kh, kw = weight.shape
    if grad_out.shape != (N, K, Ho, Wo):
        raise ValueError(
            f"{func}: grad_out must have shape {(N, K, Ho, Wo)} (the conv2d output), "
            f"got {grad_out.shape}")
    if len(output_mask) != 3:
        raise ValueError(f"{func}: output_mask must have 3 entries, got {output_mask!r}")
    want_x, want_w, want_b = (bool(m) for m in output_mask)
    if out is None:
        out = (None, None, None)
    if len(out) != 3:
        raise ValueError(f"{func}: out must be a tuple of 3 arrays or None, got {out!r}")
    Kg = K // groups

    xpad = _pad(x.astype(np.float64), pads)
    w = weight.astype(np.float64)
    g = grad_out.astype(np.float64)
    gxpad = np.zeros_like(xpad)
    gw = np.zeros(weight.shape)
    for n in range(N):
        for k in range(K):
            c0 = (k // Kg) * Cg
            for i in range(Ho):
                for j in range(Wo):
                    h, v = i * sh, j * sw
                    rows = slice(h, h + dh * (kh - 1) + 1, dh)
                    cols = slice(v, v + dw * (kw - 1) + 1, dw)
                    gxpad[n, c0:c0 + Cg, rows, cols] += g[n, k, i, j] * w[k]
                    gw[k] += g[n, k, i, j] * xpad[n, c0:c0 + Cg, rows, cols]
    gx = gxpad[:, :, pads[0]:pads[0] + H, pads[2]:pads[2] + W]
    gb = np.zeros(K)
    for k in range(K):
        gb[k] = np.sum(g[:, k])

    return (
        _finish(gx.astype(x.dtype), out[0], "out[0]", func) if want_x else None,
        _finish(gw.astype(x.dtype), out[1], "out[1]", func) if want_w else None,
        _finish(gb.astype(x.dtype), out[2], "out[2]", func) if want_b else None,
    )


def _int1(func, name, value):
    """A 1-D stride or dilation: an int >= 1 or a sequence of one."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{func}: {name} must be an int, got {value!r}")
        value = value[0]
    return check_int(func, name, value, minimum=1)


def _conv1d_geometry(x_shape, w_shape, stride, padding, dilation, groups, func):
    """Check conv1d shapes and return ``(stride, (left, right), dilation, groups, Lo)``."""
    N, C, L = x_shape
    K, Cg, k = w_shape
    stride = _int1(func, "stride", stride)
    dilation = _int1(func, "dilation", dilation)
    groups = check_int(func, "groups", groups, minimum=1)
    if k < 1:
        raise ValueError(f"{func}: weight must have a non-empty kernel, got shape {w_shape}")
    if C % groups or K % groups:
        raise ValueError(
            f"{func}: groups={groups} must divide the input channels ({C}) "
            f"and the output channels ({K})")
    if Cg * groups != C:
        raise ValueError(
            f"{func}: weight of shape {w_shape} with groups={groups} expects input "
            f"with {Cg * groups} channels, got input of shape {x_shape}")
    if isinstance(padding, str):
        _, _, left, right = _conv_padding(padding, (1, L), (1, k), (1, stride), (1, dilation),
                                          func)
    else:
        if isinstance(padding, (tuple, list)) and (
                len(padding) != 2 or any(isinstance(p, (tuple, list)) for p in padding)):
            raise ValueError(f"{func}: padding must be an int, a pair (left, right), 'valid' "
                             f"or 'same', got {padding!r}")
        left, right = check_pair(func, "padding", padding, minimum=0)
    Lo = _out_size(L, left, right, k, stride, dilation)
    if Lo < 1:
        raise ValueError(
            f"{func}: kernel {k} with dilation {dilation} is larger than the "
            f"padded input {L + left + right}")
    return stride, (left, right), dilation, groups, Lo


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None):
    """1-D cross-correlation, as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, L), dtype float32 or float64
    weight : ndarray of shape (K, C // groups, k), same dtype as ``x``
    bias : ndarray of shape (K,), optional
    stride, dilation : int >= 1
    padding : int or ``(left, right)`` >= 0, ``'valid'`` or ``'same'``
        (``ceil(L / stride)`` outputs, the odd pixel at the right)
    groups : int, divides C and K
    out : ndarray of shape (N, K, L_out), optional

    Returns
    -------
    y : ndarray of shape (N, K, L_out), dtype of ``x``
        ``L_out = (L + left + right - dilation*(k-1) - 1) // stride + 1``::

            y[n, k, i] = bias[k] + sum over c in group(k), a of
                weight[k, c, a] * xpad[n, c, i*stride + a*dilation]
    """
    func = "conv1d"
    x = _array(func, "x", x, 3, "(N, C, L)")
    weight = _array(func, "weight", weight, 3, "(out_channels, in_channels/groups, kL)")
    if bias is not None:
        bias = _array(func, "bias", bias, 1, "(out_channels,)")
    check_same_dtype(func, "x", x, weight=weight, bias=bias)
    s, (left, right), d, groups, Lo = _conv1d_geometry(
        x.shape, weight.shape, stride, padding, dilation, groups, func)
    N = x.shape[0]
    K, Cg, k = weight.shape
    if bias is not None and bias.shape != (K,):
        raise ValueError(f"{func}: bias must have shape ({K},), got {bias.shape}")
    Kg = K // groups
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (left, right)))
    w = weight.astype(np.float64)
    y = np.zeros((N, K, Lo))
    for n in range(N):
        for kk in range(K):
            c0 = (kk // Kg) * Cg
            for i in range(Lo):
                window = xpad[n, c0:c0 + Cg, i * s:i * s + d * (k - 1) + 1:d]
                y[n, kk, i] = np.sum(window * w[kk])
            if bias is not None:
                y[n, kk] += bias[kk]
    return _finish(y.astype(x.dtype), out, "out", func)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), out=None):
    """Gradients of :func:`conv1d` with respect to ``x``, ``weight`` and ``bias``.

    As :func:`conv2d_backward`, along one axis: each ``y[n, k, i]`` read one
    window of ``xpad``, and its gradient flows back to exactly that window.

    Returns
    -------
    grad_x : ndarray of shape (N, C, L) or None
    grad_weight : ndarray of shape (K, C // groups, k) or None
    grad_bias : ndarray of shape (K,) or None
    """
    func = "conv1d_backward"
    grad_out = _array(func, "grad_out", grad_out, 3, "(N, K, L_out)")
    x = _array(func, "x", x, 3, "(N, C, L)")
    weight = _array(func, "weight", weight, 3, "(out_channels, in_channels/groups, kL)")
    check_same_dtype(func, "x", x, grad_out=grad_out, weight=weight)
    s, (left, right), d, groups, Lo = _conv1d_geometry(
        x.shape, weight.shape, stride, padding, dilation, groups, func)
    N, C, L = x.shape
    K, Cg, k = weight.shape
    if grad_out.shape != (N, K, Lo):
        raise ValueError(
            f"{func}: grad_out must have shape {(N, K, Lo)} (the conv1d output), "
            f"got {grad_out.shape}")
    if len(output_mask) != 3:
        raise ValueError(f"{func}: output_mask must have 3 entries, got {output_mask!r}")
    want_x, want_w, want_b = (bool(m) for m in output_mask)
    if out is None:
        out = (None, None, None)
    if len(out) != 3:
        raise ValueError(f"{func}: out must be a tuple of 3 arrays or None, got {out!r}")
    Kg = K // groups
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (left, right)))
    w = weight.astype(np.float64)
    g = grad_out.astype(np.float64)
    gxpad = np.zeros_like(xpad)
    gw = np.zeros(weight.shape)
    for n in range(N):
        for kk in range(K):
            c0 = (kk // Kg) * Cg
            for i in range(Lo):
                taps = slice(i * s, i * s + d * (k - 1) + 1, d)
                gxpad[n, c0:c0 + Cg, taps] += g[n, kk, i] * w[kk]
                gw[kk] += g[n, kk, i] * xpad[n, c0:c0 + Cg, taps]
    gx = gxpad[:, :, left:left + L]
    gb = g.sum(axis=(0, 2))
    return (
        _finish(gx.astype(x.dtype), out[0], "out[0]", func) if want_x else None,
        _finish(gw.astype(x.dtype), out[1], "out[1]", func) if want_w else None,
        _finish(gb.astype(x.dtype), out[2], "out[2]", func) if want_b else None,
    )
