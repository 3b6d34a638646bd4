"""Type stubs for the compiled Cython bridge ``fastconv._kernels``.

This module is private: use the checked API in ``fastconv`` (``fastconv.conv2d``
and friends), which validates shapes and dtypes, allocates outputs and picks
the thread count before calling these. Every kernel here takes C-contiguous
arrays (4-D for conv and pooling, 1-D for relu) of one floating dtype (float32 or float64: the Cython fused type
``floating``), writes into the caller's output arrays (arguments after
``nthreads``) and returns nothing, except where noted.

``geom`` is a tuple of ints in the field order of the C structs in
``csrc/fastconv.h``:

* conv: ``(n, c, h, w, k, kh, kw, ho, wo, sh, sw, ph, pw, ph_end, pw_end, dh, dw, groups)``
  (padding before: top, left; after: bottom, right)
* pool: ``(n, c, h, w, kh, kw, ho, wo, sh, sw, ph, pw, ph_end, pw_end, dh, dw)``
"""

from typing import Dict, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

__test__: dict[str, str]  # Cython's doctest table

_Float = NDArray[np.floating]
_Int64 = NDArray[np.int64]
_ConvGeom = Tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int,
                  int, int]
_PoolGeom = Tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int]

def conv2d_forward(
    x: _Float,
    w: _Float,
    bias: Optional[_Float],
    geom: _ConvGeom,
    relu: bool,
    nthreads: int,
    y: _Float,
) -> None: ...
def conv2d_grad_input(
    gy: _Float, w: _Float, geom: _ConvGeom, nthreads: int, gx: _Float
) -> None: ...
def conv2d_grad_weight(
    gy: _Float,
    x: _Float,
    geom: _ConvGeom,
    nthreads: int,
    gw: _Float,
    gb: Optional[_Float],
) -> None: ...
# Winograd F(2x2, 5x5) / F(4x4, 3x3): float32 only; 5x5 or 3x3, stride 1, dilation 1,
# groups 1, padding <= kernel size - 1.
def conv2d_forward_winograd(
    x: _Float,
    w: _Float,
    bias: Optional[_Float],
    geom: _ConvGeom,
    relu: bool,
    nthreads: int,
    y: _Float,
) -> None: ...
def conv2d_grad_input_winograd(
    gy: _Float, w: _Float, geom: _ConvGeom, nthreads: int, gx: _Float
) -> None: ...
# Row-Winograd F(5, 5) (fc_rowwino.c): float32, 5x5, stride 1, dilation 1, groups 1,
# padding <= 4; below AVX-512 they run conv2d_forward / conv2d_grad_input.
def conv2d_forward_winograd_rows(
    x: _Float,
    w: _Float,
    bias: Optional[_Float],
    geom: _ConvGeom,
    relu: bool,
    nthreads: int,
    y: _Float,
) -> None: ...
def conv2d_grad_input_winograd_rows(
    gy: _Float, w: _Float, geom: _ConvGeom, nthreads: int, gx: _Float
) -> None: ...
def conv2d_grad_weight_winograd(
    gy: _Float,
    x: _Float,
    geom: _ConvGeom,
    nthreads: int,
    gw: _Float,
    gb: Optional[_Float],
) -> None: ...
# Row Winograd F(5, 5) grad_weight: float32 only; 5x5, stride 1, dilation 1, groups 1
# (another layer, or no AVX-512: the direct routes).
def winograd_rows_grad_weight_fits(geom: _ConvGeom) -> bool: ...
def conv2d_grad_weight_winograd_rows(
    gy: _Float,
    x: _Float,
    geom: _ConvGeom,
    nthreads: int,
    gw: _Float,
    gb: Optional[_Float],
) -> None: ...
def max_pool2d_forward(
    x: _Float, geom: _PoolGeom, nthreads: int, y: _Float, idx: Optional[_Int64]
) -> None: ...
def max_pool2d_backward(
    gy: _Float, idx: _Int64, geom: _PoolGeom, nthreads: int, gx: _Float
) -> bool:
    """False if an index was outside its input plane (those were skipped)."""
def avg_pool2d_forward(
    x: _Float, geom: _PoolGeom, count_include_pad: bool, nthreads: int, y: _Float
) -> None: ...
def avg_pool2d_backward(
    gy: _Float, geom: _PoolGeom, count_include_pad: bool, nthreads: int, gx: _Float
) -> None: ...
def relu_forward(x: _Float, nthreads: int, y: _Float) -> None: ...
def relu_backward(gy: _Float, y: _Float, nthreads: int, gx: _Float) -> None: ...
OPTIM_SGD: int
OPTIM_ADAGRAD: int
OPTIM_RMSPROP: int
OPTIM_ADAM: int
def optim_step(hyper: tuple, tensors: list, f64: bool, nthreads: int) -> None: ...

def simd_level() -> int: ...
def simd_supported() -> int: ...
def set_simd_level(level: int) -> int: ...
def simd_name(level: int) -> str: ...
def _simd_levels_used(reset: bool = False) -> set: ...
def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def set_max_threads(n: int) -> None: ...
def forked_child() -> bool: ...
def thread_limit() -> int: ...
def team_stats() -> dict: ...
def team_reset(backoff_s: float = 0.0, strikes: int = 0) -> None: ...
def team_region_late(total_s: float, work_s: float, late_s: float, off_s: float) -> bool: ...
def team_simulate_full(full: Optional[bool]) -> None: ...
def team_simulate_sched(waited: Optional[bool]) -> None: ...
def team_run_delay() -> Optional[float]: ...
def team_cores_full() -> bool: ...
def team_adaptive(on: Optional[bool] = None) -> bool: ...
def set_route_override(name: str, value: Optional[int]) -> None: ...
def team_simulate_late(wait_s: float, regions: int, then_s: float = -1.0) -> None: ...
def release_scratch() -> None: ...
def scratch_bytes() -> int: ...
def compiler() -> str: ...
def gemm(
    transa: bool,
    transb: bool,
    a: _Float,
    b: _Float,
    bias: Optional[_Float],
    bias_mode: int,
    accumulate: bool,
    nthreads: int,
    c: _Float,
) -> None: ...
def colsum(a: _Float, accumulate: bool, nthreads: int, out: _Float) -> None: ...
def winograd_weights(w: _Float, nthreads: int, u: _Float) -> None: ...  # w: (k, c, 5 or 3, same)
def conv2d_forward_winograd_pre(
    x: _Float, u: _Float, bias: Optional[_Float], geom: Tuple[int, ...], relu: bool,
    nthreads: int, y: _Float
) -> None: ...
def winograd_packed_len(geom: Tuple[int, ...]) -> int: ...
def winograd_pack(up: _Float, geom: Tuple[int, ...]) -> None: ...
def linear_forward_kmajor(
    x: _Float, wt: _Float, bias: Optional[_Float], nthreads: int, y: _Float
) -> None: ...
def linear_forward_panels(
    x: _Float, wp: _Float, bias: Optional[_Float], nthreads: int, y: _Float
) -> None: ...
def sole_reference(obj: object, name: str) -> bool: ...
def linear_backward(
    gy: _Float,
    x: _Float,
    w: _Float,
    accumulate: bool,
    nthreads: int,
    gx: Optional[_Float],
    gw: Optional[_Float],
    gb: Optional[_Float],
) -> None: ...

SIMD_LEVELS: Dict[str, int]
PARALLEL_MIN_WORK: float
MAX_TEAM: int
DW_DOT_MAX: int
DX_COL2IM_MAX_C: int
KMAJOR_PAD: int
OP_CONV: int
OP_WINO: int
OP_MAXPOOL: int
OP_AVGPOOL: int
OP_RELU: int
OP_RELU_NUMPY: int
OP_LINEAR: int
LINEAR_KMAJOR: int
LINEAR_PANELS: int
OP_CONV_POOL: int
OP_WINO_POOL: int
OP_WINO_ROWS: int
OP_WINO_ROWS_POOL: int

class PlanProgram:
    def __init__(self, ops: list, nslots: int) -> None: ...
    def run(self, arrays: list, variants: list, nthreads: int) -> None: ...
