"""Sequential.fit / evaluate / predict on real MNIST, callbacks, save/load, checkpoints."""

import gzip
import io
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import models, nn, optim
from fastconv.nn import serialization

MNIST_DIR = Path(os.environ.get(
    "FASTCONV_MNIST_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "mnist"))


@pytest.fixture(autouse=True)
def _kernel_threads(request):
    """Tiny-network tests make many tiny kernel calls, which a 2-thread OpenMP
    team slows down badly on a loaded 2-core machine; they run on one thread.
    The MNIST tests keep the default thread count (the configuration users run)."""
    if "mnist_small" in request.fixturenames:
        yield
        return
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


def read_idx_prefix(path, count):
    """The first ``count`` items of an (optionally gzipped) IDX file: a tiny reader
    independent of fastconv.datasets."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        assert zero == 0 and dtype_code == 0x08
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        count = min(count, dims[0])
        item = int(np.prod(dims[1:], dtype=np.int64))
        data = np.frombuffer(f.read(count * item), np.uint8)
    return data.reshape((count,) + dims[1:])


def _mnist_file(stem):
    for name in (stem + ".gz", stem):
        if (MNIST_DIR / name).exists():
            return MNIST_DIR / name
    pytest.skip(f"MNIST not found in {MNIST_DIR} (set FASTCONV_MNIST_DIR)")


@pytest.fixture(scope="module")
def mnist_small():
    """2000 training and 500 test images, float32 in [0, 1], NCHW."""
    def load(kind, count):
        x = read_idx_prefix(_mnist_file(f"{kind}-images-idx3-ubyte"), count)
        y = read_idx_prefix(_mnist_file(f"{kind}-labels-idx1-ubyte"), count)
        return (x[:, None] / np.float32(255)).astype(np.float32), y.astype(np.int64)

    return load("train", 2000), load("t10k", 500)


def tiny_net(seed=0, dtype=np.float32, dropout=True):
    """A small conv net with every stateful piece: BN running stats and dropout RNG."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]
    layers = [
        nn.Conv2d(1, 4, 3, padding=1, rng=rngs[0], dtype=dtype), nn.BatchNorm2d(4, dtype=dtype),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 16, rng=rngs[0], dtype=dtype),
        nn.ReLU(),
    ]
    if dropout:
        layers.append(nn.Dropout(0.3, rng=rngs[1]))
    layers.append(nn.Linear(16, 3, rng=rngs[0], dtype=dtype))
    return nn.Sequential(layers)


def tiny_data(rng, n=96, dtype=np.float32):
    x = rng.standard_normal((n, 1, 8, 8)).astype(dtype)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 4:, :4].mean(axis=(1, 2)) > 0.3)
    return x, y


def compiled(model, lr=1e-2, **kw):
    return model.compile(optimizer=optim.Adam(model.parameters(), lr=lr, **kw),
                         loss="cross_entropy", metrics=["accuracy"])


# -- learning on MNIST ------------------------------------------------------------------
def test_lenet5_learns_mnist_subset(mnist_small):
    (x, y), (xt, yt) = mnist_small
    model = compiled(models.lenet5(seed=0), lr=2e-3)
    before = model.evaluate(xt, yt)
    hist = model.fit(x, y, batch_size=64, epochs=3, validation_data=(xt, yt), verbose=0, seed=0)
    h = hist.history
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy", "images_per_second", "lr"}
    assert len(h["loss"]) == 3 and hist.epoch == [0, 1, 2]
    assert h["loss"][-1] < h["loss"][0] < before["loss"]
    assert h["val_accuracy"][-1] > 0.85  # chance is 0.1
    assert all(v > 0 for v in h["images_per_second"])
    after = model.evaluate(xt, yt, batch_size=100)
    assert after["accuracy"] == pytest.approx(h["val_accuracy"][-1])
    proba = model.predict(xt[:50], batch_size=16)
    assert proba.shape == (50, 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert (proba.argmax(1) == yt[:50]).mean() > 0.8


def test_fit_with_one_hot_targets_augment_and_sgd(mnist_small):
    (x, y), (xt, yt) = mnist_small
    calls = []

    def augment(xb, rng):
        calls.append(len(xb))
        return xb + rng.normal(0, 0.01, xb.shape).astype(xb.dtype)

    model = models.lenet5(seed=1)
    model.compile(optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9), loss="cross_entropy",
                  metrics=["acc"])
    onehot = np.eye(10, dtype=np.float32)[y[:1000]]
    hist = model.fit(x[:1000], onehot, batch_size=50, epochs=2, verbose=0, augment=augment, seed=3)
    assert calls == [50] * 40
    assert hist.history["accuracy"][-1] > 0.5
    assert model.evaluate(xt, yt)["accuracy"] > 0.6


# -- save / load ------------------------------------------------------------------------
def test_save_load_gives_identical_predictions(tmp_path, rng):
    x, y = tiny_data(rng)
    model = compiled(tiny_net())
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastconv.load_model(path)
    assert type(loaded) is nn.Sequential and loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2)
    assert isinstance(loaded.optimizer, optim.Adam) and isinstance(loaded.loss, nn.CrossEntropyLoss)
    assert loaded.optimizer.iterations == model.optimizer.iterations
    assert loaded.metrics == ["accuracy"]
    # further training continues identically
    a = model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=5).history["loss"]
    b = loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=5).history["loss"]
    assert a == b
    # the file is a plain, pickle-free npz with the documented entries
    with np.load(path, allow_pickle=False) as npz:
        assert npz["__meta__"].dtype == np.uint8
        assert str(npz["fastconv_version"]) == fastconv.__version__
        assert "model/1.running_mean" in npz.files
        meta = json.loads(npz["__meta__"].tobytes())
    assert meta["model"]["class"] == "Sequential"
    # uncompiled load
    assert nn.load_model(path, compile=False).optimizer is None


def test_save_uncompiled_model_and_float64(tmp_path, rng):
    model = models.mnist_cnn(seed=0, dtype=np.float64)
    path = tmp_path / "cnn"
    model.save(path)  # written exactly at the given path
    loaded = nn.load_model(path)
    x = rng.random((2, 1, 28, 28))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.optimizer is None and loaded.dtype == np.float64


def test_atomic_save_survives_a_crash_mid_write(tmp_path, rng, monkeypatch):
    x, _ = tiny_data(rng, n=8)
    path = tmp_path / "m.npz"
    model = tiny_net(seed=0)
    model.save(path)
    expected = model.predict(x)
    other = tiny_net(seed=1)

    def crashing_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial garbage")
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(serialization.np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        other.save(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(nn.load_model(path).predict(x), expected)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temp file left behind

    def crashing_replace(src, dst):
        raise OSError("simulated power loss before rename")

    monkeypatch.setattr(serialization.os, "replace", crashing_replace)
    with pytest.raises(OSError):
        other.save(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(nn.load_model(path).predict(x), expected)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_corrupt_and_foreign_files_raise_clear_errors(tmp_path):
    path = tmp_path / "m.npz"
    tiny_net().save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        nn.load_model(truncated)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside a stored array: the zip CRC catches it
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt.npz"):
        nn.load_model(corrupt)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="junk.npz"):
        nn.load_model(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(ValueError, match="foreign.npz.*not a fastconv model file"):
        nn.load_model(foreign)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        nn.load_model(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="is a model file, not a checkpoint"):
        nn.load_checkpoint(path)


# -- checkpoints and exact resume ------------------------------------------------------------
def test_checkpoint_resume_is_bitwise_identical(tmp_path, rng):
    x, y = tiny_data(rng)
    xv, yv = tiny_data(rng, n=32)

    def augment(xb, r):
        return xb + r.normal(0, 0.05, xb.shape).astype(xb.dtype)

    kw = dict(batch_size=16, verbose=0, augment=augment, validation_data=(xv, yv))
    full = compiled(tiny_net(seed=3), lr=5e-3, weight_decay=1e-4)
    h_full = full.fit(x, y, epochs=3, seed=np.random.default_rng(11), **kw)

    part = compiled(tiny_net(seed=3), lr=5e-3, weight_decay=1e-4)
    ckpt_path = tmp_path / "ckpt-{epoch}.npz"
    cb = nn.ModelCheckpoint(str(ckpt_path))
    part.fit(x, y, epochs=1, seed=np.random.default_rng(11), callbacks=[cb], **kw)
    assert cb.saved == [str(tmp_path / "ckpt-1.npz")]
    del part

    ckpt = nn.load_checkpoint(tmp_path / "ckpt-1.npz")
    assert ckpt["epoch"] == 0 and ckpt["extra"]["logs"]["loss"] > 0
    resumed = ckpt["model"]
    assert resumed.optimizer is ckpt["optimizer"] and resumed.optimizer.weight_decay == 1e-4
    h_res = resumed.fit(x, y, epochs=3, initial_epoch=ckpt["epoch"] + 1, seed=ckpt["rng"], **kw)
    assert h_res.epoch == [1, 2]
    assert h_res.history["loss"] == h_full.history["loss"][1:]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_save_checkpoint_api(tmp_path):
    model = compiled(tiny_net())
    gen = np.random.default_rng(42)
    gen.random(3)
    path = tmp_path / "c.npz"
    nn.save_checkpoint(path, model, model.optimizer, epoch=4, rng_state=gen.bit_generator.state,
                       extra={"args": {"epochs": 10}})
    ckpt = nn.load_checkpoint(path)
    assert ckpt["epoch"] == 4 and ckpt["extra"] == {"args": {"epochs": 10}}
    assert ckpt["rng"].random() == gen.random()
    nn.save_checkpoint(path, model, None, epoch=0, rng_state=None)
    ckpt = nn.load_checkpoint(path)
    assert ckpt["optimizer"] is None and ckpt["rng"] is None
    with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
        nn.save_checkpoint(path, model, None, epoch=0, rng_state=None, extra={"a": np.zeros(2)})
    with pytest.raises(TypeError, match="rng_state: expected"):
        nn.save_checkpoint(path, model, None, epoch=0, rng_state=42)


# -- callbacks -----------------------------------------------------------------------------
def test_learning_rate_scheduler_and_hooks(rng):
    x, y = tiny_data(rng, n=40)
    model = compiled(tiny_net(), lr=0.01)
    events = []
    hooks = nn.LambdaCallback(
        on_train_begin=lambda logs: events.append("train_begin"),
        on_epoch_begin=lambda e, logs: events.append(f"epoch_begin {e}"),
        on_batch_end=lambda b, logs: events.append(f"batch {b} {logs['size']}"),
        on_epoch_end=lambda e, logs: events.append(f"epoch_end {e}"),
        on_train_end=lambda logs: events.append("train_end"))
    sched = nn.LearningRateScheduler(optim.ExponentialDecay(0.6))
    hist = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[sched, hooks])
    np.testing.assert_allclose(hist.history["lr"], [0.01, 0.006, 0.0036])
    assert events[:6] == ["train_begin", "epoch_begin 0", "batch 0 16", "batch 1 16", "batch 2 8",
                          "epoch_end 0"]
    assert events[-1] == "train_end" and len(events) == 2 + 3 * 5
    keras_style = nn.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[keras_style])
    np.testing.assert_allclose(hist.history["lr"], [0.0018, 0.0009])


def test_early_stopping_restores_best_weights(rng):
    x, y = tiny_data(rng, n=32)
    model = compiled(tiny_net(), lr=0.01)
    scores = iter([0.5, 0.4, 0.45, 0.47, 0.3])
    snapshots = {}

    class FakeMetric(nn.Callback):  # runs before EarlyStopping in the list
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = next(scores)
            snapshots[epoch] = self.model.state_dict()

    stop = nn.EarlyStopping(monitor="score", patience=2, mode="min", restore_best_weights=True)
    hist = model.fit(x, y, batch_size=16, epochs=10, verbose=0, callbacks=[FakeMetric(), stop])
    assert hist.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, snapshots[1][k])
    with pytest.warns(UserWarning, match="monitor 'val_loss' is not in the epoch logs"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[nn.EarlyStopping()])


def test_model_checkpoint_save_best_only(tmp_path, rng):
    x, y = tiny_data(rng, n=32)
    model = compiled(tiny_net(), lr=0.01)
    cb = nn.ModelCheckpoint(str(tmp_path / "best.npz"), monitor="loss", save_best_only=True)
    losses = model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[cb]).history["loss"]
    improvements = sum(v < min(losses[:i], default=np.inf) for i, v in enumerate(losses))
    assert len(cb.saved) == improvements and set(cb.saved) == {str(tmp_path / "best.npz")}
    assert nn.load_checkpoint(tmp_path / "best.npz")["epoch"] == int(np.argmin(losses))


# -- failure modes and validation --------------------------------------------------------------
def test_nan_loss_raises_naming_epoch_and_step(rng):
    x, y = tiny_data(rng, n=32)
    x[9] = np.nan
    model = compiled(tiny_net(dropout=False))
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 3 \(of 8\)"):
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert model.training  # mode restored after the error


def test_fit_argument_validation(rng):
    x, y = tiny_data(rng, n=16)
    model = tiny_net()
    with pytest.raises(RuntimeError, match="call model.compile"):
        model.fit(x, y)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        model.compile(optimizer="lbfgs")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        model.compile(metrics=["f1"])
    with pytest.raises(ValueError, match="parameters of another model"):
        model.compile(optimizer=optim.SGD(tiny_net().parameters()))
    model.compile("sgd", "cross_entropy", ["accuracy"])
    assert isinstance(model.optimizer, optim.SGD)
    with pytest.raises(ValueError, match="x and y must have the same length, got 16 samples in x and 15"):
        model.fit(x, y[:15])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        model.fit(x, y, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        model.fit(x, y, batch_size=8.0)
    with pytest.raises(TypeError, match="y must be int64 class labels or float one-hot"):
        model.fit(x, y.astype(str))
    with pytest.raises(TypeError, match="x must be a real numeric array"):
        model.fit(x.astype(complex), y)
    with pytest.raises(ValueError, match=r"validation_data\[0\] samples have shape"):
        model.fit(x, y, validation_data=(x[:, :, :4], y), verbose=0)
    with pytest.raises(ValueError, match=r"expected input with 1 channels, got input of shape \(16, 3, 8, 8\)"):
        model.fit(np.repeat(x, 3, axis=1), y, verbose=0)
    with pytest.raises(ValueError, match="class labels must be in"):
        model.fit(x, y + 5, verbose=0)
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2"):
        model.fit(x, y, verbose=3)


def test_inputs_of_other_dtypes_are_converted_per_batch(rng):
    x, y = tiny_data(rng, n=16, dtype=np.float64)
    model = compiled(tiny_net())
    model.fit(x, y, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.predict(x), model.predict(x.astype(np.float32)))
    assert model.predict((x * 100).astype(np.uint8)).dtype == np.float32


def test_progress_output(rng, capsys, monkeypatch):
    x, y = tiny_data(rng, n=16)
    model = compiled(tiny_net())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")
    model.fit(x, y, batch_size=8, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and "Epoch 2/2" in out and "img/s" in out and "accuracy" in out
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm is optional: text fallback
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    model.fit(x, y, batch_size=8, epochs=1, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/1 2/2" in out and "loss" in out


def test_progress_bar_uses_tqdm_when_installed(rng, capsys):
    pytest.importorskip("tqdm")
    x, y = tiny_data(rng, n=16)
    compiled(tiny_net()).fit(x, y, batch_size=8, epochs=1, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/1" in err and "2/2" in err


def test_predict_raw_outputs_for_mse_and_softmax_head(rng):
    x, y = tiny_data(rng, n=16)
    model = tiny_net(dropout=False)
    model.compile("adam", "mse")
    model.fit(x, np.eye(3, dtype=np.float32)[y], batch_size=8, verbose=0)
    model.eval()
    with nn.no_grad():
        raw = model(x)
    np.testing.assert_array_equal(model.predict(x), raw)
    head = nn.Sequential([nn.Flatten(), nn.Linear(64, 3), nn.Softmax()])
    p = head.predict(x)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    with pytest.warns(UserWarning, match="CrossEntropyLoss expects logits"):
        head.compile("adam", "cross_entropy")
