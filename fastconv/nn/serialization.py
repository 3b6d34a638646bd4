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
temporaries; measured 2x to 3x), whatever else the file declares.
"""

from __future__ import annotations

import io
import json
import math
import os
import reprlib
import zipfile
import zlib
from typing import Any, Union

import numpy as np

from .. import _fileio
from .._version import __version__
from . import layers as _layers
from .layer_base import get_layer_class
from .losses import loss_from_config
from .module import Module, Parameter

__all__ = ["save_model", "load_model", "save_checkpoint", "load_checkpoint"]

FORMAT = "fastconv-model"
FORMAT_VERSION = 1
_META = "__meta__"

# Limits on what a file may declare. The metadata of a 40,000-layer model is
# about 1 MB of JSON; anything past these is refused before it is parsed.
_MAX_META_BYTES = 64 << 20
_MAX_JSON_DEPTH = 100
_MAX_NESTING = 32          # Sequential inside Sequential
_MAX_NPY_HEADER = 10000    # numpy's own max_header_size
_MAX_DIM = 2**31 - 1       # any one size or channel count in a layer config
_MAX_INFLATE = 1032        # deflate cannot expand data by more than about 1032:1
_CHUNK = 1 << 20
_BIT_GENERATORS = ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")
# What malformed zip members and npy headers raise inside zipfile/zlib/numpy.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, TypeError,
                SyntaxError, NotImplementedError, RuntimeError)
# What layer, loss and optimiser constructors raise for bad (validated-type) values;
# float() of a huge JSON int raises OverflowError.
_BUILD_ERRORS = (TypeError, ValueError, OverflowError)

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlist = _short.maxdict = 6


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


def _bit_generator(state, where):
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(f"{where}: unknown bit generator {_short.repr(name)}; "
                         f"expected one of {list(_BIT_GENERATORS)}")
    bg = getattr(np.random, name)()
    try:
        bg.state = state
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        # numpy's setters raise any of these for a wrong key, type or range
        raise ValueError(f"{where}: invalid {name} state ({type(exc).__name__}: {exc})") from None
    return bg


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
# Reading: the npz container
# --------------------------------------------------------------------------- #


class _FileError(ValueError):
    """A ValueError whose message already names the file."""


class _Npz:
    """The members of a ``.npz`` read with ``zipfile``: headers first, data on demand.

    ``np.load`` would do, but it inflates a member to learn its shape; here
    each member's npy header is read and checked against the member's size in
    the zip directory, so a member is only read once its declared bytes are
    known to be what the zip holds, and never if the model does not need it.
    """

    def __init__(self, f, path):
        self.path = path
        self.zf = zipfile.ZipFile(f)
        self.members = {}
        self._headers = {}
        for info in self.zf.infolist():
            if not info.filename.endswith(".npy"):
                continue  # np.savez writes nothing else; never read
            key = info.filename[:-4]
            if key in self.members:
                self.fail(f"member {key!r} appears twice")
            if info.flag_bits & 0x1:
                self.fail(f"member {key!r} is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                if info.file_size != info.compress_size:
                    self.fail(f"stored member {key!r} declares {info.file_size} bytes but "
                              f"occupies {info.compress_size}")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if info.file_size > _MAX_INFLATE * info.compress_size + 1024:
                    self.fail(f"member {key!r} declares {info.file_size} bytes, more than "
                              f"{info.compress_size} deflated bytes can hold")
            else:
                self.fail(f"member {key!r} uses unsupported compression {info.compress_type}")
            self.members[key] = info

    def fail(self, msg):
        raise _FileError(f"{self.path!r}: {msg}")

    def header(self, key):
        """(shape, dtype, fortran_order, offset) of member ``key``, checked against its size."""
        hdr = self._headers.get(key)
        if hdr is not None:
            return hdr
        info = self.members[key]
        with self.zf.open(info) as fp:
            start = fp.read(10)
            if len(start) < 10 or start[:6] != b"\x93NUMPY":
                self.fail(f"member {key!r} is not an npy array")
            major = start[6]
            if major == 1:
                hlen, offset = int.from_bytes(start[8:10], "little"), 10
                prefix = start
            elif major in (2, 3):
                more = fp.read(2)
                prefix = start + more
                hlen, offset = int.from_bytes(prefix[8:12], "little"), 12
            else:
                self.fail(f"member {key!r} has npy format version {major}")
            if hlen > _MAX_NPY_HEADER:
                self.fail(f"member {key!r} has an npy header of {hlen} bytes")
            raw = prefix + fp.read(hlen)
        if len(raw) != offset + hlen:
            self.fail(f"member {key!r} is truncated inside its npy header")
        buf = io.BytesIO(raw)
        np.lib.format.read_magic(buf)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(buf, max_header_size=_MAX_NPY_HEADER)
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
                or dtype.kind not in "biufUS" or dtype.itemsize == 0:
            # object arrays would need pickle (never); structured ones are not ours
            self.fail(f"member {key!r} has dtype {dtype}, not a plain numeric or string type")
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            self.fail(f"member {key!r} has an invalid shape {_short.repr(shape)}")
        declared = math.prod(shape) * dtype.itemsize
        if declared != info.file_size - offset - hlen:
            self.fail(f"member {key!r} declares shape {shape} of {dtype} ({declared} bytes) but "
                      f"holds {info.file_size - offset - hlen} bytes of data")
        hdr = self._headers[key] = (shape, dtype, bool(fortran), offset + hlen)
        return hdr

    def read(self, key, out=None):
        """Member ``key`` as a native-order array; into ``out`` when it fits exactly."""
        shape, dtype, fortran, offset = self.header(key)
        native = dtype.newbyteorder("=")
        direct = (out is not None and not fortran and out.dtype == native and out.shape == shape
                  and out.flags.c_contiguous and out.flags.writeable)
        flat = out.reshape(-1) if direct else np.empty(math.prod(shape), dtype)
        view = memoryview(flat).cast("B")
        with self.zf.open(self.members[key]) as fp:
            fp.read(offset)
            pos = 0
            while pos < len(view):
                n = fp.readinto(view[pos:pos + _CHUNK])
                if not n:
                    self.fail(f"member {key!r} is truncated")
                pos += n
            if fp.read(1):
                self.fail(f"member {key!r} has trailing data")
        if dtype.byteorder not in ("=", "|") and dtype.newbyteorder("=") != dtype:
            flat = flat.byteswap(inplace=True).view(native) if not direct else flat
        if direct:
            return out
        arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
        if out is not None:
            np.copyto(out, arr, casting="unsafe")
            return out
        return arr


def _json_depth(obj):
    """Nesting depth of a decoded JSON value (iterative: a deep file cannot blow the stack)."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        depth = max(depth, d)
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return depth


# --------------------------------------------------------------------------- #
# Reading: the metadata schema
# --------------------------------------------------------------------------- #


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v):
    if isinstance(v, bool):
        return False
    if isinstance(v, int):  # math.isfinite(10**400) raises OverflowError
        return abs(v) <= 2**53
    return isinstance(v, float) and math.isfinite(v)


def _int_in(lo, hi=_MAX_DIM):
    return (lambda v: _is_int(v) and lo <= v <= hi), f"an int in [{lo}, {hi}]"


def _pair_in(lo):
    ok_int, _ = _int_in(lo)
    return ((lambda v: ok_int(v) or (isinstance(v, list) and len(v) == 2 and all(map(ok_int, v)))),
            f"an int >= {lo} or a pair of them")


def _real_in(lo, hi, hi_open=False):
    return ((lambda v: _is_real(v) and lo <= v and (v < hi if hi_open else v <= hi)),
            f"a number in [{lo}, {hi}{')' if hi_open else ']'}")


def _optional(check):
    ok, what = check
    return (lambda v: v is None or ok(v)), f"None or {what}"


_BOOL = (lambda v: isinstance(v, bool)), "true or false"
_STR = (lambda v: isinstance(v, str)), "a string"
_DTYPE = (lambda v: v in ("float32", "float64")), "'float32' or 'float64'"
_PADDING = ((lambda v: v in ("same", "valid") or _pair_in(0)[0](v)),
            "'same', 'valid', an int >= 0 or a pair of them")
_POOL = {"kernel_size": _pair_in(1), "stride": _optional(_pair_in(1)), "padding": _pair_in(0)}
_BN = {"num_features": _int_in(1), "eps": _real_in(0, math.inf), "momentum": _optional(_real_in(0, 1)),
       "affine": _BOOL, "dtype": _DTYPE}
_INITS = {"weight_init": _STR, "bias_init": _STR}

# Constructor arguments the built-in layers accept from a file: name -> (check, description).
# ``rng`` and callables are never stored, so they are refused.
_LAYER_SCHEMA = {
    "Conv2d": {"in_channels": _int_in(1), "out_channels": _int_in(1), "kernel_size": _pair_in(1),
               "stride": _pair_in(1), "padding": _PADDING, "dilation": _pair_in(1),
               "groups": _int_in(1), "bias": _BOOL, "dtype": _DTYPE, **_INITS},
    "MaxPool2d": _POOL,
    "AvgPool2d": {**_POOL, "count_include_pad": _BOOL},
    "Linear": {"in_features": _int_in(1), "out_features": _int_in(1), "bias": _BOOL,
               "dtype": _DTYPE, **_INITS},
    "Flatten": {}, "ReLU": {}, "Sigmoid": {}, "Tanh": {},
    "Softmax": {"axis": _int_in(-32, 32)},
    "Dropout": {"p": _real_in(0, 1, hi_open=True)},
    "BatchNorm1d": _BN, "BatchNorm2d": _BN,
    "Sequential": {"layers": ((lambda v: isinstance(v, list)), "a list of layer specs")},
}
_LAYER_REQUIRED = {"Conv2d": ("in_channels", "out_channels", "kernel_size"),
                   "MaxPool2d": ("kernel_size",), "AvgPool2d": ("kernel_size",),
                   "Linear": ("in_features", "out_features"),
                   "BatchNorm1d": ("num_features",), "BatchNorm2d": ("num_features",)}


class _Checker:
    """Schema checks of one file's metadata; every failure is a ValueError naming the file."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, msg):
        raise _FileError(f"{self.path!r}: {where}: {msg}")

    def want(self, value, check, where):
        ok, what = check
        if not ok(value):
            self.fail(where, f"expected {what}, got {_short.repr(value)}")
        return value

    def dict_(self, value, where, keys=None):
        if not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            self.fail(where, f"expected a JSON object, got {_short.repr(value)}")
        if keys is not None:
            missing = [k for k in keys if k not in value]
            if missing:
                self.fail(where, f"missing key(s) {missing}")
        return value

    def spec(self, spec, where):
        """(class, config) of a ``{"class": ..., "config": {...}}`` entry."""
        self.dict_(spec, where, ("class",))
        self.want(spec["class"], _STR, where + ".class")
        return spec["class"], self.dict_(spec.get("config", {}), where + ".config")

    def layer(self, spec, where, depth=0):
        """Check a layer spec; return (expected state {name: (shape, dtype)}, complete).

        ``complete`` is False when a custom registered layer occurs: its
        arrays can only be checked after it is built.
        """
        name, config = self.spec(spec, where)
        try:
            cls = get_layer_class(name)
        except ValueError as exc:
            self.fail(where, str(exc))
        builtin = getattr(_layers, name, None) if name != "Sequential" else _sequential_class()
        if cls is not builtin or name not in _LAYER_SCHEMA:
            return {}, False
        schema = _LAYER_SCHEMA[name]
        for key, value in config.items():
            if key not in schema:
                self.fail(f"{where}.config", f"unknown argument {_short.repr(key)} for {name}; "
                          f"expected some of {sorted(schema)}")
            self.want(value, schema[key], f"{where}.config.{key}")
        missing = [k for k in _LAYER_REQUIRED.get(name, ()) if k not in config]
        if missing:
            self.fail(f"{where}.config", f"{name} needs {missing}")
        dtype = np.dtype(config.get("dtype", "float32"))
        if name == "Sequential":
            if depth >= _MAX_NESTING:
                self.fail(where, f"Sequential nested more than {_MAX_NESTING} deep")
            expected, complete = {}, True
            for i, child in enumerate(config.get("layers", [])):
                sub, ok = self.layer(child, f"{where}.config.layers[{i}]", depth + 1)
                expected.update({f"{i}.{k}": v for k, v in sub.items()})
                complete = complete and ok
            return expected, complete
        if name == "Conv2d":
            groups = config.get("groups", 1)
            cin, cout = config["in_channels"], config["out_channels"]
            if cin % groups or cout % groups:
                self.fail(f"{where}.config", f"in_channels {cin} and out_channels {cout} must be "
                          f"divisible by groups {groups}")
            k = config["kernel_size"]
            k = (k, k) if _is_int(k) else tuple(k)
            state = {"weight": ((cout, cin // groups) + k, dtype)}
            if config.get("bias", True):
                state["bias"] = ((cout,), dtype)
            return state, True
        if name == "Linear":
            cin, cout = config["in_features"], config["out_features"]
            state = {"weight": ((cout, cin), dtype)}
            if config.get("bias", True):
                state["bias"] = ((cout,), dtype)
            return state, True
        if name.startswith("BatchNorm"):
            c = config["num_features"]
            state = {}
            if config.get("affine", True):
                state.update(weight=((c,), dtype), bias=((c,), dtype))
            state.update(running_mean=((c,), dtype), running_var=((c,), dtype),
                         num_batches_tracked=((), np.dtype(np.int64)))
            return state, True
        return {}, True

    def meta(self, meta):
        """Check the top level and the parts every loader uses; return meta."""
        self.dict_(meta, "metadata", ("format", "format_version", "model"))
        if meta["format"] != FORMAT:
            raise _FileError(f"{self.path!r} is not a fastconv model file "
                             f"(format {_short.repr(meta['format'])})")
        version = self.want(meta["format_version"], _int_in(1, 2**31), "format_version")
        if version > FORMAT_VERSION:
            raise _FileError(
                f"{self.path!r} has format version {version}, newer than this fastconv "
                f"({__version__}) reads ({FORMAT_VERSION}); upgrade fastconv")
        self.dict_(meta["model"], "model", ("class",))
        states = self.dict_(meta.get("rng_states") or {}, "rng_states")
        for key, state in states.items():
            _checked(self, f"rng_states[{key!r}]", _bit_generator, state, "")
        comp = meta.get("compile")
        if comp is not None:
            self.dict_(comp, "compile")
            if comp.get("loss") is not None:
                self.spec(comp["loss"], "compile.loss")
            metrics = comp.get("metrics") or []
            if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
                self.fail("compile.metrics", f"expected a list of strings, got {_short.repr(metrics)}")
            if comp.get("optimizer") is not None:
                self.dict_(comp["optimizer"], "compile.optimizer", ("class",))
                self.want(comp["optimizer"]["class"], _STR, "compile.optimizer.class")
        opt = meta.get("optimizer")
        if opt is not None:
            self.dict_(opt, "optimizer", ("config", "lr", "initial_lr", "iterations"))
            if comp is None or opt["config"] != comp.get("optimizer"):
                self.fail("optimizer.config", "differs from compile.optimizer")
            self.want(opt["lr"], _real_in(0, math.inf), "optimizer.lr")
            self.want(opt["initial_lr"], _real_in(0, math.inf), "optimizer.initial_lr")
            self.want(opt["iterations"], _int_in(0, 2**63 - 1), "optimizer.iterations")
        ckpt = meta.get("checkpoint")
        if ckpt is not None:
            self.dict_(ckpt, "checkpoint", ("epoch",))
            self.want(ckpt["epoch"], _int_in(-1, 2**31 - 1), "checkpoint.epoch")
            if ckpt.get("rng_state") is not None:
                _checked(self, "checkpoint.rng_state", _bit_generator, ckpt["rng_state"], "")
        return meta


def _checked(checker, where, func, *args):
    """func(*args), with its ValueError re-raised naming the file and ``where``."""
    try:
        return func(*args)
    except ValueError as exc:
        checker.fail(where, str(exc).removeprefix(": "))


def _sequential_class():
    from .sequential import Sequential

    return Sequential


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
    if cls is _sequential_class():
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
    from ..optim import optimizer_from_config

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
    from ..optim import optimizer_from_config

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
