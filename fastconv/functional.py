"""The kernel API: validation, dtype rules, output allocation and thread count.

Every public function here checks its arguments once, in Python, then hands
C-contiguous arrays to the compiled kernels (``fastconv._kernels``), which
release the GIL and run in parallel with OpenMP. Semantics follow
``torch.nn.functional`` (convolution is cross-correlation; NCHW input, OIHW
weight), except that inputs must be 4-D.

Output size of convolution and pooling along each spatial axis::

    H_out = (H + 2*padding - dilation*(kernel - 1) - 1) // stride + 1

An ``out=`` buffer must be C-contiguous with the result's shape and dtype, and
share no memory with any array the function reads or with another output
(``ValueError``): the kernels read while they write, on several threads. The
one exception is the exact in-place ``relu(x, out=x)`` / ``relu_backward(g, y,
out=g)``.
"""

import os
import platform

import numpy as np

try:
    from numpy.exceptions import TooHardError as _TooHardError
except ImportError:  # numpy < 1.25
    from numpy import TooHardError as _TooHardError

try:
    from . import _kernels
except ImportError as exc:  # pragma: no cover - depends on how fastconv was obtained
    import os as _os

    raise ImportError(
        "fastconv's compiled kernels (fastconv._kernels) are not importable from "
        f"{_os.path.dirname(__file__)}. If that is a source checkout, either install it "
        "(pip install .) and run from another directory, or build in place "
        "(python setup.py build_ext --inplace).") from exc
from ._validate import (
    MAX_PARAM,
    check_float_array,
    check_int,
    check_ndim,
    check_pair,
    check_same_dtype,
)
from ._version import __version__

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv2d_output_shape",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
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

# Sizes past this are mistakes, not workloads: refuse them before allocating.
_MAX_ELEMENTS = 2**46

_SIMD_NAMES = {"generic": 0, "avx2": 1, "avx512": 2}

# ---------------------------------------------------------------- threads ---
_thread_cap = None  # set by set_num_threads; None = follow the OpenMP runtime


def _max_num_threads():
    """The largest thread count :func:`set_num_threads` accepts.

    ``4 * os.cpu_count()`` (more threads than that only wait for each other),
    and never more than the compiled runtime can start: 256, or the OpenMP
    thread limit (``OMP_THREAD_LIMIT``) if that is lower. Fixed for the process,
    so computed once: ``get_num_threads`` runs on every model call, and
    ``os.cpu_count()`` alone took 6 us of a 37 us batch-1 LeNet-5 forward.
    """
    global _MAX_THREADS
    if _MAX_THREADS is None:
        _MAX_THREADS = max(1, min(4 * (os.cpu_count() or 1), _kernels.thread_limit()))
    return _MAX_THREADS


_MAX_THREADS = None


def set_num_threads(n):
    """Set the number of threads the kernels use.

    Parameters
    ----------
    n : int, 1 <= n <= 4 * os.cpu_count()
        Thread count. Also passed to ``omp_set_num_threads`` so that the OpenMP
        runtime (and ``threadpoolctl``) report it. A larger count (or one above
        the OpenMP thread limit, or 256) is refused with ``ValueError``: the
        OpenMP runtime cannot start an arbitrary number of threads (GNU libgomp
        crashes or aborts the process).

    Notes
    -----
    This is an upper bound. While other processes or thread pools keep the
    cores busy, the kernels run on fewer threads for a while and then try the
    full count again (see ``info()["team"]``); results are bitwise identical
    for any thread count.
    """
    global _thread_cap
    n = check_int("set_num_threads", "n", n)
    limit = _max_num_threads()
    if n < 1 or n > limit:
        raise ValueError(
            f"set_num_threads: n must be between 1 and {limit} (4 x os.cpu_count(), "
            f"at most the OpenMP thread limit), got {n}")
    _thread_cap = n
    _kernels.set_max_threads(n)


def get_num_threads():
    """Return the number of threads the next kernel call may use.

    That is the OpenMP runtime's ``omp_get_max_threads()`` for the calling
    thread (which honours ``OMP_NUM_THREADS`` and ``threadpoolctl`` limits),
    capped by :func:`set_num_threads` if it was called, and never more than
    :func:`set_num_threads` accepts. A kernel may run on fewer: see :func:`info`.
    """
    n = min(_kernels.max_threads(), _max_num_threads())
    if _thread_cap is not None:
        n = min(n, _thread_cap)
    return max(1, n)


def openmp_enabled():
    """True if the compiled kernels were built with OpenMP (parallel)."""
    return _kernels.openmp_enabled()


def simd_level():
    """Name of the SIMD code path the kernels use: 'avx512', 'avx2' or 'generic'."""
    return _kernels.simd_name(_kernels.simd_level())


def set_simd_level(name):
    """Select a SIMD code path ('generic', 'avx2', 'avx512'); for tests and debugging.

    The level is capped at what this CPU supports; the path actually selected
    is returned. The environment variable ``FASTCONV_SIMD`` sets the same at
    start-up.
    """
    if name not in _SIMD_NAMES:
        raise ValueError(
            f"set_simd_level: name must be one of {sorted(_SIMD_NAMES)}, got {name!r}")
    return _kernels.simd_name(_kernels.set_simd_level(_SIMD_NAMES[name]))


# ------------------------------------------------------------- winograd ---
# None = auto (measured rule in _winograd_ok), True = wherever supported, False = never.
_WINOGRAD_ENV = {"": None, "auto": None, "1": True, "on": True, "0": False, "off": False}
_winograd = _WINOGRAD_ENV.get(os.environ.get("FASTCONV_WINOGRAD", "").strip().lower())
# Which algorithm each conv pass ran last ('winograd' or 'direct'); for tests and debugging.
_last_algorithm = {}


def set_winograd(mode):
    """Choose when float32 5x5 stride-1 convolutions use the Winograd kernels.

    Parameters
    ----------
    mode : None, True or False
        None (the default, also ``FASTCONV_WINOGRAD=auto``): where measured to
        be faster, per pass: forward and grad_input with at least 16 input and
        16 output channels and 512 channel pairs; grad_weight with at least 32
        of each (its GEMM pads small output-channel counts to the kernel
        width, 48 or 64 on AVX-512). True
        (``FASTCONV_WINOGRAD=1``): for every supported layer. False
        (``FASTCONV_WINOGRAD=0``): never; the direct kernels run.

    Supported: float32, 5x5 kernel, stride 1, dilation 1, groups 1, padding <= 4.
    Winograd F(2x2, 5x5) does 2.78x fewer multiplies and rounds differently: on
    N(0, 1) data its results differ from the direct kernels by about 1e-5 of
    the output's largest magnitude (docs/design.md has the figures).

    Returns
    -------
    previous : None, True or False
        The mode in force before the call (to restore it).
    """
    global _winograd
    if mode is not None and not isinstance(mode, bool):
        raise TypeError(f"set_winograd: mode must be None, True or False, got {mode!r}")
    previous, _winograd = _winograd, mode
    return previous


def _winograd_ok(g, dtype, grad_weight=False):
    """True if this convolution pass should run on the Winograd kernels.

    The auto rule is measured (1 thread, AVX-512, batch 64, 14x14 and 28x28):
    forward and grad-input gain from 16 -> 32 channels up (16 -> 16 is a tie);
    grad-weight loses below 32 output channels and gains from 32 -> 32 up.
    """
    if _winograd is False or dtype != np.float32:
        return False
    if (g.kh, g.kw) != (5, 5) or g.stride != (1, 1) or g.dilation != (1, 1):
        return False
    if g.groups != 1 or g.extra != (0, 0) or max(g.pad) > 4:
        return False
    if _winograd is True:
        return True
    if grad_weight:
        return g.c >= 32 and g.k >= 32
    return g.c >= 16 and g.k >= 16 and g.c * g.k >= 512


def release_memory():
    """Return the kernels' pooled scratch memory to the system.

    Large temporary buffers are kept between calls (reusing them avoids the
    cost of fresh pages); ``info()["scratch_pool_bytes"]`` shows how much.
    """
    _kernels.release_pool()


def info():
    """Describe this build and machine as a dict (version, OpenMP, SIMD path, threads).

    ``info()["team"]`` is what the thread-team controller knows:
    ``threads_last_call`` (the largest team a parallel region of the most recent
    kernel call really ran with; 1 if it ran serially), ``cap`` (while backing
    off, the most threads a kernel gets; 0 otherwise), ``cap_left_s`` (until
    the full team is tried again), ``backoff_s`` (length of the last back-off;
    lateness soon after it doubles it), and counts of ``parallel_regions``,
    ``late_regions`` (the caller waited for a descheduled helper), ``backoffs``
    and ``scout_late`` (back-offs renewed because a spare thread found no free
    core); ``adaptive`` is False only while a test holds the team fixed. Process-wide: with several Python
    threads calling kernels, "last call" is whichever finished last.
    """
    return {
        "version": __version__,
        "openmp": openmp_enabled(),
        "compiler": _kernels.compiler(),
        "simd": simd_level(),
        "simd_supported": _kernels.simd_name(_kernels.simd_supported()),
        "threads": get_num_threads(),
        "team": _kernels.team_stats(),
        "forked_child_serial": _kernels.forked_child(),
        "scratch_pool_bytes": _kernels.pool_bytes(),
        "winograd": {None: "auto", True: "on", False: "off"}[_winograd],
        "last_conv_algorithm": dict(_last_algorithm),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


# ------------------------------------------------------------- validation ---
def _contig(a):
    return np.ascontiguousarray(a)


def _check_out(fn, name, out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{fn}: {name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{fn}: {name} must be a writeable C-contiguous array")
    return out


def _mask_and_out(fn, output_mask, out):
    """A backward's (grad_input, grad_weight, grad_bias) switches and output buffers."""
    # Only an ordered sequence of three bools: 'abc' or {1, 2, 3} would iterate
    # into three truthy values and silently compute everything. NumPy bools are
    # bools; 0 and 1 are accepted as the int spelling of a bool.
    if not (isinstance(output_mask, (tuple, list))
            or (isinstance(output_mask, np.ndarray) and output_mask.ndim == 1)):
        raise TypeError(f"{fn}: output_mask must be a tuple of 3 bools, got "
                        f"{type(output_mask).__name__} {output_mask!r}")
    if len(output_mask) != 3:
        raise ValueError(f"{fn}: output_mask must be 3 bools, got {len(output_mask)} "
                         f"values {output_mask!r}")
    for m in output_mask:
        if not (isinstance(m, (bool, np.bool_))
                or (isinstance(m, (int, np.integer)) and m in (0, 1))):
            raise TypeError(f"{fn}: output_mask must be 3 bools, got {output_mask!r} "
                            f"(an element is {type(m).__name__} {m!r})")
    mask = tuple(bool(m) for m in output_mask)
    if out is None:
        out = (None, None, None)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError(f"{fn}: out must be a tuple of 3 arrays or None, got {out!r}")
    return mask, out


# Past this much work numpy's exact overlap solver gives up (about a millisecond
# on 4-D views); the output is then refused rather than risked.
_OVERLAP_MAX_WORK = 1 << 16
_GRAD_LABELS = ("out[0] (grad_input)", "out[1] (grad_weight)", "out[2] (grad_bias)")


def _overlaps(out, a):
    """True if ``a`` shares memory with ``out``, given that their address ranges meet.

    ``out`` is C-contiguous, and a contiguous array fills its range, so if ``a``
    is contiguous too, meeting ranges mean shared bytes. A strided view
    (``x[:, ::2]``) can interleave with ``out`` without sharing a byte, so that
    case goes to numpy's exact solver, bounded by ``_OVERLAP_MAX_WORK``; an
    undecided case counts as overlap.
    """
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return True
    try:
        return np.shares_memory(out, a, max_work=_OVERLAP_MAX_WORK)
    except _TooHardError:
        return True


def _same_memory(out, a):
    """``a`` is ``out``'s very elements in the same order (an in-place call)."""
    return a is out or (
        a.dtype == out.dtype and a.shape == out.shape and a.flags.c_contiguous
        and a.__array_interface__["data"][0] == out.__array_interface__["data"][0])


def _check_overlap(fn, outs, inputs, in_place=None):
    """Refuse an output that shares memory with an input or with another output.

    The kernels read their inputs while they write their outputs, in parallel
    and in blocks, so any overlap gives a wrong (and thread-count dependent)
    answer instead of an error; two outputs in one buffer overwrite each other.

    outs : sequence of (label, array or None)
        The caller's output buffers (already through ``_check_out``, so
        C-contiguous); None where fastconv allocates or the output is masked off.
    inputs : sequence of (name, array or None)
        Every array the function reads, after ``_array`` (which keeps a buffer
        that wraps ``out``'s memory as a view of it, so that is caught). A
        non-array left (a list as ``relu_output``) becomes a fresh array.
    in_place : str, optional
        For the element-wise kernels, which read each element before writing
        it: the input an output may be exactly (same memory, same layout).
    """
    for i, (label, o) in enumerate(outs):
        if o is None:
            continue
        for name, a in inputs:
            # the O(1) address-range test settles every call that passes
            if (not isinstance(a, np.ndarray) or not np.may_share_memory(o, a)
                    or not _overlaps(o, a)):
                continue
            if name == in_place:
                if _same_memory(o, a):
                    continue
                raise ValueError(
                    f"{fn}: {label} must not overlap input {name!r} unless it is that "
                    f"array itself (in place); pass {name} itself or a separate array")
            raise ValueError(
                f"{fn}: {label} must not overlap input {name!r}; pass a separate array")
        for label2, o2 in outs[:i]:
            if o2 is not None and np.may_share_memory(o, o2):  # both contiguous: exact
                raise ValueError(
                    f"{fn}: {label} must not overlap {label2}; pass separate arrays")


def _grad_outs(out, mask):
    """A backward's caller-given output buffers, labelled; None where masked off."""
    return ((_GRAD_LABELS[0], out[0] if mask[0] else None),
            (_GRAD_LABELS[1], out[1] if mask[1] else None),
            (_GRAD_LABELS[2], out[2] if mask[2] else None))


def _check_size(fn, what, count):
    if count > _MAX_ELEMENTS:
        raise ValueError(f"{fn}: {what} would have {count} elements; that is too large")


# ------------------------------------------------------------- geometry ---
# Every size the kernels derive from stride, window and padding is bounded here,
# once, in Python integers (which cannot overflow), before anything is allocated.
# The kernels' scratch is a fixed multiple of what this module checks:
#   conv2d: a padded, stride-phase-split copy of the input (or of grad_out), at
#     most (H + 2*pad + s_h - 1) * (W + 2*pad + s_w - 1) elements per plane with
#     the kernel stride s <= H + 2*pad (see _axis);
#   pooling: the input plane split into stride phases, at most
#     (H + s_h - 1) * (W + s_w - 1) with s <= H, and one entry per window tap
#     that can land on the input (at most 2H x 2W of them).
# Refused with a ValueError: a padded copy larger than _SCRATCH_RATIO times
# (input + output + weight) and also larger than _SCRATCH_FLOOR elements (only
# padding far wider than the kernel gets there), and a pooling window whose taps
# inside the input cannot be numbered in 32 bits.
_SCRATCH_RATIO = 16
_SCRATCH_FLOOR = 2**24
_MAX_TAPS = 2**32 - 1


def _axis(fn, axis, n, k, s, p, d, kname="weight", split_extent=None):
    """Output length and kernel stride of one spatial axis.

    ``H_out = (n + 2*p - d*(k - 1) - 1) // s + 1``. A stride longer than the
    extent the kernels split into stride phases (``split_extent``: the padded
    input for convolution, the input for pooling) leaves exactly one output,
    whose window starts at ``-p`` whatever the stride; the kernels are then
    given that extent as the stride, which reads and sums the same elements in
    the same order (so results are bitwise those of the true stride) while the
    phase split stays the size of the input instead of growing with the stride.
    """
    eff = d * (k - 1) + 1
    if n + 2 * p < eff:
        what = (f"kernel extent {eff} (kernel {k}, dilation {d})" if kname == "weight"
                else f"{kname} {k}")
        raise ValueError(
            f"{fn}: {what} along {axis} is larger than the padded input {n + 2 * p} "
            f"(size {n}, padding {p})")
    out = (n + 2 * p - eff) // s + 1
    extent = max(n + 2 * p if split_extent is None else split_extent, 1)
    kstride = s if s <= extent else extent
    return out, kstride


def _check_scratch(fn, what, scratch, *touched):
    """Refuse a scratch buffer out of all proportion to the data of the call."""
    data = sum(touched)
    if scratch > _SCRATCH_FLOOR and scratch > _SCRATCH_RATIO * data:
        raise ValueError(
            f"{fn}: {what} would need a scratch copy of {scratch} elements for "
            f"{data} elements of input, weight and output (more than "
            f"{_SCRATCH_RATIO}x); padding that much wider than the kernel is not "
            "supported")


# ----------------------------------------------------------- convolution ---
class _ConvGeom:
    """Validated convolution geometry (symmetric padding after 'same' handling)."""

    __slots__ = ("n", "c", "h", "w", "k", "kh", "kw", "ho", "wo", "stride", "kstride",
                 "pad", "dilation", "groups", "extra")

    def __init__(self, fn, x_shape, w_shape, stride, padding, dilation, groups):
        n, c, h, w = x_shape
        k, cg, kh, kw = w_shape
        self.stride = check_pair(fn, "stride", stride, minimum=1)
        self.dilation = check_pair(fn, "dilation", dilation, minimum=1)
        groups = check_int(fn, "groups", groups, minimum=1, maximum=MAX_PARAM)
        if kh < 1 or kw < 1 or k < 1:
            raise ValueError(f"{fn}: weight must have a non-empty shape, got {w_shape}")
        if c % groups or k % groups:
            raise ValueError(
                f"{fn}: groups={groups} must divide the input channels ({c}) and the "
                f"output channels ({k})")
        if cg * groups != c:
            raise ValueError(
                f"{fn}: weight of shape {tuple(w_shape)} expects input with "
                f"{cg * groups} channel{'s' if cg * groups != 1 else ''} "
                f"(groups={groups}), got input of shape {tuple(x_shape)}")
        self.extra = (0, 0)  # extra bottom/right zero rows for even-kernel 'same'
        if isinstance(padding, str):
            if padding == "valid":
                pad = (0, 0)
            elif padding == "same":
                if self.stride != (1, 1):
                    raise ValueError(
                        f"{fn}: padding='same' needs stride 1, got stride {stride!r}")
                tot = (self.dilation[0] * (kh - 1), self.dilation[1] * (kw - 1))
                pad = (tot[0] // 2, tot[1] // 2)
                self.extra = (tot[0] - 2 * pad[0], tot[1] - 2 * pad[1])
            else:
                raise ValueError(
                    f"{fn}: padding must be an int, a pair, 'valid' or 'same', "
                    f"got {padding!r}")
        else:
            pad = check_pair(fn, "padding", padding, minimum=0)
        self.pad = pad
        hh, ww = h + self.extra[0], w + self.extra[1]
        _check_size(fn, "the padded input",
                    n * c * (hh + 2 * pad[0]) * (ww + 2 * pad[1]))
        self.ho, ksh = _axis(fn, "height", hh, kh, self.stride[0], pad[0], self.dilation[0])
        self.wo, ksw = _axis(fn, "width", ww, kw, self.stride[1], pad[1], self.dilation[1])
        self.kstride = (ksh, ksw)
        _check_size(fn, "the output", n * k * self.ho * self.wo)
        hp, wp = hh + 2 * pad[0], ww + 2 * pad[1]
        # the forward's phase-split input, and grad-input's padded grad_out grid
        # (at most ceil(hp/s) + 2 rows beyond the output's); see _axis
        split = n * c * (-(-hp // ksh) * ksh) * (-(-wp // ksw) * ksw)
        grid = n * k * (self.ho + -(-hp // ksh) + 2) * (self.wo + -(-wp // ksw) + 2)
        _check_scratch(fn, f"padding {padding!r}", max(split, grid),
                       n * c * h * w, n * k * self.ho * self.wo, k * cg * kh * kw)
        self.n, self.c, self.h, self.w = n, c, hh, ww
        self.k, self.kh, self.kw, self.groups = k, kh, kw, groups

    @property
    def out_shape(self):
        return (self.n, self.k, self.ho, self.wo)

    def as_tuple(self):
        return (self.n, self.c, self.h, self.w, self.k, self.kh, self.kw, self.ho, self.wo,
                self.kstride[0], self.kstride[1], self.pad[0], self.pad[1],
                self.dilation[0], self.dilation[1], self.groups)

    def grow(self, x):
        """Zero rows/columns at the bottom/right for 'same' with an even kernel."""
        if self.extra == (0, 0):
            return x
        return np.pad(x, ((0, 0), (0, 0), (0, self.extra[0]), (0, self.extra[1])))


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1,
                        groups=1):
    """Output shape (N, K, H_out, W_out) of :func:`conv2d`, with the same validation."""
    fn = "conv2d_output_shape"
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    if len(input_shape) != 4 or len(weight_shape) != 4:
        raise ValueError(f"{fn}: shapes must be 4-D, got {input_shape} and {weight_shape}")
    return _ConvGeom(fn, input_shape, weight_shape, stride, padding, dilation,
                     groups).out_shape


def _conv_inputs(fn, x, weight, bias):
    x = check_float_array(fn, "input", x)
    weight = check_float_array(fn, "weight", weight)
    check_ndim(fn, "input", x, 4, "(N, C, H, W)")
    check_ndim(fn, "weight", weight, 4, "(out_channels, in_channels/groups, kH, kW)")
    check_same_dtype(fn, "input", x, weight=weight)
    if bias is not None:
        bias = check_float_array(fn, "bias", bias)
        check_same_dtype(fn, "input", x, bias=bias)
        if bias.ndim != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"{fn}: bias must have shape ({weight.shape[0]},) to match weight of "
                f"shape {weight.shape}, got {bias.shape}")
    return x, weight, bias


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None,
           activation=None):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    weight : ndarray of shape (K, C // groups, kH, kW), same dtype as x
    bias : ndarray of shape (K,), optional
    stride, dilation : int or (int, int), >= 1
    padding : int, (int, int), 'valid' or 'same'
        Zeros added on every side. 'same' (stride 1 only) keeps H and W; with an
        even kernel the extra row/column goes at the bottom/right, as PyTorch does.
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
        ``H_out = (H + 2*padding - dilation*(kH - 1) - 1) // stride + 1``, likewise W_out.
    """
    fn = "conv2d"
    x, weight, bias = _conv_inputs(fn, x, weight, bias)
    if activation not in (None, "relu"):
        raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}")
    g = _ConvGeom(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    y = _check_out(fn, "out", out, g.out_shape, x.dtype)
    _check_overlap(fn, (("out", out),), (("input", x), ("weight", weight), ("bias", bias)))
    if y.size == 0:
        return y
    kern = _kernels.conv2d_forward
    _last_algorithm["forward"] = "direct"
    if _winograd_ok(g, x.dtype):
        kern = _kernels.conv2d_forward_winograd
        _last_algorithm["forward"] = "winograd"
    kern(_contig(g.grow(x)), _contig(weight), None if bias is None else _contig(bias),
         g.as_tuple(), activation == "relu", get_num_threads(), y)
    return y


def _conv2d_prepared(x_shape, dtype, weight_shape, stride, padding, dilation, groups):
    """What :func:`conv2d` checks and decides for these shapes, done once.

    For a caller that repeats the same convolution many times (the inference
    plans of ``fastconv.nn``). Raises as :func:`conv2d` would. Returns
    ``(kernel, geom, extra, out_shape)``: ``kernel(x, weight, bias, geom, relu,
    nthreads, y)`` is the compiled call :func:`conv2d` makes, on C-contiguous
    arrays of ``dtype``, with ``x`` first grown by ``extra`` zero rows/columns
    at the bottom/right when that is not (0, 0) ('same' with an even kernel).
    """
    g = _ConvGeom("conv2d", tuple(x_shape), tuple(weight_shape), stride, padding, dilation,
                  groups)
    wino = _winograd_ok(g, np.dtype(dtype))
    kern = _kernels.conv2d_forward_winograd if wino else _kernels.conv2d_forward
    return kern, g.as_tuple(), g.extra, g.out_shape


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), out=None, relu_output=None):
    """Gradients of :func:`conv2d` with respect to input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray of shape (N, K, H_out, W_out)
        Gradient of the loss with respect to the conv2d output.
    x, weight, stride, padding, dilation, groups
        As passed to :func:`conv2d`.
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
    fn = "conv2d_backward"
    x, weight, _ = _conv_inputs(fn, x, weight, None)
    grad_out = check_float_array(fn, "grad_out", grad_out)
    check_same_dtype(fn, "input", x, grad_out=grad_out)
    g = _ConvGeom(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    if grad_out.shape != g.out_shape:
        raise ValueError(
            f"{fn}: grad_out must have the conv2d output shape {g.out_shape} for input "
            f"{x.shape} and weight {weight.shape}, got {grad_out.shape}")
    mask, out = _mask_and_out(fn, output_mask, out)
    gx = _check_out(fn, "out[0]", out[0], x.shape, x.dtype) if mask[0] else None
    gw = _check_out(fn, "out[1]", out[1], weight.shape, x.dtype) if mask[1] else None
    gb = _check_out(fn, "out[2]", out[2], (weight.shape[0],), x.dtype) if mask[2] else None
    _check_overlap(fn, _grad_outs(out, mask), (("grad_out", grad_out), ("input", x),
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
    geom = g.as_tuple()
    wino = _winograd_ok(g, x.dtype)
    wino_w = _winograd_ok(g, x.dtype, grad_weight=True)
    bwd_data = _kernels.conv2d_backward_data_winograd if wino else _kernels.conv2d_backward_data
    bwd_weight = (_kernels.conv2d_backward_weight_winograd if wino_w
                  else _kernels.conv2d_backward_weight)
    if gx is not None:
        _last_algorithm["grad_input"] = "winograd" if wino else "direct"
        if g.extra == (0, 0):
            bwd_data(gy, _contig(weight), geom, nt, gx)
        else:
            full = np.empty((g.n, g.c, g.h, g.w), dtype=x.dtype)
            bwd_data(gy, _contig(weight), geom, nt, full)
            gx[...] = full[:, :, :x.shape[2], :x.shape[3]]
    if gw is not None or gb is not None:
        _last_algorithm["grad_weight"] = "winograd" if wino_w else "direct"
        gw_buf = gw if gw is not None else np.empty(weight.shape, dtype=x.dtype)
        bwd_weight(gy, _contig(g.grow(x)), geom, nt, gw_buf, gb)
    return gx, gw, gb


# --------------------------------------------------------------- pooling ---
def _pool_geom(fn, x_shape, kernel_size, stride, padding):
    k = check_pair(fn, "kernel_size", kernel_size, minimum=1)
    s = k if stride is None else check_pair(fn, "stride", stride, minimum=1)
    p = check_pair(fn, "padding", padding, minimum=0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(
            f"{fn}: padding must be at most half the kernel size, got padding {padding!r} "
            f"for kernel_size {kernel_size!r}")
    n, c, h, w = x_shape
    if n * c and not h * w:
        # every window would be padding only: PyTorch refuses this too
        raise ValueError(f"{fn}: input height and width must be >= 1 when N and C are, "
                         f"got shape {tuple(x_shape)}")
    ho, ksh = _axis(fn, "height", h, k[0], s[0], p[0], 1, "kernel_size", split_extent=h)
    wo, ksw = _axis(fn, "width", w, k[1], s[1], p[1], 1, "kernel_size", split_extent=w)
    _check_size(fn, "the output", n * c * ho * wo)
    # the window taps that can land on the input (the kernels visit only these,
    # and number them in 32 bits): rows max(0, p - (ho-1)*s) .. min(k, p + h)
    taps = 1
    for kk, ss, pp, nn, oo in ((k[0], s[0], p[0], h, ho), (k[1], s[1], p[1], w, wo)):
        taps *= max(min(kk, pp + nn) - max(0, pp - (oo - 1) * ss), 1)
    if taps > _MAX_TAPS:
        raise ValueError(f"{fn}: kernel_size {kernel_size!r} covers {taps} positions of "
                         f"an input plane of shape {(h, w)}; at most 2**32 - 1 are supported")
    return (n, c, h, w, k[0], k[1], ho, wo, ksh, ksw, p[0], p[1]), (n, c, ho, wo)


def _pool_input(fn, name, x):
    x = check_float_array(fn, name, x)
    check_ndim(fn, name, x, 4, "(N, C, H, W)")
    return x


def _input_shape(fn, input_shape):
    try:
        shape = tuple(check_int(fn, "input_shape", v) for v in input_shape)
    except TypeError:
        raise TypeError(f"{fn}: input_shape must be a tuple of 4 ints, got {input_shape!r}") \
            from None
    if len(shape) != 4 or min(shape) < 0:
        raise ValueError(f"{fn}: input_shape must be 4 non-negative ints (N, C, H, W), "
                         f"got {input_shape!r}")
    return shape


def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices=False, out=None,
               indices_out=None):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d`` (floor mode).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf padding, at most half the kernel size.
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
    geom, oshape = _pool_geom(fn, x.shape, kernel_size, stride, padding)
    y = _check_out(fn, "out", out, oshape, x.dtype)
    if indices_out is not None and not return_indices:
        raise ValueError(f"{fn}: indices_out is only used with return_indices=True")
    idx = (_check_out(fn, "indices_out", indices_out, oshape, np.dtype(np.int64))
           if return_indices else None)
    _check_overlap(fn, (("out", out), ("indices_out", indices_out)), (("input", x),))
    if y.size:
        _kernels.max_pool2d_forward(_contig(x), geom, get_num_threads(), y, idx)
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_out, indices, input_shape, *, out=None):
    """Gradient of :func:`max_pool2d`: routes each grad_out value to its argmax.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out), float32 or float64
    indices : ndarray of int64, same shape, from ``max_pool2d(..., return_indices=True)``
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
    if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
        got = indices.dtype if isinstance(indices, np.ndarray) else type(indices).__name__
        raise TypeError(f"{fn}: indices must be an int64 array, got {got}")
    if indices.shape != grad_out.shape:
        raise ValueError(f"{fn}: indices must have the shape of grad_out {grad_out.shape}, "
                         f"got {indices.shape}")
    shape = _input_shape(fn, input_shape)
    if shape[:2] != grad_out.shape[:2]:
        raise ValueError(f"{fn}: input_shape {shape} does not match grad_out of shape "
                         f"{grad_out.shape} in N and C")
    gx = _check_out(fn, "out", out, shape, grad_out.dtype)
    _check_overlap(fn, (("out", out),), (("grad_out", grad_out), ("indices", indices)))
    if gx.size == 0 or grad_out.size == 0:
        gx.fill(0)
        return gx
    n, c, h, w = shape
    geom = (n, c, h, w, 1, 1, grad_out.shape[2], grad_out.shape[3], 1, 1, 0, 0)
    ok = _kernels.max_pool2d_backward(_contig(grad_out), _contig(indices), geom,
                                      get_num_threads(), gx)
    if not ok:
        bad = indices[(indices < 0) | (indices >= h * w)]
        raise ValueError(f"{fn}: indices must lie in [0, H*W) = [0, {h * w}) for "
                         f"input_shape {shape}, got {bad.size} outside, e.g. {bad.flat[0]}")
    return gx


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, count_include_pad=True, out=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d`` (floor mode).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit zero padding, at most half the kernel size.
    count_include_pad : bool
        Divide by the window size including padded zeros (True) or only by the
        number of real input elements in the window (False).
    out : ndarray of shape (N, C, H_out, W_out), optional
        Where to write the result (C-contiguous, sharing no memory with x).

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
    """
    fn = "avg_pool2d"
    x = _pool_input(fn, "input", x)
    geom, oshape = _pool_geom(fn, x.shape, kernel_size, stride, padding)
    y = _check_out(fn, "out", out, oshape, x.dtype)
    _check_overlap(fn, (("out", out),), (("input", x),))
    if y.size:
        _kernels.avg_pool2d_forward(_contig(x), geom, bool(count_include_pad),
                                    get_num_threads(), y)
    return y


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, *,
                        count_include_pad=True, out=None):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    input_shape : tuple (N, C, H, W)
    kernel_size, stride, padding, count_include_pad
        As passed to :func:`avg_pool2d`.
    out : ndarray of shape input_shape, optional
        Where to write grad_input (C-contiguous, sharing no memory with grad_out).

    Returns
    -------
    grad_input : ndarray of shape input_shape, dtype of grad_out
    """
    fn = "avg_pool2d_backward"
    grad_out = _pool_input(fn, "grad_out", grad_out)
    shape = _input_shape(fn, input_shape)
    geom, oshape = _pool_geom(fn, shape, kernel_size, stride, padding)
    if grad_out.shape != oshape:
        raise ValueError(f"{fn}: grad_out must have shape {oshape} for input_shape {shape}, "
                         f"got {grad_out.shape}")
    gx = _check_out(fn, "out", out, shape, grad_out.dtype)
    _check_overlap(fn, (("out", out),), (("grad_out", grad_out),))
    if grad_out.size == 0:
        gx.fill(0)
        return gx
    _kernels.avg_pool2d_backward(_contig(grad_out), geom, bool(count_include_pad),
                                 get_num_threads(), gx)
    return gx


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
    y = _check_out(fn, "out", out, x.shape, x.dtype)
    _check_overlap(fn, (("out", out),), (("input", x),), in_place="input")
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
    gx = _check_out(fn, "out", out, grad_out.shape, grad_out.dtype)
    # in place over grad_out only: the kernel reads output through a restrict pointer
    _check_overlap(fn, (("out", out),), (("grad_out", grad_out), ("output", output)),
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
    y = _check_out(fn, "out", out, (x.shape[0], weight.shape[0]), x.dtype)
    _check_overlap(fn, (("out", out),), (("input", x), ("weight", weight), ("bias", bias)))
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
    mask, out = _mask_and_out(fn, output_mask, out)
    acc = bool(accumulate)
    if acc:
        for i, what in ((1, "grad_weight"), (2, "grad_bias")):
            if mask[i] and out[i] is None:
                raise ValueError(
                    f"{fn}: accumulate=True adds into out[{i}], but no {what} array was given")
    gx = _check_out(fn, "out[0]", out[0], x.shape, x.dtype) if mask[0] else None
    gw = _check_out(fn, "out[1]", out[1], weight.shape, x.dtype) if mask[1] else None
    gb = _check_out(fn, "out[2]", out[2], (weight.shape[0],), x.dtype) if mask[2] else None
    _check_overlap(fn, _grad_outs(out, mask),
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
