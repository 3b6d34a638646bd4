"""fastconv: fast CPU conv2d and pooling kernels with a small CNN training API.

The kernels (``conv2d``, ``max_pool2d``, ``avg_pool2d`` and their gradients)
are C with OpenMP behind a thin Cython layer; everything else is NumPy.
Submodules are imported on first use so that ``import fastconv`` stays cheap:

* ``fastconv.reference`` - the same kernels as plain nested loops (test oracle)
* ``fastconv.nn``, ``fastconv.optim``, ``fastconv.models`` - layers, optimisers,
  ready-made LeNet-5 and MNIST CNN, Keras-style ``Sequential``
* ``fastconv.datasets`` - MNIST (IDX) loading, batching, data expansion
"""

import importlib as _importlib

from ._version import __version__
from .functional import (
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    conv2d_output_shape,
    get_num_threads,
    info,
    linear,
    linear_backward,
    max_pool2d,
    max_pool2d_backward,
    openmp_enabled,
    relu,
    relu_backward,
    set_num_threads,
)

_SUBMODULES = ("reference", "nn", "optim", "models", "datasets", "functional")

__all__ = [
    "__version__",
    "conv2d",
    "conv2d_backward",
    "conv2d_output_shape",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "relu",
    "relu_backward",
    "linear",
    "linear_backward",
    "set_num_threads",
    "get_num_threads",
    "openmp_enabled",
    "info",
    "load_model",
    *_SUBMODULES,
]


def __getattr__(name):
    if name in _SUBMODULES:
        return _importlib.import_module("." + name, __name__)
    if name == "load_model":
        from .nn import load_model

        return load_model
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
