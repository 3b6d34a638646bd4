"""Plain-loop twins of the pooling functions; part of ``fastconv.reference``
(re-exported there, where the tests and benchmarks find them)."""

import math

import numpy as np

from ._reference_common import (
    _array,
    _finish,
    _pool_geometry,
    _shape4,
)


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
               return_indices=False, out=None):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (kh, kw) pair, >= 1
    stride : int or pair, optional
        Defaults to ``kernel_size``.
    padding : int, pair or ((top, bottom), (left, right))
        Implicit ``-inf`` border: it never wins a window. Each side smaller
        than the dilated window.
    dilation : int or pair
        Spacing of the window's taps.
    ceil_mode : bool
        Round the output size up (PyTorch's rule).
    return_indices : bool
        Also return where each maximum came from.
    out : ndarray of shape (N, C, H_out, W_out), or a (y, indices) pair when
        ``return_indices``, optional

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out), dtype of ``x``
        ``H_out = (H + top + bottom - dilation*(kh-1) - 1) // stride + 1``
        (rounded up with ceil_mode, unless that window would start past the
        input and the top padding). Within a window the first maximum in
        raster order wins; a NaN wins over any number (the last NaN, if
        several, as in PyTorch).
    indices : ndarray of shape (N, C, H_out, W_out), int64
        Only with ``return_indices``: ``h*W + w`` of the winner in its
        unpadded (n, c) plane.
    """
    func = "max_pool2d"
    x = _array(func, "x", x)
    (kh, kw), (sh, sw), (top, _, left, _), (dh, dw), Ho, Wo = _pool_geometry(
        x.shape, kernel_size, stride, padding, func, dilation, ceil_mode)
    N, C, H, W = x.shape

    y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    idx = np.empty((N, C, Ho, Wo), dtype=np.int64)
    for i in range(Ho):
        for j in range(Wo):
            # the window's taps that are real pixels: padding is -inf, so it
            # can only matter if every real value is -inf too, and then the
            # first real element wins the tie anyway
            rows = [i * sh - top + a * dh for a in range(kh)]
            cols = [j * sw - left + b * dw for b in range(kw)]
            rows = [h for h in rows if 0 <= h < H]
            cols = [v for v in cols if 0 <= v < W]
            if not rows or not cols:
                raise ValueError(f"{func}: window ({i}, {j}) holds no input element; "
                                 f"padding={padding} is too large")
            for n in range(N):
                for c in range(C):
                    best, where = -np.inf, rows[0] * W + cols[0]
                    for h in rows:
                        for v in cols:
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


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False,
               count_include_pad=True, dilation=1, out=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (kh, kw) pair, >= 1
    stride : int or pair, optional
        Defaults to ``kernel_size``.
    padding : int, pair or ((top, bottom), (left, right))
        Implicit zero border, each side smaller than the kernel.
    ceil_mode : bool
        Round the output size up (PyTorch's rule).
    count_include_pad : bool
        Divide by the window clipped to the padded input
        ``[-top, H + bottom) x [-left, W + right)`` (True) or by the number of
        real pixels in the window (False).
    dilation : int or pair, default 1
        Spacing of the taps (ONNX's AveragePool); the divisor counts taps.
    out : ndarray of shape (N, C, H_out, W_out), optional

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out), dtype of ``x``
        ``H_out = (H + top + bottom - dilation*(kh-1) - 1) // stride + 1`` (or
        the ceil rule).
    """
    func = "avg_pool2d"
    x = _array(func, "x", x)
    (kh, kw), (sh, sw), pads, (dh, dw), Ho, Wo = _pool_geometry(
        x.shape, kernel_size, stride, padding, func, dilation, ceil_mode, avg=True)
    N, C, H, W = x.shape
    xd = x.astype(np.float64)
    y = np.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            rows, cols, divisor = _window(i, j, (kh, kw), (sh, sw), pads, (dh, dw), H, W,
                                          count_include_pad)
            for n in range(N):
                for c in range(C):
                    # padded zeros add nothing: the sum is over the real taps
                    y[n, c, i, j] = sum(xd[n, c, h, v] for h in rows for v in cols) / divisor
    return _finish(y.astype(x.dtype), out, "out", func)


def _window(i, j, kernel, stride, pads, dilation, H, W, count_include_pad):
    """Real rows and columns of average-pool window (i, j), and what it divides by:
    its taps inside the padded input ``[-top, H + bottom)`` x ``[-left, W + right)``
    (count_include_pad; a ceil-mode overhang does not count) or inside the input."""
    top, bottom, left, right = pads
    taps_h = [i * stride[0] - top + a * dilation[0] for a in range(kernel[0])]
    taps_w = [j * stride[1] - left + b * dilation[1] for b in range(kernel[1])]
    rows = [h for h in taps_h if 0 <= h < H]
    cols = [v for v in taps_w if 0 <= v < W]
    if not rows or not cols:
        raise ValueError(f"avg_pool2d: window ({i}, {j}) holds no input element; "
                         f"padding={pads} is too large")
    if count_include_pad:
        divisor = (sum(1 for h in taps_h if h < H + bottom)
                   * sum(1 for v in taps_w if v < W + right))
    else:
        divisor = len(rows) * len(cols)
    return rows, cols, divisor


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, *,
                        ceil_mode=False, count_include_pad=True, dilation=1, out=None):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out), dtype float32 or float64
    input_shape : tuple (N, C, H, W)
    kernel_size, stride, padding, ceil_mode, count_include_pad, dilation : as for
        :func:`avg_pool2d`
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
    kernel, stride, pads, dilation, Ho, Wo = _pool_geometry(
        shape, kernel_size, stride, padding, func, dilation, ceil_mode, avg=True)
    N, C, H, W = shape
    if grad_out.shape != (N, C, Ho, Wo):
        raise ValueError(
            f"{func}: grad_out must have shape {(N, C, Ho, Wo)} (the avg_pool2d "
            f"output for input_shape {shape}), got {grad_out.shape}")

    gx = np.zeros((N, C, H, W))
    for i in range(Ho):
        for j in range(Wo):
            rows, cols, divisor = _window(i, j, kernel, stride, pads, dilation, H, W,
                                          count_include_pad)
            for n in range(N):
                for c in range(C):
                    share = float(grad_out[n, c, i, j]) / divisor
                    for h in rows:
                        for v in cols:
                            gx[n, c, h, v] += share
    return _finish(gx.astype(grad_out.dtype), out, "out", func)


# 1-D pooling: the 2-D functions on (N, C, 1, L), as fastconv.functional does.
def _to2d(func, name, a):
    a = _array(func, name, a, ndim=3, layout="(N, C, L)")
    return a[:, :, None, :]


def _padding1d(padding):
    return ((0, 0), tuple(padding)) if isinstance(padding, (tuple, list)) else (0, padding)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
               return_indices=False):
    """1-D max pooling on (N, C, L): :func:`max_pool2d` on (N, C, 1, L); indices index L."""
    r = max_pool2d(_to2d("max_pool1d", "x", x), (1, kernel_size),
                   None if stride is None else (1, stride), _padding1d(padding),
                   (1, dilation), ceil_mode=ceil_mode, return_indices=return_indices)
    if return_indices:
        return r[0][:, :, 0, :], r[1][:, :, 0, :]
    return r[:, :, 0, :]


def max_pool1d_backward(grad_out, indices, input_shape):
    """Gradient of :func:`max_pool1d`."""
    n, c, length = input_shape
    gx = max_pool2d_backward(_to2d("max_pool1d_backward", "grad_out", grad_out),
                             np.asarray(indices)[:, :, None, :], (n, c, 1, length))
    return gx[:, :, 0, :]


def avg_pool1d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False,
               count_include_pad=True, dilation=1):
    """1-D average pooling on (N, C, L): :func:`avg_pool2d` on (N, C, 1, L)."""
    return avg_pool2d(_to2d("avg_pool1d", "x", x), (1, kernel_size),
                      None if stride is None else (1, stride), _padding1d(padding),
                      ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                      dilation=(1, dilation))[:, :, 0, :]


def avg_pool1d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, *,
                        ceil_mode=False, count_include_pad=True, dilation=1):
    """Gradient of :func:`avg_pool1d`."""
    n, c, length = input_shape
    gx = avg_pool2d_backward(_to2d("avg_pool1d_backward", "grad_out", grad_out),
                             (n, c, 1, length), (1, kernel_size),
                             None if stride is None else (1, stride), _padding1d(padding),
                             ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                             dilation=(1, dilation))
    return gx[:, :, 0, :]
