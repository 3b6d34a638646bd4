"""The machine's measured floating-point peak, the denominator of "% of peak".

"Measured peak (BLAS SGEMM)" is the median GFLOP/s of a square NumPy matmul
(2048^3 float32 by default; DGEMM for float64) at the given thread count, with
NumPy's BLAS limited through threadpoolctl. A tuned GEMM gets within a few per
cent of the FMA peak, so it is the highest rate a convolution can hope for on
this machine.

Run it alone::

    python bench/measure_peak.py --threads 1,2
"""

import argparse
import json

import numpy as np

from harness import median, time_call

try:
    from threadpoolctl import threadpool_limits
except ImportError:   # pragma: no cover
    threadpool_limits = None


def gemm_peak(threads, dtype="float32", n=2048, repeats=5):
    """Median GFLOP/s of an ``n``^3 matmul with NumPy's BLAS at ``threads`` threads."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    if threadpool_limits is None:
        samples = time_call(lambda: np.matmul(a, b, out=out), warmup=1, repeats=repeats)
        limited = False
    else:
        with threadpool_limits(limits=threads, user_api="blas"):
            samples = time_call(lambda: np.matmul(a, b, out=out), warmup=1, repeats=repeats)
        limited = True
    return {
        "what": f"measured peak (BLAS {'S' if np.dtype(dtype) == np.float32 else 'D'}GEMM)",
        "dtype": str(np.dtype(dtype)),
        "threads": threads,
        "n": n,
        "gflops": 2 * n ** 3 / median(samples) / 1e9,
        "threads_limited": limited,
    }


def measure(threads=(1, 2), dtypes=("float32",), n=2048, repeats=5):
    """{(dtype, threads): GFLOP/s} plus the raw records."""
    records = [gemm_peak(t, d, n, repeats) for d in dtypes for t in threads]
    return {(r["dtype"], r["threads"]): r["gflops"] for r in records}, records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--dtype", default="float32,float64")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    args = p.parse_args(argv)
    _, records = measure([int(t) for t in args.threads.split(",")],
                         args.dtype.split(","), args.n)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            print(f"{r['what']:<28} {r['dtype']:<8} {r['threads']}T  {r['gflops']:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
