"""The epoch loop shared by ``Sequential.fit`` and ``fastconv.distributed.fit``.

A run is planned once (``FitRun``: the checked arguments, the shuffling
generator, the targets' class labels), then ``run_epochs`` drives the epochs:
callbacks, progress, shuffling, batches, the running loss and accuracy, the
epoch's logs and validation. What one optimisation step does is a
``TrainStep``: in one process a forward, backward and optimiser step
(``fastconv.nn.trainer``); data-parallel, micro-batch slices and a gradient
exchange between ranks (``fastconv.distributed``).
"""

import contextlib
import math
import time

import numpy as np

from .callbacks import CallbackList, History
from .fit_args import _fit_settings, _true_labels
from .._progress import EpochProgress
from .._validate import check_rng

__all__ = ["FitRun", "TrainStep", "make_run", "run_epochs", "check_finite", "blas_limit"]


def blas_limit(threads):
    """Cap NumPy's BLAS pool during ``fit`` (no-op without threadpoolctl).

    fastconv's own layers never call BLAS (``Linear`` runs on fastconv's
    GEMM), but a custom layer may: on a machine with few cores, OpenBLAS
    worker threads that busy-wait after a matmul compete with the kernels'
    OpenMP team for the same cores (a LeNet-5 step was 5x slower that way on
    the 2-core reference machine). Inference does not apply the cap: a
    threadpoolctl limit costs far more than a small model's forward.
    """
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def batch_input(x, idx, dtype):
    """``x[idx]`` as a C-contiguous array of ``dtype`` (a copy only when needed)."""
    xb = x[idx]
    if xb.dtype != dtype or not xb.flags.c_contiguous:
        xb = np.ascontiguousarray(xb, dtype=dtype)
    return xb


class FitRun:
    """The plan of one training run, made once before its first epoch.

    Attributes
    ----------
    x, y : ndarray
        The training samples and targets (after any validation split).
    batch_size, epochs, initial_epoch, steps : int
    shuffle : bool
    augment : callable or None
    rng : numpy.random.Generator
        Shuffling and augmentation.
    dtype : numpy dtype
        The model's; batches are converted to it.
    labels : ndarray or None
        Class labels of ``y`` (None for targets that are not classes).
    want_acc : bool
        Whether the logs carry an accuracy.
    validation : (x_val, y_val) or None
    val_batch_size : int
    callbacks : list
    verbose : int
    extra_params : dict
        Added to the callbacks' ``params`` (the data-parallel run's ranks).
    """

    def __init__(self, x, y, *, batch_size, epochs, initial_epoch, shuffle, augment, rng,
                 dtype, labels, want_acc, validation, val_batch_size, callbacks, verbose):
        self.x, self.y = x, y
        self.batch_size, self.epochs, self.initial_epoch = batch_size, epochs, initial_epoch
        self.steps = -(-len(x) // batch_size)  # exact for any int batch_size
        self.shuffle, self.augment, self.rng, self.dtype = shuffle, augment, rng, dtype
        self.labels, self.want_acc = labels, want_acc
        self.validation, self.val_batch_size = validation, val_batch_size
        self.callbacks, self.verbose = list(callbacks or []), verbose
        self.extra_params = {}

    @property
    def params(self):
        """The callbacks' ``params``."""
        return {"epochs": self.epochs, "steps": self.steps, "batch_size": self.batch_size,
                "samples": len(self.x), "verbose": self.verbose, **self.extra_params}

    def batch(self, order, step):
        """``(indices, x batch, y batch)`` of ``step`` in this epoch's ``order``."""
        idx = order[step * self.batch_size:(step + 1) * self.batch_size]
        xb = batch_input(self.x, idx, self.dtype)
        if self.augment is not None:
            xb = np.ascontiguousarray(self.augment(xb, self.rng), dtype=self.dtype)
        return idx, xb, self.y[idx]


def make_run(model, owner, x, y, *, batch_size, epochs, initial_epoch, verbose, augment,
             validation_data, validation_batch_size, shuffle, seed, callbacks):
    """Check the arguments every fit loop shares and plan the run.

    ``x`` and ``y`` have been through ``_check_xy``. Sets ``model.fit_rng``
    (the generator ``ModelCheckpoint`` saves so that a run can resume exactly).
    """
    batch_size, epochs, initial_epoch, (xv, yv), val_bs = _fit_settings(
        owner, x, batch_size, epochs, initial_epoch, verbose, augment, validation_data,
        validation_batch_size)
    rng = check_rng(owner, "seed", seed)
    model.fit_rng = rng
    labels = _true_labels(y)
    return FitRun(x, y, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                  shuffle=shuffle, augment=augment, rng=rng, dtype=model.dtype, labels=labels,
                  want_acc="accuracy" in model.metrics and labels is not None,
                  validation=None if validation_data is None else (xv, yv),
                  val_batch_size=val_bs, callbacks=callbacks, verbose=verbose)


def check_finite(owner, batch_loss, at, steps, lr):
    """Raise FloatingPointError when the batch loss of step ``at = (epoch, step)``
    is NaN or Inf (before the optimiser applies the batch's gradient)."""
    if not math.isfinite(batch_loss):
        epoch, step = at
        raise FloatingPointError(
            f"{owner}: loss is {batch_loss} at epoch {epoch + 1}, step {step + 1} "
            f"(of {steps}); lower the learning rate (now {lr:g}) or check "
            "the inputs for NaN/Inf"
        )


class TrainStep:
    """How one batch trains the model, and what else a kind of run adds to the loop.

    ``__call__(xb, yb, idx, at)`` runs one optimisation step on the batch
    (``idx`` its sample indices, ``at = (epoch, step)`` for error messages; it
    calls ``check_finite`` before updating the weights) and returns
    ``(batch_loss, loss_part, correct)``: the batch's loss as logged, its share
    of the epoch's loss sum, and the number of samples classified right (0
    when the run has no accuracy).
    """

    def __call__(self, xb, yb, idx, at):
        raise NotImplementedError

    def epoch_loss(self, loss_sum, seen):
        """The logged loss after ``seen`` samples whose shares add up to ``loss_sum``."""
        return loss_sum / seen

    def batch_logs(self):
        """Extra entries of ``on_batch_end``'s logs for the step just run."""
        return {}

    def after_step(self, epoch, step):
        """Called after the callbacks saw the step's end."""

    def end_epoch(self, epoch):
        """Called when the epoch's batches are done; returns extra epoch logs."""
        return {}

    def validate(self, x, y, batch_size):
        """The validation metrics (``evaluate``'s dict) after an epoch."""
        raise NotImplementedError

    def close(self):
        """Called once when the run ends, normally or not."""


def run_epochs(model, run, train_step):
    """Train ``model`` for the epochs of ``run``, one ``train_step`` per batch.

    Returns the run's ``History`` (also ``model.history``). Callbacks set
    ``model.stop_training`` to end the run after the current epoch.
    """
    history = History()
    cbs = CallbackList([history] + run.callbacks)
    cbs.set_model(model)
    cbs.set_params(run.params)
    progress = EpochProgress(run.verbose, run.epochs, run.steps)
    model.history = history
    model.stop_training = False
    was_training = model.training
    logs = {}
    cbs.on_train_begin({})
    with blas_limit(model.blas_threads):
        try:
            for epoch in range(run.initial_epoch, run.epochs):
                logs = _run_epoch(model, run, train_step, epoch, cbs, progress)
                if model.stop_training:
                    break
        finally:
            progress.close()
            train_step.close()
            model.train(was_training)
    cbs.on_train_end(dict(logs) if logs else {})
    return history


def _run_epoch(model, run, train_step, epoch, cbs, progress):
    """One epoch: the batches in a fresh order, then the epoch's logs."""
    model.train()
    cbs.on_epoch_begin(epoch, {})
    progress.begin_epoch(epoch)
    order = run.rng.permutation(len(run.x)) if run.shuffle else np.arange(len(run.x))
    t0 = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    for step in range(run.steps):
        cbs.on_batch_begin(step, {})
        idx, xb, yb = run.batch(order, step)
        batch_loss, loss_part, hits = train_step(xb, yb, idx, (epoch, step))
        m = len(idx)
        seen += m
        loss_sum += loss_part
        logs = {"loss": train_step.epoch_loss(loss_sum, seen)}
        if run.want_acc:
            correct += hits
            logs["accuracy"] = correct / seen
        progress.update(step, logs, seen)
        cbs.on_batch_end(step, {"loss": batch_loss, "size": m, **train_step.batch_logs()})
        train_step.after_step(epoch, step)
    elapsed = time.perf_counter() - t0
    extra = train_step.end_epoch(epoch)
    logs = {"loss": train_step.epoch_loss(loss_sum, seen)}
    if run.want_acc:
        logs["accuracy"] = correct / seen
    if run.validation is not None:
        val = train_step.validate(*run.validation, run.val_batch_size)
        logs.update({"val_" + k: v for k, v in val.items()})
    logs["images_per_second"] = seen / elapsed if elapsed > 0 else float("inf")
    logs["lr"] = float(model.optimizer.lr)
    logs.update(extra)
    progress.end_epoch(logs)
    cbs.on_epoch_end(epoch, logs)
    return logs
