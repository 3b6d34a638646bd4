"""The dense-layer kernels: fastconv.linear / linear_backward and the GEMM under them.

The oracle is NumPy's matmul in float64 (a different code path: BLAS), and
PyTorch's linear for the conventions. Every SIMD level, every transpose case of
the internal fc_gemm, odd sizes that leave tails in both tile dimensions, out=,
accumulate, bad input, and 1 vs 2 threads bit for bit.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _kernels
from fastconv import functional as F
from fastconv import nn

from workloads import fixed_team, parallel_regions


# relative to the largest |value| of the result (sums of up to ~3000 products)
TOL = {np.float64: 1e-13, np.float32: 2e-6}

# (N, in_features, out_features): tails in every dimension, one of everything,
# the MNIST CNN's big layer and LeNet's small ones
SHAPES = [
    (1, 1, 1),
    (7, 17, 33),
    (17, 33, 7),
    (33, 129, 17),
    (3, 1000, 129),
    (129, 7, 1001),
    (64, 400, 120),
    (64, 84, 10),
]
BIG = (64, 3136, 1024)  # the MNIST CNN's dense layer: at the default SIMD level only


# the `simd` fixture (every supported SIMD level) is in conftest.py


def close(got, want, dtype, what="", scale=None):
    """Max error relative to ``scale``: the largest |result|, or the largest sum of
    |terms| when the caller passes it (a few terms can cancel to near zero)."""
    want = np.asarray(want, dtype=np.float64)
    if not want.size:
        assert got.size == 0
        return
    if scale is None:
        scale = float(np.abs(want).max())
    scale = max(float(np.max(scale)), 1e-30)
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]}"


def data(rng, n, i, o, dtype):
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    gy = rng.standard_normal((n, o)).astype(dtype)
    return x, w, b, gy


def f64(a):
    return a.astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_matches_matmul(shape, dtype, simd, rng):
    check_linear(shape, dtype, rng)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_big_linear_matches_matmul(dtype, rng):
    check_linear(BIG, dtype, rng)


def check_linear(shape, dtype, rng):
    n, i, o = shape
    x, w, b, gy = data(rng, n, i, o, dtype)
    ax, aw, ab, agy = (np.abs(f64(v)) for v in (x, w, b, gy))
    close(F.linear(x, w, b), f64(x) @ f64(w).T + f64(b), dtype, "y", ax @ aw.T + ab)
    close(F.linear(x, w), f64(x) @ f64(w).T, dtype, "y without bias", ax @ aw.T)
    gx, gw, gb = F.linear_backward(gy, x, w)
    close(gx, f64(gy) @ f64(w), dtype, "grad_input", agy @ aw)
    close(gw, f64(gy).T @ f64(x), dtype, "grad_weight", agy.T @ ax)
    close(gb, f64(gy).sum(axis=0), dtype, "grad_bias", agy.sum(axis=0))
    for a in (gx, gw, gb):
        assert a.dtype == dtype


# Forced route choices (the private hook _kernels.set_route_override) select
# every route of the driver: operands packed or read in place, many reduction
# blocks, one task.
ROUTES = {
    "default": {},
    "in_place": {"gemm_packa": 0, "gemm_packb": 0},
    "kc16": {"gemm_kc": 16},
    "one_task_slot0": {"gemm_tasks": 1, "gemm_slot": 0},
}


@pytest.fixture(params=sorted(ROUTES))
def route(request, route_override):
    for k, v in ROUTES[request.param].items():
        route_override(k, v)
    return request.param


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("transa,transb", list(itertools.product((False, True), repeat=2)))
@pytest.mark.parametrize("mnk", [(1, 1, 1), (7, 17, 33), (129, 33, 17), (33, 129, 1000),
                                 (65, 1001, 9)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias_mode", [0, 1, 2])
def test_gemm_every_transpose(mnk, transa, transb, bias_mode, dtype, simd, rng):
    m, n, k = mnk
    a = rng.standard_normal((k, m) if transa else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transb else (k, n)).astype(dtype)
    bias = rng.standard_normal(n if bias_mode == 1 else m).astype(dtype)
    opa = f64(a).T if transa else f64(a)
    opb = f64(b).T if transb else f64(b)
    want = opa @ opb
    scale = np.abs(opa) @ np.abs(opb)
    if bias_mode == 1:
        want += f64(bias)[None, :]
        scale += np.abs(f64(bias))[None, :]
    elif bias_mode == 2:
        want += f64(bias)[:, None]
        scale += np.abs(f64(bias))[:, None]
    c = np.full((m, n), np.nan, dtype)
    _kernels.gemm(transa, transb, a, b, bias if bias_mode else None, bias_mode, False, 2, c)
    close(c, want, dtype, "C =", scale)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    c = c0.copy()
    _kernels.gemm(transa, transb, a, b, bias if bias_mode else None, bias_mode, True, 2, c)
    close(c, want + f64(c0), dtype, "C +=", scale + np.abs(f64(c0)))


@pytest.mark.parametrize("transa,transb", list(itertools.product((False, True), repeat=2)))
@pytest.mark.parametrize("mnk", [(7, 17, 33), (129, 33, 17), (33, 129, 1000), (65, 1001, 9)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gemm_routes(mnk, transa, transb, route, rng):
    test_gemm_every_transpose(mnk, transa, transb, 1, np.float64, None, rng)


def test_linear_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, w, b, gy = data(rng, 5, 11, 3, np.float64)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(gy))
    close(F.linear(x, w, b), ty.detach().numpy(), np.float64, "y")
    gx, gw, gb = F.linear_backward(gy, x, w)
    close(gx, tx.grad.numpy(), np.float64, "gx")
    close(gw, tw.grad.numpy(), np.float64, "gw")
    close(gb, tb.grad.numpy(), np.float64, "gb")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_out_mask_and_accumulate(dtype, rng):
    x, w, b, gy = data(rng, 9, 130, 70, dtype)
    y = np.empty((9, 70), dtype)
    assert F.linear(x, w, b, out=y) is y
    close(y, f64(x) @ f64(w).T + f64(b), dtype, "out=")
    gx = np.empty_like(x)
    gw0 = rng.standard_normal(w.shape).astype(dtype)
    gb0 = rng.standard_normal(b.shape).astype(dtype)
    gw, gb = gw0.copy(), gb0.copy()
    r = F.linear_backward(gy, x, w, out=(gx, gw, gb), accumulate=True)
    assert r[0] is gx and r[1] is gw and r[2] is gb
    close(gw, f64(gw0) + f64(gy).T @ f64(x), dtype, "grad_weight +=")
    close(gb, f64(gb0) + f64(gy).sum(axis=0), dtype, "grad_bias +=")
    assert F.linear_backward(gy, x, w, output_mask=(False, False, False)) == (None, None, None)
    gx2, gw2, gb2 = F.linear_backward(gy, x, w, output_mask=(True, False, True))
    assert gw2 is None
    np.testing.assert_array_equal(gx2, gx)


def test_non_contiguous_and_read_only_inputs(rng):
    x, w, b, gy = data(rng, 6, 40, 30, np.float64)
    xf, wf = np.asfortranarray(x), np.asfortranarray(w)
    for arr in (xf, wf, b, gy):
        arr.flags.writeable = False
    want = F.linear(x, w, b)
    np.testing.assert_array_equal(F.linear(xf, wf, b), want)
    np.testing.assert_array_equal(F.linear(x[::-1][::-1], w, b), want)
    for got, ref in zip(F.linear_backward(gy, xf, wf), F.linear_backward(gy, x, w)):
        np.testing.assert_array_equal(got, ref)


def test_empty_sizes(rng):
    x = np.zeros((0, 5)); w = np.ones((3, 5)); b = np.arange(3.0)
    assert F.linear(x, w, b).shape == (0, 3)
    gx, gw, gb = F.linear_backward(np.zeros((0, 3)), x, w)
    assert gx.shape == (0, 5) and not gw.any() and not gb.any()
    x = np.zeros((4, 0)); w = np.zeros((3, 0))
    np.testing.assert_array_equal(F.linear(x, w, b), np.tile(b, (4, 1)))
    gy = rng.standard_normal((4, 3))
    gx, gw, gb = F.linear_backward(gy, x, w)
    assert gx.shape == (4, 0) and gw.shape == (3, 0)
    np.testing.assert_allclose(gb, gy.sum(axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 3136, 1024), (37, 1001, 129)],
                         ids=lambda s: "x".join(map(str, s)))
def test_thread_count_does_not_change_a_bit(shape, dtype, rng, restore_threads):
    x, w, b, gy = data(rng, *shape, dtype)
    acc0 = rng.standard_normal(w.shape).astype(dtype)

    def run():
        gw = acc0.copy()
        gb = np.zeros_like(b)
        gx = F.linear_backward(gy, x, w, out=(None, gw, gb), accumulate=True)[0]
        return F.linear(x, w, b), gx, gw, gb

    fastconv.set_num_threads(1)
    serial = run()
    for threads in (2, 3):
        fastconv.set_num_threads(threads)
        team = threads if fastconv.openmp_enabled() else 1
        with fixed_team():
            before = parallel_regions()
            got = run()
            # both products ran on the team asked for, not serially
            assert fastconv.info()["team"]["threads_last_call"] == team
            assert parallel_regions() - before >= (2 if team > 1 else 0)
        for g, want in zip(got, serial):
            assert g.tobytes() == want.tobytes(), f"{threads} threads vs 1"


# (in_features, out_features): LeNet-5's and the MNIST CNN's layers, a reduction
# longer than one block (3000 > 2048) with a few outputs, where the kernel slot and
# whether the weight is packed change with the batch size
INVARIANT_SHAPES = [(400, 120), (84, 10), (3136, 1024), (3000, 2), (1000, 129)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("features", INVARIANT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_rows_do_not_depend_on_the_batch(features, dtype, simd, rng):
    """Regression: a row of linear(x) changed with the batch size and the row's place.

    The GEMM's reduction block followed the kernel slot and the weight packing,
    both chosen from the batch size, so predict() in chunks differed from one
    call on the whole set in the last bits. Now every row is bitwise the same
    in any batch, at every position, at every SIMD level.
    """
    i, o = features
    x, w, b, _ = data(rng, 300, i, o, dtype)
    full = F.linear(x, w, b)
    for n in (1, 2, 3, 7, 16, 47, 48, 64, 100, 129, 256):
        for start in sorted({0, 300 - n, int(rng.integers(0, 300 - n + 1))}):
            got = F.linear(x[start:start + n], w, b)
            assert got.tobytes() == full[start:start + n].tobytes(), \
                f"rows {start}..{start + n - 1} in a batch of {n} differ from the batch of 300"


def test_bad_input():
    x = np.zeros((4, 5), np.float32)
    w = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match="linear: input must be 2-D"):
        F.linear(np.zeros((4, 5, 1), np.float32), w)
    with pytest.raises(ValueError, match="linear: weight must be 2-D"):
        F.linear(x, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="expects input with 5 features"):
        F.linear(np.zeros((4, 6), np.float32), w)
    with pytest.raises(TypeError, match="linear: weight has dtype float64"):
        F.linear(x, w.astype(np.float64))
    with pytest.raises(TypeError, match="linear: input must have dtype float32 or float64"):
        F.linear(x.astype(np.int32), w)
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(3,\)"):
        F.linear(x, w, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="linear: bias has dtype"):
        F.linear(x, w, np.zeros(3))
    with pytest.raises(ValueError, match=r"linear: out must have shape \(4, 3\)"):
        F.linear(x, w, out=np.zeros((3, 4), np.float32))
    sq = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="linear: out must not overlap input"):
        F.linear(sq, np.zeros((3, 3), np.float32), out=sq)
    gy = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="grad_out must have the linear output shape"):
        F.linear_backward(np.zeros((4, 4), np.float32), x, w)
    with pytest.raises(ValueError, match="output_mask must be 3 bools"):
        F.linear_backward(gy, x, w, output_mask=(True, True))
    with pytest.raises(TypeError, match="out must be a tuple of 3"):
        F.linear_backward(gy, x, w, out=np.zeros(3))
    with pytest.raises(ValueError, match=r"accumulate=True adds into out\[1\]"):
        F.linear_backward(gy, x, w, accumulate=True)
    with pytest.raises(TypeError, match=r"out\[1\] must have dtype float32"):
        F.linear_backward(gy, x, w, out=(None, np.zeros((3, 5)), None))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nn_linear_matches_numpy_and_accumulates(bias, dtype, rng):
    """nn.Linear (always on fastconv's kernels) against NumPy in float64; grads add up."""
    layer = nn.Linear(130, 70, bias=bias, rng=rng, dtype=dtype)
    if bias:
        layer.bias.data[:] = rng.standard_normal(70)
    x = rng.standard_normal((9, 130)).astype(dtype)
    gy = rng.standard_normal((9, 70)).astype(dtype)
    w = f64(layer.weight.data)
    layer.zero_grad()
    y = layer(x).copy()
    gx = layer.backward(gy).copy()
    layer(x)
    layer.backward(gy)  # a second step adds into .grad
    close(y, f64(x) @ w.T + (f64(layer.bias.data) if bias else 0), dtype, "y")
    close(gx, f64(gy) @ w, dtype, "gx")
    close(layer.weight.grad, 2 * (f64(gy).T @ f64(x)), dtype, "gw")
    if bias:
        close(layer.bias.grad, 2 * f64(gy).sum(axis=0), dtype, "gb")


def test_nn_linear_has_no_blas_route():
    """Regression: small products went to NumPy's BLAS (kernel_min_macs), a second
    thread pool next to the kernels' OpenMP team and a batch-size-dependent result."""
    assert not hasattr(nn.Linear, "kernel_min_macs")


def test_nn_linear_odd_grad_arrays(rng):
    """A float64 grad_out and a .grad the kernels cannot write in place still work."""
    layer = nn.Linear(6, 4, rng=rng)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    gy = rng.standard_normal((3, 4))  # float64
    layer.weight.grad = np.zeros((4, 6), np.float32, order="F")
    layer(x)
    gx = layer.backward(gy)
    assert gx.dtype == np.float32
    close(gx, gy @ f64(layer.weight.data), np.float32, "gx")
    close(layer.weight.grad, gy.T @ f64(x), np.float32, "gw")
    close(layer.bias.grad, gy.sum(axis=0), np.float32, "gb")


def test_nn_linear_gradients_on_kernels(rng):
    """Central differences in float64 through the layer."""
    layer = nn.Linear(7, 5, rng=rng, dtype=np.float64)
    layer.bias.data[:] = rng.standard_normal(5)
    x = rng.standard_normal((4, 7))
    g = rng.standard_normal((4, 5))
    layer.zero_grad()
    layer(x)
    gx = layer.backward(g)
    eps = 1e-6

    def loss(xx):
        return float(np.sum(nn.Linear.forward(layer, xx) * g))

    for idx in [(0, 0), (3, 6), (2, 3)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        assert abs((loss(xp) - loss(xm)) / (2 * eps) - gx[idx]) < 1e-7
    w = layer.weight.data
    for idx in [(0, 0), (4, 6)]:
        old = w[idx]
        w[idx] = old + eps
        lp = loss(x)
        w[idx] = old - eps
        lm = loss(x)
        w[idx] = old
        assert abs((lp - lm) / (2 * eps) - layer.weight.grad[idx]) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_in_one_region_equals_separate_products(dtype, rng):
    """fc_linear_bwd (one thread team) gives the bits of fc_gemm + fc_colsum one by one."""
    x, w, b, gy = data(rng, 33, 1001, 129, dtype)
    gw0 = rng.standard_normal(w.shape).astype(dtype)
    gx, gw, gb = np.empty_like(x), gw0.copy(), b.copy()
    F.linear_backward(gy, x, w, out=(gx, gw, gb), accumulate=True)
    rx, rw, rb = np.empty_like(x), gw0.copy(), b.copy()
    nt = fastconv.get_num_threads()
    _kernels.gemm(False, False, gy, w, None, 0, False, nt, rx)
    _kernels.gemm(True, False, gy, x, None, 0, True, nt, rw)
    _kernels.colsum(gy, True, nt, rb)
    for got, want in ((gx, rx), (gw, rw), (gb, rb)):
        assert got.tobytes() == want.tobytes()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), i=st.integers(1, 300), o=st.integers(1, 150),
       bias=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_linear_random_shapes(n, i, o, bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b, gy = data(rng, n, i, o, np.float64)
    b = b if bias else None
    want = f64(x) @ f64(w).T + (0 if b is None else b)
    close(F.linear(x, w, b), want, np.float64, "y", np.abs(x) @ np.abs(w).T + 1)
    gx, gw, gb = F.linear_backward(gy, x, w)
    close(gx, gy @ w, np.float64, "gx", np.abs(gy) @ np.abs(w))
    close(gw, gy.T @ x, np.float64, "gw", np.abs(gy).T @ np.abs(x))
    close(gb, gy.sum(axis=0), np.float64, "gb", np.abs(gy).sum(axis=0))
