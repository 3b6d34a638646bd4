"""``fastconv train --resume``: the settings a checkpoint holds, each checked.

A checkpoint is a file anyone can edit, so everything a resumed run takes from
it is checked before training: each stored setting by the argparse type of its
flag, the per-epoch history that feeds the final throughput, and the model and
optimiser against what the settings would build. Every refusal is a usage
error (exit status 2) naming the file.
"""

import argparse
import math

from ._cli_settings import LATER_SETTINGS, OPTIONAL_SETTINGS, RESULT_KEYS, make_optimizer

__all__ = ["resumed_settings", "checked_settings"]


def resumed_settings(args, parser, given):
    """``(settings, checkpoint)`` of ``--resume``; a flag in ``given`` must agree with it."""
    from .nn import load_checkpoint

    try:
        ckpt = load_checkpoint(args.resume)
    except (OSError, ValueError) as exc:
        parser.error(f"--resume: {exc}")
    extra = ckpt.get("extra")
    saved = extra.get("cli") if isinstance(extra, dict) else None
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
        parser.error(f"--resume: {args.resume} is not a checkpoint written by 'fastconv train'")
    settings = checked_settings(saved["settings"], parser, args.resume)
    _check_history(extra.get("history", []), parser, args.resume)
    _check_resumed_model(ckpt, settings, parser, args.resume)
    for key, value in given.items():
        if value != settings.get(key):
            flag = "--" + key.replace("_", "-")
            parser.error(
                f"{flag} {value} differs from the checkpoint's {settings.get(key)}; "
                "a resumed run keeps the settings it started with"
            )
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    return settings, ckpt


def checked_settings(stored, parser, path):
    """The settings stored in a checkpoint, each checked by the argparse type of its flag.

    A checkpoint is a file anyone can edit: ``test_subset=-9990`` in one made
    a resumed run test on nothing and report accuracy 1.0. Each value goes
    through the very ``type`` and ``choices`` its command-line flag has, so a
    resumed run accepts exactly what a fresh one would.
    """
    actions = {a.dest: a for a in parser._actions}
    settings = {}
    for key in RESULT_KEYS + ("epochs",):
        if key not in stored and key in LATER_SETTINGS:
            settings[key] = LATER_SETTINGS[key]
        elif key not in stored:
            parser.error(f"--resume: {path}: the stored settings lack {key}")
        elif stored[key] is None and key in OPTIONAL_SETTINGS:
            settings[key] = None
        else:
            settings[key] = _checked_value(actions[key], stored[key], parser, path)
    return settings


def _checked_value(action, value, parser, path):
    """``value`` stored for ``action``'s flag, parsed as the flag's text would be."""
    flag = action.option_strings[0]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        parser.error(f"--resume: {path}: stored {flag} {value!r:.60} is not a number or a name")
    text = value if isinstance(value, str) else repr(value)
    try:
        parsed = action.type(text) if action.type is not None else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        parser.error(f"--resume: {path}: stored {flag} {text:.60}: {exc}")
    # parsed != value catches a number stored as a string and the reverse
    if (action.choices is not None and parsed not in action.choices) or parsed != value:
        parser.error(f"--resume: {path}: stored {flag} {text:.60} is not a valid value")
    return parsed


def _check_history(history, parser, path):
    """The stored per-epoch records feed the final throughput; check what is summed."""
    ok = isinstance(history, list) and all(
        isinstance(h, dict)
        and isinstance(h.get("train_images"), int) and not isinstance(h["train_images"], bool)
        and h["train_images"] >= 0
        and (h.get("images_per_second") is None or _positive_float(h["images_per_second"]))
        for h in history)
    if not ok:
        parser.error(f"--resume: {path}: the stored history is not a list of epoch records")


def _positive_float(v):
    # A predicate over stored data, not _validate.check_number: that one turns
    # strings into numbers ("5" passes) and allows 0, and a string or a zero
    # here would crash the throughput sum (h["train_images"] / v).
    # float() first: math.isfinite(10**400) raises OverflowError
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v)) and v > 0
    except OverflowError:
        return False


def _check_resumed_model(ckpt, s, parser, path):
    """The checkpoint's model and optimiser must be what its settings would build."""
    import numpy as np

    from . import models

    model = ckpt["model"]
    fresh = getattr(models, s["model"])(seed=0, dtype=np.dtype(s["dtype"]))
    if type(model) is not type(fresh) or model.get_config() != fresh.get_config():
        parser.error(f"--resume: {path}: the stored model is not the {s['model']} "
                     f"({s['dtype']}) its settings name")
    opt = getattr(model, "optimizer", None)
    if opt is None:
        parser.error(f"--resume: {path} holds no optimiser state")
    want = make_optimizer(s["optimizer"], fresh.parameters(), s["lr"], s["weight_decay"])
    if opt.get_config() != want.get_config():
        parser.error(f"--resume: {path}: the stored optimiser {opt!r} is not the "
                     f"{s['optimizer']} its settings name")
