"""Keras-form optimisers, parameter groups, AdamW / NAdam against torch.optim, clipping."""

import numpy as np
import pytest

from fastconv import nn, optim
from fastconv.nn import Parameter

# torch as oracle: float64 agrees to rounding of a few operations done in
# another order (torch's lerp against our b1*m + (1-b1)*g); float32 to a few ulps
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-5, atol=2e-6)}


def small_model():
    return nn.Sequential([nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)])


# -- Keras form: built before the parameters ---------------------------------------------
def test_optimizer_built_without_params_is_bound_by_compile(rng):
    model = small_model()
    opt = optim.Adam(lr=1e-3)
    assert not opt.bound
    model.compile(optimizer=opt, loss="cross_entropy")
    assert model.optimizer is opt and opt.bound
    assert opt.params == model.parameters()
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    before = model.state_dict()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert any(not np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_unbound_optimizer_gives_a_clear_error():
    opt = optim.SGD(lr=0.1)
    with pytest.raises(RuntimeError, match=r"SGD.step: the optimizer has no parameters yet; "
                                           r"pass them to SGD\(params, ...\), call opt.bind"):
        opt.step()
    with pytest.raises(RuntimeError, match="SGD.zero_grad: the optimizer has no parameters"):
        opt.zero_grad()


def test_bind_then_bind_again_is_refused():
    model = small_model()
    opt = optim.RMSprop(lr=0.01).bind(model)
    assert opt.params == model.parameters()
    with pytest.raises(ValueError, match="already has 4 parameters; use add_param_group"):
        opt.bind(model)
    with pytest.raises(ValueError, match="same Parameter twice"):
        opt.add_param_group({"params": model.parameters()[:1]})


def test_unbound_and_bound_give_identical_steps(rng):
    w0 = rng.standard_normal(7)
    grads = [rng.standard_normal(7) for _ in range(3)]
    out = []
    for make in (lambda p: optim.Adam([p], lr=0.01), lambda p: optim.Adam(lr=0.01).bind([p])):
        p = Parameter(w0)
        opt = make(p)
        for g in grads:
            opt.zero_grad()
            p.grad += g
            opt.step()
        out.append(p.data)
    np.testing.assert_array_equal(*out)


# -- parameter groups ---------------------------------------------------------------------
def test_param_groups_own_lr_and_weight_decay_match_torch(rng):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (4,), (2, 2)]
    w0 = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(4)]
    ps = [Parameter(w) for w in w0]
    opt = optim.SGD([{"params": ps[:2], "lr": 0.5, "weight_decay": 0.1},
                     {"params": ps[2:]}], lr=0.01, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.01]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9]
    tps = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in w0]
    topt = torch.optim.SGD([{"params": tps[:2], "lr": 0.5, "weight_decay": 0.1},
                            {"params": tps[2:]}], lr=0.01, momentum=0.9)
    for step in grads:
        opt.zero_grad()
        for p, g in zip(ps, step):
            p.grad += g
        opt.step()
        for tp, g in zip(tps, step):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL[np.float64])


def test_param_groups_fused_and_numpy_paths_bitwise(rng):
    shapes = [(33,), (6, 5), (17,)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    out = []
    for fused in (True, False):
        ps = [Parameter(w) for w in w0]
        opt = optim.Adam([{"params": ps[:1], "lr": 0.1, "betas": (0.5, 0.9)},
                          {"params": ps[1:], "weight_decay": 0.01}], lr=1e-3)
        opt.fused = fused
        for step in grads:
            opt.zero_grad()
            for p, g in zip(ps, step):
                p.grad += g
            opt.step()
        out.append([p.data.view(np.uint32) for p in ps])
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_group_validation_and_attribute_views():
    ps = [Parameter(np.zeros(3)), Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match=r"unknown keys \['lrate'\]"):
        optim.SGD([{"params": ps, "lrate": 0.1}])
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1.0"):
        optim.SGD([{"params": ps[:1], "lr": -1}])
    with pytest.raises(TypeError, match="a parameter group must be a dict"):
        optim.SGD(lr=0.1).add_param_group(ps)
    opt = optim.SGD([{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.2}])
    assert opt.lr == 0.1              # the first group's
    opt.lr = 0.05                     # sets every group's (PyTorch idiom)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]


def test_param_groups_survive_save_and_load(tmp_path, rng):
    model = small_model()
    params = model.parameters()
    opt = optim.Adam([{"params": params[:2], "lr": 1e-2}, {"params": params[2:]}], lr=1e-3)
    model.compile(optimizer=opt, loss="cross_entropy")
    x = rng.standard_normal((8, 4)).astype(np.float32)
    model.fit(x, rng.integers(0, 3, 8), epochs=1, verbose=0)
    opt.param_groups[1]["lr"] = 5e-4          # as a schedule would
    model.save(tmp_path / "m.npz")
    loaded = nn.load_model(tmp_path / "m.npz")
    got = loaded.optimizer.param_groups
    assert [g["lr"] for g in got] == [1e-2, 5e-4]
    assert [g["initial_lr"] for g in got] == [1e-2, 1e-3]
    assert [len(g["params"]) for g in got] == [2, 2]


# -- AdamW and NAdam against torch.optim ---------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kwargs", [
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, eps=1e-6)),
    ("NAdam", dict()),
    ("NAdam", dict(lr=0.01, weight_decay=0.01, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
])
def test_adamw_nadam_match_torch(name, kwargs, dtype, rng):
    torch = pytest.importorskip("torch")
    w0 = rng.standard_normal((5, 3)).astype(dtype)
    grads = [rng.standard_normal((5, 3)).astype(dtype) for _ in range(8)]
    p = Parameter(w0)
    opt = getattr(optim, name)([p], **kwargs)
    previous = torch.get_default_dtype()
    # torch keeps NAdam's mu_product in the default dtype; match it to the parameter's
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        topt = getattr(torch.optim, name)([tp], **kwargs)
        for g in grads:
            opt.zero_grad()
            p.grad += g
            opt.step()
            tp.grad = torch.from_numpy(g.copy())
            topt.step()
            np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL[dtype])
    finally:
        torch.set_default_dtype(previous)
    assert p.data.dtype == dtype


def test_adamw_decay_is_decoupled_and_skips_biases():
    w = Parameter(np.array([2.0, -4.0]))
    b = Parameter(np.array([2.0, -4.0]), regularize=False)
    opt = optim.AdamW([w, b], lr=0.1, weight_decay=0.5)
    opt.step()                                   # zero gradients: only the decay acts
    np.testing.assert_array_equal(w.data, [2.0 * 0.95, -4.0 * 0.95])
    np.testing.assert_array_equal(b.data, [2.0, -4.0])


def test_nadam_state_round_trip_is_bitwise(rng):
    grads = [rng.standard_normal(6) for _ in range(5)]
    pa = Parameter(np.linspace(-1, 1, 6))
    a = optim.NAdam([pa], lr=0.01)
    pb = Parameter(pa.data)
    for g in grads[:2]:
        a.zero_grad()
        pa.grad += g
        a.step()
    pb.data[...] = pa.data
    b = optim.NAdam([pb], lr=0.5)
    b.load_state_dict(a.state_dict())
    assert isinstance(b.state[0]["mu_product"], float)
    for g in grads[2:]:
        for opt, p in ((a, pa), (b, pb)):
            opt.zero_grad()
            p.grad += g
            opt.step()
    np.testing.assert_array_equal(pa.data, pb.data)


def test_new_optimizers_by_name():
    model = small_model()
    assert type(optim.get_optimizer("adamw", model)) is optim.AdamW
    assert type(optim.get_optimizer("NAdam", model)) is optim.NAdam
    model.compile(optimizer="nadam")
    assert model.optimizer.bound


# -- gradient clipping ---------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, rng):
    torch = pytest.importorskip("torch")
    grads = [rng.standard_normal(s) for s in [(3, 4), (5,), (1,)]]
    ps = [Parameter(np.zeros_like(g)) for g in grads]
    for p, g in zip(ps, grads):
        p.grad += g
    frozen = Parameter(np.zeros(3), requires_grad=False)
    frozen.grad += 100.0           # left out of the norm and not scaled
    total = optim.clip_grad_norm_(ps + [frozen], max_norm, norm_type)
    tps = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for tp, g in zip(tps, grads):
        tp.grad = torch.from_numpy(g.copy())
    ttotal = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(frozen.grad, 100.0)
    if max_norm < total:
        assert any(not np.array_equal(p.grad, g) for p, g in zip(ps, grads))


def test_clip_grad_value_and_errors():
    torch = pytest.importorskip("torch")
    g = np.array([-3.0, -0.5, 0.0, 0.7, 9.0])
    p = Parameter(np.zeros(5))
    p.grad += g
    optim.clip_grad_value_(p, 0.6)
    t = torch.from_numpy(g.copy())
    tp = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    tp.grad = t
    torch.nn.utils.clip_grad_value_([tp], 0.6)
    np.testing.assert_array_equal(p.grad, tp.grad.numpy())
    with pytest.raises(ValueError, match="clip_grad_value_: clip_value must be a finite number"):
        optim.clip_grad_value_(p, -1)
    with pytest.raises(ValueError, match="clip_grad_norm_: norm_type must be > 0"):
        optim.clip_grad_norm_(p, 1.0, norm_type=0)
    with pytest.raises(TypeError, match=r"clip_grad_norm_: parameters\[0\] must be a "
                                        r"fastconv.nn.Parameter, got ndarray"):
        optim.clip_grad_norm_([np.zeros(3)], 1.0)
    p.grad[0] = np.inf
    with pytest.raises(ValueError, match="total norm of order 2.0 of the gradients is inf"):
        optim.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


def test_param_groups_with_different_slots_survive_save_and_load(tmp_path, rng):
    # SGD keeps a momentum buffer only in the group that has momentum: the
    # loader's slot check is per group, not one layout for the whole optimiser
    model = small_model()
    params = model.parameters()
    opt = optim.SGD([{"params": params[:2], "momentum": 0.9}, {"params": params[2:]}], lr=1e-2)
    model.compile(optimizer=opt, loss="cross_entropy")
    x = rng.standard_normal((8, 4)).astype(np.float32)
    model.fit(x, rng.integers(0, 3, 8), epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = nn.load_model(tmp_path / "m.npz")
    assert [g["momentum"] for g in loaded.optimizer.param_groups] == [0.9, 0.0]
