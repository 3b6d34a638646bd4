"""Edge detection on an MNIST digit with classic filters, through fastconv.conv2d.

Six 3x3 filters - vertical and horizontal edge filters, Sobel and Scharr (each
in both directions) - go into one weight tensor of shape (6, 1, 3, 3), so a
single ``conv2d`` call computes all six edge maps. ``padding=1`` keeps 28x28.
conv2d is a cross-correlation (no kernel flip), like every deep-learning
framework's "convolution": a vertical-edge filter [1, 0, -1] responds
positively where brightness falls from left to right.

    python examples/edge_detection.py                  # digit 0 of the test set
    python examples/edge_detection.py --index 7 --out edges.png
    python examples/edge_detection.py --quick          # no MNIST needed: a drawn digit

Writes a PNG grid: the digit, the six edge maps (red/blue = positive/negative
with matplotlib, light/dark grey without), and the Sobel gradient magnitude.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import fastconv

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

V = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float32)
SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)
SCHARR = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]], dtype=np.float32)

FILTERS = {
    "vertical": V, "horizontal": V.T,
    "Sobel x": SOBEL, "Sobel y": SOBEL.T,
    "Scharr x": SCHARR, "Scharr y": SCHARR.T,
}


def drawn_digit():
    """A 28x28 '7' drawn with NumPy, for running without MNIST."""
    img = np.zeros((28, 28), np.float32)
    img[6:9, 6:22] = 1.0
    for r in range(9, 24):
        c = 21 - (r - 9) * 10 // 15
        img[r, c - 1:c + 2] = 1.0
    return img


def edges(image):
    """All six edge maps of one (H, W) image: returns (names, array (6, H, W))."""
    weight = np.stack(list(FILTERS.values()))[:, None]          # (6, 1, 3, 3) OIHW
    x = np.ascontiguousarray(image, dtype=np.float32)[None, None]  # (1, 1, H, W) NCHW
    y = fastconv.conv2d(x, weight, padding=1)                   # (1, 6, H, W)
    return list(FILTERS), y[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=int, default=0, help="test-set image (default 0)")
    ap.add_argument("--data-dir", help="MNIST directory (default: ../shared/mnist or download)")
    ap.add_argument("--out", default="edges.png", help="PNG to write (default edges.png)")
    ap.add_argument("--quick", action="store_true", help="use a drawn digit, no MNIST")
    args = ap.parse_args(argv)

    if args.quick:
        image, label = drawn_digit(), 7
    else:
        _, (x_test, y_test) = _common.load_mnist(args.data_dir)
        image, label = x_test[args.index, 0], int(y_test[args.index])

    names, maps = edges(image)
    magnitude = np.hypot(maps[names.index("Sobel x")], maps[names.index("Sobel y")])
    for name, m in zip(names, maps):
        print(f"{name:>10}: min {m.min():7.2f}  max {m.max():7.2f}")

    images = [image, *maps, magnitude]
    titles = [f"digit {label}", *names, "Sobel magnitude"]
    path = _common.save_grid(args.out, images, titles, ncols=4,
                             title="fastconv.conv2d edge filters")
    if not _common.have_matplotlib():
        print("matplotlib not installed: wrote a plain grid (each tile scaled to its own "
              "min..max), row by row:", ", ".join(titles))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
