"""A grouped bar chart as PNG: matplotlib when installed, else a tiny pure-Python writer.

matplotlib is not a dependency of fastconv, so the fallback draws the bars, a
log-scale grid, target ticks and 5x7 bitmap text on an RGB canvas and writes
the PNG with zlib. It is meant to be glanced at, not published.
"""

import math
import struct
import zlib

# 5x7 glyphs, one string of 5 bits per row; lower case is drawn as upper case.
_FONT = {
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "%": "11001 11010 00010 00100 01000 01011 10011",
    ">": "01000 00100 00010 00001 00010 00100 01000",
    "<": "00010 00100 01000 10000 01000 00100 00010",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75)]
RED, GREY, BLACK, WHITE = (214, 39, 40), (200, 200, 200), (0, 0, 0), (255, 255, 255)


class Canvas:
    def __init__(self, width, height, bg=WHITE):
        self.w, self.h = width, height
        self.px = bytearray(bytes(bg) * (width * height))

    def rect(self, x0, y0, x1, y1, color):
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            i = 3 * (y * self.w + x0)
            self.px[i:i + len(row)] = row

    def text(self, x, y, s, color=BLACK, scale=1, vertical=False):
        """Draw ``s`` with its top-left corner at (x, y); vertical reads bottom-up."""
        for ch in s.upper():
            rows = _FONT.get(ch, _FONT["?"]).split()
            for r, bits in enumerate(rows):
                for c, bit in enumerate(bits):
                    if bit == "1":
                        if vertical:   # rotate 90 degrees anticlockwise
                            px, py = x + r * scale, y - c * scale
                        else:
                            px, py = x + c * scale, y + r * scale
                        self.rect(px, py, px + scale, py + scale, color)
            if vertical:
                y -= 6 * scale
            else:
                x += 6 * scale

    def save_png(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[3 * y * self.w:3 * (y + 1) * self.w])
                       for y in range(self.h))

        def chunk(tag, data):
            return (struct.pack(">I", len(data)) + tag + data
                    + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)))
            f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
            f.write(chunk(b"IEND", b""))


def _ticks(lo, hi):
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if lo <= v <= hi:
                out.append(v)
    return out


def _fmt(v):
    return f"{v:g}"


def _bar_chart_pure(path, title, categories, series, targets, ylabel):
    values = [v for vs in series.values() for v in vs if v] + [t for t in targets if t]
    lo = min(min(values) / 1.5, 0.5)
    hi = max(max(values) * 1.5, 2.0)
    nser = len(series)
    bar_w, gap = 10, 14
    group_w = nser * bar_w + gap
    left, right, top, bottom = 60, 150, 30, 110
    width = left + right + max(1, len(categories)) * group_w
    width = max(width, left + 12 * len(title) + 20)
    height = 420
    cv = Canvas(width, height)
    ph = height - top - bottom
    ymap = lambda v: top + ph - int(ph * (math.log10(v) - math.log10(lo))
                                     / (math.log10(hi) - math.log10(lo)))
    cv.text(left, 8, title, scale=2)
    for t in _ticks(lo, hi):
        y = ymap(t)
        cv.rect(left, y, width - right, y + 1, GREY if t != 1 else BLACK)
        cv.text(left - 6 * len(_fmt(t)) - 4, y - 3, _fmt(t))
    cv.text(12, top + ph // 2 + 6 * len(ylabel) // 2, ylabel, vertical=True)
    base = ymap(lo)
    for gi, cat in enumerate(categories):
        x0 = left + gi * group_w + gap // 2
        for si, vs in enumerate(series.values()):
            v = vs[gi]
            if v:
                cv.rect(x0 + si * bar_w, ymap(v), x0 + (si + 1) * bar_w - 1, base,
                        PALETTE[si % len(PALETTE)])
        if targets[gi]:
            y = ymap(targets[gi])
            cv.rect(x0 - 3, y - 1, x0 + nser * bar_w + 3, y + 1, RED)
        cv.text(x0 + nser * bar_w // 2 - 3, base + 6 + 6 * len(cat), cat, vertical=True)
    lx = width - right + 12
    for si, name in enumerate(series):
        cv.rect(lx, top + 14 * si, lx + 10, top + 14 * si + 8, PALETTE[si % len(PALETTE)])
        cv.text(lx + 14, top + 14 * si, name)
    cv.rect(lx, top + 14 * nser + 3, lx + 10, top + 14 * nser + 5, RED)
    cv.text(lx + 14, top + 14 * nser, "target")
    cv.save_png(path)


def _bar_chart_mpl(plt, path, title, categories, series, targets, ylabel):
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(categories) + 2), 4.5))
    x = np.arange(len(categories))
    w = 0.8 / max(1, len(series))
    for i, (name, vs) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, [v or 0 for v in vs], w, label=name)
    for xi, t in zip(x, targets):
        if t:
            ax.hlines(t, xi - 0.45, xi + 0.45, colors="red")
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, categories, rotation=90)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bar_chart(path, title, categories, series, targets=None, ylabel=""):
    """Grouped bars, log y axis. ``series``: {name: [value or None per category]};
    ``targets``: a value (red tick) or None per category. Returns the backend used."""
    targets = targets or [None] * len(categories)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _bar_chart_pure(path, title, categories, series, targets, ylabel)
        return "pure-python"
    _bar_chart_mpl(plt, path, title, categories, series, targets, ylabel)
    return "matplotlib"
