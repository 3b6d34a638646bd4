"""Strides, windows and padding far past the input: right results, bounded
scratch, or a clear ValueError; never an overflow.

Regression tests for the geometry-overflow issue: a stride of 2**30 made the
stride-phase scratch size of conv2d wrap (SIGSEGV in pad_phase_copy), a stride
of ~1.3e9 did the same to pooling's phase split (split_phases), a huge pooling
window allocated and walked kh*kw taps, and below the overflow the phase split
grew with stride squared (2x4x9x8 input, stride 8192: 7.9 s, 2.1 GB). PyTorch is
the oracle: a stride past the input leaves one output reading the first window.

The geometry fuzz at the end runs a fast default size; ``FASTCONV_GEOMETRY_FUZZ=N``
sets the number of cases, and ``-m slow`` runs a long one. ``scripts/sanitize.sh``
runs this file under ASan + UBSan.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
from fastconv import nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def close(got, want, dtype):
    """Relative to the largest expected magnitude (pool averages can be ~1e-18)."""
    want = np.asarray(want, dtype=np.float64)
    scale = max(np.abs(want).max(initial=0.0), np.finfo(dtype).tiny)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=TOL[dtype],
                               atol=TOL[dtype] * scale)


def t(a, grad=False):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def torch_conv(x, w, b, gy, **kw):
    """Forward and (grad_input, grad_weight, grad_bias), in float64."""
    xt, wt, bt = t(x, True), t(w, True), t(b, True)
    y = TF.conv2d(xt, wt, bt, **kw)
    y.backward(t(gy))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def check_conv(x, w, b, stride, padding=0, dilation=1, groups=1):
    dtype = x.dtype.type
    y = fastconv.conv2d(x, w, b, stride, padding, dilation, groups)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    got = (y,) + fastconv.conv2d_backward(gy, x, w, stride, padding, dilation, groups)
    want = torch_conv(x, w, b, gy, stride=stride, padding=padding, dilation=dilation,
                      groups=groups)
    for g, e in zip(got, want):
        assert g.shape == e.shape
        close(g, e, dtype)
    return got


def torch_pool(kind, x, gy, kernel_size, stride, padding, count_include_pad=True):
    xt = t(x, True)
    if kind == "max":
        y, idx = TF.max_pool2d(xt, kernel_size, stride, padding, return_indices=True)
    else:
        y = TF.avg_pool2d(xt, kernel_size, stride, padding,
                          count_include_pad=count_include_pad)
        idx = None
    y.backward(t(gy))
    return y.detach().numpy(), None if idx is None else idx.numpy(), xt.grad.numpy()


def window_pool(kind, x, gy, kernel_size, stride, padding, count_include_pad=True):
    """Pooling one window at a time, each clipped to the input first: an oracle
    whose cost does not depend on the window size (PyTorch walks the whole
    window, 14 s for one 2**30-wide stride-1 pooling of a 3x5 plane). Float64.
    Follows PyTorch: the first maximum in raster order wins; the average divides
    by the window clipped to the padded input (count_include_pad) or the input."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    (kh, kw), (ph, pw) = pair(kernel_size), pair(padding)
    sh, sw = pair(kernel_size if stride is None else stride)
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    x = x.astype(np.float64)
    y, idx = np.empty((n, c, ho, wo)), np.empty((n, c, ho, wo), np.int64)
    gx = np.zeros(x.shape)
    for oh in range(ho):
        a = oh * sh - ph
        a1 = min(a + kh, h + ph)
        r0, r1 = max(a, 0), min(a1, h)
        for ow in range(wo):
            b = ow * sw - pw
            b1 = min(b + kw, w + pw)
            q0, q1 = max(b, 0), min(b1, w)
            win = x[:, :, r0:r1, q0:q1].reshape(n, c, -1)
            g = gy[:, :, oh, ow].astype(np.float64)
            if kind == "max":
                arg = win.argmax(axis=2)
                y[:, :, oh, ow] = np.take_along_axis(win, arg[..., None], 2)[..., 0]
                rows, cols = r0 + arg // (q1 - q0), q0 + arg % (q1 - q0)
                idx[:, :, oh, ow] = rows * w + cols
                for i in range(n):
                    for j in range(c):
                        gx[i, j, rows[i, j], cols[i, j]] += g[i, j]
            else:
                div = (a1 - a) * (b1 - b) if count_include_pad else (r1 - r0) * (q1 - q0)
                y[:, :, oh, ow] = win.sum(axis=2) / div
                gx[:, :, r0:r1, q0:q1] += (g / div)[:, :, None, None]
    return y, (idx if kind == "max" else None), gx


def check_pool(kind, x, kernel_size, stride, padding=0, count_include_pad=True,
               oracle=window_pool):
    """Forward and backward of one pooling against an oracle (inputs without ties)."""
    dtype = x.dtype.type
    if kind == "max":
        y, idx = fastconv.max_pool2d(x, kernel_size, stride, padding, return_indices=True)
        gy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
        gx = fastconv.max_pool2d_backward(gy, idx, x.shape)
    else:
        y = fastconv.avg_pool2d(x, kernel_size, stride, padding,
                                count_include_pad=count_include_pad)
        gy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
        gx = fastconv.avg_pool2d_backward(gy, x.shape, kernel_size, stride, padding,
                                          count_include_pad=count_include_pad)
        idx = None
    wy, widx, wgx = oracle(kind, x, gy, kernel_size, stride, padding, count_include_pad)
    assert y.shape == wy.shape and gx.shape == wgx.shape
    close(y, wy, dtype)
    close(gx, wgx, dtype)
    if idx is not None:
        np.testing.assert_array_equal(idx, widx)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("geom", [(3, 2, 1), ((2, 5), (3, 1), (1, 2)), (7, 100, 3),
                                  ((1, 4), (50, 2), (0, 2)), (9, 1, 4)])
def test_window_oracle_agrees_with_torch(kind, geom):
    x = np.random.default_rng(8).standard_normal((2, 2, 5, 6))
    gy_shape = TF.avg_pool2d(t(x), *geom).shape
    gy = np.random.default_rng(9).standard_normal(tuple(gy_shape))
    for cip in (True, False):
        want = torch_pool(kind, x, gy, *geom, count_include_pad=cip)
        got = window_pool(kind, x, gy, *geom, count_include_pad=cip)
        for g, e in zip(got, want):
            if e is not None:
                np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- reproducers --
@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_conv2d_stride_2_30_overflowed_phase_scratch(dtype):
    # was: SIGSEGV, heap-buffer-overflow write in pad_phase_copy (forward and both
    # backward passes)
    x = np.ones((1, 4, 1, 1), dtype)
    y = fastconv.conv2d(x, x, stride=2**30)
    np.testing.assert_array_equal(y, np.full((1, 1, 1, 1), 4, dtype))
    check_conv(x, x, np.zeros(1, dtype), stride=2**30)
    check_conv(x, x, np.ones(1, dtype), stride=(1, 2**31 - 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_avg_pool2d_huge_stride_wild_write(dtype):
    # was: SIGSEGV, wild write in split_phases_f64
    x = np.ones((1, 1, 2, 2), dtype)
    y = fastconv.avg_pool2d(x, 1, stride=(1263665316, 1824726041))
    np.testing.assert_array_equal(y, np.ones((1, 1, 1, 1), dtype))
    for kind in ("avg", "max"):
        for oracle in (window_pool, torch_pool):
            check_pool(kind, np.arange(4, dtype=dtype).reshape(1, 1, 2, 2), 1,
                       (1263665316, 1824726041), oracle=oracle)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_regression_pool_huge_window_and_padding(kind, dtype):
    # was: a kh*kw (2**60) tap table and tap loop, and 32-bit tap numbers wrapping
    x = np.random.default_rng(3).standard_normal((2, 3, 3, 5)).astype(dtype)
    check_pool(kind, x, 2**30, None, 2**29)
    check_pool(kind, x, 8, 2**30, 4, oracle=torch_pool)
    check_pool(kind, x, (2**31 - 1, 4), (5, 2**31 - 1), (2**30 - 1, 2))
    check_pool(kind, x, (2**30, 2**30 + 1), 1, 2**29)  # stride 1: every tap offset
    if kind == "avg":
        check_pool(kind, x, 2**30, 3, 2**29, count_include_pad=False)
    else:  # all -inf: each index is the first input element of its window
        ninf = np.full((1, 2, 4, 3), -np.inf, dtype)
        check_pool(kind, ninf, (2**30, 5), (2, 1), (2**29, 2))
        check_pool(kind, ninf, 3, 2, 1, oracle=torch_pool)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_avg_pool2d_backward_huge_stride(dtype):
    gy = np.array([[[[2.0]]]], dtype)
    gx = fastconv.avg_pool2d_backward(gy, (1, 1, 3, 4), 2, stride=(2**31 - 1, 2**30))
    want = np.zeros((1, 1, 3, 4), dtype)
    want[0, 0, :2, :2] = 0.5
    np.testing.assert_array_equal(gx, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [8192, 16384, (3, 2**20), 2**31 - 1])
def test_regression_conv_stride_past_input_matches_torch(stride, dtype):
    # 8192 took 7.9 s and 2.1 GB; 16384 about 8 GB
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
    for w, groups in ((rng.standard_normal((3, 4, 3, 3)), 1),
                      (rng.standard_normal((8, 1, 2, 3)), 4),  # grad-input's col2im route
                      (rng.standard_normal((32, 4, 1, 1)), 1)):
        check_conv(x, w.astype(dtype), rng.standard_normal(w.shape[0]).astype(dtype),
                   stride, padding=(1, 2), groups=groups)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2**30])
def test_regression_col2im_grad_input_read_past_grad_out_for_1x1_outputs(stride, dtype):
    # ASan: heap-buffer-overflow read in bwd_data_col2im (ukr) past the end of
    # grad_out when an image of grad_out (32 x 1 x 1 here) is shorter than a
    # column tile: only the last image had a padded copy. Also at stride 1.
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 4, 3, 3)).astype(dtype)
    w = rng.standard_normal((32, 4, 3, 3)).astype(dtype)
    check_conv(x, w, rng.standard_normal(32).astype(dtype), stride)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_nn_conv2d_with_huge_stride_and_its_model_file(dtype, tmp_path):
    layer = nn.Conv2d(4, 1, 1, stride=2**30, rng=np.random.default_rng(5), dtype=dtype)
    x = np.random.default_rng(6).standard_normal((2, 4, 3, 3)).astype(dtype)
    layer.needs_input_grad = True
    y = layer(x)
    gx = layer.backward(np.ones_like(y))
    w, b = layer.weight.data, layer.bias.data
    want = torch_conv(x, w, b, np.ones_like(y), stride=2**30)
    close(y, want[0], dtype)
    close(gx, want[1], dtype)
    close(layer.weight.grad, want[2], dtype)
    model = nn.Sequential([layer])
    path = tmp_path / "huge_stride.npz"
    model.save(path)
    loaded = fastconv.load_model(path, compile=False)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_stride_past_extent_is_thread_count_independent(restore_threads):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 11, 10)).astype(np.float32)
    w = rng.standard_normal((5, 6, 3, 2)).astype(np.float32)
    gy = rng.standard_normal((3, 5, 1, 1)).astype(np.float32)
    runs = []
    for nt in (1, 2):
        fastconv.set_num_threads(nt)
        runs.append((fastconv.conv2d(x, w, stride=2**30, padding=1),)
                    + fastconv.conv2d_backward(gy, x, w, stride=2**30, padding=1)
                    + fastconv.max_pool2d(x, 2**20, 2**30, 2**19, return_indices=True)
                    + (fastconv.avg_pool2d(x, 3, 2**30, 1),))
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


# ----------------------------------------------------------------- refusals --
def test_padding_far_wider_than_the_kernel_is_refused_not_allocated():
    x = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"conv2d: padding 1048576 would need a scratch"):
        fastconv.conv2d(x, x, stride=2**20, padding=2**20)
    with pytest.raises(ValueError, match="conv2d_backward: padding"):
        fastconv.conv2d_backward(np.ones((1, 1, 3, 3), np.float32), x, x, stride=2**20,
                                 padding=2**20)
    with pytest.raises(ValueError, match="conv2d_output_shape: padding"):
        fastconv.conv2d_output_shape((1, 1, 1, 1), (1, 1, 1, 1), 2**20, 2**20)
    # the same padding is fine where the output is as large as the padded input
    assert fastconv.conv2d_output_shape((1, 1, 1, 1), (1, 1, 1, 1), 1, 2**10) == (
        1, 1, 2**11 + 1, 2**11 + 1)


def test_pool_window_touching_2_32_input_positions_is_refused():
    # input_shape only: nothing of that size is ever allocated
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: kernel_size 262144 covers "
                                         r"17179869184 positions"):
        fastconv.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2**17, 2**17), 2**18,
                                     padding=2**17)


@pytest.mark.parametrize("fn", [fastconv.max_pool2d, fastconv.avg_pool2d])
def test_pool_of_an_empty_plane_is_refused(fn):
    # was: -inf and indices into an empty plane; PyTorch refuses it too
    with pytest.raises(ValueError, match="height and width must be >= 1"):
        fn(np.zeros((1, 1, 0, 4)), 2, padding=1)
    assert fn(np.zeros((0, 1, 0, 4)), 2, padding=1).shape == (0, 1, 1, 3)


# ------------------------------------------------------------ scratch bound --
RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import fastconv

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((3, 4, 3, 3))
    def calls(s):
        for dt in (np.float32, np.float64):
            xx, ww = x.astype(dt), w.astype(dt)
            y = fastconv.conv2d(xx, ww, stride=s, padding=1)
            fastconv.conv2d_backward(np.ones_like(y), xx, ww, stride=s, padding=1)
            p, i = fastconv.max_pool2d(xx, 3, s, 1, return_indices=True)
            fastconv.max_pool2d_backward(p, i, xx.shape)
            a = fastconv.avg_pool2d(xx, 3, s, 1)
            fastconv.avg_pool2d_backward(a, xx.shape, 3, s, 1)
    calls(1)  # warm-up: code pages, thread pool, scratch pool
    base = peak_kib()
    for s in STRIDES:
        calls(s)
    print(peak_kib() - base)
""")


def peak_growth_kib(strides):
    script = RSS_SCRIPT.replace("STRIDES", repr(strides))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_scratch_does_not_grow_with_stride():
    # before the fix, stride 8192 alone raised the peak RSS by ~2 GB (16384: ~8 GB)
    growth = peak_growth_kib([8192, 16384, (2**31 - 1, 5)])
    assert growth < 32 * 1024, f"peak RSS grew by {growth} KiB"


# ------------------------------------------------------------ geometry fuzz --
def _fuzz_cases():
    n = int(os.environ.get("FASTCONV_GEOMETRY_FUZZ", "120"))
    return n


def _stride(rng, extent):
    """Ordinary, around the extent, or huge."""
    r = rng.random()
    if r < 0.3:
        return int(rng.integers(1, 4))
    if r < 0.6:
        return int(min(rng.integers(max(extent - 2, 1), extent + 3), 2**31 - 1))
    return int(min(2**31 - 1, 2 ** rng.uniform(4, 31)))


def _big(rng, lo, hi):
    """A log-uniform int in [lo, hi]."""
    return int(min(hi, max(lo, round(2 ** rng.uniform(np.log2(max(lo, 1)), np.log2(hi))))))


def _fuzz_conv(rng, dtype):
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    groups = int(rng.choice([1, c]))
    k = groups * int(rng.integers(1, 5))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    pads, dils = [], []
    for size, ks in ((h, kh), (w, kw)):
        p = int(rng.integers(0, 3)) if rng.random() < 0.6 else _big(rng, 1, 2**31 - 1)
        d_max = max(1, (size + 2 * p - 1) // max(ks - 1, 1))
        d = 1 if rng.random() < 0.5 or ks == 1 else _big(rng, 1, min(d_max, 2**31 - 1))
        if d * (ks - 1) + 1 > size + 2 * p:  # keep the window inside the padded input
            p = (d * (ks - 1) + 1 - size + 1) // 2
        pads.append(p)
        dils.append(d)
    # strides from ordinary to huge, but never so short that a wide padding
    # makes an output of millions of elements (that is a size test, not this one)
    stride = tuple(max(_stride(rng, e), -(-e // 16))
                   for e in (h + 2 * pads[0], w + 2 * pads[1]))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    args = dict(stride=stride, padding=tuple(pads), dilation=tuple(dils), groups=groups)
    try:
        fastconv.conv2d_output_shape(x.shape, wt.shape, **args)
    except ValueError as e:  # only an out-of-proportion padded copy may be refused
        assert ("padding" in str(e) and "scratch" in str(e)
                or "padded input would have" in str(e)), (args, e)
        return "refused"
    check_conv(x, wt, b, **args)
    return "ok"


def _fuzz_pool(rng, dtype, kind):
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    ks, ps, ss = [], [], []
    for size in (h, w):
        k = int(rng.integers(1, 5)) if rng.random() < 0.5 else _big(rng, 1, 2**31 - 1)
        lo = max(0, -(-(k - size) // 2))  # the window must fit the padded input
        p = int(rng.integers(lo, k // 2 + 1))
        ks.append(k)
        ps.append(p)
        ss.append(_stride(rng, size))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    stride = None if rng.random() < 0.2 else tuple(ss)
    check_pool(kind, x, tuple(ks), stride, tuple(ps), count_include_pad=bool(rng.random() < 0.5))
    return "ok"


def run_fuzz(cases, seed):
    rng = np.random.default_rng(seed)
    seen = {}
    for i in range(cases):
        dtype = DTYPES[i % 2]
        kind = ("conv", "max", "avg")[i % 3]
        state = rng.bit_generator.state
        try:
            r = (_fuzz_conv(rng, dtype) if kind == "conv" else _fuzz_pool(rng, dtype, kind))
        except AssertionError as e:
            raise AssertionError(f"case {i} ({kind}, {dtype.__name__}), rng state "
                                 f"{state['state']}: {e}") from None
        seen[kind, r] = seen.get((kind, r), 0) + 1
    return seen


def test_geometry_fuzz_huge_strides_windows_padding():
    seen = run_fuzz(_fuzz_cases(), seed=20261130)
    assert seen.get(("conv", "ok"), 0) > 0 and seen.get(("max", "ok"), 0) > 0


@pytest.mark.slow
def test_geometry_fuzz_long():
    run_fuzz(int(os.environ.get("FASTCONV_GEOMETRY_FUZZ", "3000")), seed=1130)
