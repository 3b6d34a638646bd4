"""Build a small CNN in PyTorch, export it to ONNX, load it here and fine-tune it on MNIST.

    python examples/onnx_from_pytorch.py             # 1 torch epoch + 1 fastconv epoch on MNIST
    python examples/onnx_from_pytorch.py --quick     # 1,000 images (random if no MNIST)

Needs torch and onnx (``pip install "fastconv[onnx,torch]"``). The network is
trained briefly in PyTorch, written with ``torch.onnx.export`` (the TorchScript
exporter, ``dynamo=False``, which needs no extra package; ``TrainingMode.PRESERVE``
keeps the batch-norm layers instead of folding them into the convolutions),
read back with ``fastconv.onnx.load``, checked against PyTorch's outputs and
trained one more epoch with ``fit``.
"""

import argparse
import os
import tempfile
import warnings
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


def torch_cnn(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        # a 3x3/2 pool rounding up (ceil_mode, as GoogLeNet's): 14 -> 7, not 6
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("FASTCONV_MNIST_DIR", REPO.parent / "shared" / "mnist")))
    ap.add_argument("--quick", action="store_true", help="1,000 training images")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("this example needs torch: pip install 'fastconv[torch]'")

    n_train = 1000 if args.quick else 60000
    (x, y), (xt, yt) = load_data(args.data_dir, n_train, 1000, args.quick)

    torch.manual_seed(0)
    net = torch_cnn(torch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for i in range(0, len(x), 64):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[i:i + 64])),
                                                 torch.from_numpy(y[i:i + 64].astype(np.int64)))
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(xt)).numpy()
    print(f"PyTorch test accuracy {np.mean(torch_logits.argmax(1) == yt):.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cnn.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.from_numpy(xt[:1]),), str(path), input_names=["x"],
                              output_names=["logits"],
                              dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                              opset_version=17, dynamo=False,
                              training=torch.onnx.TrainingMode.PRESERVE)
        model = fastconv.onnx.load(path)
    print("loaded:", ", ".join(type(m).__name__ for m in model.layers))

    model.eval()
    with fastconv.nn.no_grad():
        logits = model(xt).copy()
    err = float(np.max(np.abs(logits - torch_logits)) / np.max(np.abs(torch_logits)))
    print(f"fastconv vs PyTorch: max relative difference {err:.2e}")
    if err > 1e-5:
        raise SystemExit("the loaded model disagrees with PyTorch")

    # Dropout is not in the exported graph (an identity at inference), so the
    # fine-tuned model trains without it; batch norm trains as in PyTorch.
    model.train()
    model.compile(optimizer=optim.Adam(model.parameters(), lr=5e-4), loss="cross_entropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    print(f"fastconv test accuracy after one fine-tuning epoch {model.evaluate(xt, yt)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
