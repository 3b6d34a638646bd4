"""Optimisers by name: the registry behind ``get_optimizer("adam")`` and saved models.

A saved model stores its optimiser as ``get_config()`` output, whose
``"class"`` is looked up here (``optimizer_from_config``), never by module
path, so moving a class between modules keeps old saves loadable.
"""

from __future__ import annotations

from typing import Dict

from .base import Optimizer

_OPTIMIZERS: Dict[str, type] = {}


def register_optimizer(*names):
    """Class decorator: make an ``Optimizer`` subclass reachable by name."""

    def deco(cls):
        for name in (cls.__name__,) + names:
            _OPTIMIZERS[name.lower()] = cls
        return cls

    return deco


def get_optimizer(optimizer, params=None):
    """Resolve an optimiser given as an instance, a class or a name.

    Parameters
    ----------
    optimizer : Optimizer, type or str
        Names (case-insensitive): ``"sgd"``, ``"adam"``, ``"adamw"``,
        ``"nadam"``, ``"adagrad"``, ``"rmsprop"``; built with default
        hyper-parameters. An instance built without parameters
        (``Adam(lr=1e-3)``) is bound to ``params``.
    params : iterable of Parameter or Module, optional
        Needed unless ``optimizer`` is an instance that has its parameters.

    Returns
    -------
    Optimizer

    Raises
    ------
    ValueError
        Unknown name.
    TypeError
        Not an optimiser.
    """
    if isinstance(optimizer, Optimizer):
        if not optimizer.bound and params is not None:
            optimizer.bind(params)   # Keras form: built before the model's parameters
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer(params)
    if isinstance(optimizer, str):
        cls = _OPTIMIZERS.get(optimizer.lower())
        if cls is None:
            raise ValueError(
                f"optimizer: unknown optimizer {optimizer!r}; expected one of {sorted(_OPTIMIZERS)}"
            )
        return cls(params)
    raise TypeError(
        f"optimizer: expected an Optimizer instance or a name, got {type(optimizer).__name__}"
    )


def optimizer_from_config(config, params):
    """Build an optimiser from ``get_config()`` output and a parameter list."""
    config = dict(config)
    name = config.pop("class", None)
    cls = _OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"optimizer: unknown optimizer class {name!r}")
    if "betas" in config:
        config["betas"] = tuple(config["betas"])
    groups = config.pop("param_groups", None)
    if groups is not None:
        # groups name their parameters by position in the optimiser's list
        params = list(params)
        built = []
        for group in groups:
            idx = group["params"]
            if any(not isinstance(i, int) or not 0 <= i < len(params) for i in idx):
                raise ValueError(
                    f"optimizer: parameter group refers to positions {idx}, "
                    f"but there are {len(params)} parameters")
            built.append(dict(group, params=[params[i] for i in idx]))
        params = built
    return cls(params, **config)
