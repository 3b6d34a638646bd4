"""One table from ONNX operator to fastconv layer builder, with the attribute checks.

Each builder is ``builder(cv, node, shape) -> (layer or None, out_shape, skip)``:
``cv`` is the graph walker of ``_load.py`` (it holds the graph's constants,
dtype and opset), ``shape`` the input's shape as a list whose entries are ints
or None (unknown; the batch axis is always None), ``skip`` the indices of
further nodes the layer absorbs (``MatMul`` + ``Add`` is one ``Linear``).
A builder raises :class:`_Refused` for what fastconv cannot express; the
walker re-raises it with the node, its operator and its index named.
"""

import math

import numpy as np

from .. import nn


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


# -- shared checks --------------------------------------------------------------
def _pair_attr(attrs, name, default, rank):
    """A per-spatial-axis attribute (strides, dilations, kernel_shape) as a tuple."""
    v = attrs.get(name)
    if v is None:
        return (default,) * (rank - 2)
    if len(v) != rank - 2:
        raise _Refused(f"attribute {name}={v} should have {rank - 2} values for a "
                       f"{rank}-D input")
    if any(e < 1 for e in v):
        raise _Refused(f"attribute {name}={v} must be positive")
    return tuple(v)


def _spatial(op, rank):
    """Conv and pooling run on (N, C, L) and (N, C, H, W)."""
    if rank not in (3, 4):
        what = f"{rank - 2}-D" if rank > 2 else f"rank-{rank}"
        raise _Refused(f"{what} input (rank {rank}) is not supported: fastconv runs "
                       f"{op} on (N, C, L) and (N, C, H, W) only")


def _same_pads(auto, size, k, s, d):
    """(before, after) of ONNX's ``auto_pad=SAME_*`` on one axis.

    The output has ``ceil(size / s)`` positions; the padding that needs is
    split in half, the odd one at the end (SAME_UPPER, TensorFlow's 'same') or
    at the start (SAME_LOWER). At stride 1 it does not depend on ``size``.
    """
    eff = d * (k - 1) + 1
    if s == 1:
        total = eff - 1
    else:
        if size is None:
            raise _Refused(f"attribute auto_pad={auto} with stride {s} needs the input's "
                           "spatial size in the graph (it is symbolic)")
        total = max((-(-size // s) - 1) * s + eff - size, 0)
    small = total // 2
    return (small, total - small) if auto == "SAME_UPPER" else (total - small, small)


def _resolve_pads(attrs, k, s, d, shape):
    """Per-axis (before, after) padding from pads / auto_pad, and how it was given.

    ONNX writes ``pads`` as all the starts then all the ends:
    ``[x1_begin, x2_begin, ..., x1_end, x2_end]``.
    """
    nsp = len(k)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = attrs.get("pads", [0] * (2 * nsp))
        if len(pads) != 2 * nsp:
            raise _Refused(f"attribute pads={pads} should have {2 * nsp} values")
        if any(p < 0 for p in pads):
            raise _Refused(f"attribute pads={pads}: negative padding (cropping) is not "
                           "supported")
        return [(pads[i], pads[nsp + i]) for i in range(nsp)], f"pads={pads}"
    if auto == "VALID":
        return [(0, 0)] * nsp, "auto_pad=VALID"
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise _Refused(f"attribute auto_pad={auto!r} is not supported")
    return ([_same_pads(auto, shape[2 + i], k[i], s[i], d[i]) for i in range(nsp)],
            f"auto_pad={auto}")


def _padding_arg(pads):
    """The layers' ``padding`` for per-axis (before, after) pairs.

    The shortest form that says it: ``p`` / ``(ph, pw)`` when every axis is
    symmetric (as before per-side padding existed, so symmetric models load to
    the same layers), else ``(left, right)`` (1-D) or ``((top, bottom), (left,
    right))`` (2-D).
    """
    if all(a == b for a, b in pads):
        return pads[0][0] if len(pads) == 1 else tuple(a for a, _ in pads)
    return tuple(pads[0]) if len(pads) == 1 else tuple(tuple(p) for p in pads)


def _spatial_arg(v):
    """An int for a 1-D layer, the tuple for a 2-D one."""
    return v[0] if len(v) == 1 else tuple(v)


def _out_len(size, k, s, d, before, after, ceil_mode=False):
    """Output length on one axis; ``ceil_mode`` as PyTorch and ONNX round it.

    Rounded up, the last window is dropped when it would start at or after the
    end of the input plus the leading padding (it must hold an input element).
    """
    if size is None:
        return None
    span = size + before + after - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= size + before:
        out -= 1
    return out


def _prod(dims):
    if any(d is None for d in dims):
        return None
    return int(math.prod(dims))


def _show(shape):
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"


# -- element-wise -----------------------------------------------------------------
def _no_attrs(cls):
    """Builder of a layer that takes no attribute (Relu, Sigmoid, Tanh)."""
    def build(cv, node, shape):
        _attrs(node, ())
        return cls(), shape, ()
    return build


def _identity(cv, node, shape):
    _attrs(node, ())
    return None, shape, ()


def _leaky_relu(cv, node, shape):
    a = _attrs(node, ("alpha",))
    return nn.LeakyReLU(a.get("alpha", 0.01)), shape, ()


def _elu(cv, node, shape):
    a = _attrs(node, ("alpha",))
    return nn.ELU(a.get("alpha", 1.0)), shape, ()


def _gelu(cv, node, shape):
    a = _attrs(node, ("approximate",))
    approx = a.get("approximate", "none")
    if approx not in ("none", "tanh"):
        raise _Refused(f"attribute approximate={approx!r} is not supported")
    return nn.GELU(approx), shape, ()


def _softmax(cls):
    def build(cv, node, shape):
        a = _attrs(node, ("axis",))
        rank = len(shape)
        axis = a.get("axis", -1 if cv.opset >= 13 else 1)
        if not -rank <= axis < rank:
            raise _Refused(f"attribute axis={axis} is out of range for a rank-{rank} input")
        axis %= rank
        if cv.opset < 13 and axis != rank - 1:
            raise _Refused(f"attribute axis={axis} before opset 13 normalises over every axis "
                           "from it on, which fastconv does not express")
        # axis 0 normalises across the batch: the layer says so, and predict then
        # runs the whole input as one batch
        return cls(axis), shape, ()
    return build


# -- reshaping --------------------------------------------------------------------
def _flatten(cv, node, shape):
    a = _attrs(node, ("axis",))
    rank = len(shape)
    axis = a.get("axis", 1)
    if not -rank <= axis <= rank:
        raise _Refused(f"attribute axis={axis} is out of range for a rank-{rank} input")
    if axis < 0:
        axis += rank
    # Flatten(axis) is (prod(shape[:axis]), prod(shape[axis:])): the same as axis 1
    # when the axes merged into the batch are all of size 1, e.g. (N, 1, H, W) at 2,
    # which keeps one row per sample (and the inference plan)
    if axis >= 1 and all(d == 1 for d in shape[1:axis]):
        return nn.Flatten(), [None, _prod(shape[1:])], ()
    # else the rows are not the samples (axis 0: one row), and predict runs the
    # whole input as one batch
    return nn.Flatten(axis), [None, _prod(shape[axis:]) if axis else None], ()


def _reshape(cv, node, shape):
    a = _attrs(node, ("allowzero",))
    target = cv.consts.get(node.input[1]) if len(node.input) > 1 else None
    if target is None and len(node.input) > 1 and node.input[1] in cv.sym:
        vals, _ = cv.sym[node.input[1]]
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
    if len(target) == 2 and cv.declared_batch and target[0] == cv.declared_batch:
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


# -- inference-mode layers ----------------------------------------------------------
def _dropout(cv, node, shape):
    a = _attrs(node, ("ratio", "is_test", "seed"))
    ratio = a.get("ratio", 0.5)
    if cv.opset >= 12:
        if "ratio" in a:
            raise _Refused("attribute ratio is an input from opset 12 on")
        r = cv.const(node, 1)
        if r is not None:
            ratio = float(np.asarray(r).reshape(-1)[0]) if np.size(r) == 1 else None
            if ratio is None:
                raise _Refused("input ratio must be a scalar")
        mode = cv.const(node, 2)
        if mode is not None and bool(np.asarray(mode).reshape(-1)[0]):
            if ratio != 0.0:
                raise _Refused(f"input training_mode=True with ratio={ratio} (random masks "
                               "drawn by the runtime) is not supported; fastconv drops out "
                               "only inside fit")
            # ratio 0 drops nothing: the identity (and an all-true mask), as in inference
    if not 0.0 <= ratio < 1.0:
        raise _Refused(f"ratio={ratio} must be in [0, 1)")
    if cv.n_outputs == 2 and cv.opset < 10:
        # Dropout-7's mask has the data's type; fastconv's is bool (Dropout-10 on)
        raise _Refused(f"the mask output at opset {cv.opset} (before 10 it is not a bool "
                       "tensor) is not supported")
    # inference: the identity, and the mask output all true
    return nn.Dropout(ratio, return_mask=cv.n_outputs == 2), shape, ()


def _batchnorm(cv, node, shape):
    a = _attrs(node, ("epsilon", "momentum", "training_mode", "spatial", "is_test"))
    training = bool(a.get("training_mode", 0))
    if cv.n_outputs > 1 and not (training and cv.n_outputs == 3):
        raise _Refused(f"{cv.n_outputs} outputs: only Y, or with attribute training_mode=1 "
                       "all of Y, running_mean and running_var, are supported")
    if a.get("spatial", 1) != 1:
        raise _Refused(f"attribute spatial={a['spatial']} (per-element statistics) is not "
                       "supported")
    rank = len(shape)
    if rank not in (2, 3, 4):
        raise _Refused(f"input rank {rank} is not supported (BatchNorm1d takes rank 2 or 3, "
                       "BatchNorm2d rank 4)")
    if len(node.input) != 5:
        raise _Refused(f"needs 5 inputs (X, scale, B, mean, var), got {len(node.input)}")
    scale, bias, mean, var = (cv.const(node, i) for i in (1, 2, 3, 4))
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
    # training_mode=1: the batch's statistics (in predict too), and the running
    # statistics updated with them as further outputs
    bn = cls(c, eps=eps, momentum=min(max(mom, 0.0), 1.0), track_running_stats=not training,
             return_running_stats=cv.n_outputs == 3, dtype=cv.dtype)
    bn.weight.data[...] = cv.fdata(scale)
    bn.bias.data[...] = cv.fdata(bias)
    bn.running_mean[...] = cv.fdata(mean)
    bn.running_var[...] = cv.fdata(var)
    return bn, shape, ()


# -- convolution and pooling ----------------------------------------------------------
def _pad(cv, node, shape):
    """Zeros around the spatial axes, joined to the padding of the Conv/AveragePool after.

    torch.onnx writes ``nn.ZeroPad2d`` (TensorFlow's explicit padding too) as a
    Pad node; fastconv has no padding layer, but zeros in front of a
    convolution, or of an average pool that counts padding, are that node's
    own per-side padding.
    """
    a = _attrs(node, ("mode", "pads", "value"))
    if a.get("mode", "constant") != "constant":
        raise _Refused(f"attribute mode={a['mode']!r}: only constant (zero) padding is "
                       "supported")
    if cv.opset < 11:
        pads, value = a.get("pads"), a.get("value", 0.0)
    else:
        pads, value = cv.const(node, 1), cv.const(node, 2)
        if cv.const(node, 3) is not None:
            raise _Refused("input axes is not supported")
    rank = len(shape)
    pads = [] if pads is None else [int(v) for v in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * rank:
        raise _Refused(f"pads {pads} should have {2 * rank} values for a rank-{rank} input")
    if value is not None and np.asarray(value).size and float(np.asarray(value).reshape(-1)[0]):
        raise _Refused(f"constant value {float(np.asarray(value).reshape(-1)[0])} is not "
                       "zero; only zero padding joins a convolution's padding")
    if any(p < 0 for p in pads) or pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        raise _Refused(f"pads {pads}: only non-negative padding of the spatial axes is "
                       "supported")
    users = cv.consumers.get(node.output[0], [])
    nxt = users[0][1] if len(users) == 1 and users[0][1] is not None else None
    if rank not in (3, 4) or nxt is None or nxt.op_type not in ("Conv", "AveragePool"):
        what = f"{nxt.op_type} node {nxt.name!r}" if nxt is not None else "no single node"
        raise _Refused(f"a Pad is loaded only in front of a 1-D or 2-D Conv or AveragePool, "
                       f"whose padding it joins; it feeds {what}")
    cv.pending_pad = [(pads[2 + i], pads[rank + 2 + i]) for i in range(rank - 2)]
    return None, shape, ()


def _join_pad(cv, a, pads, what):
    """``pads`` plus the zeros of the Pad node just before (if any), and how they were given."""
    extra, cv.pending_pad = cv.pending_pad, None
    if extra is None:
        return pads, what
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise _Refused(f"attribute auto_pad={a['auto_pad']} after a Pad node is not supported")
    return ([(b + eb, e + ee) for (b, e), (eb, ee) in zip(pads, extra)],
            f"{what} plus the Pad before it {extra}")


def _conv(cv, node, shape):
    a = _attrs(node, ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"))
    w = cv.const(node, 1)
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
    if a.get("auto_pad") == "SAME_UPPER" and cv.pending_pad is None:
        # fastconv's 'same' is TensorFlow's SAME_UPPER at any stride, worked out
        # per call: right for any input size, not only the declared one
        padding = "same"
        spatial = [None if n is None else -(-n // si) for n, si in zip(shape[2:], s)]
    else:
        pads, _ = _join_pad(cv, a, *_resolve_pads(a, k, s, d, shape))
        padding = _padding_arg(pads)
        same = [(di * (ki - 1) // 2, di * (ki - 1) - di * (ki - 1) // 2) for ki, di in zip(k, d)]
        if all(si == 1 for si in s) and pads == same and any(b0 != b1 for b0, b1 in pads):
            padding = "same"  # what export writes for 'same' with an even kernel
        spatial = [_out_len(shape[2 + i], k[i], s[i], d[i], *pads[i]) for i in range(rank - 2)]
    b = cv.const(node, 2)
    if b is not None and b.shape != (w.shape[0],):
        raise _Refused(f"bias of shape {b.shape} should have shape ({w.shape[0]},)")
    cls = nn.Conv2d if rank == 4 else nn.Conv1d
    layer = cls(cin, int(w.shape[0]), _spatial_arg(k), stride=_spatial_arg(s), padding=padding,
                dilation=_spatial_arg(d), groups=group, bias=b is not None,
                weight_init="zeros", dtype=cv.dtype)
    layer.weight.data[...] = cv.fdata(w)
    if b is not None:
        layer.bias.data[...] = cv.fdata(b)
    return layer, [None, int(w.shape[0])] + spatial, ()


_POOL_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "auto_pad", "ceil_mode")


def _pool(cv, node, shape, avg):
    a = _attrs(node, _POOL_ATTRS + (("count_include_pad",) if avg else ("storage_order",)))
    rank = len(shape)
    _spatial(node.op_type, rank)
    if "kernel_shape" not in a:
        raise _Refused("attribute kernel_shape is required")
    k = _pair_attr(a, "kernel_shape", 1, rank)
    s = _pair_attr(a, "strides", 1, rank)
    d = _pair_attr(a, "dilations", 1, rank)
    pads, what = _resolve_pads(a, k, s, d, shape)
    if cv.pending_pad is not None:
        # the Pad's zeros are input elements to the pool: counted in the divisor,
        # so the pool's own padding must be counted too (or absent)
        own = any(b or e for b, e in pads)
        if own and not a.get("count_include_pad", 0):
            raise _Refused(f"attribute count_include_pad=0 with {what} after a Pad node: "
                           "the two paddings would be counted differently")
        if a.get("ceil_mode", 0) and any(e for _, e in cv.pending_pad):
            raise _Refused("attribute ceil_mode=1 after a Pad node with trailing padding "
                           "(the window dropped by ceil mode would differ)")
        a["count_include_pad"] = 1
        pads, what = _join_pad(cv, a, pads, what)
    # limits of the kernels: each side's padding smaller than the (dilated) window
    # for max pooling, than the window for average pooling (ONNX: pads < kernel)
    for i, (before, after) in enumerate(pads):
        limit = k[i] if avg else d[i] * (k[i] - 1) + 1
        if max(before, after) >= limit:
            raise _Refused(
                f"attribute {what}: padding {max(before, after)} on spatial axis {i} is not "
                f"smaller than the {'window' if avg else 'dilated window'} {limit}, which "
                "fastconv's pooling needs")
    # with auto_pad the output size is ceil(size / stride) whatever ceil_mode says,
    # and the padding above already gives exactly that
    ceil = bool(a.get("ceil_mode", 0)) and a.get("auto_pad", "NOTSET") in ("NOTSET", "")
    out = [None, shape[1]] + [_out_len(shape[2 + i], k[i], s[i], d[i], *pads[i], ceil)
                              for i in range(rank - 2)]
    args = (_spatial_arg(k), _spatial_arg(s), _padding_arg(pads))
    kw = {"ceil_mode": True} if ceil else {}
    if avg:
        cls = nn.AvgPool2d if rank == 4 else nn.AvgPool1d
        # ONNX's default count_include_pad is 0, the layers' True: always said
        if any(di != 1 for di in d):  # AveragePool has dilations from opset 19 on
            kw["dilation"] = _spatial_arg(d)
        layer = cls(*args, count_include_pad=bool(a.get("count_include_pad", 0)), **kw)
    else:
        cls = nn.MaxPool2d if rank == 4 else nn.MaxPool1d
        if any(di != 1 for di in d):
            kw["dilation"] = _spatial_arg(d)
        if cv.n_outputs == 2:
            # ONNX's Indices: the position in the whole input, each plane row by row
            # (storage_order=0) or column by column (1)
            order = a.get("storage_order", 0)
            if order not in (0, 1):
                raise _Refused(f"attribute storage_order={order} must be 0 or 1")
            kw.update(return_indices=True, indices_layout="flat_column" if order else "flat")
        layer = cls(*args, **kw)
    return layer, out, ()


def _max_pool(cv, node, shape):
    return _pool(cv, node, shape, avg=False)


def _avg_pool(cv, node, shape):
    return _pool(cv, node, shape, avg=True)


def _global(cls):
    def build(cv, node, shape):
        _attrs(node, ())
        if len(shape) != 4:
            raise _Refused(f"input of rank {len(shape)} is not supported: fastconv runs "
                           f"{node.op_type} on (N, C, H, W) only")
        return cls(keepdims=True), [None, shape[1], 1, 1], ()
    return build


# -- fully connected ----------------------------------------------------------------------
def _linear(cv, weight, bias, shape):
    """Linear layer from weight (out, in) and bias (out,) or None."""
    out_f, in_f = weight.shape
    if shape[1] is not None and shape[1] != in_f:
        raise _Refused(f"the weight expects {in_f} input features, the input has {shape[1]}")
    layer = nn.Linear(in_f, out_f, bias=bias is not None, weight_init="zeros", dtype=cv.dtype)
    layer.weight.data[...] = cv.fdata(weight)
    if bias is not None:
        layer.bias.data[...] = cv.fdata(bias)
    return layer, [None, out_f]


def _bias_vector(c, n, what):
    """A bias that broadcasts to (M, n) the same for every row, as a (n,) vector."""
    c = np.asarray(c)
    if c.size == 1 and c.ndim <= 2:
        return np.full(n, c.reshape(-1)[0])
    if c.shape in ((n,), (1, n)):
        return c.reshape(n)
    raise _Refused(f"{what} of shape {c.shape} differs between batch rows (or does not "
                   f"broadcast to (N, {n})); only a per-feature bias is supported")


def _gemm(cv, node, shape):
    # broadcast (opset < 7): C broadcasts; either way C must broadcast to (M, N)
    a = _attrs(node, ("alpha", "beta", "transA", "transB", "broadcast"))
    if len(shape) != 2:
        raise _Refused(f"input A of rank {len(shape)} (Gemm takes rank 2)")
    b = cv.const(node, 1)
    if b is None or b.ndim != 2:
        raise _Refused("input B must be a 2-D constant")
    weight = b if a.get("transB", 0) else b.T
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:  # folded into the weight: y = x @ (alpha*W).T
        weight = weight.astype(np.float64) * alpha
    c = cv.const(node, 2)
    trans_a = bool(a.get("transA", 0))
    n = weight.shape[0]
    per_row = c is not None and np.asarray(c).ndim == 2 and c.shape[0] > 1
    if not trans_a and not per_row:
        bias = None
        if c is not None:
            bias = _bias_vector(c, n, "input C")
            if beta != 1.0:
                bias = bias.astype(np.float64) * beta
        layer, out = _linear(cv, weight, bias, shape)
        return layer, out, ()
    # A transposed (its batch axis is summed over) or a C that differs between
    # rows: a Gemm layer, whose output rows are not the samples
    if c is not None:
        c = np.asarray(c)
        if c.ndim > 2 or (c.ndim >= 1 and c.shape[-1] not in (1, n)):
            raise _Refused(f"input C of shape {c.shape} does not broadcast to (M, {n})")
        c = c.reshape(-1)[:1].reshape(()) if c.size == 1 else c
        c = c.astype(np.float64) * beta if beta != 1.0 else c
    in_f = weight.shape[1]
    feat = shape[0] if trans_a else shape[1]
    if feat is not None and feat != in_f:
        raise _Refused(f"the weight expects {in_f} input features, A has {feat}")
    layer = nn.Gemm(in_f, n, trans_a=trans_a, bias=c is not None,
                    bias_shape=None if c is None else c.shape, weight_init="zeros",
                    dtype=cv.dtype)
    layer.weight.data[...] = cv.fdata(weight)
    if c is not None:
        layer.bias.data[...] = cv.fdata(c)
    rows = c.shape[0] if c is not None and c.ndim == 2 and c.shape[0] > 1 else None
    return layer, [rows, n], ()


def _matmul(cv, node, shape):
    _attrs(node, ())
    if len(shape) != 2:
        raise _Refused(f"input A of rank {len(shape)}: batched MatMul is not supported "
                       "(rank 2 only)")
    w = cv.const(node, 1)
    if w is None or w.ndim != 2:
        raise _Refused("input B must be a 2-D constant")
    bias, skip = None, ()
    # MatMul then Add of a per-feature constant, as torch writes Linear: one layer
    users = [(i, n) for i, n in cv.steps if node.output[0] in n.input]
    if len(users) == 1 and users[0][1].op_type == "Add" and len(users[0][1].input) == 2:
        i, add = users[0]
        other = [t for t in add.input if t != node.output[0]]
        if len(other) == 1 and other[0] in cv.consts and not add.attribute:
            try:
                bias = _bias_vector(cv.consts[other[0]], w.shape[1], "the Add's constant")
                skip = (i,)
                cv.skip_target = add.output[0]
            except _Refused:
                bias = None
    layer, out = _linear(cv, w.T, bias, shape)
    return layer, out, skip


#: ONNX operator (default domain) -> builder. ``Constant`` nodes are values, not
#: steps of the chain: the walker evaluates them (and Transpose/Identity of them).
OPS = {
    "AveragePool": _avg_pool,
    "BatchNormalization": _batchnorm,
    "Conv": _conv,
    "Dropout": _dropout,
    "Elu": _elu,
    "Flatten": _flatten,
    "Gelu": _gelu,
    "Gemm": _gemm,
    "GlobalAveragePool": _global(nn.GlobalAvgPool2d),
    "GlobalMaxPool": _global(nn.GlobalMaxPool2d),
    "Identity": _identity,
    "LeakyRelu": _leaky_relu,
    "LogSoftmax": _softmax(nn.LogSoftmax),
    "MatMul": _matmul,
    "MaxPool": _max_pool,
    "Pad": _pad,
    "Relu": _no_attrs(nn.ReLU),
    "Reshape": _reshape,
    "Sigmoid": _no_attrs(nn.Sigmoid),
    "Softmax": _softmax(nn.Softmax),
    "Tanh": _no_attrs(nn.Tanh),
}

_SUPPORTED_OPS = sorted(OPS) + ["Constant"]
