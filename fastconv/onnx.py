"""ONNX export and import for ``fastconv.nn.Sequential`` models.

``export(model, path, input_shape=...)`` writes a standard ONNX file (opset
:data:`DEFAULT_OPSET` unless told otherwise, dynamic batch axis) that ONNX
Runtime, browsers and mobile runtimes can run. ``load(path)`` turns an ONNX
graph that is a chain of supported operators (as ``torch.onnx.export`` writes
for a ``torch.nn.Sequential``-style CNN) into a ``Sequential`` that predicts
the same outputs and can be trained further with ``fit``.

Needs the optional ``onnx`` package (``pip install "fastconv[onnx]"``); the
kernels never import it.

Loading treats the file as untrusted input, as ``fastconv.load_model`` does:
only regular files up to ``max_bytes`` are read; tensors stored outside the
file (external data) are refused, so a model cannot make fastconv open other
files; each tensor's declared element count is capped and checked against
the bytes actually present before anything is allocated; graphs with more
than ``max_nodes`` nodes are refused; nothing in the file is executed.

See ``docs/onnx.md`` for the operator table and what is not supported yet.
"""

# This module is ``fastconv.onnx``; ``import onnx`` below is an absolute import
# (Python 3) and so always finds the real ``onnx`` package, never this file.

import math

import numpy as np

from . import nn
from ._fileio import atomic_write, open_regular
from ._version import __version__

__all__ = ["export", "load", "from_onnx", "DEFAULT_OPSET", "MAX_FILE_BYTES", "MAX_NODES",
           "MAX_ELEMENTS"]

#: Opset written by :func:`export` when none is given: supported by every ONNX
#: Runtime since 1.14 (2023) and by torch.onnx's default exporter.
DEFAULT_OPSET = 17
#: Oldest opset :func:`export` writes: Softmax/LogSoftmax take a single axis
#: from 13 on (before, they flattened every axis after it).
MIN_EXPORT_OPSET = 13
#: Default caps for :func:`load` (untrusted files).
MAX_FILE_BYTES = 1 << 30
MAX_NODES = 10_000
MAX_ELEMENTS = 1 << 28  # per tensor: 1 GiB of float32
_MAX_RANK = 8


def _onnx():
    try:
        import onnx  # the real package: absolute import
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise ImportError(
            "fastconv.onnx needs the onnx package: pip install 'fastconv[onnx]'") from exc
    return onnx


# =============================================================================
# export
# =============================================================================
def _flat_layers(model):
    """The layers of ``model`` in order, nested ``Sequential`` models inlined."""
    out = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, nn.Sequential):
            out.extend((f"{i}.{j}", sub) for j, sub in _flat_layers(layer))
        else:
            out.append((str(i), layer))
    return out


def _layer_shapes(model, layers, input_shape, dtype):
    """Input shape of every layer for one zero sample (evaluation mode)."""
    x = np.zeros((1,) + tuple(input_shape), dtype)
    shapes = []
    was_training = model.training
    model.eval()
    try:
        with nn.no_grad():
            for _, layer in layers:
                shapes.append(x.shape)
                x = layer(x)
    finally:
        model.train(was_training)
    shapes.append(x.shape)
    return shapes


class _GraphBuilder:
    """Nodes and initialisers of a chain graph, one fresh tensor name per step."""

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes = []
        self.inits = []
        self.dtype = dtype
        self.current = "input"
        self.count = 0

    def const(self, name, array, dtype=None):
        arr = np.array(array, dtype=dtype or self.dtype, order="C")  # 0-d stays 0-d
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op, prefix, extra_inputs=(), **attrs):
        self.count += 1
        out = f"{prefix}_{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(
            op, [self.current, *extra_inputs], [out], name=f"{prefix}/{op}_{self.count}",
            **attrs))
        self.current = out
        return out

    def binary(self, op, a, b, prefix):
        self.count += 1
        out = f"{prefix}_{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op, [a, b], [out],
                                                name=f"{prefix}/{op}_{self.count}"))
        return out


def _export_layer(g, where, layer, in_shape, out_shape, opset):
    """Append the node(s) of one layer to ``g``; ValueError if it has none."""
    p = f"l{where}"
    if isinstance(layer, nn.Conv2d):
        (kh, kw), (dh, dw) = layer.kernel_size, layer.dilation
        if layer.padding == "same":
            # fastconv's 'same' puts the odd extra row/column at the bottom/right
            th, tw = dh * (kh - 1), dw * (kw - 1)
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
        elif layer.padding == "valid":
            pads = [0, 0, 0, 0]
        else:
            pads = [layer.padding[0], layer.padding[1]] * 2
        inputs = [g.const(f"{p}.weight", layer.weight.data)]
        if layer.bias is not None:
            inputs.append(g.const(f"{p}.bias", layer.bias.data))
        g.node("Conv", p, inputs, kernel_shape=[kh, kw], strides=list(layer.stride), pads=pads,
               dilations=[dh, dw], group=layer.groups)
    elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        attrs = dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                     pads=list(layer.padding) * 2)
        if isinstance(layer, nn.MaxPool2d):
            g.node("MaxPool", p, **attrs)
        else:
            g.node("AveragePool", p, count_include_pad=int(layer.count_include_pad), **attrs)
    elif isinstance(layer, nn.GlobalMaxPool2d):  # a GlobalAvgPool2d subclass: first
        g.node("GlobalMaxPool", p)
        if len(out_shape) == 2:
            g.node("Flatten", p, axis=1)
    elif isinstance(layer, (nn.GlobalAvgPool2d, nn.AdaptiveAvgPool2d)):
        h, w = in_shape[2:]
        oh, ow = out_shape[2:] if len(out_shape) == 4 else (1, 1)
        if (oh, ow) == (1, 1):
            g.node("GlobalAveragePool", p)
        elif h % oh == 0 and w % ow == 0:
            # equal bins: an ordinary average pool over the declared input size
            k = [h // oh, w // ow]
            g.node("AveragePool", p, kernel_shape=k, strides=k)
        else:
            raise ValueError(
                f"{type(layer).__name__} to {(oh, ow)} on a {h}x{w} input has unequal bins, "
                "which no ONNX pooling operator expresses")
        if len(out_shape) == 2:
            g.node("Flatten", p, axis=1)
    elif isinstance(layer, nn.Linear):
        inputs = [g.const(f"{p}.weight", layer.weight.data)]
        if layer.bias is not None:
            inputs.append(g.const(f"{p}.bias", layer.bias.data))
        g.node("Gemm", p, inputs, transB=1)
    elif isinstance(layer, nn.Flatten):
        g.node("Flatten", p, axis=1)
    elif isinstance(layer, nn.ReLU):
        g.node("Relu", p)
    elif isinstance(layer, nn.Sigmoid):
        g.node("Sigmoid", p)
    elif isinstance(layer, nn.Tanh):
        g.node("Tanh", p)
    elif isinstance(layer, nn.LeakyReLU):
        g.node("LeakyRelu", p, alpha=float(layer.negative_slope))
    elif isinstance(layer, nn.ELU):
        g.node("Elu", p, alpha=float(layer.alpha))
    elif isinstance(layer, nn.GELU):
        if opset >= 20:
            g.node("Gelu", p, approximate=layer.approximate)
        elif layer.approximate == "none":
            # before opset 20: x * (1 + erf(x / sqrt 2)) / 2
            x = g.current
            g.node("Div", p, [g.const(f"{p}.sqrt2", math.sqrt(2.0))])
            g.node("Erf", p)
            g.node("Add", p, [g.const(f"{p}.one", 1.0)])
            g.node("Mul", p, [g.const(f"{p}.half", 0.5)])
            g.current = g.binary("Mul", x, g.current, p)
        else:
            raise ValueError("GELU(approximate='tanh') needs opset 20 or later (the Gelu operator)")
    elif isinstance(layer, nn.SiLU):
        x = g.current
        g.node("Sigmoid", p)
        g.current = g.binary("Mul", x, g.current, p)
    elif isinstance(layer, (nn.Softmax, nn.LogSoftmax)):
        axis = layer.axis % len(in_shape)
        if axis == 0:
            raise ValueError(f"{type(layer).__name__}(axis={layer.axis}) mixes the batch axis")
        g.node("Softmax" if isinstance(layer, nn.Softmax) else "LogSoftmax", p, axis=axis)
    elif isinstance(layer, nn.Dropout):
        # an identity in inference; kept so that a re-import fine-tunes with it
        g.node("Dropout", p, [g.const(f"{p}.ratio", layer.p)])
    elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        c = layer.num_features
        scale = layer.weight.data if layer.affine else np.ones(c)
        bias = layer.bias.data if layer.affine else np.zeros(c)
        mom = 0.1 if layer.momentum is None else layer.momentum
        g.node("BatchNormalization", p,
               [g.const(f"{p}.weight", scale), g.const(f"{p}.bias", bias),
                g.const(f"{p}.running_mean", layer.running_mean),
                g.const(f"{p}.running_var", layer.running_var)],
               epsilon=float(layer.eps), momentum=1.0 - mom)
    else:
        raise ValueError(f"{type(layer).__name__} has no ONNX export")


def export(model, path, input_shape, opset=DEFAULT_OPSET):
    """Write a ``Sequential`` model as an ONNX file.

    Parameters
    ----------
    model : fastconv.nn.Sequential
        Layers among ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``,
        ``GlobalAvgPool2d``, ``GlobalMaxPool2d``, ``AdaptiveAvgPool2d`` (equal
        bins), ``Linear``, ``Flatten``, ``ReLU``, ``Sigmoid``, ``Tanh``,
        ``LeakyReLU``, ``ELU``, ``GELU``, ``SiLU``, ``Softmax``,
        ``LogSoftmax``, ``Dropout``, ``BatchNorm1d``, ``BatchNorm2d`` (nested
        ``Sequential`` models are inlined).
    path : str or os.PathLike
        Written atomically (readers never see a partial file).
    input_shape : tuple of int
        Shape of one sample, e.g. ``(1, 28, 28)``. The batch axis is dynamic
        (named ``N``); the other axes are fixed to these sizes.
    opset : int, default 17
        ONNX opset of the default domain, 13 or later (GELU with
        ``approximate='tanh'`` needs 20).

    Returns
    -------
    onnx.ModelProto
        The model written, already checked with ``onnx.checker`` (full check,
        with shape inference).

    Notes
    -----
    The graph computes the model's evaluation-mode output (what
    ``Sequential.forward`` gives after ``model.eval()``: raw logits for the
    built-in models, not ``predict``'s probabilities). Input ``"input"`` and
    output ``"output"``, dtype that of the model (float32 or float64).
    """
    owner = "fastconv.onnx.export"
    onnx = _onnx()
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"{owner}: model must be a fastconv.nn.Sequential, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"{owner}: opset must be an int, got {type(opset).__name__} {opset!r}")
    latest = onnx.defs.onnx_opset_version()
    if not MIN_EXPORT_OPSET <= opset <= latest:
        raise ValueError(f"{owner}: opset must be between {MIN_EXPORT_OPSET} and {latest} "
                         f"(this onnx's newest), got {opset}")
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{owner}: input_shape must be a tuple of ints (one sample's shape), "
                        f"got {input_shape!r}") from None
    if not input_shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                  and d >= 1 for d in input_shape):
        raise ValueError(f"{owner}: input_shape must be one sample's shape as positive ints, "
                         f"e.g. (1, 28, 28), got {input_shape!r}")
    input_shape = tuple(int(d) for d in input_shape)
    layers = _flat_layers(model)
    if not layers:
        raise ValueError(f"{owner}: the model has no layers")
    dtype = model.dtype
    for where, layer in layers:
        kind = nn.Sequential if isinstance(layer, nn.Sequential) else type(layer)
        if not _exportable(layer):
            raise ValueError(f"{owner}: layer {where} ({kind.__name__}) has no ONNX export; "
                             f"supported: {', '.join(sorted(_EXPORTABLE))}")
    try:
        shapes = _layer_shapes(model, layers, input_shape, dtype)
    except ValueError as exc:
        raise ValueError(f"{owner}: the model does not run on input_shape {input_shape}: {exc}") from exc
    g = _GraphBuilder(onnx, dtype)
    for i, (where, layer) in enumerate(layers):
        try:
            _export_layer(g, where, layer, shapes[i], shapes[i + 1], opset)
        except ValueError as exc:
            raise ValueError(f"{owner}: layer {where} ({type(layer).__name__}): {exc}") from None
    # the last node writes the graph output
    g.nodes[-1].output[0] = "output"
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = onnx.helper.make_graph(
        g.nodes, "fastconv",
        [onnx.helper.make_tensor_value_info("input", elem, ["N", *input_shape])],
        [onnx.helper.make_tensor_value_info("output", elem, ["N", *shapes[-1][1:]])],
        g.inits)
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", int(opset))],
        producer_name="fastconv", producer_version=__version__)
    # the IR version this opset was released with, so older runtimes read it
    proto.ir_version = min(proto.ir_version, _ir_for_opset(onnx, int(opset)))
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return proto


def _ir_for_opset(onnx, opset):
    try:
        return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    except Exception:  # an opset this onnx does not know: keep its own IR version
        return onnx.IR_VERSION


_EXPORTABLE = {c.__name__: c for c in (
    nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.GlobalAvgPool2d, nn.GlobalMaxPool2d,
    nn.AdaptiveAvgPool2d, nn.Linear, nn.Flatten, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.GELU, nn.SiLU, nn.Softmax, nn.LogSoftmax, nn.Dropout, nn.BatchNorm1d,
    nn.BatchNorm2d)}


def _exportable(layer):
    # exact classes: a user subclass may compute something else
    return type(layer) in _EXPORTABLE.values()


# =============================================================================
# load
# =============================================================================
_FLOAT, _UINT8, _INT32, _INT64, _BOOL, _FLOAT16, _DOUBLE = 1, 2, 6, 7, 9, 10, 11
_NP = {_FLOAT: np.float32, _DOUBLE: np.float64, _INT64: np.int64, _INT32: np.int32,
       _BOOL: np.bool_, _FLOAT16: np.float16}
_TYPE_NAMES = {0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16",
               6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
               12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16"}


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


class _Refused(ValueError):
    """An unsupported node, operator or attribute (re-raised with the node named)."""


def _attrs(node, allowed):
    """Attributes of ``node`` as Python values; refuse any name not in ``allowed``."""
    out = {}
    for a in node.attribute:
        if a.name not in allowed:
            raise _Refused(f"attribute {a.name!r} is not supported")
        if a.type == 1:
            # the file holds float32: its shortest repr, so eps 1e-5 reads as 1e-05
            out[a.name] = float(str(np.float32(a.f)))
        elif a.type == 2:
            out[a.name] = int(a.i)
        elif a.type == 3:
            out[a.name] = a.s.decode("utf-8", "replace")
        elif a.type == 6:
            out[a.name] = [float(v) for v in a.floats]
        elif a.type == 7:
            out[a.name] = [int(v) for v in a.ints]
        else:
            raise _Refused(f"attribute {a.name!r} has a type (tensor, graph or string list) "
                           "that is not supported")
    return out


def _pair_attr(attrs, name, default, rank):
    v = attrs.get(name)
    if v is None:
        return (default,) * (rank - 2)
    if len(v) != rank - 2:
        raise _Refused(f"attribute {name}={v} should have {rank - 2} values for a "
                       f"{rank}-D input")
    return tuple(v)


def _spatial(op, rank):
    """Conv and pooling run on (N, C, H, W) only (until the 1-D kernels)."""
    if rank != 4:
        what = f"{rank - 2}-D" if rank > 2 else f"rank-{rank}"
        raise _Refused(f"{what} input (rank {rank}) is not supported: fastconv runs 2-D "
                       f"{op} on (N, C, H, W) only")


def _resolve_pads(attrs, k, s, d, shape):
    """Per-axis (before, after) padding from pads / auto_pad."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = attrs.get("pads", [0, 0, 0, 0])
        if len(pads) != 4:
            raise _Refused(f"attribute pads={pads} should have 4 values")
        return [(pads[0], pads[2]), (pads[1], pads[3])], f"pads={pads}"
    if auto == "VALID":
        return [(0, 0), (0, 0)], "auto_pad=VALID"
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise _Refused(f"attribute auto_pad={auto!r} is not supported")
    out = []
    for ax in range(2):
        eff = d[ax] * (k[ax] - 1) + 1
        if s[ax] == 1:
            total = eff - 1
        else:
            size = shape[2 + ax]
            if size is None:
                raise _Refused(f"attribute auto_pad={auto} with stride {s[ax]} needs the input's "
                               "height and width in the graph (they are symbolic)")
            total = max((-(-size // s[ax]) - 1) * s[ax] + eff - size, 0)
        small = total // 2
        out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return out, f"auto_pad={auto}"


def _symmetric(pads, what, op, k, pool):
    if any(a != b for a, b in pads):
        raise _Refused(f"attribute {what} gives asymmetric padding {pads} (top/bottom, "
                       f"left/right), not supported by fastconv's {op} yet")
    p = tuple(a for a, _ in pads)
    if pool and any(2 * pi > ki for pi, ki in zip(p, k)):
        raise _Refused(f"attribute {what}: padding {p} larger than half the window {tuple(k)} "
                       "is not supported by fastconv's pooling yet")
    return p


def _out_len(size, k, s, d, before, after):
    if size is None:
        return None
    return (size + before + after - d * (k - 1) - 1) // s + 1


class _Converter:
    def __init__(self, model, owner, max_nodes, max_elements):
        self.owner = owner
        self.max_elements = max_elements
        self._skip_target = None
        graph = model.graph
        self.graph = graph
        self.opset = None
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = int(imp.version)
        if self.opset is None:
            raise ValueError(f"{owner}: the model imports no opset of the default ONNX domain")
        if len(graph.node) > max_nodes:
            raise ValueError(f"{owner}: the graph has {len(graph.node)} nodes, more than "
                             f"max_nodes={max_nodes}")
        if len(graph.sparse_initializer):
            raise ValueError(f"{owner}: sparse initializers are not supported")
        self.consts = {}
        for t in graph.initializer:
            self.consts[t.name] = _tensor_array(t, f"{owner}: initializer", max_elements)
        # Constant nodes, and Transpose/Identity of constants (older torch exports
        # write Linear without bias as MatMul(x, Transpose(W))), are values, not
        # steps of the chain
        self.steps = []
        for idx, node in enumerate(graph.node):
            default = node.domain in ("", "ai.onnx")
            if node.op_type == "Constant" and default:
                self._constant(idx, node)
            elif (node.op_type in ("Transpose", "Identity") and default and len(node.output) == 1
                  and len(node.input) == 1 and node.input[0] in self.consts):
                self._fold_constant(idx, node)
            else:
                self.steps.append((idx, node))

    # -- errors ------------------------------------------------------------
    def refuse(self, idx, node, msg):
        return ValueError(f"{self.owner}: node {idx} {node.name!r} ({node.op_type}): {msg}")

    def _constant(self, idx, node):
        try:
            if len(node.output) != 1 or len(node.attribute) != 1:
                raise _Refused("a Constant needs exactly one output and one value attribute")
            a = node.attribute[0]
            if a.name == "value":
                value = _tensor_array(a.t, f"{self.owner}: node {idx} {node.name!r} (Constant)",
                                      self.max_elements)
            elif a.name in ("value_float", "value_int"):
                value = np.array(a.f if a.name == "value_float" else a.i,
                                 np.float32 if a.name == "value_float" else np.int64)
            elif a.name in ("value_floats", "value_ints"):
                value = np.array(list(a.floats) if a.name == "value_floats" else list(a.ints),
                                 np.float32 if a.name == "value_floats" else np.int64)
            else:
                raise _Refused(f"attribute {a.name!r} is not supported")
        except _Refused as exc:
            raise self.refuse(idx, node, str(exc)) from None
        self.consts[node.output[0]] = value

    def _fold_constant(self, idx, node):
        value = self.consts[node.input[0]]
        if node.op_type == "Transpose":
            try:
                perm = _attrs(node, ("perm",)).get("perm")
                if perm is not None and sorted(perm) != list(range(value.ndim)):
                    raise _Refused(f"attribute perm={perm} is not a permutation of "
                                   f"{value.ndim} axes")
            except _Refused as exc:
                raise self.refuse(idx, node, str(exc)) from None
            value = np.ascontiguousarray(np.transpose(value, perm))
        self.consts[node.output[0]] = value

    # -- graph shape -------------------------------------------------------
    def io(self):
        g = self.graph
        inputs = [v for v in g.input if v.name not in self.consts]
        if len(inputs) != 1:
            raise ValueError(
                f"{self.owner}: the graph needs exactly one data input (the others must be "
                f"initializers), got {len(inputs)}: {[v.name for v in inputs]}")
        if len(g.output) != 1:
            for idx, node in self.steps:  # name the node whose extra output is asked for
                for pos, t in enumerate(node.output):
                    if pos and t in {o.name for o in g.output}:
                        raise self.refuse(idx, node, f"its output {pos} {t!r} is a graph output; "
                                          "only one output (the node's first) is supported")
            raise ValueError(f"{self.owner}: the graph needs exactly one output, got "
                             f"{len(g.output)}: {[v.name for v in g.output]}")
        v = inputs[0]
        tt = v.type.tensor_type
        if not v.type.HasField("tensor_type"):
            raise ValueError(f"{self.owner}: graph input {v.name!r} is not a tensor")
        if tt.elem_type not in (_FLOAT, _DOUBLE):
            raise ValueError(
                f"{self.owner}: graph input {v.name!r} has element type "
                f"{_TYPE_NAMES.get(tt.elem_type, tt.elem_type)}; fastconv models take FLOAT "
                "(float32) or DOUBLE (float64)")
        if not tt.HasField("shape"):
            raise ValueError(f"{self.owner}: graph input {v.name!r} has no declared rank")
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        # the batch axis is always free; a fixed one (torch.onnx.export without
        # dynamic_axes) is remembered so that Reshape to (that size, -1) is a flatten
        self.declared_batch = shape[0] if shape else None
        shape[:1] = [None]
        if not 1 <= len(shape) <= _MAX_RANK:
            raise ValueError(f"{self.owner}: graph input {v.name!r} has rank {len(shape)}")
        return v.name, np.dtype(_NP[tt.elem_type]), shape, g.output[0].name

    def convert(self):
        name, self.dtype, shape, out_name = self.io()
        consumers = {}
        for idx, node in self.steps:
            for pos, t in enumerate(node.input):
                if t:
                    consumers.setdefault(t, []).append((idx, node, pos))
        for gi in self.graph.output:
            consumers.setdefault(gi.name, []).append((None, None, 0))
        self.producers = {t: (idx, node) for idx, node in self.steps for t in node.output if t}
        self.sym = {}
        layers, used = [], set()
        current = name
        while current != out_name:
            users = [u for u in consumers.get(current, []) if u[0] is not None]
            if not users:
                raise ValueError(f"{self.owner}: tensor {current!r} is used by no node and is "
                                 f"not the graph output {out_name!r}: the graph is not a chain")
            # Shape(x) feeding a Reshape's target (torch's x.view(x.size(0), -1)) is a
            # side branch of shape arithmetic, evaluated here, not a step of the chain
            for u in [u for u in users if u[1].op_type == "Shape" and u[1].domain in ("", "ai.onnx")]:
                if u[0] in used:
                    raise ValueError(f"{self.owner}: the graph has a cycle through node {u[0]} "
                                     f"{u[1].name!r} (Shape)")
                used.add(u[0])
                try:
                    self.sym[u[1].output[0]] = self._shape_of(u[1], shape)
                except _Refused as exc:
                    raise self.refuse(u[0], u[1], str(exc)) from None
                users.remove(u)
            if len(users) > 1:
                names = ", ".join(f"node {i} {n.name!r} ({n.op_type})" for i, n, _ in users)
                raise ValueError(f"{self.owner}: tensor {current!r} feeds {len(users)} nodes "
                                 f"({names}); only chains of single-input nodes are supported")
            idx, node, pos = users[0]
            if idx in used:
                raise ValueError(f"{self.owner}: the graph has a cycle through node {idx} "
                                 f"{node.name!r} ({node.op_type})")
            used.add(idx)
            if pos != 0:
                raise self.refuse(idx, node, f"the data tensor {current!r} arrives on input "
                                  f"{pos}; fastconv takes it on input 0")
            for extra in node.output[1:]:
                if extra and extra in consumers:
                    raise self.refuse(idx, node, f"its extra output {extra!r} is used; only the "
                                      "first output is supported")
            if node.domain not in ("", "ai.onnx"):
                raise self.refuse(idx, node, f"domain {node.domain!r} is not supported")
            handler = getattr(self, "op_" + node.op_type, None)
            if handler is None:
                raise self.refuse(idx, node, f"operator {node.op_type} is not supported; "
                                  f"supported: {', '.join(_SUPPORTED_OPS)}")
            for t in node.input[1:]:
                if t and t not in self.consts and (node.op_type != "Reshape"
                                                   or self._fold(t, used, 0) is None):
                    raise self.refuse(idx, node, f"input {t!r} is neither an initializer nor a "
                                      "Constant; fastconv loads weights as parameters")
            try:
                made, shape, skip = handler(node, shape, idx)
            except _Refused as exc:
                raise self.refuse(idx, node, str(exc)) from None
            except (ValueError, TypeError) as exc:  # a layer refusing the values it got
                raise self.refuse(idx, node, str(exc)) from None
            used.update(skip)
            if made is not None:
                layers.extend(made if isinstance(made, list) else [made])
            current = node.output[0] if not skip else self._skip_target
        unused = [(i, n) for i, n in self.steps if i not in used]
        if unused:
            i, n = unused[0]
            raise ValueError(f"{self.owner}: node {i} {n.name!r} ({n.op_type}) is not on the "
                             f"chain from the input to the output ({len(unused)} such nodes)")
        if not layers:
            raise ValueError(f"{self.owner}: the graph computes nothing (no layer between "
                             "its input and output)")
        return nn.Sequential(layers)

    # -- shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) ------
    # Values are lists of ints, "N" (the batch size) or None (unknown), with a
    # flag for scalars; only what torch.onnx writes for view(x.size(0), -1).
    _SHAPE_OPS = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice")

    def _shape_of(self, node, shape):
        a = _attrs(node, ("start", "end"))
        dims = ["N"] + list(shape[1:])
        return (dims[a.get("start", 0):a.get("end", len(dims))], False)

    def _sym_input(self, t, used, depth):
        if t in self.consts:
            v = np.asarray(self.consts[t])
            if v.ndim > 1 or v.dtype.kind not in "iu":
                return None
            return ([int(e) for e in v.reshape(-1)], v.ndim == 0)
        return self._fold(t, used, depth + 1)

    def _fold(self, t, used, depth):
        """The value of tensor ``t`` if it is shape arithmetic on Shape(x) and constants."""
        if t in self.sym:
            return self.sym[t]
        if depth > 32 or t not in self.producers:
            return None
        idx, node = self.producers[t]
        if node.op_type not in self._SHAPE_OPS or node.domain not in ("", "ai.onnx") or idx in used:
            return None
        ins = [self._sym_input(i, used, depth) for i in node.input if i]
        if any(v is None for v in ins):
            return None
        try:
            value = self._shape_op(node, ins)
        except (_Refused, IndexError, TypeError, ValueError):
            return None
        used.add(idx)
        self.sym[t] = value
        return value

    def _shape_op(self, node, ins):
        op = node.op_type
        (vals, scalar) = ins[0]
        if op == "Cast":
            return ins[0]
        if op == "Gather":
            a = _attrs(node, ("axis",))
            if a.get("axis", 0) != 0 or scalar:
                raise _Refused("axis")
            idx, iscalar = ins[1]
            picked = [vals[i] for i in idx]
            return (picked, iscalar)
        if op == "Unsqueeze":
            a = _attrs(node, ("axes",))
            axes = a.get("axes", ins[1][0] if len(ins) > 1 else None)
            if scalar and list(axes) in ([0], [-1]):
                return (vals, False)
            raise _Refused("axes")
        if op == "Squeeze":
            if not scalar and len(vals) == 1:
                return (vals, True)
            raise _Refused("squeeze")
        if op == "Concat":
            a = _attrs(node, ("axis",))
            if a.get("axis", 0) not in (0, -1) or any(sc for _, sc in ins):
                raise _Refused("axis")
            return ([v for vs, _ in ins for v in vs], False)
        if op == "Slice" and len(ins) >= 3 and not scalar:
            steps = ins[4][0] if len(ins) > 4 else [1]
            if len(ins[1][0]) != 1 or (len(ins) > 3 and ins[3][0] not in ([0], [-1])):
                raise _Refused("slice")
            return (vals[ins[1][0][0]:ins[2][0][0]:steps[0]], False)
        raise _Refused(op)

    def const(self, node, pos):
        """The constant on input ``pos`` of ``node``, None when absent."""
        if pos >= len(node.input) or not node.input[pos]:
            return None
        return self.consts[node.input[pos]]

    def fdata(self, arr):
        return np.ascontiguousarray(arr, dtype=self.dtype)

    # -- operators -----------------------------------------------------------
    def op_Identity(self, node, shape, idx):
        _attrs(node, ())
        return None, shape, ()

    def op_Relu(self, node, shape, idx):
        _attrs(node, ())
        return nn.ReLU(), shape, ()

    def op_Sigmoid(self, node, shape, idx):
        _attrs(node, ())
        return nn.Sigmoid(), shape, ()

    def op_Tanh(self, node, shape, idx):
        _attrs(node, ())
        return nn.Tanh(), shape, ()

    def op_LeakyRelu(self, node, shape, idx):
        a = _attrs(node, ("alpha",))
        return nn.LeakyReLU(a.get("alpha", 0.01)), shape, ()

    def op_Elu(self, node, shape, idx):
        a = _attrs(node, ("alpha",))
        return nn.ELU(a.get("alpha", 1.0)), shape, ()

    def op_Gelu(self, node, shape, idx):
        a = _attrs(node, ("approximate",))
        approx = a.get("approximate", "none")
        if approx not in ("none", "tanh"):
            raise _Refused(f"attribute approximate={approx!r} is not supported")
        return nn.GELU(approx), shape, ()

    def _softmax(self, node, shape, cls):
        a = _attrs(node, ("axis",))
        rank = len(shape)
        axis = a.get("axis", -1 if self.opset >= 13 else 1)
        if not -rank <= axis < rank:
            raise _Refused(f"attribute axis={axis} is out of range for a rank-{rank} input")
        axis %= rank
        if self.opset < 13 and axis != rank - 1:
            raise _Refused(f"attribute axis={axis} before opset 13 normalises over every axis "
                           "from it on, which fastconv does not express")
        if axis == 0:
            raise _Refused("attribute axis=0 normalises across the batch axis (samples would "
                           "depend on each other and on the batch size)")
        return cls(axis), shape, ()

    def op_Softmax(self, node, shape, idx):
        return self._softmax(node, shape, nn.Softmax)

    def op_LogSoftmax(self, node, shape, idx):
        return self._softmax(node, shape, nn.LogSoftmax)

    def op_Flatten(self, node, shape, idx):
        a = _attrs(node, ("axis",))
        rank = len(shape)
        axis = a.get("axis", 1)
        if not -rank <= axis <= rank:
            raise _Refused(f"attribute axis={axis} is out of range for a rank-{rank} input")
        if axis < 0:
            axis += rank
        if axis != 1:
            raise _Refused(f"attribute axis={a.get('axis', 1)} (axis {axis} of a rank-{rank} "
                           "input) is not supported: fastconv's Flatten keeps axis 0 only")
        return nn.Flatten(), [None, _prod(shape[1:])], ()

    def op_Reshape(self, node, shape, idx):
        a = _attrs(node, ("allowzero",))
        target = self.consts.get(node.input[1]) if len(node.input) > 1 else None
        if target is None and len(node.input) > 1 and node.input[1] in self.sym:
            vals, _ = self.sym[node.input[1]]
            if None in vals or "N" in vals[1:]:
                raise _Refused(f"target shape {vals} is not a flatten to (N, -1)")
            # the batch size taken from the input: the same as 0 (copy that dimension)
            target = [0 if v == "N" else v for v in vals]
        if target is None:
            raise _Refused("the target shape must be a constant")
        target = [int(v) for v in np.asarray(target).reshape(-1)]
        if a.get("allowzero", 0) and 0 in target:
            raise _Refused("attribute allowzero=1 with a 0 in the shape is not supported")
        feat = _prod(shape[1:])
        if len(target) == 2 and self.declared_batch and target[0] == self.declared_batch:
            target[0] = 0
        ok = (len(target) == 2 and target[0] in (0, -1)
              and (target[1] == -1 and target[0] == 0
                   or target[1] >= 1 and feat is not None and target[1] == feat))
        if len(target) == 2 and target[0] == 0 and target[1] == -1:
            ok = True
        if not ok:
            raise _Refused(f"target shape {target} on input shape {_show(shape)} is not a "
                           "flatten to (N, -1); only that reshape is supported")
        return nn.Flatten(), [None, feat], ()

    def op_Dropout(self, node, shape, idx):
        a = _attrs(node, ("ratio", "is_test", "seed"))
        ratio = a.get("ratio", 0.5)
        if self.opset >= 12:
            if "ratio" in a:
                raise _Refused("attribute ratio is an input from opset 12 on")
            r = self.const(node, 1)
            if r is not None:
                ratio = float(np.asarray(r).reshape(-1)[0]) if np.size(r) == 1 else None
                if ratio is None:
                    raise _Refused("input ratio must be a scalar")
            mode = self.const(node, 2)
            if mode is not None and bool(np.asarray(mode).reshape(-1)[0]):
                raise _Refused("input training_mode=True (random masks drawn by the runtime) is "
                               "not supported; fastconv drops out only inside fit")
        if not 0.0 <= ratio < 1.0:
            raise _Refused(f"ratio={ratio} must be in [0, 1)")
        return nn.Dropout(ratio), shape, ()

    def op_BatchNormalization(self, node, shape, idx):
        a = _attrs(node, ("epsilon", "momentum", "training_mode", "spatial", "is_test"))
        if a.get("training_mode", 0):
            raise _Refused("attribute training_mode=1 (batch statistics) is not supported; "
                           "fastconv uses batch statistics only inside fit")
        if a.get("spatial", 1) != 1:
            raise _Refused(f"attribute spatial={a['spatial']} (per-element statistics) is not "
                           "supported")
        rank = len(shape)
        if rank not in (2, 3, 4):
            raise _Refused(f"input rank {rank} is not supported (BatchNorm1d takes rank 2 or 3, "
                           "BatchNorm2d rank 4)")
        if len(node.input) != 5:
            raise _Refused(f"needs 5 inputs (X, scale, B, mean, var), got {len(node.input)}")
        scale, bias, mean, var = (self.const(node, i) for i in (1, 2, 3, 4))
        c = scale.size
        for what, v in (("scale", scale), ("B", bias), ("mean", mean), ("var", var)):
            if v.shape != (c,):
                raise _Refused(f"input {what} of shape {v.shape} should have shape ({c},)")
        if shape[1] is not None and shape[1] != c:
            raise _Refused(f"{c} channels in the statistics, {shape[1]} in the input")
        eps = a.get("epsilon", 1e-5)
        if not eps >= 0:
            raise _Refused(f"attribute epsilon={eps} must be >= 0")
        mom = 1.0 - a.get("momentum", 0.9)
        cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
        bn = cls(c, eps=eps, momentum=min(max(mom, 0.0), 1.0), dtype=self.dtype)
        bn.weight.data[...] = self.fdata(scale)
        bn.bias.data[...] = self.fdata(bias)
        bn.running_mean[...] = self.fdata(mean)
        bn.running_var[...] = self.fdata(var)
        return bn, shape, ()

    def op_Conv(self, node, shape, idx):
        a = _attrs(node, ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"))
        w = self.const(node, 1)
        if w is None:
            raise _Refused("needs a weight input W")
        rank = len(shape)
        if w.ndim != rank:
            raise _Refused(f"weight of rank {w.ndim} on an input of rank {rank}")
        _spatial("Conv", rank)
        k = tuple(int(v) for v in w.shape[2:])
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != k:
            raise _Refused(f"attribute kernel_shape={a['kernel_shape']} disagrees with the "
                           f"weight's shape {w.shape}")
        s = _pair_attr(a, "strides", 1, rank)
        d = _pair_attr(a, "dilations", 1, rank)
        group = a.get("group", 1)
        if group < 1 or w.shape[0] % group:
            raise _Refused(f"attribute group={group} does not divide {w.shape[0]} output channels")
        cin = w.shape[1] * group
        if shape[1] is not None and shape[1] != cin:
            raise _Refused(f"the weight expects {cin} input channels, the input has {shape[1]}")
        pads, what = _resolve_pads(a, k, s, d, shape)
        same = [(di * (ki - 1) // 2, di * (ki - 1) - di * (ki - 1) // 2) for ki, di in zip(k, d)]
        if s == (1, 1) and pads == same and any(b0 != b1 for b0, b1 in pads):
            padding = "same"  # fastconv's 'same': the odd row/column at the bottom/right
        else:
            padding = _symmetric(pads, what, "conv2d", k, False)
        b = self.const(node, 2)
        if b is not None and b.shape != (w.shape[0],):
            raise _Refused(f"bias of shape {b.shape} should have shape ({w.shape[0]},)")
        layer = nn.Conv2d(cin, int(w.shape[0]), k, stride=s, padding=padding, dilation=d,
                          groups=group, bias=b is not None, weight_init="zeros",
                          dtype=self.dtype)
        layer.weight.data[...] = self.fdata(w)
        if b is not None:
            layer.bias.data[...] = self.fdata(b)
        out = [None, int(w.shape[0])] + [
            _out_len(shape[2 + i], k[i], s[i], d[i], *pads[i]) for i in range(2)]
        return layer, out, ()

    def _pool(self, node, shape, cls, allowed):
        a = _attrs(node, allowed)
        rank = len(shape)
        _spatial(node.op_type, rank)
        if "kernel_shape" not in a:
            raise _Refused("attribute kernel_shape is required")
        k = _pair_attr(a, "kernel_shape", 1, rank)
        s = _pair_attr(a, "strides", 1, rank)
        d = _pair_attr(a, "dilations", 1, rank)
        if d != (1, 1):
            raise _Refused(f"attribute dilations={list(d)} is not supported by fastconv's "
                           "pooling yet")
        pads, what = _resolve_pads(a, k, s, d, shape)
        p = _symmetric(pads, what, node.op_type, k, True)
        if a.get("ceil_mode", 0):
            # exact when rounding up and down give the same size for the declared input
            for i in range(2):
                size = shape[2 + i]
                if size is None or (size + 2 * p[i] - k[i]) % s[i]:
                    raise _Refused(
                        "attribute ceil_mode=1 is not supported yet (only where it gives the "
                        f"floor size for the declared input; input {_show(shape)})")
        out = [None, shape[1]] + [_out_len(shape[2 + i], k[i], s[i], 1, p[i], p[i])
                                  for i in range(2)]
        if cls is nn.AvgPool2d:
            layer = nn.AvgPool2d(k, s, p, count_include_pad=bool(a.get("count_include_pad", 0)))
        else:
            layer = nn.MaxPool2d(k, s, p)
        return layer, out, ()

    def op_MaxPool(self, node, shape, idx):
        if self.dtype.kind != "f":  # pragma: no cover - io() allows float only
            raise _Refused("non-float input")
        return self._pool(node, shape, nn.MaxPool2d, ("kernel_shape", "strides", "pads",
                                                      "dilations", "auto_pad", "ceil_mode",
                                                      "storage_order"))

    def op_AveragePool(self, node, shape, idx):
        return self._pool(node, shape, nn.AvgPool2d, ("kernel_shape", "strides", "pads",
                                                      "dilations", "auto_pad", "ceil_mode",
                                                      "count_include_pad"))

    def _global(self, node, shape, cls):
        _attrs(node, ())
        _spatial(node.op_type, len(shape))
        return cls(keepdims=True), [None, shape[1], 1, 1], ()

    def op_GlobalAveragePool(self, node, shape, idx):
        return self._global(node, shape, nn.GlobalAvgPool2d)

    def op_GlobalMaxPool(self, node, shape, idx):
        return self._global(node, shape, nn.GlobalMaxPool2d)

    def _linear(self, weight, bias, shape):
        """Linear layer from weight (out, in) and bias (out,) or None."""
        out_f, in_f = weight.shape
        if shape[1] is not None and shape[1] != in_f:
            raise _Refused(f"the weight expects {in_f} input features, the input has {shape[1]}")
        layer = nn.Linear(in_f, out_f, bias=bias is not None, weight_init="zeros",
                          dtype=self.dtype)
        layer.weight.data[...] = self.fdata(weight)
        if bias is not None:
            layer.bias.data[...] = self.fdata(bias)
        return layer, [None, out_f]

    def _bias_vector(self, c, n, what):
        """A bias that broadcasts to (M, n) the same for every row, as a (n,) vector."""
        c = np.asarray(c)
        if c.size == 1 and c.ndim <= 2:
            return np.full(n, c.reshape(-1)[0])
        if c.shape in ((n,), (1, n)):
            return c.reshape(n)
        raise _Refused(f"{what} of shape {c.shape} differs between batch rows (or does not "
                       f"broadcast to (N, {n})); only a per-feature bias is supported")

    def op_Gemm(self, node, shape, idx):
        # broadcast (opset < 7): C broadcasts; only a per-feature C is taken either way
        a = _attrs(node, ("alpha", "beta", "transA", "transB", "broadcast"))
        if len(shape) != 2:
            raise _Refused(f"input A of rank {len(shape)} (Gemm takes rank 2)")
        if a.get("transA", 0):
            raise _Refused("attribute transA=1 (the batch axis transposed) is not supported")
        b = self.const(node, 1)
        if b is None or b.ndim != 2:
            raise _Refused("input B must be a 2-D constant")
        weight = b if a.get("transB", 0) else b.T
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        if alpha != 1.0:  # folded into the weight: y = x @ (alpha*W).T
            weight = weight.astype(np.float64) * alpha
        c = self.const(node, 2)
        bias = None
        if c is not None:
            bias = self._bias_vector(c, weight.shape[0], "input C")
            if beta != 1.0:
                bias = bias.astype(np.float64) * beta
        layer, out = self._linear(weight, bias, shape)
        return layer, out, ()

    def op_MatMul(self, node, shape, idx):
        _attrs(node, ())
        if len(shape) != 2:
            raise _Refused(f"input A of rank {len(shape)}: batched MatMul is not supported "
                           "(rank 2 only)")
        w = self.const(node, 1)
        if w is None or w.ndim != 2:
            raise _Refused("input B must be a 2-D constant")
        bias, skip = None, ()
        # MatMul then Add of a per-feature constant, as torch writes Linear: one layer
        users = [(i, n) for i, n in self.steps if node.output[0] in n.input]
        if len(users) == 1 and users[0][1].op_type == "Add" and len(users[0][1].input) == 2:
            i, add = users[0]
            other = [t for t in add.input if t != node.output[0]]
            if len(other) == 1 and other[0] in self.consts and not add.attribute:
                try:
                    bias = self._bias_vector(self.consts[other[0]], w.shape[1], "the Add's constant")
                    skip = (i,)
                    self._skip_target = add.output[0]
                except _Refused:
                    bias = None
        layer, out = self._linear(w.T, bias, shape)
        return layer, out, skip


_SUPPORTED_OPS = sorted(n[3:] for n in dir(_Converter) if n.startswith("op_")) + ["Constant"]


def _prod(dims):
    if any(d is None for d in dims):
        return None
    return int(math.prod(dims))


def _show(shape):
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"


def _fold_batchnorm(model):
    """Conv2d followed by BatchNorm2d -> one Conv2d (inference-equivalent)."""
    layers, i = [], 0
    src = model.layers
    while i < len(src):
        layer = src[i]
        nxt = src[i + 1] if i + 1 < len(src) else None
        if isinstance(layer, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            scale = nxt.weight.data.astype(np.float64) / np.sqrt(
                nxt.running_var.astype(np.float64) + nxt.eps)
            w = layer.weight.data.astype(np.float64) * scale[:, None, None, None]
            b = layer.bias.data.astype(np.float64) if layer.bias is not None else 0.0
            b = (b - nxt.running_mean) * scale + nxt.bias.data
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             layer.stride, layer.padding, layer.dilation, layer.groups,
                             bias=True, weight_init="zeros", dtype=layer.dtype)
            conv.weight.data[...] = w
            conv.bias.data[...] = b
            layers.append(conv)
            i += 2
        else:
            layers.append(layer)
            i += 1
    return nn.Sequential(layers)


def from_onnx(model, *, fold_batchnorm=False, max_nodes=MAX_NODES, max_elements=MAX_ELEMENTS):
    """Convert an in-memory ONNX model into a ``fastconv.nn.Sequential``.

    Parameters
    ----------
    model : onnx.ModelProto
        Already parsed (e.g. by ``onnx.load``); its tensors are checked as in
        :func:`load`, which reads a file and calls this.
    fold_batchnorm, max_nodes, max_elements
        As for :func:`load`.

    Returns
    -------
    fastconv.nn.Sequential

    Raises
    ------
    TypeError
        ``model`` is not an ``onnx.ModelProto``.
    ValueError
        As for :func:`load`.
    """
    onnx = _onnx()
    owner = "fastconv.onnx.load"
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"{owner}: expected an onnx.ModelProto, got {type(model).__name__}")
    result = _Converter(model, owner, max_nodes, max_elements).convert()
    if fold_batchnorm:
        result = _fold_batchnorm(result)
    return result


def load(path, *, fold_batchnorm=False, max_bytes=MAX_FILE_BYTES, max_nodes=MAX_NODES,
         max_elements=MAX_ELEMENTS):
    """Read an ONNX file into a ``fastconv.nn.Sequential``.

    Accepted graphs: one data input (FLOAT or DOUBLE, known rank; the batch
    axis may be symbolic), one output, and the nodes between them form a
    single chain: each node takes the previous node's output on its input 0,
    and every other input is an initializer, the output of a ``Constant``, or
    a ``Transpose``/``Identity`` of one. ``MatMul`` followed by ``Add`` of a
    per-feature constant counts as one step (a ``Linear``), and so does
    ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, torch's
    ``x.view(x.size(0), -1)`` (a ``Flatten``). Other branches (residual
    connections, concatenations, several inputs or outputs) are refused.

    Operators (opset 7 on; 2-D spatial inputs (N, C, H, W) only):

    ==============================  ===========================================
    Conv                            -> Conv2d; symmetric pads, or 'same' at
                                    stride 1 (odd extra at bottom/right, i.e.
                                    SAME_UPPER); auto_pad SAME with stride > 1
                                    resolved for the declared H, W when even
    MaxPool, AveragePool            -> MaxPool2d, AvgPool2d; symmetric pads at
                                    most half the window; no dilation;
                                    ceil_mode=1 only where it changes nothing
    GlobalAveragePool/MaxPool       -> GlobalAvgPool2d/GlobalMaxPool2d(keepdims)
    Gemm (transA=0)                 -> Linear; alpha, beta, transB folded in;
                                    C a scalar or per-feature vector
    MatMul (+ Add)                  -> Linear (rank-2 input)
    Relu, Sigmoid, Tanh, LeakyRelu, -> the layer of the same name
    Elu, Gelu
    Softmax, LogSoftmax             -> Softmax, LogSoftmax (axis != 0)
    Flatten (axis 1),               -> Flatten
    Reshape to (N, -1) / (0, -1)
    Dropout (inference)             -> Dropout(p=ratio) (identity in predict)
    BatchNormalization (inference)  -> BatchNorm2d / BatchNorm1d
    Identity                        -> nothing
    ==============================  ===========================================

    Parameters
    ----------
    path : str or os.PathLike
    fold_batchnorm : bool, default False
        Fold each ``BatchNormalization`` that follows a ``Conv`` into the
        convolution's weight and bias (same outputs in inference, one layer
        less; the model then trains without batch norm).
    max_bytes : int, default 1 GiB
        Larger files are refused before they are read.
    max_nodes : int, default 10,000
    max_elements : int, default 2**28
        Per tensor, checked against the bytes present before any allocation.

    Returns
    -------
    fastconv.nn.Sequential
        Uncompiled, in training mode, dtype of the graph input. Initializers
        become parameters (weights and biases) and batch-norm buffers.
        ``model.eval()`` then ``model(x)`` gives the graph's output;
        ``predict`` gives the softmax of it unless the graph ends in a
        ``Softmax`` (``predict``'s usual rule).

    Raises
    ------
    ValueError
        Unsupported operator, attribute value or graph shape (the message
        names the node, its operator and the attribute); a corrupt,
        truncated or oversized file; external data.
    """
    onnx = _onnx()
    owner = "fastconv.onnx.load"
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
    try:
        return from_onnx(proto, fold_batchnorm=fold_batchnorm, max_nodes=max_nodes,
                         max_elements=max_elements)
    except ValueError as exc:
        raise ValueError(f"{exc} [file {path!r}]") from None
