#!/usr/bin/env python
"""Busy-machine benchmark: training and inference with another CPU-bound process running.

    python bench/contention.py                       # LeNet-5 + MNIST CNN training + inference
    python bench/contention.py --models lenet5 --no-inference   # one model's training only
    python bench/contention.py --out bench/results/NAME   # also write table.txt and results.json there

Users' machines are busy. This re-measures the headline figures while one other
process (``python -c "while True: pass"``) keeps a core busy, next to the same
figures on the idle machine:

* training: ``Sequential.fit`` vs a PyTorch loop (bench/train_throughput.py's
  workers), LeNet-5, batch 64, Adam; at the libraries' default thread count
  ("default", no thread setting at all), at 1 and at 2 threads. The target: at
  the default thread count under load, fastconv keeps >= 80% of its own idle
  1-thread speed and is >= 3x PyTorch under the same load;
* inference: bench/inference.py's workers (``predict``, ``forward``, PyTorch,
  ONNX Runtime) at batch 1, 64 and 256 under the same load;
* inference beside other thread pools in the same process: fastconv
  ``forward`` and ``predict`` at 1 and 2 threads in a process that imported
  torch and NumPy and uses them between the calls (a 256x256 product on
  torch's thread pool and one on NumPy's BLAS before every call, outside the
  timed span: their threads may still spin when fastconv's call starts), and,
  for comparison, the same process without those calls; idle and with the hog.
  1 and 2 threads alternate pass by pass in one process per model and
  condition. The target: 2 threads never clearly slower than 1. Each row also
  gives the team controller's counts over its 2-thread passes
  (``fastconv.info()["team"]``: parallel regions / late / back-offs).

Every measurement runs in its own interpreter; the hog runs for exactly the span
of each loaded worker.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import inference
import train_throughput
from harness import add_data_dir_option, cpu_hog, fastconv_origin, markdown_table


def training_rows(models, threads, impls, batches, data_dir, log):
    records = []
    for model in models:
        nb = batches if model == "lenet5" else max(20, batches // 3)
        for hog in (False, True):
            for th in threads:
                for impl in impls:
                    with cpu_hog(hog):
                        r = train_throughput.run_one(impl, model, th, nb, data_dir=data_dir)
                    r.update(hog=hog, threads=th)
                    records.append(r)
                    label = "default" if th == 0 else f"{th}T"
                    log(f"  train {model:<9} {'hog ' if hog else 'idle'} {label:<7} {impl:<8} "
                        + (f"ERROR {r['error']}" if "error" in r else f"{r['img_s']:9.0f} img/s"))
    return records


def render_training(records):
    by = {(r["model"], r["impl"], r["hog"], r["threads"]): r.get("img_s") for r in records}
    cell = lambda v: f"{v:,.0f}" if v else "-"
    rows = []
    for model in sorted({r["model"] for r in records}):
        idle1 = by.get((model, "fastconv", False, 1))
        for hog in (False, True):
            for th in sorted({r["threads"] for r in records}):
                fc, tt = by.get((model, "fastconv", hog, th)), by.get((model, "torch", hog, th))
                rows.append([model, "one CPU hog" if hog else "idle",
                             "default" if th == 0 else th, cell(fc), cell(tt),
                             f"{fc / tt:.2f}x" if fc and tt else "-",
                             f"{fc / idle1:.0%}" if fc and idle1 else "-"])
    return markdown_table(["model", "condition", "threads", "fastconv img/s", "torch img/s",
                           "vs torch", "fastconv vs its idle 1T"], rows)


# ---------------------------------------------------------------------------
# Inference beside torch's and NumPy's thread pools, in one process
# ---------------------------------------------------------------------------
INPROC_MODES = ("imported", "used")   # torch + NumPy imported only / used between calls
# the team controller's counts over a row's passes (fastconv.info()["team"])
TEAM_COUNTS = ("parallel_regions", "late_regions", "descheduled_regions", "stalled_regions",
               "backoffs", "scout_late", "waited_s")


def inproc_worker(model_name, batches, passes, threads=(1, 2)):
    """fastconv forward / predict in a process where torch and NumPy do work too.

    The thread counts alternate pass by pass in this one process, so that 1 and
    2 threads see the same machine (a shared machine's load drifts).
    """
    import numpy as np
    import torch

    import fastconv
    import fastconv.models

    model = getattr(fastconv.models, model_name)(seed=0)
    model.eval()
    x_all = np.random.default_rng(0).random((512, 1, 28, 28), dtype=np.float32)
    ta = torch.randn(256, 256)           # torch and NumPy keep their own thread defaults
    na = np.random.default_rng(1).random((256, 256))
    torch_threads = torch.get_num_threads()

    def set_threads(th):
        # torch's wheel brings its libgomp, and the process then has that one
        # OpenMP runtime: fastconv.set_num_threads (omp_set_num_threads) also
        # sets torch's count, so torch's is put back, and fastconv keeps `th`
        fastconv.set_num_threads(th)
        torch.set_num_threads(torch_threads)

    def others():   # a user's own work between predictions: torch's pool, NumPy's BLAS
        float((ta @ ta)[0, 0])
        float((na @ na)[0, 0])

    others()
    rows = []
    for bs in batches:
        n = 256 if bs == 1 else 512      # a pass of short calls still spans ~5 ms
        chunks = [np.ascontiguousarray(x_all[i:i + bs]) for i in range(0, n - bs + 1, bs)]
        n = len(chunks) * bs
        calls = {"forward": model.forward,
                 "predict": lambda x: model.predict(x, batch_size=len(x))}
        for method, f in calls.items():
            for mode in INPROC_MODES:
                rates = {th: [] for th in threads}
                team = dict.fromkeys(TEAM_COUNTS, 0)
                for th in threads:                          # warm-up: buffers, plans, pools
                    set_threads(th)
                    for c in chunks[:max(1, len(chunks) // 4)]:
                        f(c)
                for _ in range(passes):
                    for th in threads:
                        set_threads(th)
                        assert fastconv.get_num_threads() == th
                        before = fastconv.info()["team"]
                        spent = 0.0
                        for c in chunks:
                            if mode == "used":
                                others()
                            t0 = time.perf_counter()
                            f(c)
                            spent += time.perf_counter() - t0
                        rates[th].append(n / spent)
                        if th == max(threads):
                            after = fastconv.info()["team"]
                            for k in TEAM_COUNTS:
                                team[k] += after[k] - before[k]
                for th in threads:
                    rows.append(dict(batch=bs, method=method, mode=mode, threads=th,
                                     img_s=statistics.median(rates[th]),
                                     img_s_passes=rates[th],
                                     team=team if th == max(threads) else None))
    return dict(model=model_name, torch=torch.__version__, numpy=np.__version__, rows=rows)


def inproc_rows(models, batches, passes, hogs, log):
    records = []
    for model in models:
        for hog in hogs:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--inproc-worker", model,
                   ",".join(map(str, batches)), str(passes)]
            with cpu_hog(hog):
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if p.returncode != 0:
                err = (p.stderr.strip().splitlines() or ["?"])[-1]
                log(f"  in-process {model}: ERROR {err}")
                records.append(dict(model=model, hog=hog, error=err))
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            for row in r["rows"]:
                records.append(dict(model=model, hog=hog, torch=r["torch"], numpy=r["numpy"],
                                    **row))
                log(f"  in-process {model:<9} {'hog ' if hog else 'idle'} {row['threads']}T "
                    f"{row['method']:<7} {row['mode']:<8} batch {row['batch']:>3}: "
                    f"{row['img_s']:9.0f} img/s")
    return records


def render_inproc(records):
    speed = {(r["model"], r["hog"], r["batch"], r["method"], r["mode"], r["threads"]): r
             for r in records if "img_s" in r}
    cell = lambda r: f"{r['img_s']:,.0f}" if r else "-"
    rows = []
    for (model, hog, bs, method, mode, th), r in sorted(speed.items()):
        if th != 2:
            continue
        one = speed.get((model, hog, bs, method, mode, 1))
        t = r["team"]
        rows.append([model, "one CPU hog" if hog else "idle", bs, method, mode, cell(one),
                     cell(r), f"{r['img_s'] / one['img_s']:.2f}x" if one else "-",
                     f"{t['parallel_regions']}/{t['late_regions']}/{t['backoffs']}"])
    return markdown_table(["model", "condition", "batch", "call", "torch + NumPy", "1T img/s",
                           "2T img/s", "2T / 1T", "2T regions/late/back-offs"], rows)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--inproc-worker":
        model, bs, passes = argv[1:4]
        print(json.dumps(inproc_worker(model, [int(b) for b in bs.split(",")], int(passes))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5,mnist_cnn")
    p.add_argument("--threads", default="0,1,2", help="0 = the library's default")
    p.add_argument("--impls", default="fastconv,torch")
    p.add_argument("--batches", type=int, default=200,
                   help="timed training batches per segment (LeNet-5)")
    p.add_argument("--no-training", action="store_true")
    p.add_argument("--no-inference", action="store_true")
    p.add_argument("--inference-impls", default=",".join(inference.IMPLS))
    p.add_argument("--no-inproc", action="store_true",
                   help="skip the rows beside torch's and NumPy's pools in one process")
    p.add_argument("--inproc-passes", type=int, default=9,
                   help="alternating 1- and 2-thread passes per row (in-process rows)")
    p.add_argument("--out", default=None, help="folder for table.txt and results.json")
    add_data_dir_option(p)
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    log(fastconv_origin())
    models = args.models.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    train, text = [], []
    if not args.no_training:
        train = training_rows(models, threads, args.impls.split(","), args.batches,
                              args.data_dir, log)
        text += ["## Training under contention (medians of 3 segments)", "",
                 render_training(train)]
    infer = []
    if not args.no_inference:
        batches = [1, 64, 256]
        inf_threads = [t for t in threads if t > 0] or [1, 2]
        infer = inference.run_all(models, batches, inf_threads,
                                  args.inference_impls.split(","), 4096, 5, True, log)
        text += ["", "## Inference with one CPU hog running (images/s, medians of 5 passes)", "",
                 inference.render(infer, batches, inf_threads)]
    inproc = []
    if not args.no_inproc:
        inproc = inproc_rows(models, [1, 64, 256], args.inproc_passes, (False, True), log)
        text += ["", "## fastconv inference beside torch and NumPy in one process "
                 f"(images/s, medians of {args.inproc_passes} passes; torch + NumPy 'used': "
                 "a 256x256 product on each before every call, untimed)", "",
                 render_inproc(inproc)]
    print("\n".join(text))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.txt").write_text("\n".join(text) + "\n")
        (out / "results.json").write_text(json.dumps(
            {"training": train, "inference": infer, "inference_in_process": inproc}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
