#!/usr/bin/env python
"""Benchmark fastconv against PyTorch, NumPy im2col and the plain-loop reference.

    python bench/run.py                 # quick run, a few minutes
    python bench/run.py --full          # more repeats, float64 for every impl, naive bwd too
    python bench/run.py --threads 1 --shapes d,e --ops conv --dtype float32
    python bench/run.py --training      # also LeNet-5 / MNIST-CNN training img/s and RSS
    PYTHONPATH=. python bench/run.py    # from the repository root: the checkout's build

It measures the fastconv that ``import fastconv`` finds (the installed one,
unless PYTHONPATH says otherwise); its path is printed first and stored in the
JSON.

For every (op, shape, dtype, threads) each implementation is warmed up, then
timed several times. Each implementation is timed in its own interpreter (a
worker: this script run with ``--worker-records``), so no other library's
thread pool is alive beside it: PyTorch's wheel brings the libgomp that
fastconv's OpenMP then also uses, and one library's thread-count settings and
spinning threads change the other's speed in a shared process.
``--same-process`` times them all in this one, interleaved, as before. The
agreement check runs here, before the workers start, and times nothing.
The table shows medians, the table shows medians, GFLOP/s, the fraction of the
measured BLAS peak, every alternative's time divided by fastconv's (its
speed-up) and PASS/FAIL against the targets of the speed issue. The results
(JSON, the table as text, a PNG bar chart) go to bench/results/<date>-<host>/.
"""

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import baselines
import shapes as S
import train_throughput
from harness import (SETTLE_S, OtherLoad, add_data_dir_option, check_agreement,
                     fastconv_origin, format_table, make_runner, median, set_threads, time_call,
                     time_scaled, wait_idle)
from measure_peak import measure
from pngchart import bar_chart

BENCH_DIR = Path(__file__).resolve().parent

MODES = {
    "quick": dict(warmup=1, repeats=7, max_total_s=2.0, naive_phases=("fwd",),
                  naive_budget_s=1.0, naive_repeats=1, f64_impls=("fastconv",)),
    "full": dict(warmup=2, repeats=15, max_total_s=8.0, naive_phases=("fwd", "bwd", "fwdbwd"),
                 naive_budget_s=4.0, naive_repeats=3, f64_impls=None),
}
BUSY_CORES = 0.25  # other processes using more CPU than this during a measurement: flagged


def _csv(s):
    return [v.strip() for v in s.split(",") if v.strip()] if s else None


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    m = p.add_mutually_exclusive_group()
    m.add_argument("--quick", dest="mode", action="store_const", const="quick",
                   help="few repeats, naive forward only, float64 for fastconv only (default)")
    m.add_argument("--full", dest="mode", action="store_const", const="full",
                   help="more repeats, every impl in every dtype, naive on every phase")
    p.set_defaults(mode="quick")
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2 (default)")
    p.add_argument("--dtype", default=None,
                   help="float32,float64 (default: float32, plus float64 as the mode says)")
    p.add_argument("--shapes", default=None, help="case names, e.g. a,b,p1 (default: all)")
    p.add_argument("--ops", default="conv,maxpool,avgpool", help="conv,maxpool,avgpool")
    p.add_argument("--phases", default="fwd,bwd,fwdbwd", help="fwd,bwd,fwdbwd")
    p.add_argument("--impls", default="fastconv,torch,numpy,naive",
                   help="which implementations (default: all four)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-naive", action="store_true", help="leave fastconv.reference out")
    p.add_argument("--no-check", action="store_true",
                   help="skip the agreement check of every impl against NumPy before timing")
    p.add_argument("--no-peak", action="store_true", help="skip the BLAS peak measurement")
    p.add_argument("--training", action="store_true",
                   help="also measure LeNet-5 / MNIST-CNN training throughput and peak RSS")
    p.add_argument("--training-batches", type=int, default=None,
                   help="timed batches per training run (default 100 quick, 300 full)")
    add_data_dir_option(p)
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before starting, wait up to S seconds for other processes to go quiet")
    p.add_argument("--busy-retries", type=int, default=1, metavar="K",
                   help="re-measure a row up to K times if other processes were busy (default 1)")
    p.add_argument("--busy-wait", type=float, default=15.0, metavar="S",
                   help="before such a retry, wait up to S seconds for quiet (default 15)")
    p.add_argument("--busy-wait-total", type=float, default=120.0, metavar="S",
                   help="stop retrying once S seconds in all were spent waiting (default 120)")
    p.add_argument("--out", default=None,
                   help="results directory (default bench/results/<date>-<hostname>)")
    p.add_argument("--no-save", action="store_true", help="print only; write no files")
    p.add_argument("--same-process", action="store_true",
                   help="time every implementation in this one process, interleaved (default: "
                        "each in its own worker process)")
    p.add_argument("--worker-records", default=None, metavar="PATH", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------
def machine_info():
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("OMP_", "MKL_", "OPENBLAS_", "GOMP_", "MALLOC_", "KMP_"))},
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info["cpu_model"] = fields.get("model name")
        info["cpu_mhz_nominal"] = fields.get("cpu MHz")
        info["cpu_flags"] = sorted(f for f in flags
                                   if f in {"fma", "avx", "avx2", "avx512f", "avx512bw",
                                            "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16",
                                            "avx512_fp16", "amx_tile"})
        info["avx2"] = "avx2" in flags
        info["avx512"] = "avx512f" in flags
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        info["mem_total_kib"] = int(meminfo.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    import numpy

    info["numpy"] = numpy.__version__
    try:
        import threadpoolctl

        info["threadpoolctl"] = threadpoolctl.__version__
        info["threadpools"] = [{k: v for k, v in d.items() if k != "filepath"}
                               for d in threadpoolctl.threadpool_info()]
    except ImportError:
        info["threadpoolctl"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_parallel"] = torch.__config__.parallel_info().splitlines()[:8]
    except ImportError:
        info["torch"] = None
    try:
        import fastconv

        info["fastconv"] = fastconv.__version__
        info["fastconv_path"] = str(Path(fastconv.__file__).parent)
        info["fastconv_info"] = fastconv.info() if hasattr(fastconv, "info") else None
    except Exception as exc:
        info["fastconv"] = None
        info["fastconv_error"] = f"{type(exc).__name__}: {exc}"
    return info


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------
def measure_one(impl, op, phase, case, dtype, mode, naive_cache):
    """(median s, batch actually run, samples in s) of one op on one impl."""
    if impl.scaled:
        # the reference is single-threaded Python: measure it once per thread sweep
        key = (op, phase, case.name, dtype)
        if key not in naive_cache:
            naive_cache[key] = time_scaled(impl, op, phase, case, dtype,
                                           budget_s=mode["naive_budget_s"],
                                           repeats=mode["naive_repeats"])
        return naive_cache[key]
    samples = time_call(make_runner(impl, op, phase, case, dtype), warmup=mode["warmup"],
                        repeats=mode["repeats"], max_total_s=mode["max_total_s"])
    return median(samples), case.N, samples


def _counters_delta(before, after):
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in before}


def measure_grid(impls, args, mode, log):
    threads = [int(t) for t in _csv(args.threads)]
    dtypes = _csv(args.dtype) or ["float32", "float64"]
    phases = _csv(args.phases)
    records, naive_cache, prev = [], {}, None
    waited = [0.0]     # seconds spent waiting for quiet, bounded by --busy-wait-total
    for th in threads:
        set_threads(impls, th)
        for op in _csv(args.ops):
            for case in S.select(_csv(args.shapes), S.OPS[op]):
                for dtype in dtypes:
                    for impl in impls.values():
                        if not impl.supports(case):   # e.g. numpy: no ceil_mode
                            continue
                        if (dtype == "float64" and args.dtype is None
                                and mode["f64_impls"] is not None
                                and impl.name not in mode["f64_impls"]):
                            continue
                        if prev is not None and impl.name != prev:
                            time.sleep(SETTLE_S)
                        prev = impl.name
                        for phase in phases:
                            if impl.scaled and phase not in mode["naive_phases"]:
                                continue
                            rec = dict(op=op, phase=phase, case=case.name, shape=case.describe(),
                                       dtype=dtype, threads=th, impl=impl.name, pid=os.getpid())
                            head = f"  {op:<7} {case.name:<3} {phase:<6} {dtype} {th}T {impl.name:<8}"
                            try:
                                best = None   # (other load, result): the quietest attempt
                                for attempt in range(args.busy_retries + 1):
                                    if attempt:   # the last one ran beside other work: again
                                        if waited[0] >= args.busy_wait_total:
                                            break    # the machine stays busy: just flag rows
                                        if impl.scaled:
                                            naive_cache.pop((op, phase, case.name, dtype), None)
                                        w0 = time.perf_counter()
                                        wait_idle(args.busy_wait, BUSY_CORES)
                                        waited[0] += time.perf_counter() - w0
                                    team0 = impl.team_counters()
                                    with OtherLoad() as load:
                                        result = measure_one(impl, op, phase, case, dtype, mode,
                                                             naive_cache)
                                    team = _counters_delta(team0, impl.team_counters())
                                    if best is None or (load.cores or 0) < best[0]:
                                        best = (load.cores or 0, result, team)
                                    if best[0] <= BUSY_CORES:
                                        break
                                other, (t, n_used, samples), team = best
                                if impl.scaled:
                                    naive_cache[(op, phase, case.name, dtype)] = best[1]
                            except Exception as exc:
                                rec["error"] = f"{type(exc).__name__}: {exc}"
                                records.append(rec)
                                log(f"{head} ERROR {rec['error']}")
                                continue
                            flops = case.flops(phase)
                            rec.update(ms=t * 1e3, samples_ms=[x * 1e3 for x in samples],
                                       n_used=n_used,
                                       gflops=flops / t / 1e9 if flops else None,
                                       other_load=other)
                            if team is not None:   # what fastconv's team controller did meanwhile
                                rec["team"] = team
                            records.append(rec)
                            log(f"{head} {t * 1e3:10.3f} ms"
                                + (f"  (scaled from N={n_used})" if n_used != case.N else "")
                                + (f"  [other processes: {other:.1f} cores]"
                                   if other > BUSY_CORES else "")
                                + (f"  [team: {team['backoffs']} back-offs, "
                                   f"{team['late_regions']} late regions, "
                                   f"{team['stalled_regions']} of them stalls]"
                                   if team and team["backoffs"] else ""))
    return records


def measure_isolated(names, argv, log):
    """measure_grid's records, each implementation timed by a worker process of its own.

    The worker is this script with the same options, ``--impls`` narrowed to
    one name and ``--worker-records`` set; it inherits the environment (so it
    imports the same fastconv) and writes its progress to our stderr.
    """
    records = []
    with tempfile.TemporaryDirectory(prefix="fastconv-bench-") as tmp:
        for name in names:
            path = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv,
                   "--impls", name, "--worker-records", str(path)]
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if done.returncode != 0 or not path.exists():
                log(f"worker for {name} failed (exit {done.returncode}); its rows are missing")
                continue
            payload = json.loads(path.read_text())
            for why in payload["skipped"].values():
                log(f"skipping {name}: {why}")
            records += payload["records"]
    return records


def add_peak_fractions(records, peaks):
    for r in records:
        peak = peaks.get((r["dtype"], r["threads"]))
        g = r.get("gflops")
        r["pct_peak"] = 100 * g / peak if peak and g else None


def add_ratios(records):
    """ratio = impl time / fastconv time for the same op, phase, case, dtype, threads."""
    fast = {(r["op"], r["phase"], r["case"], r["dtype"], r["threads"]): r["ms"]
            for r in records if r["impl"] == "fastconv" and "ms" in r}
    for r in records:
        f = fast.get((r["op"], r["phase"], r["case"], r["dtype"], r["threads"]))
        r["ratio"] = r["ms"] / f if f and "ms" in r else None
        r["target"] = None
        if r["impl"] != "fastconv" and r["dtype"] == "float32":
            r["target"] = S.ratio_target(r["op"], r["phase"], r["case"], r["impl"])
        r["status"] = "" if r["target"] is None or r["ratio"] is None else (
            "PASS" if r["ratio"] >= r["target"] else "FAIL")


def evaluate_targets(records, peaks, training):
    """One row per target of the speed issue that this run measured."""
    by = {(r["op"], r["phase"], r["case"], r["dtype"], r["threads"], r["impl"]): r
          for r in records if "ms" in r}
    threads = sorted({r["threads"] for r in records})
    out = []

    def add(target, where, value, threshold, higher_is_better=True, unit="x"):
        ok = value >= threshold if higher_is_better else value <= threshold
        out.append(dict(target=target, where=where, value=value, threshold=threshold,
                        unit=unit, ok=ok, margin=value / threshold))

    def ratio(op, phase, case, th, impl, dtype="float32"):
        r = by.get((op, phase, case, dtype, th, impl))
        f = by.get((op, phase, case, dtype, th, "fastconv"))
        return r["ms"] / f["ms"] if r and f else None

    for th in threads:
        for case, tgt in S.TORCH_FWDBWD_TARGET.items():
            v = ratio("conv", "fwdbwd", case, th, "torch")
            if v is not None:
                add(f"conv {case} fwd+bwd torch/fastconv >= {tgt}x", f"{th}T", v, tgt)
        for op in ("maxpool", "avgpool"):
            for case, tgt in S.POOL_TORCH_TARGET.items():
                v = ratio(op, "fwdbwd", case, th, "torch")
                if v is not None:
                    add(f"{op} {case} fwd+bwd torch/fastconv >= {tgt}x", f"{th}T", v, tgt)
        for case, frac in S.PEAK_FRACTION_TARGET.items():
            f = by.get(("conv", "fwdbwd", case, "float32", th, "fastconv"))
            peak = peaks.get(("float32", th))
            if f and peak:
                add(f"conv {case} fwd+bwd >= {frac:.0%} of measured peak", f"{th}T",
                    f["gflops"] / peak, frac, unit="of peak")
        for impl, tgt in (("naive", S.NAIVE_TARGET), ("numpy", S.NUMPY_TARGET)):
            cases = sorted({r["case"] for r in records if r["impl"] == impl})
            for case in cases:
                vals = [(ratio(r["op"], r["phase"], case, th, impl), f"{r['op']} {r['phase']}")
                        for r in records if r["impl"] == impl and r["case"] == case
                        and r["threads"] == th and r["dtype"] == "float32"]
                vals = [v for v in vals if v[0] is not None]
                if vals:
                    v, where = min(vals)
                    add(f"{case} every op {impl}/fastconv >= {tgt:g}x",
                        f"{th}T, worst: {where}", v, tgt)
    if 1 in threads and 2 in threads:
        for case, tgt in S.THREAD_SCALING_TARGET.items():
            a = by.get(("conv", "fwdbwd", case, "float32", 1, "fastconv"))
            b = by.get(("conv", "fwdbwd", case, "float32", 2, "fastconv"))
            if a and b:
                add(f"conv {case} fwd+bwd fastconv 1T->2T speed-up >= {tgt}x", "float32",
                    a["ms"] / b["ms"], tgt)
    for th in threads:
        worst = None
        for r in records:
            if (r["impl"] == "fastconv" and r["dtype"] == "float64" and r["threads"] == th
                    and "ms" in r):
                f = by.get((r["op"], r["phase"], r["case"], "float32", th, "fastconv"))
                if f:
                    v = r["ms"] / f["ms"]
                    if worst is None or v > worst[0]:
                        worst = (v, f"{r['op']} {r['case']} {r['phase']}")
        if worst:
            add(f"fastconv float64 time <= {S.FLOAT64_SLOWDOWN_MAX}x float32", f"{th}T, worst: "
                f"{worst[1]}", worst[0], S.FLOAT64_SLOWDOWN_MAX, higher_is_better=False)
    for t in training or []:
        if t.get("impl") != "fastconv" or "img_s" not in t:
            continue
        ref = next((u for u in training if u.get("impl") == "torch" and u["model"] == t["model"]
                    and u["threads"] == t["threads"] and "img_s" in u), None)
        tgt = S.TRAINING_TARGET.get(t["model"])
        if ref and tgt:
            add(f"{t['model']} training img/s fastconv/torch >= {tgt}x", f"{t['threads']}T",
                t["img_s"] / ref["img_s"], tgt)
        if t["model"] == "lenet5" and t.get("peak_rss_mib"):
            add(f"lenet5 training peak RSS <= {S.LENET_RSS_MAX_MIB:g} MiB", f"{t['threads']}T",
                t["peak_rss_mib"], S.LENET_RSS_MAX_MIB, higher_is_better=False, unit="MiB")
    return out


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------
# right-aligned (numeric) columns of the kernel and target tables
NUMERIC = {"ms", "GFLOP/s", "% peak", "vs fastconv", "min x", "T", "value", "threshold", "margin"}


def _num(v, spec):
    return "" if v is None else format(v, spec)


def render(records, targets, checks, peaks, info):
    lines = []
    lines.append(f"fastconv {info.get('fastconv')}  |  {info.get('cpu_model')}  |  "
                 f"{info.get('cpus_usable')} cores  |  avx2={info.get('avx2')} "
                 f"avx512={info.get('avx512')}  |  numpy {info.get('numpy')}  torch "
                 f"{info.get('torch')}  |  {info['date']}")
    if peaks:
        lines.append("measured peak (BLAS SGEMM/DGEMM 2048^3): " + ", ".join(
            f"{d} {t}T {g:.0f} GFLOP/s" for (d, t), g in sorted(peaks.items())))
    bad = [c for c in checks if not c["ok"]]
    if checks:
        lines.append(f"agreement with NumPy on a batch of 2: {len(checks) - len(bad)}/{len(checks)} ok"
                     + "".join(f"\n  MISMATCH {c['impl']} {c['op']} {c['case']} {c['dtype']}: "
                               f"{c['worst']} rel err {c['err']:.2e} {c.get('error', '')}"
                               for c in bad))
    busy = [r for r in records if (r.get("other_load") or 0) > BUSY_CORES]
    if busy:
        lines.append(f"WARNING: other processes used > {BUSY_CORES} cores during {len(busy)} of "
                     f"{len(records)} measurements (marked *; worst "
                     f"{max(r['other_load'] for r in busy):.1f} cores): those times are not "
                     "trustworthy, rerun on an idle machine")
    order = {n: i for i, n in enumerate(baselines.IMPL_ORDER)}
    case_order = {n: i for i, n in enumerate(S.ALL_CASES)}
    headers = ["shape", "phase", "dtype", "T", "impl", "ms", "GFLOP/s", "% peak",
               "vs fastconv", "min x", "check"]
    for op in ("conv", "maxpool", "avgpool"):
        rows = [r for r in records if r["op"] == op]
        if not rows:
            continue
        rows.sort(key=lambda r: (S.PHASES.index(r["phase"]), case_order[r["case"]], r["dtype"],
                                 r["threads"], order.get(r["impl"], 99)))
        table, last = [], None
        for r in rows:
            group = (r["phase"], r["case"], r["dtype"], r["threads"])
            if last is not None and group[:2] != last[:2]:
                table.append([""] * len(headers))
            last = group
            impl = r["impl"] + (f" (scaled from N={r['n_used']})" if r.get("n_used") and
                                r["n_used"] != S.ALL_CASES[r["case"]].N else "")
            table.append([
                f"{r['case']} {r['shape']}", r["phase"], r["dtype"], r["threads"], impl,
                ("ERROR" if "ms" not in r else _num(r["ms"], ".3f")
                 + ("*" if (r.get("other_load") or 0) > BUSY_CORES else "")),
                _num(r.get("gflops"), ".1f"), _num(r.get("pct_peak"), ".0f"),
                "" if r["impl"] == "fastconv" or r.get("ratio") is None
                else f"{r['ratio']:.2f}x", _num(r.get("target"), "g"), r.get("status", ""),
            ])
        lines += ["", f"== {op} (ms = median; vs fastconv = impl time / fastconv time, "
                  f"> 1 means fastconv is faster) ==", format_table(headers, table, NUMERIC)]
    if targets:
        trows = [[t["target"], t["where"], f"{t['value']:.3g}", f"{t['threshold']:g}",
                  f"{t['margin']:.2f}", "PASS" if t["ok"] else "FAIL"] for t in targets]
        npass = sum(t["ok"] for t in targets)
        lines += ["", f"== targets: {npass} PASS, {len(targets) - npass} FAIL "
                  "(margin = value / threshold) ==",
                  format_table(["target", "where", "value", "threshold", "margin", "result"],
                               trows, NUMERIC)]
    return "\n".join(lines)


def draw_chart(records, path):
    cats, series, targets = [], {}, []
    threads = sorted({r["threads"] for r in records})
    key = {(r["op"], r["case"], r["threads"]): r.get("ratio") for r in records
           if r["impl"] == "torch" and r["phase"] == "fwdbwd" and r["dtype"] == "float32"}
    for op in ("conv", "maxpool", "avgpool"):
        for case in S.ALL_CASES:
            if any((op, case, t) in key for t in threads):
                cats.append(f"{op} {case}")
                targets.append(S.ratio_target(op, "fwdbwd", case, "torch"))
                for t in threads:
                    series.setdefault(f"{t}T", []).append(key.get((op, case, t)))
    if not cats or not any(v for vs in series.values() for v in vs):
        return None
    return bar_chart(path, "torch time / fastconv time, fwd+bwd float32", cats, series,
                     targets, "speed-up of fastconv (x)")


def worker_main(args, mode, log):
    """Time one implementation (``--impls``) and write its records to ``--worker-records``."""
    impls, skipped = baselines.load(_csv(args.impls))
    records = measure_grid(impls, args, mode, log) if impls else []
    Path(args.worker_records).write_text(json.dumps(dict(records=records, skipped=skipped)))
    return 0


def main(argv=None):
    args = parse_args(argv)
    mode = MODES[args.mode]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if args.worker_records:
        return worker_main(args, mode, log)
    log(fastconv_origin())

    wanted = [n for n in _csv(args.impls)
              if not (args.no_torch and n == "torch") and not (args.no_naive and n == "naive")]
    impls, skipped = baselines.load(wanted)
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")
    info = machine_info()
    info["impls_in_own_process"] = not args.same_process

    peaks, peak_records = {}, []
    if not args.no_peak:
        dts = _csv(args.dtype) or ["float32", "float64"]
        # a peak is the best the machine does: keep the highest of the attempts
        for attempt in range(args.busy_retries + 1):
            if attempt:
                wait_idle(args.busy_wait, BUSY_CORES)
            with OtherLoad() as load:
                _, recs = measure([int(t) for t in _csv(args.threads)], dts)
            for r in recs:
                key = (r["dtype"], r["threads"])
                if r["gflops"] > peaks.get(key, 0.0):
                    peaks[key] = r["gflops"]
                    peak_records = [q for q in peak_records
                                    if (q["dtype"], q["threads"]) != key] + [r]
                    r["other_load"] = load.cores
            if not load.cores or load.cores <= BUSY_CORES:
                break
        for r in peak_records:
            log(f"{r['what']} {r['dtype']} {r['threads']}T: {r['gflops']:.1f} GFLOP/s")

    checks = []
    if not args.no_check and "fastconv" in impls:
        oracle = baselines.NumpyImpl()
        set_threads({"numpy": oracle, **impls}, 1)
        others = [i for n, i in impls.items() if n in ("fastconv", "torch")]
        # where the NumPy baseline has no such pooling (ceil_mode, per-side
        # padding) the plain loops of fastconv.reference are the oracle
        loops = baselines.NaiveImpl()
        for op in _csv(args.ops):
            for case in S.select(_csv(args.shapes), S.OPS[op]):
                for dtype in ("float32", "float64"):
                    judge = oracle if oracle.supports(case) else loops
                    for c in check_agreement(others, judge, op, case, dtype):
                        checks.append(dict(c, op=op, case=case.name, dtype=dtype))
        for c in checks:
            if not c["ok"]:
                log(f"MISMATCH {c['impl']} {c['op']} {c['case']} {c['dtype']}: {c['worst']} "
                    f"rel err {c['err']:.2e} {c.get('error', '')}")

    if args.wait_idle > 0:
        cores = wait_idle(args.wait_idle, BUSY_CORES)
        log(f"other processes: {cores:.2f} cores busy" if cores is not None else "")

    t0 = time.perf_counter()
    if args.same_process:
        records = measure_grid(impls, args, mode, log)
    else:
        worker_argv = sys.argv[1:] if argv is None else list(argv)
        records = measure_isolated(list(impls), worker_argv, log)
    add_peak_fractions(records, peaks)
    add_ratios(records)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else BENCH_DIR / "results" / f"{stamp}-{socket.gethostname()}"

    def report(training):
        """Print and (unless --no-save) write everything measured so far."""
        targets = evaluate_targets(records, peaks, training)
        text = render(records, targets, checks, peaks, info)
        if training:
            text += "\n\n" + train_throughput.render(training)
        if args.no_save:
            return text
        out.mkdir(parents=True, exist_ok=True)
        payload = dict(machine=info, mode=args.mode, mode_settings=mode,
                       argv=sys.argv[1:] if argv is None else list(argv), peaks=peak_records,
                       checks=checks, records=records, targets=targets, training=training)
        (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
        (out / "table.txt").write_text(text + "\n")
        return text

    # the kernel results are written before the (long) training runs start
    text = report(None)
    training = None
    if args.training:
        batches = args.training_batches or (100 if args.mode == "quick" else 300)
        training = train_throughput.run_all(
            threads=[int(t) for t in _csv(args.threads)], batches=batches,
            impls=[n for n in ("fastconv", "torch") if n in impls or n == "fastconv"],
            data_dir=args.data_dir, log=log)
        text = report(training)
    print(text)
    log(f"measured in {time.perf_counter() - t0:.0f} s")
    if args.no_save:
        return 0
    chart = out / "speedup_vs_torch.png"
    backend = draw_chart(records, chart)
    log(f"wrote {out / 'results.json'}, {out / 'table.txt'}"
        + (f", {chart} ({backend})" if backend else " (no chart: no torch/fastconv pair)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
