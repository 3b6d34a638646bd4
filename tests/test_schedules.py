"""Learning-rate schedules and ReduceLROnPlateau against torch.optim.lr_scheduler, in loops and in fit."""

import numpy as np
import pytest

from fastconv import nn, optim
from fastconv.nn import Parameter
from fastconv.nn.callbacks import CallbackList, LearningRateScheduler, ReduceLROnPlateau

SCHEDULES = [
    ("StepDecay-1", lambda opt: optim.StepDecay(1, gamma=0.5, optimizer=opt),
     lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5)),
    ("StepDecay-3", lambda opt: optim.StepDecay(3, gamma=0.1, optimizer=opt),
     lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.1)),
    ("ExponentialDecay", lambda opt: optim.ExponentialDecay(0.7, optimizer=opt),
     lambda t, o: t.optim.lr_scheduler.ExponentialLR(o, gamma=0.7)),
    ("LambdaSchedule", lambda opt: optim.LambdaSchedule(lambda e: 1 / (1 + e), optimizer=opt),
     lambda t, o: t.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e))),
]
IDS = [s[0] for s in SCHEDULES]


def two_groups():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    return [{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.02}]


@pytest.mark.parametrize("name,ours,theirs", SCHEDULES, ids=IDS)
def test_pytorch_style_loop_matches_torch_per_group(name, ours, theirs):
    torch = pytest.importorskip("torch")
    opt = optim.SGD(two_groups(), lr=0.1)
    sched = ours(opt)
    tparams = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    topt = torch.optim.SGD([{"params": tparams[:1], "lr": 0.1},
                            {"params": tparams[1:], "lr": 0.02}], lr=0.1)
    tsched = theirs(torch, topt)
    for epoch in range(8):
        # the rates this epoch trains with
        ours_now = [g["lr"] for g in opt.param_groups]
        theirs_now = [g["lr"] for g in topt.param_groups]
        np.testing.assert_allclose(ours_now, theirs_now, rtol=1e-15, err_msg=f"epoch {epoch}")
        topt.step()
        sched.step()                         # end of epoch, as in PyTorch
        tsched.step()
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-15)


def test_step_decay_decays_after_the_first_epoch():
    # regression: step() used to return the initial rate on its first call, so a
    # PyTorch-style loop decayed one epoch late
    opt = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    sched = optim.StepDecay(step_size=1, gamma=0.5, optimizer=opt)
    assert opt.lr == 1.0
    assert sched.step() == 0.5 and opt.lr == 0.5      # epoch 2 runs decayed
    assert sched.step() == 0.25


def train_data(rng):
    x = rng.standard_normal((16, 4)).astype(np.float32)
    return x, rng.integers(0, 3, 16)


@pytest.mark.parametrize("wrap", [False, True])
def test_schedule_in_fit_gives_the_same_rates_as_the_loop(wrap, rng):
    x, y = train_data(rng)
    model = nn.Sequential([nn.Linear(4, 3)])
    model.compile(optimizer=optim.SGD(lr=0.4), loss="cross_entropy")
    sched = optim.StepDecay(2, gamma=0.5)
    cb = LearningRateScheduler(sched) if wrap else sched     # a schedule given directly works
    hist = model.fit(x, y, epochs=5, verbose=0, callbacks=[cb])
    loop_opt = optim.SGD([Parameter(np.zeros(1))], lr=0.4)
    loop = optim.StepDecay(2, gamma=0.5, optimizer=loop_opt)
    expected = []
    for _ in range(5):
        expected.append(loop_opt.lr)
        loop.step()
    assert hist.history["lr"] == expected == [0.4, 0.4, 0.2, 0.2, 0.1]


def test_callbacks_reject_other_objects_with_the_accepted_types():
    with pytest.raises(TypeError, match=r"callbacks\[1\]: expected a fastconv.nn.callbacks.Callback "
                                        r"or a fastconv.optim.LRSchedule, got int"):
        CallbackList([nn.History(), 42])


def test_keras_callable_sets_every_group_and_schedule_keeps_group_ratios(rng):
    x, y = train_data(rng)
    model = nn.Sequential([nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)])
    params = model.parameters()
    opt = optim.SGD([{"params": params[:2], "lr": 0.2}, {"params": params[2:]}], lr=0.02)
    model.compile(optimizer=opt, loss="cross_entropy")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[optim.ExponentialDecay(0.5)])
    # epoch 1 (the last) ran at initial_lr * 0.5 in each group
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    model.fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda e: 0.003)])
    assert [g["lr"] for g in opt.param_groups] == [0.003, 0.003]


# -- ReduceLROnPlateau -------------------------------------------------------------------
PLATEAU_CONFIGS = [
    dict(),
    dict(mode="min", factor=0.5, patience=2),
    dict(mode="max", factor=0.5, patience=1, threshold=0.05),
    dict(mode="min", factor=0.3, patience=0, threshold=0.01, threshold_mode="abs"),
    dict(mode="min", factor=0.5, patience=1, cooldown=2),
    dict(mode="min", factor=0.1, patience=0, min_lr=[1e-3, 1e-4]),
]


@pytest.mark.parametrize("kwargs", PLATEAU_CONFIGS)
def test_reduce_on_plateau_matches_torch(kwargs, rng):
    torch = pytest.importorskip("torch")
    # a metric that improves, stalls, wobbles: every branch of the rule is taken
    metrics = np.concatenate([np.linspace(1.0, 0.5, 5), np.full(6, 0.5),
                              0.5 + 0.01 * rng.standard_normal(15), np.linspace(0.5, 0.2, 4),
                              np.full(12, 0.2)])
    opt = optim.SGD(two_groups(), lr=0.1)
    mode = kwargs.get("mode", "min")
    ours = ReduceLROnPlateau(optimizer=opt, **dict(kwargs, mode=mode))
    tparams = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    topt = torch.optim.SGD([{"params": tparams[:1], "lr": 0.1},
                            {"params": tparams[1:], "lr": 0.02}], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **dict(kwargs, mode=mode))
    cuts = 0
    for epoch, m in enumerate(metrics):
        m = float(2.0 - m if mode == "max" else m)
        cuts += ours.step(m)
        theirs.step(m)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [g["lr"] for g in topt.param_groups], rel=1e-15), f"epoch {epoch}"
    assert cuts >= 1


def test_reduce_on_plateau_in_fit_cuts_after_patience_plus_one_flat_epochs(rng):
    x, y = train_data(rng)
    model = nn.Sequential([nn.Linear(4, 3)])
    # the loss moves by ~1e-7 relative per epoch, below the 1e-4 threshold
    model.compile(optimizer=optim.SGD(lr=1e-6), loss="cross_entropy")
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)
    hist = model.fit(x, y, epochs=5, verbose=0, shuffle=False, callbacks=[cb])
    # epoch 0 sets the best; epochs 1 and 2 are bad; the cut lands after epoch 2
    assert hist.history["lr"] == [1e-6, 1e-6, 1e-6, 5e-7, 5e-7]


def test_reduce_on_plateau_keras_min_delta_and_errors():
    cb = ReduceLROnPlateau(min_delta=0.1)
    assert (cb.threshold, cb.threshold_mode, cb.mode) == (0.1, "abs", "min")
    assert ReduceLROnPlateau(monitor="val_accuracy").mode == "max"
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau: factor must be in \[0, 1\), got 1.5"):
        ReduceLROnPlateau(factor=1.5)
    with pytest.raises(ValueError, match="ReduceLROnPlateau: patience must be an int >= 0"):
        ReduceLROnPlateau(patience=-1)
    with pytest.raises(ValueError, match="ReduceLROnPlateau.step: no optimizer"):
        ReduceLROnPlateau().step(1.0)
    opt = optim.SGD(two_groups())
    with pytest.raises(ValueError, match="min_lr has 3 entries for 2 parameter groups"):
        ReduceLROnPlateau(optimizer=opt, min_lr=[0, 0, 0])


def test_reduce_on_plateau_warns_when_the_metric_is_missing(rng):
    x, y = train_data(rng)
    model = nn.Sequential([nn.Linear(4, 3)])
    model.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match="monitor 'val_loss' is not in the epoch logs"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[ReduceLROnPlateau()])
