"""Calling fastconv's kernels from your own NumPy code.

Shows, on a LeNet-sized layer:

* ``conv2d`` / ``conv2d_backward`` / ``max_pool2d`` (+ indices) / ``max_pool2d_backward``
  / ``avg_pool2d`` with their shapes (NCHW input, OIHW weight);
* ``out=`` buffers: allocate once, reuse every step (no allocation in the loop);
* thread control: ``fastconv.set_num_threads``, ``OMP_NUM_THREADS`` and, if
  installed, ``threadpoolctl.threadpool_limits`` (fastconv's OpenMP pool shows
  up in ``threadpool_info()``);
* timing a few calls with ``time.perf_counter`` (median of repeats).

    python examples/kernels_from_numpy.py
    python examples/kernels_from_numpy.py --quick        # smaller batch, fewer repeats
"""

import argparse
import statistics
import sys
import time

import numpy as np

import fastconv


def median_ms(fn, repeats):
    fn()  # warm-up: first-touch of buffers, thread pool start
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def demo(batch=64, repeats=20):
    rng = np.random.default_rng(0)
    # LeNet conv1: 1 -> 6 channels, 5x5, padding 2 keeps 28x28
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    w = rng.standard_normal((6, 1, 5, 5), dtype=np.float32) * 0.2
    b = np.zeros(6, np.float32)

    shape = fastconv.conv2d_output_shape(x.shape, w.shape, padding=2)
    print(f"conv2d {x.shape} * {w.shape} -> {shape}")

    # --- out= buffers: allocated once, written in place on every call -------
    y = np.empty(shape, np.float32)
    gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    pooled = np.empty((batch, 6, 14, 14), np.float32)
    g_pooled = np.ones_like(pooled)        # stands in for the gradient from above
    g_y = np.empty_like(y)
    state = {}

    def forward():
        fastconv.conv2d(x, w, b, padding=2, out=y, activation="relu")  # fused ReLU
        # indices (int64, h * W + w within each plane) are what the backward needs
        _, state["idx"] = fastconv.max_pool2d(y, 2, return_indices=True, out=pooled)

    def backward():
        fastconv.max_pool2d_backward(g_pooled, state["idx"], y.shape, out=g_y)
        # relu_output=y: g_y is the gradient after the fused ReLU, masked by y > 0
        fastconv.conv2d_backward(g_y, x, w, padding=2, out=(gx, gw, gb), relu_output=y)

    forward()
    backward()
    idx = state["idx"]
    assert fastconv.conv2d(x, w, b, padding=2, out=y, activation="relu") is y
    print(f"max_pool2d -> {pooled.shape}, indices {idx.dtype}; grads: "
          f"x {gx.shape}, w {gw.shape}, b {gb.shape}")

    # check against NumPy: the conv of one output pixel, by hand
    ref = max(0.0, float(np.sum(np.pad(x[0, 0], 2)[10:15, 11:16] * w[3, 0]) + b[3]))
    assert abs(y[0, 3, 10, 11] - ref) < 1e-4, (y[0, 3, 10, 11], ref)

    # --- average pooling and plain conv (new output arrays each call) -------
    a = fastconv.avg_pool2d(x, 2)
    assert np.allclose(a, x.reshape(batch, 1, 14, 2, 14, 2).mean(axis=(3, 5)), atol=1e-6)

    # --- thread control and timing ------------------------------------------
    print(f"OpenMP: {fastconv.openmp_enabled()}, SIMD: {fastconv.info()['simd']}, "
          f"threads now: {fastconv.get_num_threads()}")
    before = fastconv.get_num_threads()
    for n in sorted({1, before}):
        fastconv.set_num_threads(n)
        print(f"  {n} thread(s): forward {median_ms(forward, repeats):7.3f} ms   "
              f"backward {median_ms(backward, repeats):7.3f} ms   (batch {batch})")
    fastconv.set_num_threads(before)

    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        print("threadpoolctl not installed: skipping threadpool_limits "
              "(pip install threadpoolctl)")
    else:
        pools = [p for p in threadpool_info() if p["user_api"] == "openmp"]
        print("OpenMP pools threadpoolctl sees:",
              [(p["internal_api"], p["num_threads"]) for p in pools])
        with threadpool_limits(limits=1, user_api="openmp"):
            print(f"  inside threadpool_limits(1): get_num_threads() = "
                  f"{fastconv.get_num_threads()}, forward {median_ms(forward, repeats):7.3f} ms")
        print(f"  after it: get_num_threads() = {fastconv.get_num_threads()}")
    return y, gx, gw, gb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="batch 8, 3 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 8, 3
    demo(args.batch, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
