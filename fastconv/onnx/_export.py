"""``fastconv.nn.Sequential`` -> ONNX graph: one exporter per layer class, in one table."""

import math

import numpy as np

from .. import nn
from .._fileio import atomic_write
from .._validate import check_int
from .._version import __version__
from ._untrusted import _onnx

#: Opset written by :func:`export` when none is given: supported by every ONNX
#: Runtime since 1.14 (2023) and by torch.onnx's default exporter.
DEFAULT_OPSET = 17
#: Oldest opset :func:`export` writes: Softmax/LogSoftmax take a single axis
#: from 13 on (before, they flattened every axis after it).
MIN_EXPORT_OPSET = 13


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


# -- one exporter per layer class: exporter(g, p, layer, in_shape, out_shape, opset) ----
# ``p`` prefixes the layer's node and initialiser names; a ValueError names
# what the layer's settings cannot be written as (export adds the layer).
def _weights(g, p, layer):
    inputs = [g.const(f"{p}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.const(f"{p}.bias", layer.bias.data))
    return inputs


def _per_axis(value, nsp):
    """A layer's int-or-tuple setting (kernel_size, stride, dilation) as ``nsp`` ints."""
    if isinstance(value, (int, np.integer)):
        return [int(value)] * nsp
    value = [int(v) for v in value]
    return value * nsp if len(value) == 1 else value


def _sides(padding, nsp):
    """A layer's numeric ``padding`` as ``nsp`` (before, after) pairs.

    Forms: ``p``; 2-D ``(ph, pw)`` or ``((top, bottom), (left, right))``;
    1-D ``(left, right)`` (or ``(p,)``).
    """
    if isinstance(padding, (int, np.integer)):
        return [(int(padding),) * 2] * nsp
    items = list(padding)
    if nsp == 1:
        if len(items) == 1 and not isinstance(items[0], (int, np.integer)):
            items = list(items[0])  # ((left, right),)
        return [(int(items[0]), int(items[-1]))]
    return [(int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))
            for v in items]


def _onnx_pads(sides):
    """Per-axis (before, after) pairs -> ONNX ``pads``: every start, then every end."""
    return [b for b, _ in sides] + [a for _, a in sides]


def _conv(g, p, layer, in_shape, out_shape, opset):
    nsp = len(in_shape) - 2
    k, s = _per_axis(layer.kernel_size, nsp), _per_axis(layer.stride, nsp)
    d = _per_axis(layer.dilation, nsp)
    if layer.padding == "same":
        # TensorFlow's SAME_UPPER for the declared size (at stride 1 any size):
        # explicit pads, which every runtime reads the same way
        sides = [_same_sides(n, ki, si, di) for n, ki, si, di in zip(in_shape[2:], k, s, d)]
    elif layer.padding == "valid":
        sides = [(0, 0)] * nsp
    else:
        sides = _sides(layer.padding, nsp)
    g.node("Conv", p, _weights(g, p, layer), kernel_shape=k, strides=s,
           pads=_onnx_pads(sides), dilations=d, group=layer.groups)


def _same_sides(n, k, s, d):
    """(before, after) of 'same': output ceil(n / s), the odd one at the end."""
    total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
    return (total // 2, total - total // 2)


def _pool(g, p, layer, in_shape, out_shape, opset):
    nsp = len(in_shape) - 2
    k, s = _per_axis(layer.kernel_size, nsp), _per_axis(layer.stride, nsp)
    # pooling layers before branch s4-poolfeat (#13) have no ceil_mode
    d = _per_axis(getattr(layer, "dilation", 1), nsp)
    sides = _sides(layer.padding, nsp)
    attrs = dict(kernel_shape=k, strides=s, pads=_onnx_pads(sides),
                 ceil_mode=_ceil_mode(getattr(layer, "ceil_mode", False), in_shape[2:], k, s, d,
                                      sides))
    if isinstance(layer, _AVG_POOLS):
        if any(di != 1 for di in d):
            # AveragePool has dilations from opset 19 on
            if opset < 19:
                raise ValueError(f"dilation={layer.dilation} needs opset 19 or later "
                                 f"(AveragePool's dilations), got opset={opset}")
            attrs["dilations"] = d
        g.node("AveragePool", p, count_include_pad=int(layer.count_include_pad), **attrs)
    else:
        g.node("MaxPool", p, dilations=d, **attrs)


def _ceil_mode(ceil, sizes, k, s, d, sides):
    """ONNX ``ceil_mode`` for the declared input: 1 only where rounding up keeps a window.

    Where rounding up is undone (the extra window would start in the trailing
    padding) the size is floor mode's, and ONNX Runtime agrees, but ONNX's own
    shape inference (onnx 1.23) does not undo it and the checker refuses the
    graph; floor mode says the same thing there without the disagreement.
    """
    if not ceil:
        return 0
    gains, undone = [], []
    for axis, (n, ki, si, di, (before, after)) in enumerate(zip(sizes, k, s, d, sides)):
        span = n + before + after - di * (ki - 1) - 1
        if span % si:
            # the window ceil mode adds starts at (span // si + 1) * si
            (undone if (span // si + 1) * si >= n + before else gains).append(axis)
    if gains and undone:
        raise ValueError(
            f"ceil_mode=True keeps an extra window on spatial axis {gains[0]} and drops the "
            f"one that would start in the trailing padding on axis {undone[0]} of input "
            f"{tuple(sizes)}; ONNX's shape inference sizes such a graph differently from "
            "ONNX Runtime, so it is not written")
    return int(bool(gains))


def _global_max(g, p, layer, in_shape, out_shape, opset):
    g.node("GlobalMaxPool", p)
    if len(out_shape) == 2:
        g.node("Flatten", p, axis=1)


def _adaptive_avg(g, p, layer, in_shape, out_shape, opset):
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


def _linear(g, p, layer, in_shape, out_shape, opset):
    g.node("Gemm", p, _weights(g, p, layer), transB=1)


def _flatten(g, p, layer, in_shape, out_shape, opset):
    g.node("Flatten", p, axis=1)


def _op(op_type):
    """Exporter of a layer that is one attribute-free ONNX operator."""
    def export(g, p, layer, in_shape, out_shape, opset):
        g.node(op_type, p)
    return export


def _leaky_relu(g, p, layer, in_shape, out_shape, opset):
    g.node("LeakyRelu", p, alpha=float(layer.negative_slope))


def _elu(g, p, layer, in_shape, out_shape, opset):
    g.node("Elu", p, alpha=float(layer.alpha))


def _gelu(g, p, layer, in_shape, out_shape, opset):
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


def _silu(g, p, layer, in_shape, out_shape, opset):
    x = g.current
    g.node("Sigmoid", p)
    g.current = g.binary("Mul", x, g.current, p)


def _softmax(g, p, layer, in_shape, out_shape, opset):
    axis = layer.axis % len(in_shape)
    if axis == 0:
        raise ValueError(f"{type(layer).__name__}(axis={layer.axis}) mixes the batch axis")
    g.node("Softmax" if isinstance(layer, nn.Softmax) else "LogSoftmax", p, axis=axis)


def _dropout(g, p, layer, in_shape, out_shape, opset):
    # an identity in inference; kept so that a re-import fine-tunes with it
    g.node("Dropout", p, [g.const(f"{p}.ratio", layer.p)])


def _batchnorm(g, p, layer, in_shape, out_shape, opset):
    c = layer.num_features
    scale = layer.weight.data if layer.affine else np.ones(c)
    bias = layer.bias.data if layer.affine else np.zeros(c)
    mom = 0.1 if layer.momentum is None else layer.momentum
    g.node("BatchNormalization", p,
           [g.const(f"{p}.weight", scale), g.const(f"{p}.bias", bias),
            g.const(f"{p}.running_mean", layer.running_mean),
            g.const(f"{p}.running_var", layer.running_var)],
           epsilon=float(layer.eps), momentum=1.0 - mom)


_AVG_POOLS = tuple(c for c in (nn.AvgPool2d, getattr(nn, "AvgPool1d", None)) if c)


#: Layer class -> exporter. Looked up by exact class: a user subclass may
#: compute something else, so it is refused rather than exported as its base.
_EXPORTERS = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.MaxPool2d: _pool,
    nn.AvgPool2d: _pool,
    nn.GlobalAvgPool2d: _adaptive_avg,
    nn.GlobalMaxPool2d: _global_max,
    nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.Linear: _linear,
    nn.Flatten: _flatten,
    nn.ReLU: _op("Relu"),
    nn.Sigmoid: _op("Sigmoid"),
    nn.Tanh: _op("Tanh"),
    nn.LeakyReLU: _leaky_relu,
    nn.ELU: _elu,
    nn.GELU: _gelu,
    nn.SiLU: _silu,
    nn.Softmax: _softmax,
    nn.LogSoftmax: _softmax,
    nn.Dropout: _dropout,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
}
# The 1-D pooling layers come with branch s4-poolfeat (#13): registered when
# present, so this module imports on either side of that merge.
_EXPORTERS.update({c: _pool for c in (getattr(nn, "MaxPool1d", None),
                                      getattr(nn, "AvgPool1d", None)) if c is not None})
_EXPORTABLE = {c.__name__: c for c in _EXPORTERS}


def _check_export_args(owner, onnx, model, input_shape, opset):
    """Validated (layers, input_shape, opset) of an :func:`export` call."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"{owner}: model must be a fastconv.nn.Sequential, "
                        f"got {type(model).__name__}")
    opset = check_int(owner, "opset", opset)
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
    for where, layer in layers:
        if type(layer) not in _EXPORTERS:
            raise ValueError(f"{owner}: layer {where} ({type(layer).__name__}) has no ONNX "
                             f"export; supported: {', '.join(sorted(_EXPORTABLE))}")
        # the graph written has one output with a dynamic batch axis, one row per sample
        if getattr(layer, "_n_outputs", 1) > 1:
            raise ValueError(f"{owner}: layer {where} ({type(layer).__name__}) returns "
                             f"{layer._n_outputs} arrays ({_config_said(layer)}); export writes "
                             "a graph with one output")
        if getattr(layer, "_whole_batch", False):
            raise ValueError(f"{owner}: layer {where} ({type(layer).__name__}, "
                             f"{_config_said(layer)}) mixes the samples along the batch axis; export "
                             "writes graphs whose output rows are the samples")
    return layers, input_shape, opset


def _config_said(layer):
    """The layer's non-default settings, for a message."""
    return ", ".join(f"{k}={v!r}" for k, v in layer.get_config().items())
def export(model, path, input_shape, opset=DEFAULT_OPSET):
    """Write a ``Sequential`` model as an ONNX file.

    Parameters
    ----------
    model : fastconv.nn.Sequential
        Layers among ``Conv2d``, ``Conv1d``, ``MaxPool2d``, ``MaxPool1d``,
        ``AvgPool2d``, ``AvgPool1d`` (per-side padding, 'same' at any stride,
        dilation, ``ceil_mode``, ``count_include_pad``),
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
    layers, input_shape, opset = _check_export_args(owner, onnx, model, input_shape, opset)
    dtype = model.dtype
    try:
        shapes = _layer_shapes(model, layers, input_shape, dtype)
    except ValueError as exc:
        raise ValueError(f"{owner}: the model does not run on input_shape {input_shape}: "
                         f"{exc}") from exc
    g = _GraphBuilder(onnx, dtype)
    for i, (where, layer) in enumerate(layers):
        try:
            _EXPORTERS[type(layer)](g, f"l{where}", layer, shapes[i], shapes[i + 1], opset)
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
        graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="fastconv", producer_version=__version__)
    # the IR version this opset was released with, so older runtimes read it
    proto.ir_version = min(proto.ir_version, _ir_for_opset(onnx, opset))
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return proto


def _ir_for_opset(onnx, opset):
    try:
        return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    except Exception:  # an opset this onnx does not know: keep its own IR version
        return onnx.IR_VERSION
