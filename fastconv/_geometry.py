"""Convolution and pooling geometry: output sizes, checked once, before any allocation.

Output size along each spatial axis::

    H_out = (H + pad_before + pad_after - dilation*(kernel - 1) - 1) // stride + 1

Every size the kernels derive from stride, window and padding is bounded here,
once, in Python integers (which cannot overflow). ``conv2d_output_shape`` is
public (re-exported by ``fastconv.functional``); the rest serves the
functional API and the inference plans of ``fastconv.nn``.
"""

import operator
from typing import Any, Dict

import numpy as np

from ._validate import MAX_PARAM, check_int, check_pair

__all__ = [
    "MAX_ELEMENTS",
    "check_size",
    "checked_axis",
    "check_scratch",
    "check_padding",
    "check_int1",
    "same_padding",
    "ConvGeom",
    "conv2d_output_shape",
    "pool_padding",
    "pool_params",
    "pool1d_params",
    "check_flag",
    "pool_geom",
    "check_input_shape",
]

# Sizes past this are mistakes, not workloads: refuse them before allocating.
MAX_ELEMENTS = 2**46


def check_size(fn, what, count):
    if count > MAX_ELEMENTS:
        raise ValueError(f"{fn}: {what} would have {count} elements; that is too large")


# Every size the kernels derive from stride, window and padding is bounded here,
# once, in Python integers (which cannot overflow), before anything is allocated.
# The kernels' scratch is a fixed multiple of what this module checks:
#   conv2d: a padded, stride-phase-split copy of the input (or of grad_out), at
#     most (H + 2*pad + s_h - 1) * (W + 2*pad + s_w - 1) elements per plane with
#     the kernel stride s <= H + 2*pad (see checked_axis);
#   pooling: the input plane split into stride phases, at most
#     (H + s_h - 1) * (W + s_w - 1) with s <= H, and one entry per window tap
#     that can land on the input (at most 2H x 2W of them).
# Refused with a ValueError: a padded copy larger than SCRATCH_RATIO times
# (input + output + weight) and also larger than SCRATCH_FLOOR elements (only
# padding far wider than the kernel gets there), and a pooling window whose taps
# inside the input cannot be numbered in 32 bits.
SCRATCH_RATIO = 16
SCRATCH_FLOOR = 2**24
MAX_TAPS = 2**32 - 1


def checked_axis(fn, axis, n, k, s, p, d, kname="weight", split_extent=None):
    """Output length and kernel stride of one spatial axis.

    ``H_out = (n + before + after - d*(k - 1) - 1) // s + 1``, where ``p`` is
    the padding: an int (both sides) or a ``(before, after)`` pair. A stride
    longer than the extent the kernels split into stride phases
    (``split_extent``: the padded input for convolution, the input for
    pooling) leaves exactly one output, whose window starts at ``-before``
    whatever the stride; the kernels are then given that extent as the
    stride, which reads and sums the same elements in the same order (so
    results are bitwise those of the true stride) while the phase split stays
    the size of the input instead of growing with the stride.
    """
    before, after = (p, p) if isinstance(p, int) else p
    padded = n + before + after
    eff = d * (k - 1) + 1
    if padded < eff:
        what = (f"kernel extent {eff} (kernel {k}, dilation {d})" if kname == "weight"
                else f"{kname} {k}")
        pads = f"padding {p}" if isinstance(p, int) else f"padding {before} before, {after} after"
        raise ValueError(
            f"{fn}: {what} along {axis} is larger than the padded input {padded} "
            f"(size {n}, {pads})")
    out = (padded - eff) // s + 1
    extent = max(padded if split_extent is None else split_extent, 1)
    kstride = s if s <= extent else extent
    return out, kstride


def check_scratch(fn, what, scratch, *touched):
    """Refuse a scratch buffer out of all proportion to the data of the call."""
    data = sum(touched)
    if scratch > SCRATCH_FLOOR and scratch > SCRATCH_RATIO * data:
        raise ValueError(
            f"{fn}: {what} would need a scratch copy of {scratch} elements for "
            f"{data} elements of input, weight and output (more than "
            f"{SCRATCH_RATIO}x); padding that much wider than the kernel is not "
            "supported")


# ----------------------------------------------------------- convolution ---
_PADDING_FORMS = {
    2: "an int, a pair (ph, pw), per side ((top, bottom), (left, right)), 'valid' or 'same'",
    1: "an int, a pair (left, right), 'valid' or 'same'",
}


def _is_seq(v):
    return isinstance(v, (tuple, list, np.ndarray))


def check_padding(fn, padding, ndim=2):
    """Per-side padding ``((top, bottom), (left, right))`` of ints >= 0.

    2-D: ``p`` (every side), ``(ph, pw)`` (top = bottom = ph, left = right =
    pw) or ``((top, bottom), (left, right))``. 1-D (the width axis of a
    height-1 image): ``p`` or ``(left, right)``. Messages quote the argument
    as given. Strings ('same', 'valid') are the caller's to resolve.
    """
    forms = _PADDING_FORMS[ndim]
    if ndim == 2 and _is_seq(padding) and len(padding) == 2 and any(map(_is_seq, padding)):
        if not all(_is_seq(v) and len(v) == 2 for v in padding):
            raise ValueError(f"{fn}: padding must be {forms}, got {padding!r}")
        flat = []
        for item in (*padding[0], *padding[1]):
            try:
                if isinstance(item, (bool, np.bool_)):
                    raise TypeError
                flat.append(operator.index(item))
            except TypeError:
                raise TypeError(f"{fn}: padding must be {forms}, with ints, got {padding!r}") \
                    from None
        if min(flat) < 0:
            raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
        if max(flat) > MAX_PARAM:
            raise ValueError(f"{fn}: padding must be <= 2**31 - 1, got {padding!r}")
        return (flat[0], flat[1]), (flat[2], flat[3])
    if ndim == 1:
        if _is_seq(padding) and (len(padding) != 2 or any(map(_is_seq, padding))):
            raise ValueError(f"{fn}: padding must be {forms}, got {padding!r}")
        left, right = check_pair(fn, "padding", padding, minimum=0)
        return (0, 0), (left, right)
    ph, pw = check_pair(fn, "padding", padding, minimum=0)
    return (ph, ph), (pw, pw)


def check_int1(fn, name, value):
    """A 1-D kernel size, stride or dilation: an int >= 1, or a sequence of one
    (as PyTorch and ONNX spell them)."""
    if _is_seq(value) and len(value) == 1:
        value = value[0]
    elif _is_seq(value):
        raise ValueError(f"{fn}: {name} must be an int, got {value!r}")
    return check_int(fn, name, value, minimum=1, maximum=MAX_PARAM)


def same_padding(n, k, s, d):
    """``(before, after)`` of TensorFlow's 'same' (ONNX SAME_UPPER) along one axis.

    The output has ``ceil(n / s)`` elements; the total padding that needs,
    ``max((ceil(n/s) - 1)*s + d*(k-1) + 1 - n, 0)``, is split with the odd
    element after. For stride 1 it is ``d*(k-1)``, as PyTorch's 'same'.
    """
    total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


class ConvGeom:
    """Validated convolution geometry, 2-D or 1-D (a height-1 image).

    ``x_shape`` and ``w_shape`` are (N, C, H, W) and (K, C/groups, kh, kw), or
    (N, C, L) and (K, C/groups, k) for 1-D; messages quote them as given. The
    kernels always see the 2-D form; ``pad`` is ``((top, bottom), (left, right))``.
    """

    __slots__ = ("n", "c", "h", "w", "k", "kh", "kw", "ho", "wo", "stride", "kstride",
                 "pad", "dilation", "groups", "one_d")

    def __init__(self, fn, x_shape, w_shape, stride, padding, dilation, groups):
        x_shape, w_shape = tuple(x_shape), tuple(w_shape)
        self.one_d = len(x_shape) == 3
        if self.one_d:
            (n, c, w), (k, cg, kw) = x_shape, w_shape
            h = kh = 1
            self.stride = (1, check_int1(fn, "stride", stride))
            self.dilation = (1, check_int1(fn, "dilation", dilation))
            axes = ("height", "length")
        else:
            (n, c, h, w), (k, cg, kh, kw) = x_shape, w_shape
            self.stride = check_pair(fn, "stride", stride, minimum=1)
            self.dilation = check_pair(fn, "dilation", dilation, minimum=1)
            axes = ("height", "width")
        groups = check_int(fn, "groups", groups, minimum=1, maximum=MAX_PARAM)
        if kh < 1 or kw < 1 or k < 1:
            raise ValueError(f"{fn}: weight must have a non-empty shape, got {w_shape}")
        if c % groups or k % groups:
            raise ValueError(
                f"{fn}: groups={groups} must divide the input channels ({c}) and the "
                f"output channels ({k})")
        if cg * groups != c:
            raise ValueError(
                f"{fn}: weight of shape {w_shape} expects input with "
                f"{cg * groups} channel{'s' if cg * groups != 1 else ''} "
                f"(groups={groups}), got input of shape {x_shape}")
        if isinstance(padding, str):
            if padding == "valid":
                pad = ((0, 0), (0, 0))
            elif padding == "same":
                pad = (same_padding(h, kh, self.stride[0], self.dilation[0]),
                       same_padding(w, kw, self.stride[1], self.dilation[1]))
            else:
                forms = _PADDING_FORMS[1 if self.one_d else 2]
                raise ValueError(f"{fn}: padding must be {forms}, got {padding!r}")
        else:
            pad = check_padding(fn, padding, 1 if self.one_d else 2)
        self.pad = pad
        hp, wp = h + sum(pad[0]), w + sum(pad[1])
        check_size(fn, "the padded input", n * c * hp * wp)
        self.ho, ksh = checked_axis(fn, axes[0], h, kh, self.stride[0], pad[0],
                                    self.dilation[0])
        self.wo, ksw = checked_axis(fn, axes[1], w, kw, self.stride[1], pad[1],
                                    self.dilation[1])
        self.kstride = (ksh, ksw)
        check_size(fn, "the output", n * k * self.ho * self.wo)
        # the forward's phase-split input, and grad-input's padded grad_out grid
        # (at most ceil(hp/s) + 2 rows beyond the output's); see checked_axis
        split = n * c * (-(-hp // ksh) * ksh) * (-(-wp // ksw) * ksw)
        grid = n * k * (self.ho + -(-hp // ksh) + 2) * (self.wo + -(-wp // ksw) + 2)
        check_scratch(fn, f"padding {padding!r}", max(split, grid),
                       n * c * h * w, n * k * self.ho * self.wo, k * cg * kh * kw)
        self.n, self.c, self.h, self.w = n, c, h, w
        self.k, self.kh, self.kw, self.groups = k, kh, kw, groups

    @property
    def out_shape(self):
        """The output shape, 3-D for a 1-D convolution."""
        if self.one_d:
            return (self.n, self.k, self.wo)
        return (self.n, self.k, self.ho, self.wo)

    def as_tuple(self):
        """The field order of ``fc_conv_geom`` (csrc/fastconv.h)."""
        (top, bottom), (left, right) = self.pad
        return (self.n, self.c, self.h, self.w, self.k, self.kh, self.kw, self.ho, self.wo,
                self.kstride[0], self.kstride[1], top, left, bottom, right,
                self.dilation[0], self.dilation[1], self.groups)


# Checked geometries of recent calls: building one costs 3-4 us, as much as all
# the rest of a small kernel call's Python work (LeNet conv2's pair of calls:
# ~17 us of ~240 at 2 threads; a pooling call ~6 us). A geometry is never changed
# once built (ConvGeom after __init__, pool_geom's tuples), so calls with the
# same arguments share one. Bounded: cleared when full.
_GEOM_CACHE: Dict[tuple, Any] = {}
_GEOM_CACHE_MAX = 512
_UNCACHED = object()


def _exact_key(v):
    """``v`` with each element's type beside it (1, 1.0, True and numpy's 1 are
    different arguments: some are refused); _UNCACHED unless built of ints,
    bools, strings, None and tuples."""
    t = type(v)
    if t is int or t is str or t is bool or v is None:
        return (t, v)
    if t is tuple:
        parts = tuple(map(_exact_key, v))
        return _UNCACHED if _UNCACHED in parts else parts
    return _UNCACHED


def _remember(key, geom):
    if len(_GEOM_CACHE) >= _GEOM_CACHE_MAX:
        _GEOM_CACHE.clear()
    _GEOM_CACHE[key] = geom
    return geom


def conv_geom(fn, x_shape, w_shape, stride, padding, dilation, groups):
    """``ConvGeom(...)`` for the shapes of two arrays (``ndarray.shape``: ints),
    shared between calls with the same arguments."""
    key = (fn, x_shape, w_shape, _exact_key(stride), _exact_key(padding),
           _exact_key(dilation), _exact_key(groups))
    if _UNCACHED in key:
        return ConvGeom(fn, x_shape, w_shape, stride, padding, dilation, groups)
    g = _GEOM_CACHE.get(key)
    if g is None:
        g = _remember(key, ConvGeom(fn, x_shape, w_shape, stride, padding, dilation, groups))
    return g


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1,
                        groups=1):
    """Output shape (N, K, H_out, W_out) of :func:`conv2d`, with the same validation."""
    fn = "conv2d_output_shape"
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    if len(input_shape) != 4 or len(weight_shape) != 4:
        raise ValueError(f"{fn}: shapes must be 4-D, got {input_shape} and {weight_shape}")
    return ConvGeom(fn, input_shape, weight_shape, stride, padding, dilation,
                     groups).out_shape


# --------------------------------------------------------------- pooling ---
_POOL_PADDING_FORMS = ("an int, a pair (h, w) or per side ((top, bottom), (left, right)) "
                       "of ints >= 0")


def pool_padding(fn, padding):
    """``((top, bottom), (left, right))`` from ``p``, ``(ph, pw)`` or the per-side form."""
    if type(padding) is int and 0 <= padding <= MAX_PARAM:
        return (padding, padding), (padding, padding)

    def bad(exc):
        return exc(f"{fn}: padding must be {_POOL_PADDING_FORMS}, got {padding!r}")

    seq = (tuple, list, np.ndarray)
    if isinstance(padding, seq) and len(padding) == 2 and any(
            isinstance(v, seq) for v in padding):
        if not all(isinstance(v, seq) for v in padding):
            raise bad(ValueError)
        sides = []
        for v in padding:
            try:
                sides.append(check_pair(fn, "padding", v, minimum=0))
            except TypeError:
                raise bad(TypeError) from None
            except ValueError:
                raise bad(ValueError) from None
        return tuple(sides)
    try:
        ph, pw = check_pair(fn, "padding", padding, minimum=0)
    except TypeError:
        raise bad(TypeError) from None
    except ValueError:
        raise bad(ValueError) from None
    return (ph, ph), (pw, pw)


def check_flag(fn, name, value):
    """A bool argument: True/False (numpy's too) or the ints 0/1 (ONNX attributes)."""
    if type(value) is bool:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__} {value!r}")


def pool_axis(fn, axis, n, k, s, before, after, d, ceil_mode):
    """Output length of one pooling axis, checked.

    ``L_out = (n + before + after - d*(k - 1) - 1) // s + 1``; with ``ceil_mode``
    the division rounds up, and the last window is dropped if it would start
    at or past ``n + before`` (PyTorch's rule: every window starts inside the
    input or the left/top padding). Every window must hold an input element.
    """
    eff = d * (k - 1) + 1
    total = n + before + after
    # ceil mode lets a window run past the padded input (PyTorch's rule: as long as
    # it starts inside the input or the left padding); floor mode does not
    if total + (s - 1 if ceil_mode else 0) < eff:
        what = f"kernel_size {k}" if d == 1 else f"window extent {eff} (kernel_size {k}, dilation {d})"
        raise ValueError(
            f"{fn}: {what} along {axis} is larger than the padded input {total} "
            f"(size {n}, padding {(before, after)})")
    span = total - eff
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + before:
            out -= 1
    else:
        out = span // s + 1
    # the first tap of each window inside the input must exist (a dilated window
    # can step over a small input entirely); checked in closed form per window
    # Without dilation every window holds an input element already: it starts
    # after -k (padding < k) and before n (floor: it ends inside the padded
    # input, padding < k; ceil: the rule above). A dilated window starting in the
    # padding can step over a small input; only those (start < 0) are checked.
    if n == 0 or d == 1 or before == 0:  # (n == 0: an empty array, nothing is read)
        return out
    starts = np.arange(min(out, -(-before // s)), dtype=np.int64) * s - before
    first = np.where(starts < 0, -(starts // d), 0)  # ceil(-start / d) taps in
    empty = (first >= k) | (starts + first * d >= n)
    if empty.any():
        o = int(np.flatnonzero(empty)[0])
        raise ValueError(
            f"{fn}: padding {(before, after)} along {axis} leaves output {o} with a window "
            f"(kernel_size {k}, dilation {d}, stride {s}) that holds no input element of "
            f"the {n}")
    return out


def pool_params(fn, kernel_size, stride, padding, dilation=1, ceil_mode=False, *, avg=False):
    """The input-independent checks of a pooling call (also run by the layers'
    constructors): ``(kernel, stride, ((top, bottom), (left, right)), dilation,
    ceil_mode)``, each pair an (h, w) tuple of ints."""
    k = check_pair(fn, "kernel_size", kernel_size, minimum=1)
    s = k if stride is None else check_pair(fn, "stride", stride, minimum=1)
    # the defaults skip the general checks: every training step pools
    d = (1, 1) if type(dilation) is int and dilation == 1 else check_pair(
        fn, "dilation", dilation, minimum=1)
    ceil_mode = check_flag(fn, "ceil_mode", ceil_mode)
    pads = pool_padding(fn, padding)
    for kk, dd, side in ((k[0], d[0], pads[0]), (k[1], d[1], pads[1])):
        limit = kk if avg else dd * (kk - 1) + 1
        if max(side) >= limit:
            what = (f"kernel_size {kernel_size!r}" if avg or dd == 1 else
                    f"the dilated window {limit} (kernel_size {kernel_size!r}, "
                    f"dilation {dilation!r})")
            raise ValueError(
                f"{fn}: padding on each side must be smaller than {what}, "
                f"got padding {padding!r}")
    return k, s, pads, d, ceil_mode


def pool1d_params(fn, kernel_size, stride, padding, dilation=1, ceil_mode=False, *,
                  avg=False):
    """The checks of a 1-D pooling call, in its own terms: ``(kernel, stride,
    (left, right), dilation, ceil_mode)``. An int or a 1-tuple is accepted for
    kernel_size, stride and dilation; ``p`` or ``(left, right)`` for padding."""
    def one(name, v):
        if isinstance(v, (tuple, list)) and len(v) == 1:
            v = v[0]
        return check_int(fn, name, v, minimum=1, maximum=MAX_PARAM)

    k = one("kernel_size", kernel_size)
    s = k if stride is None else one("stride", stride)
    d = one("dilation", dilation)
    if isinstance(padding, (tuple, list, np.ndarray)):
        if len(padding) != 2 or any(isinstance(v, (tuple, list, np.ndarray)) for v in padding):
            raise ValueError(f"{fn}: padding must be an int or a pair (left, right) of ints "
                             f">= 0, got {padding!r}")
        lr = tuple(check_int(fn, "padding", v, minimum=0, maximum=MAX_PARAM) for v in padding)
    else:
        p = check_int(fn, "padding", padding, minimum=0, maximum=MAX_PARAM)
        lr = (p, p)
    limit = k if avg else d * (k - 1) + 1
    if max(lr) >= limit:
        what = (f"kernel_size {k}" if avg or d == 1 else
                f"the dilated window {limit} (kernel_size {k}, dilation {d})")
        raise ValueError(f"{fn}: padding on each side must be smaller than {what}, "
                         f"got padding {padding!r}")
    return k, s, lr, d, check_flag(fn, "ceil_mode", ceil_mode)


def pool_geom(fn, x_shape, kernel_size, stride, padding, dilation=1, ceil_mode=False, *,
              avg=False):
    """Checked pooling geometry: the kernels' tuple and the output shape
    (:func:`_pool_geom`), shared between calls with the same arguments."""
    key = ("pool", fn, _exact_key(tuple(x_shape)), _exact_key(kernel_size), _exact_key(stride),
           _exact_key(padding), _exact_key(dilation), _exact_key(ceil_mode), avg)
    if _UNCACHED in key:
        return _pool_geom(fn, x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                          avg=avg)
    g = _GEOM_CACHE.get(key)
    if g is None:
        g = _remember(key, _pool_geom(fn, x_shape, kernel_size, stride, padding, dilation,
                                      ceil_mode, avg=avg))
    return g


def _pool_geom(fn, x_shape, kernel_size, stride, padding, dilation=1, ceil_mode=False, *,
               avg=False):
    """Checked pooling geometry: the kernels' tuple and the output shape.

    The tuple is in the field order of ``fc_pool_geom``: ``(n, c, h, w, kh, kw,
    ho, wo, sh, sw, ph, pw, ph_end, pw_end, dh, dw)``. Padding on each side must
    be smaller than the window (avg pooling: ``kernel_size``; max pooling: the
    dilated extent ``dilation*(kernel_size - 1) + 1``).
    """
    k, s, pads, d, ceil_mode = pool_params(fn, kernel_size, stride, padding, dilation,
                                           ceil_mode, avg=avg)
    n, c, h, w = x_shape
    if n * c and not h * w:
        # every window would be padding only: PyTorch refuses this too
        raise ValueError(f"{fn}: input height and width must be >= 1 when N and C are, "
                         f"got shape {tuple(x_shape)}")
    ho = pool_axis(fn, "height", h, k[0], s[0], pads[0][0], pads[0][1], d[0], ceil_mode)
    wo = pool_axis(fn, "width", w, k[1], s[1], pads[1][0], pads[1][1], d[1], ceil_mode)
    check_size(fn, "the output", n * c * ho * wo)
    # A stride longer than the input with a single output: that window starts at
    # -before whatever the stride, and the kernels' stride-phase split stays the
    # size of the input if they are given the input's extent instead (the same
    # elements in the same order: bitwise the result of the true stride).
    ksh = s[0] if ho > 1 or s[0] <= h else max(h, 1)
    ksw = s[1] if wo > 1 or s[1] <= w else max(w, 1)
    # the phase split (only a stride longer than the input, with several outputs,
    # makes it larger than the input: large padding on both sides)
    split = n * c * (-(-h // ksh) * ksh) * (-(-w // ksw) * ksw)
    check_scratch(fn, f"stride {stride!r} with padding {padding!r}", split,
                  n * c * h * w, n * c * ho * wo)
    # the window taps that can land on the input (the kernels visit only these,
    # and number them in 32 bits): i*d in [before - (out-1)*s, before + n)
    taps = 1
    for kk, ss, pp, nn, oo, dd in ((k[0], s[0], pads[0][0], h, ho, d[0]),
                                   (k[1], s[1], pads[1][0], w, wo, d[1])):
        lo = max(0, -(-(pp - (oo - 1) * ss) // dd))
        hi = min(kk, -(-(pp + nn) // dd))
        taps *= max(hi - lo, 1)
    if taps > MAX_TAPS:
        raise ValueError(f"{fn}: kernel_size {kernel_size!r} covers {taps} positions of "
                         f"an input plane of shape {(h, w)}; at most 2**32 - 1 are supported")
    geom = (n, c, h, w, k[0], k[1], ho, wo, ksh, ksw, pads[0][0], pads[1][0],
            pads[0][1], pads[1][1], d[0], d[1])
    return geom, (n, c, ho, wo)


def check_input_shape(fn, input_shape):
    try:
        shape = tuple(check_int(fn, "input_shape", v) for v in input_shape)
    except TypeError:
        raise TypeError(f"{fn}: input_shape must be a tuple of 4 ints, got {input_shape!r}") \
            from None
    if len(shape) != 4 or min(shape) < 0:
        raise ValueError(f"{fn}: input_shape must be 4 non-negative ints (N, C, H, W), "
                         f"got {input_shape!r}")
    return shape
