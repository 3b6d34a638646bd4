"""pytest-benchmark suites of fastconv against PyTorch, NumPy im2col and the reference.

    python -m pytest bench/ --benchmark-only                      # fastconv, torch, numpy
    python -m pytest bench/ --benchmark-only --bench-naive        # + fastconv.reference
    python -m pytest bench/test_bench_conv.py --benchmark-only -k "d and float32"

Run from the repository root with ``python -m pytest`` the in-place build is
measured (``-m`` puts the current directory on sys.path); run from anywhere
else, the installed fastconv is. The helper modules next to this file are
importable because pytest puts bench/ (a directory without ``__init__.py``) on
sys.path before it imports this conftest (the default ``prepend`` import mode).
"""

import time
from pathlib import Path

import pytest

import baselines
from harness import SETTLE_S, make_runner, scaled_batch, set_threads

NAIVE_BUDGET_S = 1.0    # as bench/run.py --quick


def pytest_addoption(parser):
    g = parser.getgroup("fastconv bench")
    g.addoption("--bench-naive", action="store_true",
                help="also time fastconv.reference (on a reduced batch, see extra_info)")
    g.addoption("--bench-impls", default="fastconv,torch,numpy",
                help="comma-separated implementations to time")


def pytest_report_header(config):
    try:
        import fastconv

        where = f"fastconv {fastconv.__version__} from {Path(fastconv.__file__).parent}"
    except Exception as exc:
        where = f"fastconv not importable ({exc})"
    return [where]


@pytest.fixture(scope="session")
def impls(request):
    names = request.config.getoption("--bench-impls").split(",")
    if request.config.getoption("--bench-naive"):
        names.append("naive")
    loaded, skipped = baselines.load(names)
    loaded["_skipped"] = skipped
    return loaded


_last = {"impl": None, "threads": None}


@pytest.fixture
def measure(benchmark, impls):
    """measure(impl_name, op, phase, case, dtype, threads): time one op on one impl."""

    def run(impl_name, op, phase, case, dtype, threads):
        if impl_name not in impls:
            pytest.skip(f"{impl_name}: {impls['_skipped'].get(impl_name, 'not selected')}")
        impl = impls[impl_name]
        if not impl.supports(case):
            pytest.skip(f"{impl_name} does not run case {case.name} ({case.describe()})")
        if _last["threads"] != threads:
            set_threads({k: v for k, v in impls.items() if k != "_skipped"}, threads)
            _last["threads"] = threads
        if _last["impl"] not in (None, impl_name):
            time.sleep(SETTLE_S)
        _last["impl"] = impl_name
        phase_op = f"{op}_{phase}"
        benchmark.group = f"{phase_op}-{case.name}-{dtype}-{threads}T"
        flops = case.flops(phase)
        benchmark.extra_info.update(op=op, phase=phase, case=case.name, shape=case.describe(),
                                    dtype=dtype, threads=threads, impl=impl_name,
                                    gflop=flops / 1e9 if flops else None)
        if impl.scaled:
            n, _ = scaled_batch(impl, op, phase, case, dtype, NAIVE_BUDGET_S)
            benchmark.extra_info.update(scaled_from_N=n, scale_to_N=case.N / n)
            benchmark.pedantic(make_runner(impl, op, phase, case, dtype, n=n),
                               rounds=1, iterations=1)
        else:
            benchmark(make_runner(impl, op, phase, case, dtype))

    return run
