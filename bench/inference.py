#!/usr/bin/env python
"""Inference throughput (images/s): fastconv ``predict`` / ``forward`` vs PyTorch and ONNX Runtime.

    python bench/inference.py                              # both models, batch 1/64/256, 1 and 2 threads
    python bench/inference.py --models lenet5 --threads 2 --hog    # with one CPU-bound process beside it

The same weights everywhere: fastconv builds each model (``fastconv.models``,
seed 0) and saves it; a PyTorch ``nn.Sequential`` of the same layers gets those
parameters copied in; ONNX Runtime runs that PyTorch model exported with
``torch.onnx.export(..., dynamo=False)`` (a dynamic batch axis). ONNX Runtime:
``intra_op_num_threads`` = the thread count, ``inter_op_num_threads=1``,
sequential execution; PyTorch: ``torch.set_num_threads`` and ``torch.no_grad()``
in eval mode; fastconv: ``set_num_threads`` and ``model.predict(x,
batch_size=len(x))`` (class probabilities) or ``model.forward(x)`` after
``model.eval()`` (logits). The fastconv workers import torch as well, so that its
thread pool is in the process as in a user's program (torch's wheel brings its
own libgomp, which fastconv's OpenMP then runs on); ``--fastconv-alone`` leaves
torch out of them.

Every (implementation, model, thread count) runs in its own interpreter, so no
other library's thread pool is alive beside it. Each worker calls the model once
per batch over ``--images`` random images (512 at batch 1), ``--passes`` times
after one warm-up pass; img/s is the median over passes. Outputs for the first 64
images are compared with fastconv's ``forward`` (logits; ``predict`` against its
softmax). ``--hog`` runs ``python -c "while True: pass"`` beside every worker.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness import OtherLoad, cpu_hog, fastconv_origin, markdown_table, time_call

MODELS = ("lenet5", "mnist_cnn")
IMPLS = ("onnxruntime", "torch", "fastconv-predict", "fastconv-forward")
CHECK_N = 64


# ---------------------------------------------------------------------------
# The same model in PyTorch (weights copied from the fastconv model)
# ---------------------------------------------------------------------------
def torch_model(torch, fc_model):
    """An eval-mode torch ``nn.Sequential`` equal to ``fc_model`` (same parameters)."""
    from fastconv import nn as fnn

    tnn = torch.nn
    layers = []
    for layer in fc_model.layers:
        if isinstance(layer, fnn.Conv2d):
            t = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                           stride=layer.stride, padding=layer.padding,
                           bias=layer.bias is not None)
            t.weight.data = torch.from_numpy(np.array(layer.weight.data))
            if layer.bias is not None:
                t.bias.data = torch.from_numpy(np.array(layer.bias.data))
        elif isinstance(layer, fnn.Linear):
            t = tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            t.weight.data = torch.from_numpy(np.array(layer.weight.data))
            if layer.bias is not None:
                t.bias.data = torch.from_numpy(np.array(layer.bias.data))
        elif isinstance(layer, fnn.MaxPool2d):
            if isinstance(layer.padding[0], tuple):   # per side: torch pools symmetric only
                raise SystemExit("bench/inference.py: no PyTorch twin for a MaxPool2d with "
                                 f"per-side padding {layer.padding}")
            t = tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding,
                              dilation=layer.dilation, ceil_mode=layer.ceil_mode)
        elif isinstance(layer, fnn.ReLU):
            t = tnn.ReLU()
        elif isinstance(layer, fnn.Flatten):
            t = tnn.Flatten()
        elif isinstance(layer, fnn.Dropout):
            t = tnn.Dropout(layer.p)
        else:
            raise SystemExit(f"bench/inference.py: no PyTorch twin for {type(layer).__name__}")
        layers.append(t)
    return tnn.Sequential(*layers).eval()


def export_onnx(model_path, onnx_path):
    """Export the PyTorch twin of the saved fastconv model (runs in its own process)."""
    import torch

    import fastconv

    fc = fastconv.load_model(model_path)
    tm = torch_model(torch, fc)
    x = torch.zeros((1, 1, 28, 28))     # both bench models read MNIST-sized images
    torch.onnx.export(tm, (x,), onnx_path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)


# ---------------------------------------------------------------------------
# Workers (one process each)
# ---------------------------------------------------------------------------
def _make_call(impl, threads, model_path, onnx_path, with_torch=True):
    if impl.startswith("fastconv"):
        if with_torch:
            try:
                import torch  # noqa: F401  (a user's process often has it; its pool must not hurt)
            except ImportError:
                pass
        import fastconv

        fastconv.set_num_threads(threads)
        model = fastconv.load_model(model_path)
        model.eval()
        if impl == "fastconv-predict":
            return (lambda x: model.predict(x, batch_size=len(x))), fastconv_origin()
        return model.forward, fastconv_origin()
    if impl == "torch":
        import torch

        import fastconv

        torch.set_num_threads(threads)
        tm = torch_model(torch, fastconv.load_model(model_path))

        def call(x):
            with torch.no_grad():
                return tm(torch.from_numpy(x)).numpy()

        return call, f"torch {torch.__version__}"
    if impl == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        return (lambda x: sess.run(None, {"x": x})[0]), f"onnxruntime {ort.__version__}"
    raise SystemExit(f"unknown implementation {impl!r}")


def worker(impl, threads, model_path, onnx_path, x_path, out_path, batches, images, passes,
           with_torch=True):
    call, version = _make_call(impl, threads, model_path, onnx_path, with_torch)
    x_all = np.load(x_path)
    np.save(out_path, np.asarray(call(np.ascontiguousarray(x_all[:CHECK_N]))))
    rows = []
    for bs in batches:
        n = min(len(x_all), 512 if bs == 1 else images)
        chunks = [np.ascontiguousarray(x_all[i:i + bs]) for i in range(0, n - bs + 1, bs)]
        n = len(chunks) * bs
        for c in chunks[:max(1, len(chunks) // 4)]:     # warm-up: buffers, plans, pools
            call(c)

        def one_pass():
            for c in chunks:
                call(c)

        with OtherLoad() as load:
            seconds = time_call(one_pass, warmup=0, repeats=passes, min_sample_s=0.0,
                                gc_off=False)
        rates = [n / t for t in seconds]
        rows.append(dict(batch=bs, img_s=statistics.median(rates), img_s_passes=rates,
                         other_load=load.cores))
    return dict(impl=impl, threads=threads, version=version, rows=rows)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def _run(args, timeout=1800):
    p = subprocess.run([sys.executable, str(Path(__file__).resolve())] + args,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        return None, (p.stderr.strip().splitlines() or ["?"])[-1]
    return p.stdout, None


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run_all(models, batches, threads, impls, images, passes, hog, log, with_torch=True):
    import fastconv
    import fastconv.models

    records = []
    with tempfile.TemporaryDirectory(prefix="fc-infer-") as tmp:
        tmp = Path(tmp)
        x = np.random.default_rng(0).random((max(images, 512), 1, 28, 28), dtype=np.float32)
        np.save(tmp / "x.npy", x)
        for name in models:
            model_path, onnx_path = tmp / f"{name}.npz", tmp / f"{name}.onnx"
            getattr(fastconv.models, name)(seed=0).save(str(model_path))
            if "onnxruntime" in impls:
                _, err = _run(["--export", str(model_path), str(onnx_path)])
                if err:
                    log(f"  {name}: ONNX export failed: {err}")
            for th in threads:
                outs = {}
                for impl in impls:
                    out_path = tmp / f"out-{name}-{impl}-{th}.npy"
                    cmd = ["--worker", impl, str(th), str(model_path), str(onnx_path),
                           str(tmp / "x.npy"), str(out_path), ",".join(map(str, batches)),
                           str(images), str(passes), "with-torch" if with_torch else "alone"]
                    with cpu_hog(hog):
                        stdout, err = _run(cmd)
                    if err:
                        log(f"  {name} {th}T {impl}: ERROR {err}")
                        records.append(dict(model=name, impl=impl, threads=th, error=err))
                        continue
                    r = json.loads(stdout.strip().splitlines()[-1])
                    outs[impl] = np.load(out_path)
                    for row in r["rows"]:
                        records.append(dict(model=name, impl=impl, threads=th, hog=hog,
                                            version=r["version"], **row))
                        log(f"  {name:<9} {th}T {impl:<17} batch {row['batch']:>3}: "
                            f"{row['img_s']:10.0f} img/s")
                ref = outs.get("fastconv-forward")
                if ref is not None:
                    for impl, o in outs.items():
                        want = _softmax(ref.astype(np.float64)) if impl == "fastconv-predict" else ref
                        err = float(np.max(np.abs(o - want)) / max(np.max(np.abs(want)), 1e-30))
                        records.append(dict(model=name, impl=impl, threads=th,
                                            agreement_rel_err=err))
    return records


def render(records, batches, threads):
    speed = {(r["model"], r["impl"], r["threads"], r["batch"]): r["img_s"]
             for r in records if "img_s" in r}
    agree = {(r["model"], r["impl"], r["threads"]): r["agreement_rel_err"]
             for r in records if "agreement_rel_err" in r}
    headers = ["model", "batch", "threads", "ONNX Runtime", "torch", "fastconv predict",
               "fastconv forward", "best fastconv / ORT", "best fastconv / torch"]
    rows = []
    cell = lambda v: f"{v:,.0f}" if v else "-"
    for model in sorted({k[0] for k in speed}):
        for bs in batches:
            for th in threads:
                get = lambda impl: speed.get((model, impl, th, bs))
                fc = [v for v in (get("fastconv-predict"), get("fastconv-forward")) if v]
                best = max(fc) if fc else None
                ratio = lambda other: (f"{best / other:.2f}x" if best and other else "-")
                rows.append([model, bs, th, cell(get("onnxruntime")), cell(get("torch")),
                             cell(get("fastconv-predict")), cell(get("fastconv-forward")),
                             ratio(get("onnxruntime")), ratio(get("torch"))])
    lines = [markdown_table(headers, rows)]
    if agree:
        lines.append("")
        lines.append("Agreement with fastconv forward (max |diff| / max |ref|, first 64 images): "
                     + ", ".join(f"{m} {i} {t}T {e:.1e}" for (m, i, t), e in sorted(agree.items())
                                 if i != "fastconv-forward"))
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--export":
        export_onnx(argv[1], argv[2])
        return 0
    if argv and argv[0] == "--worker":
        impl, th, model_path, onnx_path, x_path, out_path, bs, images, passes = argv[1:10]
        with_torch = argv[10:11] != ["alone"]
        print(json.dumps(worker(impl, int(th), model_path, onnx_path, x_path, out_path,
                                [int(b) for b in bs.split(",")], int(images), int(passes),
                                with_torch)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,64,256")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--hog", action="store_true",
                   help="run one CPU-bound process beside every worker")
    p.add_argument("--fastconv-alone", action="store_true",
                   help="fastconv workers do not import torch (by default they do: torch's "
                        "wheel then supplies the OpenMP runtime fastconv runs on)")
    p.add_argument("--json", default=None, help="also write the records to this file")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    log = lambda m: print(m, file=sys.stderr, flush=True)
    log(fastconv_origin())
    records = run_all(args.models.split(","), batches, threads, args.impls.split(","),
                      args.images, args.passes, args.hog, log,
                      with_torch=not args.fastconv_alone)
    print(render(records, batches, threads))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
