"""Reading fastconv files as untrusted input: the ``.npz`` container and the metadata schema.

``fastconv.nn.serialization`` loads models and checkpoints through this
module: ``_Npz`` reads each zip member's npy header and checks it against
the member's size in the zip directory before any data is read; ``_Checker``
checks the decoded JSON metadata against a schema of every built-in layer,
loss and optimiser before anything is built. Both raise ``ValueError``
naming the file (see ``docs/reliability.md``, "Files").
"""

from __future__ import annotations

import io
import math
import reprlib
import zipfile
import zlib

import numpy as np

from .._version import __version__
from . import layers as _layers
from .layer_base import get_layer_class

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
_PADDING = ((lambda v: v in ("same", "valid") or _pair_in(0)[0](v)
             or (isinstance(v, list) and len(v) == 2
                 and all(isinstance(s, list) and _pair_in(0)[0](s) for s in v))),
            "'same', 'valid', an int >= 0, a pair of them or a pair of such pairs")
_PADDING_1D = ((lambda v: v in ("same", "valid") or _pair_in(0)[0](v)),
               "'same', 'valid', an int >= 0 or a pair of them")
_POOL_PADDING = ((lambda v: _pair_in(0)[0](v) or (
    isinstance(v, list) and len(v) == 2 and all(
        isinstance(side, list) and len(side) == 2 and all(map(_int_in(0)[0], side))
        for side in v))),
    "an int >= 0, a pair of them or [[top, bottom], [left, right]]")
_POOL = {"kernel_size": _pair_in(1), "stride": _optional(_pair_in(1)), "padding": _POOL_PADDING,
         "ceil_mode": _BOOL}
_POOL1D = {"kernel_size": _int_in(1), "stride": _optional(_int_in(1)), "padding": _pair_in(0),
           "ceil_mode": _BOOL}
_BN = {"num_features": _int_in(1), "eps": _real_in(0, math.inf), "momentum": _optional(_real_in(0, 1)),
       "affine": _BOOL, "dtype": _DTYPE, "track_running_stats": _BOOL,
       "return_running_stats": _BOOL}
_INDICES = {"return_indices": _BOOL,
            "indices_layout": ((lambda v: v in ("plane", "flat", "flat_column")),
                               "'plane', 'flat' or 'flat_column'")}
_INITS = {"weight_init": _STR, "bias_init": _STR}

# Constructor arguments the built-in layers accept from a file: name -> (check, description).
# ``rng`` and callables are never stored, so they are refused.
_LAYER_SCHEMA = {
    "Conv2d": {"in_channels": _int_in(1), "out_channels": _int_in(1), "kernel_size": _pair_in(1),
               "stride": _pair_in(1), "padding": _PADDING, "dilation": _pair_in(1),
               "groups": _int_in(1), "bias": _BOOL, "dtype": _DTYPE, **_INITS},
    "Conv1d": {"in_channels": _int_in(1), "out_channels": _int_in(1), "kernel_size": _int_in(1),
               "stride": _int_in(1), "padding": _PADDING_1D, "dilation": _int_in(1),
               "groups": _int_in(1), "bias": _BOOL, "dtype": _DTYPE, **_INITS},
    "MaxPool2d": {**_POOL, "dilation": _pair_in(1), **_INDICES},
    "AvgPool2d": {**_POOL, "count_include_pad": _BOOL, "dilation": _pair_in(1)},
    "MaxPool1d": {**_POOL1D, "dilation": _int_in(1), **_INDICES},
    "AvgPool1d": {**_POOL1D, "count_include_pad": _BOOL, "dilation": _int_in(1)},
    "Linear": {"in_features": _int_in(1), "out_features": _int_in(1), "bias": _BOOL,
               "dtype": _DTYPE, **_INITS},
    "Flatten": {"axis": _int_in(-32, 32)}, "ReLU": {}, "Sigmoid": {}, "Tanh": {},
    "Softmax": {"axis": _int_in(-32, 32)},
    "Dropout": {"p": _real_in(0, 1, hi_open=True), "return_mask": _BOOL},
    "Gemm": {"in_features": _int_in(1), "out_features": _int_in(1), "trans_a": _BOOL,
             "bias": _BOOL, "bias_shape": _optional(((lambda v: isinstance(v, list) and len(v) <= 2
                                       and all(map(_int_in(1)[0], v))),
                                      "a list of at most 2 ints >= 1")),
             "dtype": _DTYPE, **_INITS},
    "Cast": {"dtype": ((lambda v: v in ("float32", "float64", "uint8", "int8", "uint16",
                                        "int16", "uint32", "int32")), "a dtype name")},
    "BatchNorm1d": _BN, "BatchNorm2d": _BN,
    "Sequential": {"layers": ((lambda v: isinstance(v, list)), "a list of layer specs")},
}
_LAYER_REQUIRED = {"Conv2d": ("in_channels", "out_channels", "kernel_size"),
                   "Conv1d": ("in_channels", "out_channels", "kernel_size"),
                   "MaxPool2d": ("kernel_size",), "AvgPool2d": ("kernel_size",),
                   "MaxPool1d": ("kernel_size",), "AvgPool1d": ("kernel_size",),
                   "Linear": ("in_features", "out_features"),
                   "Gemm": ("in_features", "out_features"),
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
        builtin = (_is_builtin_sequential(cls) if name == "Sequential"
                   else cls is getattr(_layers, name, None))
        if not builtin or name not in _LAYER_SCHEMA:
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
        if name in ("Conv2d", "Conv1d"):
            groups = config.get("groups", 1)
            cin, cout = config["in_channels"], config["out_channels"]
            if cin % groups or cout % groups:
                self.fail(f"{where}.config", f"in_channels {cin} and out_channels {cout} must be "
                          f"divisible by groups {groups}")
            k = config["kernel_size"]
            k = (k,) if name == "Conv1d" else (k, k) if _is_int(k) else tuple(k)
            state = {"weight": ((cout, cin // groups) + k, dtype)}
            if config.get("bias", True):
                state["bias"] = ((cout,), dtype)
            return state, True
        if name == "Gemm":
            cin, cout = config["in_features"], config["out_features"]
            state = {"weight": ((cout, cin), dtype)}
            if config.get("bias", True):
                shape = config.get("bias_shape")
                state["bias"] = ((cout,) if shape is None else tuple(shape), dtype)
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


def _is_builtin_sequential(cls):
    """Whether ``cls`` is fastconv's own ``Sequential`` (not a registered
    replacement of that name); by its module, so that this module does not
    import the model it reads."""
    return cls.__name__ == "Sequential" and cls.__module__ == "fastconv.nn.sequential"
