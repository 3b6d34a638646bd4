"""The implementations measured side by side, behind one call signature.

Every implementation is an object with the same six kernels::

    conv_fwd(x, w, b, stride, padding)                 -> y
    conv_bwd(grad_y, x, w, stride, padding)            -> (grad_x, grad_w, grad_b)
    maxpool_fwd(x, k, stride, padding, return_indices) -> y or (y, indices)
    maxpool_bwd(grad_y, indices, x_shape, k, stride, padding) -> grad_x
    avgpool_fwd(x, k, stride, padding)                 -> y
    avgpool_bwd(grad_y, x_shape, k, stride, padding)   -> grad_x
    supports(case)                                     -> whether it runs that case

  The pooling calls also take ``ceil_mode=True`` and a per-side ``padding``
  ``((top, bottom), (left, right))`` for the cases that have them.

plus ``asarray`` (convert a NumPy input once, outside the timed region) and
``set_num_threads``. ``k``, ``stride`` and ``padding`` are ints (square), except
that a conv ``padding`` may also be per side ``((top, bottom), (left, right))``
or ``'same'`` at any stride (TensorFlow's rule, ``shapes.conv_sides``): fastconv
and the reference take it as is; PyTorch and NumPy pad explicitly first, as
their users must (``F.conv2d`` has no per-side padding, nor 'same' with a stride).

* ``fastconv`` - the package's functional API.
* ``naive``    - ``fastconv.reference`` (plain loops); far too slow for whole
  batches, so the harness times it on a few images and scales (``scaled = True``).
* ``numpy``    - im2col + one BLAS GEMM forward; backward dW by GEMM and dX by
  GEMM + col2im as a loop over kernel offsets: what a careful NumPy user writes.
* ``torch``    - ``torch.nn.functional`` forward and the ATen backward kernels
  that autograd calls (``convolution_backward``, ``max_pool2d_with_indices_backward``,
  ``avg_pool2d_backward``), called directly so no graph is built.
"""

import importlib

import numpy as np

from shapes import conv_sides, out_size, symmetric

try:  # NumPy's BLAS thread count; optional
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl is in the [test] extra
    threadpool_limits = None


class Impl:
    name = "?"
    scaled = False      # timed on a reduced batch and scaled linearly to N

    def asarray(self, a):
        return a

    def to_numpy(self, a):
        return a

    def set_num_threads(self, n):
        pass

    def supports(self, case):
        return True

    def team_counters(self):
        """Counters of the implementation's thread-team controller, or None."""
        return None


class FastconvImpl(Impl):
    """``fastconv``'s functional API; also used for ``fastconv.reference``."""

    def __init__(self, module="fastconv", name="fastconv"):
        self.name = name
        self.mod = importlib.import_module(module)

    def set_num_threads(self, n):
        # fastconv.reference is single-threaded Python and has no thread control
        if hasattr(self.mod, "set_num_threads"):
            self.mod.set_num_threads(n)

    def team_counters(self):
        # fastconv.reference has no team
        if not hasattr(self.mod, "info"):
            return None
        team = self.mod.info()["team"]
        return {k: team[k] for k in ("parallel_regions", "late_regions", "backoffs",
                                     "descheduled_regions", "stalled_regions", "waited_s")}

    def conv_fwd(self, x, w, b, stride, padding):
        return self.mod.conv2d(x, w, b, stride=stride, padding=padding)

    def conv_bwd(self, gy, x, w, stride, padding):
        return self.mod.conv2d_backward(gy, x, w, stride=stride, padding=padding)

    def maxpool_fwd(self, x, k, stride, padding, return_indices=False, ceil_mode=False):
        return self.mod.max_pool2d(x, k, stride, padding, ceil_mode=ceil_mode,
                                   return_indices=return_indices)

    def maxpool_bwd(self, gy, indices, x_shape, k, stride, padding, ceil_mode=False):
        return self.mod.max_pool2d_backward(gy, indices, x_shape)

    def avgpool_fwd(self, x, k, stride, padding, ceil_mode=False):
        return self.mod.avg_pool2d(x, k, stride, padding, ceil_mode=ceil_mode)

    def avgpool_bwd(self, gy, x_shape, k, stride, padding, ceil_mode=False):
        return self.mod.avg_pool2d_backward(gy, x_shape, k, stride, padding,
                                            ceil_mode=ceil_mode)


class NaiveImpl(FastconvImpl):
    scaled = True

    def __init__(self):
        super().__init__("fastconv.reference", "naive")


# ---------------------------------------------------------------------------
# NumPy
# ---------------------------------------------------------------------------
def _numpy_supports(case):
    """The NumPy baseline pools with symmetric padding in floor mode only."""
    return getattr(case, "pads", None) is None and not getattr(case, "ceil_mode", False)


def _pad(x, p, value=0.0):
    if p == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=value)


def _pad_sides(x, sides):
    t, b, l, r = sides
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))


def _offset_slices(kh, kw, s, ho, wo):
    """(i, j, slice_h, slice_w) of each kernel tap over the padded input."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + s * (ho - 1) + 1, s), slice(j, j + s * (wo - 1) + 1, s)


def im2col(x, kh, kw, s, p):
    """(N, C, H, W) -> (C*kh*kw, N*Ho*Wo), rows in the OIHW weight order."""
    n, c, h, w = x.shape
    ho, wo = out_size(h, kh, s, p), out_size(w, kw, s, p)
    xp = _pad(x, p)
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i, j, sh, sw in _offset_slices(kh, kw, s, ho, wo):
        cols[:, i, j] = xp[:, :, sh, sw].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * ho * wo)


class NumpyImpl(Impl):
    name = "numpy"

    def set_num_threads(self, n):
        if threadpool_limits is not None:
            # kept alive: the limit holds until the next call replaces it
            self._limits = threadpool_limits(limits=n, user_api="blas")

    def conv_fwd(self, x, w, b, stride, padding):
        sides = conv_sides(padding, x.shape, w.shape, stride)
        if symmetric(sides) is None:
            return self.conv_fwd(_pad_sides(x, sides), w, b, stride, 0)
        padding = symmetric(sides)
        n, c, h, wd = x.shape
        k, _, kh, kw = w.shape
        ho, wo = out_size(h, kh, stride, padding), out_size(wd, kw, stride, padding)
        y = np.matmul(w.reshape(k, -1), im2col(x, kh, kw, stride, padding))
        y = y.reshape(k, n, ho, wo).transpose(1, 0, 2, 3)
        out = np.empty((n, k, ho, wo), dtype=x.dtype)
        if b is None:
            np.copyto(out, y)
        else:
            np.add(y, b.reshape(1, k, 1, 1), out=out)
        return out

    def conv_bwd(self, gy, x, w, stride, padding):
        sides = conv_sides(padding, x.shape, w.shape, stride)
        if symmetric(sides) is None:
            t, _, l, _ = sides
            gx, gw, gb = self.conv_bwd(gy, _pad_sides(x, sides), w, stride, 0)
            return np.ascontiguousarray(gx[:, :, t:t + x.shape[2], l:l + x.shape[3]]), gw, gb
        padding = symmetric(sides)
        n, c, h, wd = x.shape
        k, _, kh, kw = w.shape
        _, _, ho, wo = gy.shape
        gy_m = gy.transpose(1, 0, 2, 3).reshape(k, n * ho * wo)
        gw = np.matmul(gy_m, im2col(x, kh, kw, stride, padding).T).reshape(w.shape)
        gb = gy.sum(axis=(0, 2, 3))
        dcols = np.matmul(w.reshape(k, -1).T, gy_m).reshape(c, kh, kw, n, ho, wo)
        gxp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding), dtype=x.dtype)
        for i, j, sh, sw in _offset_slices(kh, kw, stride, ho, wo):
            gxp[:, :, sh, sw] += dcols[:, i, j].transpose(1, 0, 2, 3)
        gx = gxp[:, :, padding:padding + h, padding:padding + wd] if padding else gxp
        return np.ascontiguousarray(gx), gw, gb

    def supports(self, case):
        return case.kind != "pool" or _numpy_supports(case)

    def maxpool_fwd(self, x, k, stride, padding, return_indices=False):
        n, c, h, w = x.shape
        ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
        xp = _pad(x, padding, -np.inf)
        taps = _offset_slices(k, k, stride, ho, wo)
        _, _, sh, sw = next(taps)
        y = xp[:, :, sh, sw].copy()
        if not return_indices:
            for _, _, sh, sw in taps:
                np.maximum(y, xp[:, :, sh, sw], out=y)
            return y
        # flat index h*W + w of tap (i, j) = base + (i - p)*W + (j - p)
        base = (np.arange(ho)[:, None] * stride * w + np.arange(wo) * stride).astype(np.int64)
        idx = np.broadcast_to(base - padding * w - padding, y.shape).copy()
        for i, j, sh, sw in taps:
            v = xp[:, :, sh, sw]
            better = v > y          # strict: ties keep the first tap in raster order
            np.copyto(y, v, where=better)
            np.copyto(idx, base + (i - padding) * w + (j - padding), where=better)
        return y, idx

    def maxpool_bwd(self, gy, indices, x_shape, k, stride, padding):
        n, c, h, w = x_shape
        plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1) * (h * w)
        gx = np.bincount((indices + plane).ravel(), weights=gy.ravel(), minlength=n * c * h * w)
        return gx.astype(gy.dtype, copy=False).reshape(x_shape)

    def avgpool_fwd(self, x, k, stride, padding):
        n, c, h, w = x.shape
        ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
        xp = _pad(x, padding)
        y = np.zeros((n, c, ho, wo), dtype=x.dtype)
        for _, _, sh, sw in _offset_slices(k, k, stride, ho, wo):
            y += xp[:, :, sh, sw]
        y *= x.dtype.type(1.0 / (k * k))     # count_include_pad=True
        return y

    def avgpool_bwd(self, gy, x_shape, k, stride, padding):
        n, c, h, w = x_shape
        _, _, ho, wo = gy.shape
        g = gy * gy.dtype.type(1.0 / (k * k))
        gxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=gy.dtype)
        for _, _, sh, sw in _offset_slices(k, k, stride, ho, wo):
            gxp[:, :, sh, sw] += g
        gx = gxp[:, :, padding:padding + h, padding:padding + w] if padding else gxp
        return np.ascontiguousarray(gx)


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------
class TorchImpl(Impl):
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.F = torch.nn.functional
        self.aten = torch.ops.aten
        self._shape_tensors = {}
        self._pad_cache = (None, None, None)  # (key, input kept alive, padded input)

    def set_num_threads(self, n):
        self.torch.set_num_threads(n)

    def asarray(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a))

    def to_numpy(self, a):
        return a.numpy()

    def _like(self, shape, dtype):
        # the ATen pooling backward kernels take the input only for its
        # shape; keep one per shape so it is not allocated inside the timing
        key = (tuple(shape), dtype)
        if key not in self._shape_tensors:
            self._shape_tensors[key] = self.torch.empty(shape, dtype=dtype)
        return self._shape_tensors[key]

    def conv_fwd(self, x, w, b, stride, padding):
        sides = conv_sides(padding, tuple(x.shape), tuple(w.shape), stride)
        if symmetric(sides) is None:  # F.pad then an unpadded conv: what a user writes
            t, b_, l, r = sides
            return self.F.conv2d(self.F.pad(x, (l, r, t, b_)), w, b, stride, 0)
        return self.F.conv2d(x, w, b, stride, symmetric(sides))

    def _padded(self, x, sides):
        # autograd keeps F.pad's output from the forward for the backward: pad
        # once per input array, outside the backward's timing
        t, b, l, r = sides
        key = (id(x), sides)
        if self._pad_cache[0] != key:
            self._pad_cache = (key, x, self.F.pad(x, (l, r, t, b)))
        return self._pad_cache[2]

    def conv_bwd(self, gy, x, w, stride, padding):
        sides = conv_sides(padding, tuple(x.shape), tuple(w.shape), stride)
        if symmetric(sides) is None:
            gx, gw, gb = self.aten.convolution_backward(
                gy, self._padded(x, sides), w, [w.shape[0]], [stride] * 2, [0, 0], [1, 1],
                False, [0, 0], 1, [True, True, True])
            t, _, l, _ = sides  # F.pad's backward: a view of the padded gradient
            return gx[:, :, t:t + x.shape[2], l:l + x.shape[3]], gw, gb
        return self.aten.convolution_backward(
            gy, x, w, [w.shape[0]], [stride] * 2, [symmetric(sides)] * 2, [1, 1],
            False, [0, 0], 1, [True, True, True])

    # Per-side padding: PyTorch's pooling has none, so a model exported with it
    # (TensorFlow's 'same') runs as F.pad + pooling; the backward as pooling's
    # backward on the padded shape, then the slice of the real input.
    @staticmethod
    def _sides(padding):
        return padding if isinstance(padding, tuple) else None

    def maxpool_fwd(self, x, k, stride, padding, return_indices=False, ceil_mode=False):
        sides = self._sides(padding)
        if sides is not None:
            (t, b), (left, r) = sides
            x, padding = self.F.pad(x, (left, r, t, b), value=-float("inf")), 0
        return self.F.max_pool2d(x, k, stride, padding, ceil_mode=ceil_mode,
                                 return_indices=return_indices)

    def _unpadded(self, gx, sides, x_shape):
        (t, _), (left, _) = sides
        return gx[:, :, t:t + x_shape[2], left:left + x_shape[3]]

    def _padded_shape(self, x_shape, sides):
        if sides is None:
            return x_shape
        (t, b), (left, r) = sides
        return (x_shape[0], x_shape[1], x_shape[2] + t + b, x_shape[3] + left + r)

    def maxpool_bwd(self, gy, indices, x_shape, k, stride, padding, ceil_mode=False):
        sides = self._sides(padding)
        p = 0 if sides is not None else padding
        gx = self.aten.max_pool2d_with_indices_backward(
            gy, self._like(self._padded_shape(x_shape, sides), gy.dtype), [k, k],
            [stride] * 2, [p] * 2, [1, 1], ceil_mode, indices)
        return gx if sides is None else self._unpadded(gx, sides, x_shape)

    def avgpool_fwd(self, x, k, stride, padding, ceil_mode=False):
        sides = self._sides(padding)
        if sides is not None:   # zeros counted in the divisor: count_include_pad=True
            (t, b), (left, r) = sides
            x, padding = self.F.pad(x, (left, r, t, b)), 0
        return self.F.avg_pool2d(x, k, stride, padding, ceil_mode=ceil_mode)

    def avgpool_bwd(self, gy, x_shape, k, stride, padding, ceil_mode=False):
        sides = self._sides(padding)
        p = 0 if sides is not None else padding
        gx = self.aten.avg_pool2d_backward(
            gy, self._like(self._padded_shape(x_shape, sides), gy.dtype), [k, k],
            [stride] * 2, [p] * 2, ceil_mode, True, None)
        return gx if sides is None else self._unpadded(gx, sides, x_shape)


IMPL_ORDER = ("fastconv", "torch", "numpy", "naive")
_FACTORIES = {
    "fastconv": FastconvImpl,
    "naive": NaiveImpl,
    "numpy": NumpyImpl,
    "torch": TorchImpl,
}


def load(names):
    """Instantiate the named implementations; returns (impls, {name: why skipped})."""
    impls, skipped = {}, {}
    for name in names:
        try:
            impls[name] = _FACTORIES[name]()
        except Exception as exc:   # an absent torch or an unbuilt fastconv is a skip
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return impls, skipped
