"""Saving and loading models and training checkpoints as single ``.npz`` files.

File layout (a plain, pickle-free ``.npz``; read with ``allow_pickle=False``):

``__meta__``
    uint8 array holding UTF-8 JSON: format name and version, the package
    version, the architecture (``{"class": ..., "config": ...}``, rebuilt
    through the layer registry), compile settings, optimiser counters, the
    bit-generator states of random layers (dropout) and, for checkpoints, the
    epoch, the training generator's state and ``extra``.
``fastconv_version``
    The package version that wrote the file, as a str array.
``model/<name>``
    Parameters and buffers (batch-norm running statistics), ``state_dict`` names.
``optimizer/<param index>.<slot>``
    Optimiser slot arrays (momentum, Adam moments, step counts).

Writes are atomic: the data goes to a temporary file in the destination's
directory, is flushed and fsync'ed, and replaces the destination with
``os.replace``, so a crash leaves either the old file or the new one.

Reading treats the file as untrusted input (see ``docs/reliability.md``,
"Files"): the metadata is checked against a schema, every stored array's
header (dtype, shape) is checked against the architecture and against the
member's size in the zip *before* any layer is built or any array is
allocated, only the members the model needs are read (in bounded chunks),
and every malformed file gives a ``ValueError`` naming it. Peak memory while
loading is at most four times the declared size of the arrays the model holds
(parameters, their gradients, optimiser slots and the initialiser's
temporaries; measured 2x to 3x), whatever else the file declares. The
container reader and the metadata schema are in ``fastconv.nn.file_checks``.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any, Union

import numpy as np

from .. import _fileio
from ..optim import optimizer_from_config
from .._version import __version__
from .file_checks import (
    FORMAT,
    FORMAT_VERSION,
    _BUILD_ERRORS,
    _Checker,
    _FileError,
    _MAX_JSON_DEPTH,
    _MAX_META_BYTES,
    _META,
    _Npz,
    _READ_ERRORS,
    _bit_generator,
    _is_builtin_sequential,
    _json_depth,
    _short,
)
from .layer_base import get_layer_class
from .losses import loss_from_config
from .module import Module, Parameter

__all__ = ["save_model", "load_model", "save_checkpoint", "load_checkpoint"]

def _encode_json(obj):
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode("utf-8"), dtype=np.uint8).copy()


def _atomic_savez(path, arrays):
    """Write ``arrays`` to ``path`` as .npz so that readers never see a partial file."""
    _fileio.atomic_write(path, lambda f: np.savez(f, **arrays))


def _rng_state_json(rng_state):
    if rng_state is None:
        return None
    if isinstance(rng_state, np.random.Generator):
        return rng_state.bit_generator.state
    if isinstance(rng_state, np.random.BitGenerator):
        return rng_state.state
    if isinstance(rng_state, dict) and "bit_generator" in rng_state:
        return rng_state
    raise TypeError(
        "rng_state: expected a numpy.random.Generator, a BitGenerator or its .state dict, "
        f"got {type(rng_state).__name__}"
    )


def generator_from_state(state):
    """A ``numpy.random.Generator`` whose bit generator has ``state``.

    Parameters
    ----------
    state : dict
        ``Generator.bit_generator.state`` (any of NumPy's bit generators).

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    ValueError
        Unknown bit generator or a state it does not accept.
    """
    return np.random.Generator(_bit_generator(state, "rng_state"))


def _collect(model, optimizer=None, include_optimizer=True):
    if not isinstance(model, Module):
        raise TypeError(f"model: expected a fastconv.nn Module, got {type(model).__name__}")
    if optimizer is None and include_optimizer:
        optimizer = getattr(model, "optimizer", None)
    arrays = {f"model/{k}": np.array(v, order="C") for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastconv_version": __version__,
        "model": {"class": type(model).__name__, "config": model.get_config()},
        "rng_states": model.get_rng_state(),
        "compile": None,
        "optimizer": None,
    }
    loss = getattr(model, "loss", None)
    if loss is not None or optimizer is not None:
        meta["compile"] = {
            "loss": None if loss is None else {"class": type(loss).__name__, "config": loss.get_config()},
            "metrics": list(getattr(model, "metrics", []) or []),
            "optimizer": None if optimizer is None else optimizer.get_config(),
        }
    if optimizer is not None and include_optimizer:
        state = optimizer.state_dict()
        meta["optimizer"] = {k: state[k] for k in ("config", "lr", "initial_lr", "iterations")}
        arrays.update({f"optimizer/{k}": np.array(v, order="C") for k, v in state["slots"].items()})
    return meta, arrays


def save_model(model: Module, path: Union[str, os.PathLike[str]],
               include_optimizer: bool = True) -> None:
    """Save a model to one ``.npz`` file (atomically).

    Parameters
    ----------
    model : Module
        Usually a ``Sequential``; every layer must be registered
        (``fastconv.nn.register_layer``) so it can be rebuilt from its config.
    path : str or os.PathLike
        Written exactly as given (no suffix is added).
    include_optimizer : bool, default True
        Also store the compiled optimiser's state, so that training continues
        where it stopped after ``load_model``.
    """
    meta, arrays = _collect(model, include_optimizer=include_optimizer)
    meta["kind"] = "model"
    _atomic_savez(path, {_META: _encode_json(meta), "fastconv_version": np.array(__version__), **arrays})


def save_checkpoint(path, model, optimizer, epoch, rng_state, extra=None):
    """Save everything needed to resume training exactly (atomically).

    Parameters
    ----------
    path : str or os.PathLike
    model : Module
    optimizer : Optimizer or None
    epoch : int
        The last completed epoch (0-based); resume with
        ``fit(..., initial_epoch=epoch + 1, seed=checkpoint["rng"])``.
    rng_state : numpy.random.Generator, its ``bit_generator.state`` dict, or None
        The generator driving shuffling/augmentation (``model.fit_rng``).
    extra : dict, optional
        Any JSON-serialisable data (e.g. CLI arguments, metric history).

    Notes
    -----
    Weights, batch-norm statistics, dropout generator states, optimiser slots
    and counters and the learning rate are all stored, so a run resumed from
    the checkpoint is bitwise identical to an uninterrupted one.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise TypeError(f"save_checkpoint: epoch must be an int, got {type(epoch).__name__}")
    meta, arrays = _collect(model, optimizer, include_optimizer=optimizer is not None)
    meta["kind"] = "checkpoint"
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_checkpoint: extra must be JSON-serialisable ({exc})") from None
    meta["checkpoint"] = {"epoch": int(epoch), "rng_state": _rng_state_json(rng_state), "extra": extra}
    _atomic_savez(path, {_META: _encode_json(meta), "fastconv_version": np.array(__version__), **arrays})


# --------------------------------------------------------------------------- #
# Reading: rebuilding
# --------------------------------------------------------------------------- #


def _read(path, func):
    """(path, meta, npz, file) of a fastconv file; ValueError naming the file if malformed."""
    f, size = _fileio.open_regular(path, func)
    path = os.fspath(path)
    try:
        npz = _Npz(f, path)
        info = npz.members.get(_META)
        if info is None:
            raise _FileError(f"{path!r} is not a fastconv model file (no {_META} entry)")
        if info.file_size > _MAX_META_BYTES:
            npz.fail(f"{_META} declares {info.file_size} bytes (at most {_MAX_META_BYTES})")
        # Every member's npy header (never its data) is checked up front, so a
        # pickled object array is refused even where the model would not look.
        for key in npz.members:
            npz.header(key)
        shape, dtype, _, _ = npz.header(_META)
        if dtype != np.uint8 or len(shape) != 1:
            npz.fail(f"{_META} must be a 1-D uint8 array, got {dtype} of shape {shape}")
        text = npz.read(_META).tobytes().decode("utf-8")
        try:
            meta = json.loads(text)
        except RecursionError:
            raise _FileError(f"{path!r}: {_META} is nested too deeply") from None
    except _FileError:
        f.close()
        raise
    except (*_READ_ERRORS, UnicodeDecodeError) as exc:
        f.close()
        raise _FileError(
            f"{path!r} is not a readable fastconv model file (corrupt or truncated?): "
            f"{type(exc).__name__}: {exc}") from exc
    try:
        if _json_depth(meta) > _MAX_JSON_DEPTH:
            raise _FileError(f"{path!r}: {_META} is nested more than {_MAX_JSON_DEPTH} deep")
        _Checker(path).meta(meta)
    except BaseException:
        f.close()
        raise
    return path, meta, npz, f


def _build(spec):
    """The module described by a checked spec (Sequential children built without recursion
    through ``from_config``, so the layer count costs linear time)."""
    cls = get_layer_class(spec["class"])
    config = spec.get("config", {})
    if _is_builtin_sequential(cls):
        return cls([_build(child) for child in config.get("layers", [])])
    return cls.from_config(config)


def _check_member(npz, key, shape, dtype, what):
    if key not in npz.members:
        npz.fail(f"missing array {key!r} ({what})")
    got_shape, got_dtype, _, _ = npz.header(key)
    if got_shape != tuple(shape):
        npz.fail(f"array {key!r} has shape {got_shape}, the {what} needs {tuple(shape)}")
    if got_dtype.kind not in "biuf":
        npz.fail(f"array {key!r} has dtype {got_dtype}, the {what} needs numbers")
    if dtype is not None and got_dtype.newbyteorder("=") != dtype:
        npz.fail(f"array {key!r} has dtype {got_dtype}, the {what} needs {dtype}")


def _optimizer_slot_layouts(optimizer):
    """For each parameter index, {slot name: "array" | "int"} that ``optimizer`` keeps for it.

    Learned from one step of a copy on a one-element parameter, once per
    parameter group (a group's settings, e.g. SGD's momentum, decide its
    slots), so custom registered optimisers are covered too.
    """
    config = optimizer.get_config()
    groups = config.pop("param_groups", None) or [
        {"params": list(range(len(optimizer.params)))}]
    layouts = {}
    for group in groups:
        hyper = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
        probe = Parameter(np.zeros(1, np.float64))
        copy = optimizer_from_config(dict(config, **hyper), [probe])
        copy.fused = False
        copy.step()
        layout = {k: "int" if isinstance(v, (int, np.integer)) else "array"
                  for k, v in copy.state[0].items() if not k.startswith("_")}
        for i in group["params"]:
            layouts[i] = layout
    return layouts


def _rebuild(path, meta, npz, compile=True):
    checker = _Checker(path)
    expected, complete = checker.layer(meta["model"], "model")
    stored = [k for k in npz.members if k.startswith("model/")]
    # Every array a built-in layer will allocate is checked against the file
    # before that layer exists: a config declaring 10**9 channels fails here.
    for name, (shape, dtype) in expected.items():
        _check_member(npz, "model/" + name, shape, dtype, "architecture")
    if complete and len(stored) != len(expected):
        extra = sorted(k for k in stored if k[len("model/"):] not in expected)
        npz.fail(f"arrays {_short.repr(extra)} belong to no layer of the architecture")
    try:
        model = _build(meta["model"])
    except _BUILD_ERRORS as exc:
        raise _FileError(f"{path!r}: cannot rebuild the model: {exc}") from exc
    if not isinstance(model, Module):
        npz.fail(f"model class {meta['model']['class']!r} did not build a Module")
    targets = {name: p.data for name, p in model.named_parameters()}
    targets.update(model.named_buffers())
    if len(stored) != len(targets) or any(k[len("model/"):] not in targets for k in stored):
        npz.fail(f"stored arrays do not match {type(model).__name__}: missing "
                 f"{_short.repr(sorted(set(targets) - {k[6:] for k in stored}))}, unexpected "
                 f"{_short.repr(sorted({k[6:] for k in stored} - set(targets)))}")
    for name, target in targets.items():
        target = np.asarray(target)
        _check_member(npz, "model/" + name, target.shape, None, "model")
    for name, target in targets.items():
        if isinstance(target, np.ndarray):
            npz.read("model/" + name, out=target)
        else:  # a buffer that is not an array: assign as load_state_dict would
            setattr(model, name, npz.read("model/" + name))
    if meta.get("rng_states"):
        try:
            model.set_rng_state(meta["rng_states"])
        except ValueError as exc:  # a module path with no generator, or another generator type
            raise _FileError(f"{path!r}: rng_states: {exc}") from None

    optimizer = None
    comp = meta.get("compile")
    if not (compile and comp and hasattr(model, "compile")):
        return model, optimizer
    try:
        if comp.get("optimizer") is not None:
            optimizer = optimizer_from_config(comp["optimizer"], model.parameters())
            if meta.get("optimizer") is not None:
                slots = _read_slots(npz, optimizer)
                optimizer.load_state_dict({**meta["optimizer"], "slots": slots})
        loss = loss_from_config(comp["loss"]) if comp.get("loss") is not None else None
        if optimizer is not None and loss is not None:
            model.compile(optimizer=optimizer, loss=loss, metrics=comp.get("metrics") or None)
        else:
            model.optimizer, model.loss = optimizer, loss
    except _FileError:
        raise
    except _BUILD_ERRORS as exc:
        raise _FileError(f"{path!r}: cannot restore the compile settings: {exc}") from exc
    return model, optimizer


def _read_slots(npz, optimizer):
    """The optimiser's slot arrays, each checked against its parameter before it is read."""
    params = optimizer.params
    layouts = _optimizer_slot_layouts(optimizer)
    per_param = {}
    for key in npz.members:
        if not key.startswith("optimizer/"):
            continue
        idx, _, slot = key[len("optimizer/"):].partition(".")
        layout = layouts.get(int(idx), {}) if idx.isdigit() and len(idx) < 10 else {}
        if not (slot in layout and int(idx) < len(params)):  # a layout means idx is digits
            npz.fail(f"optimizer slot {key!r} does not fit {type(optimizer).__name__} on "
                     f"{len(params)} parameters (slots {sorted(layout)})")
        per_param.setdefault(int(idx), set()).add(slot)
        p = params[int(idx)]
        shape, dtype, _, _ = npz.header(key)
        if layout[slot] == "int":
            if shape != () or dtype.kind not in "iu":
                npz.fail(f"optimizer slot {key!r} must be an integer scalar, got {dtype} {shape}")
        else:
            _check_member(npz, key, p.data.shape, p.data.dtype, f"parameter {idx}")
    for idx, slots in per_param.items():
        if slots != set(layouts[idx]):
            npz.fail(f"optimizer state of parameter {idx} has slots {sorted(slots)}, "
                     f"{type(optimizer).__name__} keeps {sorted(layouts[idx])}")
    return {key[len("optimizer/"):]: npz.read(key) for key in npz.members
            if key.startswith("optimizer/")}


# -> Any, not Module: the file decides the class. It is a Sequential for every
# file Sequential.save writes, and typing it Module would make every
# `load_model(p).predict(x)` a type error; any registered Module is also valid.
def load_model(path: Union[str, os.PathLike[str]], compile: bool = True) -> Any:
    """Load a model written by ``save_model``, ``Sequential.save`` or ``save_checkpoint``.

    Parameters
    ----------
    path : str or os.PathLike
    compile : bool, default True
        Restore the optimiser (with its state when saved), loss and metrics.

    Returns
    -------
    Module
        In training mode, ready for ``fit`` / ``predict``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is corrupt, truncated, not a fastconv file, not a regular
        file, names an unregistered layer class, or declares arrays or
        settings that do not fit together; the message names the file.
    OSError
        The file exists but cannot be read (permissions, I/O error).

    Notes
    -----
    The file is untrusted input: see the module docstring for the checks
    and the memory bound.
    """
    path, meta, npz, f = _read(path, "load_model")
    with f:
        model, _ = _guarded(path, _rebuild, path, meta, npz, compile)
    return model


# What reading a zip member can still raise once its header has passed: damage
# found only in the data (bad CRC, broken deflate stream, truncation).
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


def _guarded(path, func, *args):
    """Run a rebuild step; a zip member that turns out corrupt while read is a ValueError.

    Only the errors of damaged zip data are converted here: anything else
    after the schema checks would be a gap in them, which the fuzzer is there
    to find.
    """
    try:
        return func(*args)
    except _FileError:
        raise
    except _MEMBER_ERRORS as exc:
        raise _FileError(f"{path!r} is not a readable fastconv model file (corrupt or "
                         f"truncated?): {type(exc).__name__}: {exc}") from exc


def load_checkpoint(path):
    """Load a checkpoint written by ``save_checkpoint`` (or ``ModelCheckpoint``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``model`` (compiled when the checkpoint had an optimiser),
        ``optimizer`` (or None), ``epoch`` (int), ``rng_state`` (dict or
        None), ``rng`` (a ``numpy.random.Generator`` in that state, or None)
        and ``extra``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Unreadable or malformed file (see ``load_model``), or a model file
        without checkpoint data; the message names the file.
    """
    path, meta, npz, f = _read(path, "load_checkpoint")
    with f:
        ckpt = meta.get("checkpoint")
        if ckpt is None:
            raise ValueError(f"{path!r} is a model file, not a checkpoint (no epoch / RNG state)")
        model, optimizer = _guarded(path, _rebuild, path, meta, npz, True)
    state = ckpt.get("rng_state")
    return {
        "model": model,
        "optimizer": optimizer,
        "epoch": ckpt["epoch"],
        "rng_state": state,
        "rng": None if state is None else generator_from_state(state),
        "extra": ckpt.get("extra"),
    }
