"""The steps of an inference plan: one class per kind of kernel call, each
built once for an input shape and dtype (``fastconv.nn.plan`` strings them together)."""

import weakref

import numpy as np

from .. import _kernels
from .. import _routes
from .. import functional as F
from .._geometry import pool_geom
from .._validate import check_float_array, check_same_dtype
from .activations import ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv1d
from .dense import Flatten, Linear
from .layer_base import _check_input
from .normalization import Dropout
from .pooling import AvgPool1d, AvgPool2d, MaxPool1d
from .relu import relu_uses_kernel


# How a step produces its output.
_BUFFER = 0   # writes into an output array of its own (a per-thread buffer)
_INPLACE = 1  # overwrites its input, which is a buffer of the plan
_VIEW = 2     # returns a view of its input (no arithmetic)



class StalePlan(Exception):
    """A parameter array no longer has the shape or dtype the plan was built for."""


def _probe(shape, dtype):
    """A zero-strided stand-in for an input of this shape and dtype (no memory):
    the layers' own input checks run on it and raise their usual messages."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _specialized(kernel, dtype):
    """The float or double version of a Cython fused-type kernel, chosen once:
    calling it skips the per-call dispatch on the arguments' dtype (~0.2 us)."""
    name = "float" if np.dtype(dtype) == np.float32 else "double"
    if name in (getattr(kernel, "__signatures__", None) or {}):
        return kernel[name]
    return kernel


def _admit(arr, shape, dtype):
    """``arr`` as the kernels may read it, or StalePlan when it no longer fits.

    Called only when a parameter's array object is not the one last admitted,
    so the common call costs one identity test.
    """
    if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
        raise StalePlan
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


_sole_reference = _kernels.sole_reference


def _DEAD():
    """A dead weak reference: matches no array."""
    return None


class _Step:
    """One call of a plan: ``run(x, y, nthreads)`` returns the output for input ``x``."""

    __slots__ = ("kind", "out_shape")

    def __init__(self, kind, out_shape):
        self.kind = kind
        self.out_shape = tuple(out_shape)

    def program_op(self, src, dst, w, b):
        """This step as an op of ``_kernels.PlanProgram`` reading slot ``src`` and
        writing slot ``dst`` (parameters in slots ``w``, ``b``), or None when it
        has none (the plan then runs its steps one by one)."""
        return None


class _ParamStep(_Step):
    """A step that reads ``layer.weight`` and ``layer.bias`` live at every call."""

    __slots__ = ("layer", "dtype", "wshape", "bshape", "w_ok", "b_ok", "wd", "wd_src",
                 "wd_version")

    def __init__(self, kind, out_shape, layer, dtype):
        super().__init__(kind, out_shape)
        self.layer = layer
        self.dtype = np.dtype(dtype)
        self.wshape = layer.weight.shape
        self.bshape = (self.wshape[0],)
        self.w_ok = self.b_ok = _DEAD  # the arrays last admitted (identity fast path)
        self.wd, self.wd_src, self.wd_version = None, _DEAD, -1  # see _derived_weight

    # The parameters are read through ``Parameter._data``: ``Parameter.data``
    # would count as handing the array out to a writer (see ``_Linear``). The
    # arrays last admitted are held weakly, for the same reason (a reference
    # held here would look like a writer's).
    def _params(self):
        layer = self.layer
        w = layer.weight._data
        if w is not self.w_ok():
            w = _admit(w, self.wshape, self.dtype)
            if w is layer.weight._data:
                self.w_ok = weakref.ref(w)
        b = layer.bias
        if b is not None:
            b = b._data
            if b is not self.b_ok():
                b = _admit(b, self.bshape, self.dtype)
                if b is layer.bias._data:
                    self.b_ok = weakref.ref(b)
        return w, b

    def _bias(self):
        b = self.layer.bias
        if b is not None:
            b = b._data
            if b is not self.b_ok():
                b = _admit(b, self.bshape, self.dtype)
                if b is self.layer.bias._data:
                    self.b_ok = weakref.ref(b)
        return b

    def _kept(self):
        """The kept derived weight when provably current, cheaply: the checks of
        ``_derived_weight`` in its order, without making anything (None if any fails)."""
        p = self.layer.weight
        version = p._version  # read first, as in _derived_weight
        if version == self.wd_version and _sole_reference(p, "_data") \
                and p._data is self.wd_src():
            return self.wd
        return None

    def _derived_weight(self, make):
        """``make(W)`` (an array derived from the weight: a transposed copy, a
        transform), kept across calls; None when it cannot be proved current.

        It is proved current while ``W`` is the array it was made from, nobody
        but its ``Parameter`` holds ``W`` (``_kernels.sole_reference``: a writer
        keeps a reference or a view, which references ``W``), and ``W`` was not
        handed out since (``Parameter._version`` counts every ``.data`` read:
        optimisers, ``load_state_dict`` and a user's ``w.data[...] = v`` all go
        through it). Otherwise the caller computes from ``W`` as it is.
        """
        p = self.layer.weight
        version = p._version  # read first: a reader after this point bumps it
        if not _kernels.sole_reference(p, "_data"):
            return None
        w = p._data
        if version == self.wd_version and w is self.wd_src():
            return self.wd
        if not isinstance(w, np.ndarray) or w.shape != self.wshape or w.dtype != self.dtype:
            raise StalePlan
        if not w.flags.c_contiguous:
            return None
        derived = make(w)
        self.wd, self.wd_src, self.wd_version = derived, weakref.ref(w), version
        return derived


class _Conv(_ParamStep):
    __slots__ = ("kernel", "geom", "relu", "pre", "op_code")

    def __init__(self, layer, shape, dtype, relu):
        owner = type(layer).__name__
        ndim = 3 if owner == "Conv1d" else 4
        x = _probe(shape, dtype)
        _check_input(owner, x, ndim, layer.dtype)
        if shape[1] != layer.in_channels:
            raise ValueError(
                f"{owner}: expected input with {layer.in_channels} channels, "
                f"got input of shape {tuple(shape)}"
            )
        w = layer.weight.data
        b = None if layer.bias is None else layer.bias.data
        F._conv_inputs(owner.lower(), x, w, b, ndim)
        kernel, geom, out_shape = F._conv2d_prepared(
            shape, dtype, w.shape, layer.stride, layer.padding, layer.dilation, layer.groups)
        super().__init__(_BUFFER, out_shape, layer, dtype)
        self.kernel = _specialized(kernel, dtype)
        if ndim == 3:
            self.kernel = _height_one_view(self.kernel)
        self.geom, self.relu = geom, relu
        # Winograd transforms the weights on every call and packs them for its
        # products (at batch 1 a good part of the layer's time): the plan keeps
        # both while they are current (``_winograd_up``)
        self.pre = None
        self.op_code = None
        if kernel is _kernels.conv2d_forward_winograd:
            self.pre = _kernels.conv2d_forward_winograd_pre
            self.op_code = _kernels.OP_WINO
        elif kernel is _kernels.conv2d_forward:
            self.op_code = _kernels.OP_CONV
        elif kernel is _kernels.conv2d_forward_winograd_rows:
            self.op_code = _kernels.OP_WINO_ROWS

    def _winograd_up(self, w):
        """U (36, k, c), the transformed weights, followed by their packing for the
        products (``winograd_pack``), in one flat array: the program's variant 1."""
        k, c = w.shape[:2]
        up = np.empty(_kernels.winograd_packed_len(self.geom), np.float32)
        _kernels.winograd_weights(w, 1, up[:36 * k * c].reshape(36, k, c))
        _kernels.winograd_pack(up, self.geom)
        return up

    def run(self, x, y, nt):
        if self.pre is not None:
            up = self._derived_weight(self._winograd_up)
            if up is not None:
                k, c = self.wshape[:2]
                self.pre(x, up[:36 * k * c].reshape(36, k, c), self._bias(), self.geom,
                         self.relu, nt, y)
                return y
        w, b = self._params()
        self.kernel(x, w, b, self.geom, self.relu, nt, y)
        return y

    def program_op(self, src, dst, w, b):
        if self.op_code is None:
            return None
        return (self.op_code, self.dtype == np.float64, src, dst, w, b, bool(self.relu),
                self.geom, None)

    def operands(self):
        """(variant, weight, bias) for the program: variant 1 with the kept U and
        its packing."""
        if self.pre is not None:
            up = self._kept()
            if up is None:
                up = self._derived_weight(self._winograd_up)
            if up is not None:
                return 1, up, self._bias()
        w, b = self._params()
        return 0, w, b


def _height_one_view(kernel):
    """A 2-D conv kernel called on (N, C, L) arrays through (N, C, 1, L) views (Conv1d)."""
    def run(x, w, b, geom, relu, nt, y):
        kernel(F._as4(x), F._as4(w), b, geom, relu, nt, F._as4(y))
    return run


class _Linear(_ParamStep):
    """``y = x W^T + b``; for a few rows from a copy of ``W`` kept by the step.

    ``gemm`` reads ``W`` in place, but for a few samples its kernels must gather
    each column of ``W`` across rows (a transposition as they go: 3x the time of
    the multiply-adds for the MNIST CNN's 3136 -> 1024 at batch 1). The copy is
    read in rows instead, with the same sums in the same order: the bits of
    ``gemm``. For one row it is ``W`` in panels of ``KMAJOR_PAD`` outputs, each
    transposed (``linear_forward_panels``: every thread streams its panels
    front to back); for 2 to ``LINEAR_KMAJOR_MAX_ROWS`` rows, ``W`` transposed,
    zero-padded to ``KMAJOR_PAD`` columns (``linear_forward_kmajor``).

    The copy is used only while it is provably current (``_derived_weight``);
    otherwise the step runs ``gemm`` on ``W`` as it is.
    """

    __slots__ = ("gemm", "fast", "variant", "make")

    def __init__(self, layer, shape, dtype):
        x = _probe(shape, dtype)
        _check_input("Linear", x, 2, layer.dtype)
        if shape[1] != layer.in_features:
            raise ValueError(
                f"Linear: expected input of shape (N, {layer.in_features}), got shape {tuple(shape)}"
            )
        w = layer.weight.data
        F._linear_inputs("linear", x, w)
        if layer.bias is not None:
            b = check_float_array("linear", "bias", layer.bias.data)
            check_same_dtype("linear", "input", x, bias=b)
            if b.shape != (w.shape[0],):
                raise ValueError(
                    f"linear: bias must have shape ({w.shape[0]},) to match weight of "
                    f"shape {w.shape}, got {b.shape}")
        super().__init__(_BUFFER, (shape[0], w.shape[0]), layer, dtype)
        self.gemm = _specialized(_kernels.gemm, dtype)
        # the fast kernel, its PlanProgram variant and the copy it reads (None: gemm on W)
        self.fast = self.make = None
        self.variant = 0
        copy = _routes.linear_weight_copy(shape[0], w.shape[0], w.shape[1])
        if copy == "panels":
            self.fast = _one_row(_specialized(_kernels.linear_forward_panels, dtype))
            self.variant, self.make = _kernels.LINEAR_PANELS, _panels_copy
        elif copy == "kmajor":
            self.fast = _specialized(_kernels.linear_forward_kmajor, dtype)
            self.variant, self.make = _kernels.LINEAR_KMAJOR, _kmajor_copy

    def run(self, x, y, nt):
        if self.fast is not None:
            wd = self._derived_weight(self.make)
            if wd is not None:
                self.fast(x, wd, self._bias(), nt, y)
                return y
        w, b = self._params()
        self.gemm(False, True, x, w, b, F._BIAS_COLS, False, nt, y)
        return y

    def program_op(self, src, dst, w, b):
        nout, nin = self.wshape
        ldw = -(-nout // _kernels.KMAJOR_PAD) * _kernels.KMAJOR_PAD
        return (_kernels.OP_LINEAR, self.dtype == np.float64, src, dst, w, b, False, None,
                (self.out_shape[0], nin, nout, ldw))

    def operands(self):
        """(variant, weight, bias) for the program: the kept copy's variant with it."""
        if self.fast is not None:
            wd = self._kept()
            if wd is None:
                wd = self._derived_weight(self.make)
            if wd is not None:
                return self.variant, wd, self._bias()
        w, b = self._params()
        return 0, w, b


def _kmajor_copy(w):
    """``W`` (nout, nin) transposed, zero-padded to ``KMAJOR_PAD`` columns."""
    nout, nin = w.shape
    pad = -(-nout // _kernels.KMAJOR_PAD) * _kernels.KMAJOR_PAD
    wt = np.zeros((nin, pad), w.dtype)
    wt[:, :nout] = w.T
    return wt


def _panels_copy(w):
    """``W`` (nout, nin) as (panels, nin, KMAJOR_PAD): panel p holds outputs
    ``p * KMAJOR_PAD ...`` k-major, zeros past nout (fc_linear_fwd_panels)."""
    nout, nin = w.shape
    pw = _kernels.KMAJOR_PAD
    npan = -(-nout // pw)
    wp = np.zeros((npan, nin, pw), w.dtype)
    for p in range(npan):
        rows = w[p * pw:(p + 1) * pw]
        wp[p, :, :rows.shape[0]] = rows.T
    return wp


def _one_row(kernel):
    """``linear_forward_panels`` called on the (1, nin) / (1, nout) arrays of a plan."""
    def run(x, wp, b, nt, y):
        kernel(x.reshape(-1), wp, b, nt, y.reshape(-1))
    return run


def _pool_geom(layer, shape, dtype):
    """The kernels' geometry and output shape of a pooling layer; 1-D layers pool
    (N, C, L) as the view (N, C, 1, L), as fastconv.functional does."""
    owner = type(layer).__name__
    avg = isinstance(layer, (AvgPool2d, AvgPool1d))
    if isinstance(layer, (MaxPool1d, AvgPool1d)):
        _check_input(owner, _probe(shape, dtype), 3)
        fn = "avg_pool1d" if avg else "max_pool1d"
        n, c, length = shape
        geom, (n, c, _, lo) = pool_geom(fn, (n, c, 1, length), (1, layer.kernel_size),
                                        (1, layer.stride), ((0, 0), layer._lr()),
                                        (1, layer.dilation), layer.ceil_mode, avg=avg)
        return geom, (n, c, lo)
    _check_input(owner, _probe(shape, dtype), 4)
    fn = "avg_pool2d" if avg else "max_pool2d"
    return pool_geom(fn, shape, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.ceil_mode, avg=avg)


def _as4d(a, geom, out):
    """``a`` as the 4-D array the kernels take: (N, C, 1, L) for a 1-D pool (a view
    of the contiguous arrays a plan passes); the shape from the geometry tuple."""
    n, c, h, w, _, _, ho, wo = geom[:8]
    return a.reshape((n, c, ho, wo) if out else (n, c, h, w))


class _MaxPool(_Step):
    __slots__ = ("geom", "kernel", "flat")

    def __init__(self, layer, shape, dtype):
        self.geom, out_shape = _pool_geom(layer, shape, dtype)
        super().__init__(_BUFFER, out_shape)
        self.kernel = _specialized(_kernels.max_pool2d_forward, dtype)
        self.flat = len(shape) == 3

    def run(self, x, y, nt):
        if self.flat:
            self.kernel(_as4d(x, self.geom, False), self.geom, nt, _as4d(y, self.geom, True), None)
        else:
            self.kernel(x, self.geom, nt, y, None)
        return y

    def program_op(self, src, dst, w, b):
        f64 = self.kernel is _kernels.max_pool2d_forward["double"]
        return (_kernels.OP_MAXPOOL, f64, src, dst, -1, -1, False, self.geom, None)


class _AvgPool(_Step):
    __slots__ = ("geom", "count_include_pad", "kernel", "flat")

    def __init__(self, layer, shape, dtype):
        self.geom, out_shape = _pool_geom(layer, shape, dtype)
        super().__init__(_BUFFER, out_shape)
        self.count_include_pad = layer.count_include_pad
        self.kernel = _specialized(_kernels.avg_pool2d_forward, dtype)
        self.flat = len(shape) == 3

    def run(self, x, y, nt):
        if self.flat:
            self.kernel(_as4d(x, self.geom, False), self.geom, self.count_include_pad, nt,
                        _as4d(y, self.geom, True))
        else:
            self.kernel(x, self.geom, self.count_include_pad, nt, y)
        return y

    def program_op(self, src, dst, w, b):
        f64 = self.kernel is _kernels.avg_pool2d_forward["double"]
        return (_kernels.OP_AVGPOOL, f64, src, dst, -1, -1, False, self.geom,
                bool(self.count_include_pad))


class _Relu(_Step):
    """``ReLU.forward``'s arithmetic; in place when its input is a plan buffer."""

    __slots__ = ("compiled",)

    def __init__(self, shape, dtype, inplace):
        _check_input("ReLU", _probe(shape, dtype), range(1, 33))
        super().__init__(_INPLACE if inplace else _BUFFER, shape)
        # ReLU._apply's rule, decided once for this shape (plan buffers are contiguous)
        self.compiled = None
        if relu_uses_kernel(int(np.prod(shape))):
            self.compiled = _specialized(_kernels.relu_forward, dtype)

    def run(self, x, y, nt):
        if y is None:
            y = x
        if self.compiled is not None:
            self.compiled(x.reshape(-1), nt, y.reshape(-1))
        else:
            np.maximum(x, 0, out=y)
        return y

    def program_op(self, src, dst, w, b):
        n = int(np.prod(self.out_shape))
        if self.compiled is None:
            return (_kernels.OP_RELU_NUMPY, False, src, dst, -1, -1, False, None, (n,))
        f64 = self.compiled is _kernels.relu_forward["double"]
        return (_kernels.OP_RELU, f64, src, dst, -1, -1, False, None, (n,))


class _Activation(_Step):
    """Sigmoid, Tanh, Softmax: the layer's own ``_apply`` (it reads only its config)."""

    __slots__ = ("apply",)

    def __init__(self, layer, shape, dtype):
        _check_input(type(layer).__name__, _probe(shape, dtype), range(1, 33))
        super().__init__(_BUFFER, shape)
        self.apply = layer._apply

    def run(self, x, y, nt):
        self.apply(x, y)
        return y


class _BatchNorm(_Step):
    """Evaluation-mode batch norm with the running statistics read at every call:
    the operations of ``_BatchNorm.forward`` in the same order (same bits)."""

    __slots__ = ("layer", "bshape")

    def __init__(self, layer, shape, dtype):
        owner = type(layer).__name__
        _check_input(owner, _probe(shape, dtype), layer._ndims, layer.dtype)
        if shape[1] != layer.num_features:
            raise ValueError(
                f"{owner}: expected {layer.num_features} channels on axis 1, got input of "
                f"shape {tuple(shape)}"
            )
        super().__init__(_BUFFER, shape)
        self.layer = layer
        self.bshape = (1, -1) + (1,) * (len(shape) - 2)

    def run(self, x, y, nt):
        layer, bshape = self.layer, self.bshape
        invstd = (1.0 / np.sqrt(layer.running_var + layer.eps)).astype(x.dtype)
        np.subtract(x, layer.running_mean.reshape(bshape), out=y)
        y *= invstd.reshape(bshape)
        if layer.affine:
            np.multiply(y, layer.weight._data.reshape(bshape), out=y)
            y += layer.bias._data.reshape(bshape)
        return y


class _Reshape(_Step):
    """Flatten: a view of the input."""

    __slots__ = ()

    def __init__(self, shape):
        n = shape[0]
        super().__init__(_VIEW, (n, int(np.prod(shape[1:]))))

    def run(self, x, y, nt):
        return x.reshape(self.out_shape)

    def program_op(self, src, dst, w, b):
        return ()  # a view: the next op reads the same data


class _Identity(_Step):
    """Dropout in evaluation mode."""

    __slots__ = ()

    def __init__(self, shape, dtype):
        _check_input("Dropout", _probe(shape, dtype), range(1, 33))
        super().__init__(_VIEW, shape)

    def run(self, x, y, nt):
        return x

    def program_op(self, src, dst, w, b):
        return ()  # a view: the next op reads the same data


def fuse_pool(step, nxt):
    """The op code running conv ``step`` and max-pool ``nxt`` as one op, or None.

    A direct, Winograd or row-Winograd conv followed by 2x2 windows with stride 2, no padding
    or dilation, that tile its output from the top left (floor mode): the fused
    kernels (``fc_conv2d_fwd_maxpool2``, ``fc_conv2d_fwd_wino*_maxpool2``,
    ``fc_conv2d_fwd_rowwino_maxpool2``) pool
    exactly those windows."""
    if not isinstance(step, _Conv) or step.op_code not in _POOL_FUSED \
            or not isinstance(nxt, _MaxPool) or nxt.flat:
        return None
    n, c, h, w, kh, kw, ho, wo, sh, sw, ph, pw, ph_end, pw_end, dh, dw = nxt.geom
    if (kh, kw, sh, sw, ph, pw, ph_end, pw_end, dh, dw) == (2, 2, 2, 2, 0, 0, 0, 0, 1, 1) \
            and (ho, wo) == (h // 2, w // 2) and (h, w) == step.out_shape[2:]:
        return _POOL_FUSED[step.op_code]
    return None


# conv op -> its op fused with the 2x2/2 max-pool that follows
_POOL_FUSED = {_kernels.OP_CONV: _kernels.OP_CONV_POOL, _kernels.OP_WINO: _kernels.OP_WINO_POOL,
               _kernels.OP_WINO_ROWS: _kernels.OP_WINO_ROWS_POOL}


_KERNEL_RELU_IS_NUMPYS = None


def kernel_relu_matches_numpy():
    """Whether the compiled ReLU gives ``np.maximum(x, 0)``'s bits at every size
    (the ReLU layer uses NumPy below ``relu_uses_kernel``'s size): checked once,
    on -0.0, NaNs with payloads of either sign, subnormals and ordinary values at
    each position of short arrays (the scalar tails and vector bodies)."""
    global _KERNEL_RELU_IS_NUMPYS
    if _KERNEL_RELU_IS_NUMPYS is None:
        # -0, NaNs (quiet and signalling, either sign), subnormals, infinities, +-1
        bits32 = [0x80000000, 0x7FC00001, 0xFFC00002, 0x7F800003, 0x80000001, 0x00000001,
                  0xFF800000, 0x7F800000, 0x3F800000, 0xBF800000]
        specials = [np.array(bits32, np.uint32).view(np.float32),
                    np.array([b << 32 for b in bits32], np.uint64).view(np.float64)]
        cases = [np.roll(np.resize(sp, n), n // 3) for n in range(1, 70) for sp in specials]
        # relu_uses_kernel at a large size: the compiled path propagates NaN at all
        _KERNEL_RELU_IS_NUMPYS = relu_uses_kernel(1 << 30) and all(
            np.maximum(x, 0).tobytes() == _compiled_relu(x).tobytes() for x in cases)
    return _KERNEL_RELU_IS_NUMPYS


def _compiled_relu(x):
    y = np.empty_like(x)
    _kernels.relu_forward(x, 1, y)
    return y


def fuse_relu(step, nxt):
    """Whether a plan program may apply ReLU ``nxt`` inside Linear ``step``'s op
    (the compiled ReLU on its output, in place): same bits as the ReLU step."""
    return isinstance(step, _Linear) and isinstance(nxt, _Relu) and nxt.kind == _INPLACE \
        and (nxt.compiled is not None or kernel_relu_matches_numpy())


# Layers whose evaluation-mode forward the plan computes itself. Exact types:
# a subclass may override forward, so it is not assumed to compute the same.
