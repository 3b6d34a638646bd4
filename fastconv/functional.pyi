"""Type stubs for ``fastconv.functional`` (the kernel API, re-exported as ``fastconv.<name>``).

Array inputs accept anything NumPy converts to a float32 or float64 array;
results are ndarrays of the input's dtype. Shapes and semantics are in the
docstrings of the implementation (and docs/api.md).
"""

from typing import Any, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__version__: str
__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv2d_output_shape",
    "conv1d",
    "conv1d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
    "relu",
    "relu_backward",
    "linear",
    "linear_backward",
    "set_num_threads",
    "get_num_threads",
    "openmp_enabled",
    "info",
    "simd_level",
    "set_simd_level",
    "set_winograd",
    "release_memory",
]

_Array = NDArray[Any]
_Int2 = Union[int, Tuple[int, int], Sequence[int]]
_Shape = Sequence[int]
# p, (ph, pw), per side ((top, bottom), (left, right)), 'valid' or 'same'
_ConvPadding = Union[_Int2, Tuple[_Int2, _Int2], Sequence[Sequence[int]], str]
# 1-D: p, (left, right), 'valid' or 'same'
_Padding1d = Union[int, Tuple[int, int], Sequence[int], str]
_Int1 = Union[int, Sequence[int]]

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def openmp_enabled() -> bool: ...
def simd_level() -> str: ...
def set_simd_level(name: str) -> str: ...
def set_winograd(mode: Optional[bool]) -> Optional[bool]: ...
def release_memory() -> None: ...
def info() -> dict[str, Any]: ...
def conv2d_output_shape(
    input_shape: _Shape,
    weight_shape: _Shape,
    stride: _Int2 = 1,
    padding: _ConvPadding = 0,
    dilation: _Int2 = 1,
    groups: int = 1,
) -> Tuple[int, int, int, int]: ...
def conv2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: _Int2 = 1,
    padding: _ConvPadding = 0,
    dilation: _Int2 = 1,
    groups: int = 1,
    *,
    out: _Array | None = None,
    activation: Literal["relu"] | None = None,
) -> _Array: ...
def conv2d_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: _Int2 = 1,
    padding: _ConvPadding = 0,
    dilation: _Int2 = 1,
    groups: int = 1,
    *,
    output_mask: Sequence[bool] = (True, True, True),
    out: Sequence[_Array | None] | None = None,
    relu_output: ArrayLike | None = None,
) -> Tuple[_Array | None, _Array | None, _Array | None]: ...
# p, (ph, pw) or per side ((top, bottom), (left, right)); 1-D: p or (left, right)
_PoolPadding = Union[_Int2, Tuple[Tuple[int, int], Tuple[int, int]], Sequence[Sequence[int]]]

def conv1d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: _Int1 = 1,
    padding: _Padding1d = 0,
    dilation: _Int1 = 1,
    groups: int = 1,
    *,
    out: _Array | None = None,
    activation: Literal["relu"] | None = None,
) -> _Array: ...
def conv1d_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: _Int1 = 1,
    padding: _Padding1d = 0,
    dilation: _Int1 = 1,
    groups: int = 1,
    *,
    output_mask: Sequence[bool] = (True, True, True),
    out: Sequence[_Array | None] | None = None,
    relu_output: ArrayLike | None = None,
) -> Tuple[_Array | None, _Array | None, _Array | None]: ...
@overload
def max_pool2d(
    x: ArrayLike,
    kernel_size: _Int2,
    stride: _Int2 | None = None,
    padding: _PoolPadding = 0,
    dilation: _Int2 = 1,
    *,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
    out: _Array | None = None,
    indices_out: NDArray[np.int64] | None = None,
) -> _Array: ...
@overload
def max_pool2d(
    x: ArrayLike,
    kernel_size: _Int2,
    stride: _Int2 | None = None,
    padding: _PoolPadding = 0,
    dilation: _Int2 = 1,
    *,
    ceil_mode: bool = False,
    return_indices: Literal[True],
    out: _Array | None = None,
    indices_out: NDArray[np.int64] | None = None,
) -> Tuple[_Array, NDArray[np.int64]]: ...
@overload
def max_pool2d(
    x: ArrayLike,
    kernel_size: _Int2,
    stride: _Int2 | None = None,
    padding: _PoolPadding = 0,
    dilation: _Int2 = 1,
    *,
    ceil_mode: bool = False,
    return_indices: bool,
    out: _Array | None = None,
    indices_out: NDArray[np.int64] | None = None,
) -> _Array | Tuple[_Array, NDArray[np.int64]]: ...
def max_pool2d_backward(
    grad_out: ArrayLike,
    indices: ArrayLike,
    input_shape: _Shape,
    *,
    out: _Array | None = None,
) -> _Array: ...
def avg_pool2d(
    x: ArrayLike,
    kernel_size: _Int2,
    stride: _Int2 | None = None,
    padding: _PoolPadding = 0,
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    dilation: _Int2 = 1,
    out: _Array | None = None,
) -> _Array: ...
def avg_pool2d_backward(
    grad_out: ArrayLike,
    input_shape: _Shape,
    kernel_size: _Int2,
    stride: _Int2 | None = None,
    padding: _PoolPadding = 0,
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    dilation: _Int2 = 1,
    out: _Array | None = None,
) -> _Array: ...
@overload
def max_pool1d(
    x: ArrayLike,
    kernel_size: _Int1,
    stride: _Int1 | None = None,
    padding: Union[int, Tuple[int, int], Sequence[int]] = 0,
    dilation: _Int1 = 1,
    *,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> _Array: ...
@overload
def max_pool1d(
    x: ArrayLike,
    kernel_size: _Int1,
    stride: _Int1 | None = None,
    padding: Union[int, Tuple[int, int], Sequence[int]] = 0,
    dilation: _Int1 = 1,
    *,
    ceil_mode: bool = False,
    return_indices: Literal[True],
) -> Tuple[_Array, NDArray[np.int64]]: ...
@overload
def max_pool1d(
    x: ArrayLike,
    kernel_size: _Int1,
    stride: _Int1 | None = None,
    padding: Union[int, Tuple[int, int], Sequence[int]] = 0,
    dilation: _Int1 = 1,
    *,
    ceil_mode: bool = False,
    return_indices: bool,
) -> _Array | Tuple[_Array, NDArray[np.int64]]: ...
def max_pool1d_backward(grad_out: ArrayLike, indices: ArrayLike, input_shape: _Shape) -> _Array: ...
def avg_pool1d(
    x: ArrayLike,
    kernel_size: _Int1,
    stride: _Int1 | None = None,
    padding: Union[int, Tuple[int, int], Sequence[int]] = 0,
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    dilation: _Int1 = 1,
) -> _Array: ...
def avg_pool1d_backward(
    grad_out: ArrayLike,
    input_shape: _Shape,
    kernel_size: _Int1,
    stride: _Int1 | None = None,
    padding: Union[int, Tuple[int, int], Sequence[int]] = 0,
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    dilation: _Int1 = 1,
) -> _Array: ...
def relu(x: ArrayLike, *, out: _Array | None = None) -> _Array: ...
def relu_backward(
    grad_out: ArrayLike, output: ArrayLike, *, out: _Array | None = None
) -> _Array: ...
def linear(
    x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, *, out: _Array | None = None
) -> _Array: ...
def linear_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    *,
    output_mask: Sequence[bool] = (True, True, True),
    out: Tuple[_Array | None, _Array | None, _Array | None] | None = None,
    accumulate: bool = False,
) -> Tuple[_Array | None, _Array | None, _Array | None]: ...
