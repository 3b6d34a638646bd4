#!/usr/bin/env python
"""Time of one ``optimizer.step()`` on a model's parameters: fused kernel vs NumPy path vs PyTorch.

    python bench/optim_step.py                                   # mnist_cnn + lenet5, Adam, 1 and 2 threads
    python bench/optim_step.py --models mnist_cnn --optimizers adam,sgd --threads 1 --repeats 200
    PYTHONPATH=. python bench/optim_step.py                      # from the repository root: the checkout's build

For each (model, optimiser, threads) the three implementations run interleaved
in one process on parameters of the model's shapes (float32, random gradients),
after warm-up steps; every timing is the median of ``--repeats`` single steps
(``harness.time_call``; wall clock, and with one thread also ``time.thread_time``,
which a busy shared machine disturbs less). PyTorch runs ``torch.optim`` with
its CPU defaults and, where the version supports it, ``fused=True``.
"""

import argparse
import time

import numpy as np

import fastconv
from fastconv import models, optim
from harness import fastconv_origin, median, time_call

OPTIMIZERS = {
    "adam": (optim.Adam, dict(lr=1e-3), "Adam", dict(lr=1e-3)),
    "sgd": (optim.SGD, dict(lr=0.01, momentum=0.9), "SGD", dict(lr=0.01, momentum=0.9)),
    "rmsprop": (optim.RMSprop, dict(lr=0.01), "RMSprop", dict(lr=0.01)),
    "adagrad": (optim.Adagrad, dict(lr=0.01), "Adagrad", dict(lr=0.01)),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_cnn,lenet5")
    ap.add_argument("--optimizers", default="adam")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"{fastconv_origin()}, simd {fastconv.info()['simd']}, "
          f"torch {torch.__version__ if torch else 'absent'}; median of {args.repeats} steps, ms")
    print(f"{'model':10} {'optim':8} {'thr':>3} {'params':>9} {'fused':>8} {'numpy':>8} "
          f"{'torch':>8} {'torch-fu':>8} {'np/fused':>8} {'torch/fused':>11}  clock")
    for model_name in args.models.split(","):
        model = getattr(models, model_name)(seed=0)
        shapes = [p.data.shape for p in model.parameters()]
        nparam = sum(int(np.prod(s)) for s in shapes)
        for opt_name in args.optimizers.split(","):
            cls, kw, tname, tkw = OPTIMIZERS[opt_name]
            for threads in (int(t) for t in args.threads.split(",")):
                fastconv.set_num_threads(threads)
                runs = {}
                for fused in (True, False):
                    ps = [fastconv.nn.Parameter(rng.standard_normal(s).astype(np.float32))
                          for s in shapes]
                    for p in ps:
                        p.grad[...] = rng.standard_normal(p.grad.shape) * 0.01
                    opt = cls(ps, **kw)
                    opt.fused = fused
                    runs["fused" if fused else "numpy"] = opt.step
                if torch is not None:
                    torch.set_num_threads(threads)
                    for key, extra in (("torch", {}), ("torch-fu", {"fused": True})):
                        tps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
                        for p in tps:
                            p.grad = torch.randn_like(p) * 0.01
                        try:
                            topt = getattr(torch.optim, tname)(tps, **tkw, **extra)
                        except (TypeError, RuntimeError):
                            continue
                        runs[key] = topt.step
                for step in runs.values():
                    for _ in range(args.warmup):
                        step()
                clocks = [("wall", time.perf_counter)]
                if threads == 1:
                    clocks.append(("cpu", time.thread_time))
                for clock_name, clock in clocks:
                    res = {k: [] for k in runs}
                    # interleave implementations in rounds so machine load hits all alike
                    per_round = max(1, args.repeats // 10)
                    for _ in range(10):
                        for k, step in runs.items():
                            res[k].append(median(time_call(step, warmup=0, repeats=per_round,
                                                           min_sample_s=0.0, clock=clock)))
                    med = {k: median(v) * 1e3 for k, v in res.items()}
                    fu = med["fused"]
                    tbest = min((med[k] for k in ("torch", "torch-fu") if k in med),
                                default=float("nan"))
                    print(f"{model_name:10} {opt_name:8} {threads:3d} {nparam:9d} {fu:8.3f} "
                          f"{med['numpy']:8.3f} {med.get('torch', float('nan')):8.3f} "
                          f"{med.get('torch-fu', float('nan')):8.3f} {med['numpy'] / fu:8.2f} "
                          f"{tbest / fu:11.2f}  {clock_name}", flush=True)


if __name__ == "__main__":
    main()
