"""ONNX graph -> ``fastconv.nn.Sequential``: walking the chain, shape arithmetic, folding.

The walker (:class:`_Converter`) follows the data tensor from the graph input
to the graph output, one node at a time, and asks ``_ops.OPS`` for the layer
of each node. Constants (initializers, ``Constant`` nodes, and the nodes of
``_CONST_OPS`` on them) are values, not steps; torch's ``x.view(x.size(0), -1)`` (Shape ->
Gather -> Unsqueeze -> Concat -> Reshape) is evaluated here as shape
arithmetic. Anything else that branches is refused with the node named.
"""

import math

import numpy as np

from .. import nn
from .._validate import check_int
from ._ops import _SUPPORTED_OPS, OPS, _attrs, _Refused
from ._untrusted import (
    _DOUBLE,
    _FLOAT,
    _MAX_RANK,
    _NP,
    _TYPE_NAMES,
    MAX_ELEMENTS,
    MAX_FILE_BYTES,
    MAX_NODES,
    _onnx,
    _read_model,
    _tensor_array,
)

_DEFAULT_DOMAINS = ("", "ai.onnx")

#: Integer graph inputs: every value is exact in float32, and the operators below
#: only pick, zero or move values, so the model casts the input to float32, runs
#: them, and casts the result back (ONNX's MaxPool on uint8 images)
_INT_INPUTS = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16"}
_INT_OPS = ("MaxPool", "GlobalMaxPool", "Relu", "Flatten", "Reshape", "Identity")


class _Converter:
    def __init__(self, model, owner, max_nodes, max_elements):
        self.owner = owner
        self.max_elements = max_elements
        # set by the MatMul builder when it absorbs the Add after it
        self.skip_target = None
        # per-axis (before, after) zeros of a Pad node, for the Conv/AveragePool after it
        self.pending_pad = None
        graph = model.graph
        self.graph = graph
        self.opset = None
        for imp in model.opset_import:
            if imp.domain in _DEFAULT_DOMAINS:
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
            default = node.domain in _DEFAULT_DOMAINS
            if node.op_type == "Constant" and default:
                self._constant(idx, node)
            elif (node.op_type in _CONST_OPS and default and len(node.output) == 1
                  and node.input and all(t in self.consts for t in node.input if t)):
                self._fold_constant(idx, node)
            else:
                self.steps.append((idx, node))

    # -- errors ------------------------------------------------------------
    def refuse(self, idx, node, msg):
        return ValueError(f"{self.owner}: node {idx} {node.name!r} ({node.op_type}): {msg}")

    # -- constants -----------------------------------------------------------
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
        """Evaluate a node whose inputs are all constants (weights, pads) once, at load."""
        try:
            value = _const_op(node, [self.consts[t] if t else None for t in node.input],
                              self.max_elements)
        except _Refused as exc:
            raise self.refuse(idx, node, str(exc)) from None
        except (ValueError, IndexError, TypeError) as exc:  # NumPy refusing the values
            raise self.refuse(idx, node, f"cannot be evaluated on its constant inputs: {exc}") \
                from None
        self.consts[node.output[0]] = value

    def const(self, node, pos):
        """The constant on input ``pos`` of ``node``, None when absent."""
        if pos >= len(node.input) or not node.input[pos]:
            return None
        return self.consts[node.input[pos]]

    def fdata(self, arr):
        return np.ascontiguousarray(arr, dtype=self.dtype)

    # -- graph shape -------------------------------------------------------
    def io(self):
        """Name, dtype and shape of the one data input, and the one output's name."""
        g = self.graph
        inputs = [v for v in g.input if v.name not in self.consts]
        if len(inputs) != 1:
            raise ValueError(
                f"{self.owner}: the graph needs exactly one data input (the others must be "
                f"initializers), got {len(inputs)}: {[v.name for v in inputs]}")
        if not g.output:
            raise ValueError(f"{self.owner}: the graph has no output")
        v = inputs[0]
        tt = v.type.tensor_type
        if not v.type.HasField("tensor_type"):
            raise ValueError(f"{self.owner}: graph input {v.name!r} is not a tensor")
        self.int_input = _INT_INPUTS.get(tt.elem_type)
        if tt.elem_type not in (_FLOAT, _DOUBLE) and self.int_input is None:
            raise ValueError(
                f"{self.owner}: graph input {v.name!r} has element type "
                f"{_TYPE_NAMES.get(tt.elem_type, tt.elem_type)}; fastconv models take FLOAT "
                "(float32) or DOUBLE (float64), or UINT8, INT8, UINT16 or INT16 through "
                f"{', '.join(_INT_OPS)} only")
        if not tt.HasField("shape"):
            raise ValueError(f"{self.owner}: graph input {v.name!r} has no declared rank")
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        # the batch axis is always free; a fixed one (torch.onnx.export without
        # dynamic_axes) is remembered so that Reshape to (that size, -1) is a flatten
        self.declared_batch = shape[0] if shape else None
        shape[:1] = [None]
        if not 1 <= len(shape) <= _MAX_RANK:
            raise ValueError(f"{self.owner}: graph input {v.name!r} has rank {len(shape)}")
        dtype = np.dtype(np.float32) if self.int_input else np.dtype(_NP[tt.elem_type])
        return v.name, dtype, shape, g.output[0].name

    # -- the chain -------------------------------------------------------------
    def convert(self):
        """The ``Sequential`` of the chain from the graph input to its output."""
        name, self.dtype, shape, self.out_name = self.io()
        self.consumers = {}
        for idx, node in self.steps:
            for pos, t in enumerate(node.input):
                if t:
                    self.consumers.setdefault(t, []).append((idx, node, pos))
        for gi in self.graph.output:
            self.consumers.setdefault(gi.name, []).append((None, None, 0))
        self.producers = {t: (idx, node) for idx, node in self.steps for t in node.output if t}
        self.out_names = [o.name for o in self.graph.output]
        self.sym = {}
        self.used = set()
        layers = [nn.Cast("float32")] if self.int_input else []
        current = name
        while current != self.out_name:
            idx, node = self._next_node(current, shape)
            self._check_node(idx, node)
            # the node that writes the graph's first output also writes the others
            self.n_outputs = self._outputs_of(idx, node)
            if self.int_input and node.op_type not in _INT_OPS:
                raise self.refuse(idx, node, f"on {self.int_input.upper()} input: integer "
                                  f"graph inputs run through {', '.join(_INT_OPS)} only")
            try:
                made, shape, skip = OPS[node.op_type](self, node, shape)
            except (ValueError, TypeError) as exc:  # _Refused, or a layer refusing its values
                raise self.refuse(idx, node, str(exc)) from None
            self.used.update(skip)
            if made is not None:
                made = made if isinstance(made, list) else [made]
                got = getattr(made[-1], "_n_outputs", 1)
                if self.n_outputs > 1 and got != self.n_outputs:
                    raise self.refuse(idx, node, f"the graph returns {self.n_outputs} of its "
                                      f"outputs {self.out_names}; fastconv computes "
                                      f"{'only the first' if got == 1 else got} here")
                layers.extend(made)
            current = node.output[0] if not skip else self.skip_target
        if self.int_input:
            # back to the graph's element type (the values are integers of it already)
            layers.append(nn.Cast(self.int_input))
        unused = [(i, n) for i, n in self.steps if i not in self.used]
        if unused:
            i, n = unused[0]
            raise ValueError(f"{self.owner}: node {i} {n.name!r} ({n.op_type}) is not on the "
                             f"chain from the input to the output ({len(unused)} such nodes)")
        if not layers:
            raise ValueError(f"{self.owner}: the graph computes nothing (no layer between "
                             "its input and output)")
        return nn.Sequential(layers)

    def _next_node(self, current, shape):
        """The one node that takes ``current`` on its input 0 (Shape side branches evaluated)."""
        users = [u for u in self.consumers.get(current, []) if u[0] is not None]
        if not users:
            raise ValueError(f"{self.owner}: tensor {current!r} is used by no node and is "
                             f"not the graph output {self.out_name!r}: the graph is not a chain")
        # Shape(x) feeding a Reshape's target (torch's x.view(x.size(0), -1)) is a
        # side branch of shape arithmetic, evaluated here, not a step of the chain
        for u in [u for u in users if u[1].op_type == "Shape" and u[1].domain in _DEFAULT_DOMAINS]:
            if u[0] in self.used:
                raise ValueError(f"{self.owner}: the graph has a cycle through node {u[0]} "
                                 f"{u[1].name!r} (Shape)")
            self.used.add(u[0])
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
        if idx in self.used:
            raise ValueError(f"{self.owner}: the graph has a cycle through node {idx} "
                             f"{node.name!r} ({node.op_type})")
        self.used.add(idx)
        if pos != 0:
            raise self.refuse(idx, node, f"the data tensor {current!r} arrives on input "
                              f"{pos}; fastconv takes it on input 0")
        return idx, node

    def _outputs_of(self, idx, node):
        """How many outputs of ``node`` the graph returns: 1, or, for the node that
        writes the graph's first output, the graph's outputs, which must be that
        node's first outputs in order (the model then returns a tuple)."""
        if node.output[0] != self.out_name or len(self.out_names) == 1:
            return 1
        if list(node.output[:len(self.out_names)]) != self.out_names:
            raise self.refuse(idx, node, f"the graph outputs {self.out_names} are not this "
                              f"node's outputs {list(node.output)} in order; fastconv returns "
                              "the first outputs of the last node, in their order")
        if self.int_input:
            raise self.refuse(idx, node, f"several graph outputs on {self.int_input.upper()} "
                              "input are not supported")
        return len(self.out_names)

    def _check_node(self, idx, node):
        """Refuse a node fastconv cannot run as one step of the chain."""
        last = node.output[0] == self.out_name
        for pos, extra in enumerate(node.output[1:], 1):
            if not extra or extra not in self.consumers:
                continue
            if extra in self.out_names and not any(i is not None for i, _, _ in
                                                    self.consumers[extra]):
                if not last:
                    raise self.refuse(idx, node, f"its output {pos} {extra!r} is a graph output;"
                                      " fastconv returns the extra outputs of the last node only")
                continue
            raise self.refuse(idx, node, f"its extra output {extra!r} is used; only the "
                              "first output is supported")
        if node.domain not in _DEFAULT_DOMAINS:
            raise self.refuse(idx, node, f"domain {node.domain!r} is not supported")
        if node.op_type not in OPS:
            raise self.refuse(idx, node, f"operator {node.op_type} is not supported; "
                              f"supported: {', '.join(_SUPPORTED_OPS)}")
        for t in node.input[1:]:
            if t and t not in self.consts and (node.op_type != "Reshape"
                                               or self._fold(t, 0) is None):
                raise self.refuse(idx, node, f"input {t!r} is neither an initializer nor a "
                                  "Constant; fastconv loads weights as parameters")

    # -- shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) ------
    # Values are lists of ints, "N" (the batch size) or None (unknown), with a
    # flag for scalars; only what torch.onnx writes for view(x.size(0), -1).
    _SHAPE_OPS = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice")

    def _shape_of(self, node, shape):
        a = _attrs(node, ("start", "end"))
        dims = ["N"] + list(shape[1:])
        return (dims[a.get("start", 0):a.get("end", len(dims))], False)

    def _sym_input(self, t, depth):
        if t in self.consts:
            v = np.asarray(self.consts[t])
            if v.ndim > 1 or v.dtype.kind not in "iu":
                return None
            return ([int(e) for e in v.reshape(-1)], v.ndim == 0)
        return self._fold(t, depth + 1)

    def _fold(self, t, depth):
        """The value of tensor ``t`` if it is shape arithmetic on Shape(x) and constants."""
        if t in self.sym:
            return self.sym[t]
        if depth > 32 or t not in self.producers:
            return None
        idx, node = self.producers[t]
        if (node.op_type not in self._SHAPE_OPS or node.domain not in _DEFAULT_DOMAINS
                or idx in self.used):
            return None
        ins = [self._sym_input(i, depth) for i in node.input if i]
        if any(v is None for v in ins):
            return None
        try:
            value = _shape_op(node, ins)
        except (_Refused, IndexError, TypeError, ValueError):
            return None
        self.used.add(idx)
        self.sym[t] = value
        return value


#: Operators evaluated at load when every input is a constant: Transpose/Identity of
#: a weight (older torch.onnx's Linear), and the chain torch.onnx writes for the
#: pads of a ``ZeroPad2d`` (ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast).
_CONST_OPS = ("Transpose", "Identity", "Cast", "ConstantOfShape", "Concat", "Reshape", "Slice")


def _const_op(node, ins, max_elements):
    """``node`` evaluated with NumPy on constant inputs ``ins`` (None where omitted)."""
    op, x = node.op_type, ins[0]
    if op == "Identity":
        return x
    if op == "Transpose":
        perm = _attrs(node, ("perm",)).get("perm")
        if perm is not None and sorted(perm) != list(range(x.ndim)):
            raise _Refused(f"attribute perm={perm} is not a permutation of {x.ndim} axes")
        return np.ascontiguousarray(np.transpose(x, perm))
    if op == "Cast":
        to = _attrs(node, ("to", "saturate")).get("to")
        if to not in _NP:
            raise _Refused(f"attribute to={_TYPE_NAMES.get(to, to)} is not supported")
        return x.astype(_NP[to])
    if op == "ConstantOfShape":
        dims = [int(d) for d in np.asarray(x).reshape(-1)]
        if any(d < 0 for d in dims) or math.prod(dims) > max_elements:
            raise _Refused(f"shape {dims} is negative or has more than max_elements="
                           f"{max_elements} elements")
        fill = np.zeros(1, np.float32)  # ONNX's default: a float32 zero
        for at in node.attribute:
            if at.name != "value":
                raise _Refused(f"attribute {at.name!r} is not supported")
            fill = _tensor_array(at.t, "ConstantOfShape's value", 1).reshape(-1)
        if fill.size != 1:
            raise _Refused("attribute value must hold one element")
        return np.full(dims, fill[0], fill.dtype)
    if op == "Concat":
        axis = _attrs(node, ("axis",)).get("axis", 0)
        return np.concatenate([v for v in ins if v is not None], axis=axis)
    if op == "Reshape":
        allow = _attrs(node, ("allowzero",)).get("allowzero", 0)
        target = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
        if not allow:  # 0 copies that dimension of the input
            target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(target)
    # Slice: starts, ends, axes, steps as inputs from opset 10
    _attrs(node, ())
    starts, ends = (np.asarray(v).reshape(-1) for v in ins[1:3])
    axes = np.asarray(ins[3]).reshape(-1) if len(ins) > 3 and ins[3] is not None \
        else np.arange(len(starts))
    steps = np.asarray(ins[4]).reshape(-1) if len(ins) > 4 and ins[4] is not None \
        else np.ones(len(starts), np.int64)
    index = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if sp == 0:
            raise _Refused("a step of 0")
        index[int(ax)] = slice(int(st), int(en), int(sp))
    return np.ascontiguousarray(x[tuple(index)])


def _shape_op(node, ins):
    """One step of shape arithmetic on (values, is_scalar) inputs; _Refused if unknown."""
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


#: convolution -> the batch norm that follows it on the same rank
_FOLDABLE = {nn.Conv2d: nn.BatchNorm2d, nn.Conv1d: nn.BatchNorm1d}


def _fold_batchnorm(model):
    """Conv2d/Conv1d followed by BatchNorm2d/BatchNorm1d -> one convolution (inference)."""
    layers, i = [], 0
    src = model.layers
    while i < len(src):
        layer = src[i]
        nxt = src[i + 1] if i + 1 < len(src) else None
        cls = type(layer)
        if (cls in _FOLDABLE and type(nxt) is _FOLDABLE[cls] and nxt.track_running_stats
                and not nxt.return_running_stats):
            scale = nxt.weight.data.astype(np.float64) / np.sqrt(
                nxt.running_var.astype(np.float64) + nxt.eps)
            w = layer.weight.data.astype(np.float64)
            w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            b = layer.bias.data.astype(np.float64) if layer.bias is not None else 0.0
            b = (b - nxt.running_mean) * scale + nxt.bias.data
            conv = cls(layer.in_channels, layer.out_channels, layer.kernel_size,
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


def _check_caps(owner, **caps):
    """The caps as ints >= 1, in the order given (TypeError/ValueError naming the cap)."""
    return tuple(check_int(owner, name, value, minimum=1) for name, value in caps.items())


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
        ``model`` is not an ``onnx.ModelProto``; a cap that is not an int.
    ValueError
        As for :func:`load`.
    """
    onnx = _onnx()
    owner = "fastconv.onnx.load"
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"{owner}: expected an onnx.ModelProto, got {type(model).__name__}")
    max_nodes, max_elements = _check_caps(owner, max_nodes=max_nodes, max_elements=max_elements)
    result = _Converter(model, owner, max_nodes, max_elements).convert()
    if fold_batchnorm:
        result = _fold_batchnorm(result)
    return result


def load(path, *, fold_batchnorm=False, max_bytes=MAX_FILE_BYTES, max_nodes=MAX_NODES,
         max_elements=MAX_ELEMENTS):
    """Read an ONNX file into a ``fastconv.nn.Sequential``.

    Accepted graphs: one data input (FLOAT or DOUBLE, known rank; the batch
    axis may be symbolic; UINT8, INT8, UINT16 or INT16 through MaxPool,
    GlobalMaxPool, Relu, Flatten, Reshape and Identity only, cast to float32
    and back), one or more outputs, and the nodes between them form a
    single chain: each node takes the previous node's output on its input 0,
    and every other input is an initializer, the output of a ``Constant``, or
    computed from those by Transpose, Identity, Cast, ConstantOfShape,
    Concat, Reshape or Slice (evaluated at load). ``MatMul`` followed by
    ``Add`` of a per-feature constant counts as one step (a ``Linear``), and
    so does
    ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, torch's
    ``x.view(x.size(0), -1)`` (a ``Flatten``). Other branches (residual
    connections, concatenations, several inputs) are refused. Several graph
    outputs must be the first outputs, in order, of the last node (MaxPool's
    Indices, Dropout's mask, BatchNormalization's training-mode running
    statistics): the model then returns a tuple.

    Operators (opset 7 on; spatial inputs (N, C, L) or (N, C, H, W)):

    ==============================  ===========================================
    Conv                            -> Conv1d / Conv2d; any pads, per side;
                                    auto_pad SAME_UPPER -> 'same' (any size),
                                    SAME_LOWER resolved for the declared size
                                    (stride > 1 needs it), VALID
    MaxPool, AveragePool            -> MaxPool1d/2d, AvgPool1d/2d; per-side
                                    pads smaller than the (dilated) window;
                                    auto_pad as for Conv but always resolved;
                                    ceil_mode; dilations;
                                    count_include_pad (ONNX default 0);
                                    MaxPool's Indices (return_indices)
    GlobalAveragePool/MaxPool       -> GlobalAvgPool2d/GlobalMaxPool2d(keepdims)
    Gemm                            -> Linear; alpha, beta, transB folded in;
                                    with transA=1 or a per-row C, nn.Gemm
    MatMul (+ Add)                  -> Linear (rank-2 input)
    Relu, Sigmoid, Tanh, LeakyRelu, -> the layer of the same name
    Elu, Gelu
    Softmax, LogSoftmax             -> Softmax, LogSoftmax (any axis)
    Flatten (any axis),             -> Flatten / Flatten(axis)
    Reshape to (N, -1) / (0, -1)
    Dropout (inference, or ratio 0) -> Dropout(p=ratio) (identity in predict)
    BatchNormalization              -> BatchNorm2d / BatchNorm1d (training
                                    mode: batch statistics, and its running
                                    statistics outputs)
    Pad (constant zeros)            -> joins the next Conv's / AveragePool's
                                    padding (torch's ZeroPad2d)
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
        Each cap is an int >= 1 (a float, bool or string is a TypeError).

    Returns
    -------
    fastconv.nn.Sequential
        Uncompiled, in training mode, dtype of the graph input. Initializers
        become parameters (weights and biases) and batch-norm buffers.
        ``model.eval()`` then ``model(x)`` gives the graph's output (a tuple
        for several); ``predict`` gives the softmax of it unless the graph
        ends in a ``Softmax`` (``predict``'s usual rule; several outputs, or
        an integer one, as they are). Layers whose output is not one row per
        sample (Flatten on axis 0, Softmax over axis 0, Gemm with transA or
        a per-row C, batch statistics) make ``predict`` run the whole input
        as one batch.

    Raises
    ------
    TypeError
        A cap that is not an int.
    ValueError
        Unsupported operator, attribute value or graph shape (the message
        names the node, its operator and the attribute); a corrupt,
        truncated or oversized file; external data; a cap below 1.
    """
    owner = "fastconv.onnx.load"
    # checked before the file is opened: a cap of the wrong type is the caller's bug
    (max_bytes,) = _check_caps(owner, max_bytes=max_bytes)
    _check_caps(owner, max_nodes=max_nodes, max_elements=max_elements)
    proto = _read_model(path, owner, max_bytes)
    try:
        return from_onnx(proto, fold_batchnorm=fold_batchnorm, max_nodes=max_nodes,
                         max_elements=max_elements)
    except ValueError as exc:
        raise ValueError(f"{exc} [file {path!r}]") from None
