"""Training and evaluation of a ``Sequential``: ``compile``, ``fit``, ``evaluate``, ``predict``.

``Sequential`` stacks layers and runs them (``forward`` / ``backward`` and its
inference plans); its Keras-style methods delegate here. ``fit`` plans the
run (``fastconv.nn.training_loop.make_run``), then ``run_epochs`` drives the
epochs with ``_LocalStep``, this process's optimisation step; the
data-parallel ``fastconv.distributed.fit`` drives the same loop with its own
step. The argument checks live in ``fastconv.nn.fit_args``.
"""

import copy
import warnings

import numpy as np

from ..optim import Optimizer, get_optimizer
from .._validate import check_int
from .fit_args import (
    _check_xy,
    _predicted_classes,
    _sample_weighted,
    _sample_weights,
    _true_labels,
    _validation_split,
    _warn_unscaled,
    _weighted_batch_loss,
)
from .activations import Sigmoid, Softmax
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, NLLLoss, get_loss
from .metrics import confusion_matrix, per_class_accuracy
from .plan import _flat_layers
from .train_plan import TrainPlan, plan_supported
from .training_loop import TrainStep, batch_input, check_finite, make_run, run_epochs

__all__ = ["compile_model", "fit", "evaluate", "predict"]

_METRICS = ("accuracy",)
_METRIC_ALIASES = {"accuracy": "accuracy", "acc": "accuracy"}


def compile_model(model, optimizer="adam", loss="cross_entropy", metrics=None):
    """``Sequential.compile``: bind the optimiser, loss and metrics (see there)."""
    if not model.parameters():
        raise ValueError("compile: the model has no parameters to optimise")
    opt = get_optimizer(optimizer, model.parameters())
    if isinstance(optimizer, Optimizer):
        mine = {id(p) for p in model.parameters()}
        if not any(id(p) in mine for p in opt.params):
            raise ValueError(
                "compile: the optimizer was built on parameters of another model; "
                "build it with model.parameters()"
            )
    model.optimizer = opt
    model.loss = get_loss(loss)
    names = []
    for m in metrics or []:
        key = _METRIC_ALIASES.get(str(m).lower()) if isinstance(m, str) else None
        if key is None:
            raise ValueError(f"compile: unknown metric {m!r}; supported metrics: {list(_METRICS)}")
        names.append(key)
    model.metrics = names
    _warn_mismatched_loss(model)
    return model


def _warn_mismatched_loss(model):
    """Warn when the loss and the last layer would apply softmax/sigmoid twice (or never)."""
    last = model.layers[-1] if model.layers else None
    if isinstance(model.loss, (CrossEntropyLoss, BCEWithLogitsLoss)) and isinstance(
            last, (Softmax, Sigmoid)):
        squash = "softmax" if isinstance(model.loss, CrossEntropyLoss) else "the sigmoid"
        # stack: here, compile_model, Sequential.compile, the caller
        warnings.warn(
            f"compile: {type(model.loss).__name__} expects logits and applies {squash} "
            f"itself, but the last layer is {type(last).__name__}; remove it", stacklevel=4)
    if isinstance(model.loss, NLLLoss) and type(last).__name__ != "LogSoftmax":
        warnings.warn(
            "compile: NLLLoss expects log-probabilities, but the last layer is "
            f"{type(last).__name__}; end the model with LogSoftmax or use "
            "loss='cross_entropy' on logits", stacklevel=4)


def require_compiled(model, owner):
    """RuntimeError unless ``compile`` gave ``model`` an optimiser and a loss."""
    if model.optimizer is None or model.loss is None:
        raise RuntimeError(f"{owner}: call model.compile(optimizer=..., loss=...) first")


def outputs_are_probabilities(model):
    """True when ``predict`` returns the raw outputs (already probabilities,
    or a regression); False when it turns logits into probabilities."""
    last = model.layers[-1] if model.layers else None
    if isinstance(last, (Softmax, Sigmoid)):
        return True
    return model.loss is not None and not isinstance(
        model.loss, (CrossEntropyLoss, NLLLoss, BCEWithLogitsLoss))


def raw_outputs_are_probabilities(model):
    """For binary accuracy: is the raw output a probability (cut at 0.5) or a logit (at 0)?"""
    last = model.layers[-1] if model.layers else None
    return isinstance(last, (Softmax, Sigmoid)) or isinstance(model.loss, BCELoss)


# -- layers whose output is not one row per sample ---------------------------------
def model_outputs(model):
    """How many arrays the model returns: its last layer's outputs (a layer with
    several, e.g. ``MaxPool2d(return_indices=True)``, is only allowed last)."""
    layers = _flat_layers(model)
    return getattr(layers[-1], "_n_outputs", 1) if layers else 1


def whole_batch(model):
    """Whether ``predict`` must run the whole input as one batch: some layer's
    output is not row by row of its input (``Flatten(axis=0)``, ``Softmax(axis=0)``,
    batch statistics in evaluation, a ``Gemm`` with a transposed input or a
    per-row bias, flat argmax indices), or the model returns several arrays."""
    return model_outputs(model) > 1 or any(getattr(m, "_whole_batch", False)
                                           for m in _flat_layers(model))


def _single_output(model, owner):
    n = model_outputs(model)
    if n > 1:
        last = _flat_layers(model)[-1]
        raise ValueError(
            f"{owner}: the model returns {n} arrays (its last layer "
            f"{type(last).__name__} returns several); {owner} needs a model with one "
            "output (use model.eval() then model(x), or predict, for all of them)")


# -- fit ------------------------------------------------------------------------
class _LocalStep(TrainStep):
    """One optimisation step in this process: forward, loss, backward, optimiser step."""

    # plans kept per run: one for the full batches, one for a smaller last batch
    _MAX_PLANS = 4

    def __init__(self, model, run, weights):
        self.model, self.run, self.weights = model, run, weights
        self.opt, self.loss_fn = model.optimizer, model.loss
        self.row_loss = copy.copy(self.loss_fn)  # sample-weighted runs: per-sample losses, own state
        self.raw_probs = raw_outputs_are_probabilities(model)
        self.plans = {}  # batch shape -> TrainPlan, or None where the layers train
        self.use_plans = plan_supported(model)

    def _plan(self, xb):
        """The compiled step for this batch (see ``fastconv.nn.train_plan``), or None."""
        if not self.use_plans:
            return None
        plan = self.plans.get(xb.shape, False)
        if plan is None or (plan is not False and plan.fits(self.model, xb)):
            return plan  # (None: this run's batches of that shape train through the layers)
        if len(self.plans) >= self._MAX_PLANS:
            self.plans.clear()
        plan = self.plans[xb.shape] = TrainPlan.build(self.model, xb)
        return plan

    def __call__(self, xb, yb, idx, at):
        model, opt, loss_fn = self.model, self.opt, self.loss_fn
        opt.zero_grad()
        plan = self._plan(xb)
        if plan is not None:
            out = plan.forward(xb)
            # the layers' caches are not this pass's: Sequential.backward must refuse
            model._kept = None
        else:
            out = model._forward(xb)
        batch_loss = loss_fn.forward(out, yb)
        grad = loss_fn.backward()
        if self.weights is not None:
            wb = self.weights[idx]
            batch_loss = _weighted_batch_loss(self.row_loss, out, yb, wb)
            # every built-in loss's gradient row i is sample i's own:
            # weighting the rows weights the samples
            grad = grad * wb.astype(grad.dtype).reshape((-1,) + (1,) * (grad.ndim - 1))
        check_finite("fit", batch_loss, at, self.run.steps, opt.lr)
        if plan is not None:
            plan.backward(grad)
        else:
            model.backward(grad)
        opt.step()
        correct = 0
        if self.run.want_acc:
            correct = int(np.count_nonzero(
                _predicted_classes(out, self.raw_probs) == self.run.labels[idx]))
        return batch_loss, _sample_weighted(loss_fn, batch_loss, len(idx)), correct

    def validate(self, x, y, batch_size):
        return self.model.evaluate(x, y, batch_size=batch_size)


def fit(model, x, y, batch_size=64, epochs=1, validation_data=None, callbacks=None, verbose=1,
        shuffle=True, seed=None, augment=None, initial_epoch=0, validation_batch_size=None,
        validation_split=None, sample_weight=None, class_weight=None):
    """``Sequential.fit`` (arguments, result and errors documented there)."""
    owner = "fit"
    with model._using_layers(owner, training=True):
        require_compiled(model, owner)
        _single_output(model, owner)
        x, y = _check_xy(owner, x, y)
        # frames up to the user's call: here, Sequential.fit, the caller
        _warn_unscaled(owner, x, stacklevel=3)
        weights = _sample_weights(owner, len(x), _true_labels(y) if class_weight is not None
                                  else None, sample_weight, class_weight)
        if validation_split is not None:
            if validation_data is not None:
                raise ValueError(f"{owner}: pass validation_data or validation_split, not both")
            x, y, validation_data, weights = _validation_split(owner, x, y, weights,
                                                               validation_split)
        run = make_run(model, owner, x, y, batch_size=batch_size, epochs=epochs,
                       initial_epoch=initial_epoch, verbose=verbose, augment=augment,
                       validation_data=validation_data,
                       validation_batch_size=validation_batch_size, shuffle=shuffle, seed=seed,
                       callbacks=callbacks)
        return run_epochs(model, run, _LocalStep(model, run, weights))


# -- evaluate / predict -------------------------------------------------------------
def inference_batches(model, x, batch_size, owner):
    """Yield (slice, output) for consecutive batches of ``x``, through the model's plan."""
    dtype = model._inference_dtype()
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        yield sl, model._infer(batch_input(x, sl, dtype), owner)


def evaluate(model, x, y, batch_size=256, verbose=0, per_class=False):
    """``Sequential.evaluate`` (documented there)."""
    owner = "evaluate"
    if model.loss is None:
        raise RuntimeError(f"{owner}: call model.compile(...) first (the loss is needed)")
    _single_output(model, owner)
    x, y = _check_xy(owner, x, y)
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    if len(x) == 0:
        raise ValueError(f"{owner}: x is empty")
    if whole_batch(model):
        batch_size = len(x)
    labels = _true_labels(y)
    if per_class and labels is None:
        raise ValueError(f"{owner}: per_class=True needs class targets (integer labels or "
                         f"one-hot rows), got y of dtype {y.dtype} and shape {y.shape}")
    # a loss keeps its last forward's arrays for backward: a copy of its
    # own, so that concurrent calls (and a fit in progress) do not share them
    loss = copy.copy(model.loss)
    loss_sum = 0.0
    correct = 0
    cm = None
    for sl, out in inference_batches(model, x, batch_size, owner):
        loss_sum += _sample_weighted(loss, loss.forward(out, y[sl]), len(out))
        if labels is not None:
            pred = _predicted_classes(out, raw_outputs_are_probabilities(model))
            correct += int(np.count_nonzero(pred == labels[sl]))
            if per_class:
                k = max(out.shape[1] if out.ndim == 2 and out.shape[1] > 1 else 2,
                        int(labels.max()) + 1)
                part = confusion_matrix(labels[sl], pred, k)
                cm = part if cm is None else cm + part
    result = {"loss": loss_sum / len(x)}
    if labels is not None:
        result["accuracy"] = correct / len(x)
    if verbose:
        print("  ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if per_class:
        result["confusion_matrix"] = cm
        result["per_class_accuracy"] = per_class_accuracy(cm)
    return result


def predict(model, x, batch_size=256):
    """``Sequential.predict`` (documented there)."""
    owner = "predict"
    x, _ = _check_xy(owner, x, None)
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    n = len(x)
    if n == 0:
        raise ValueError(f"{owner}: x is empty")
    dtype = model._inference_dtype()
    if whole_batch(model):
        # one call on all of x: a batch-dependent output, or rows that are not the samples
        result = model._infer(batch_input(x, slice(None), dtype), owner)
        if isinstance(result, tuple):
            return result  # several outputs: the graph's raw outputs
        return _probabilities(model, result)
    result = None  # an array from the first batch on (n > 0)
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        xb = batch_input(x, sl, dtype)
        if result is None:
            out = model._infer(xb, owner)
            if len(xb) == n:  # one batch: the plan's buffer copied is the result
                result = out.copy()
                continue
            result = np.empty((n,) + out.shape[1:], out.dtype)
            result[sl] = out
        else:
            model._infer(xb, owner, out=result[sl])
    return _probabilities(model, result)


def _probabilities(model, result):
    """``predict``'s rule on the raw outputs ``result`` (changed in place); an integer
    output (a ``Cast`` to an integer type last) is returned as it is."""
    if result.dtype.kind != "f" or outputs_are_probabilities(model):
        return result
    if isinstance(model.loss, BCEWithLogitsLoss):
        # independent binary outputs: the logistic function, element by element
        np.negative(result, out=result)
        np.exp(result, out=result)
        result += 1
        np.reciprocal(result, out=result)
    else:
        # row by row (NumPy reduces each row of a C-contiguous array on its
        # own), so a row's result does not depend on the others
        np.subtract(result, result.max(axis=1, keepdims=True), out=result)
        np.exp(result, out=result)
        result /= result.sum(axis=1, keepdims=True)
    return result
