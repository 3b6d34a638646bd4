"""Training survives faults: SIGKILL at random moments, NaN losses, bad model files.

* Checkpoints are atomic: a process killed with SIGKILL at any moment leaves
  either no checkpoint or a complete, loadable, self-consistent one; resuming
  from it gives the uninterrupted run's weights bit for bit.
* Model files are read with ``np.load(..., allow_pickle=False)``: a pickled
  object array planted in a .npz is refused and its payload never runs.

Already covered elsewhere (not repeated here): in-process resume equality and
changed-settings refusal (tests/test_cli.py), crash mid-write / before rename
and truncated, bit-flipped, junk and foreign files (tests/test_training.py
``test_atomic_save_survives_a_crash_mid_write``,
``test_corrupt_and_foreign_files_raise_clear_errors``), the NaN loss naming
epoch and step in ``fit`` (``test_nan_loss_raises_naming_epoch_and_step``).
"""

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import nn
from fastconv.nn import file_checks, serialization

REPO_ROOT = Path(fastconv.__file__).resolve().parents[1]
# The fastconv under test (installed in CI, in-place build in a checkout); children
# never run from the repository root, whose uncompiled sources would shadow it.
PKG_PARENT = str(Path(fastconv.__file__).resolve().parent.parent)
ENV = dict(os.environ, PYTHONPATH=PKG_PARENT, OMP_NUM_THREADS="1")
# MNIST sits beside the checkout (tests/ -> repo -> its parent), wherever fastconv is installed
MNIST_DIR = Path(os.environ.get("FASTCONV_MNIST_DIR")
                 or Path(__file__).resolve().parents[1].parent / "shared" / "mnist")
HAVE_MNIST = any(MNIST_DIR.glob("train-images-idx3-ubyte*"))
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"no MNIST in {MNIST_DIR}")
TRAIN = [sys.executable, "-m", "fastconv", "train", "--data-dir", str(MNIST_DIR),
         "--no-download", "--train-subset", "600", "--test-subset", "100", "--batch-size", "50",
         "--epochs", "4", "--seed", "5", "--quiet"]


def _check_complete_checkpoint(path, max_epochs):
    """A checkpoint that loads, and whose parts agree with each other."""
    ck = nn.load_checkpoint(path)
    epoch = ck["epoch"]
    assert 0 <= epoch < max_epochs
    cli = ck["extra"]["cli"]["settings"]
    assert cli["seed"] == 5 and cli["epochs"] == max_epochs
    assert len(ck["extra"]["history"]) == epoch + 1
    model, opt = ck["model"], ck["optimizer"]
    assert opt is not None and ck["rng"] is not None
    for name, value in model.state_dict().items():
        assert np.isfinite(value).all(), name
    # Adam has taken exactly (epoch + 1) * steps-per-epoch steps
    assert opt.state_dict()["iterations"] == (epoch + 1) * 12
    return epoch


def _kill_after(argv, delay, cwd):
    proc = subprocess.Popen(argv, env=ENV, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return proc.returncode


@needs_mnist
def test_sigkill_at_random_moments_leaves_a_complete_checkpoint(tmp_path):
    # an uninterrupted run: its final weights, its length and when it first checkpoints
    ref_ckpt = tmp_path / "ref.npz"
    t0 = time.perf_counter()
    full = subprocess.Popen(TRAIN + ["--save", str(tmp_path / "full.npz"), "--checkpoint",
                                     str(ref_ckpt)], env=ENV, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while full.poll() is None:
        if first is None and ref_ckpt.exists():
            first = time.perf_counter() - t0
        time.sleep(0.005)
    total = time.perf_counter() - t0
    assert full.returncode == 0, full.stderr.read()
    full.stderr.close()
    first = first or 0.5 * total
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    # mostly after the first checkpoint, where a kill can tear a write or an epoch
    delays = sorted(rng.uniform(0.9 * first, total, size=3))
    seen = []
    for i, delay in enumerate(delays):
        ckpt = tmp_path / f"ck{i}.npz"
        rc = _kill_after(TRAIN + ["--checkpoint", str(ckpt)], delay, tmp_path)
        if ckpt.exists():
            seen.append(_check_complete_checkpoint(ckpt, 4))
        else:
            assert rc != 0  # killed before the first epoch ended
    print(f"run {total:.1f} s, first checkpoint {first:.1f} s; kills at {np.round(delays, 2)} s; checkpoint epochs {seen}")

    # resume the latest surviving checkpoint of a killed run: equal to the full run
    ckpt = tmp_path / "resume.npz"
    for _ in range(50):  # wait for the first checkpoint, then kill
        proc = subprocess.Popen(TRAIN + ["--checkpoint", str(ckpt)], env=ENV, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if ckpt.exists():
            break
    epoch = _check_complete_checkpoint(ckpt, 4)
    resumed = subprocess.run(
        [sys.executable, "-m", "fastconv", "train", "--data-dir", str(MNIST_DIR), "--no-download",
         "--quiet", "--resume", str(ckpt), "--save", str(tmp_path / "resumed.npz")],
        env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = nn.load_model(tmp_path / "full.npz").state_dict()
    b = nn.load_model(tmp_path / "resumed.npz").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after resuming from epoch {epoch}"


_SAVE_LOOP = """
import sys, numpy as np
from fastconv import models, nn
model = models.mnist_cnn(seed=0)  # ~3.3 M parameters: each write takes a while
model.compile(optimizer="adam", loss="cross_entropy")
path = sys.argv[1]
for epoch in range(10**6):
    for p in model.parameters():
        p.data.fill(epoch % 1000)  # every array says which save it belongs to
    nn.save_checkpoint(path, model, model.optimizer, epoch, rng_state=np.random.default_rng(epoch),
                       extra={"epoch": epoch})
    print(epoch, flush=True)
"""


def test_sigkill_during_back_to_back_checkpoint_writes(tmp_path):
    """Kill a process that does nothing but write checkpoints: the file is never torn."""
    path = tmp_path / "ck.npz"
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    loaded = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP, str(path)], env=ENV,
                                cwd=PKG_PARENT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline(), proc.stderr.read()  # first save done
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        ck = nn.load_checkpoint(path)
        epoch = ck["epoch"]
        assert ck["extra"] == {"epoch": epoch}
        for name, value in ck["model"].state_dict().items():
            if name.endswith(("weight", "bias")):
                assert (value == epoch % 1000).all(), f"{name} is from another save than {epoch}"
        loaded += 1
    assert loaded == 4


@needs_mnist
def test_cli_nan_loss_names_the_step(tmp_path):
    proc = subprocess.run(TRAIN[:-1] + ["--optimizer", "sgd", "--lr", "1e12", "--epochs", "1"],
                          env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "training diverged" in proc.stderr and "step" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------- no pickle, ever ---
def test_loader_uses_allow_pickle_false():
    # serialization reads files through file_checks (the npz reader)
    src = inspect.getsource(serialization) + inspect.getsource(file_checks)
    # The loader reads members with zipfile and parses npy headers itself;
    # any np.load that comes back must keep pickles off, and object dtypes are refused.
    loads = [line.strip() for line in src.splitlines() if "np.load(" in line]
    assert all("allow_pickle=False" in line for line in loads), loads
    assert "dtype.hasobject" in src
    assert "import pickle" not in src and "pickle.load" not in src


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _plant(path, out, key, value):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[key] = value
    np.savez(out, **arrays)  # savez pickles object arrays


@pytest.mark.parametrize("where", ["weight", "meta", "optimizer-slot", "extra-entry"])
def test_pickled_object_array_is_refused_and_never_runs(tmp_path, where):
    model = nn.Sequential([nn.Flatten(), nn.Linear(4, 2)])
    model.compile(optimizer="adam", loss="cross_entropy")
    model.fit(np.ones((4, 4), np.float32), np.array([0, 1, 0, 1]), verbose=0)
    good = tmp_path / "good.npz"
    nn.save_checkpoint(good, model, model.optimizer, 0, rng_state=None)
    marker = tmp_path / "PWNED"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(str(marker))
    with np.load(good, allow_pickle=False) as npz:
        files = npz.files
    key = {"weight": next(k for k in files if k.startswith("model/")),
           "meta": "__meta__",
           "optimizer-slot": next(k for k in files if k.startswith("optimizer/")),
           "extra-entry": "zzz_extra"}[where]
    bad = tmp_path / "bad.npz"
    _plant(good, bad, key, evil)
    for load in (nn.load_model, nn.load_checkpoint):
        with pytest.raises(ValueError, match="bad.npz"):
            load(bad)
    assert not marker.exists(), "unpickling ran code from the file"
    # the CLI refuses it too, with a usage message instead of a traceback
    from fastconv import cli

    assert cli.main(["train", "--resume", str(bad)]) == 2
    assert not marker.exists()


def test_truncated_checkpoint_at_every_length_is_a_clear_error(tmp_path):
    model = nn.Sequential([nn.Flatten(), nn.Linear(4, 2)])
    model.compile(optimizer="sgd", loss="cross_entropy")
    good = tmp_path / "good.npz"
    nn.save_checkpoint(good, model, model.optimizer, 0, rng_state=None)
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    for n in sorted(set(np.linspace(0, len(data) - 1, 60).astype(int))):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match="cut.npz"):
            nn.load_checkpoint(cut)
