"""Inputs, runners, thread control and the one timing function of the suite."""

import contextlib
import gc
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from shapes import ConvCase


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
        k, s, p = case.kernel, case.stride, case.padding
        idx = impl.maxpool_fwd(x, k, s, p, True)[1]
        fwd = lambda: impl.maxpool_fwd(x, k, s, p, False)

        def bwd(indices=idx):
            return impl.maxpool_bwd(gy, indices, shape, k, s, p)

        def fwdbwd():   # training needs the indices, so this forward returns them
            return bwd(impl.maxpool_fwd(x, k, s, p, True)[1])
    elif op == "avgpool":
        k, s, p = case.kernel, case.stride, case.padding
        fwd = lambda: impl.avgpool_fwd(x, k, s, p)
        bwd = lambda: impl.avgpool_bwd(gy, shape, k, s, p)
        fwdbwd = lambda: (fwd(), bwd())
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}[phase]


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------
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
def time_call(fn, *, warmup=1, repeats=5, min_sample_s=0.005, max_total_s=None):
    """Per-call seconds of ``fn``: ``repeats`` samples after ``warmup`` calls.

    Calls shorter than ``min_sample_s`` are looped inside one sample (the
    count is fixed by the last warm-up call; no warm-up means one call) so timer resolution does not matter.
    ``max_total_s`` stops sampling early (keeping at least 3 samples) for
    slow calls. The garbage collector is off while sampling. Returns the list
    of samples; callers report the median.
    """
    inner = 1
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        inner = max(1, math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-9)))
    samples = []
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
            if (max_total_s is not None and len(samples) >= 3
                    and time.perf_counter() - start > max_total_s):
                break
    finally:
        if gc_was_on:
            gc.enable()
    return samples


def median(samples):
    return statistics.median(samples)


def time_scaled(impl, op, phase, case, dtype, *, budget_s, repeats):
    """Time a slow implementation on a reduced batch and scale linearly to N.

    One image is timed first; the batch is then the largest N' <= N whose
    call fits in ``budget_s``. Returns (seconds per call at N, N', samples).
    """
    probe = time_call(make_runner(impl, op, phase, case, dtype, n=1), warmup=1, repeats=1,
                      min_sample_s=0.0)[0]
    n_used = int(max(1, min(case.N, budget_s // max(probe, 1e-9))))
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
        k, s, p = case.kernel, case.stride, case.padding
        y, idx = impl.maxpool_fwd(x, k, s, p, True)
        outs = [y, idx, impl.maxpool_fwd(x, k, s, p, False),
                impl.maxpool_bwd(gy, idx, shape, k, s, p)]
    else:
        k, s, p = case.kernel, case.stride, case.padding
        outs = [impl.avgpool_fwd(x, k, s, p), impl.avgpool_bwd(gy, shape, k, s, p)]
    return [np.asarray(impl.to_numpy(o)) for o in outs]


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
