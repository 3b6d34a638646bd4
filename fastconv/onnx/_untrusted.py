"""Reading an ONNX file as untrusted input: the caps, and tensors checked before allocation.

As ``fastconv.load_model`` does: only regular files up to ``max_bytes`` are
read; tensors stored outside the file (external data) are refused, so a model
cannot make fastconv open other files; each tensor's declared element count is
capped and checked against the bytes actually present before anything is
allocated; graphs with more than ``max_nodes`` nodes are refused (in
``_load.py``, where the graph is walked); nothing in the file is executed.

The optional ``onnx`` package is imported here, on first use, never by the
kernels.
"""

import math

import numpy as np

from .._fileio import open_regular

#: Default caps for :func:`fastconv.onnx.load` (untrusted files).
MAX_FILE_BYTES = 1 << 30
MAX_NODES = 10_000
MAX_ELEMENTS = 1 << 28  # per tensor: 1 GiB of float32
_MAX_RANK = 8

# TensorProto.DataType codes, spelled here so that a file is judged without
# trusting anything it declares
_FLOAT, _UINT8, _INT32, _INT64, _BOOL, _FLOAT16, _DOUBLE = 1, 2, 6, 7, 9, 10, 11
_NP = {_FLOAT: np.float32, _DOUBLE: np.float64, _INT64: np.int64, _INT32: np.int32,
       _BOOL: np.bool_, _FLOAT16: np.float16}
_TYPE_NAMES = {0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16",
               6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
               12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16"}


def _onnx():
    try:
        # the real package: an absolute import, never this package (fastconv.onnx)
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise ImportError(
            "fastconv.onnx needs the onnx package: pip install 'fastconv[onnx]'") from exc
    return onnx


def _read_model(path, owner, max_bytes):
    """The ``onnx.ModelProto`` in the file at ``path``, at most ``max_bytes`` read."""
    onnx = _onnx()
    f, size = open_regular(path, owner)
    with f:
        if size > max_bytes:
            raise ValueError(f"{owner}: {path!r} is {size} bytes, more than max_bytes={max_bytes}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew after the stat
        raise ValueError(f"{owner}: {path!r} is more than max_bytes={max_bytes}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ValueError(f"{owner}: {path!r} is not an ONNX model (corrupt or truncated: "
                         f"{exc})") from None
    return proto


def _tensor_array(t, where, max_elements):
    """A TensorProto as a NumPy array, refusing anything a hostile file could abuse."""
    if t.data_location == 1 or len(t.external_data):
        raise ValueError(f"{where}: tensor {t.name!r} keeps its data in an external file; "
                         "fastconv.onnx.load reads only self-contained models")
    if t.HasField("segment"):
        raise ValueError(f"{where}: tensor {t.name!r} is segmented, which is not supported")
    if t.data_type not in _NP:
        raise ValueError(f"{where}: tensor {t.name!r} has data type "
                         f"{_TYPE_NAMES.get(t.data_type, t.data_type)}; supported: FLOAT, "
                         "DOUBLE, FLOAT16, INT64, INT32, BOOL")
    dims = list(t.dims)
    if len(dims) > _MAX_RANK or any(d < 0 for d in dims):
        raise ValueError(f"{where}: tensor {t.name!r} has invalid dims {dims}")
    count = math.prod(dims)
    if count > max_elements:
        raise ValueError(f"{where}: tensor {t.name!r} declares {count} elements, more than "
                         f"max_elements={max_elements}")
    dtype = np.dtype(_NP[t.data_type])
    if t.raw_data or count == 0 and not _typed_field(t):
        raw = t.raw_data
        if len(raw) != count * dtype.itemsize:
            raise ValueError(f"{where}: tensor {t.name!r} of dims {dims} needs "
                             f"{count * dtype.itemsize} bytes of {dtype}, the file has {len(raw)}")
        arr = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)
    else:
        field = _typed_field(t)
        if len(field) != count:
            raise ValueError(f"{where}: tensor {t.name!r} of dims {dims} needs {count} values, "
                             f"the file has {len(field)}")
        if t.data_type == _FLOAT16:  # stored as the bit patterns, one per int32
            arr = np.asarray(field, np.uint16).view(np.float16)
        else:
            arr = np.asarray(field, dtype)
    return arr.reshape(dims)


def _typed_field(t):
    if t.data_type == _FLOAT:
        return t.float_data
    if t.data_type == _DOUBLE:
        return t.double_data
    if t.data_type == _INT64:
        return t.int64_data
    return t.int32_data
