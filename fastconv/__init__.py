"""fastconv: fast CPU conv2d and pooling kernels with a small CNN training API.

The kernels (``conv2d``, ``max_pool2d``, ``avg_pool2d`` and their gradients)
are C with OpenMP behind a thin Cython layer; everything else is NumPy.
Submodules are imported on first use so that ``import fastconv`` stays cheap:

* ``fastconv.reference`` - the same kernels as plain nested loops (test oracle)
* ``fastconv.nn``, ``fastconv.optim``, ``fastconv.models`` - layers, optimisers,
  ready-made LeNet-5 and MNIST CNN, Keras-style ``Sequential``
* ``fastconv.datasets`` - MNIST (IDX) loading, batching, data expansion
* ``fastconv.onnx`` - ONNX export and import (needs the optional ``onnx`` package
  when called, not when imported)
"""

import importlib.machinery as _machinery
import os as _os
import sys as _sys


def _installed_copy(here):
    """Where an installed fastconv with compiled kernels lives, if this copy has none.

    ``python -m fastconv`` (and ``python -c``, ``python -m pytest``) run from the
    root of a source checkout import the checkout's ``fastconv/`` folder first;
    when it was never built there, the package installed elsewhere on the import
    path is used instead of failing. None when this copy has its kernels or no
    other copy does.
    """
    def has_kernels(folder):
        return any(_os.path.isfile(_os.path.join(folder, "_kernels" + suffix))
                   for suffix in _machinery.EXTENSION_SUFFIXES)

    here = _os.path.dirname(_os.path.abspath(here))
    if has_kernels(here):
        return None
    for entry in _sys.path:
        folder = _os.path.join(_os.path.abspath(entry or _os.curdir), "fastconv")
        if folder != here and _os.path.isfile(_os.path.join(folder, "__init__.py")) \
                and has_kernels(folder):
            return folder
    return None


_other = _installed_copy(__file__)
if _other is not None:
    # Become that package: its submodules (the compiled kernels included) and its
    # own __init__, run in this module, so no source file of the checkout is mixed in.
    __path__[:] = [_other]
    __file__ = _os.path.join(_other, "__init__.py")
    with open(__file__, encoding="utf-8") as _f:
        exec(compile(_f.read(), __file__, "exec"))
else:
    import importlib as _importlib

    from ._version import __version__
    from .functional import (
        avg_pool2d,
        avg_pool2d_backward,
        conv1d,
        conv1d_backward,
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

    _SUBMODULES = ("reference", "nn", "optim", "models", "datasets", "functional", "onnx")

    from typing import TYPE_CHECKING as _TYPE_CHECKING

    if _TYPE_CHECKING:  # what __getattr__ hands out, spelled out for type checkers
        from . import datasets, functional, models, nn, onnx, optim, reference
        from .nn.serialization import load_model

    __all__ = [
        "__version__",
        "conv2d",
        "conv2d_backward",
        "conv2d_output_shape",
        "conv1d",
        "conv1d_backward",
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
