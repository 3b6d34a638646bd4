"""The fused optimiser kernels (csrc/fc_optim.c) against optim.py's NumPy path.

The NumPy code in each ``_update`` is the reference: the compiled path must give
bitwise the same parameters and state slots, for every optimiser and option,
float32 and float64, odd sizes, every SIMD level and any thread count, and must
leave parameters it cannot handle to the NumPy path.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, optim
from fastconv import functional as F
from fastconv.nn import Parameter

from workloads import fixed_team, parallel_regions

DTYPES = [np.float32, np.float64]
SIZES = [(1,), (7,), (3, 5), (33,), (6, 1, 5, 5), (1000,), (4097,), (120, 401)]

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.01, l1=0.003)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.5, l1=1e-3)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, eps=1e-6, initial_accumulator_value=0.1, weight_decay=0.01,
                     l1=1e-3)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, l1=1e-3)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.01, l1=1e-3)),
    ("Adam", dict(lr=0.0, betas=(0.0, 0.0), eps=0.0)),
]
CONFIG_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]


def bits(a):
    """The raw bytes as unsigned integers: equality of these is bitwise equality."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def make_params(rng, dtype, sizes=SIZES, specials=True):
    """Parameters with awkward values: exact zeros of both signs, tiny and large weights."""
    params = []
    for i, shape in enumerate(sizes):
        w = rng.standard_normal(shape).astype(dtype)
        if specials and w.size > 4:
            flat = w.reshape(-1)
            flat[0], flat[1], flat[2] = 0.0, -0.0, np.finfo(dtype).tiny / 4
            flat[3] = 1e6
        params.append(Parameter(w, regularize=(i % 3 != 2)))
    return params


def make_grads(rng, params, nsteps):
    grads = []
    for _ in range(nsteps):
        step = []
        for p in params:
            g = (rng.standard_normal(p.data.shape) * 0.1).astype(p.data.dtype)
            if g.size > 4:
                flat = g.reshape(-1)
                flat[0], flat[1] = 0.0, -0.0
                flat[4] = np.finfo(p.data.dtype).tiny / 8  # subnormal
            step.append(g)
        grads.append(step)
    return grads


def clone(params):
    return [Parameter(p.data.copy(), requires_grad=p.requires_grad, regularize=p.regularize)
            for p in params]


def run_both(name, kwargs, params, grads):
    """The same steps through the fused and the NumPy path; returns both optimisers."""
    out = []
    for fused in (True, False):
        ps = clone(params)
        opt = getattr(optim, name)(ps, **kwargs)
        opt.fused = fused
        with np.errstate(all="ignore"):  # eps=0 and a zero gradient give 0/0
            for step in grads:
                opt.zero_grad()
                for p, g in zip(ps, step):
                    p.grad += g
                opt.step()
        out.append((ps, opt))
    return out


def assert_same(fused, numpy_path):
    (ps_f, opt_f), (ps_n, opt_n) = fused, numpy_path
    for i, (a, b) in enumerate(zip(ps_f, ps_n)):
        np.testing.assert_array_equal(bits(a.data), bits(b.data), err_msg=f"param {i}")
    slots_f, slots_n = opt_f.state_dict()["slots"], opt_n.state_dict()["slots"]
    assert sorted(slots_f) == sorted(slots_n)
    for key in slots_n:
        a, b = slots_f[key], slots_n[key]
        if a.ndim == 0:
            assert a == b, key
        else:
            np.testing.assert_array_equal(bits(a), bits(b), err_msg=key)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Record every call to _kernels.optim_step: (dtype is f64, number of tensors)."""
    calls = []
    real = _kernels.optim_step

    def spy(hyper, tensors, f64, nthreads):
        calls.append((f64, len(tensors)))
        return real(hyper, tensors, f64, nthreads)

    monkeypatch.setattr(_kernels, "optim_step", spy)
    return calls


@pytest.fixture
def restore_simd():
    before = F.simd_level()
    yield
    F.set_simd_level(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_fused_matches_numpy_bitwise(name, kwargs, dtype, rng, kernel_calls):
    params = make_params(rng, dtype)
    fused, ref = run_both(name, kwargs, params, make_grads(rng, params, 4))
    assert kernel_calls == [(dtype == np.float64, len(params))] * 4
    assert_same(fused, ref)


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("name,kwargs", [CONFIGS[3], CONFIGS[6], CONFIGS[8], CONFIGS[11]],
                         ids=["sgd", "adagrad", "rmsprop", "adam"])
def test_every_simd_level(name, kwargs, level, rng, restore_simd):
    if F.set_simd_level(level) != level:
        pytest.skip(f"this CPU cannot run {level}")
    for dtype in DTYPES:
        params = make_params(rng, dtype)
        fused, ref = run_both(name, kwargs, params, make_grads(rng, params, 3))
        assert_same(fused, ref)


@pytest.mark.parametrize("name,kwargs", [CONFIGS[3], CONFIGS[8], CONFIGS[11]],
                         ids=["sgd", "rmsprop", "adam"])
def test_one_and_two_threads_bitwise(name, kwargs, rng, restore_threads):
    # 700k elements: far above the one-thread cut-off, so two threads really run
    params = make_params(rng, np.float32, sizes=[(300, 1001), (5, 80001), (17,)])
    grads = make_grads(rng, params, 2)
    results = []
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        with fixed_team():
            before = parallel_regions()
            results.append(run_both(name, kwargs, params, grads)[0])
            assert (parallel_regions() > before) == (threads > 1 and fastconv.openmp_enabled())
    assert_same(*results)


def test_nan_and_inf_follow_numpy(rng):
    params = make_params(rng, np.float64, sizes=[(64,)])
    grads = make_grads(rng, params, 2)
    params[0].data[5:8] = [np.nan, np.inf, -np.inf]
    grads[0][0][10:13] = [np.nan, np.inf, -np.inf]
    for name, kwargs in CONFIGS:
        (ps_f, _), (ps_n, _) = run_both(name, kwargs, params, grads)
        # NaN payloads are not promised (see fc_optim.c); positions and values are
        np.testing.assert_array_equal(ps_f[0].data, ps_n[0].data, err_msg=name)


def test_layouts_the_kernel_cannot_take_fall_back(rng, kernel_calls):
    params = make_params(rng, np.float64, sizes=[(6, 8), (5, 7), (40,), (9,)])
    params[0].data = np.asfortranarray(params[0].data)           # not C-contiguous
    params[0].grad = np.asfortranarray(params[0].grad)
    params[1].grad = np.zeros((5, 7), np.float32)                # grad of another dtype
    params[2].requires_grad = False                              # frozen: skipped
    grads = make_grads(rng, params, 3)
    for name, kwargs in CONFIGS:
        kernel_calls.clear()
        out = []
        for fused in (True, False):
            ps = clone(params)
            ps[0].data = np.asfortranarray(ps[0].data)
            ps[0].grad = np.asfortranarray(ps[0].grad)
            ps[1].grad = np.zeros((5, 7), np.float32)
            opt = getattr(optim, name)(ps, **kwargs)
            opt.fused = fused
            with np.errstate(all="ignore"):
                for step in grads:
                    opt.zero_grad()
                    for p, g in zip(ps, step):
                        p.grad += g
                    opt.step()
            out.append((ps, opt))
        assert kernel_calls == [(True, 1)] * 3, name   # only the last parameter
        np.testing.assert_array_equal(out[0][0][2].data, params[2].data)
        assert_same(*out)


def test_subclass_and_numpy_scalars_take_the_numpy_path(rng, kernel_calls):
    class HalfSGD(optim.SGD):
        def _update(self, p, grad, state):
            p.data -= 0.5 * self.lr * grad

    params = make_params(rng, np.float32, sizes=[(50,)])
    p = clone(params)
    opt = HalfSGD(p, lr=0.1)
    opt.zero_grad()
    p[0].grad += 1.0
    opt.step()
    np.testing.assert_array_equal(p[0].data, params[0].data - np.float32(0.05))
    # a NumPy float64 lr makes NumPy compute a float32 update in float64
    fused, ref = run_both("Adam", dict(lr=1e-3), params, make_grads(rng, params, 1))
    opt = optim.Adam(clone(params), lr=1e-3)
    opt.lr = np.float64(1e-3)
    opt.step()
    assert kernel_calls == [(False, 1)]   # the run_both fused run only


def test_mixed_dtypes_one_call_each(rng, kernel_calls):
    params = make_params(rng, np.float32, sizes=[(30,), (4, 4)]) + make_params(
        rng, np.float64, sizes=[(11,)])
    fused, ref = run_both("Adam", dict(lr=0.01), params, make_grads(rng, params, 2))
    assert kernel_calls == [(False, 2), (True, 1)] * 2
    assert_same(fused, ref)


@pytest.mark.parametrize("name,kwargs", [CONFIGS[4], CONFIGS[6], CONFIGS[9], CONFIGS[11]],
                         ids=["sgd", "adagrad", "rmsprop", "adam"])
def test_checkpoint_moves_between_paths(name, kwargs, rng):
    params = make_params(rng, np.float32, sizes=[(7, 9), (13,)])
    grads = make_grads(rng, params, 4)

    def steps(opt, ps, gs):
        for step in gs:
            opt.zero_grad()
            for p, g in zip(ps, step):
                p.grad += g
            opt.step()

    ps_a = clone(params)
    opt_a = getattr(optim, name)(ps_a, **kwargs)
    steps(opt_a, ps_a, grads)
    ps_b = clone(params)
    opt_b = getattr(optim, name)(ps_b, **kwargs)
    opt_b.fused = False
    steps(opt_b, ps_b, grads[:2])
    opt_c = getattr(optim, name)(ps_b, **kwargs)           # resumes on the fused path
    opt_c.load_state_dict(opt_b.state_dict())
    steps(opt_c, ps_b, grads[2:])
    for a, b in zip(ps_a, ps_b):
        np.testing.assert_array_equal(bits(a.data), bits(b.data))


def test_kernel_guard_rejects_bad_arrays():
    w = np.zeros(8, np.float32)
    g = np.zeros(8, np.float32)
    hyper = (_kernels.OPTIM_ADAM, 1e-3, 0.0, 0.0, 0.0, False, 1e-8, 0.0, 0.9, 0.999)
    with pytest.raises(ValueError, match="lacks an optimiser state slot"):
        _kernels.optim_step(hyper, [(w, g, w.copy(), None, True, False, 1.0, 1.0)], False, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.optim_step(hyper, [(w, g.astype(np.float64), w.copy(), w.copy(), True,
                                     False, 1.0, 1.0)], False, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.optim_step(hyper, [(w, np.zeros(16, np.float32)[::2], w.copy(), w.copy(),
                                     True, False, 1.0, 1.0)], False, 1)
    with pytest.raises(TypeError):
        _kernels.optim_step(hyper, [([0.0], g, w.copy(), w.copy(), True, False, 1.0, 1.0)],
                            False, 1)
    with pytest.raises(ValueError, match="unknown kind"):
        _kernels.optim_step((9,) + hyper[1:], [], False, 1)


def test_rebinding_arrays_after_a_fused_step_is_noticed(rng, kernel_calls):
    # the eligibility verdict is cached per array identity; new arrays are re-checked
    params = make_params(rng, np.float64, sizes=[(6, 8)])
    grads = make_grads(rng, params, 3)
    out = []
    for fused in (True, False):
        ps = clone(params)
        opt = optim.SGD(ps, lr=0.1, momentum=0.9)
        opt.fused = fused
        for k, step in enumerate(grads):
            if k == 1:   # now Fortran-ordered: the NumPy path must take over
                ps[0].data = np.asfortranarray(ps[0].data)
                ps[0].grad = np.asfortranarray(ps[0].grad)
            if k == 2:   # and back
                ps[0].data = np.ascontiguousarray(ps[0].data)
                ps[0].grad = np.ascontiguousarray(ps[0].grad)
            opt.zero_grad()
            ps[0].grad += step[0]
            opt.step()
        out.append((ps, opt))
    assert kernel_calls == [(True, 1), (True, 1)]
    assert_same(*out)
    # a parameter made read-only in place: a clear error, as on the NumPy path
    out[0][0][0].data.flags.writeable = False
    with pytest.raises(ValueError):
        out[0][1].step()


def test_environment_switch_turns_the_fused_path_off():
    import os
    import subprocess
    import sys

    code = "from fastconv import optim; print(optim.Optimizer.fused, optim.SGD.fused)"
    env = dict(os.environ, FASTCONV_FUSED_OPTIM="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(fastconv.__file__)))
    assert out.stdout.split() == ["False", "False"]
