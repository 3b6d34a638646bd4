"""What every layer shares: the registry of layer classes, argument checks, ``_Layer``.

The layers themselves live by kind: ``conv`` (``Conv2d``), ``pooling``,
``dense`` (``Linear``, ``Flatten``), ``activations``, ``normalization``
(``Dropout``, batch norm); ``fastconv.nn.layers`` gathers them under their
historical import path. All layers take and return NCHW arrays (dense
layers ``(N, features)``) of the layer's dtype (float32 by default, float64
for gradient checks); a layer with parameters raises ``TypeError`` for input
of another dtype rather than silently copying it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Literal, Tuple, Type, TypeVar, Union

import numpy as np

from .module import Module

# Types of the constructor arguments, for type checkers (the run-time checks are
# the validators below). Padding's Literal makes a typo such as 'samee' a type error.
IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]],
                Literal["same", "valid"]]
Padding1d = Union[int, Tuple[int, int], Literal["same", "valid"]]  # p or (left, right)
# A name in fastconv.nn.init or a callable (shape, rng, dtype) -> ndarray.
Initializer = Union[str, Callable[..., Any]]
RngLike = Union[None, int, np.random.Generator]
_ModuleT = TypeVar("_ModuleT", bound=Type[Module])

__all__ = ["register_layer", "get_layer_class", "layer_from_config"]

_LAYERS: Dict[str, Type[Module]] = {}


def register_layer(cls: _ModuleT) -> _ModuleT:
    """Class decorator: make a ``Module`` subclass loadable by name.

    ``load_model`` rebuilds every layer as ``cls(**config)`` from the class
    name and ``get_config()`` saved in the file, so a custom layer must be
    registered (and its module imported) before loading a model that uses it.

    Parameters
    ----------
    cls : type
        A ``Module`` subclass whose ``get_config()`` returns its constructor
        arguments.

    Returns
    -------
    cls
    """
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_layer: expected a Module subclass, got {cls!r}")
    _LAYERS[cls.__name__] = cls
    return cls


# Type[Any], not Type[Module]: the registered classes are called through
# ``from_config``, which only the concrete layer classes (not Module) define.
def get_layer_class(name: str) -> Type[Any]:
    """The registered layer class called ``name``.

    Raises
    ------
    ValueError
        No layer of that name is registered.
    """
    try:
        return _LAYERS[name]
    except KeyError:
        raise ValueError(
            f"unknown layer class {name!r}; registered layers: {sorted(_LAYERS)} "
            "(register custom layers with fastconv.nn.register_layer)"
        ) from None


def layer_from_config(spec: Dict[str, Any]) -> Module:
    """Build a layer from ``{"class": name, "config": {...}}``.

    Parameters
    ----------
    spec : dict

    Returns
    -------
    Module
    """
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(f"layer spec must be a dict with a 'class' key, got {spec!r}")
    return get_layer_class(spec["class"]).from_config(spec.get("config", {}))


def _layer_spec(layer):
    return {"class": type(layer).__name__, "config": layer.get_config()}


# -- argument checking (the shared ones are in fastconv._validate) ---------------
def _compact(pair):
    """(3, 3) -> 3 for configs and reprs; asymmetric pairs stay as lists."""
    if isinstance(pair, str):
        return pair
    return pair[0] if pair[0] == pair[1] else list(pair)


def _check_input(owner, x, ndim, dtype=None):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: input must be a numpy.ndarray, got {type(x).__name__}")
    if isinstance(ndim, int):
        ndim = (ndim,)
    if x.ndim not in ndim:
        want = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(f"{owner}: expected {want} input, got input of shape {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: expected input of dtype {dtype} (the layer's dtype), got {x.dtype}; "
            f"convert with x.astype(np.{dtype})"
        )
    if dtype is None and x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{owner}: expected float32 or float64 input, got {x.dtype}")


class _Layer(Module):
    @classmethod
    def from_config(cls, config):
        """Rebuild the layer from ``get_config()`` output (weights are fresh)."""
        return cls(**config)
