"""Same inputs, same bits: across thread counts, memory layouts and out= buffers.

Also float32 agrees with float64 and inputs are never written to. (That OpenMP
is compiled in and forms a team: test_threads.py.)
"""

import numpy as np
import pytest

import fastconv

from oracle import assert_bitwise_equal, assert_close

DTYPES = [np.float32, np.float64]

# Shapes with sizes (N = 7, odd widths) that do not split evenly between the
# threads, and every one above the kernels' parallel cut-off (2e5 multiply-adds
# or elements, csrc/fc_team.c; 1e6 multiply-adds for a conv forward,
# fc_conv_fwd_impl.h): below it a kernel runs on one thread whatever it is
# asked, and a thread-count test would compare two serial runs.
CONV = {
    "dense": dict(x=(7, 6, 31, 13), w=(10, 6, 3, 3), stride=1, padding=1, dilation=1, groups=1),
    "grouped_strided": dict(x=(15, 8, 33, 16), w=(12, 4, 3, 2), stride=(2, 1),
                            padding=(1, 0), dilation=(1, 2), groups=2),
    # one image wide enough that its columns split into tasks: at 20x21 the
    # compute was one task, and only a padded copy (too small for a team since
    # issue #10) ran on two threads
    "batch_of_one": dict(x=(1, 16, 40, 41), w=(8, 16, 5, 5), stride=1, padding="same",
                         dilation=1, groups=1),
    "depthwise": dict(x=(13, 12, 37, 23), w=(12, 1, 3, 3), stride=1, padding=1,
                      dilation=1, groups=12),
}
POOL = {
    "2x2": dict(x=(7, 16, 40, 39), kernel_size=2, stride=None, padding=0),
    "3x3_s2_p1": dict(x=(6, 16, 41, 45), kernel_size=3, stride=2, padding=1),
    "batch_of_one": dict(x=(1, 96, 33, 49), kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
}


def conv_args(c):
    return {k: c[k] for k in ("stride", "padding", "dilation", "groups")}


def pool_args(c):
    return {k: c[k] for k in ("kernel_size", "stride", "padding")}


def conv_inputs(c, dtype, rng):
    x = rng.standard_normal(c["x"]).astype(dtype)
    w = rng.standard_normal(c["w"]).astype(dtype)
    b = rng.standard_normal(c["w"][0]).astype(dtype)
    shape = fastconv.conv2d_output_shape(c["x"], c["w"], **conv_args(c))
    g = rng.standard_normal(shape).astype(dtype)
    return x, w, b, g


def team_used():
    """Threads the last kernel call really ran with (its largest parallel region)."""
    return fastconv.info()["team"]["threads_last_call"]


def run_all(dtype, rng_seed, used=None):
    """Every kernel on fixed inputs; a flat dict name -> array.

    ``used``, if given, is filled with name -> threads the call really ran with.
    """
    results = {}
    used = {} if used is None else used

    def call(names, func, *args, **kwargs):
        out = func(*args, **kwargs)
        if not isinstance(names, tuple):
            names, out = (names,), (out,)
        for name, a in zip(names, out, strict=True):
            results[name] = a
            used[name] = team_used()

    for name, c in CONV.items():
        rng = np.random.default_rng(rng_seed)
        x, w, b, g = conv_inputs(c, dtype, rng)
        kw = conv_args(c)
        call(f"conv2d {name}", fastconv.conv2d, x, w, b, **kw)
        # grad-input and grad-weight are separate kernels: one call each, so that
        # each one's thread count is seen
        call(f"grad_x {name}", lambda *a: fastconv.conv2d_backward(
            *a, **kw, output_mask=(True, False, False))[0], g, x, w)
        call((f"grad_weight {name}", f"grad_bias {name}"), lambda *a: fastconv.conv2d_backward(
            *a, **kw, output_mask=(False, True, True))[1:], g, x, w)
    for name, c in POOL.items():
        rng = np.random.default_rng(rng_seed)
        x = rng.standard_normal(c["x"]).astype(dtype)
        call((f"max_pool2d {name}", f"max indices {name}"), fastconv.max_pool2d,
             x, **pool_args(c), return_indices=True)
        g = rng.standard_normal(results[f"max_pool2d {name}"].shape).astype(dtype)
        call(f"max_pool2d_backward {name}", fastconv.max_pool2d_backward,
             g, results[f"max indices {name}"], x.shape)
        for cip in (True, False):
            call(f"avg_pool2d {name} {cip}", fastconv.avg_pool2d,
                 x, **pool_args(c), count_include_pad=cip)
            call(f"avg_pool2d_backward {name} {cip}", fastconv.avg_pool2d_backward,
                 g, x.shape, **pool_args(c), count_include_pad=cip)
    return results


# --------------------------------------------------------------------------
# Thread count
# --------------------------------------------------------------------------

def test_set_num_threads_round_trips(restore_threads):
    for n in (1, 2, 3):
        fastconv.set_num_threads(n)
        assert fastconv.get_num_threads() == n


@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_does_not_change_a_bit(dtype, threads, restore_threads):
    fastconv.set_num_threads(1)
    used1, used = {}, {}
    serial = run_all(dtype, 1234, used1)
    fastconv.set_num_threads(threads)
    parallel = run_all(dtype, 1234, used)
    again = run_all(dtype, 1234)
    assert set(used1.values()) == {1}
    ran = {name: n for name, n in used.items() if n != threads}
    assert not ran, f"these calls did not run on {threads} threads: {ran}"
    for name in serial:
        assert_bitwise_equal(parallel[name], serial[name], f"{name}, {threads} threads vs 1")
        assert_bitwise_equal(again[name], parallel[name], f"{name}, run twice")


def test_float32_agrees_with_float64():
    r32 = run_all(np.float32, 99)
    r64 = run_all(np.float64, 99)  # the same values: float32 draws, widened
    for name in r64:
        if "indices" in name:
            continue  # ties in float32 may break differently than in float64
        assert_close(r32[name], r64[name], np.float32, name)


# --------------------------------------------------------------------------
# Memory layout: every variant of an input gives the contiguous copy's bits
# --------------------------------------------------------------------------

def layouts(a):
    """(name, array) pairs holding the values of ``a`` in other memory layouts."""
    ro = a.copy()
    ro.setflags(write=False)
    yield "read-only", ro
    yield "fortran", np.asfortranarray(a)
    rev = np.ascontiguousarray(a[..., ::-1])[..., ::-1]  # negative last stride
    yield "negative-stride", rev
    if a.ndim == 4:
        flip = (slice(None, None, -1),) * 4
        yield "all-reversed", np.ascontiguousarray(a[flip])[flip]
        nhwc = np.ascontiguousarray(a.transpose(0, 2, 3, 1))
        yield "channels-last-view", nhwc.transpose(0, 3, 1, 2)
    big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
    view = big[tuple(slice(1, None, 2) for _ in a.shape)]
    view[...] = a
    yield "strided-view", view


def check_layouts(func, args, what):
    """func(*args) gives the same bits when any one array argument changes layout."""
    want = func(*args)
    for pos, a in enumerate(args):
        if not isinstance(a, np.ndarray):
            continue
        for name, variant in layouts(a):
            assert np.array_equal(variant, a)
            got = func(*args[:pos], variant, *args[pos + 1:])
            for g, w in zip(as_tuple(got), as_tuple(want), strict=True):
                assert_bitwise_equal(g, w, f"{what}: argument {pos} {name}")


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_layouts(dtype, rng):
    c = CONV["grouped_strided"]
    x, w, b, g = conv_inputs(c, dtype, rng)
    kw = conv_args(c)
    check_layouts(lambda x, w, b: fastconv.conv2d(x, w, b, **kw), (x, w, b), "conv2d")
    check_layouts(lambda g, x, w: fastconv.conv2d_backward(g, x, w, **kw), (g, x, w),
                  "conv2d_backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_layouts(dtype, rng):
    c = POOL["3x3_s2_p1"]
    kw = pool_args(c)
    x = rng.standard_normal(c["x"]).astype(dtype)
    y, idx = fastconv.max_pool2d(x, **kw, return_indices=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    check_layouts(lambda x: fastconv.max_pool2d(x, **kw, return_indices=True), (x,),
                  "max_pool2d")
    check_layouts(lambda g, i: fastconv.max_pool2d_backward(g, i, x.shape), (g, idx),
                  "max_pool2d_backward")
    check_layouts(lambda x: fastconv.avg_pool2d(x, **kw), (x,), "avg_pool2d")
    check_layouts(lambda g: fastconv.avg_pool2d_backward(g, x.shape, **kw), (g,),
                  "avg_pool2d_backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_not_written(dtype, rng):
    c = CONV["dense"]
    x, w, b, g = conv_inputs(c, dtype, rng)
    keep = [a.copy() for a in (x, w, b, g)]
    fastconv.conv2d(x, w, b, **conv_args(c))
    fastconv.conv2d_backward(g, x, w, **conv_args(c))
    p = POOL["3x3_s2_p1"]
    xp = rng.standard_normal(p["x"]).astype(dtype)
    y, idx = fastconv.max_pool2d(xp, **pool_args(p), return_indices=True)
    gp = rng.standard_normal(y.shape).astype(dtype)
    keep += [a.copy() for a in (xp, idx, gp)]
    fastconv.max_pool2d_backward(gp, idx, xp.shape)
    fastconv.avg_pool2d(xp, **pool_args(p))
    fastconv.avg_pool2d_backward(gp, xp.shape, **pool_args(p))
    for a, k in zip((x, w, b, g, xp, idx, gp), keep):
        assert_bitwise_equal(a, k, "input modified")


# --------------------------------------------------------------------------
# out= buffers
# --------------------------------------------------------------------------

def garbage_like(a):
    """A buffer for ``a`` full of NaN (or junk ints): a kernel must overwrite it."""
    buf = np.empty_like(a)
    buf[...] = np.nan if a.dtype.kind == "f" else -12345
    return buf


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_buffers_are_filled_and_returned(dtype, rng):
    c = CONV["grouped_strided"]
    x, w, b, g = conv_inputs(c, dtype, rng)
    kw = conv_args(c)

    y = fastconv.conv2d(x, w, b, **kw)
    buf = garbage_like(y)
    assert fastconv.conv2d(x, w, b, **kw, out=buf) is buf
    assert_bitwise_equal(buf, y, "conv2d out")

    grads = fastconv.conv2d_backward(g, x, w, **kw)
    bufs = tuple(garbage_like(a) for a in grads)
    got = fastconv.conv2d_backward(g, x, w, **kw, out=bufs)
    for a, bb, want, what in zip(got, bufs, grads, ("grad_x", "grad_weight", "grad_bias")):
        assert a is bb, f"conv2d_backward did not return out buffer for {what}"
        assert_bitwise_equal(a, want, f"conv2d_backward out {what}")
    # entries may be None: those are allocated
    got = fastconv.conv2d_backward(g, x, w, **kw, out=(None, bufs[1], None))
    assert got[1] is bufs[1]
    for a, want in zip(got, grads):
        assert_bitwise_equal(a, want, "conv2d_backward partial out")

    p = POOL["3x3_s2_p1"]
    xp = rng.standard_normal(p["x"]).astype(dtype)
    y, idx = fastconv.max_pool2d(xp, **pool_args(p), return_indices=True)
    gp = rng.standard_normal(y.shape).astype(dtype)
    for func, args, kwargs in (
        (fastconv.max_pool2d, (xp,), pool_args(p)),
        (fastconv.max_pool2d_backward, (gp, idx, xp.shape), {}),
        (fastconv.avg_pool2d, (xp,), pool_args(p)),
        (fastconv.avg_pool2d_backward, (gp, xp.shape), pool_args(p)),
    ):
        want = func(*args, **kwargs)
        buf = garbage_like(want)
        assert func(*args, **kwargs, out=buf) is buf, func.__name__
        assert_bitwise_equal(buf, want, f"{func.__name__} out")


def test_wrong_out_buffers_raise(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    y = fastconv.conv2d(x, w)
    g = np.ones_like(y)
    with pytest.raises(ValueError, match="out"):
        fastconv.conv2d(x, w, out=np.empty((2, 4, 4, 5)))
    with pytest.raises(ValueError, match="out"):
        fastconv.conv2d(x, w, out=np.empty((2, 4, 16)))
    with pytest.raises(TypeError, match="out"):
        fastconv.conv2d(x, w, out=np.empty(y.shape, np.float32))
    ro = np.empty(y.shape)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out"):
        fastconv.conv2d(x, w, out=ro)
    with pytest.raises(ValueError, match="out"):
        fastconv.conv2d_backward(g, x, w, out=(np.empty((2, 3, 6, 5)), None, None))
    with pytest.raises(TypeError, match="out"):
        fastconv.conv2d_backward(g, x, w, out=(None, np.empty(w.shape, np.float32), None))
    with pytest.raises(ValueError, match="out"):
        fastconv.conv2d_backward(g, x, w, out=(None, None, np.empty(5)))
    with pytest.raises(ValueError, match="out"):
        fastconv.max_pool2d(x, 2, out=np.empty((2, 3, 2, 2)))
    with pytest.raises(TypeError, match="out"):
        fastconv.avg_pool2d(x, 2, out=np.empty((2, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="out"):
        fastconv.avg_pool2d_backward(np.ones((2, 3, 3, 3)), x.shape, 2,
                                     out=np.empty((2, 3, 6, 7)))
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(TypeError, match="out"):
        fastconv.max_pool2d_backward(np.ones((2, 3, 3, 3)), idx, x.shape,
                                     out=np.empty(x.shape, np.float32))


def _strided_out_cases(rng):
    """(function name, call(out=...) taking a strided view, result shape) per out= buffer."""
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    g = np.ones(fastconv.conv2d_output_shape(x.shape, w.shape))
    p = np.ones((2, 3, 3, 3))
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    yield "conv2d", "out", lambda o: fastconv.conv2d(x, w, out=o), g.shape
    for i, shape in enumerate((x.shape, w.shape, (4,))):
        outs = [None, None, None]

        def call(o, i=i, outs=outs):
            outs[i] = o
            return fastconv.conv2d_backward(g, x, w, out=tuple(outs))

        yield "conv2d_backward", f"out[{i}]", call, shape
    yield "max_pool2d", "out", lambda o: fastconv.max_pool2d(x, 2, out=o), p.shape
    yield "avg_pool2d", "out", lambda o: fastconv.avg_pool2d(x, 2, out=o), p.shape
    yield ("max_pool2d_backward", "out",
           lambda o: fastconv.max_pool2d_backward(p, idx, x.shape, out=o), x.shape)
    yield ("avg_pool2d_backward", "out",
           lambda o: fastconv.avg_pool2d_backward(p, x.shape, 2, out=o), x.shape)
    yield "relu", "out", lambda o: fastconv.relu(x, out=o), x.shape


def test_non_contiguous_out_is_refused_and_left_untouched(rng):
    """functional's documented rule: an out= buffer must be C-contiguous, else
    ValueError naming the function and the argument, before anything is written."""
    for fn, name, call, shape in _strided_out_cases(rng):
        big = np.full(shape[:-1] + (2 * shape[-1],), np.nan)
        with pytest.raises(ValueError) as info:
            call(big[..., ::2])
        assert str(info.value) == f"{fn}: {name} must be a writeable C-contiguous array"
        assert np.isnan(big).all(), f"{fn} wrote into a buffer it refused"
