"""Train LeNet-5 here, export it to ONNX and run it in ONNX Runtime.

    python examples/onnx_export.py                         # 1 epoch on MNIST (../shared/mnist)
    python examples/onnx_export.py --quick                 # 1,000 images (random if no MNIST)
    python examples/onnx_export.py --out lenet5.onnx       # keep the ONNX file

Needs the onnx extra: ``pip install "fastconv[onnx]"`` (onnx + onnxruntime).
The exported graph computes the logits (the model in evaluation mode); the
script checks that ONNX Runtime's logits and fastconv's agree to float32
rounding and that both predict the same classes on the test images.
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

import fastconv
import fastconv.onnx
from fastconv import datasets, optim

REPO = Path(__file__).resolve().parents[1]


def load_data(data_dir, n_train, n_test, quick):
    """MNIST from ``data_dir``; in quick mode, random images when it is absent."""
    try:
        (x, y), (xt, yt) = datasets.load_mnist(data_dir, download=False)
    except (OSError, ValueError):
        if not quick:
            raise
        print(f"MNIST not found in {data_dir}: random images (accuracy is chance)")
        rng = np.random.default_rng(0)
        x = rng.random((n_train, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, n_train)
        xt = rng.random((n_test, 1, 28, 28), dtype=np.float32)
        yt = rng.integers(0, 10, n_test)
    return (x[:n_train], y[:n_train]), (xt[:n_test], yt[:n_test])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("FASTCONV_MNIST_DIR", REPO.parent / "shared" / "mnist")))
    ap.add_argument("--quick", action="store_true", help="1,000 training images")
    ap.add_argument("--out", type=Path, help="where to write the .onnx file (default: a temporary one)")
    args = ap.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("this example needs onnxruntime: pip install 'fastconv[onnx]'")

    n_train = 1000 if args.quick else 60000
    (x, y), (xt, yt) = load_data(args.data_dir, n_train, 1000, args.quick)
    model = fastconv.models.lenet5(seed=0)
    model.compile(optimizer=optim.Adam(model.parameters(), lr=1e-3), loss="cross_entropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    print(f"fastconv test accuracy {model.evaluate(xt, yt)['accuracy']:.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or Path(tmp) / "lenet5.onnx"
        fastconv.onnx.export(model, path, input_shape=(1, 28, 28))  # opset 17, dynamic batch
        print(f"exported {path.name}: {path.stat().st_size:,} bytes, opset {fastconv.onnx.DEFAULT_OPSET}")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits_ort = session.run(None, {"input": xt})[0]

    model.eval()
    with fastconv.nn.no_grad():
        logits = model(xt).copy()
    err = float(np.max(np.abs(logits_ort - logits)) / np.max(np.abs(logits)))
    same = bool(np.array_equal(logits_ort.argmax(1), model.predict(xt).argmax(1)))
    print(f"ONNX Runtime vs fastconv: max relative difference {err:.2e}, same classes: {same}")
    print(f"ONNX Runtime test accuracy {np.mean(logits_ort.argmax(1) == yt):.4f}")
    if err > 1e-5 or not same:
        raise SystemExit("ONNX Runtime disagrees with fastconv")


if __name__ == "__main__":
    main()
