"""The kernel API: validation, dtype rules, output allocation, then the kernel call.

Every public function here checks its arguments once, in Python, then hands
C-contiguous arrays to the compiled kernels (``fastconv._kernels``), which
release the GIL and run in parallel with OpenMP. The pieces live beside it:
argument checks in ``_validate``, shapes in ``_geometry``, ``out=`` buffers in
``_outputs``, kernel choice (Winograd or direct) in ``_routes``, and the
runtime settings (threads, SIMD path, scratch memory, ``info``) in
``_runtime``, whose public functions are re-exported here. Semantics follow
``torch.nn.functional`` (convolution is cross-correlation; NCHW input, OIHW
weight), except that inputs must be batched: 4-D for the 2-D functions, 3-D
(N, C, L) for the 1-D ones, which run the 2-D kernels on height-1 views.

Output size of convolution and pooling along each spatial axis::

    H_out = (H + 2*padding - dilation*(kernel - 1) - 1) // stride + 1

An ``out=`` buffer must be C-contiguous with the result's shape and dtype, and
share no memory with any array the function reads or with another output
(``ValueError``): the kernels read while they write, on several threads. The
one exception is the exact in-place ``relu(x, out=x)`` / ``relu_backward(g, y,
out=g)``.
"""

import numpy as np

try:
    from . import _kernels
except ImportError as exc:  # pragma: no cover - depends on how fastconv was obtained
    import os as _os

    raise ImportError(
        "fastconv's compiled kernels (fastconv._kernels) are not importable from "
        f"{_os.path.dirname(__file__)}. If that is a source checkout, either install it "
        "(pip install .) and run from another directory, or build in place "
        "(python setup.py build_ext --inplace).") from exc
from . import _routes
from ._geometry import ConvGeom, conv2d_output_shape, conv_geom
from ._outputs import check_out, check_overlap, contiguous as _contig, grad_outs, mask_and_out
from ._routes import set_winograd
from ._runtime import (
    get_num_threads,
    info,
    openmp_enabled,
    release_memory,
    set_num_threads,
    set_simd_level,
    simd_level,
)
# tests/conftest.py and tests/test_threads.py reach these through this module
from ._runtime import SIMD_NAMES as _SIMD_NAMES  # noqa: F401
from ._runtime import max_num_threads as _max_num_threads  # noqa: F401
from ._validate import check_float_array, check_ndim, check_same_dtype
from ._version import __version__  # noqa: F401 (fastconv.functional.__version__)

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
    "relu",
    "relu_backward",
    "linear",
    "linear_backward",
    "set_num_threads",
    "get_num_threads",
    "openmp_enabled",
    "info",
    "simd_level",
    "set_simd_level",
    "set_winograd",
    "release_memory",
]


_LAYOUTS = {
    4: ("(N, C, H, W)", "(out_channels, in_channels/groups, kH, kW)"),
    3: ("(N, C, L)", "(out_channels, in_channels/groups, kL)"),
}


def _conv_inputs(fn, x, weight, bias, ndim=4):
    x = check_float_array(fn, "input", x)
    weight = check_float_array(fn, "weight", weight)
    check_ndim(fn, "input", x, ndim, _LAYOUTS[ndim][0])
    check_ndim(fn, "weight", weight, ndim, _LAYOUTS[ndim][1])
    check_same_dtype(fn, "input", x, weight=weight)
    if bias is not None:
        bias = check_float_array(fn, "bias", bias)
        check_same_dtype(fn, "input", x, bias=bias)
        if bias.ndim != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"{fn}: bias must have shape ({weight.shape[0]},) to match weight of "
                f"shape {weight.shape}, got {bias.shape}")
    return x, weight, bias


def _as4(a):
    """A C-contiguous 3-D (N, C, L) array as the (N, C, 1, L) view the 2-D kernels take."""
    return a if a.ndim == 4 else a.reshape(a.shape[0], a.shape[1], 1, a.shape[2])


def _conv_forward(fn, ndim, x, weight, bias, stride, padding, dilation, groups, out,
                  activation):
    """conv2d (ndim 4) and conv1d (ndim 3, a height-1 view): checks, then one kernel call."""
    x, weight, bias = _conv_inputs(fn, x, weight, bias, ndim)
    if activation not in (None, "relu"):
        raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}")
    g = conv_geom(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    y = check_out(fn, "out", out, g.out_shape, x.dtype)
    check_overlap(fn, (("out", out),), (("input", x), ("weight", weight), ("bias", bias)))
    if y.size == 0:
        return y
    route, kern = _routes.conv_forward(g, x.dtype)
    _routes.record("forward", route)
    kern(_as4(_contig(x)), _as4(_contig(weight)), None if bias is None else _contig(bias),
         g.as_tuple(), activation == "relu", get_num_threads(), _as4(y))
    return y


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None,
           activation=None):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    weight : ndarray of shape (K, C // groups, kH, kW), same dtype as x
    bias : ndarray of shape (K,), optional
    stride, dilation : int or (int, int), >= 1
    padding : int, (int, int), ((int, int), (int, int)), 'valid' or 'same'
        Zeros added around the input: ``p`` on every side, ``(ph, pw)`` on
        top and bottom / left and right, or per side ``((top, bottom), (left,
        right))``. 'same' gives ``H_out = ceil(H / stride)`` with TensorFlow's
        rule (ONNX ``SAME_UPPER``): total padding ``max((H_out - 1)*stride +
        dilation*(kH - 1) + 1 - H, 0)``, the odd row/column at the
        bottom/right (for stride 1 this is PyTorch's 'same').
    groups : int
        Channels are split into ``groups`` independent convolutions.
    out : ndarray of shape (N, K, H_out, W_out), optional
        Where to write the result (C-contiguous, same dtype, sharing no memory
        with x, weight or bias).
    activation : None or 'relu'
        'relu' applies max(y, 0) in the same pass (saves a trip over memory).

    Returns
    -------
    y : ndarray of shape (N, K, H_out, W_out), dtype of x
        ``H_out = (H + top + bottom - dilation*(kH - 1) - 1) // stride + 1``,
        likewise W_out.
    """
    return _conv_forward("conv2d", 4, x, weight, bias, stride, padding, dilation, groups, out,
                         activation)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None,
           activation=None):
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Runs the 2-D kernels on a height-1 view of the arrays (no copy beyond
    what :func:`conv2d` makes), so results are bitwise those of
    ``conv2d(x[:, :, None], weight[:, :, None], ..., padding=((0, 0), (left, right)))``.

    Parameters
    ----------
    x : ndarray of shape (N, C, L), dtype float32 or float64
    weight : ndarray of shape (K, C // groups, kL), same dtype as x
    bias : ndarray of shape (K,), optional
    stride, dilation : int >= 1 (or a sequence of one)
    padding : int, (int, int), 'valid' or 'same'
        Zeros added on both ends, or ``(left, right)``; 'same' as in
        :func:`conv2d` (TensorFlow's rule, any stride).
    groups : int
    out : ndarray of shape (N, K, L_out), optional
        Where to write the result (C-contiguous, same dtype, sharing no memory
        with x, weight or bias).
    activation : None or 'relu'

    Returns
    -------
    y : ndarray of shape (N, K, L_out), dtype of x
        ``L_out = (L + left + right - dilation*(kL - 1) - 1) // stride + 1``.
    """
    return _conv_forward("conv1d", 3, x, weight, bias, stride, padding, dilation, groups, out,
                         activation)


def _conv2d_prepared(x_shape, dtype, weight_shape, stride, padding, dilation, groups):
    """What :func:`conv2d` checks and decides for these shapes, done once.

    For a caller that repeats the same convolution many times (the inference
    plans of ``fastconv.nn``). Raises as :func:`conv2d` would (as
    :func:`conv1d` for 3-D shapes). Returns ``(kernel, geom, out_shape)``:
    ``kernel(x, weight, bias, geom, relu, nthreads, y)`` is the compiled call
    :func:`conv2d` makes, on C-contiguous 4-D arrays of ``dtype`` (a 1-D
    convolution's arrays viewed with a height axis of 1); ``out_shape`` is
    the caller's (3-D for 1-D).
    """
    fn = "conv1d" if len(x_shape) == 3 else "conv2d"
    g = ConvGeom(fn, tuple(x_shape), tuple(weight_shape), stride, padding, dilation, groups)
    _, kern = _routes.conv_forward(g, np.dtype(dtype))
    return kern, g.as_tuple(), g.out_shape


def _conv_backward(fn, ndim, grad_out, x, weight, stride, padding, dilation, groups,
                   output_mask, out, relu_output):
    """conv2d_backward (ndim 4) and conv1d_backward (ndim 3, height-1 views)."""
    x, weight, _ = _conv_inputs(fn, x, weight, None, ndim)
    grad_out = check_float_array(fn, "grad_out", grad_out)
    check_same_dtype(fn, "input", x, grad_out=grad_out)
    g = conv_geom(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    if grad_out.shape != g.out_shape:
        raise ValueError(
            f"{fn}: grad_out must have the {fn[:6]} output shape {g.out_shape} for input "
            f"{x.shape} and weight {weight.shape}, got {grad_out.shape}")
    mask, out = mask_and_out(fn, output_mask, out)
    gx = check_out(fn, "out[0]", out[0], x.shape, x.dtype) if mask[0] else None
    gw = check_out(fn, "out[1]", out[1], weight.shape, x.dtype) if mask[1] else None
    gb = check_out(fn, "out[2]", out[2], (weight.shape[0],), x.dtype) if mask[2] else None
    check_overlap(fn, grad_outs(out, mask), (("grad_out", grad_out), ("input", x),
                                               ("weight", weight), ("relu_output", relu_output)))
    nt = get_num_threads()
    if grad_out.size == 0:  # N == 0: nothing flows back
        for a in (gx, gw, gb):
            if a is not None:
                a.fill(0)
        return gx, gw, gb
    gy = _contig(grad_out)
    if relu_output is not None:
        gy = relu_backward(gy, relu_output)
    gy = _as4(gy)
    geom = g.as_tuple()
    if gx is not None:
        route, bwd_data = _routes.conv_grad_input(g, x.dtype)
        _routes.record("grad_input", route)
        bwd_data(gy, _as4(_contig(weight)), geom, nt, _as4(gx))
    if gw is not None or gb is not None:
        route, bwd_weight = _routes.conv_grad_weight(g, x.dtype)
        _routes.record("grad_weight", route)
        gw_buf = gw if gw is not None else np.empty(weight.shape, dtype=x.dtype)
        bwd_weight(gy, _as4(_contig(x)), geom, nt, _as4(gw_buf), gb)
    return gx, gw, gb


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), out=None, relu_output=None):
    """Gradients of :func:`conv2d` with respect to input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray of shape (N, K, H_out, W_out)
        Gradient of the loss with respect to the conv2d output.
    x, weight, stride, padding, dilation, groups
        As passed to :func:`conv2d` (every padding form).
    output_mask : tuple of 3 bools
        Which of (grad_input, grad_weight, grad_bias) to compute; the others are
        returned as None (a first layer needs no grad_input). A tuple, list or
        1-D array of bools (NumPy bools and 0/1 accepted).
    out : tuple of 3 arrays or None, optional
        Preallocated outputs for (grad_input, grad_weight, grad_bias), each
        C-contiguous and sharing no memory with grad_out, x, weight, relu_output
        or one another (None in a slot: allocate it).
    relu_output : ndarray of shape (N, K, H_out, W_out), optional
        The output of ``conv2d(..., activation='relu')``. If given, grad_out is the
        gradient after the ReLU and is masked by ``relu_output > 0`` first, in
        one pass (the backward of the fused forward).

    Returns
    -------
    grad_input : ndarray of shape (N, C, H, W) or None
    grad_weight : ndarray of shape (K, C // groups, kH, kW) or None
    grad_bias : ndarray of shape (K,) or None
    """
    return _conv_backward("conv2d_backward", 4, grad_out, x, weight, stride, padding, dilation,
                          groups, output_mask, out, relu_output)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), out=None, relu_output=None):
    """Gradients of :func:`conv1d` with respect to input, weight and bias.

    The 2-D kernels on height-1 views, as :func:`conv1d`.

    Parameters
    ----------
    grad_out : ndarray of shape (N, K, L_out)
        Gradient of the loss with respect to the conv1d output.
    x, weight, stride, padding, dilation, groups
        As passed to :func:`conv1d`.
    output_mask : tuple of 3 bools
        Which of (grad_input, grad_weight, grad_bias) to compute; the others
        are returned as None.
    out : tuple of 3 arrays or None, optional
        Preallocated outputs for (grad_input, grad_weight, grad_bias), as in
        :func:`conv2d_backward`.
    relu_output : ndarray of shape (N, K, L_out), optional
        The output of ``conv1d(..., activation='relu')``: grad_out is masked by
        ``relu_output > 0`` first.

    Returns
    -------
    grad_input : ndarray of shape (N, C, L) or None
    grad_weight : ndarray of shape (K, C // groups, kL) or None
    grad_bias : ndarray of shape (K,) or None
    """
    return _conv_backward("conv1d_backward", 3, grad_out, x, weight, stride, padding, dilation,
                          groups, output_mask, out, relu_output)


# --------------------------------------------------------------- pooling ---
# written in _pool_functions.py (one module per job); public here
from ._pool_functions import (  # noqa: E402
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
)


# ------------------------------------------------------------ element-wise ---
def _flat(a):
    return _contig(a).reshape(-1)


def relu(x, *, out=None):
    """ReLU, ``max(x, 0)``, in one parallel pass.

    Parameters
    ----------
    x : ndarray of any shape, dtype float32 or float64
    out : ndarray, optional
        Where to write the result (same shape and dtype, C-contiguous); may be ``x``
        itself for an in-place ReLU, but must not otherwise overlap x.

    Returns
    -------
    y : ndarray, shape and dtype of x
    """
    fn = "relu"
    x = check_float_array(fn, "input", x)
    y = check_out(fn, "out", out, x.shape, x.dtype)
    check_overlap(fn, (("out", out),), (("input", x),), in_place="input")
    if y.size:
        _kernels.relu_forward(_flat(x), get_num_threads(), y.reshape(-1))
    return y


def relu_backward(grad_out, output, *, out=None):
    """Gradient of :func:`relu`: ``grad_out`` where ``output > 0``, else 0.

    Parameters
    ----------
    grad_out : ndarray, float32 or float64
        Gradient of the loss with respect to the ReLU output.
    output : ndarray, same shape and dtype
        The ReLU output (or its input: the sign is the same).
    out : ndarray, optional
        Where to write the result; may be ``grad_out`` itself (in place), but must
        not otherwise overlap grad_out, nor overlap ``output`` at all.

    Returns
    -------
    grad_input : ndarray, shape and dtype of grad_out
    """
    fn = "relu_backward"
    grad_out = check_float_array(fn, "grad_out", grad_out)
    output = check_float_array(fn, "output", output)
    check_same_dtype(fn, "grad_out", grad_out, output=output)
    if output.shape != grad_out.shape:
        raise ValueError(f"{fn}: output must have the shape of grad_out {grad_out.shape}, "
                         f"got {output.shape}")
    gx = check_out(fn, "out", out, grad_out.shape, grad_out.dtype)
    # in place over grad_out only: the kernel reads output through a restrict pointer
    check_overlap(fn, (("out", out),), (("grad_out", grad_out), ("output", output)),
                   in_place="grad_out")
    if gx.size:
        _kernels.relu_backward(_flat(grad_out), _flat(output), get_num_threads(),
                               gx.reshape(-1))
    return gx


# ------------------------------------------------------------------ dense ---
_BIAS_COLS = 1  # fc_gemm's bias_mode: C[i, j] += bias[j]


def _linear_inputs(fn, x, weight):
    x = check_float_array(fn, "input", x)
    weight = check_float_array(fn, "weight", weight)
    check_ndim(fn, "input", x, 2, "(N, in_features)")
    check_ndim(fn, "weight", weight, 2, "(out_features, in_features)")
    check_same_dtype(fn, "input", x, weight=weight)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{fn}: weight of shape {weight.shape} expects input with {weight.shape[1]} "
            f"features, got input of shape {x.shape}")
    return x, weight


def linear(x, weight, bias=None, *, out=None):
    """Dense layer ``y = x @ weight.T + bias``, as ``torch.nn.functional.linear``.

    The product runs on fastconv's own register-blocked kernels and OpenMP team
    (not NumPy's BLAS), with a fixed work partition: the result is bitwise the
    same for any thread count.

    Parameters
    ----------
    x : ndarray of shape (N, in_features), dtype float32 or float64
    weight : ndarray of shape (out_features, in_features), same dtype
        The layout of ``nn.Linear.weight`` (and PyTorch's).
    bias : ndarray of shape (out_features,), optional
    out : ndarray of shape (N, out_features), optional
        Where to write the result (C-contiguous, same dtype, sharing no memory
        with x, weight or bias).

    Returns
    -------
    y : ndarray of shape (N, out_features), dtype of x
    """
    fn = "linear"
    x, weight = _linear_inputs(fn, x, weight)
    if bias is not None:
        bias = check_float_array(fn, "bias", bias)
        check_same_dtype(fn, "input", x, bias=bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"{fn}: bias must have shape ({weight.shape[0]},) to match weight of "
                f"shape {weight.shape}, got {bias.shape}")
    y = check_out(fn, "out", out, (x.shape[0], weight.shape[0]), x.dtype)
    check_overlap(fn, (("out", out),), (("input", x), ("weight", weight), ("bias", bias)))
    if y.size == 0:
        return y
    if x.shape[1] == 0:  # empty reduction
        y[...] = 0 if bias is None else bias
        return y
    _kernels.gemm(False, True, _contig(x), _contig(weight),
                  None if bias is None else _contig(bias), _BIAS_COLS, False,
                  get_num_threads(), y)
    return y


def linear_backward(grad_out, x, weight, *, output_mask=(True, True, True), out=None,
                    accumulate=False):
    """Gradients of :func:`linear` with respect to input, weight and bias.

    ``grad_input = grad_out @ weight``, ``grad_weight = grad_out.T @ x``,
    ``grad_bias = grad_out.sum(axis=0)`` (rows added in order), on fastconv's
    kernels; bitwise the same for any thread count.

    Parameters
    ----------
    grad_out : ndarray of shape (N, out_features)
        Gradient of the loss with respect to the linear output.
    x, weight
        As passed to :func:`linear`.
    output_mask : tuple of 3 bools
        Which of (grad_input, grad_weight, grad_bias) to compute; the others are
        returned as None. A tuple, list or 1-D array of bools (NumPy bools and
        0/1 accepted).
    out : tuple of 3 arrays or None, optional
        Preallocated outputs for (grad_input, grad_weight, grad_bias), each
        C-contiguous and sharing no memory with grad_out, x, weight or one
        another.
    accumulate : bool, default False
        Add grad_weight and grad_bias into ``out[1]`` and ``out[2]`` (which must
        then be given) instead of overwriting them: a layer's ``.grad`` without
        a temporary the size of the weight. grad_input is always overwritten.

    Returns
    -------
    grad_input : ndarray of shape (N, in_features) or None
    grad_weight : ndarray of shape (out_features, in_features) or None
    grad_bias : ndarray of shape (out_features,) or None
    """
    fn = "linear_backward"
    x, weight = _linear_inputs(fn, x, weight)
    grad_out = check_float_array(fn, "grad_out", grad_out)
    check_same_dtype(fn, "input", x, grad_out=grad_out)
    yshape = (x.shape[0], weight.shape[0])
    if grad_out.shape != yshape:
        raise ValueError(
            f"{fn}: grad_out must have the linear output shape {yshape} for input "
            f"{x.shape} and weight {weight.shape}, got {grad_out.shape}")
    mask, out = mask_and_out(fn, output_mask, out)
    acc = bool(accumulate)
    if acc:
        for i, what in ((1, "grad_weight"), (2, "grad_bias")):
            if mask[i] and out[i] is None:
                raise ValueError(
                    f"{fn}: accumulate=True adds into out[{i}], but no {what} array was given")
    gx = check_out(fn, "out[0]", out[0], x.shape, x.dtype) if mask[0] else None
    gw = check_out(fn, "out[1]", out[1], weight.shape, x.dtype) if mask[1] else None
    gb = check_out(fn, "out[2]", out[2], (weight.shape[0],), x.dtype) if mask[2] else None
    check_overlap(fn, grad_outs(out, mask),
                   (("grad_out", grad_out), ("input", x), ("weight", weight)))
    nt = get_num_threads()
    gy = _contig(grad_out)
    if x.size and weight.size:  # every dimension >= 1: one call, one thread team
        if gx is not None or gw is not None or gb is not None:
            _kernels.linear_backward(gy, _contig(x), _contig(weight), acc, nt, gx, gw, gb)
        return gx, gw, gb
    if gx is not None and gx.size:
        if weight.shape[0] == 0:
            gx.fill(0)
        else:
            _kernels.gemm(False, False, gy, _contig(weight), None, 0, False, nt, gx)
    if gw is not None and gw.size:
        if x.shape[0] == 0:
            if not acc:
                gw.fill(0)
        else:
            _kernels.gemm(True, False, gy, _contig(x), None, 0, acc, nt, gw)
    if gb is not None and gb.size:
        if x.shape[0] == 0:
            if not acc:
                gb.fill(0)
        else:
            _kernels.colsum(gy, acc, nt, gb)
    return gx, gw, gb
