"""Ready-made networks for 28x28 single-channel images (MNIST).

Both functions return an uncompiled ``fastconv.nn.Sequential``::

    model = fastconv.models.lenet5(seed=0)
    model.compile(optimizer=fastconv.optim.Adam(model.parameters(), lr=1e-3),
                  loss="cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=1)

Hidden conv/dense layers use He-normal weights (they feed ReLUs); the output
(logits) layer uses Glorot-uniform; all biases start at zero.
"""

from __future__ import annotations

from typing import Any, Dict, Union

import numpy as np
from numpy.typing import DTypeLike

from . import nn

# What seeds a model's weights (and dropout masks): an int, a Generator or fresh entropy.
Seed = Union[None, int, np.random.Generator]

__all__ = ["lenet5", "mnist_cnn"]


def _rngs(seed, n):
    if isinstance(seed, np.random.Generator):
        seed = seed.integers(2**63)
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def lenet5(seed: Seed = None, dtype: DTypeLike = np.float32, num_classes: int = 10,
           in_channels: int = 1) -> nn.Sequential:
    """LeNet-5 (ReLU / max-pool variant) for 28x28 inputs; 61,706 parameters.

    conv 6@5x5 pad 2 - ReLU - max-pool 2 - conv 16@5x5 - ReLU - max-pool 2 -
    flatten - dense 120 - ReLU - dense 84 - ReLU - dense ``num_classes``.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        Seeds the initial weights (None: fresh entropy).
    dtype : float32 or float64, default float32
    num_classes : int, default 10
    in_channels : int, default 1

    Returns
    -------
    Sequential
        Uncompiled; input (N, in_channels, 28, 28), output logits (N, num_classes).
    """
    (rng,) = _rngs(seed, 1)
    kw: Dict[str, Any] = {"rng": rng, "dtype": dtype}
    return nn.Sequential([
        nn.Conv2d(in_channels, 6, 5, padding=2, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, **kw),
        nn.ReLU(),
        nn.Linear(120, 84, **kw),
        nn.ReLU(),
        nn.Linear(84, num_classes, weight_init="glorot_uniform", **kw),
    ])


def mnist_cnn(seed: Seed = None, dtype: DTypeLike = np.float32, num_classes: int = 10,
              in_channels: int = 1, dropout: float = 0.5) -> nn.Sequential:
    """The TensorFlow-tutorial MNIST CNN for 28x28 inputs; 3,274,634 parameters.

    conv 32@5x5 same - ReLU - max-pool 2 - conv 64@5x5 same - ReLU - max-pool 2 -
    flatten - dense 1024 - ReLU - dropout - dense ``num_classes``.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        Seeds the initial weights and the dropout masks.
    dtype : float32 or float64, default float32
    num_classes : int, default 10
    in_channels : int, default 1
    dropout : float, default 0.5
        Drop probability.

    Returns
    -------
    Sequential
        Uncompiled; input (N, in_channels, 28, 28), output logits (N, num_classes).
    """
    rng, drop_rng = _rngs(seed, 2)
    kw: Dict[str, Any] = {"rng": rng, "dtype": dtype}
    return nn.Sequential([
        nn.Conv2d(in_channels, 32, 5, padding="same", **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding="same", **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 1024, **kw),
        nn.ReLU(),
        nn.Dropout(dropout, rng=drop_rng),
        nn.Linear(1024, num_classes, weight_init="glorot_uniform", **kw),
    ])
