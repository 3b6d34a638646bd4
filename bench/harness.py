"""What every benchmark script shares: which fastconv is measured, the MNIST
training set, inputs and runners, thread control, **the** timing function
``time_call``, the agreement check, machine-load tracking and table formatting.

The scripts are run as ``python bench/NAME.py``, which puts bench/ first on
sys.path, so they import this module by name with no sys.path edits.
"""

import contextlib
import gc
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from shapes import ConvCase


# ---------------------------------------------------------------------------
# Which fastconv
# ---------------------------------------------------------------------------
def fastconv_origin():
    """``"fastconv 0.1.0 from /path/to/fastconv"``: the build the numbers belong to.

    The benchmarks measure whatever ``import fastconv`` finds. ``python
    bench/NAME.py`` puts bench/, not the repository root, on sys.path, so that is
    the installed package; ``PYTHONPATH=. python bench/NAME.py`` from the root
    measures the checkout's own build (in-place, or the compiled module
    ``pip install .`` leaves in the source tree). Worker processes inherit the
    environment and the working directory, so they import the same one.
    """
    try:
        import fastconv
    except Exception as exc:   # an unbuilt checkout raises ImportError from inside
        return (f"fastconv not importable ({type(exc).__name__}: {exc}); to measure a "
                "checkout's build, run from its root with PYTHONPATH=.")
    return f"fastconv {fastconv.__version__} from {Path(fastconv.__file__).parent}"


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------
# Where this project keeps the data set: ../shared/mnist from the repository root.
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "mnist"


def add_data_dir_option(parser):
    """The ``--data-dir`` option of every script that trains on MNIST."""
    parser.add_argument(
        "--data-dir", default=str(MNIST_DIR),
        help="directory with the MNIST IDX files, plain or .gz (default: ../shared/mnist "
             "from the repository root); random images of the same shape if absent")


def load_mnist_train(data_dir):
    """The 60 000 MNIST training images, read with ``fastconv.datasets.read_idx``.

    Returns ``(x, y, source)``: ``x`` float32 of shape (60000, 1, 28, 28) in
    [0, 1], ``y`` int64 of shape (60000,), ``source`` a description for the
    report. Without the files in ``data_dir`` the images are random (``source``
    says so): throughput does not depend on pixel values, so the benchmark
    still runs on a machine without the data set.

    Not ``datasets.load_mnist``: it also converts the test set and holds all four
    uint8 arrays while converting, about 40 MiB more peak RSS, and the peak RSS
    of training is one of the figures measured.
    """
    from fastconv import datasets

    data_dir = Path(data_dir)
    names = datasets.MNIST_FILES[:2]          # train images, train labels
    paths = [next((p for p in (data_dir / n, data_dir / f"{n}.gz") if p.is_file()), None)
             for n in names]
    if None in paths:
        rng = np.random.default_rng(0)
        x = rng.random((60000, 1, 28, 28), dtype=np.float32)
        return x, rng.integers(0, 10, 60000).astype(np.int64), f"random images (no MNIST in {data_dir})"
    raw = datasets.read_idx(paths[0], sha256=datasets.MNIST_SHA256[names[0]])
    x = raw.reshape(-1, 1, 28, 28).astype(np.float32)
    del raw
    x /= np.float32(255.0)    # in place: the RSS figure should be the training's, not a temporary's
    y = datasets.read_idx(paths[1], sha256=datasets.MNIST_SHA256[names[1]]).astype(np.int64)
    return x, y, f"MNIST train from {data_dir}"


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------
def make_inputs(case, dtype, n=None):
    """Random NumPy inputs for ``case`` (batch ``n`` if given), fixed seed.

    Uniform values make max-pool ties improbable, so every implementation
    does the same work whatever its tie rule.
    """
    if n is not None:
        case = case.with_batch(n)
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    rand = lambda shape: rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    data = {"x": rand(case.x_shape), "gy": rand(case.out_shape)}
    if isinstance(case, ConvCase):
        data["w"] = rand(case.w_shape)
        data["b"] = rand((case.K,))
    return case, data


def make_runner(impl, op, phase, case, dtype, n=None):
    """A no-argument callable that runs ``op``/``phase`` of ``case`` once on ``impl``.

    Inputs are converted to the implementation's array type here, outside the
    timed region; whatever the call allocates (its outputs) is timed.
    ``op`` is 'conv', 'maxpool' or 'avgpool'; ``phase`` 'fwd', 'bwd' or 'fwdbwd'.
    """
    case, data = make_inputs(case, dtype, n)
    a = {k: impl.asarray(v) for k, v in data.items()}
    x, gy = a["x"], a["gy"]
    shape = case.x_shape

    if op == "conv":
        w, b, s, p = a["w"], a["b"], case.stride, case.padding
        fwd = lambda: impl.conv_fwd(x, w, b, s, p)
        bwd = lambda: impl.conv_bwd(gy, x, w, s, p)
        fwdbwd = lambda: (fwd(), bwd())
    elif op == "maxpool":
        k, s, p, kw = case.kernel, case.stride, case.pool_padding, case.pool_kwargs
        idx = impl.maxpool_fwd(x, k, s, p, True, **kw)[1]
        fwd = lambda: impl.maxpool_fwd(x, k, s, p, False, **kw)

        def bwd(indices=idx):
            return impl.maxpool_bwd(gy, indices, shape, k, s, p, **kw)

        def fwdbwd():   # training needs the indices, so this forward returns them
            return bwd(impl.maxpool_fwd(x, k, s, p, True, **kw)[1])
    elif op == "avgpool":
        k, s, p, kw = case.kernel, case.stride, case.pool_padding, case.pool_kwargs
        fwd = lambda: impl.avgpool_fwd(x, k, s, p, **kw)
        bwd = lambda: impl.avgpool_bwd(gy, shape, k, s, p, **kw)
        fwdbwd = lambda: (fwd(), bwd())
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}[phase]


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------
# Idle time after switching implementation: PyTorch's, fastconv's and OpenBLAS's
# pools keep spinning for a while after a call, and on 2 cores a pool still
# spinning halves the next library's 2-thread speed (README, "thread pools").
SETTLE_S = 0.25


def set_threads(impls, n):
    """Give every implementation (and NumPy's BLAS) ``n`` threads."""
    for impl in impls.values():
        impl.set_num_threads(n)


# ---------------------------------------------------------------------------
# Other load on the machine
# ---------------------------------------------------------------------------
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot():
    """(wall s, whole-machine busy CPU s, this process's CPU s) or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)    # minus idle and iowait
    t = os.times()
    return time.perf_counter(), busy / _HZ, t.user + t.system


class OtherLoad:
    """CPU time that other processes used while the block ran, in cores.

    A benchmark on a 2-core machine is meaningless while a compiler or a test
    suite runs beside it; each measurement records this so such rows can be
    flagged instead of silently reported.
    """

    def __enter__(self):
        self._start = _cpu_snapshot()
        self.cores = None
        return self

    def __exit__(self, *exc):
        end = _cpu_snapshot()
        if self._start and end and end[0] > self._start[0]:
            other = (end[1] - self._start[1]) - (end[2] - self._start[2])
            # clock-tick granularity makes short blocks noisy: at least 0.05 s
            self.cores = max(0.0, other / max(end[0] - self._start[0], 0.05))
        return False


@contextlib.contextmanager
def cpu_hog(on=True):
    """Run one CPU-bound process (``while True: pass``) for the block, if ``on``.

    The busy-machine condition of the contention benchmarks: another program
    takes one core while the measured one runs.
    """
    if not on:
        yield None
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)          # let it reach the scheduler's steady state
        yield hog
    finally:
        hog.kill()
        hog.wait()


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def time_call(fn, *, warmup=1, repeats=5, min_sample_s=0.005, max_total_s=None,
              clock=time.perf_counter, gc_off=True):
    """Per-call seconds of ``fn``: ``repeats`` samples after ``warmup`` calls.

    Calls shorter than ``min_sample_s`` are looped inside one sample (the
    count is fixed by the last warm-up call; no warm-up means one call) so
    timer resolution does not matter; ``min_sample_s=0`` times single calls.
    ``max_total_s`` stops sampling early (keeping at least 3 samples) for
    slow calls. ``clock``: wall time by default; ``time.thread_time`` (CPU
    time of this thread) is steadier on a shared machine for one-thread
    calls. The garbage collector is off while sampling unless ``gc_off`` is
    False (whole training runs: as users run them, and with what the
    collector frees out of the peak RSS). Returns the list of samples;
    callers report the median.
    """
    inner = 1
    for _ in range(warmup):
        t0 = clock()
        fn()
        inner = max(1, math.ceil(min_sample_s / max(clock() - t0, 1e-9)))
    samples = []
    gc_was_on = gc.isenabled()
    if gc_off:
        gc.disable()
    try:
        start = clock()
        for _ in range(repeats):
            t0 = clock()
            for _ in range(inner):
                fn()
            samples.append((clock() - t0) / inner)
            if (max_total_s is not None and len(samples) >= 3
                    and clock() - start > max_total_s):
                break
    finally:
        if gc_was_on:
            gc.enable()
    return samples


def median(samples):
    return statistics.median(samples)


def scaled_batch(impl, op, phase, case, dtype, budget_s):
    """(N', seconds for one image): the largest batch N' <= N whose call of a
    slow implementation fits in ``budget_s``, judged from one image."""
    probe = time_call(make_runner(impl, op, phase, case, dtype, n=1), warmup=1, repeats=1,
                      min_sample_s=0.0)[0]
    return int(max(1, min(case.N, budget_s // max(probe, 1e-9)))), probe


def time_scaled(impl, op, phase, case, dtype, *, budget_s, repeats):
    """Time a slow implementation on a reduced batch and scale linearly to N.

    The batch is ``scaled_batch``'s N'. Returns (seconds per call at N, N', samples).
    """
    n_used, probe = scaled_batch(impl, op, phase, case, dtype, budget_s)
    if n_used == 1:
        samples = [probe] + time_call(make_runner(impl, op, phase, case, dtype, n=1),
                                      warmup=0, repeats=max(repeats - 1, 0), min_sample_s=0.0)
    else:
        samples = time_call(make_runner(impl, op, phase, case, dtype, n=n_used),
                            warmup=0, repeats=repeats, min_sample_s=0.0)
    scale = case.N / n_used
    return median(samples) * scale, n_used, [t * scale for t in samples]


# ---------------------------------------------------------------------------
# Agreement check (a fast kernel that is wrong is not fast)
# ---------------------------------------------------------------------------
CHECK_RTOL = {"float32": 1e-4, "float64": 1e-10}


def _outputs(impl, op, case, data):
    """Every output of ``op`` on ``case`` as a flat list of NumPy arrays."""
    a = {k: impl.asarray(v) for k, v in data.items()}
    x, gy, shape = a["x"], a["gy"], case.x_shape
    if op == "conv":
        s, p = case.stride, case.padding
        outs = [impl.conv_fwd(x, a["w"], a["b"], s, p), *impl.conv_bwd(gy, x, a["w"], s, p)]
    elif op == "maxpool":
        k, s, p, kw = case.kernel, case.stride, case.pool_padding, case.pool_kwargs
        y, idx = impl.maxpool_fwd(x, k, s, p, True, **kw)
        outs = [y, idx, impl.maxpool_fwd(x, k, s, p, False, **kw),
                impl.maxpool_bwd(gy, idx, shape, k, s, p, **kw)]
    else:
        k, s, p, kw = case.kernel, case.stride, case.pool_padding, case.pool_kwargs
        outs = [impl.avgpool_fwd(x, k, s, p, **kw), impl.avgpool_bwd(gy, shape, k, s, p, **kw)]
    outs = [np.asarray(impl.to_numpy(o)) for o in outs]
    if op == "maxpool" and getattr(case, "pads", None) is not None:
        # per-side padding: torch pools an F.pad copy, whose indices address the
        # padded plane; the values and the gradient are compared, not the indices
        outs[1] = np.zeros(0, np.int64)
    return outs


OUTPUT_NAMES = {
    "conv": ["y", "grad_x", "grad_w", "grad_b"],
    "maxpool": ["y", "indices", "y(no indices)", "grad_x"],
    "avgpool": ["y", "grad_x"],
}


def check_agreement(impls, oracle, op, case, dtype, n=2):
    """Largest error of each implementation against ``oracle``, on a batch of ``n``.

    The error of an output is max|a - b| / max(max|b|, 1). Returns a list of
    dicts with 'impl', 'worst' (name of the worst output), 'err' and 'ok'.
    """
    small, data = make_inputs(case, dtype, n)
    want = _outputs(oracle, op, small, data)
    rows = []
    for impl in impls:
        if not impl.supports(case):
            continue
        try:
            got = _outputs(impl, op, small, data)
        except Exception as exc:
            rows.append({"impl": impl.name, "worst": "raised", "err": float("inf"),
                         "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        errs = []
        for name, g, w in zip(OUTPUT_NAMES[op], got, want):
            if g.shape != w.shape:
                errs.append((float("inf"), f"{name} shape {g.shape} != {w.shape}"))
            elif g.size == 0:
                errs.append((0.0, name))
            else:
                scale = max(float(np.max(np.abs(w))), 1.0)
                errs.append((float(np.max(np.abs(g.astype(np.float64) - w))) / scale, name))
        err, worst = max(errs)
        rows.append({"impl": impl.name, "worst": worst, "err": err,
                     "ok": err <= CHECK_RTOL[str(np.dtype(dtype))]})
    return rows


def wait_idle(max_wait_s, threshold=0.25, window_s=1.0, needed=3):
    """Wait until other processes use < ``threshold`` cores for ``needed`` windows in a row.

    Gives up after ``max_wait_s``; returns the last window's load in cores
    (None where /proc/stat is unavailable).
    """
    deadline = time.perf_counter() + max_wait_s
    quiet, cores = 0, None
    while True:
        with OtherLoad() as load:
            time.sleep(window_s)
        cores = load.cores
        if cores is None:
            return None
        quiet = quiet + 1 if cores < threshold else 0
        if quiet >= needed or time.perf_counter() >= deadline:
            return cores


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def format_table(headers, rows, right=()):
    """A plain-text table: columns padded to their widest cell, a rule under the
    headers; columns whose header is in ``right`` are right-aligned."""
    cols = list(zip(*([headers] + rows))) if rows else [[h] for h in headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    fmt = lambda row: "  ".join(str(c).rjust(w) if h in right else str(c).ljust(w)
                                for h, c, w in zip(headers, row, widths))
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def markdown_table(headers, rows):
    """A Markdown table (to paste into a README)."""
    return "\n".join([f"| {' | '.join(map(str, headers))} |", "|" + "---|" * len(headers)]
                     + [f"| {' | '.join(map(str, r))} |" for r in rows])
