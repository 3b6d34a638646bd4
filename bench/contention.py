#!/usr/bin/env python
"""Busy-machine benchmark: training and inference with another CPU-bound process running.

    python bench/contention.py                       # LeNet-5 training + inference, fastconv vs torch
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
  ONNX Runtime) at batch 1, 64 and 256 under the same load.

Every measurement runs in its own interpreter; the hog runs for exactly the span
of each loaded worker.
"""

import argparse
import json
import sys
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5")
    p.add_argument("--threads", default="0,1,2", help="0 = the library's default")
    p.add_argument("--impls", default="fastconv,torch")
    p.add_argument("--batches", type=int, default=200,
                   help="timed training batches per segment (LeNet-5)")
    p.add_argument("--no-inference", action="store_true")
    p.add_argument("--inference-impls", default=",".join(inference.IMPLS))
    p.add_argument("--out", default=None, help="folder for table.txt and results.json")
    add_data_dir_option(p)
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    log(fastconv_origin())
    models = args.models.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    train = training_rows(models, threads, args.impls.split(","), args.batches, args.data_dir,
                          log)
    text = ["## Training under contention (medians of 3 segments)", "",
            render_training(train)]
    infer = []
    if not args.no_inference:
        batches = [1, 64, 256]
        inf_threads = [t for t in threads if t > 0] or [1, 2]
        infer = inference.run_all(models, batches, inf_threads,
                                  args.inference_impls.split(","), 4096, 5, True, log)
        text += ["", "## Inference with one CPU hog running (images/s, medians of 5 passes)", "",
                 inference.render(infer, batches, inf_threads)]
    print("\n".join(text))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.txt").write_text("\n".join(text) + "\n")
        (out / "results.json").write_text(json.dumps({"training": train, "inference": infer},
                                                      indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
