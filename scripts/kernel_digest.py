"""Print a SHA-256 digest of every kernel's outputs, to show a refactor changed no bit.

Usage (from the repository root, with the checkout built in place):

    PYTHONPATH=. python scripts/kernel_digest.py > before.txt
    ... change the code, rebuild ...
    PYTHONPATH=. python scripts/kernel_digest.py > after.txt
    diff before.txt after.txt        # no output: bitwise unchanged

One line per (SIMD level, thread count, case, output): the level and thread count
are switched inside the process (``set_simd_level``, ``set_num_threads``), so one
run covers every SIMD path this CPU can execute. The cases are the benchmark grid
(``bench/shapes.py``: conv a-f, pooling p1-p3) at a reduced batch, odd shapes that
take the edge paths (grouped, dilated, strided, padded, batch of one, tiny), both
Winograd modes (and F(4x4, 3x3) edge cases), ReLU, linear, every optimiser's fused
step, a short LeNet-5 training run followed by ``predict`` (which covers the fused
layers and the inference plan), and a 3x3 model's ``predict``.
"""

import argparse
import hashlib

import numpy as np

import fastconv
from fastconv import functional as F
from fastconv import nn, optim

# (x shape, w shape, stride, padding, dilation, groups): the bench grid at batch 4
# (the per-image work and every route are the same as at 64), then edge cases.
CONV = [
    ((4, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1),          # a: LeNet conv1
    ((4, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),         # b: LeNet conv2
    ((4, 1, 28, 28), (32, 1, 5, 5), 1, 2, 1, 1),         # c
    ((4, 32, 14, 14), (64, 32, 5, 5), 1, 2, 1, 1),       # d (Winograd when on)
    ((2, 64, 28, 28), (64, 64, 3, 3), 1, 1, 1, 1),       # e at half size
    ((1, 3, 112, 112), (64, 3, 7, 7), 2, 3, 1, 1),       # f at half size
    ((5, 8, 33, 16), (12, 4, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 16, 20, 21), (8, 16, 5, 5), 1, "same", 1, 1),
    ((3, 12, 37, 23), (12, 1, 3, 3), 1, 1, 1, 12),      # depthwise
    ((2, 3, 9, 8), (4, 3, 3, 3), (5, 7), (4, 2), 1, 1),  # stride past the input
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1),
    ((2, 20, 17, 19), (24, 20, 5, 5), 1, 4, 1, 1),       # Winograd, padding 4
    ((64, 16, 6, 6), (32, 16, 1, 1), 1, 0, 1, 1),        # 1x1
]
# Winograd F(4x4, 3x3) edge cases, with their own random stream (after every
# case above, so adding them changed none of those lines): rows of more than 16
# tiles with per-side padding, narrow rows transformed in pairs.
CONV3 = [
    ((2, 20, 17, 70), (24, 20, 3, 3), 1, ((0, 2), (1, 2)), 1, 1),
    ((3, 16, 13, 13), (16, 16, 3, 3), 1, 2, 1, 1),
]
# (x shape, kernel, stride, padding)
POOL = [
    ((4, 32, 28, 28), 2, 2, 0),                          # p1
    ((4, 6, 28, 28), 2, 2, 0),                           # p2
    ((2, 64, 56, 56), 3, 2, 1),                          # p3
    ((7, 16, 40, 39), 2, None, 0),
    ((1, 96, 33, 49), (2, 3), (1, 2), (1, 1)),
    ((2, 3, 9, 8), (3, 2), (9, 11), (1, 1)),
    ((3, 5, 7, 7), 7, 1, 3),
]
OPTIMIZERS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.05)),
    ("RMSprop", dict(lr=0.01, momentum=0.5)),
    ("Adam", dict(lr=0.01, weight_decay=1e-3)),
    ("AdamW", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01)),
]


def digest(a):
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def conv_case(rng, dtype, label, xs, ws, s, p, d, g):
    """One conv's outputs (y, fused ReLU, the three gradients), Winograd off and on."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    args = dict(stride=s, padding=p, dilation=d, groups=g)
    for wino in (False, True):
        previous = F.set_winograd(wino)
        try:
            y = F.conv2d(x, w, b, **args)
            gy = rng.standard_normal(y.shape).astype(dtype)
            gx, gw, gb = F.conv2d_backward(gy, x, w, **args)
            yr = F.conv2d(x, w, b, **args, activation="relu")
        finally:
            F.set_winograd(previous)
        for name, v in (("y", y), ("yrelu", yr), ("gx", gx), ("gw", gw), ("gb", gb)):
            yield f"{label}.wino{int(wino)}.{name}", v


def cases(dtype):
    rng = np.random.default_rng(2026)
    for i, case in enumerate(CONV):
        yield from conv_case(rng, dtype, f"conv{i}", *case)
    for i, (xs, k, s, p) in enumerate(POOL):
        x = rng.standard_normal(xs).astype(dtype)
        y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx = F.max_pool2d_backward(gy, idx, x.shape)
        yield f"maxpool{i}.y", y
        yield f"maxpool{i}.idx", idx
        yield f"maxpool{i}.gx", gx
        for cip in (True, False):
            ya = F.avg_pool2d(x, k, s, p, count_include_pad=cip)
            gxa = F.avg_pool2d_backward(gy, x.shape, k, s, p, count_include_pad=cip)
            yield f"avgpool{i}.cip{int(cip)}.y", ya
            yield f"avgpool{i}.cip{int(cip)}.gx", gxa
    x = rng.standard_normal((300001,)).astype(dtype)
    y = F.relu(x)
    yield "relu.y", y
    yield "relu.gx", F.relu_backward(rng.standard_normal(x.shape).astype(dtype), y)
    for n, i, o in ((1, 400, 120), (64, 3136, 1024), (257, 84, 10)):
        x = rng.standard_normal((n, i)).astype(dtype)
        w = rng.standard_normal((o, i)).astype(dtype)
        b = rng.standard_normal(o).astype(dtype)
        y = F.linear(x, w, b)
        gx, gw, gb = F.linear_backward(rng.standard_normal(y.shape).astype(dtype), x, w)
        for name, v in (("y", y), ("gx", gx), ("gw", gw), ("gb", gb)):
            yield f"linear{n}x{i}x{o}.{name}", v
    for j, (name, kw) in enumerate(OPTIMIZERS):
        p = nn.Parameter(rng.standard_normal((4099,)).astype(dtype))
        opt = getattr(optim, name)([p], **kw)
        for _ in range(3):
            p.grad = rng.standard_normal(p.data.shape).astype(dtype)
            opt.step()
        yield f"optim{j}.{name}", p.data
    rng3 = np.random.default_rng(2027)
    for i, case in enumerate(CONV3):
        yield from conv_case(rng3, dtype, f"conv3x3_{i}", *case)


def training(dtype):
    rng = np.random.default_rng(7)
    x = rng.random((256, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, 256)
    model = fastconv.models.lenet5(seed=3, dtype=dtype)
    model.compile(optimizer="adam", loss="cross_entropy")
    model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    for i, p in enumerate(model.parameters()):
        yield f"lenet5.param{i}", p.data
    yield "lenet5.predict", model.predict(x[:67], batch_size=32)
    yield "lenet5.predict1", model.predict(x[:1])
    # a 3x3 model's inference plan (float32: Winograd with the fused 2x2 pool)
    kw = {"rng": np.random.default_rng(5), "dtype": dtype}
    model3 = nn.Sequential([nn.Conv2d(1, 16, 3, padding=1, **kw), nn.ReLU(),
                            nn.Conv2d(16, 32, 3, padding=1, **kw), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(32 * 14 * 14, 10, **kw)])
    yield "conv3x3_net.predict", model3.predict(x[:67], batch_size=32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    args = ap.parse_args()
    levels = []
    for name in ("generic", "avx2", "avx512"):
        if F.set_simd_level(name) == name:
            levels.append(name)
    for level in levels:
        F.set_simd_level(level)
        for t in (int(v) for v in args.threads.split(",")):
            fastconv.set_num_threads(t)
            for dtype in (np.float32, np.float64):
                tag = f"{level}.t{t}.{np.dtype(dtype).name}"
                for name, v in cases(dtype):
                    print(f"{tag}.{name} {digest(v)}")
                for name, v in training(dtype):
                    print(f"{tag}.{name} {digest(v)}")


if __name__ == "__main__":
    main()
