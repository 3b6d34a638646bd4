"""One-output (binary) models in Sequential: accuracy, predict and compile warnings."""

import warnings

import numpy as np
import pytest

from fastconv import nn, optim


def _separable(n=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.float32)


@pytest.mark.parametrize("target_shape", ["column", "flat"])
def test_binary_accuracy_cuts_the_single_output(target_shape):
    # argmax over one column is always class 0: accuracy stuck near 50%
    x, y = _separable()
    y = y[:, None] if target_shape == "column" else y
    model = nn.Sequential([nn.Linear(4, 1, rng=0)])
    model.compile(optimizer=optim.Adam(lr=0.05), loss=nn.BCEWithLogitsLoss(),
                  metrics=["accuracy"])
    hist = model.fit(x, y, epochs=15, batch_size=32, verbose=0, seed=0)
    assert hist.history["accuracy"][-1] > 0.95
    logits = model.forward(x)
    expected = np.mean((logits[:, 0] > 0) == (x[:, 0] > 0))
    assert model.evaluate(x, y)["accuracy"] == pytest.approx(expected)


def test_binary_accuracy_with_sigmoid_output_cuts_at_one_half():
    x, y = _separable()
    model = nn.Sequential([nn.Linear(4, 1, rng=0), nn.Sigmoid()])
    model.compile(optimizer=optim.Adam(lr=0.05), loss=nn.BCELoss(), metrics=["accuracy"])
    model.fit(x, y[:, None], epochs=15, batch_size=32, verbose=0, seed=0)
    p = model.predict(x)
    assert model.evaluate(x, y[:, None])["accuracy"] == pytest.approx(
        np.mean((p[:, 0] > 0.5) == (y > 0.5)))


def test_predict_applies_the_logistic_function_for_bce_with_logits():
    x, _ = _separable(16)
    model = nn.Sequential([nn.Linear(4, 2, rng=0)])
    model.compile(loss=nn.BCEWithLogitsLoss())
    z = model.forward(x).astype(np.float64)
    np.testing.assert_allclose(model.predict(x), 1 / (1 + np.exp(-z)), rtol=1e-6)


def test_compile_warns_for_mismatched_output_layers():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nn.Sequential([nn.Linear(4, 3, rng=0)]).compile(loss="nll")
        nn.Sequential([nn.Linear(4, 1, rng=0), nn.Sigmoid()]).compile(
            loss=nn.BCEWithLogitsLoss())
        nn.Sequential([nn.Linear(4, 3, rng=0), nn.LogSoftmax()]).compile(loss="nll")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "NLLLoss expects log-probabilities" in messages[0]
    assert "BCEWithLogitsLoss expects logits" in messages[1]


def test_fit_with_a_batch_size_hundreds_of_digits_long_runs_one_step():
    # steps used to be math.ceil(n / batch_size): the float division underflowed
    # to 0.0 for such a batch size, no step ran and the epoch divided by zero
    x, y = _separable(32)
    model = nn.Sequential([nn.Linear(4, 1, rng=0)])
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=10**400, epochs=1, verbose=0)
    assert len(hist.history["loss"]) == 1
