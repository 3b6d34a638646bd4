"""The scripts in examples/ run end to end on small inputs and write what they say.

Each example runs as a subprocess (as a user would run it), against the
fastconv under test, from a scratch directory. Together well under a minute.
"""

import json
import os
import struct
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import datasets as ds

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PKG_PARENT = Path(fastconv.__file__).resolve().parents[1]
MNIST_DIR = Path(
    os.environ.get("FASTCONV_MNIST_DIR")
    or Path(__file__).resolve().parents[1].parent / "shared" / "mnist"
)
HAVE_MNIST = all((MNIST_DIR / (n + ".gz")).is_file() or (MNIST_DIR / n).is_file()
                 for n in ds.MNIST_FILES)
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST, reason=f"MNIST IDX files not found in {MNIST_DIR} (set FASTCONV_MNIST_DIR)")


def run_example(name, *args, cwd):
    env = dict(os.environ, PYTHONPATH=str(PKG_PARENT), FASTCONV_MNIST_DIR=str(MNIST_DIR),
               MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def read_png(path):
    """Decode the PNGs the examples' writer makes (8-bit grey/RGB, filter 0): -> array."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, f"bad CRC in {tag!r}"
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color = header[:4]
    if color not in (0, 2) or depth != 8:  # matplotlib's RGBA etc.: shape only
        return np.zeros((h, w))
    ch = 3 if color == 2 else 1
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    if np.any(raw[:, 0]):
        return np.zeros((h, w))  # another writer's filters; not ours
    return raw[:, 1:].reshape(h, w, ch).squeeze()


def test_png_writer_round_trip(tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import _common
    finally:
        sys.path.remove(str(EXAMPLES))
    img = np.arange(35 * 17, dtype=np.uint32).reshape(35, 17) % 256
    _common.write_png(tmp_path / "g.png", img)
    assert np.array_equal(read_png(tmp_path / "g.png"), img)
    rgb = np.stack([img, img[::-1], 255 - img], axis=-1)
    _common.write_png(tmp_path / "c.png", rgb)
    assert np.array_equal(read_png(tmp_path / "c.png"), rgb)


def test_edge_detection_quick(tmp_path):
    out = run_example("edge_detection.py", "--quick", "--out", "e.png", cwd=tmp_path)
    assert "Sobel x" in out and (tmp_path / "e.png").stat().st_size > 200
    read_png(tmp_path / "e.png")


@needs_mnist
def test_edge_detection_on_mnist(tmp_path):
    out = run_example("edge_detection.py", "--index", "3", "--out", "e.png", cwd=tmp_path)
    assert "digit" in out and "wrote" in out
    read_png(tmp_path / "e.png")


def test_edge_filters_match_numpy():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import edge_detection
    finally:
        sys.path.remove(str(EXAMPLES))
    img = edge_detection.drawn_digit()
    names, maps = edge_detection.edges(img)
    padded = np.pad(img, 1)
    k = edge_detection.FILTERS["Sobel x"]
    ref = np.array([[np.sum(padded[i:i + 3, j:j + 3] * k) for j in range(28)] for i in range(28)])
    np.testing.assert_allclose(maps[names.index("Sobel x")], ref, atol=1e-5)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    if not HAVE_MNIST:
        pytest.skip(f"MNIST IDX files not found in {MNIST_DIR}")
    cwd = tmp_path_factory.mktemp("train")
    out = run_example("train_lenet5.py", "--small", "--out", "run", cwd=cwd)
    return cwd / "run", out


def test_train_lenet5_small(trained_run):
    run, out = trained_run
    assert "test accuracy" in out
    history = json.loads((run / "history.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    assert len(history["loss"]) == 1
    assert (run / "history.csv").read_text().startswith("epoch,")
    model = fastconv.load_model(run / "lenet5.npz")
    assert len(model.layers) == len(fastconv.models.lenet5().layers)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "CSV/JSON only" in out
    else:
        read_png(run / "curves.png")


def test_visualize_filters_from_saved_model(trained_run, tmp_path):
    run, _ = trained_run
    out = run_example("visualize_filters.py", "--model", str(run / "lenet5.npz"), "--out", "f",
                      cwd=tmp_path)
    assert "predicted" in out
    for name in ("conv1_filters", "conv1_maps", "conv2_filters", "conv2_maps"):
        read_png(tmp_path / "f" / f"{name}.png")


def test_kernels_from_numpy_quick(tmp_path):
    out = run_example("kernels_from_numpy.py", "--quick", cwd=tmp_path)
    assert "thread(s): forward" in out and "grads:" in out


@pytest.mark.parametrize("name", ["keras_style.py", "pytorch_style.py"])
def test_user_style_examples_quick(tmp_path, name):
    # MNIST when present (1,000 images), else random images: either way the
    # whole path runs - fit/loop with a validation split and a plateau
    # schedule, save, reload, one-image prediction, test accuracy.
    out = run_example(name, "--quick", cwd=tmp_path)
    assert "reloaded model predicts identically: True" in out
    assert "one image: predicted" in out
    acc = float(out.rsplit("test accuracy", 1)[1].split()[0])
    assert 0.0 <= acc <= 1.0
    assert list(tmp_path.iterdir()) == []  # the model went to a temporary directory


# A user's view of the package: strict on the user's code, silent on the
# library's own (as mypy is for an installed package); the package itself is
# checked by `python -m mypy` from the repository root (tests/test_packaging.py).
MYPY_USER_CONFIG = """\
[mypy]
strict = True
follow_imports = silent

[mypy-fastconv.*]
ignore_errors = True
"""


def test_user_style_examples_type_check_strict(tmp_path):
    pytest.importorskip("mypy")
    (tmp_path / "mypy.ini").write_text(MYPY_USER_CONFIG)
    # The negative control, checked in the same run: a typo in a Literal
    # argument must be an error, or the check proves nothing (an Any-typed
    # Conv2d would accept it).
    typo = tmp_path / "typo_padding.py"
    src = (EXAMPLES / "keras_style.py").read_text()
    assert 'padding="same"' in src
    typo.write_text(src.replace('padding="same"', 'padding="samee"'))
    files = [str(EXAMPLES / "keras_style.py"), str(EXAMPLES / "pytorch_style.py"), str(typo)]
    env = dict(os.environ)
    site = {os.path.realpath(p) for p in sysconfig.get_paths().values()}
    if os.path.realpath(PKG_PARENT) not in site:  # the fastconv under test, not another one
        env["MYPYPATH"] = str(PKG_PARENT)
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"),
                        "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
                        "--show-absolute-path", *files],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    errors = [ln for ln in r.stdout.splitlines() if ": error:" in ln]
    assert r.returncode == 1, r.stdout + r.stderr
    assert errors, r.stdout + r.stderr
    for ln in errors:
        assert ln.startswith(str(typo)) and '"padding"' in ln and "samee" in ln, \
            "mypy --strict on the examples:\n" + r.stdout


def test_onnx_export_quick(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = run_example("onnx_export.py", "--quick", "--out", "l5.onnx", cwd=tmp_path)
    assert "same classes: True" in out
    assert (tmp_path / "l5.onnx").stat().st_size > 200_000  # LeNet-5's 61,706 float32 weights


def test_onnx_from_pytorch_quick(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    out = run_example("onnx_from_pytorch.py", "--quick", cwd=tmp_path)
    assert "loaded: Conv2d, BatchNorm2d, ReLU, MaxPool2d" in out
    acc = float(out.rsplit("fine-tuning epoch", 1)[1].split()[0])
    assert 0.0 <= acc <= 1.0
