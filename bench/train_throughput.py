#!/usr/bin/env python
"""Training throughput (images/s) and peak RSS: fastconv ``Sequential.fit`` vs PyTorch.

    python bench/train_throughput.py                          # both models, 1 and 2 threads
    python bench/train_throughput.py --models lenet5 --threads 2 --batches 300

Recipe, the same on both sides (and the one the anchors describe): batch 64,
Adam(lr=1e-3), cross-entropy, accuracy computed per batch, the training set
held in memory as float32 in [0, 1] (all 60 000 MNIST images from ``--data-dir``,
default ../shared/mnist from the repository root; random images of the same
shape when the files are absent). fastconv runs ``model.fit(x, y, batch_size=64,
epochs=1, verbose=0)`` (it reshuffles every epoch); PyTorch runs the loop a
user writes: ``randperm`` once per epoch, slice, ``zero_grad / forward / loss /
backward / step``.

Every (implementation, model, threads) runs in a fresh subprocess, so its peak
RSS is its own and no thread pool of the other library is alive next to it.
Peak RSS is ``VmHWM`` from /proc/self/status (``ru_maxrss`` is recorded too,
but Linux carries it over from the parent across fork + exec). In the worker: ``warmup`` batches, then ``segments`` timed
runs of ``batches`` batches each; img/s is the median over segments.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from harness import (MNIST_DIR, OtherLoad, add_data_dir_option, fastconv_origin, format_table,
                     load_mnist_train, time_call)
from shapes import LENET_RSS_MAX_MIB, TRAINING_TARGET

MODELS = ("lenet5", "mnist_cnn")
BATCH = 64


def _status_mib(field):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_now_mib():
    return _status_mib("VmRSS")


def _peak_rss_mib():
    """Peak RSS of this process in MiB.

    Not ``ru_maxrss`` alone: Linux carries it over from the parent across
    fork + exec, so a worker started by a big process (run.py with torch and
    the timing arrays loaded) would report the parent's peak. ``VmHWM`` is the
    high-water mark of this program's own address space.
    """
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


# ---------------------------------------------------------------------------
# Workers (run in a subprocess each)
# ---------------------------------------------------------------------------
def _fastconv_trainer(model_name, threads):
    import fastconv
    import fastconv.models
    import fastconv.optim

    if threads > 0:                      # 0: the library's default thread count
        fastconv.set_num_threads(threads)
    model = getattr(fastconv.models, model_name)(seed=0)
    model.compile(optimizer=fastconv.optim.Adam(model.parameters(), lr=1e-3),
                  loss="cross_entropy", metrics=["accuracy"])

    def train(x, y):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)

    return train, fastconv_origin()


def _torch_model(torch, model_name):
    nn = torch.nn
    if model_name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10))


def _torch_trainer(model_name, threads):
    import torch
    import torch.nn.functional as F

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _torch_model(torch, model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def train(x, y):
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        perm = torch.randperm(len(xt))
        correct = 0
        for i in range(0, len(xt), BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            correct += int((out.argmax(1) == yb).sum())
        return correct

    return train, f"torch {torch.__version__}"


def worker(impl, model_name, threads, batches, warmup, segments, data_dir):
    rss_start = _rss_now_mib()
    try:
        from threadpoolctl import threadpool_limits

        if threads > 0:
            blas_limit = threadpool_limits(limits=threads, user_api="blas")  # noqa: F841
    except ImportError:
        pass
    make = _fastconv_trainer if impl == "fastconv" else _torch_trainer
    train, version = make(model_name, threads)
    rss_import = _rss_now_mib()
    x, y, source = load_mnist_train(data_dir)
    rss_data = _rss_now_mib()
    n = batches * BATCH
    if n > len(x):
        raise SystemExit(f"--batches {batches} needs {n} images, have {len(x)}")
    train(x[:warmup * BATCH], y[:warmup * BATCH])
    starts = iter(range(0, segments * n, n))

    def segment():
        lo = next(starts) % (len(x) - n + 1)
        train(x[lo:lo + n], y[lo:lo + n])

    with OtherLoad() as load:
        seconds = time_call(segment, warmup=0, repeats=segments, min_sample_s=0.0, gc_off=False)
    rates = [n / t for t in seconds]
    return dict(impl=impl, model=model_name, threads=threads, version=version, data=source,
                batch_size=BATCH, batches=batches, segments=segments,
                img_s=statistics.median(rates), img_s_segments=rates,
                peak_rss_mib=_peak_rss_mib(),
                ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                rss_start_mib=rss_start,
                rss_after_import_mib=rss_import, rss_after_data_mib=rss_data,
                other_load=load.cores)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def run_one(impl, model_name, threads, batches, warmup=20, segments=3, timeout=900,
            data_dir=MNIST_DIR):
    """Run one worker in a fresh interpreter; returns its record (or one with 'error').

    The worker inherits this process's environment, so it imports the same fastconv.
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if threads > 0:
            env[var] = str(threads)
        else:                            # 0: whatever each library does by default
            env.pop(var, None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, model_name,
           str(threads), str(batches), str(warmup), str(segments), str(data_dir)]
    base = dict(impl=impl, model=model_name, threads=threads)
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(base, error=f"timed out after {timeout} s")
    if p.returncode != 0:
        return dict(base, error=(p.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_all(threads=(1, 2), batches=100, impls=("fastconv", "torch"), models=MODELS,
            data_dir=MNIST_DIR, log=print):
    records = []
    for model_name in models:
        # MNIST-CNN is ~10x the work of LeNet-5 per image; fewer batches keep it short
        nb = batches if model_name == "lenet5" else max(20, batches // 3)
        for th in threads:
            for impl in impls:
                r = run_one(impl, model_name, th, nb, data_dir=data_dir)
                records.append(r)
                log(f"  train {model_name:<9} {th}T {impl:<8} "
                    + (f"ERROR {r['error']}" if "error" in r else
                       f"{r['img_s']:9.0f} img/s  peak RSS {r['peak_rss_mib']:.0f} MiB"
                       # random images need no uint8 copy: a lower peak RSS than MNIST's
                       + ("" if r["data"].startswith("MNIST") else f"  [{r['data']}]")))
    return records


def render(records):
    headers = ["model", "T", "impl", "img/s", "segments", "vs torch", "min x", "peak RSS MiB",
               "RSS after import / data", "check"]
    rows = []
    for r in records:
        if "error" in r:
            rows.append([r["model"], r["threads"], r["impl"], "ERROR", r["error"][:60],
                         "", "", "", "", ""])
            continue
        ref = next((u for u in records if u["impl"] == "torch" and u["model"] == r["model"]
                    and u["threads"] == r["threads"] and "img_s" in u), None)
        ratio = r["img_s"] / ref["img_s"] if ref and r["impl"] == "fastconv" else None
        tgt = TRAINING_TARGET.get(r["model"]) if r["impl"] == "fastconv" else None
        status = [] if ratio is None or tgt is None else ["PASS" if ratio >= tgt else "FAIL"]
        if r["impl"] == "fastconv" and r["model"] == "lenet5":
            status.append("RSS " + ("PASS" if r["peak_rss_mib"] <= LENET_RSS_MAX_MIB else "FAIL"))
        rows.append([r["model"], r["threads"], r["impl"], f"{r['img_s']:.0f}",
                     "/".join(f"{v:.0f}" for v in r["img_s_segments"]),
                     "" if ratio is None else f"{ratio:.2f}x", "" if tgt is None else f"{tgt:g}",
                     f"{r['peak_rss_mib']:.0f}",
                     f"{r['rss_after_import_mib']:.0f} / {r['rss_after_data_mib']:.0f}",
                     " ".join(status) + (" (busy machine*)" if (r.get("other_load") or 0) > 0.25
                                         else "")])
    data = next((r["data"] for r in records if "data" in r), "?")
    return ("== training throughput (batch 64, Adam 1e-3; vs torch = fastconv img/s / torch "
            f"img/s; data: {data}) ==\n"
            + format_table(headers, rows, {"T", "img/s", "vs torch", "min x", "peak RSS MiB"}))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        impl, model_name, th, nb, warm, seg, data_dir = argv[1:8]
        print(json.dumps(worker(impl, model_name, int(th), int(nb), int(warm), int(seg),
                                data_dir)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--impls", default="fastconv,torch")
    p.add_argument("--batches", type=int, default=300,
                   help="timed batches per segment for LeNet-5 (MNIST-CNN: a third)")
    p.add_argument("--json", default=None, help="also write the records to this file")
    add_data_dir_option(p)
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    log(fastconv_origin())
    records = run_all([int(t) for t in args.threads.split(",")], args.batches,
                      args.impls.split(","), args.models.split(","), args.data_dir, log)
    print(render(records))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
