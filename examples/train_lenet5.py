"""Train LeNet-5 on MNIST with the Keras-style API and plot its learning curves.

    python examples/train_lenet5.py                       # 3 epochs, full MNIST (~1-2 min on 2 cores)
    python examples/train_lenet5.py --epochs 6 --out runs/lenet5
    python examples/train_lenet5.py --small               # 2,000 images, 1 epoch: a few seconds

``Sequential.fit`` returns a ``History``: ``history.history["loss"]``,
``["accuracy"]``, ``["val_loss"]``, ``["val_accuracy"]``, one entry per epoch.
This script writes to ``--out``:

* ``curves.png`` - loss and accuracy per epoch (needs matplotlib:
  ``pip install "fastconv[plot]"``);
* ``history.csv`` and ``history.json`` - the same numbers, always;
* ``lenet5.npz`` - the trained model (``fastconv.load_model`` reads it back;
  ``examples/visualize_filters.py --model`` shows its filters).

The same training from the command line, with more options (learning-rate
decay, augmentation, checkpoints, metrics JSON):

    python -m fastconv train --model lenet5 --data-dir ../shared/mnist
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import fastconv
from fastconv import models

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def save_curves(history, out):
    """Write history.csv / history.json, and curves.png if matplotlib is installed."""
    out.mkdir(parents=True, exist_ok=True)
    h = history.history
    keys = list(h)
    epochs = range(1, len(next(iter(h.values()), [])) + 1)
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", *keys])
        for i, e in enumerate(epochs):
            w.writerow([e, *(h[k][i] for k in keys)])
    (out / "history.json").write_text(json.dumps(h, indent=2, default=float) + "\n")
    written = [out / "history.csv", out / "history.json"]
    if not _common.have_matplotlib():
        print("matplotlib not installed (pip install 'fastconv[plot]'): "
              "curves saved as CSV/JSON only")
        return written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax1), ("accuracy", ax2)):
        for name, style in ((key, "o-"), ("val_" + key, "s--")):
            if name in h:
                ax.plot(list(epochs), h[name], style, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("LeNet-5 on MNIST (fastconv)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    return written + [out / "curves.png"]


def train(epochs=3, batch_size=64, lr=1e-3, train_subset=None, test_subset=None, seed=0,
          data_dir=None, out="lenet5_run", verbose=1):
    """Train LeNet-5, save curves and model into ``out``; returns (model, history, metrics)."""
    (x_train, y_train), (x_test, y_test) = _common.load_mnist(data_dir)
    x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    x_test, y_test = x_test[:test_subset], y_test[:test_subset]

    model = models.lenet5(seed=seed)
    model.compile(optimizer=fastconv.optim.Adam(model.parameters(), lr=lr),
                  loss="cross_entropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                        validation_data=(x_test, y_test), seed=seed, verbose=verbose)
    seconds = time.perf_counter() - t0
    metrics = model.evaluate(x_test, y_test)
    print(f"trained on {len(x_train)} images x {epochs} epoch(s) in {seconds:.1f} s "
          f"({fastconv.get_num_threads()} threads): test loss {metrics['loss']:.4f}, "
          f"test accuracy {metrics['accuracy']:.4f}")

    out = Path(out)
    files = save_curves(history, out)
    model.save(out / "lenet5.npz")
    for f in files + [out / "lenet5.npz"]:
        print(f"wrote {f}")
    return model, history, metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", help="MNIST directory (default: ../shared/mnist or download)")
    ap.add_argument("--out", default="lenet5_run", help="output directory (default lenet5_run)")
    ap.add_argument("--small", action="store_true",
                    help="2,000 training and 500 test images, 1 epoch (a smoke run)")
    args = ap.parse_args(argv)
    subset = dict(train_subset=2000, test_subset=500, epochs=1) if args.small else \
        dict(epochs=args.epochs)
    train(batch_size=args.batch_size, lr=args.lr, seed=args.seed, data_dir=args.data_dir,
          out=args.out, verbose=0 if args.small else 1, **subset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
