"""Every kernel, both dtypes, a few shapes, 1 and 2 threads: the workload for
scripts/valgrind_smoke.sh (valgrind memcheck). Small shapes, since memcheck
runs code ~50x slower. Each result is checked against fastconv.reference, so
an uninitialised or out-of-bounds read that changes a value also fails here.

Usage: python scripts/valgrind_smoke.py [--quick]
"""

import os
import sys

import numpy as np

try:
    import fastconv
except ImportError:  # run from a source checkout: the package is one level up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastconv
from fastconv import reference as ref

CONV = [
    # (x shape, weight shape, kwargs)
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(padding=1)),
    ((1, 4, 11, 10), (6, 2, 3, 2), dict(stride=2, padding=(1, 0), groups=2)),
    ((2, 1, 12, 12), (5, 1, 5, 5), dict(padding=2)),                  # col2im grad-input
    ((1, 4, 10, 10), (4, 1, 3, 3), dict(padding=1, groups=4)),        # depthwise
    ((1, 3, 13, 13), (8, 3, 3, 3), dict(dilation=2, padding="same")),
    ((2, 6, 5, 5), (7, 6, 1, 1), dict()),                             # 1x1
    ((1, 2, 4, 4), (3, 2, 4, 4), dict()),                             # kernel = input
]
POOL = [((2, 3, 9, 8), 2, None, 0), ((1, 2, 7, 7), 3, 2, 1), ((1, 1, 5, 6), (2, 3), 1, (1, 1))]


def check(got, want, what):
    tol = 1e-4 if got.dtype == np.float32 else 1e-10
    if not np.allclose(got, want, rtol=tol, atol=tol, equal_nan=True):
        raise SystemExit(f"MISMATCH {what}")


def main(quick=False):
    rng = np.random.default_rng(0)
    n_calls = 0
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        for dtype in (np.float32, np.float64):
            for xs, ws, kw in (CONV[:3] if quick else CONV):
                x = rng.standard_normal(xs).astype(dtype)
                w = rng.standard_normal(ws).astype(dtype)
                b = rng.standard_normal(ws[0]).astype(dtype)
                y = fastconv.conv2d(x, w, b, **kw)
                check(y, ref.conv2d(x, w, b, **kw), f"conv2d {xs} {ws} {kw} {dtype}")
                yr = fastconv.conv2d(x, w, b, **kw, activation="relu")
                check(yr, np.maximum(ref.conv2d(x, w, b, **kw), 0), "conv2d relu")
                gy = rng.standard_normal(y.shape).astype(dtype)
                for got, want in zip(fastconv.conv2d_backward(gy, x, w, **kw),
                                     ref.conv2d_backward(gy, x, w, **kw)):
                    check(got, want, f"conv2d_backward {xs} {ws} {kw} {dtype}")
                gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **kw,
                                                      output_mask=(False, True, False))
                assert gx is None and gb is None
                n_calls += 4
            for xs, k, s, p in POOL:
                x = rng.standard_normal(xs).astype(dtype)
                y, idx = fastconv.max_pool2d(x, k, s, p, return_indices=True)
                ry, ridx = ref.max_pool2d(x, k, s, p, return_indices=True)
                check(y, ry, "max_pool2d")
                assert (idx == ridx).all()
                g = rng.standard_normal(y.shape).astype(dtype)
                check(fastconv.max_pool2d_backward(g, idx, x.shape),
                      ref.max_pool2d_backward(g, idx, x.shape), "max_pool2d_backward")
                for cip in (True, False):
                    a = fastconv.avg_pool2d(x, k, s, p, count_include_pad=cip)
                    check(a, ref.avg_pool2d(x, k, s, p, count_include_pad=cip), "avg_pool2d")
                    check(fastconv.avg_pool2d_backward(a, x.shape, k, s, p, count_include_pad=cip),
                          ref.avg_pool2d_backward(a, x.shape, k, s, p, count_include_pad=cip),
                          "avg_pool2d_backward")
                n_calls += 6
    print(f"valgrind_smoke: {n_calls} kernel calls OK, simd={fastconv.info()['simd']}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
