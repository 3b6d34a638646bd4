"""End-to-end tests of the ``fastconv`` command line on a small MNIST subset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import cli, nn
from fastconv import datasets as ds

MNIST_DIR = Path(
    os.environ.get("FASTCONV_MNIST_DIR")
    or Path(__file__).resolve().parents[1].parent / "shared" / "mnist"
)
HAVE_MNIST = all((MNIST_DIR / (n + ".gz")).is_file() or (MNIST_DIR / n).is_file() for n in ds.MNIST_FILES)
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST, reason=f"MNIST IDX files not found in {MNIST_DIR} (set FASTCONV_MNIST_DIR)"
)

DATA = ["--data-dir", str(MNIST_DIR), "--no-download"]
SMALL = DATA + ["--train-subset", "2000", "--test-subset", "1000"]
TINY = DATA + ["--train-subset", "1000", "--test-subset", "500"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # never the user's cache, never the network
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ds.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv(ds.ENV_MIRRORS, "http://127.0.0.1:9/")


@pytest.fixture(scope="module")
def mnist_cache():
    """Load MNIST once for the module: the CLI calls load_mnist, which we memoise here."""
    if not HAVE_MNIST:
        pytest.skip(f"MNIST IDX files not found in {MNIST_DIR}")
    return ds.load_mnist(MNIST_DIR, download=False)


@pytest.fixture
def fast_data(monkeypatch, mnist_cache):
    """Skip re-decoding 60,000 images in every CLI run of this module (saves ~1 s each)."""
    calls = []

    def load(data_dir=None, **kwargs):
        calls.append((data_dir, kwargs))
        (xt, yt), (xs, ys) = mnist_cache
        dtype = np.dtype(kwargs.get("dtype", np.float32))
        return (xt.astype(dtype, copy=False), yt), (xs.astype(dtype, copy=False), ys)

    monkeypatch.setattr(ds, "load_mnist", load)
    return calls


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def weights(path):
    model = nn.load_model(path)
    return {k: v for k, v in model.state_dict().items()}


@needs_mnist
def test_train_end_to_end(tmp_path, capsys, fast_data):
    metrics, model_path = tmp_path / "m.json", tmp_path / "model.npz"
    code, out, err = run(["train", *SMALL, "--epochs", "1", "--seed", "3", "--threads", "2",
                          "--val-size", "500", "--metrics-out", str(metrics),
                          "--save", str(model_path)], capsys)
    assert code == 0, err
    assert "epoch 1/1" in out and "val_acc" in out and "test accuracy" in out
    m = json.loads(metrics.read_text())
    for key in ("test_accuracy", "test_loss", "epochs", "train_images_per_second", "wall_seconds",
                "history", "seed", "threads", "fastconv_version"):
        assert key in m, key
    assert m["epochs"] == 1 and m["seed"] == 3 and m["threads"] == 2
    assert m["fastconv_version"] == fastconv.__version__
    assert m["train_size"] == 1500 and m["val_size"] == 500 and m["test_size"] == 1000
    assert len(m["history"]) == 1 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(m["history"][0])
    assert m["test_accuracy"] > 0.5  # learned something: 24 Adam steps on 1,500 images
    assert m["train_images_per_second"] > 0 and m["wall_seconds"] > 0
    # the saved model reproduces the reported test accuracy
    model = nn.load_model(model_path)
    (_, _), (x_te, y_te) = ds.load_mnist(MNIST_DIR)
    acc = float((model.predict(x_te[:1000]).argmax(1) == y_te[:1000]).mean())
    assert acc == pytest.approx(m["test_accuracy"], abs=1e-12)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@needs_mnist
def test_resume_equals_uninterrupted_bitwise(tmp_path, capsys, fast_data, monkeypatch):
    common = ["train", *TINY, "--epochs", "2", "--seed", "1", "--augment", "--quiet"]
    full = tmp_path / "full.npz"
    code, _, err = run(common + ["--save", str(full), "--metrics-out", str(tmp_path / "full.json")],
                       capsys)
    assert code == 0, err

    # interrupt a run right after its first checkpoint, as Ctrl-C would
    real_save = nn.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    ckpt, resumed = tmp_path / "ckpt.npz", tmp_path / "resumed.npz"
    monkeypatch.setattr(nn, "save_checkpoint", save_then_stop)
    code, _, err = run(common + ["--checkpoint", str(ckpt)], capsys)
    assert code == 130 and "interrupted" in err
    monkeypatch.setattr(nn, "save_checkpoint", real_save)
    assert nn.load_checkpoint(ckpt)["epoch"] == 0

    code, _, err = run(["train", *TINY, "--quiet", "--resume", str(ckpt), "--save", str(resumed),
                        "--threads", "1", "--metrics-out", str(tmp_path / "resumed.json")], capsys)
    assert code == 0, err
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    m_full = json.loads((tmp_path / "full.json").read_text())
    m_res = json.loads((tmp_path / "resumed.json").read_text())
    assert m_res["test_accuracy"] == m_full["test_accuracy"]
    assert m_res["resumed_from_epoch"] == 1 and len(m_res["history"]) == 2
    assert [h["loss"] for h in m_res["history"]] == [h["loss"] for h in m_full["history"]]


@needs_mnist
def test_resume_rejects_changed_settings(tmp_path, capsys, fast_data):
    ckpt = tmp_path / "c.npz"
    code, _, err = run(["train", *TINY, "--epochs", "1", "--quiet", "--checkpoint", str(ckpt)], capsys)
    assert code == 0, err
    code, _, err = run(["train", *TINY, "--resume", str(ckpt), "--lr", "0.5"], capsys)
    assert code == 2 and "--lr 0.5 differs from the checkpoint" in err and "usage:" in err
    code, _, err = run(["train", *SMALL, "--resume", str(ckpt)], capsys)
    assert code == 2 and "--train-subset 2000 differs" in err
    code, out, err = run(["train", *TINY, "--resume", str(ckpt)], capsys)  # already done
    assert code == 0 and "nothing to train" in out


@needs_mnist
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_loss_stops_with_clear_error(tmp_path, capsys, fast_data):
    code, out, err = run(["train", *TINY, "--epochs", "1", "--optimizer", "sgd", "--lr", "1e12",
                          "--metrics-out", str(tmp_path / "m.json")], capsys)
    assert code == 1
    assert "training diverged" in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "-1"], "--epochs: must be >= 1"),
        (["train", "--epochs", "two"], "expected an integer"),
        (["train", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["train", "--lr", "-0.1"], "--lr: must lie in"),
        (["train", "--lr-decay", "1.5"], "--lr-decay: must lie in"),
        (["train", "--model", "vgg"], "invalid choice: 'vgg'"),
        (["train", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
        (["train", "--augment", "zoom"], "unknown augmentation 'zoom'"),
        (["train", "--augment", "shift:-1"], "bad augmentation"),
        (["train", "--data-dir", "/nonexistent/mnist"], "--data-dir: /nonexistent/mnist is not a directory"),
        (["train", "--resume", "/nonexistent/ckpt.npz"], "--resume:"),
        (["train", "--save", "/nonexistent/dir/m.npz"], "--save: directory"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert "usage: fastconv" in err and message in err, err
    assert "Traceback" not in err


def test_missing_files_no_download(tmp_path, capsys):
    code, _, err = run(["train", "--data-dir", str(tmp_path), "--no-download"], capsys)
    assert code == 1
    assert "train-images-idx3-ubyte" in err and "--no-download" in err and "Traceback" not in err


def test_corrupt_data_is_a_clear_error(tmp_path, capsys):
    for name in ds.MNIST_FILES:
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    code, _, err = run(["train", "--data-dir", str(tmp_path)], capsys)
    assert code == 1 and "cannot load MNIST" in err and "truncated" in err


def test_info(capsys):
    code, out, err = run(["info"], capsys)
    assert code == 0, err
    assert fastconv.__version__ in out and "numpy" in out
    code, out, _ = run(["info", "--json"], capsys)
    assert code == 0 and "numpy" in json.loads(out)


def test_bench_without_runner(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastconv._bench_cli", None)  # import fails like a missing module
    code, _, err = run(["bench"], capsys)
    assert code == 1 and "bench/run.py" in err


def test_bench_delegates_to_runner(capsys, monkeypatch):
    import types

    seen = []
    fake = types.ModuleType("fastconv._bench_cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastconv._bench_cli", fake)
    code, _, _ = run(["bench", "--shapes", "a", "--threads", "1"], capsys)
    assert code == 0 and seen == [["--shapes", "a", "--threads", "1"]]


def test_parse_augment():
    assert cli.parse_augment("none") is None
    assert isinstance(cli.parse_augment("shift"), ds.RandomShift)
    aug = cli.parse_augment("shift:3, rotate:5,noise:0.1")
    assert [type(t).__name__ for t in aug.transforms] == ["RandomShift", "RandomRotation", "GaussianNoise"]
    assert aug.transforms[0].max_shift == 3 and aug.transforms[1].max_degrees == 5


def test_python_dash_m_and_help(tmp_path):
    # the fastconv under test (installed or in-place build), not whatever the cwd holds
    env = dict(os.environ, PYTHONPATH=str(Path(fastconv.__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "fastconv", "train", "--help"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and "--lr-decay" in proc.stdout and "--resume" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fastconv", "train", "--epochs", "0"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "usage:" in proc.stderr and "Traceback" not in proc.stderr


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_lenet5_recipe_reaches_99_percent(tmp_path, capsys, seed):
    """The promise of ``fastconv train`` without options (minutes per seed; -m slow)."""
    metrics = tmp_path / "m.json"
    code, out, err = run(["train", *DATA, "--seed", str(seed), "--metrics-out", str(metrics)], capsys)
    assert code == 0, err
    m = json.loads(metrics.read_text())
    print(f"seed {seed}: test accuracy {m['test_accuracy']:.4f} in {m['wall_seconds']:.0f} s "
          f"({m['train_images_per_second']:.0f} img/s, {m['threads']} threads)")
    assert m["test_accuracy"] >= 0.99


# Children import the fastconv under test, not the uncompiled source tree
_CHILD_ENV = dict(os.environ, PYTHONPATH=str(Path(fastconv.__file__).resolve().parents[1]))


# ---------------------------------------------------- bad input: the CLI ---
# test_cli.py covers --epochs/--batch-size/--lr/--lr-decay/--model/--optimizer/
# --augment/--data-dir/--resume (missing)/--save (missing dir) and unknown
# commands; these are the rest.
CLI_CASES = [
    (["train", "--threads", "0"], "--threads: must be >= 1"),
    (["train", "--threads", "many"], "expected an integer"),
    (["train", "--seed", "-3"], "--seed: must be >= 0"),
    (["train", "--train-subset", "0"], "--train-subset: must be >= 1"),
    (["train", "--test-subset", "x"], "expected an integer"),
    (["train", "--val-size", "-1"], "--val-size: must be >= 0"),
    (["train", "--weight-decay", "nan"], "--weight-decay: must lie in"),
    (["train", "--lr", "inf"], "--lr: must lie in"),
    (["train", "--lr-decay", "0"], "--lr-decay: must lie in"),
    (["train", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["train", "--augment", "shift:abc"], "bad augmentation"),
    (["train", "--augment", ","], "augmentation"),
    (["train", "--checkpoint", "/"], "--checkpoint: / is a directory"),
    (["train", "--metrics-out", "/nonexistent/dir/m.json"], "--metrics-out: directory"),
    (["train", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["info", "--bogus"], "unrecognized arguments"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_bad_arguments_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert "usage: fastconv" in err and message in err, err
    assert "Traceback" not in err


def test_cli_resume_from_corrupt_or_foreign_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3))
    model_file = tmp_path / "model.npz"
    model = nn.Sequential([nn.Flatten(), nn.Linear(64, 3)])
    model.compile(optimizer="sgd", loss="cross_entropy")
    model.save(model_file)
    for path, words in ((bad, "corrupt"), (plain, "not a fastconv"), (model_file, "checkpoint")):
        code = cli.main(["train", "--resume", str(path)])
        out, err = capsys.readouterr()
        assert code == 2, err
        assert "--resume" in err and words in err and "Traceback" not in err, err


def test_cli_missing_subcommand_args_never_traceback(tmp_path):
    """``python -m fastconv`` with garbage never prints a Python traceback."""
    for argv in (["train", "--epochs"], ["train", "--resume"], ["--version", "x"], ["bench", "-h"]):
        proc = subprocess.run([sys.executable, "-m", "fastconv", *argv], env=_CHILD_ENV,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr, (argv, proc.stderr)
