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
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from .._version import __version__
from .layers import get_layer_class
from .losses import loss_from_config
from .module import Module

__all__ = ["save_model", "load_model", "save_checkpoint", "load_checkpoint"]

FORMAT = "fastconv-model"
FORMAT_VERSION = 1
_META = "__meta__"


def _encode_json(obj):
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode("utf-8"), dtype=np.uint8).copy()


def _atomic_savez(path, arrays):
    """Write ``arrays`` to ``path`` as .npz so that readers never see a partial file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


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
    """
    name = state.get("bit_generator") if isinstance(state, dict) else None
    cls = getattr(np.random, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"rng_state: unknown bit generator {name!r}")
    bg = cls()
    bg.state = state
    return np.random.Generator(bg)


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


def save_model(model, path, include_optimizer=True):
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


def _read(path):
    """(meta, arrays) of a fastconv file; ValueError naming the file if unreadable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_model: no such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except KeyError:
        raise ValueError(f"{path!r} is not a fastconv model file (no {_META} entry)") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path!r} is not a readable fastconv model file (corrupt or truncated?): {exc}"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastconv model file (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {meta['format_version']}, newer than this fastconv "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade fastconv"
        )
    arrays.pop("fastconv_version", None)
    return path, meta, arrays


def _rebuild(path, meta, arrays, compile=True):
    from ..optim import optimizer_from_config

    try:
        spec = meta["model"]
        model = get_layer_class(spec["class"]).from_config(spec.get("config", {}))
        state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        model.load_state_dict(state, strict=True)
        if meta.get("rng_states"):
            model.set_rng_state(meta["rng_states"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path!r}: cannot rebuild the model: {exc}") from exc
    optimizer = None
    comp = meta.get("compile")
    if compile and comp and hasattr(model, "compile"):
        try:
            if comp.get("optimizer") is not None:
                optimizer = optimizer_from_config(comp["optimizer"], model.parameters())
                if meta.get("optimizer") is not None:
                    slots = {k[len("optimizer/"):]: v for k, v in arrays.items()
                             if k.startswith("optimizer/")}
                    optimizer.load_state_dict({**meta["optimizer"], "slots": slots})
            loss = None
            if comp.get("loss") is not None:
                loss = loss_from_config(comp["loss"])
            if optimizer is not None and loss is not None:
                model.compile(optimizer=optimizer, loss=loss, metrics=comp.get("metrics") or None)
            else:
                model.optimizer, model.loss = optimizer, loss
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path!r}: cannot restore the compile settings: {exc}") from exc
    return model, optimizer


def load_model(path, compile=True):
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
        The file is corrupt, truncated, not a fastconv file, or names an
        unregistered layer class; the message names the file.
    """
    path, meta, arrays = _read(path)
    model, _ = _rebuild(path, meta, arrays, compile=compile)
    return model


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
    ValueError
        Unreadable file, or a model file without checkpoint data.
    """
    path, meta, arrays = _read(path)
    ckpt = meta.get("checkpoint")
    if ckpt is None:
        raise ValueError(f"{path!r} is a model file, not a checkpoint (no epoch / RNG state)")
    model, optimizer = _rebuild(path, meta, arrays, compile=True)
    state = ckpt.get("rng_state")
    return {
        "model": model,
        "optimizer": optimizer,
        "epoch": int(ckpt["epoch"]),
        "rng_state": state,
        "rng": None if state is None else generator_from_state(state),
        "extra": ckpt.get("extra"),
    }
