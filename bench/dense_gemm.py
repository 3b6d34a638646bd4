#!/usr/bin/env python
"""Dense-layer products: fastconv.linear / linear_backward against NumPy's matmul.

    python bench/dense_gemm.py                      # 1 and 2 threads, float32, MNIST CNN shape
    python bench/dense_gemm.py --threads 1 --dtype float64 --shape 64,400,120
    PYTHONPATH=. python bench/dense_gemm.py         # from the repository root: the checkout's build

Shape N,in,out (batch, in_features, out_features). Three products per layer
step: forward ``x @ W.T + b``, grad_input ``gy @ W``, grad_weight ``gy.T @ x``
added into a gradient (as ``nn.Linear`` does). NumPy runs with as many BLAS
threads as fastconv has OpenMP threads (threadpoolctl), alternating with
fastconv in the same process. With 1 thread the clock is ``time.thread_time``
(CPU time of this thread: robust on a shared machine); with more it is wall
time, noisy when other processes run. Medians of ``--repeats`` single calls
after 3 warm-up calls (``harness.time_call``).
"""

import argparse
import time

import numpy as np

import fastconv
from fastconv import functional as F
from harness import fastconv_origin, median, time_call


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--shape", default="64,3136,1024")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    dt = np.dtype(args.dtype)
    n, i, o = (int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, i)).astype(dt)
    w = rng.standard_normal((o, i)).astype(dt)
    b = rng.standard_normal(o).astype(dt)
    gy = rng.standard_normal((n, o)).astype(dt)
    y = np.empty((n, o), dt)
    gx = np.empty((n, i), dt)
    gw = np.zeros((o, i), dt)
    tmp = np.empty((o, i), dt)
    flop = 2.0 * n * i * o
    print(f"{fastconv_origin()}, simd {F.simd_level()}; shape N={n} in={i} out={o} {dt.name}")
    for nt in (int(v) for v in args.threads.split(",")):
        fastconv.set_num_threads(nt)
        clock = time.thread_time if nt == 1 else time.perf_counter
        cases = [
            ("forward", lambda: F.linear(x, w, b, out=y),
             lambda: (np.matmul(x, w.T, out=y), np.add(y, b, out=y))),
            ("grad_input", lambda: F.linear_backward(gy, x, w, output_mask=(1, 0, 0),
                                                     out=(gx, None, None)),
             lambda: np.matmul(gy, w, out=gx)),
            ("grad_weight+=", lambda: F.linear_backward(gy, x, w, output_mask=(0, 1, 0),
                                                        out=(None, gw, None), accumulate=True),
             lambda: (np.matmul(gy.T, x, out=tmp), np.add(gw, tmp, out=gw))),
        ]
        tot = [0.0, 0.0]
        with threadpool_limits(limits=nt, user_api="blas"):
            for name, fc, ref in cases:
                a, c = (median(time_call(f, warmup=3, repeats=args.repeats, min_sample_s=0.0,
                                         clock=clock)) for f in (fc, ref))
                tot[0] += a
                tot[1] += c
                print(f"  {nt}T {name:14s} fastconv {a * 1e3:7.3f} ms {flop / a * 1e-9:6.0f} GF/s"
                      f"   numpy {c * 1e3:7.3f} ms {flop / c * 1e-9:6.0f} GF/s"
                      f"   numpy/fastconv {c / a:5.2f}")
        print(f"  {nt}T {'total':14s} fastconv {tot[0] * 1e3:7.3f} ms"
              f"{'':14s}numpy {tot[1] * 1e3:7.3f} ms{'':27s}{tot[1] / tot[0]:5.2f}")


if __name__ == "__main__":
    main()
