"""A small CNN in Keras style: Sequential, compile, fit, save, load_model, predict.

    python examples/keras_style.py                     # 3 epochs on full MNIST (~30 s on 2 cores)
    python examples/keras_style.py --quick             # 1 epoch on 1,000 images (random if no MNIST)

Written only from the README and docs/api.md, and type-checked with
``mypy --strict`` (tests/test_examples.py), so it doubles as a check that the
public API is annotated. The PyTorch-style twin is examples/pytorch_style.py.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import fastconv
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


def build(seed: int) -> nn.Sequential:
    """conv - BN - LeakyReLU - pool, twice, then global average pooling and a classifier."""
    rng = np.random.default_rng(seed)
    return nn.Sequential([
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
    ])


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("FASTCONV_MNIST_DIR") or REPO.parent / "shared" / "mnist"
    ap.add_argument("--data-dir", type=Path, default=Path(default_dir))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 epoch, 1,000 images")
    args = ap.parse_args(argv)
    n_train, n_test, epochs = (1000, 500, 1) if args.quick else (60000, 10000, args.epochs)
    (x, y), (x_test, y_test) = load_data(args.data_dir, n_train, n_test, args.quick)

    model = build(seed=0)
    model.compile(optimizer=optim.AdamW(lr=3e-3, weight_decay=1e-4),
                  loss="cross_entropy", metrics=["accuracy"])
    model.summary(input_shape=(1, 28, 28))
    plateau = nn.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, verbose=1)
    history = model.fit(x, y, batch_size=64, epochs=epochs, validation_split=0.1,
                        callbacks=[plateau], verbose=2, seed=0)
    print("val_loss per epoch:", [round(v, 4) for v in history.history["val_loss"]])

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keras_style.npz"
        model.save(path)
        reloaded = fastconv.load_model(path)
    probs = reloaded.predict(x_test[:1])            # softmax probabilities, shape (1, 10)
    print(f"one image: predicted {int(np.argmax(probs[0]))}, label {int(y_test[0])}")
    # predict runs in eval mode (running BN statistics, no dropout): bitwise reproducible
    print("reloaded model predicts identically:",
          bool(np.array_equal(probs, model.predict(x_test[:1]))))

    logs = reloaded.evaluate(x_test, y_test)
    acc = float(logs["accuracy"])
    print(f"test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
