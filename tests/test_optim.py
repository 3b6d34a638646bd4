"""Optimisers against hand-computed steps, regularisation, state round trips, schedules."""

import numpy as np
import pytest

from fastconv import nn, optim
from fastconv.nn import Parameter


def make_param(values, grad, regularize=True, dtype=np.float64):
    p = Parameter(np.array(values, dtype), regularize=regularize)
    p.grad[...] = grad
    return p


W0 = np.array([1.0, -2.0, 0.5])
G1 = np.array([0.1, 0.2, -0.3])
G2 = np.array([-0.4, 0.05, 0.3])


def run(opt_factory, grads=(G1, G2), w0=W0):
    p = make_param(w0, 0)
    opt = opt_factory([p])
    out = []
    for g in grads:
        opt.zero_grad()
        p.grad += g
        opt.step()
        out.append(p.data.copy())
    return out


# -- hand-computed single and double steps ---------------------------------------------
def test_sgd_plain():
    w1, w2 = run(lambda ps: optim.SGD(ps, lr=0.1))
    np.testing.assert_allclose(w1, W0 - 0.1 * G1, rtol=1e-15)
    np.testing.assert_allclose(w2, W0 - 0.1 * G1 - 0.1 * G2, rtol=1e-15)


def test_sgd_momentum():
    w1, w2 = run(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))
    v1 = G1                      # first step: buffer = grad
    v2 = 0.9 * v1 + G2
    np.testing.assert_allclose(w1, W0 - 0.1 * v1, rtol=1e-15)
    np.testing.assert_allclose(w2, W0 - 0.1 * v1 - 0.1 * v2, rtol=1e-15)


def test_sgd_nesterov():
    w1, w2 = run(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True))
    v1 = G1
    v2 = 0.9 * v1 + G2
    np.testing.assert_allclose(w1, W0 - 0.1 * (G1 + 0.9 * v1), rtol=1e-15)
    np.testing.assert_allclose(w2, w1 - 0.1 * (G2 + 0.9 * v2), rtol=1e-15)


def test_sgd_weight_decay_and_l1():
    (w1,) = run(lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.01, l1=0.001), grads=(G1,))
    np.testing.assert_allclose(w1, W0 - 0.1 * (G1 + 0.01 * W0 + 0.001 * np.sign(W0)), rtol=1e-15)
    (w1_l2,) = run(lambda ps: optim.SGD(ps, lr=0.1, l2=0.01), grads=(G1,))
    np.testing.assert_allclose(w1_l2, W0 - 0.1 * (G1 + 0.01 * W0), rtol=1e-15)


def test_regularisation_skips_biases_and_keeps_grad():
    bias = make_param(W0, G1, regularize=False)
    weight = make_param(W0, G1)
    optim.SGD([bias, weight], lr=1.0, weight_decay=0.5, l1=0.1).step()
    np.testing.assert_allclose(bias.data, W0 - G1)
    np.testing.assert_allclose(weight.data, W0 - (G1 + 0.5 * W0 + 0.1 * np.sign(W0)))
    np.testing.assert_array_equal(weight.grad, G1)  # the penalty does not leak into .grad
    layer = nn.Linear(2, 2)
    assert layer.weight.regularize and not layer.bias.regularize
    assert not nn.BatchNorm2d(2).weight.regularize


def test_adagrad():
    w1, w2 = run(lambda ps: optim.Adagrad(ps, lr=0.1, eps=1e-10))
    s1 = G1**2
    s2 = s1 + G2**2
    np.testing.assert_allclose(w1, W0 - 0.1 * G1 / (np.sqrt(s1) + 1e-10), rtol=1e-14)
    np.testing.assert_allclose(w2, w1 - 0.1 * G2 / (np.sqrt(s2) + 1e-10), rtol=1e-14)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_rmsprop(momentum):
    w1, w2 = run(lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8, momentum=momentum))
    v1 = 0.1 * G1**2
    v2 = 0.9 * v1 + 0.1 * G2**2
    d1 = G1 / (np.sqrt(v1) + 1e-8)
    d2 = G2 / (np.sqrt(v2) + 1e-8)
    if momentum:
        d2 = momentum * d1 + d2
    np.testing.assert_allclose(w1, W0 - 0.01 * d1, rtol=1e-14)
    np.testing.assert_allclose(w2, w1 - 0.01 * d2, rtol=1e-14)


def test_adam():
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-3
    w1, w2 = run(lambda ps: optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps))
    m1, v1 = (1 - b1) * G1, (1 - b2) * G1**2
    m2, v2 = b1 * m1 + (1 - b1) * G2, b2 * v1 + (1 - b2) * G2**2
    np.testing.assert_allclose(w1, W0 - lr * (m1 / 0.1) / (np.sqrt(v1 / 0.001) + eps), rtol=1e-13)
    step2 = lr * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
    np.testing.assert_allclose(w2, w1 - step2, rtol=1e-13)
    # the very first Adam step moves every weight by about lr, whatever the gradient scale
    np.testing.assert_allclose(np.abs(w1 - W0), lr, rtol=1e-4)


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)),
])
def test_matches_torch_optim(name, kwargs, rng):
    torch = pytest.importorskip("torch")
    w0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(5)]
    p = Parameter(w0)
    opt = getattr(optim, name)([p], **kwargs)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = getattr(torch.optim, name)([tp], **kwargs)
    for g in grads:
        opt.zero_grad()
        p.grad += g
        opt.step()
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_float32_updates_stay_float32_in_place():
    p = Parameter(np.ones(5, np.float32))
    p.grad[...] = 0.5
    data = p.data
    for cls in (optim.SGD, optim.Adagrad, optim.RMSprop, optim.Adam):
        cls([p], lr=0.1).step()
    assert p.data is data and p.data.dtype == np.float32


def test_frozen_parameters_are_skipped():
    frozen = make_param(W0, G1)
    frozen.requires_grad = False
    live = make_param(W0, G1)
    optim.Adam([frozen, live], lr=0.1).step()
    np.testing.assert_array_equal(frozen.data, W0)
    assert not np.array_equal(live.data, W0)


def test_zero_grad():
    ps = [make_param(W0, G1), make_param(W0, G2)]
    optim.SGD(ps).zero_grad()
    assert all(not p.grad.any() for p in ps)


# -- state round trip -----------------------------------------------------------------
@pytest.mark.parametrize("cls,kwargs", [
    (optim.SGD, dict(lr=0.05, momentum=0.9)),
    (optim.Adagrad, dict(lr=0.05)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.3)),
    (optim.Adam, dict(lr=0.01, l1=1e-3)),
])
def test_state_dict_resume_is_bitwise(cls, kwargs, rng):
    grads = [rng.standard_normal(3) for _ in range(6)]

    def steps(opt, p, gs):
        for g in gs:
            opt.zero_grad()
            p.grad += g
            opt.step()

    p_ref = make_param(W0, 0)
    ref = cls([p_ref], **kwargs)
    steps(ref, p_ref, grads)

    p_a = make_param(W0, 0)
    a = cls([p_a], **kwargs)
    steps(a, p_a, grads[:3])
    state = a.state_dict()
    p_b = make_param(p_a.data, 0)
    b = cls([p_b], lr=123.0)
    b.load_state_dict(state)
    assert b.get_config() == a.get_config()
    steps(b, p_b, grads[3:])
    np.testing.assert_array_equal(p_b.data, p_ref.data)
    assert b.iterations == 6


def test_load_state_dict_rejects_mismatch():
    a = optim.Adam([make_param(W0, G1)])
    a.step()
    with pytest.raises(ValueError, match="state is for Adam"):
        optim.SGD([make_param(W0, G1)]).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="has shape"):
        optim.Adam([make_param([1.0, 2.0], 0)]).load_state_dict(a.state_dict())


# -- construction and validation ---------------------------------------------------------
def test_get_optimizer_and_validation():
    model = nn.Sequential([nn.Linear(2, 2)])
    for name, cls in [("sgd", optim.SGD), ("Adam", optim.Adam), ("adagrad", optim.Adagrad),
                      ("RMSprop", optim.RMSprop)]:
        assert type(optim.get_optimizer(name, model.parameters())) is cls
    assert optim.Adam(model).params == model.parameters()  # a Module works as params
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optim.get_optimizer("lbfgs", model.parameters())
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1.0"):
        optim.SGD(model, lr=-1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        optim.SGD(model, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
        optim.Adam(model, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="params is empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match=r"params\[0\] must be a fastconv.nn.Parameter"):
        optim.Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="not both"):
        optim.SGD(model, weight_decay=0.1, l2=0.2)
    assert optim.Adam(model).get_config() == {
        "class": "Adam", "lr": 1e-3, "weight_decay": 0.0, "l1": 0.0, "betas": [0.9, 0.999],
        "eps": 1e-8}


# -- schedules ---------------------------------------------------------------------------
def test_exponential_decay():
    sched = optim.ExponentialDecay(0.6, lr0=0.01)
    np.testing.assert_allclose([sched(e) for e in range(4)], [0.01 * 0.6**e for e in range(4)])


def test_step_decay_and_lambda():
    sched = optim.StepDecay(step_size=2, gamma=0.5, lr0=1.0)
    assert [sched(e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    lam = optim.LambdaSchedule(lambda e: 1 / (1 + e), lr0=0.3)
    assert lam(2) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="step_size must be an int >= 1"):
        optim.StepDecay(0)


def test_schedule_step_drives_optimizer_from_initial_lr():
    p = make_param(W0, G1)
    opt = optim.SGD([p], lr=0.1)
    sched = optim.ExponentialDecay(0.5, optimizer=opt)
    assert opt.lr == 0.1                 # epoch 0, set on construction (PyTorch)
    lrs = [sched.step() for _ in range(3)]
    # step() at the end of epoch k gives the rate of epoch k+1 (was one epoch late)
    assert lrs == [0.05, 0.025, 0.0125] and opt.lr == 0.0125
    assert opt.initial_lr == 0.1
    with pytest.raises(ValueError, match="give lr0 or an optimizer"):
        optim.ExponentialDecay(0.5)(1)
