"""Output buffers of the functional API: shape, dtype, layout and memory overlap.

An ``out=`` buffer must be C-contiguous with the result's shape and dtype, and
share no memory with any array the function reads or with another output
(``ValueError``): the kernels read while they write, on several threads. The
one exception is the exact in-place ``relu(x, out=x)`` / ``relu_backward(g, y,
out=g)``.
"""

import numpy as np

try:
    from numpy.exceptions import TooHardError as _TooHardError
except ImportError:  # numpy < 1.25
    from numpy import TooHardError as _TooHardError  # type: ignore[attr-defined,no-redef]

__all__ = ["check_out", "mask_and_out", "check_overlap", "grad_outs"]


def check_out(fn, name, out, shape, dtype):
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


def mask_and_out(fn, output_mask, out):
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
OVERLAP_MAX_WORK = 1 << 16
GRAD_LABELS = ("out[0] (grad_input)", "out[1] (grad_weight)", "out[2] (grad_bias)")


def _overlaps(out, a):
    """True if ``a`` shares memory with ``out``, given that their address ranges meet.

    ``out`` is C-contiguous, and a contiguous array fills its range, so if ``a``
    is contiguous too, meeting ranges mean shared bytes. A strided view
    (``x[:, ::2]``) can interleave with ``out`` without sharing a byte, so that
    case goes to numpy's exact solver, bounded by ``OVERLAP_MAX_WORK``; an
    undecided case counts as overlap.
    """
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return True
    try:
        return np.shares_memory(out, a, max_work=OVERLAP_MAX_WORK)
    except _TooHardError:
        return True


def _same_memory(out, a):
    """``a`` is ``out``'s very elements in the same order (an in-place call)."""
    return a is out or (
        a.dtype == out.dtype and a.shape == out.shape and a.flags.c_contiguous
        and a.__array_interface__["data"][0] == out.__array_interface__["data"][0])


def check_overlap(fn, outs, inputs, in_place=None):
    """Refuse an output that shares memory with an input or with another output.

    The kernels read their inputs while they write their outputs, in parallel
    and in blocks, so any overlap gives a wrong (and thread-count dependent)
    answer instead of an error; two outputs in one buffer overwrite each other.

    outs : sequence of (label, array or None)
        The caller's output buffers (already through ``check_out``, so
        C-contiguous); None where fastconv allocates or the output is masked off.
    inputs : sequence of (name, array or None)
        Every array the function reads, after ``check_float_array`` (which keeps a buffer
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


def grad_outs(out, mask):
    """A backward's caller-given output buffers, labelled; None where masked off."""
    return ((GRAD_LABELS[0], out[0] if mask[0] else None),
            (GRAD_LABELS[1], out[1] if mask[1] else None),
            (GRAD_LABELS[2], out[2] if mask[2] else None))


def contiguous(a):
    """``a`` as a C-contiguous array (no copy when it already is): what the kernels read."""
    return np.ascontiguousarray(a)
