"""The compiled training step (fastconv.nn.train_plan) trains bitwise as the layers do."""

import numpy as np
import pytest

import fastconv
import fastconv.nn.trainer as trainer
from fastconv import nn
from fastconv.nn.callbacks import Callback
from fastconv.nn.train_plan import TrainPlan, plan_supported


def _data(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n)


def _small(dtype, seed):
    rng = np.random.default_rng(seed)
    kw = {"rng": rng, "dtype": dtype}
    return nn.Sequential([
        nn.Conv2d(1, 4, 3, padding="same", bias=False, **kw),  # ReLU not before a pool
        nn.ReLU(),
        nn.Conv2d(4, 6, 5, stride=2, groups=2, **kw),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 300, **kw),
        nn.ReLU(),                        # large enough for the compiled ReLU forward
        nn.Linear(300, 10, **kw),
    ])


MODELS = {
    "lenet5": lambda dtype, seed: fastconv.models.lenet5(seed=seed, dtype=dtype),
    "small": _small,
}


def _fit(make, dtype, planned, monkeypatch, callbacks=None, n=200, epochs=2, fuse=True):
    monkeypatch.setattr(trainer, "plan_supported",
                        plan_supported if planned else (lambda model: False))
    model = make(dtype, 3)
    model.fuse_conv_relu = model.fuse_relu_pool = fuse
    model.compile(optimizer=fastconv.optim.Adam(model.parameters(), lr=1e-2),
                  loss="cross_entropy", metrics=["accuracy"])
    x, y = _data(n, dtype)
    # 200 = 3 batches of 64 and one of 8: two plans
    hist = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, seed=1,
                     callbacks=callbacks)
    return model, hist.history


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("fuse", [True, False])
def test_plan_matches_layers_bitwise(name, dtype, fuse, monkeypatch):
    ran = []
    real = TrainPlan.forward
    monkeypatch.setattr(TrainPlan, "forward", lambda self, x: ran.append(1) or real(self, x))
    a, ha = _fit(MODELS[name], dtype, True, monkeypatch, fuse=fuse)
    assert len(ran) == 8  # every step went through a plan
    b, hb = _fit(MODELS[name], dtype, False, monkeypatch, fuse=fuse)
    assert len(ran) == 8
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.data.tobytes() == q.data.tobytes()
        assert p.grad.tobytes() == q.grad.tobytes()
    assert ha["loss"] == hb["loss"] and ha["accuracy"] == hb["accuracy"]


@pytest.mark.parametrize("threads", [1, 2])
def test_plan_same_bits_for_any_thread_count(threads, monkeypatch):
    previous = fastconv.get_num_threads()
    fastconv.set_num_threads(threads)
    try:
        a, _ = _fit(MODELS["lenet5"], np.float32, True, monkeypatch, epochs=1)
    finally:
        fastconv.set_num_threads(previous)
    fastconv.set_num_threads(1)
    try:
        b, _ = _fit(MODELS["lenet5"], np.float32, False, monkeypatch, epochs=1)
    finally:
        fastconv.set_num_threads(previous)
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.data.tobytes() == q.data.tobytes()


class _Change(Callback):
    """After batch 1: freeze the first conv's weight, or give the last layer's
    bias a new array."""

    def __init__(self, what):
        super().__init__()
        self.what = what

    def on_batch_end(self, batch, logs=None):
        if batch == 1 and self.what == "freeze":
            self.model.layers[0].weight.requires_grad = False
        if batch == 1 and self.what == "new_array":
            last = self.model.layers[-1].bias
            last.data = last.data.copy()


@pytest.mark.parametrize("what", ["freeze", "new_array"])
def test_plan_follows_changes_made_by_callbacks(what, monkeypatch):
    builds = []
    real = TrainPlan.__init__
    monkeypatch.setattr(TrainPlan, "__init__",
                        lambda self, *a: builds.append(1) or real(self, *a))
    # whole batches only: one plan, built before the change, then one after it
    a, _ = _fit(MODELS["lenet5"], np.float32, True, monkeypatch, callbacks=[_Change(what)],
                epochs=1, n=192)
    assert len(builds) == 2
    b, _ = _fit(MODELS["lenet5"], np.float32, False, monkeypatch, callbacks=[_Change(what)],
                epochs=1, n=192)
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.data.tobytes() == q.data.tobytes()
        assert p.grad.tobytes() == q.grad.tobytes()  # a frozen weight's stays zero


def test_models_a_plan_does_not_cover_train_through_the_layers():
    assert plan_supported(fastconv.models.lenet5(seed=0))
    assert not plan_supported(fastconv.models.mnist_cnn(seed=0))  # Dropout
    assert not plan_supported(nn.Sequential([nn.Linear(4, 2), nn.Sigmoid()]))


def test_backward_after_a_planned_fit_asks_for_a_forward():
    model = fastconv.models.lenet5(seed=0)
    model.compile(optimizer="adam", loss="cross_entropy")
    x, y = _data(64, np.float32)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    with pytest.raises(RuntimeError, match="without a preceding forward"):
        model.backward(np.ones((64, 10), np.float32))
    model.forward(x)  # then the layers work as before
    assert model.backward(np.ones((64, 10), np.float32)) is None


def test_bad_input_raises_the_layers_error():
    model = fastconv.models.lenet5(seed=0)
    model.compile(optimizer="adam", loss="cross_entropy")
    x = np.zeros((64, 3, 28, 28), np.float32)  # 3 channels for a 1-channel conv
    with pytest.raises(ValueError, match="Conv2d: expected input with 1 channels"):
        model.fit(x, np.zeros(64, np.int64), batch_size=64, epochs=1, verbose=0)


def test_layers_whose_rows_are_not_the_samples_are_not_planned():
    """Flatten on another axis (an ONNX graph's) merges the batch into the rows:
    the plan's Flatten step would flatten per sample, so such a model trains
    through its layers."""
    from fastconv import nn
    from fastconv.nn.train_plan import plan_supported

    def model(axis):
        return nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Flatten(axis=axis),
                             nn.Linear(2 * 6 * 6, 3, rng=0))

    assert plan_supported(model(1))
    assert not plan_supported(model(0))
    assert not plan_supported(model(2))
