"""Fork: a child forked after the parent ran a parallel region must not hang
(GNU OpenMP's thread pool does not survive fork) and must compute the right
answer, serially; spawn and forkserver children too.
"""

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv

from workloads import (PKG_PARENT, SUBPROCESS_ENV, WORKLOADS, fixed_team, parallel_regions,
                       run_workload)


def _child_compute(queue):
    try:
        out = {
            "info": fastconv.info()["forked_child_serial"],
            "threads": fastconv.get_num_threads(),
            "results": [run_workload(i, dt) for i in (0, 2, 4) for dt in (np.float32, np.float64)],
        }
    except BaseException as exc:  # pragma: no cover - shows up as a failed assertion
        out = {"error": repr(exc)}
    queue.put(out)


def _expected_child_results():
    return [run_workload(i, dt) for i in (0, 2, 4) for dt in (np.float32, np.float64)]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_child_after_parallel_region(method, restore_threads):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} start method not available")
    fastconv.set_num_threads(2)
    with fixed_team():  # a busy machine must not make the parent's calls serial
        before = parallel_regions()
        expected = _expected_child_results()
        assert parallel_regions() > before or not fastconv.openmp_enabled(), \
            "the parent ran no parallel region: the fork case is not tested"
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_compute, args=(queue,))
    proc.start()
    try:
        out = queue.get(timeout=120)
    except Exception:
        out = None
    proc.join(timeout=30)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"{method} child hung")
    assert out is not None, f"{method} child produced nothing (exit code {proc.exitcode})"
    assert "error" not in out, out.get("error")
    assert proc.exitcode == 0
    assert out["results"] == expected
    # a forked child of a process that ran OpenMP runs kernels serially
    assert out["info"] is (method == "fork")


def test_fork_pool_many_tasks_never_hangs(restore_threads):
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork")
    fastconv.set_num_threads(2)
    with fixed_team():
        before = parallel_regions()
        want = [run_workload(i % len(WORKLOADS), np.float32) for i in range(8)]
        assert parallel_regions() > before or not fastconv.openmp_enabled()
    with mp.get_context("fork").Pool(2) as pool:
        res = pool.map_async(_pool_task, range(8))
        got = res.get(timeout=180)
    assert got == want


def _pool_task(i):
    return run_workload(i % len(WORKLOADS), np.float32)


def test_os_fork_child_runs_serial_and_correct(restore_threads):
    """Plain os.fork (no multiprocessing), the case the atfork handler is for."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    fastconv.set_num_threads(2)
    want = run_workload(7, np.float64)
    code = (
        "import os, sys, numpy as np, fastconv\n"
        "sys.path.insert(0, %r)\n"
        "from workloads import run_workload\n"
        "fastconv.set_num_threads(2); want = run_workload(7, np.float64)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = run_workload(7, np.float64) == want and fastconv.info()['forked_child_serial']\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n" % str(Path(__file__).parent)
    )
    proc = subprocess.run([sys.executable, "-c", code], env=SUBPROCESS_ENV, timeout=120,
                          capture_output=True, text=True, cwd=PKG_PARENT)
    assert proc.returncode == 0, proc.stderr
    assert run_workload(7, np.float64) == want
