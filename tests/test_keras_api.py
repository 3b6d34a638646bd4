"""What a Keras or PyTorch user reaches for first: Sequential(*layers),
fit(validation_split / sample_weight / class_weight), a warning for unscaled
images, layer errors that name the layer, one progress line per epoch in a log,
and a confusion matrix from evaluate."""

import io
import re
import sys
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import models, nn, optim
from fastconv.nn import metrics


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: many tiny kernel calls, which a 2-thread team only slows down
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


def _mlp(seed=0, dtype=np.float64, features=6, classes=3):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes, rng=rng, dtype=dtype))


def _data(n=40, features=6, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)), rng.integers(0, classes, n)


# -- 1. constructors ---------------------------------------------------------------
def test_sequential_accepts_pytorch_keras_and_single_layer_forms():
    a, b, c = nn.Flatten(), nn.Linear(4, 3), nn.ReLU()
    assert nn.Sequential(a, b, c).layers == [a, b, c]           # PyTorch
    a, b, c = nn.Flatten(), nn.Linear(4, 3), nn.ReLU()
    assert nn.Sequential([a, b, c]).layers == [a, b, c]         # Keras
    a, b = nn.Flatten(), nn.Linear(4, 3)
    assert nn.Sequential((a, b)).layers == [a, b]
    b = nn.Linear(4, 3)
    assert nn.Sequential(b).layers == [b]                       # one layer
    assert nn.Sequential().layers == [] and nn.Sequential(None).layers == []
    b = nn.Linear(4, 3)
    assert nn.Sequential(layers=[b]).layers == [b]              # Keras keyword
    with pytest.raises(TypeError, match="not both"):
        nn.Sequential(nn.ReLU(), layers=[nn.ReLU()])
    # from_config still round-trips (it passes a list)
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert len(nn.Sequential.from_config(m.get_config())) == 2


@pytest.mark.parametrize("args, pos, got", [
    ((nn.Linear(2, 3), "relu"), 1, "str"),
    ((nn.Linear,), 0, "type"),                  # the class, not an instance
    (([nn.Linear(2, 3), nn.ReLU(), 3],), 2, "int"),
])
def test_sequential_rejects_non_modules_naming_the_position(args, pos, got):
    with pytest.raises(TypeError, match=rf"Sequential: layers\[{pos}\] must be a fastconv.nn "
                                        rf"Module, got {got}"):
        nn.Sequential(*args)


# -- 2. validation_split, sample_weight, class_weight ------------------------------------
def test_validation_split_holds_out_the_last_fraction_before_shuffling():
    x, y = _data(50)
    m1, m2 = _mlp(), _mlp()
    for m in (m1, m2):
        m.compile(optim.SGD(lr=0.1), "cross_entropy", ["accuracy"])
    # Keras: split_at = ceil(50 * 0.9) = 45; the last 5 samples validate
    h1 = m1.fit(x, y, batch_size=8, epochs=3, validation_split=0.1, seed=3, verbose=0)
    h2 = m2.fit(x[:45], y[:45], batch_size=8, epochs=3, validation_data=(x[45:], y[45:]),
                seed=3, verbose=0)
    assert h1.history["loss"] == h2.history["loss"]
    assert h1.history["val_loss"] == h2.history["val_loss"]
    assert h1.history["val_accuracy"] == h2.history["val_accuracy"]
    np.testing.assert_array_equal(m1[1].weight.data, m2[1].weight.data)


@pytest.mark.parametrize("split", [0, 1, 1.5, -0.1, True, "0.1", 0.001])
def test_validation_split_out_of_range(split):
    x, y = _data(50)
    m = _mlp().compile("sgd", "cross_entropy")
    with pytest.raises(ValueError, match="fit: validation_split"):
        m.fit(x, y, validation_split=split, verbose=0)


def test_validation_split_and_validation_data_together_is_an_error():
    x, y = _data(50)
    m = _mlp().compile("sgd", "cross_entropy")
    with pytest.raises(ValueError, match="validation_data or validation_split, not both"):
        m.fit(x, y, validation_split=0.2, validation_data=(x, y), verbose=0)


def test_sample_weight_matches_a_hand_computation():
    """One SGD step on one batch: the logged loss is sum(w_i * l_i) / N (Keras's
    'sum_over_batch_size') and the gradient is that loss's, computed by hand."""
    x, y = _data(8)
    w = np.array([0.0, 1.0, 2.0, 0.5, 3.0, 1.0, 0.25, 1.5])
    m = _mlp()
    W0, b0 = m[1].weight.data.copy(), m[1].bias.data.copy()
    lr = 0.1
    m.compile(optim.SGD(lr=lr), "cross_entropy")
    h = m.fit(x, y, batch_size=8, epochs=1, shuffle=False, sample_weight=w, verbose=0)

    z = x @ W0.T + b0
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    per_sample = -np.log(p[np.arange(8), y])
    n = len(x)
    assert h.history["loss"][0] == pytest.approx(np.sum(w * per_sample) / n, rel=1e-12)
    dz = p.copy()
    dz[np.arange(8), y] -= 1
    dz *= (w / n)[:, None]
    np.testing.assert_allclose(m[1].weight.data, W0 - lr * dz.T @ x, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(m[1].bias.data, b0 - lr * dz.sum(axis=0), rtol=1e-12, atol=1e-15)


def test_unit_sample_weight_is_unweighted_training():
    x, y = _data(30)
    m1, m2 = _mlp(), _mlp()
    for m in (m1, m2):
        m.compile(optim.SGD(lr=0.1), "mse")
    h1 = m1.fit(x, y, batch_size=7, epochs=2, seed=0, verbose=0)
    h2 = m2.fit(x, y, batch_size=7, epochs=2, seed=0, verbose=0, sample_weight=np.ones(30))
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-12)
    np.testing.assert_allclose(m1[1].weight.data, m2[1].weight.data, rtol=1e-12, atol=1e-15)


def test_class_weight_is_a_per_sample_weight_of_the_label():
    x, y = _data(30)
    m1, m2, m3 = _mlp(), _mlp(), _mlp()
    for m in (m1, m2, m3):
        m.compile(optim.SGD(lr=0.1), "cross_entropy")
    cw = {0: 3.0, 2: 0.5}   # class 1 is missing: weight 1
    m1.fit(x, y, batch_size=8, epochs=2, seed=0, verbose=0, class_weight=cw)
    sw = np.array([cw.get(int(c), 1.0) for c in y])
    m2.fit(x, y, batch_size=8, epochs=2, seed=0, verbose=0, sample_weight=sw)
    np.testing.assert_array_equal(m1[1].weight.data, m2[1].weight.data)
    # both given: multiplied (Keras)
    m3.fit(x, y, batch_size=8, epochs=2, seed=0, verbose=0, class_weight=cw,
           sample_weight=np.full(30, 2.0))
    assert not np.array_equal(m3[1].weight.data, m1[1].weight.data)


@pytest.mark.parametrize("kw, exc, msg", [
    ({"sample_weight": np.ones(29)}, ValueError, r"sample_weight must have shape \(30,\)"),
    ({"sample_weight": np.full(30, -1.0)}, ValueError, "finite and >= 0"),
    ({"sample_weight": np.full(30, np.nan)}, ValueError, "finite and >= 0"),
    ({"sample_weight": np.array(["a"] * 30)}, TypeError, "sample_weight must be a real"),
    ({"class_weight": [1.0, 2.0]}, TypeError, "class_weight must be a dict"),
    ({"class_weight": {0: -1.0}}, ValueError, r"class_weight\[0\] must be a finite number"),
    ({"class_weight": {"a": 1.0}}, ValueError, "class_weight keys must be class indices"),
])
def test_weight_arguments_are_checked(kw, exc, msg):
    x, y = _data(30)
    m = _mlp().compile("sgd", "cross_entropy")
    with pytest.raises(exc, match=msg):
        m.fit(x, y, verbose=0, **kw)


# -- 3. unscaled images --------------------------------------------------------------
def test_fit_warns_once_on_raw_uint8_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 1, 4, 4)).astype(np.uint8)
    x[0, 0, 0, 0] = 255
    y = rng.integers(0, 3, 24)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).compile("sgd", "cross_entropy")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m.fit(x, y, batch_size=8, epochs=2, verbose=0)
    msgs = [str(r.message) for r in rec if issubclass(r.category, UserWarning)]
    assert msgs == ["fit: x is uint8 with values in [0, 255]; scale it to [0, 1] first "
                    "(x / 255.0): unscaled inputs make training slow or unstable"]
    assert rec[0].filename == __file__  # points at the caller's fit line


def test_fit_warns_on_pixels_converted_to_float_but_not_divided():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 1, 4, 4)).astype(np.float32)
    x[0, 0, 0, 0] = 255
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).compile("sgd", "cross_entropy")
    with pytest.warns(UserWarning, match=re.escape(
            "fit: x is float32 holding whole numbers with values in [0, 255]; scale it to "
            "[0, 1] first (x / 255.0)")):
        m.fit(x, rng.integers(0, 3, 24), verbose=0)


def test_no_scaling_warning_for_scaled_or_binary_input():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 24)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).compile("sgd", "cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.fit(rng.random((24, 1, 4, 4)), y, verbose=0)
        m.fit(rng.standard_normal((24, 1, 4, 4)) * 3, y, verbose=0)   # standardised
        m.fit(rng.integers(0, 2, (24, 1, 4, 4)).astype(np.float64), y, verbose=0)
        m.fit(rng.integers(0, 2, (24, 1, 4, 4)).astype(np.uint8), y, verbose=0)


# -- 4. layer errors name the layer ------------------------------------------------------
def _run(model, how, x):
    if how == "predict":
        return model.predict(x)
    if how == "eval_forward":
        return model.eval().forward(x)
    if how == "train_forward":
        return model.train().forward(x)
    model.compile("sgd", "cross_entropy")
    return model.fit(x, np.zeros(len(x), np.int64), verbose=0)


HOWS = ["predict", "eval_forward", "train_forward", "fit"]


@pytest.mark.parametrize("how", HOWS)
def test_single_image_without_batch_axis(how):
    m = models.lenet5(seed=0)
    x = np.zeros((1, 28, 28), np.float32)
    # fit too: (1, 28, 28) passes as 1 sample of shape (28, 28) until Conv2d sees it
    with pytest.raises(nn.LayerInputError) as info:
        _run(m, how, x)
    assert str(info.value) == (
        "layer 0 (Conv2d(1 -> 6, 5x5)): Conv2d: expected 4-D input, got input of shape "
        "(1, 28, 28); a single sample has no batch axis: add it with x[None] or "
        "x.reshape(1, 1, H, W)")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, ValueError)  # the layer's own error, chained


@pytest.mark.parametrize("how", HOWS)
def test_channels_last_input(how):
    m = models.lenet5(seed=0)
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "layer 0 (Conv2d(1 -> 6, 5x5)): Conv2d: expected input with 1 channels, got input "
            "of shape (4, 28, 28, 1); the input looks like NHWC (channels last); fastconv "
            "expects NCHW: transpose with x.transpose(0, 3, 1, 2)")):
        _run(m, how, x)


@pytest.mark.parametrize("how", HOWS)
def test_lenet5_on_32x32_names_the_linear_and_the_size_it_was_built_for(how):
    m = models.lenet5(seed=0)
    x = np.zeros((4, 1, 32, 32), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "layer 7 (Linear(400 -> 120)): Linear: expected input of shape (N, 400), got shape "
            "(4, 576); the layers before Flatten give 400 features for 28x28 images; this "
            "input is 32x32: resize the images to 28x28 or change layer 7's in_features to 576")):
        _run(m, how, x)


@pytest.mark.parametrize("how", ["predict", "eval_forward", "train_forward"])
def test_nested_model_errors_give_the_nested_index(how):
    inner = nn.Sequential(nn.Flatten(), nn.Linear(10, 3))
    m = nn.Sequential(nn.ReLU(), inner)
    with pytest.raises(nn.LayerInputError, match=re.escape(
            "layer 1.1 (Linear(10 -> 3)): Linear: expected input of shape (N, 10), "
            "got shape (2, 12)")) as info:
        _run(m, how, np.zeros((2, 3, 4), np.float32))
    assert info.value.path == (1, 1) and info.value.layer is inner[1]


# -- 5. progress in a log ----------------------------------------------------------------
class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def _fit_printing(monkeypatch, tty, epochs=3):
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stdout", stream)
    x, y = _data(64)
    m = _mlp().compile("sgd", "cross_entropy", ["accuracy"])
    m.fit(x, y, batch_size=4, epochs=epochs, verbose=1)
    return stream.getvalue()


def test_progress_to_a_file_is_one_line_per_epoch(monkeypatch):
    out = _fit_printing(monkeypatch, tty=False)
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 3
    for e, line in enumerate(lines, 1):
        assert line.startswith(f"Epoch {e}/3 16/16  loss ")
        assert re.search(r"accuracy \d\.\d{4}  [\d,]+ img/s  lr 0\.01$", line)


def test_progress_on_a_terminal_redraws_with_images_per_second(monkeypatch):
    try:
        import tqdm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tqdm is installed: the terminal path draws a tqdm bar")
    out = _fit_printing(monkeypatch, tty=True, epochs=1)
    assert out.startswith("\rEpoch 1/1 ")
    assert re.search(r"\rEpoch 1/1 \d+/16  loss \S+  accuracy \S+  [\d,]+ img/s", out)


# -- 6. confusion matrix and per-class accuracy --------------------------------------------
def test_confusion_matrix_by_hand():
    # rows: true class; columns: predicted (asymmetric, so a transpose shows)
    cm = metrics.confusion_matrix([0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 1, 1, 0, 0])
    np.testing.assert_array_equal(cm, [[2, 0, 0], [0, 1, 1], [1, 1, 1]])
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(metrics.confusion_matrix([1], [1], num_classes=3),
                                  [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    acc = metrics.per_class_accuracy(metrics.confusion_matrix([1], [1], num_classes=3))
    assert np.isnan(acc[0]) and acc[1] == 1.0 and np.isnan(acc[2])
    np.testing.assert_allclose(metrics.per_class_accuracy(cm), [1.0, 0.5, 1 / 3])


def test_confusion_matrix_agrees_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    np.testing.assert_array_equal(metrics.confusion_matrix(t, p, 7),
                                  sk.confusion_matrix(t, p, labels=range(7)))


@pytest.mark.parametrize("args, exc, msg", [
    (([0, 1], [0]), ValueError, "same length"),
    (([0.5], [0]), TypeError, "y_true must be integer class labels"),
    (([0, 3], [0, 1], 3), ValueError, "labels must be < num_classes=3"),
    (([-1], [0]), ValueError, "y_true must be >= 0"),
    (([0], [0], 0), ValueError, "num_classes must be an int >= 1"),
])
def test_confusion_matrix_checks(args, exc, msg):
    with pytest.raises(exc, match=msg):
        metrics.confusion_matrix(*args)


def test_evaluate_per_class_matches_predict():
    x, y = _data(50, classes=4)
    m = _mlp(classes=4).compile("sgd", "cross_entropy", ["accuracy"])
    m.fit(x, y, epochs=3, verbose=0, seed=0)
    r = m.evaluate(x, y, batch_size=16, per_class=True)
    cm = metrics.confusion_matrix(y, m.predict(x).argmax(1), 4)
    np.testing.assert_array_equal(r["confusion_matrix"], cm)
    np.testing.assert_array_equal(r["per_class_accuracy"], metrics.per_class_accuracy(cm))
    assert r["accuracy"] == np.trace(cm) / 50
    assert "confusion_matrix" not in m.evaluate(x, y)
    with pytest.raises(ValueError, match="per_class=True needs class targets"):
        _mlp(classes=1).compile("sgd", "mse").evaluate(x, np.linspace(0.1, 2.9, 50),
                                                       per_class=True)
