"""Argument normalisation shared by the plain-loop twins in fastconv.reference."""

import math

import numpy as np

from ._validate import check_float_array, check_int, check_ndim, check_pair

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


def _pool_padding(padding, func):
    """``(top, bottom, left, right)`` from ``p``, ``(ph, pw)`` or
    ``((top, bottom), (left, right))``."""
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
            isinstance(side, (tuple, list)) for side in padding):
        (top, bottom), (left, right) = (check_pair(func, "padding", side, minimum=0)
                                        for side in padding)
        return top, bottom, left, right
    ph, pw = check_pair(func, "padding", padding, minimum=0)
    return ph, ph, pw, pw


def _pool_out_size(size, before, after, kernel, stride, dilation, ceil_mode):
    """PyTorch's pooling output length: floor, or ceil with the last window
    dropped when it would start at or past ``size + before``."""
    span = size + before + after - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + before:
        out -= 1
    return out


def _pool_geometry(x_shape, kernel_size, stride, padding, func, dilation=1,
                   ceil_mode=False, avg=False):
    """Check pooling parameters; return ``(kernel, stride, pads, dilation, Ho, Wo)``
    with ``pads = (top, bottom, left, right)``."""
    _, _, H, W = x_shape
    kernel = check_pair(func, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else check_pair(func, "stride", stride, minimum=1)
    dilation = check_pair(func, "dilation", dilation, minimum=1)
    pads = _pool_padding(padding, func)
    for p, k, d in zip(pads, (kernel[0], kernel[0], kernel[1], kernel[1]),
                       (dilation[0], dilation[0], dilation[1], dilation[1])):
        window = k if avg else d * (k - 1) + 1
        if p >= window:
            raise ValueError(
                f"{func}: padding on each side must be smaller than the window {window}, "
                f"got padding={padding}")
    Ho = _pool_out_size(H, pads[0], pads[1], kernel[0], stride[0], dilation[0], ceil_mode)
    Wo = _pool_out_size(W, pads[2], pads[3], kernel[1], stride[1], dilation[1], ceil_mode)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{func}: kernel_size {kernel} is larger than the padded input "
            f"{(H + pads[0] + pads[1], W + pads[2] + pads[3])}")
    return kernel, stride, pads, dilation, Ho, Wo


def _pad(x, pads, value=0.0):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)),
                  constant_values=value)
