"""Keras-style training callbacks for ``Sequential.fit``.

A callback receives ``set_model(model)`` and then the hooks
``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch, logs)`` and
``on_batch_begin/end(batch, logs)``; ``epoch`` and ``batch`` are 0-based.
Epoch-end ``logs`` hold ``loss``, ``accuracy``, ``images_per_second``,
``lr`` and, with validation data, ``val_loss`` / ``val_accuracy``;
batch-end ``logs`` hold ``loss``, ``accuracy`` and ``size`` for that batch.
Setting ``model.stop_training = True`` ends ``fit`` after the current epoch.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Mapping, Optional, Union

import numpy as np

from ..optim import LRSchedule
from ..optim.schedules import _n_positional
from .serialization import save_checkpoint

__all__ = [
    "Callback",
    "CallbackList",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "EarlyStopping",
    "ModelCheckpoint",
]

if TYPE_CHECKING:  # for annotations only: sequential imports this module (through trainer)
    from ..optim import Optimizer
    from .sequential import Sequential

# What fit passes to the hooks: metric name -> value (None for no logs).
Logs = Optional[Dict[str, Any]]
Mode = Literal["auto", "min", "max"]


class Callback:
    """Base class: override any of the ``on_*`` hooks (all default to no-ops).

    Attributes
    ----------
    model : Sequential
        Set by ``fit`` before ``on_train_begin``.
    params : dict
        ``epochs``, ``steps``, ``batch_size``, ``samples``, ``verbose``.
    """

    def __init__(self) -> None:
        self.model: Optional[Sequential] = None
        self.params: Dict[str, Any] = {}

    def set_model(self, model: Sequential) -> None:
        """Attach the model being trained."""
        self.model = model

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Receive the run's parameters (epochs, steps, ...)."""
        self.params = dict(params)

    def on_train_begin(self, logs: Logs = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: Logs = None) -> None:
        """Called once after the last epoch (also after an early stop)."""

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        """Called after epoch ``epoch`` with the epoch's metrics in ``logs``."""

    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before training step ``batch`` (0-based, within the epoch)."""

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after training step ``batch`` with that batch's metrics."""


class CallbackList:
    """Dispatch each hook to a list of callbacks, in order.

    Parameters
    ----------
    callbacks : iterable of Callback or LRSchedule
        A ``fastconv.optim.LRSchedule`` is wrapped in a
        ``LearningRateScheduler``.
    """

    def __init__(self, callbacks=()):
        self.callbacks = []
        for i, cb in enumerate(callbacks):
            if isinstance(cb, LRSchedule):
                # a schedule given directly is driven the Keras way, once per epoch
                cb = LearningRateScheduler(cb)
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks[{i}]: expected a fastconv.nn.callbacks.Callback or a "
                    f"fastconv.optim.LRSchedule, got {type(cb).__name__}"
                )
            self.callbacks.append(cb)

    def __getattr__(self, name):
        if not name.startswith(("on_", "set_")):
            raise AttributeError(name)

        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, name)(*args, **kwargs)

        return call


class History(Callback):
    """Records epoch-end logs; ``fit`` returns it.

    Attributes
    ----------
    history : dict of str to list of float
        E.g. ``history["loss"]``, ``["accuracy"]``, ``["val_loss"]``,
        ``["val_accuracy"]``, ``["images_per_second"]``, ``["lr"]``.
    epoch : list of int
        The 0-based epoch index of each entry.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class LambdaCallback(Callback):
    """Callback built from plain functions, e.g.
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(logs))``.

    Parameters
    ----------
    on_train_begin, on_train_end : callable(logs), optional
    on_epoch_begin, on_epoch_end : callable(epoch, logs), optional
    on_batch_begin, on_batch_end : callable(batch, logs), optional
    """

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable")
            setattr(self, name, fn)


class LearningRateScheduler(Callback):
    """Set ``optimizer.lr`` at the start of every epoch.

    Parameters
    ----------
    schedule : LRSchedule or callable
        An ``fastconv.optim.LRSchedule`` (its base rate defaults to each
        parameter group's ``initial_lr``), or a function ``f(epoch) -> lr`` or
        ``f(epoch, current_lr) -> lr`` (the Keras signature; the rate it
        returns is set in every parameter group). A schedule passed directly
        in ``fit(callbacks=[...])`` is wrapped in this callback.
    verbose : int, default 0
        1 prints the new rate each epoch.

    Examples
    --------
    >>> from fastconv.optim import ExponentialDecay                # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[LearningRateScheduler(ExponentialDecay(0.6))])
    """

    def __init__(self, schedule: Union[LRSchedule, Callable[..., float]], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                f"LearningRateScheduler: schedule must be callable, got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        if isinstance(self.schedule, LRSchedule):
            # each parameter group from its own base rate, as PyTorch's schedulers
            lr = self.schedule.apply(epoch, opt)
            if self.verbose:
                print(f"Epoch {epoch + 1}: learning rate {lr:.6g}")
            return
        if _n_positional(self.schedule) >= 2:
            lr = self.schedule(epoch, opt.lr)
        else:
            lr = self.schedule(epoch)
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"LearningRateScheduler: schedule returned lr={lr} at epoch {epoch}")
        opt.lr = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {lr:.6g}")


class ReduceLROnPlateau(Callback):
    """Cut the learning rate when a monitored metric stops improving.

    PyTorch's ``torch.optim.lr_scheduler.ReduceLROnPlateau`` rule, usable both
    as a ``fit`` callback (Keras style: reads ``logs[monitor]`` at the end of
    each epoch) and in a hand-written loop (``scheduler.step(val_loss)`` once
    per epoch, with ``optimizer`` given).

    Parameters
    ----------
    monitor : str, default "val_loss"
        Epoch-log key to watch (``fit`` only).
    factor : float, default 0.1
        New rate ``= max(rate * factor, min_lr)``; in [0, 1).
    patience : int, default 10
        Epochs without improvement that are tolerated: the rate drops on the
        ``patience + 1``-th one (PyTorch's count; Keras drops on the
        ``patience``-th, so Keras's ``patience=p`` is ``patience=p-1`` here).
    mode : {"auto", "min", "max"}, default "auto"
        "auto" maximises metrics containing "acc" and minimises the rest.
    threshold : float, default 1e-4
        Smallest improvement that counts (see ``threshold_mode``).
    threshold_mode : {"rel", "abs"}, default "rel"
        "rel": better than ``best * (1 - threshold)`` ("min") or
        ``best * (1 + threshold)`` ("max"); "abs": ``best -/+ threshold``.
    min_delta : float, optional
        Keras's name for an absolute threshold: sets ``threshold=min_delta``
        and ``threshold_mode="abs"``.
    cooldown : int, default 0
        Epochs after a cut during which bad epochs are not counted.
    min_lr : float or list of float, default 0
        Lower bound of the rate (one per parameter group, or one for all).
    eps : float, default 1e-8
        A cut smaller than this is skipped.
    optimizer : Optimizer, optional
        For ``step``; in ``fit`` the model's optimiser is used.
    verbose : int, default 0
        1 prints each cut.

    Attributes
    ----------
    best : float
    num_bad_epochs : int
    cooldown_counter : int
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: Mode = "auto", threshold: float = 1e-4,
                 threshold_mode: Literal["rel", "abs"] = "rel", min_delta: Optional[float] = None,
                 cooldown: int = 0, min_lr: Union[float, List[float]] = 0.0, eps: float = 1e-8,
                 optimizer: Optional[Optimizer] = None, verbose: int = 0) -> None:
        super().__init__()
        owner = "ReduceLROnPlateau"
        factor = float(factor)
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"{owner}: factor must be in [0, 1), got {factor}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{owner}: {name} must be an int >= 0, got {value!r}")
        if min_delta is not None:
            threshold, threshold_mode = abs(float(min_delta)), "abs"
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{owner}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.monitor = monitor
        self.mode = _monitor_op(monitor, mode, owner)
        self.factor = factor
        self.patience = int(patience)
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = int(cooldown)
        self.min_lr = [float(v) for v in min_lr] if isinstance(min_lr, (list, tuple)) \
            else float(min_lr)
        self.eps = float(eps)
        self.optimizer = None
        self.verbose = verbose
        self._reset()
        if optimizer is not None:
            self._attach(optimizer)

    def _attach(self, optimizer):
        n = len(optimizer.param_groups)
        if isinstance(self.min_lr, list) and len(self.min_lr) != n:
            raise ValueError(f"ReduceLROnPlateau: min_lr has {len(self.min_lr)} entries for "
                             f"{n} parameter groups")
        self.optimizer = optimizer

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._warned = False

    def _is_better(self, current, best):
        if self.threshold_mode == "rel":
            scale = 1.0 - self.threshold if self.mode == "min" else 1.0 + self.threshold
            return current < best * scale if self.mode == "min" else current > best * scale
        if self.mode == "min":
            return current < best - self.threshold
        return current > best + self.threshold

    def step(self, metric: float) -> bool:
        """Record one epoch's ``metric``; cut the rate if it has plateaued.

        Parameters
        ----------
        metric : float

        Returns
        -------
        bool
            True if the rate was cut.
        """
        opt = self.optimizer
        if opt is None:
            raise ValueError("ReduceLROnPlateau.step: no optimizer; pass optimizer=... "
                             "(in fit the model's optimizer is used)")
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0   # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce(opt)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            return True
        return False

    def _reduce(self, opt):
        self._attach(opt)   # groups may have been added since
        groups = opt.param_groups
        min_lrs = self.min_lr if isinstance(self.min_lr, list) else [self.min_lr] * len(groups)
        for i, (group, low) in enumerate(zip(groups, min_lrs)):
            old = float(group["lr"])
            new = max(old * self.factor, low)
            if old - new > self.eps:
                group["lr"] = new
                if self.verbose:
                    print(f"ReduceLROnPlateau: group {i} learning rate {old:.6g} -> {new:.6g}")

    def on_train_begin(self, logs=None):
        self._attach(self.model.optimizer)
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            if not self._warned:
                warnings.warn(
                    f"ReduceLROnPlateau: monitor {self.monitor!r} is not in the epoch logs "
                    f"(available: {sorted(logs or {})}); the rate is left alone", stacklevel=2)
                self._warned = True
            return
        self.step(current)


def _monitor_op(monitor, mode, owner):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("per_second")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop training when a monitored metric has stopped improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        Epoch-log key to watch.
    min_delta : float, default 0
        Smallest change that counts as an improvement.
    patience : int, default 0
        Number of epochs without improvement after which training stops.
    mode : {"auto", "min", "max"}, default "auto"
        "auto" maximises metrics containing "acc" and minimises the rest.
    restore_best_weights : bool, default False
        At the end of training, load the weights of the best epoch.
    baseline : float, optional
        Training stops if the metric does not beat it within ``patience``.

    Attributes
    ----------
    stopped_epoch : int or None
        0-based epoch after which training was stopped.
    best : float
    best_epoch : int or None
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: Mode = "auto", restore_best_weights: bool = False,
                 baseline: Optional[float] = None) -> None:
        super().__init__()
        if not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.monitor = monitor
        self.mode = _monitor_op(monitor, mode, "EarlyStopping")
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.baseline = baseline

    def _improved(self, current, reference):
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = None
        self.best_epoch = None
        self.best_weights = None
        if self.baseline is not None:
            self.best = float(self.baseline)
        else:
            self.best = math.inf if self.mode == "min" else -math.inf
        self._warned = False

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            if not self._warned:
                warnings.warn(
                    f"EarlyStopping: monitor {self.monitor!r} is not in the epoch logs "
                    f"(available: {sorted(logs or {})}); not stopping", stacklevel=2)
                self._warned = True
            return
        if self._improved(current, self.best):
            self.best = float(current)
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (with optimiser and RNG state, resumable) after epochs.

    Parameters
    ----------
    path : str or os.PathLike
        File to write; may contain ``{epoch}`` (1-based) and log keys, e.g.
        ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``.
    monitor : str, default "val_loss"
        Used with ``save_best_only``.
    save_best_only : bool, default False
        Only write when ``monitor`` improves.
    mode : {"auto", "min", "max"}, default "auto"
    verbose : int, default 0

    Notes
    -----
    Files are written by ``fastconv.nn.save_checkpoint`` (atomically), so both
    ``load_model`` and ``load_checkpoint`` read them; the checkpoint holds the
    shuffling generator's state of the ``fit`` call.
    """

    def __init__(self, path: Union[str, os.PathLike[str]], monitor: str = "val_loss",
                 save_best_only: bool = False, mode: Mode = "auto", verbose: int = 0) -> None:
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _monitor_op(monitor, mode, "ModelCheckpoint")
        self.verbose = verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: List[str] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(
                    f"ModelCheckpoint: monitor {self.monitor!r} is not in the epoch logs; "
                    "skipping", stacklevel=2)
                return
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                return
            self.best = float(current)
        path = str(self.path)
        if "{" in path:
            path = path.format(epoch=epoch + 1, **logs)
        rng = getattr(self.model, "fit_rng", None)
        save_checkpoint(path, self.model, self.model.optimizer, epoch,
                        rng_state=rng, extra={"logs": {k: float(v) for k, v in logs.items()}})
        self.saved.append(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {path}")

