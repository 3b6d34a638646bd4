#!/usr/bin/env python
"""Data-parallel scaling of MNIST CNN training: ranks x threads, and the allreduce cost.

    python bench/scaling.py --steps 200            # mnist_cnn, batch 64, the three layouts
    python bench/scaling.py --steps 50 --model lenet5 --json out.json

Runs ``fastconv.distributed.fit`` (global batch ``--batch-size``, Adam,
cross-entropy, ``micro_batches`` = ranks) in three layouts, each in fresh
processes:

* 1 rank x 1 thread   (the baseline: micro_batches=1 is ``Sequential.fit``)
* 1 rank x 2 threads  (OpenMP inside the kernels)
* 2 ranks x 1 thread  (``mpiexec -n 2``; each rank runs half of every batch)

and prints for each: images/s over ``--steps`` timed steps (after
``--warmup`` steps), ms per step, the time each step spent in the gradient
exchange (waiting for the other rank included) and its share of the step,
and the exchange alone (``--reps`` barrier-separated calls of the same
reduce-scatter + allgather on a buffer of the model's gradient size). Then
the speed-ups 2x1 vs 1x1 (the target is >= 1.8) and 1x2 vs 1x1.

Images are random, MNIST-shaped float32: throughput does not depend on the
pixel values. Numbers mean something only on an otherwise idle machine
with at least 2 cores.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LAYOUTS = (("1x1", 1, 1), ("1x2", 1, 2), ("2x1", 2, 1))


def worker(args):
    import fastconv
    from fastconv import distributed, models, nn, optim

    ranks = distributed.launched_by_mpiexec()
    comm = distributed.world_comm() if ranks > 1 else None
    fastconv.set_num_threads(args.threads)
    steps = args.warmup + args.steps
    rng = np.random.default_rng(0)
    x = rng.random((steps * args.batch_size, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    model = getattr(models, args.model)(seed=0)
    model.compile(optimizer=optim.Adam(model.parameters(), lr=1e-3), loss="cross_entropy",
                  metrics=["accuracy"])
    stamps, comm_times = [], []

    def on_batch_end(step, logs):
        stamps.append(time.perf_counter())
        comm_times.append(logs["comm_seconds"])

    distributed.fit(model, x, y, batch_size=args.batch_size, epochs=1, verbose=0, seed=0,
                    shuffle=False, comm=comm, threads=args.threads, check_every=0,
                    callbacks=[nn.LambdaCallback(on_batch_end=on_batch_end)])
    timed = stamps[args.warmup:]
    seconds = timed[-1] - stamps[args.warmup - 1]
    exchange = comm_times[args.warmup:]

    # the exchange alone: same plan and buffer size, ranks lined up by a barrier
    alone = []
    if comm is not None:
        n = sum(p.data.size for p in model.parameters()) + 2
        reducer = distributed._TreeReducer(comm, n, model.dtype, comm.size, 60.0)
        leaves = [np.ones(n, model.dtype)]
        for _ in range(args.reps + 2):
            comm.Barrier()
            t0 = time.perf_counter()
            reducer.reduce(leaves)
            alone.append(time.perf_counter() - t0)
        alone = alone[2:]
    result = {
        "ranks": ranks, "threads": args.threads, "model": args.model,
        "batch_size": args.batch_size, "steps": args.steps,
        "images_per_second": args.steps * args.batch_size / seconds,
        "ms_per_step": 1e3 * seconds / args.steps,
        "exchange_ms_per_step": 1e3 * statistics.mean(exchange),
        "exchange_alone_ms": 1e3 * statistics.median(alone) if alone else 0.0,
        "gradient_mbytes": sum(p.data.nbytes for p in model.parameters()) / 1e6,
    }
    if comm is None or comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def run_layout(args, ranks, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--reps", str(args.reps),
           "--model", args.model, "--batch-size", str(args.batch_size)]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
        if mpiexec is None:
            raise SystemExit("bench/scaling.py: mpiexec not found (pip install mpi4py mpich)")
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench/scaling.py: {ranks}x{threads} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="timed steps per layout (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--reps", type=int, default=20, help="calls of the exchange alone (default 20)")
    p.add_argument("--model", default="mnist_cnn", choices=("mnist_cnn", "lenet5"))
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per layout")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.reps < 1:
        p.error("--steps, --warmup and --reps must be >= 1")
    if args.worker:
        return worker(args)

    print(f"{args.model}, global batch {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup}, {os.cpu_count()} CPUs")
    print(f"{'layout':<8}{'img/s':>10}{'ms/step':>10}{'exchange ms':>13}{'share':>8}"
          f"{'alone ms':>10}")
    results = {}
    for name, ranks, threads in LAYOUTS:
        r = results[name] = run_layout(args, ranks, threads)
        share = r["exchange_ms_per_step"] / r["ms_per_step"]
        print(f"{name:<8}{r['images_per_second']:>10,.0f}{r['ms_per_step']:>10.1f}"
              f"{r['exchange_ms_per_step']:>13.2f}{share:>8.1%}{r['exchange_alone_ms']:>10.2f}",
              flush=True)
    base = results["1x1"]["images_per_second"]
    s21 = results["2x1"]["images_per_second"] / base
    s12 = results["1x2"]["images_per_second"] / base
    print(f"speed-up 2 ranks x 1 thread vs 1 x 1: {s21:.2f}x (target >= 1.8x)")
    print(f"speed-up 1 rank x 2 threads vs 1 x 1: {s12:.2f}x")
    print(f"gradient exchanged per step: {results['2x1']['gradient_mbytes']:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "speedup_2x1": s21,
                                               "speedup_1x2": s12}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
