"""Learning-rate schedules: a map from epoch index to learning rate."""

from __future__ import annotations

import inspect
import math
from typing import Callable, List, Optional

import numpy as np

from .._validate import check_number
from .base import Optimizer


class LRSchedule:
    """Base class: a map from epoch index (0-based) to learning rate.

    Parameters
    ----------
    lr0 : float, optional
        Base rate. Default: each parameter group's ``initial_lr`` (the ``lr``
        it was built with), which also survives a checkpoint round trip.
    optimizer : Optimizer, optional
        Needed for ``step()`` and when ``lr0`` is not given. Building the
        schedule sets the optimiser's rate to that of epoch 0, as PyTorch's
        schedulers do.

    Notes
    -----
    Two ways to drive it, which give epoch ``e`` the same rate
    ``schedule(e)``:

    * PyTorch style: call ``schedule.step()`` once at the *end* of each
      epoch; after the ``k``-th call the rate is that of epoch ``k`` (so with
      ``StepDecay(step_size=1)`` the second epoch already runs decayed, like
      ``torch.optim.lr_scheduler.StepLR``).
    * Keras style: pass it in ``fit(callbacks=[schedule])`` (it is wrapped in
      ``LearningRateScheduler``), which sets the rate at the start of each
      epoch.

    Subclasses override ``get_lr(epoch, lr0)`` and call this constructor
    after setting their own attributes (it may call ``get_lr``).
    """

    def __init__(self, lr0: Optional[float] = None, optimizer: Optional[Optimizer] = None) -> None:
        self.lr0 = None if lr0 is None else check_number(type(self).__name__, "lr0", lr0)
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a fastconv.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.last_epoch = -1
        if optimizer is not None:
            # PyTorch's schedulers take their initial step on construction
            self.last_epoch = 0
            self.apply(0, optimizer)

    def get_lr(self, epoch, lr0):
        """Learning rate at ``epoch`` from base rate ``lr0``."""
        raise NotImplementedError

    def base_lr(self, optimizer=None):
        """``lr0``, else the optimiser's ``initial_lr`` (its first group's)."""
        if self.lr0 is not None:
            return self.lr0
        opt = optimizer if optimizer is not None else self.optimizer
        if opt is None:
            raise ValueError(f"{type(self).__name__}: give lr0 or an optimizer")
        return opt.initial_lr

    def __call__(self, epoch: int, optimizer: Optional[Optimizer] = None) -> float:
        return float(self.get_lr(int(epoch), self.base_lr(optimizer)))

    def apply(self, epoch: int, optimizer: Optional[Optimizer] = None) -> float:
        """Set every parameter group's rate to its value at ``epoch``.

        Each group starts from ``lr0`` when given, else from its own
        ``initial_lr`` (PyTorch's ``base_lrs``).

        Returns
        -------
        float
            The first group's new rate.
        """
        opt = optimizer if optimizer is not None else self.optimizer
        if opt is None:
            raise ValueError(f"{type(self).__name__}: no optimizer attached")
        groups = opt.param_groups or [opt._hyper]
        for group in groups:
            base = self.lr0 if self.lr0 is not None else group["initial_lr"]
            lr = float(self.get_lr(int(epoch), base))
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"{type(self).__name__}: rate at epoch {epoch} is {lr}")
            group["lr"] = lr
        return float(groups[0]["lr"])

    def step(self, epoch: Optional[int] = None) -> float:
        """Advance to ``epoch`` (default: the next one) and set the optimiser's rates.

        Call it at the end of each epoch (PyTorch style).

        Returns
        -------
        float
            The new learning rate (the first group's).
        """
        if self.optimizer is None:
            raise ValueError(f"{type(self).__name__}.step: no optimizer attached")
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        return self.apply(self.last_epoch)

    def get_last_lr(self) -> List[float]:
        """The rate of every parameter group, as set by the last ``step`` (PyTorch's name).

        Returns
        -------
        list of float
        """
        if self.optimizer is None:
            raise ValueError(f"{type(self).__name__}.get_last_lr: no optimizer attached")
        return [float(g["lr"]) for g in self.optimizer.param_groups]


class ExponentialDecay(LRSchedule):
    """``lr = lr0 * gamma**epoch`` (e.g. ``0.01 * 0.6**epoch``).

    Parameters
    ----------
    gamma : float
        Per-epoch factor, in (0, 1] to decay.
    lr0 : float, optional
    optimizer : Optimizer, optional
        See ``LRSchedule``.
    """

    def __init__(self, gamma: float, lr0: Optional[float] = None,
                 optimizer: Optional[Optimizer] = None) -> None:
        self.gamma = check_number("ExponentialDecay", "gamma", gamma)
        super().__init__(lr0, optimizer)   # last: it may set the rate of epoch 0

    def get_lr(self, epoch, lr0):
        """Learning rate at ``epoch`` from base rate ``lr0``."""
        return lr0 * self.gamma**epoch


class StepDecay(LRSchedule):
    """``lr = lr0 * gamma**(epoch // step_size)``: drop by ``gamma`` every ``step_size`` epochs.

    Parameters
    ----------
    step_size : int
    gamma : float, default 0.1
    lr0 : float, optional
    optimizer : Optimizer, optional
        See ``LRSchedule``.
    """

    def __init__(self, step_size: int, gamma: float = 0.1, lr0: Optional[float] = None,
                 optimizer: Optional[Optimizer] = None) -> None:
        if not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"StepDecay: step_size must be an int >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = check_number("StepDecay", "gamma", gamma)
        super().__init__(lr0, optimizer)   # last: it may set the rate of epoch 0

    def get_lr(self, epoch, lr0):
        """Learning rate at ``epoch`` from base rate ``lr0``."""
        return lr0 * self.gamma ** (epoch // self.step_size)


class LambdaSchedule(LRSchedule):
    """``lr = lr0 * fn(epoch)`` for any callable ``fn`` (PyTorch's ``LambdaLR``).

    Parameters
    ----------
    fn : callable
        ``fn(epoch) -> float`` multiplier.
    lr0 : float, optional
    optimizer : Optimizer, optional
        See ``LRSchedule``.
    """

    def __init__(self, fn: Callable[[int], float], lr0: Optional[float] = None,
                 optimizer: Optional[Optimizer] = None) -> None:
        if not callable(fn):
            raise TypeError(f"LambdaSchedule: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        super().__init__(lr0, optimizer)   # last: it may set the rate of epoch 0

    def get_lr(self, epoch, lr0):
        """Learning rate at ``epoch`` from base rate ``lr0``."""
        return lr0 * float(self.fn(epoch))


def _n_positional(fn):
    """Number of positional parameters ``fn`` accepts (2 for f(epoch, lr))."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds)
