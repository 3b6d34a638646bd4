"""out= buffers that share memory with an input or with another output are refused.

The kernels read their inputs while they write their outputs, in blocks and on
several threads, so an aliased ``out`` used to give a silently wrong (and
sometimes run-to-run varying) answer. Every kernel function now refuses, with a
ValueError naming the output slot and the input, any ``out`` that overlaps an
input or another output; ReLU and its backward keep their exact in-place form.
``output_mask`` must be an ordered sequence of three bools.

The sweep carves inputs and outputs out of one byte buffer, so every pairing of
an output slot with an input (or with another output) is tried at the same start
address, starting inside it, and ending one word into it.
"""

import re

import numpy as np
import pytest

import fastconv as F
from fastconv import _outputs

GRAD = ("out[0] (grad_input)", "out[1] (grad_weight)", "out[2] (grad_bias)")


# --------------------------------------------------------------- the table ---
def _pool_indices(rng, dtype):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    return F.max_pool2d(x, 2, return_indices=True)[1]


def _values(fn, rng, dtype):
    """Valid inputs of every kernel function, by argument name (as in its messages)."""
    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return {
        "conv2d": lambda: {"input": r(2, 3, 6, 6), "weight": r(4, 3, 3, 3), "bias": r(4)},
        "conv2d_backward": lambda: {"grad_out": r(2, 4, 6, 6), "input": r(2, 3, 6, 6),
                                    "weight": r(4, 3, 3, 3), "relu_output": r(2, 4, 6, 6)},
        "max_pool2d": lambda: {"input": r(2, 3, 6, 6)},
        "max_pool2d_backward": lambda: {"grad_out": r(2, 3, 3, 3),
                                        "indices": _pool_indices(rng, dtype)},
        "avg_pool2d": lambda: {"input": r(2, 3, 6, 6)},
        "avg_pool2d_backward": lambda: {"grad_out": r(2, 3, 3, 3)},
        "relu": lambda: {"input": r(2, 3, 6, 6)},
        "relu_backward": lambda: {"grad_out": r(2, 3, 6, 6), "output": r(2, 3, 6, 6)},
        "linear": lambda: {"input": r(5, 7), "weight": r(4, 7), "bias": r(4)},
        "linear_backward": lambda: {"grad_out": r(5, 4), "input": r(5, 7), "weight": r(4, 7)},
    }[fn]()


# fn -> (output slots as (label in messages, shape, dtype or None for the float dtype),
#        call(inputs, outs))
SPECS = {
    "conv2d": (
        [("out", (2, 4, 6, 6), None)],
        lambda a, o: F.conv2d(a["input"], a["weight"], a["bias"], padding=1, out=o[0])),
    "conv2d_backward": (
        [(GRAD[0], (2, 3, 6, 6), None), (GRAD[1], (4, 3, 3, 3), None), (GRAD[2], (4,), None)],
        lambda a, o: F.conv2d_backward(a["grad_out"], a["input"], a["weight"], padding=1,
                                       relu_output=a["relu_output"], out=tuple(o))),
    "max_pool2d": (
        [("out", (2, 3, 6, 6), None), ("indices_out", (2, 3, 6, 6), np.int64)],
        lambda a, o: F.max_pool2d(a["input"], 3, 1, 1, return_indices=True, out=o[0],
                                  indices_out=o[1])),
    "max_pool2d_backward": (
        [("out", (2, 3, 6, 6), None)],
        lambda a, o: F.max_pool2d_backward(a["grad_out"], a["indices"], (2, 3, 6, 6),
                                           out=o[0])),
    "avg_pool2d": (
        [("out", (2, 3, 6, 6), None)],
        lambda a, o: F.avg_pool2d(a["input"], 3, 1, 1, out=o[0])),
    "avg_pool2d_backward": (
        [("out", (2, 3, 6, 6), None)],
        lambda a, o: F.avg_pool2d_backward(a["grad_out"], (2, 3, 6, 6), 2, out=o[0])),
    "relu": (
        [("out", (2, 3, 6, 6), None)],
        lambda a, o: F.relu(a["input"], out=o[0])),
    "relu_backward": (
        [("out", (2, 3, 6, 6), None)],
        lambda a, o: F.relu_backward(a["grad_out"], a["output"], out=o[0])),
    "linear": (
        [("out", (5, 4), None)],
        lambda a, o: F.linear(a["input"], a["weight"], a["bias"], out=o[0])),
    "linear_backward": (
        [(GRAD[0], (5, 7), None), (GRAD[1], (4, 7), None), (GRAD[2], (4,), None)],
        lambda a, o: F.linear_backward(a["grad_out"], a["input"], a["weight"], out=tuple(o))),
}
# the element-wise kernels read each element before writing it: out may be this input
IN_PLACE = {"relu": "input", "relu_backward": "grad_out"}
DTYPES = [np.float32, np.float64]


def _slots(fn, dtype):
    return [(label, shape, np.dtype(dt or dtype)) for label, shape, dt in SPECS[fn][0]]


def _nbytes(shape, dtype):
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def _carve(buf, offset, shape, dtype):
    """A C-contiguous (shape, dtype) array at byte ``offset`` of the uint8 ``buf``."""
    assert offset % 8 == 0  # keep every view aligned for its dtype
    return buf[offset:offset + _nbytes(shape, dtype)].view(dtype).reshape(shape)


def _up8(n):
    return -(-n // 8) * 8


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def _expected(fn, dtype, a):
    """What the function returns with out=None on fresh copies of the inputs."""
    outs = [None] * len(SPECS[fn][0])
    return tuple(np.copy(v) for v in _as_tuple(SPECS[fn][1]({k: v.copy() for k, v in a.items()},
                                                            outs)))


def _same_bits(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w, strict=True)


SWEEP_IN = [(fn, slot, name) for fn in SPECS for slot in range(len(SPECS[fn][0]))
            for name in _values(fn, np.random.default_rng(0), np.float64)]
SWEEP_OUT = [(fn, i, j) for fn in SPECS for j in range(len(SPECS[fn][0])) for i in range(j)]
MODES = ["same_start", "starts_inside", "ends_inside"]


# ------------------------------------------------ output against an input ---
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn, slot, name", SWEEP_IN, ids=[f"{f}-{s}-{n}" for f, s, n in SWEEP_IN])
def test_out_overlapping_an_input_is_refused(fn, slot, name, mode, dtype, rng):
    a = _values(fn, rng, dtype)
    label, oshape, odt = _slots(fn, dtype)[slot]
    val = a[name]
    buf = np.zeros(val.nbytes + _nbytes(oshape, odt) + 64, np.uint8)
    if mode == "same_start":
        in_off, out_off = 0, 0
    elif mode == "starts_inside":  # out begins halfway into the input
        in_off, out_off = 0, max(8, val.nbytes // 2 // 8 * 8)
    else:  # out ends one 8-byte word into the input
        in_off, out_off = _up8(_nbytes(oshape, odt)) - 8, 0
    out = _carve(buf, out_off, oshape, odt)
    inp = _carve(buf, in_off, val.shape, val.dtype)
    if mode == "same_start" and inp.shape == out.shape and inp.dtype == out.dtype:
        out = inp  # the very array
    inp[...] = val
    a[name] = inp
    outs = [None] * len(SPECS[fn][0])
    outs[slot] = out
    if mode == "same_start" and IN_PLACE.get(fn) == name:
        want = _expected(fn, dtype, a)
        got = SPECS[fn][1](a, outs)
        assert got is out
        _same_bits((got,), want)
        return
    before = buf.copy()
    pat = f"{fn}: {re.escape(label)} must not overlap input '{name}'"
    with pytest.raises(ValueError, match=pat):
        SPECS[fn][1](a, outs)
    np.testing.assert_array_equal(buf, before)  # refused before any kernel wrote


# --------------------------------------------- two outputs in one buffer ---
@pytest.mark.parametrize("mode", ["same_start", "ends_inside"])
@pytest.mark.parametrize("fn, i, j", SWEEP_OUT, ids=[f"{f}-{i}-{j}" for f, i, j in SWEEP_OUT])
def test_two_outputs_overlapping_are_refused(fn, i, j, mode, rng):
    dtype = np.float32
    a = _values(fn, rng, dtype)
    slots = _slots(fn, dtype)
    (li, si, di), (lj, sj, dj) = slots[i], slots[j]
    buf = np.zeros(_nbytes(si, di) + _nbytes(sj, dj) + 64, np.uint8)
    oj = _up8(_nbytes(si, di)) - 8 if mode == "ends_inside" else 0
    outs = [None] * len(slots)
    outs[i] = _carve(buf, 0, si, di)
    outs[j] = _carve(buf, oj, sj, dj)
    if outs[i].shape == outs[j].shape and outs[i].dtype == outs[j].dtype and oj == 0:
        outs[j] = outs[i]  # the same array twice
    with pytest.raises(ValueError,
                       match=f"{fn}: {re.escape(lj)} must not overlap {re.escape(li)}"):
        SPECS[fn][1](a, outs)


# --------------------------------------------------------- still accepted ---
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("fn", list(SPECS))
def test_separate_out_buffers_are_accepted(fn, dtype, rng):
    a = _values(fn, rng, dtype)
    want = _expected(fn, dtype, a)
    outs = [np.full(shape, 7, dt) for _, shape, dt in _slots(fn, dtype)]
    got = _as_tuple(SPECS[fn][1](a, outs))
    assert all(g is o for g, o in zip(got, outs))
    _same_bits(got, want)


@pytest.mark.parametrize("outs_first", [False, True], ids=["inputs_first", "outs_first"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("fn", list(SPECS))
def test_adjacent_views_of_one_buffer_are_accepted(fn, dtype, outs_first, rng):
    """Inputs and outputs packed end to end in one buffer: touching, not overlapping."""
    a = _values(fn, rng, dtype)
    want = _expected(fn, dtype, a)
    slots = _slots(fn, dtype)
    parts = [("in", k, v.shape, v.dtype) for k, v in a.items()]
    parts += [("out", n, shape, dt) for n, (_, shape, dt) in enumerate(slots)]
    if outs_first:
        parts.reverse()
    buf = np.zeros(sum(_up8(_nbytes(s, d)) for *_, s, d in parts), np.uint8)
    off, outs = 0, [None] * len(slots)
    for kind, key, shape, dt in parts:
        view = _carve(buf, off, shape, dt)
        off += _up8(view.nbytes)
        if kind == "in":
            view[...] = a[key]
            a[key] = view
        else:
            outs[key] = view
    got = _as_tuple(SPECS[fn][1](a, outs))
    assert all(g is o for g, o in zip(got, outs))
    _same_bits(got, want)


def test_masked_off_grad_slot_is_not_checked(rng):
    """A buffer for an output that output_mask switches off is never written."""
    a = _values("conv2d_backward", rng, np.float64)
    gy = a["grad_out"].copy()
    gx, gw, gb = F.conv2d_backward(gy, a["input"], a["weight"], padding=1,
                                   output_mask=(False, True, True), out=(gy, None, None))
    assert gx is None
    np.testing.assert_array_equal(gy, a["grad_out"])


# -------------------------------------------- strided (interleaved) inputs ---
def test_interleaved_strided_input_is_compared_exactly():
    """A strided input whose address range contains out, but no element of it."""
    buf = np.arange(32, dtype=np.float64).reshape(2, 16)
    x = buf[:, :4]  # elements 0-3 and 16-19: its range is [0, 20)
    gap = buf[0, 4:12].reshape(2, 4)  # elements 4-11, inside that range, disjoint
    assert np.may_share_memory(gap, x) and not np.shares_memory(gap, x)
    assert F.relu(x, out=gap) is gap
    np.testing.assert_array_equal(gap, np.maximum(buf[:, :4], 0))
    # avg-pooling such a view into a gap of the same buffer (the pooling kernels
    # take a contiguous copy of x, but the rule does not depend on that)
    b4 = np.random.default_rng(3).standard_normal((1, 1, 6, 12))
    x4 = b4[..., :6]
    want = F.avg_pool2d(x4.copy(), 6)
    out = b4[0, 0, 0, 6:7].reshape(1, 1, 1, 1)
    assert F.avg_pool2d(x4, 6, out=out) is out
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="avg_pool2d: out must not overlap input 'input'"):
        F.avg_pool2d(x4, 6, out=b4[0, 0, 1, 0:1].reshape(1, 1, 1, 1))
    # the in-place rule is about the same memory in the same order, not about overlap
    sq = np.random.default_rng(4).standard_normal((4, 4))
    with pytest.raises(ValueError, match="relu: out must not overlap input 'input' unless"):
        F.relu(sq.T, out=sq)


def test_buffer_input_wrapping_out_is_seen():
    """A non-ndarray input (a memoryview) over out's memory is checked as a view."""
    z = np.random.default_rng(6).standard_normal((1, 1, 2, 5))
    with pytest.raises(ValueError, match="avg_pool2d: out must not overlap input 'input'"):
        F.avg_pool2d(memoryview(z), 1, out=z)
    flat = z.reshape(-1)
    assert F.relu(memoryview(flat), out=flat) is flat  # same memory, same order: in place


def test_undecidable_overlap_is_refused(monkeypatch):
    """When numpy's solver gives up, the output is refused rather than risked."""
    buf = np.zeros((2, 16))
    monkeypatch.setattr(_outputs, "OVERLAP_MAX_WORK", 0)  # numpy: too hard at once
    with pytest.raises(ValueError, match="relu: out must not overlap input 'input'"):
        F.relu(buf[:, :4], out=buf[0, 4:12].reshape(2, 4))


# ------------------------------------------- the reproducers in the issue ---
def test_conv2d_backward_grad_input_into_grad_out_is_refused(rng):
    """Was: grad_weight off by ~100 (the kernels read grad_out while writing it)."""
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((3, 3, 3, 3))
    gy = rng.standard_normal((2, 3, 6, 6))
    keep = gy.copy()
    with pytest.raises(ValueError, match=re.escape(
            "conv2d_backward: out[0] (grad_input) must not overlap input 'grad_out'")):
        F.conv2d_backward(gy, x, w, padding=1, out=(gy, None, None))
    np.testing.assert_array_equal(gy, keep)


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pooling_into_its_own_input_is_refused(pool, rng):
    x = rng.standard_normal((2, 3, 7, 7))
    keep = x.copy()
    with pytest.raises(ValueError, match=f"{pool.__name__}: out must not overlap input"):
        pool(x, 3, 1, 1, out=x)
    np.testing.assert_array_equal(x, keep)


def test_max_pool2d_backward_into_grad_out_is_refused(rng):
    """Was: returned zeros (the output is zeroed before the gradient is scattered)."""
    x = rng.standard_normal((2, 3, 7, 7))
    y, i = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    with pytest.raises(ValueError, match="max_pool2d_backward: out must not overlap input "
                                         "'grad_out'"):
        F.max_pool2d_backward(y, i, x.shape, out=y)
    with pytest.raises(ValueError, match="max_pool2d_backward: out must not overlap input "
                                         "'indices'"):
        F.max_pool2d_backward(y, i, x.shape, out=i.view(np.float64))


def test_linear_backward_one_buffer_for_two_grads_is_refused(rng):
    x = rng.standard_normal((4, 4))
    w = rng.standard_normal((4, 4))
    gy = rng.standard_normal((4, 4))
    o = np.empty((4, 4))
    with pytest.raises(ValueError, match=re.escape(
            "linear_backward: out[1] (grad_weight) must not overlap out[0] (grad_input)")):
        F.linear_backward(gy, x, w, out=(o, o, None))


def test_relu_partly_overlapping_out_is_refused():
    """Was: varied run to run (threads read elements another had already written)."""
    z = np.random.default_rng(5).standard_normal(300_000).astype(np.float32)
    keep = z.copy()
    for x, out in ((z[1:], z[:-1]), (z[:-1], z[1:])):
        with pytest.raises(ValueError, match="relu: out must not overlap input 'input' "
                                             "unless it is that array itself"):
            F.relu(x, out=out)
    g = z.copy()
    with pytest.raises(ValueError, match="relu_backward: out must not overlap input 'grad_out'"):
        F.relu_backward(g[1:], keep[1:], out=g[:-1])
    # out = output is not an in-place form: the kernel reads output through restrict
    with pytest.raises(ValueError, match="relu_backward: out must not overlap input 'output'"):
        F.relu_backward(g, z, out=z)
    np.testing.assert_array_equal(z, keep)
    assert F.relu(z, out=z) is z  # the documented in-place ReLU
    np.testing.assert_array_equal(z, np.maximum(keep, 0))


# ----------------------------------------------------------- output_mask ---
BACKWARDS = {
    "conv2d_backward": lambda m, rng: F.conv2d_backward(
        rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((2, 3, 6, 6)),
        rng.standard_normal((4, 3, 3, 3)), padding=1, output_mask=m),
    "linear_backward": lambda m, rng: F.linear_backward(
        rng.standard_normal((5, 4)), rng.standard_normal((5, 7)),
        rng.standard_normal((4, 7)), output_mask=m),
}
BAD_MASKS = [
    ("abc", TypeError), ("", TypeError), (None, TypeError), (True, TypeError),
    ({True, False}, TypeError), (iter([True, True, True]), TypeError),
    (("a", "b", "c"), TypeError), ((1, 2, 0), TypeError), ((True, None, True), TypeError),
    ((1.0, 0.0, 1.0), TypeError), (np.ones((3, 1), bool), TypeError),
    (np.array(True), TypeError),
    ((True, True), ValueError), ((True, False, True, False), ValueError), ((), ValueError),
]


@pytest.mark.parametrize("fn", list(BACKWARDS))
@pytest.mark.parametrize("mask, exc", BAD_MASKS, ids=[repr(m)[:20] for m, _ in BAD_MASKS])
def test_bad_output_mask_is_refused(fn, mask, exc, rng):
    with pytest.raises(exc, match=f"{fn}: output_mask must be"):
        BACKWARDS[fn](mask, rng)


GOOD_MASKS = [
    (True, False, True), [True, False, True], (np.True_, np.False_, np.True_),
    np.array([True, False, True]), (1, 0, 1), (np.int64(1), 0, np.uint8(1)),
]


@pytest.mark.parametrize("fn", list(BACKWARDS))
@pytest.mark.parametrize("mask", GOOD_MASKS, ids=[repr(m)[:30] for m in GOOD_MASKS])
def test_output_mask_spellings_of_three_bools(fn, mask, rng):
    gx, gw, gb = BACKWARDS[fn](mask, rng)
    assert gx is not None and gw is None and gb is not None
