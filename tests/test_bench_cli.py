"""``python -m fastconv bench``: runs the checkout's bench/run.py, or says there is none."""

import os
from pathlib import Path

from fastconv import _bench_cli


def _place_package(monkeypatch, root):
    """Make _bench_cli believe the fastconv package lives in ``root/fastconv``."""
    (root / "fastconv").mkdir()
    monkeypatch.setattr(_bench_cli, "__file__", str(root / "fastconv" / "_bench_cli.py"))


def test_bench_outside_a_checkout_says_how_to_run(tmp_path, monkeypatch, capsys):
    _place_package(monkeypatch, tmp_path)       # an installed wheel: no bench/ beside it
    assert _bench_cli.main(["--shapes", "a"]) == 2
    err = capsys.readouterr().err
    assert "not in a source" in err and "python bench/run.py" in err


def test_bench_runs_the_checkout_runner_with_its_root_first(tmp_path, monkeypatch, capfd):
    _place_package(monkeypatch, tmp_path)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "run.py").write_text(
        "import os, sys\n"
        "print(repr(sys.argv[1:]))\n"
        "print(os.environ['PYTHONPATH'].split(os.pathsep)[0])\n"
        "sys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", ""]))
    # the leading "--" separates the runner's options from fastconv's and is dropped
    assert _bench_cli.main(["--", "--shapes", "a", "--threads", "1"]) == 3
    argv_line, first_path = capfd.readouterr().out.splitlines()
    assert argv_line == repr(["--shapes", "a", "--threads", "1"])
    assert Path(first_path) == tmp_path
