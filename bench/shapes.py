"""The named benchmark grid: conv shapes a-f, pooling cases, FLOP counts and targets.

Every number the harness compares against lives here, so the table, the JSON and
the pytest-benchmark suites all read the same grid.

FLOPs are counted as in the project's anchors (``../shared/anchors/pytorch-cpu-baseline.md``
from the repository root):
forward = ``2 * N * K * Ho * Wo * (C / groups) * kh * kw`` (one multiply and one
add per weight tap, padding taps included); backward (dX + dW) = 2 x forward;
forward + backward = 3 x forward. The bias and its gradient are not counted.
Pooling does no arithmetic worth counting, so it has no GFLOP/s column.
"""

import math
from dataclasses import dataclass, replace
from typing import Tuple, Union


def out_size(size, k, s, p, d=1):
    """``floor((size + 2p - d(k-1) - 1) / s) + 1``, the torch output-size rule."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_sides(padding, x_shape, w_shape, stride):
    """``(top, bottom, left, right)`` of a conv case's padding: an int, per side
    ``((top, bottom), (left, right))``, or ``'same'`` with TensorFlow's rule
    (``ceil(n / s)`` outputs, the odd pixel at the bottom/right)."""
    if padding == "same":
        pads = []
        for n, k in zip(x_shape[2:], w_shape[2:]):
            total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, tuple):
        (t, b), (l, r) = padding
        return t, b, l, r
    return (padding,) * 4


def symmetric(sides):
    """The int padding of symmetric ``(top, bottom, left, right)``, else None."""
    return sides[0] if len(set(sides)) == 1 else None


@dataclass(frozen=True)
class ConvCase:
    name: str
    label: str
    N: int
    C: int
    H: int
    W: int
    K: int
    kernel: int
    stride: int = 1
    # an int, per side ((top, bottom), (left, right)) or 'same' (TensorFlow's rule)
    padding: Union[int, Tuple[Tuple[int, int], Tuple[int, int]], str] = 0
    groups: int = 1

    kind = "conv"

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C // self.groups, self.kernel, self.kernel)

    @property
    def out_shape(self):
        t, b, l, r = conv_sides(self.padding, self.x_shape, self.w_shape, self.stride)
        ho = (self.H + t + b - self.kernel) // self.stride + 1
        wo = (self.W + l + r - self.kernel) // self.stride + 1
        return (self.N, self.K, ho, wo)

    def with_batch(self, n):
        return replace(self, N=n)

    def flops(self, op):
        """FLOPs of one call of ``op`` ('fwd', 'bwd' or 'fwdbwd')."""
        n, k, ho, wo = self.out_shape
        fwd = 2 * n * k * ho * wo * (self.C // self.groups) * self.kernel * self.kernel
        return {"fwd": fwd, "bwd": 2 * fwd, "fwdbwd": 3 * fwd}[op]

    def describe(self):
        p = self.padding
        if isinstance(p, tuple):
            p = f"({p[0][0]},{p[0][1]})x({p[1][0]},{p[1][1]})"
        return (f"{self.N},{self.C},{self.H},{self.W}->{self.K} "
                f"{self.kernel}x{self.kernel} s{self.stride} p{p}")


@dataclass(frozen=True)
class PoolCase:
    name: str
    label: str
    N: int
    C: int
    H: int
    W: int
    kernel: int
    stride: int
    padding: int = 0

    kind = "pool"

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def out_shape(self):
        ho = out_size(self.H, self.kernel, self.stride, self.padding)
        wo = out_size(self.W, self.kernel, self.stride, self.padding)
        return (self.N, self.C, ho, wo)

    def with_batch(self, n):
        return replace(self, N=n)

    def flops(self, op):
        return None

    def describe(self):
        return (f"{self.N},{self.C},{self.H},{self.W} "
                f"{self.kernel}x{self.kernel} s{self.stride} p{self.padding}")


CONV_CASES = {c.name: c for c in [
    ConvCase("a", "LeNet conv1", 64, 1, 28, 28, 6, 5, 1, 2),
    ConvCase("b", "LeNet conv2", 64, 6, 14, 14, 16, 5, 1, 0),
    ConvCase("c", "MNIST-CNN conv1", 64, 1, 28, 28, 32, 5, 1, 2),
    ConvCase("d", "MNIST-CNN conv2", 64, 32, 14, 14, 64, 5, 1, 2),
    ConvCase("e", "VGG 3x3", 32, 64, 56, 56, 64, 3, 1, 1),
    ConvCase("f", "ResNet stem 7x7/2", 32, 3, 224, 224, 64, 7, 2, 3),
    # issue #13: the padding of exported TensorFlow/Keras networks
    ConvCase("g", "LeNet conv1, pads (2,3) per axis", 64, 1, 28, 28, 6, 5, 1, ((2, 3), (2, 3))),
    ConvCase("h", "Keras 3x3/2 'same' (pads 0,1)", 32, 64, 56, 56, 128, 3, 2, "same"),
]}

POOL_CASES = {c.name: c for c in [
    PoolCase("p1", "2x2/2 after MNIST-CNN conv1", 64, 32, 28, 28, 2, 2, 0),
    PoolCase("p2", "2x2/2 after LeNet conv1", 64, 6, 28, 28, 2, 2, 0),
    PoolCase("p3", "3x3/2 p1 (overlapping, ResNet-style)", 32, 64, 56, 56, 3, 2, 1),
]}

ALL_CASES = {**CONV_CASES, **POOL_CASES}

# op name -> which cases it runs on
OPS = {
    "conv": CONV_CASES,
    "maxpool": POOL_CASES,
    "avgpool": POOL_CASES,
}
PHASES = ("fwd", "bwd", "fwdbwd")


# ---------------------------------------------------------------------------
# Targets from the speed issue. "ratio" is alternative time / fastconv time,
# measured in the same process at the same thread count.
# ---------------------------------------------------------------------------
TORCH_FWDBWD_TARGET = {"a": 3.0, "b": 3.0, "c": 3.0, "d": 1.2, "e": 1.0, "f": 2.0}
POOL_TORCH_TARGET = {"p1": 5.0}          # max- and avg-pool fwd+bwd, (64,32,28,28) 2x2
PEAK_FRACTION_TARGET = {"e": 0.70}       # fastconv fwd+bwd GFLOP/s / measured peak
THREAD_SCALING_TARGET = {"d": 1.8, "e": 1.8}   # fastconv fwd+bwd time 1T / 2T
NAIVE_TARGET = 1000.0                    # every shape, reference / fastconv
NUMPY_TARGET = 5.0                       # every shape, numpy im2col / fastconv
FLOAT64_SLOWDOWN_MAX = 2.5               # fastconv float64 time / float32 time
TRAINING_TARGET = {"lenet5": 3.0, "mnist_cnn": 1.5}   # fastconv img/s / torch img/s
LENET_RSS_MAX_MIB = 300.0


def ratio_target(op, phase, case_name, impl):
    """The minimum ``impl / fastconv`` time ratio the issue asks for, or None."""
    if impl == "naive":
        return NAIVE_TARGET
    if impl == "numpy":
        return NUMPY_TARGET
    if impl == "torch" and phase == "fwdbwd":
        if op == "conv":
            return TORCH_FWDBWD_TARGET.get(case_name)
        return POOL_TORCH_TARGET.get(case_name)
    return None


def select(names, table):
    """Cases of ``table`` named in ``names`` (all of them if ``names`` is None)."""
    if names is None:
        return list(table.values())
    return [table[n] for n in names if n in table]
