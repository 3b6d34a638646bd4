"""An oracle for the kernels that shares no code or method with fastconv.reference.

``fastconv.reference`` loops over output pixels. This module instead builds
every window at once with ``sliding_window_view`` and contracts with
``einsum``; the input gradient of conv is a *transposed convolution* (grad_out
dilated by the stride, fully padded, correlated with the flipped kernel) rather
than a scatter. Everything is computed in float64 and returned in float64;
callers compare with a dtype-dependent tolerance.

Parameters are taken already normalised: ``stride``, ``dilation`` and
``kernel`` as (h, w) pairs, conv ``pads`` as (top, bottom, left, right).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conv_pads(padding, kernel, dilation):
    """(top, bottom, left, right) for an int / pair / 'same' / 'valid' padding."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        # PyTorch puts the odd pixel of the total d*(k-1) at the end.
        (kh, kw), (dh, dw) = kernel, dilation
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = pair(padding)
    return (ph, ph, pw, pw)


def _windows(xpad, kernel, stride, dilation):
    """(N, C, Ho, Wo, kh, kw) view of every (dilated, strided) window of xpad."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    win = sliding_window_view(xpad, span, axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def _pad(x, pads, value=0.0):
    t, b, l, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    stride, dilation = pair(stride), pair(dilation)
    pads = conv_pads(padding, (kh, kw), dilation)
    win = _windows(_pad(x, pads), (kh, kw), stride, dilation)
    Ho, Wo = win.shape[2:4]
    win = win.reshape(N, groups, Cg, Ho, Wo, kh, kw)
    wg = w.reshape(groups, K // groups, Cg, kh, kw)
    y = np.einsum("ngchwij,gkcij->ngkhw", win, wg).reshape(N, K, Ho, Wo)
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(g, x, w, stride=1, padding=0, dilation=1, groups=1):
    """(grad_x, grad_w, grad_b) of conv2d, via the adjoint formulation."""
    g = np.asarray(g, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    Kg = K // groups
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    pads = conv_pads(padding, (kh, kw), (dh, dw))
    Ho, Wo = g.shape[2:]

    # grad_w, grad_b: the forward windows contracted with grad_out.
    win = _windows(_pad(x, pads), (kh, kw), (sh, sw), (dh, dw))
    win = win.reshape(N, groups, Cg, Ho, Wo, kh, kw)
    gg = g.reshape(N, groups, Kg, Ho, Wo)
    gw = np.einsum("ngchwij,ngkhw->gkcij", win, gg).reshape(K, Cg, kh, kw)
    gb = g.sum(axis=(0, 2, 3))

    # grad_x: transposed conv. Spread grad_out onto the stride grid, pad it by
    # the dilated kernel extent, correlate with the flipped kernel with the
    # channel roles swapped (K in, C out) at the same dilation.
    ext_h, ext_w = dh * (kh - 1), dw * (kw - 1)
    spread = np.zeros((N, K, (Ho - 1) * sh + 1, (Wo - 1) * sw + 1))
    spread[:, :, ::sh, ::sw] = g
    spread = _pad(spread, (ext_h, ext_h, ext_w, ext_w))
    wt = w[:, :, ::-1, ::-1].reshape(groups, Kg, Cg, kh, kw)
    wt = wt.transpose(0, 2, 1, 3, 4).reshape(C, Kg, kh, kw)  # (C, K/groups, kh, kw)
    gxpad = conv2d(spread, wt, stride=1, padding=0, dilation=(dh, dw), groups=groups)
    # Rows / columns of the padded input that no window reached get no gradient.
    Hp, Wp = H + pads[0] + pads[1], W + pads[2] + pads[3]
    gxpad = np.pad(gxpad, ((0, 0), (0, 0), (0, Hp - gxpad.shape[2]),
                           (0, Wp - gxpad.shape[3])))
    gx = gxpad[:, :, pads[0]:pads[0] + H, pads[2]:pads[2] + W]
    return gx, gw, gb


def _pool_params(kernel_size, stride, padding):
    kernel = pair(kernel_size)
    stride = kernel if stride is None else pair(stride)
    return kernel, stride, pair(padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """(y, indices). Winner: the first maximum in raster order, or the last NaN
    (PyTorch's rule, which reference.py and the kernels follow)."""
    x = np.asarray(x)
    N, C, H, W = x.shape
    (kh, kw), stride, (ph, pw) = _pool_params(kernel_size, stride, padding)
    pads = (ph, ph, pw, pw)
    win = _windows(_pad(x.astype(np.float64), pads, -np.inf), (kh, kw), stride, (1, 1))
    Ho, Wo = win.shape[2:4]
    win = win.reshape(N, C, Ho, Wo, kh * kw)
    y = win.max(axis=-1)  # np.max propagates NaN

    # Where the flat index of each padded position points, -1 for padding.
    flat = np.arange(H * W).reshape(1, 1, H, W)
    where = _windows(_pad(flat, pads, -1), (kh, kw), stride, (1, 1))
    where = np.broadcast_to(where.reshape(1, 1, Ho, Wo, kh * kw), win.shape)
    hit = (win == y[..., None]) & (where >= 0)  # padding -inf never wins a tie
    first = np.argmax(hit, axis=-1)
    nan = np.isnan(win)
    last_nan = win.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    first = np.where(nan.any(axis=-1), last_nan, first)
    idx = np.take_along_axis(where, first[..., None], axis=-1)[..., 0]
    return y, idx.astype(np.int64)


def max_pool2d_backward(g, indices, input_shape):
    N, C, H, W = input_shape
    Ho, Wo = np.shape(indices)[2:]
    gx = np.zeros((N * C, H * W))
    rows = np.repeat(np.arange(N * C), Ho * Wo)
    np.add.at(gx, (rows, np.asarray(indices).reshape(-1)),
              np.asarray(g, np.float64).reshape(-1))
    return gx.reshape(N, C, H, W)


def _avg_divisor(shape, kernel, stride, pads, count_include_pad):
    """(Ho, Wo) array of what each window divides by."""
    N, C, H, W = shape
    ones = np.ones((1, 1, H, W))
    fill = 1.0 if count_include_pad else 0.0
    win = _windows(_pad(ones, pads, fill), kernel, stride, (1, 1))
    return win.sum(axis=(-2, -1))[0, 0]


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    x = np.asarray(x, np.float64)
    kernel, stride, (ph, pw) = _pool_params(kernel_size, stride, padding)
    pads = (ph, ph, pw, pw)
    win = _windows(_pad(x, pads), kernel, stride, (1, 1))
    return win.sum(axis=(-2, -1)) / _avg_divisor(x.shape, kernel, stride, pads,
                                                 count_include_pad)


def avg_pool2d_backward(g, input_shape, kernel_size, stride=None, padding=0,
                        count_include_pad=True):
    """Adjoint of avg_pool2d: for each kernel offset, one strided slab update."""
    g = np.asarray(g, np.float64)
    N, C, H, W = input_shape
    (kh, kw), (sh, sw), (ph, pw) = _pool_params(kernel_size, stride, padding)
    pads = (ph, ph, pw, pw)
    Ho, Wo = g.shape[2:]
    share = g / _avg_divisor(input_shape, (kh, kw), (sh, sw), pads, count_include_pad)
    gxpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for a in range(kh):
        for b in range(kw):
            gxpad[:, :, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw] += share
    return gxpad[:, :, ph:ph + H, pw:pw + W]


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

# The one place tolerances live. Relative to the magnitude of the expected
# result (its largest absolute value, or 1 if that is smaller): a float32
# kernel accumulates in float32, so its error scales with the terms, not with
# each output element.
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

# Central differences in float64 with step 1e-3: the kernels are linear in each
# argument (max-pool piecewise so), so only rounding, ~1e-16 / 1e-3, is left.
GRADCHECK_RTOL = 1e-7


def assert_close(actual, expected, dtype, what=""):
    """``actual`` has dtype ``dtype``, the shape of ``expected``, its NaNs, and
    differs from it by at most ``TOL[dtype]`` times the magnitude of ``expected``."""
    dtype = np.dtype(dtype)
    expected = np.asarray(expected, np.float64)
    assert isinstance(actual, np.ndarray), f"{what}: got {type(actual).__name__}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return
    a = actual.astype(np.float64)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(a), nan, err_msg=f"{what}: NaN positions")
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(a[~finite & ~nan], expected[~finite & ~nan],
                                  err_msg=f"{what}: infinities")
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    err = float(np.max(np.abs(a[finite] - expected[finite]), initial=0.0))
    assert err <= TOL[dtype] * scale, (
        f"{what}: max abs error {err:.3g} > {TOL[dtype]:g} * {scale:.3g} ({dtype})")


def assert_bitwise_equal(a, b, what=""):
    """Same dtype, shape and bytes (so NaNs must match bit for bit too)."""
    assert a.dtype == b.dtype and a.shape == b.shape, (
        f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), (
        f"{what}: not bitwise equal (max abs diff "
        f"{np.max(np.abs(a.astype(np.float64) - b), initial=0.0):.3g})")


def numerical_grad(f, a, eps=1e-3):
    """d f / d a by central differences, perturbing ``a`` in place.

    Runs single-threaded: it is thousands of tiny calls, and on a loaded
    machine waking a second thread costs far more than the work itself
    (the analytic gradients being checked use the default thread count).
    """
    import fastconv

    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    try:
        grad = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            keep = a[i]
            a[i] = keep + eps
            up = f()
            a[i] = keep - eps
            down = f()
            a[i] = keep
            grad[i] = (up - down) / (2 * eps)
        return grad
    finally:
        fastconv.set_num_threads(before)
