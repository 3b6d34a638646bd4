"""Learned filters and feature maps of LeNet-5 for one digit.

    python examples/visualize_filters.py --model lenet5_run/lenet5.npz   # a trained model
    python examples/visualize_filters.py                                 # trains 2 epochs first
    python examples/visualize_filters.py --small                         # trains on 2,000 images

Writes four PNGs into ``--out``: the 6 first-layer filters (5x5), the 6
first-layer feature maps of the digit (28x28, after ReLU), the 16 second-layer
filters (each shown as the sum over its 6 input channels) and the 16
second-layer feature maps (10x10, after ReLU). The feature maps are the outputs
of the layers of the ``Sequential`` model, run one at a time.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import fastconv
from fastconv import models, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def get_model(model_path=None, x_train=None, y_train=None, epochs=2, seed=0):
    """Load a saved model, or train LeNet-5 briefly on (x_train, y_train)."""
    if model_path:
        return fastconv.load_model(model_path)
    model = models.lenet5(seed=seed)
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, seed=seed, verbose=0)
    return model


def activations(model, x):
    """Output of every layer for input ``x`` (copies: layers reuse their buffers)."""
    outs = []
    model.eval()
    with nn.no_grad():
        h = x
        for layer in model.layers:
            h = layer(h)
            outs.append((layer, np.array(h, copy=True)))
    return outs


def visualize(model, image, label, out):
    """Write the four PNGs for one (28, 28) image; returns their paths."""
    out = Path(out)
    convs = [layer for layer in model.layers if isinstance(layer, nn.Conv2d)]
    acts = activations(model, image[None, None].astype(model.layers[0].weight.data.dtype))
    # feature maps after each conv's ReLU (the layer after the conv)
    relu_maps = [acts[i + 1][1][0] for i, (layer, _) in enumerate(acts)
                 if isinstance(layer, nn.Conv2d)]
    probs = acts[-1][1][0]
    pred = int(np.argmax(probs))
    print(f"digit {label}: predicted {pred}")
    w1 = convs[0].weight.data[:, 0]                 # (6, 5, 5)
    w2 = convs[1].weight.data.sum(axis=1)           # (16, 5, 5)
    paths = [
        _common.save_grid(out / "conv1_filters.png", list(w1),
                          [f"filter {i}" for i in range(len(w1))], ncols=6, symmetric=True,
                          title="conv1 filters (5x5)"),
        _common.save_grid(out / "conv1_maps.png", [image, *relu_maps[0]],
                          [f"digit {label}"] + [f"map {i}" for i in range(6)], ncols=7,
                          title="conv1 + ReLU feature maps"),
        _common.save_grid(out / "conv2_filters.png", list(w2),
                          [f"filter {i}" for i in range(len(w2))], ncols=8, symmetric=True,
                          title="conv2 filters (sum over input channels)"),
        _common.save_grid(out / "conv2_maps.png", list(relu_maps[1]),
                          [f"map {i}" for i in range(16)], ncols=8,
                          title=f"conv2 + ReLU feature maps (predicted {pred})"),
    ]
    for p in paths:
        print(f"wrote {p}")
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help=".npz written by Sequential.save (default: train one)")
    ap.add_argument("--index", type=int, default=0, help="test-set image (default 0)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs when training (default 2)")
    ap.add_argument("--data-dir", help="MNIST directory (default: ../shared/mnist or download)")
    ap.add_argument("--out", default="filters", help="output directory (default filters)")
    ap.add_argument("--small", action="store_true", help="train 1 epoch on 2,000 images")
    args = ap.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = _common.load_mnist(args.data_dir)
    if args.small:
        x_train, y_train, args.epochs = x_train[:2000], y_train[:2000], 1
    model = get_model(args.model, x_train, y_train, epochs=args.epochs)
    visualize(model, x_test[args.index, 0], int(y_test[args.index]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
