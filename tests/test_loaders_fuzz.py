"""A quick run of ``scripts/fuzz_loaders.py`` (the long run is in docs/reliability.md).

Mutated model, checkpoint and IDX files and edited ``--resume`` checkpoints
must give a normal return or a ValueError naming the file, within a CPU-time
limit and an address-space cap; the harness itself must report a loader that
breaks that contract.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv
from fastconv import datasets as ds

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_loaders.py"
PKG_PARENT = str(Path(fastconv.__file__).resolve().parent.parent)
ENV = dict(os.environ, PYTHONPATH=PKG_PARENT, OMP_NUM_THREADS="1")

pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="scripts/ is not part of this install")


def _load_script():
    spec = importlib.util.spec_from_file_location("fuzz_loaders", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_fuzz_of_all_loaders(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cases", "400", "--seed", "0", "--case-seconds", "10",
         "--mem-mb", "2048", "--keep", str(tmp_path / "keep"), "--json", str(summary_path)],
        env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(summary_path.read_text())
    assert summary["cases"] == 400 and summary["failures"] == 0
    assert all(summary["per_kind"][k] > 0 for k in ("model", "checkpoint", "idx", "resume"))
    # the mutations are not all rejected at the first check
    assert 0 < summary["loads_that_succeeded"] < 400


def test_harness_reports_a_loader_that_breaks_the_contract(monkeypatch):
    # the harness swaps in fake MNIST checksums for its resume seed: restore them afterwards
    monkeypatch.setattr(ds, "MNIST_SHA256", ds.MNIST_SHA256)
    fz = _load_script()

    def leaky(path, *, sha256=None):
        raise TypeError("unsupported operand")  # an undocumented exception type

    monkeypatch.setattr(fz.ds, "read_idx", leaky)
    summary = fz.fuzz(30, seed=1, kinds=("idx",), log=lambda m: None)
    assert summary["failures"] == 30
    assert "TypeError" in summary["failure_details"][0]["problems"][0]

    def anonymous(path, *, sha256=None):
        raise ValueError("bad file")  # the right type, but which file?

    monkeypatch.setattr(fz.ds, "read_idx", anonymous)
    summary = fz.fuzz(10, seed=1, kinds=("idx",), log=lambda m: None)
    assert summary["failures"] == 10
    assert "without the file name" in summary["failure_details"][0]["problems"][0]
