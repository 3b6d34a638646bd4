"""bench/run.py times each implementation in a process of its own (``--same-process``: one)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "bench" / "run.py"

pytestmark = pytest.mark.skipif(not RUNNER.exists(), reason="no bench/ beside the tests")


def _records(tmp_path, *extra):
    out = tmp_path / "out"
    cmd = [sys.executable, str(RUNNER), "--shapes", "a", "--ops", "conv", "--phases", "fwd",
           "--threads", "1", "--dtype", "float32", "--impls", "fastconv,numpy", "--no-peak",
           "--no-check", "--busy-retries", "0", "--out", str(out), *extra]
    # the runner imports the fastconv the tests import
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__import__("fastconv").__file__).parents[1])]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads((out / "results.json").read_text())["records"]
    return {r["impl"]: r for r in records}


def test_each_implementation_is_timed_in_its_own_process(tmp_path):
    rows = _records(tmp_path)
    assert set(rows) == {"fastconv", "numpy"}
    assert all(r["ms"] > 0 for r in rows.values())
    pids = {r["pid"] for r in rows.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    # what fastconv's team controller did during its row is on record; numpy has no team
    assert rows["fastconv"]["team"]["parallel_regions"] >= 0 and "team" not in rows["numpy"]


def test_same_process_times_them_together(tmp_path):
    rows = _records(tmp_path, "--same-process")
    assert set(rows) == {"fastconv", "numpy"}
    assert len({r["pid"] for r in rows.values()}) == 1
