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

(pooling has ``dilation = 1`` and ``pad_top = pad_bottom = padding``).
"""

import math

import numpy as np

from ._validate import (
    check_float_array,
    check_int,
    check_ndim,
    check_pair,
    check_same_dtype,
)

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
]

# --------------------------------------------------------------------------
# Argument normalisation
# --------------------------------------------------------------------------

def _conv_padding(padding, size, kernel, stride, dilation, func):
    """Return ``(top, bottom, left, right)`` for a conv ``padding`` argument.

    ``p``, ``(ph, pw)`` or ``((top, bottom), (left, right))``. ``'same'``
    follows TensorFlow (ONNX ``SAME_UPPER``): ``ceil(size / stride)`` outputs,
    total padding ``max((out - 1)*stride + dilation*(k-1) + 1 - size, 0)``
    per axis, the odd pixel (if any) going to the bottom / right. For stride
    1 that is PyTorch's 'same', total ``dilation*(k-1)``.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(
                f"{func}: padding must be an int, a pair, per side ((top, bottom), "
                f"(left, right)), 'same' or 'valid', got {padding!r}")
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            out = math.ceil(n / s)
            total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        top, bottom = check_pair(func, "padding", padding[0], minimum=0)
        left, right = check_pair(func, "padding", padding[1], minimum=0)
        return (top, bottom, left, right)
    ph, pw = check_pair(func, "padding", padding, minimum=0)
    return (ph, ph, pw, pw)


def _out_size(size, pad_lo, pad_hi, kernel, stride, dilation):
    """Output length along one axis, or a value < 1 if the kernel does not fit."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def _array(func, name, a, ndim=4, layout="(N, C, H, W)"):
    """``a`` as a C-ordered float32/float64 ndarray with ``ndim`` axes.

    C order makes NumPy sum each window in the same order whatever the
    caller's layout, so the reference too is bitwise layout-independent.
    """
    a = check_float_array(func, name, a)
    check_ndim(func, name, a, ndim, layout)
    return np.ascontiguousarray(a)


def _shape4(shape, name, func):
    if len(shape) != 4:
        raise ValueError(f"{func}: {name} must have 4 entries (N, C, H, W), got {shape!r}")
    shape = tuple(check_int(func, name, s) for s in shape)
    if min(shape) < 0:
        raise ValueError(f"{func}: {name} must be non-negative, got {shape!r}")
    return shape


def _finish(result, out, name, func):
    """Return ``result``, copied into ``out`` when a buffer is given."""
    if out is None:
        return result
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{func}: {name} must be an ndarray, got {type(out).__name__}")
    if out.shape != result.shape:
        raise ValueError(
            f"{func}: {name} must have shape {result.shape}, got {out.shape}")
    if out.dtype != result.dtype:
        raise TypeError(f"{func}: {name} must have dtype {result.dtype}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{func}: {name} is read-only")
    out[...] = result
    return out


def _conv_geometry(x_shape, w_shape, stride, padding, dilation, groups, func):
    """Check conv shapes and return ``(stride, pads, dilation, groups, Ho, Wo)``."""
    N, C, H, W = x_shape
    K, Cg, kh, kw = w_shape
    stride = check_pair(func, "stride", stride, minimum=1)
    dilation = check_pair(func, "dilation", dilation, minimum=1)
    groups = check_int(func, "groups", groups, minimum=1)
    if kh < 1 or kw < 1:
        raise ValueError(f"{func}: weight must have a non-empty kernel, got shape {w_shape}")
    if C % groups or K % groups:
        raise ValueError(
            f"{func}: groups={groups} must divide the input channels ({C}) "
            f"and the output channels ({K})")
    if Cg * groups != C:
        raise ValueError(
            f"{func}: weight of shape {w_shape} with groups={groups} expects input "
            f"with {Cg * groups} channels, got input of shape {x_shape}")
    pads = _conv_padding(padding, (H, W), (kh, kw), stride, dilation, func)
    Ho = _out_size(H, pads[0], pads[1], kh, stride[0], dilation[0])
    Wo = _out_size(W, pads[2], pads[3], kw, stride[1], dilation[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{func}: kernel {(kh, kw)} with dilation {dilation} is larger than the "
            f"padded input {(H + pads[0] + pads[1], W + pads[2] + pads[3])}")
    return stride, pads, dilation, groups, Ho, Wo


def _pool_geometry(x_shape, kernel_size, stride, padding, func):
    """Check pooling parameters and return ``(kernel, stride, padding, Ho, Wo)``."""
    _, _, H, W = x_shape
    kernel = check_pair(func, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else check_pair(func, "stride", stride, minimum=1)
    padding = check_pair(func, "padding", padding, minimum=0)
    for p, k in zip(padding, kernel):
        if p > k // 2:
            raise ValueError(
                f"{func}: padding must be at most half the kernel size, got "
                f"padding={padding} for kernel_size={kernel}")
    Ho = _out_size(H, padding[0], padding[0], kernel[0], stride[0], 1)
    Wo = _out_size(W, padding[1], padding[1], kernel[1], stride[1], 1)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{func}: kernel_size {kernel} is larger than the padded input "
            f"{(H + 2 * padding[0], W + 2 * padding[1])}")
    return kernel, stride, padding, Ho, Wo


def _pad(x, pads, value=0.0):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)),
                  constant_values=value)


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


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices=False, out=None):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (kh, kw) pair, >= 1
    stride : int or pair, optional
        Defaults to ``kernel_size``.
    padding : int or pair, at most half the kernel size
        Implicit ``-inf`` border: it never wins a window.
    return_indices : bool
        Also return where each maximum came from.
    out : ndarray of shape (N, C, H_out, W_out), or a (y, indices) pair when
        ``return_indices``, optional

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out), dtype of ``x``
        ``H_out = (H + 2*pad - kh) // stride + 1``. Within a window the first
        maximum in raster order wins; a NaN wins over any number (the last
        NaN, if several, as in PyTorch).
    indices : ndarray of shape (N, C, H_out, W_out), int64
        Only with ``return_indices``: ``h*W + w`` of the winner in its
        unpadded (n, c) plane.
    """
    func = "max_pool2d"
    x = _array(func, "x", x)
    (kh, kw), (sh, sw), (ph, pw), Ho, Wo = _pool_geometry(
        x.shape, kernel_size, stride, padding, func)
    N, C, H, W = x.shape

    y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    idx = np.empty((N, C, Ho, Wo), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    # the window clipped to the real image: padding is -inf,
                    # so it can only matter if every real value is -inf too,
                    # and then the first real element wins the tie anyway.
                    h0, h1 = max(i * sh - ph, 0), min(i * sh - ph + kh, H)
                    w0, w1 = max(j * sw - pw, 0), min(j * sw - pw + kw, W)
                    best, where = -np.inf, h0 * W + w0
                    for h in range(h0, h1):
                        for v in range(w0, w1):
                            value = x[n, c, h, v]
                            # PyTorch's rule: a NaN always takes over, so the
                            # last NaN in raster order is the one reported
                            if value > best or math.isnan(value):
                                best, where = value, h * W + v
                    y[n, c, i, j] = best
                    idx[n, c, i, j] = where

    if not return_indices:
        return _finish(y, out, "out", func)
    if out is None:
        out = (None, None)
    if len(out) != 2:
        raise ValueError(f"{func}: out must be a (y, indices) pair, got {out!r}")
    return (_finish(y, out[0], "out[0]", func), _finish(idx, out[1], "out[1]", func))


def max_pool2d_backward(grad_out, indices, input_shape, *, out=None):
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out), dtype float32 or float64
    indices : ndarray of shape (N, C, H_out, W_out), int64
        As returned by ``max_pool2d(..., return_indices=True)``; each in
        ``[0, H*W)``.
    input_shape : tuple (N, C, H, W)
    out : ndarray of shape ``input_shape``, optional

    Returns
    -------
    grad_x : ndarray of shape (N, C, H, W), dtype of ``grad_out``
        ``grad_x[n, c].flat[indices[n, c, i, j]] += grad_out[n, c, i, j]``.
    """
    func = "max_pool2d_backward"
    grad_out = _array(func, "grad_out", grad_out)
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{func}: indices must be int64, got dtype {indices.dtype}")
    N, C, H, W = _shape4(input_shape, "input_shape", func)
    if grad_out.shape[:2] != (N, C):
        raise ValueError(
            f"{func}: grad_out of shape {grad_out.shape} does not match "
            f"input_shape {(N, C, H, W)}")
    if indices.shape != grad_out.shape:
        raise ValueError(
            f"{func}: indices must have the shape of grad_out {grad_out.shape}, "
            f"got {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= H * W):
        raise ValueError(
            f"{func}: indices must lie in [0, {H * W}) for input_shape "
            f"{(N, C, H, W)}, got values in [{indices.min()}, {indices.max()}]")

    _, _, Ho, Wo = grad_out.shape
    gx = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    gx[n, c, indices[n, c, i, j]] += grad_out[n, c, i, j]
    return _finish(gx.reshape(N, C, H, W).astype(grad_out.dtype), out, "out", func)


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, count_include_pad=True, out=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (kh, kw) pair, >= 1
    stride : int or pair, optional
        Defaults to ``kernel_size``.
    padding : int or pair, at most half the kernel size
        Implicit zero border.
    count_include_pad : bool
        Divide by ``kh*kw`` (True) or by the number of real pixels in the
        window (False).
    out : ndarray of shape (N, C, H_out, W_out), optional

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out), dtype of ``x``
        ``H_out = (H + 2*pad - kh) // stride + 1``.
    """
    func = "avg_pool2d"
    x = _array(func, "x", x)
    (kh, kw), (sh, sw), (ph, pw), Ho, Wo = _pool_geometry(
        x.shape, kernel_size, stride, padding, func)
    N, C, H, W = x.shape

    xpad = _pad(x.astype(np.float64), (ph, ph, pw, pw))
    y = np.zeros((N, C, Ho, Wo))
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    h, v = i * sh, j * sw
                    total = np.sum(xpad[n, c, h:h + kh, v:v + kw])
                    y[n, c, i, j] = total / _divisor(
                        h - ph, v - pw, kh, kw, H, W, count_include_pad)
    return _finish(y.astype(x.dtype), out, "out", func)


def _divisor(h0, w0, kh, kw, H, W, count_include_pad):
    """Number an average-pool window starting at (h0, w0) (unpadded) divides by."""
    if count_include_pad:
        return kh * kw
    rows = min(h0 + kh, H) - max(h0, 0)
    cols = min(w0 + kw, W) - max(w0, 0)
    return rows * cols


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, *,
                        count_include_pad=True, out=None):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out), dtype float32 or float64
        ``H_out = (H + 2*pad - kh) // stride + 1``.
    input_shape : tuple (N, C, H, W)
    kernel_size, stride, padding, count_include_pad : as for :func:`avg_pool2d`
    out : ndarray of shape ``input_shape``, optional

    Returns
    -------
    grad_x : ndarray of shape (N, C, H, W), dtype of ``grad_out``
        Each ``grad_out[n, c, i, j] / divisor`` is added to every real pixel
        of window (i, j).
    """
    func = "avg_pool2d_backward"
    grad_out = _array(func, "grad_out", grad_out)
    shape = _shape4(input_shape, "input_shape", func)
    (kh, kw), (sh, sw), (ph, pw), Ho, Wo = _pool_geometry(
        shape, kernel_size, stride, padding, func)
    N, C, H, W = shape
    if grad_out.shape != (N, C, Ho, Wo):
        raise ValueError(
            f"{func}: grad_out must have shape {(N, C, Ho, Wo)} (the avg_pool2d "
            f"output for input_shape {shape}), got {grad_out.shape}")

    gxpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    h, v = i * sh, j * sw
                    share = float(grad_out[n, c, i, j]) / _divisor(
                        h - ph, v - pw, kh, kw, H, W, count_include_pad)
                    gxpad[n, c, h:h + kh, v:v + kw] += share
    gx = gxpad[:, :, ph:ph + H, pw:pw + W]
    return _finish(gx.astype(grad_out.dtype), out, "out", func)
