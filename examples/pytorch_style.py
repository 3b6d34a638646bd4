"""The same small CNN in PyTorch style: a hand-written training loop.

    python examples/pytorch_style.py                   # 3 epochs on full MNIST (~30 s on 2 cores)
    python examples/pytorch_style.py --quick           # 1 epoch on 1,000 images (random if no MNIST)

``model.train()``, then per batch ``optimizer.zero_grad()``, ``model(x)``,
``loss_fn(out, y)``, ``model.backward(loss_fn.backward())``, ``optimizer.step()``;
a ``ReduceLROnPlateau`` stepped once per epoch on the validation loss;
``model.eval()`` for validation and inference. Written only from the README and
docs/api.md, type-checked with ``mypy --strict`` (tests/test_examples.py).
The Keras-style twin is examples/keras_style.py.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fastconv import datasets, nn, optim

REPO = Path(__file__).resolve().parents[1]

Arrays = tuple[NDArray[np.float32], NDArray[np.int64]]


def load_data(data_dir: Path, n_train: int, n_test: int, quick: bool) -> tuple[Arrays, Arrays]:
    """MNIST from ``data_dir``; in quick mode, random images when it is absent."""
    try:
        (x, y), (xt, yt) = datasets.load_mnist(data_dir, download=False)
    except (OSError, ValueError):
        if not quick:
            raise
        # Quick mode checks that the script runs, not that it learns: noise will do.
        print(f"MNIST not found in {data_dir}: random images (accuracy is chance)")
        rng = np.random.default_rng(0)
        x = rng.random((n_train, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, n_train)
        xt = rng.random((n_test, 1, 28, 28), dtype=np.float32)
        yt = rng.integers(0, 10, n_test)
    return (x[:n_train], y[:n_train].astype(np.int64)), (xt[:n_test], yt[:n_test].astype(np.int64))


def small_cnn(seed: int) -> nn.Sequential:
    """conv - BN - LeakyReLU - pool, twice, then global average pooling and a classifier.

    ``nn.Sequential(layer, layer, ...)``, PyTorch's form; a subclass would need
    ``nn.register_layer`` before ``load_model`` could rebuild it.
    """
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same", rng=rng),
        nn.BatchNorm2d(16),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding="same", rng=rng),
        nn.BatchNorm2d(32),
        nn.LeakyReLU(0.1),
        nn.GlobalAvgPool2d(),
        nn.Dropout(0.2, rng=rng),
        nn.Linear(32, 10, rng=rng),
    )


def evaluate(model: nn.Sequential, loss_fn: nn.CrossEntropyLoss, x: NDArray[np.float32],
             y: NDArray[np.int64], batch_size: int = 256) -> tuple[float, float]:
    """Mean loss and accuracy over (x, y), in eval mode and without gradients."""
    model.eval()
    total, correct = 0.0, 0
    with nn.no_grad():
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            total += float(loss_fn(out, y[i:i + batch_size])) * len(out)
            correct += int(np.sum(np.argmax(out, axis=1) == y[i:i + batch_size]))
    return total / len(x), correct / len(x)


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("FASTCONV_MNIST_DIR") or REPO.parent / "shared" / "mnist"
    ap.add_argument("--data-dir", type=Path, default=Path(default_dir))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 epoch, 1,000 images")
    args = ap.parse_args(argv)
    n_train, n_test, epochs = (1000, 500, 1) if args.quick else (60000, 10000, args.epochs)
    (x, y), (x_test, y_test) = load_data(args.data_dir, n_train, n_test, args.quick)
    n_val = len(x) // 10                       # the last 10% validates, as validation_split=0.1
    x_train, y_train, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]

    model = small_cnn(seed=0)
    optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = nn.ReduceLROnPlateau(factor=0.5, patience=0, optimizer=optimizer, verbose=1)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    batch_size = 64
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            optimizer.zero_grad()
            out = model(x_train[idx])
            loss = loss_fn(out, y_train[idx])
            model.backward(loss_fn.backward())
            optimizer.step()
        val_loss, val_acc = evaluate(model, loss_fn, x_val, y_val)
        scheduler.step(val_loss)
        print(f"epoch {epoch + 1}: loss {float(loss):.4f}  val_loss {val_loss:.4f}  "
              f"val_accuracy {val_acc:.4f}  lr {optimizer.lr:.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pytorch_style.npz"
        nn.save_model(model, path)
        reloaded = nn.load_model(path)
    reloaded.eval()
    with nn.no_grad():
        logits = reloaded(x_test[:1])
        print(f"one image: predicted {int(np.argmax(logits[0]))}, label {int(y_test[0])}")
        model.eval()                               # running BN statistics, no dropout
        print("reloaded model predicts identically:",
              bool(np.array_equal(logits, model(x_test[:1]))))

    _, acc = evaluate(reloaded, loss_fn, x_test, y_test)
    print(f"test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
