#!/usr/bin/env python
"""Data-parallel scaling of MNIST CNN training: ranks x threads, where a step's time goes.

    python bench/scaling.py --steps 100 --rounds 3   # mnist_cnn, batch 64
    python bench/scaling.py --steps 50 --model lenet5 --json out.json

Runs ``fastconv.distributed.fit`` (global batch ``--batch-size``, Adam,
cross-entropy, ``micro_batches`` = ranks) in four layouts, each in fresh
processes:

* 1x1: 1 rank x 1 thread (the baseline: micro_batches=1 is ``Sequential.fit``)
* 1x2: 1 rank x 2 threads (OpenMP inside the kernels)
* 2x1: 2 ranks x 1 thread (``mpiexec -n 2``; each rank runs half of every
  batch and updates half of the parameters: the sharded optimiser step)
* 2x1 full: the same with ``shard_optimizer=False`` (the summed gradient is
  allgathered and every rank runs the whole optimiser step)

and prints for each: images/s over ``--steps`` timed steps (after
``--warmup`` steps), ms per step, and per step the ms of each phase
(forward+backward, reduce-scatter, optimiser, allgather; waiting for the
other rank is in the exchange phases), the exchange's share of the step,
and the exchange alone (``--reps`` barrier-separated calls of the same
reduce-scatter + parameter allgather). Then the speed-ups against 1x1 (the
target for 2x1 is >= 1.8) and the machine's ceiling: two independent
one-process runs of half-batch steps at the same time (what 2x1 would take
with a free exchange and whole optimiser steps; memory bandwidth and the
shared cache are what slow the pair down against one alone).

Images are random, MNIST-shaped float32: throughput does not depend on the
pixel values. Numbers mean something only on an otherwise idle machine
with at least 2 cores; ``--rounds`` repeats the set back to back and reports
each layout's median run.
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
PHASES = ("compute", "reduce", "update", "gather")


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
    stamps, phases, sharded = [], [], []

    def on_batch_end(step, logs):
        stamps.append(time.perf_counter())
        phases.append([logs[k + "_seconds"] for k in PHASES])
        sharded.append(logs["sharded"])

    distributed.fit(model, x, y, batch_size=args.batch_size, epochs=1, verbose=0, seed=0,
                    shuffle=False, comm=comm, threads=args.threads, check_every=0,
                    shard_optimizer=not args.no_shard,
                    callbacks=[nn.LambdaCallback(on_batch_end=on_batch_end)])
    timed = stamps[args.warmup:]
    seconds = timed[-1] - stamps[args.warmup - 1]
    phase_ms = {k: 1e3 * statistics.mean(col) for k, col in
                zip(PHASES, zip(*phases[args.warmup:]))}

    # the exchange alone: the same reduce-scatter and parameter allgather,
    # ranks lined up by a barrier before each
    alone = []
    if comm is not None:
        params = model.parameters()
        n = sum(p.data.size for p in params)
        reducer = distributed._TreeReducer(comm, n, model.dtype, comm.size, 60.0)
        gather = distributed._ShardGather(comm, [p.data.size for p in params], reducer.cuts, 60.0)
        leaves = [np.ones(n + 2, model.dtype)]
        for _ in range(args.reps + 2):
            comm.Barrier()
            t0 = time.perf_counter()
            reducer.reduce_scatter(leaves)
            gather.gather([p.data for p in params], "bench")
            alone.append(time.perf_counter() - t0)
        alone = alone[2:]
    result = {
        "ranks": ranks, "threads": args.threads, "model": args.model,
        "batch_size": args.batch_size, "steps": args.steps,
        "images_per_second": args.steps * args.batch_size / seconds,
        "ms_per_step": 1e3 * seconds / args.steps,
        "exchange_ms_per_step": phase_ms["reduce"] + phase_ms["gather"],
        "phase_ms": phase_ms,
        "sharded_steps": sum(sharded),
        "exchange_alone_ms": 1e3 * statistics.median(alone) if alone else 0.0,
        "gradient_mbytes": sum(p.data.nbytes for p in model.parameters()) / 1e6,
    }
    if comm is None or comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def worker_cmd(args, threads, batch_size, shard=True):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--reps", str(args.reps),
           "--model", args.model, "--batch-size", str(batch_size)]
    return cmd if shard else cmd + ["--no-shard"]


def finish(proc, stdout, stderr, what):
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench/scaling.py: {what} failed:\n{stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def bench_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")


def run_layout(args, ranks, threads, shard=True):
    cmd = worker_cmd(args, threads, args.batch_size, shard)
    if ranks > 1:
        mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
        if mpiexec is None:
            raise SystemExit("bench/scaling.py: mpiexec not found (pip install mpi4py mpich)")
        bind = ["-bind-to", "core"] if args.bind else []
        cmd = [mpiexec, *bind, "-n", str(ranks)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bench_env(threads),
                          timeout=args.timeout)
    return finish(proc, proc.stdout, proc.stderr, f"{ranks}x{threads}")


def run_ceiling(args):
    """Two independent one-process runs of half-batch steps, at the same time.

    Each does what a rank of 2x1 computes (forward, backward and a whole
    optimiser step of batch_size/2 images, 1 thread) with no exchange and no
    waiting for the other: the ms per step of the pair is the least a 2x1
    step can take on this machine with whole optimiser steps, memory-bandwidth
    and cache sharing between the two processes included. Returns the ms per
    step alone and in the pair (the slower of the two).
    """
    half = args.batch_size // 2
    alone = run_one(args, half)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    procs = [subprocess.Popen(worker_cmd(args, 1, half), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=bench_env(1),
                              preexec_fn=(pin(cpus[i]) if args.bind and len(cpus) >= 2 else None))
             for i in range(2)]
    pair = [finish(p, *p.communicate(timeout=args.timeout), "ceiling pair") for p in procs]
    return alone["ms_per_step"], max(r["ms_per_step"] for r in pair)


def pin(cpu):
    """A preexec_fn that binds the child to one CPU (as ``mpiexec -bind-to core`` does)."""
    return lambda: os.sched_setaffinity(0, {cpu})


def run_one(args, batch_size):
    proc = subprocess.run(worker_cmd(args, 1, batch_size), capture_output=True, text=True,
                          env=bench_env(1), timeout=args.timeout)
    return finish(proc, proc.stdout, proc.stderr, f"1x1 batch {batch_size}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="timed steps per layout (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--reps", type=int, default=20, help="calls of the exchange alone (default 20)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every layout this many times, back to back; medians (default 1)")
    p.add_argument("--model", default="mnist_cnn", choices=("mnist_cnn", "lenet5"))
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per layout")
    p.add_argument("--bind", action="store_true",
                   help="pin each rank (and each process of the ceiling pair) to its own "
                        "core: mpiexec -bind-to core")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-shard", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.reps < 1 or args.rounds < 1:
        p.error("--steps, --warmup, --reps and --rounds must be >= 1")
    if args.worker:
        return worker(args)
    if args.batch_size < 2 or args.batch_size % 2:
        p.error("--batch-size must be even (2x1 splits it in halves)")

    print(f"{args.model}, global batch {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup}, {args.rounds} round(s), {os.cpu_count()} CPUs"
          + (", ranks bound to cores" if args.bind else ""))
    layouts = [(name, ranks, threads, True) for name, ranks, threads in LAYOUTS]
    layouts.append(("2x1 full", 2, 1, False))   # every rank runs the whole optimiser step
    runs = {name: [] for name, *_ in layouts}
    ceilings = []
    for _ in range(args.rounds):
        for name, ranks, threads, shard in layouts:
            runs[name].append(run_layout(args, ranks, threads, shard))
        ceilings.append(run_ceiling(args))
    results = {name: median_result(rs) for name, rs in runs.items()}

    print(f"{'layout':<10}{'img/s':>8}{'ms/step':>9}  {'compute':>8}{'reduce':>8}{'update':>8}"
          f"{'gather':>8}  {'exch %':>8}{'alone':>7}")
    for name, r in results.items():
        ph = r["phase_ms"]
        share = r["exchange_ms_per_step"] / r["ms_per_step"]
        print(f"{name:<10}{r['images_per_second']:>8,.0f}{r['ms_per_step']:>9.1f}  "
              f"{ph['compute']:>8.2f}{ph['reduce']:>8.2f}{ph['update']:>8.2f}{ph['gather']:>8.2f}"
              f"  {share:>8.1%}{r['exchange_alone_ms']:>7.2f}")
    print("(ms per step: compute = forward+backward of the rank's micro-batches, reduce = "
          "gradient reduce-scatter, update = optimiser, gather = allgather of the parameters "
          "(of the gradient for 'full'); exch % = (reduce+gather)/step; alone = ms of the "
          "exchange between barriers)")
    if results["2x1"]["sharded_steps"] != args.warmup + args.steps:
        print(f"warning: only {results['2x1']['sharded_steps']} of {args.warmup + args.steps} "
              "2x1 steps took the sharded update")
    base = results["1x1"]["ms_per_step"]
    solo = statistics.median(c[0] for c in ceilings)
    pair = statistics.median(c[1] for c in ceilings)
    s21 = base / results["2x1"]["ms_per_step"]
    s21f = base / results["2x1 full"]["ms_per_step"]
    s12 = base / results["1x2"]["ms_per_step"]
    ceiling = base / pair
    print(f"speed-up 2 ranks x 1 thread vs 1 x 1: {s21:.2f}x (target >= 1.8x); "
          f"without the sharded optimiser step {s21f:.2f}x")
    print(f"speed-up 1 rank x 2 threads vs 1 x 1: {s12:.2f}x")
    print(f"ceiling: two independent 1-thread processes of {args.batch_size // 2}-image steps "
          f"take {pair:.1f} ms/step at the same time ({solo:.1f} alone): "
          f"2x1 can reach at most {ceiling:.2f}x on this machine without sharding "
          f"({s21 / ceiling:.0%} of it reached)")
    print(f"gradient per step: {results['2x1']['gradient_mbytes']:.1f} MB; each rank sends and "
          f"receives (ranks-1)/ranks of it in the reduce-scatter and again in the allgather")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"results": results, "speedup_2x1": s21, "speedup_2x1_full": s21f,
             "speedup_1x2": s12, "ceiling": {"solo_ms": solo, "pair_ms": pair,
                                             "speedup": ceiling}}, indent=2) + "\n")
    return 0


def median_result(rs):
    """The run with the median ms per step (its phases come with it)."""
    return sorted(rs, key=lambda r: r["ms_per_step"])[len(rs) // 2]


if __name__ == "__main__":
    raise SystemExit(main())
