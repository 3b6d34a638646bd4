"""Max and average pooling, 2-D and 1-D, forward and backward: the public functions.

Re-exported by ``fastconv.functional`` (and ``fastconv``), where users find them;
they live here to keep each module to one job. The geometry (per-side padding,
``ceil_mode``, dilation, the limits) is checked in ``_geometry.py``; the kernels
are ``csrc/fc_pool.c`` / ``fc_pool_impl.h``.
"""

import numpy as np

from . import _kernels
from ._geometry import check_flag, check_input_shape, pool1d_params, pool_geom
from ._outputs import check_out, check_overlap, contiguous as _contig
from ._runtime import get_num_threads
from ._validate import check_float_array, check_int, check_ndim

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
           "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward"]



def _pool_input(fn, name, x):
    x = check_float_array(fn, name, x)
    check_ndim(fn, name, x, 4, "(N, C, H, W)")
    return x


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
               return_indices=False, out=None, indices_out=None):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    ``H_out = (H + top + bottom - dilation*(kh - 1) - 1) // stride + 1`` (floor);
    with ``ceil_mode`` the division rounds up and the last window is dropped if
    it would start at or past ``H + top`` (PyTorch's rule). Likewise for W.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int, (int, int) or ((int, int), (int, int))
        Implicit -inf padding: ``p`` on every side, ``(ph, pw)`` on both sides of
        each axis, or per side ``((top, bottom), (left, right))``; each side
        smaller than the dilated window ``dilation*(kernel_size - 1) + 1``, and
        every window must hold an input element.
    dilation : int or (int, int)
        Spacing of the window's taps.
    ceil_mode : bool
        Round the output size up (windows may run past the bottom/right).
    return_indices : bool
        Also return the argmax of each window as int64 ``h * W + w`` within its
        (n, c) plane. Ties go to the first element in raster order; a NaN wins.
    out : ndarray, optional
        Preallocated output of shape (N, C, H_out, W_out), sharing no memory with
        x or indices_out.
    indices_out : ndarray of int64, optional
        Preallocated indices (with ``return_indices``; no memory shared with x
        or out): a training loop that reuses it avoids a fresh int64 array, and
        its page faults, every call.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
    indices : ndarray of int64, same shape as y (only if return_indices)
    """
    fn = "max_pool2d"
    x = _pool_input(fn, "input", x)
    geom, oshape = pool_geom(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_pool(fn, x, geom, oshape, return_indices, out, indices_out)


def _max_pool(fn, x, geom, oshape, return_indices, out, indices_out):
    y = check_out(fn, "out", out, oshape, x.dtype)
    if indices_out is not None and not return_indices:
        raise ValueError(f"{fn}: indices_out is only used with return_indices=True")
    idx = (check_out(fn, "indices_out", indices_out, oshape, np.dtype(np.int64))
           if return_indices else None)
    check_overlap(fn, (("out", out), ("indices_out", indices_out)), (("input", x),))
    if y.size:
        _kernels.max_pool2d_forward(_contig(x), geom, get_num_threads(), y, idx)
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_out, indices, input_shape, *, out=None):
    """Gradient of :func:`max_pool2d`: routes each grad_out value to its argmax.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out), float32 or float64
    indices : ndarray of int64, same shape, from ``max_pool2d(..., return_indices=True)``
        (they carry the windows: any padding, dilation or ceil_mode)
    input_shape : tuple (N, C, H, W) of the pooled input
    out : ndarray of shape input_shape, optional
        Where to write grad_input (C-contiguous, sharing no memory with grad_out
        or indices).

    Returns
    -------
    grad_input : ndarray of shape input_shape, dtype of grad_out
    """
    fn = "max_pool2d_backward"
    grad_out = _pool_input(fn, "grad_out", grad_out)
    shape = check_input_shape(fn, input_shape)
    return _max_pool_backward(fn, grad_out, indices, shape, out)


def _max_pool_backward(fn, grad_out, indices, shape, out, what="H*W"):
    if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
        got = indices.dtype if isinstance(indices, np.ndarray) else type(indices).__name__
        raise TypeError(f"{fn}: indices must be an int64 array, got {got}")
    if indices.shape != grad_out.shape:
        raise ValueError(f"{fn}: indices must have the shape of grad_out {grad_out.shape}, "
                         f"got {indices.shape}")
    if shape[:2] != grad_out.shape[:2]:
        raise ValueError(f"{fn}: input_shape {shape} does not match grad_out of shape "
                         f"{grad_out.shape} in N and C")
    gx = check_out(fn, "out", out, shape, grad_out.dtype)
    check_overlap(fn, (("out", out),), (("grad_out", grad_out), ("indices", indices)))
    if gx.size == 0 or grad_out.size == 0:
        gx.fill(0)
        return gx
    n, c, h, w = shape
    ho, wo = grad_out.shape[2:]
    # the indices carry the windows; the kernel is told a guess of disjoint tiles
    # holding them (H // H_out x W // W_out: non-overlapping pooling without
    # padding), checks every index against it and only then relies on it
    th, tw = max(h // ho, 1), max(w // wo, 1)
    geom = (n, c, h, w, th, tw, ho, wo, th, tw, 0, 0, 0, 0, 1, 1)
    ok = _kernels.max_pool2d_backward(_contig(grad_out), _contig(indices), geom,
                                      get_num_threads(), gx)
    if not ok:
        bad = indices[(indices < 0) | (indices >= h * w)]
        raise ValueError(f"{fn}: indices must lie in [0, {what}) = [0, {h * w}) for "
                         f"input_shape {_public_shape(shape, what)}, got {bad.size} outside, "
                         f"e.g. {bad.flat[0]}")
    return gx


def _public_shape(shape, what):
    """The caller's input shape: (N, C, L) for the 1-D functions."""
    return (shape[0], shape[1], shape[3]) if what == "L" else shape


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False,
               count_include_pad=True, dilation=1, out=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d`` (plus ONNX's dilation).

    ``H_out = (H + top + bottom - dilation*(kh - 1) - 1) // stride + 1`` (floor); with ``ceil_mode``
    the division rounds up and the last window is dropped if it would start at
    or past ``H + top``. Likewise for W.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int, (int, int) or ((int, int), (int, int))
        Implicit zero padding: ``p`` on every side, ``(ph, pw)`` on both sides of
        each axis, or per side ``((top, bottom), (left, right))``; each side
        smaller than ``kernel_size``.
    ceil_mode : bool
        Round the output size up (windows may run past the bottom/right).
    count_include_pad : bool
        Divide by the window clipped to the padded input ``[-top, H + bottom)``
        (True: padded zeros count, a ceil-mode overhang does not) or by the
        number of real input elements in the window (False).
    dilation : int or (int, int), default 1
        Spacing of the window's taps, as ONNX's ``AveragePool`` (opset 19; PyTorch's
        average pooling has none). The divisor counts the taps, not the extent:
        those inside the padded input (``count_include_pad``) or inside the input.
        The padding stays smaller than ``kernel_size``; every window must hold an
        input element.
    out : ndarray of shape (N, C, H_out, W_out), optional
        Where to write the result (C-contiguous, sharing no memory with x).

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
    """
    fn = "avg_pool2d"
    x = _pool_input(fn, "input", x)
    geom, oshape = pool_geom(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                             avg=True)
    return _avg_pool(fn, x, geom, oshape, count_include_pad, out)


def _avg_pool(fn, x, geom, oshape, count_include_pad, out):
    y = check_out(fn, "out", out, oshape, x.dtype)
    check_overlap(fn, (("out", out),), (("input", x),))
    if y.size:
        _kernels.avg_pool2d_forward(_contig(x), geom,
                                    _check_bool(fn, "count_include_pad", count_include_pad),
                                    get_num_threads(), y)
    return y


def _check_bool(fn, name, value):
    return check_flag(fn, name, value)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, *,
                        ceil_mode=False, count_include_pad=True, dilation=1, out=None):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    input_shape : tuple (N, C, H, W)
    kernel_size, stride, padding, ceil_mode, count_include_pad, dilation
        As passed to :func:`avg_pool2d`.
    out : ndarray of shape input_shape, optional
        Where to write grad_input (C-contiguous, sharing no memory with grad_out).

    Returns
    -------
    grad_input : ndarray of shape input_shape, dtype of grad_out
    """
    fn = "avg_pool2d_backward"
    grad_out = _pool_input(fn, "grad_out", grad_out)
    shape = check_input_shape(fn, input_shape)
    geom, oshape = pool_geom(fn, shape, kernel_size, stride, padding, dilation, ceil_mode,
                             avg=True)
    return _avg_pool_backward(fn, grad_out, shape, geom, oshape, count_include_pad, out)


def _avg_pool_backward(fn, grad_out, shape, geom, oshape, count_include_pad, out,
                       what="H*W"):
    cip = _check_bool(fn, "count_include_pad", count_include_pad)
    if grad_out.shape != oshape:
        raise ValueError(f"{fn}: grad_out must have shape {_public_shape(oshape, what)} for "
                         f"input_shape {_public_shape(shape, what)}, got "
                         f"{_public_shape(grad_out.shape, what)}")
    gx = check_out(fn, "out", out, shape, grad_out.dtype)
    check_overlap(fn, (("out", out),), (("grad_out", grad_out),))
    if grad_out.size == 0:
        gx.fill(0)
        return gx
    _kernels.avg_pool2d_backward(_contig(grad_out), geom, cip, get_num_threads(), gx)
    return gx


# 1-D pooling: (N, C, L) is pooled as (N, C, 1, L), a view; the window, stride,
# padding and dilation of the height axis are 1, 1, 0, 1, so the 2-D kernels read
# and sum exactly the elements (and in the order) a 1-D kernel would.
def _pool1d_input(fn, name, x):
    x = check_float_array(fn, name, x)
    check_ndim(fn, name, x, 3, "(N, C, L)")
    return x


def _pool1d_geom(fn, shape, kernel_size, stride, padding, dilation, ceil_mode, avg):
    k, s, lr, d, ceil_mode = pool1d_params(fn, kernel_size, stride, padding, dilation,
                                           ceil_mode, avg=avg)
    n, c, length = shape
    if n * c and not length:
        raise ValueError(f"{fn}: input length must be >= 1 when N and C are, "
                         f"got shape {tuple(shape)}")
    try:
        return pool_geom(fn, (n, c, 1, length), (1, k), (1, s), ((0, 0), lr), (1, d),
                         ceil_mode, avg=avg)
    except ValueError as exc:
        # the 2-D check speaks of the width axis; a 1-D caller knows it as the length
        raise ValueError(str(exc).replace("along width", "along the length")) from None


def _check_input_shape1d(fn, input_shape):
    try:
        shape = tuple(check_int(fn, "input_shape", v) for v in input_shape)
    except TypeError:
        raise TypeError(f"{fn}: input_shape must be a tuple of 3 ints, got {input_shape!r}") \
            from None
    if len(shape) != 3 or min(shape) < 0:
        raise ValueError(f"{fn}: input_shape must be 3 non-negative ints (N, C, L), "
                         f"got {input_shape!r}")
    return shape


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
               return_indices=False):
    """1-D max pooling on (N, C, L), as ``torch.nn.functional.max_pool1d``.

    ``L_out = (L + left + right - dilation*(k - 1) - 1) // stride + 1`` (floor, or
    PyTorch's ceil rule with ``ceil_mode``); a view over :func:`max_pool2d`.

    Parameters
    ----------
    x : ndarray of shape (N, C, L), dtype float32 or float64
    kernel_size : int
    stride : int, optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf padding, ``p`` on both sides or ``(left, right)``; each side
        smaller than ``dilation*(kernel_size - 1) + 1``.
    dilation : int
    ceil_mode : bool
    return_indices : bool
        Also return the argmax of each window as an int64 position in L
        (first maximum wins; a NaN wins).

    Returns
    -------
    y : ndarray of shape (N, C, L_out)
    indices : ndarray of int64, same shape as y (only if return_indices)
    """
    fn = "max_pool1d"
    x = _pool1d_input(fn, "input", x)
    geom, oshape = _pool1d_geom(fn, x.shape, kernel_size, stride, padding, dilation,
                                ceil_mode, False)
    n, c, _, lo = oshape
    r = _max_pool(fn, x[:, :, None, :], geom, oshape, return_indices, None, None)
    if return_indices:
        return r[0].reshape(n, c, lo), r[1].reshape(n, c, lo)
    return r.reshape(n, c, lo)


def max_pool1d_backward(grad_out, indices, input_shape):
    """Gradient of :func:`max_pool1d`: routes each grad_out value to its argmax.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, L_out), float32 or float64
    indices : ndarray of int64, same shape, from ``max_pool1d(..., return_indices=True)``
    input_shape : tuple (N, C, L) of the pooled input

    Returns
    -------
    grad_input : ndarray of shape input_shape, dtype of grad_out
    """
    fn = "max_pool1d_backward"
    grad_out = _pool1d_input(fn, "grad_out", grad_out)
    n, c, length = _check_input_shape1d(fn, input_shape)
    if not isinstance(indices, np.ndarray) or indices.ndim != 3:
        # the int64 and shape checks follow on the 2-D views; this keeps the
        # message in the caller's (N, C, L) terms
        got = getattr(indices, "shape", type(indices).__name__)
        raise ValueError(f"{fn}: indices must be an int64 array of the shape of grad_out "
                         f"{grad_out.shape}, got {got}")
    if indices.shape != grad_out.shape:
        raise ValueError(f"{fn}: indices must have the shape of grad_out {grad_out.shape}, "
                         f"got {indices.shape}")
    gx = _max_pool_backward(fn, grad_out[:, :, None, :], indices[:, :, None, :],
                            (n, c, 1, length), None, what="L")
    return gx.reshape(n, c, length)


def avg_pool1d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False,
               count_include_pad=True, dilation=1):
    """1-D average pooling on (N, C, L), as ``torch.nn.functional.avg_pool1d``.

    ``L_out = (L + left + right - dilation*(k - 1) - 1) // stride + 1`` (floor, or PyTorch's ceil rule
    with ``ceil_mode``); a view over :func:`avg_pool2d`.

    Parameters
    ----------
    x : ndarray of shape (N, C, L), dtype float32 or float64
    kernel_size : int
    stride : int, optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit zero padding, ``p`` on both sides or ``(left, right)``; each side
        smaller than ``kernel_size``.
    ceil_mode : bool
    count_include_pad : bool
        Divide by the window clipped to ``[-left, L + right)`` (True) or to the
        input (False).
    dilation : int, default 1
        Spacing of the window's taps (ONNX's; see :func:`avg_pool2d`).

    Returns
    -------
    y : ndarray of shape (N, C, L_out)
    """
    fn = "avg_pool1d"
    x = _pool1d_input(fn, "input", x)
    geom, oshape = _pool1d_geom(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                                True)
    n, c, _, lo = oshape
    return _avg_pool(fn, x[:, :, None, :], geom, oshape, count_include_pad,
                     None).reshape(n, c, lo)


def avg_pool1d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, *,
                        ceil_mode=False, count_include_pad=True, dilation=1):
    """Gradient of :func:`avg_pool1d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, L_out)
    input_shape : tuple (N, C, L)
    kernel_size, stride, padding, ceil_mode, count_include_pad, dilation
        As passed to :func:`avg_pool1d`.

    Returns
    -------
    grad_input : ndarray of shape input_shape, dtype of grad_out
    """
    fn = "avg_pool1d_backward"
    grad_out = _pool1d_input(fn, "grad_out", grad_out)
    n, c, length = _check_input_shape1d(fn, input_shape)
    geom, oshape = _pool1d_geom(fn, (n, c, length), kernel_size, stride, padding, dilation,
                                ceil_mode, True)
    gx = _avg_pool_backward(fn, grad_out[:, :, None, :], (n, c, 1, length), geom, oshape,
                            count_include_pad, None, what="L")
    return gx.reshape(n, c, length)
