"""``fastconv train``'s outputs: paths checked before training, the result line, metrics JSON.

The model (``--save``) and the checkpoints (``--checkpoint``) are written by
``fastconv.nn``; this module checks their paths up front, so a typo fails in a
second rather than after an hour of training, and writes ``--metrics-out``.
"""

import json

__all__ = ["check_output_paths", "atomic_write_text", "throughput", "print_result",
           "write_metrics"]


def check_output_paths(args, parser):
    """Refuse output paths that cannot be written before any training starts."""
    from . import _fileio

    for flag in ("save", "checkpoint", "metrics_out"):
        path = getattr(args, flag)
        if path is None:
            continue
        problem = _fileio.check_writable_target(path)
        if problem is not None:
            parser.error(f"--{flag.replace('_', '-')}: {problem}")


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` so a reader sees the old file or the whole new one."""
    from . import _fileio

    _fileio.atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def throughput(history):
    """``(train_seconds, images_per_second or None)`` over every epoch of ``history``.

    A resumed run's history holds the epochs before the checkpoint too, so the
    figure covers the whole training, not only this process's share.
    """
    images = sum(h["train_images"] for h in history)
    train_seconds = sum(h["train_images"] / h["images_per_second"] for h in history
                        if h.get("images_per_second"))
    ips = images / train_seconds if train_seconds > 0 else None
    return train_seconds, ips


def print_result(test, n_test, wall, ips):
    """The one line ``fastconv train`` prints even with --quiet."""
    correct = int(round(test["accuracy"] * n_test))
    print(f"test accuracy {test['accuracy']:.4f} ({correct}/{n_test})  test loss "
          f"{test['loss']:.4f}  {wall:.1f} s" + (f"  {ips:,.0f} train img/s" if ips else ""),
          flush=True)


def write_metrics(args, s, run, log):
    """Write --metrics-out: the settings, the run's figures ``run`` and the build."""
    import numpy as np

    import fastconv

    from ._cli_settings import RESULT_KEYS

    try:
        build = fastconv.info()
    except Exception as exc:  # info is diagnostic; never fail a finished run over it
        build = {"error": repr(exc)}
    metrics = {
        "fastconv_version": fastconv.__version__,
        "numpy_version": np.__version__,
        "command": ["fastconv", "train"] + list(args._argv),
        **{k: s[k] for k in RESULT_KEYS},
        "epochs": s["epochs"],
        **run,
        "info": build,
    }
    atomic_write_text(args.metrics_out, json.dumps(metrics, indent=2, default=str) + "\n")
    log(f"wrote metrics to {args.metrics_out}")
