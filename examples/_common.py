"""Helpers shared by the examples: finding MNIST and saving images as PNG.

matplotlib is optional (``pip install "fastconv[plot]"``): with it, figures get
titles and colour maps; without it, images are tiled into a grid and written by
the tiny PNG writer below (zlib + struct, no dependencies).
"""

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from fastconv import datasets

REPO = Path(__file__).resolve().parents[1]


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def mnist_dir(data_dir=None):
    """MNIST directory: the argument, $FASTCONV_MNIST_DIR, ../shared/mnist beside
    the repository, or None (then fastconv.datasets downloads to its cache)."""
    for cand in (data_dir, os.environ.get("FASTCONV_MNIST_DIR"), REPO.parent / "shared" / "mnist"):
        if cand and all((Path(cand) / f).exists() or (Path(cand) / (f + ".gz")).exists()
                        for f in datasets.MNIST_FILES):
            return Path(cand)
    return None


def load_mnist(data_dir=None):
    """``(x_train, y_train), (x_test, y_test)`` as float32 in [0, 1], shape (N, 1, 28, 28)."""
    found = mnist_dir(data_dir)
    return datasets.load_mnist(found, download=found is None)


def write_png(path, img):
    """Write a uint8 array of shape (H, W) (grey) or (H, W, 3) (RGB) as a PNG file."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    color = 2 if img.ndim == 3 else 0
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))  # filter 0 per row

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n"
                           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def to_uint8(a, symmetric=False):
    """Scale to 0..255: min..max, or -m..m around mid-grey when ``symmetric``."""
    a = np.asarray(a, dtype=np.float64)
    if symmetric:
        m = np.max(np.abs(a)) or 1.0
        a = (a / m + 1.0) / 2.0
    else:
        lo, hi = a.min(), a.max()
        a = (a - lo) / ((hi - lo) or 1.0)
    return np.round(a * 255).astype(np.uint8)


def tile(images, ncols, scale=4, pad=2, symmetric=False):
    """Tile 2-D images (each scaled to 0..255 on its own) into one uint8 grid."""
    images = [np.kron(to_uint8(im, symmetric), np.ones((scale, scale), np.uint8)) for im in images]
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    nrows = -(-len(images) // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + im.shape[0], x:x + im.shape[1]] = im
    return grid


def save_grid(path, images, titles=None, ncols=4, symmetric=False, title=None):
    """Save a grid of 2-D images as a PNG (matplotlib if installed, else write_png).

    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if have_matplotlib():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        nrows = -(-len(images) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(2 * ncols, 2 * nrows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, im, t in zip(axes.flat, images, titles or [None] * len(images)):
            if symmetric:
                m = float(np.max(np.abs(im))) or 1.0
                ax.imshow(im, cmap="RdBu_r", vmin=-m, vmax=m)
            else:
                ax.imshow(im, cmap="gray")
            if t:
                ax.set_title(t, fontsize=9)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    else:
        write_png(path, tile(images, ncols, symmetric=symmetric))
    return path
