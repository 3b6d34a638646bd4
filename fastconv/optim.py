"""Optimisers and learning-rate schedules.

An ``Optimizer`` holds a list of ``fastconv.nn.Parameter`` objects.
``zero_grad()`` resets their gradients; ``step()`` applies the optional L1/L2
penalty to each gradient and hands it to the subclass's one update method,
``_update(param, grad, state)``, which changes ``param.data`` in place with
whole-array NumPy calls (``out=`` arguments and per-parameter scratch arrays,
so a step allocates nothing large).

Update rules follow ``torch.optim`` (same defaults, same formulas), so results
can be compared against PyTorch directly.

Fused path: for the four built-in optimisers, ``step()`` hands every
C-contiguous float32/float64 parameter (with gradient and state slots of the
same dtype and shape) to one compiled call, ``_kernels.optim_step``
(csrc/fc_optim.c), which does the whole update in one OpenMP-parallel pass per
parameter instead of a dozen NumPy passes. It performs the same operations in
the same order with the same rounding, so its results are bitwise those of the
NumPy code in ``_update``, which stays the reference and the path for anything
else (other layouts, subclasses that override ``_update`` or
``_regularized_grad``, hyper-parameters that are NumPy scalars). Set
``optimizer.fused = False``, or ``FASTCONV_FUSED_OPTIM=0`` in the environment
before import, to use the NumPy path throughout.

Schedules (``ExponentialDecay``, ``StepDecay``, ``LambdaSchedule``) map an
epoch index to a learning rate from the base rate ``lr0`` (by default the
optimiser's ``initial_lr``); use them with
``fastconv.nn.callbacks.LearningRateScheduler`` in ``fit`` or call
``schedule.step()`` once per epoch in a hand-written loop.
"""

import inspect
import math
import os

import numpy as np

from . import _kernels
from .functional import get_num_threads

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "get_optimizer",
    "register_optimizer",
    "LRSchedule",
    "ExponentialDecay",
    "StepDecay",
    "LambdaSchedule",
]

_OPTIMIZERS = {}

_FUSED_DEFAULT = os.environ.get("FASTCONV_FUSED_OPTIM", "1").strip().lower() not in (
    "0", "false", "no", "off")
# Parameters with fewer elements than this take the NumPy path. Measured (one
# thread, float32): the step costs ~2.5 us plus ~0.4 us per parameter fused,
# against ~0.4 us (SGD) to ~5 us (Adam) per parameter and NumPy call chain, so
# the only case where NumPy wins is an optimiser over a single tiny tensor with
# plain SGD (1.3 us vs 2.7 us); at 10 parameters of 16 elements fused wins
# (SGD 6 vs 10 us, Adam 8 vs 55 us). A size cut-off would only add NumPy calls
# to a shared kernel call, so it is 0; it is here for platforms that disagree.
_FUSED_MIN_SIZE = 0
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def register_optimizer(*names):
    """Class decorator: make an ``Optimizer`` subclass reachable by name."""

    def deco(cls):
        for name in (cls.__name__,) + names:
            _OPTIMIZERS[name.lower()] = cls
        return cls

    return deco


def _check_nonneg(owner, name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}") from None
    if not value >= 0.0 or math.isinf(value):  # also rejects NaN
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value}")
    return value


def _check_beta(owner, name, value):
    value = _check_nonneg(owner, name, value)
    if value >= 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value}")
    return value


class Optimizer:
    """Base class of the optimisers.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
        What to optimise (a module's ``parameters()`` when given a module).
        Frozen parameters (``requires_grad=False``) are skipped.
    lr : float
        Learning rate; ``self.lr`` may be changed between steps (schedules do).
    weight_decay : float, default 0
        L2 penalty: ``weight_decay * w`` is added to the gradient (penalty
        ``weight_decay/2 * ||w||^2``), as in ``torch.optim``.
    l2 : float, optional
        Alias of ``weight_decay``.
    l1 : float, default 0
        L1 penalty: ``l1 * sign(w)`` is added to the gradient.

    Notes
    -----
    Penalties apply only to parameters with ``regularize=True``: the layers
    of ``fastconv.nn`` set it for conv/dense weights and clear it for biases
    and batch-norm parameters. Subclasses override ``_update``.

    The attribute ``fused`` (default True, or False when the environment has
    ``FASTCONV_FUSED_OPTIM=0``) lets ``step`` use the compiled update where it
    applies; it gives bitwise the results of ``_update`` (see the module doc).
    """

    defaults = {}
    fused = _FUSED_DEFAULT  # use the compiled update where it applies (see the module doc)

    def __init__(self, params, lr, *, weight_decay=0.0, l2=None, l1=0.0):
        owner = type(self).__name__
        if hasattr(params, "parameters") and callable(params.parameters):
            params = params.parameters()
        from .nn.module import Parameter

        params = list(params)
        if not params:
            raise ValueError(f"{owner}: params is empty")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{owner}: params[{i}] must be a fastconv.nn.Parameter, got {type(p).__name__}"
                )
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{owner}: params contains the same Parameter twice")
        if l2 is not None:
            if weight_decay and float(weight_decay) != float(l2):
                raise ValueError(
                    f"{owner}: give weight_decay or its alias l2, not both "
                    f"(got weight_decay={weight_decay}, l2={l2})"
                )
            weight_decay = l2
        self.params = params
        self.lr = _check_nonneg(owner, "lr", lr)
        self.initial_lr = self.lr
        self.weight_decay = _check_nonneg(owner, "weight_decay", weight_decay)
        self.l1 = _check_nonneg(owner, "l1", l1)
        self.iterations = 0
        self.state = [{} for _ in params]

    # -- the loop ------------------------------------------------------------
    def zero_grad(self):
        """Set every parameter's ``grad`` to zero, in place."""
        for p in self.params:
            p.grad.fill(0)

    def step(self):
        """Apply one update to every trainable parameter, in place."""
        self.iterations += 1
        hyper = self._fused_hyper() if self.fused else None
        if hyper is None:
            for p, state in zip(self.params, self.state):
                if p.requires_grad:
                    self._update(p, self._regularized_grad(p, state), state)
            return
        batch = {np.dtype(np.float32): [], np.dtype(np.float64): []}
        for p, state in zip(self.params, self.state):
            if not p.requires_grad:
                continue
            t = self._fused_tensor(p, state)
            if t is None:
                self._update(p, self._regularized_grad(p, state), state)
            else:
                batch[p.data.dtype].append(t)
        nthreads = None
        for dtype, tensors in batch.items():
            if tensors:
                if nthreads is None:
                    nthreads = get_num_threads()
                _kernels.optim_step(hyper, tensors, dtype == np.float64, nthreads)

    # -- the fused path (see the module docstring) ---------------------------
    def _fused_hyper(self):
        """Hyper-parameter tuple for ``_kernels.optim_step``, or None for the NumPy path.

        None when the class's update is not the one the kernel reproduces (a
        subclass overrode ``_update`` or ``_regularized_grad``) or when a
        hyper-parameter is not a plain Python number: NumPy treats a NumPy
        scalar operand differently (a float64 scalar makes a float32 update
        compute in float64), which the kernel does not reproduce.
        """
        cls = type(self)
        owner = _FUSED_UPDATES.get(cls._update)
        if owner is None or cls._regularized_grad is not Optimizer._regularized_grad:
            return None
        h = owner._fused_values(self)
        for v in h[1:]:
            if type(v) is not float and type(v) is not int and type(v) is not bool:
                return None
        return h

    def _fused_values(self):
        """(kind, lr, weight_decay, l1, momentum, nesterov, eps, alpha, beta1, beta2)."""
        raise NotImplementedError

    def _fused_tensor(self, p, state):
        """Create or fetch ``p``'s state slots and return its ``optim_step`` tuple
        ``(w, grad, slot1, slot2, regularize, first, step_size, bias_correction2)``,
        or None (NumPy path) when a stored slot does not fit the kernel."""
        raise NotImplementedError

    def _update(self, p, grad, state):
        """Update ``p.data`` in place from ``grad``; ``state`` is ``p``'s slot dict."""
        raise NotImplementedError

    @staticmethod
    def _scratch(state, key, like):
        """Per-parameter temporary (keys starting with '_' are not saved)."""
        buf = state.get(key)
        if buf is None:
            buf = state[key] = np.empty_like(like)
        return buf

    def _regularized_grad(self, p, state):
        if not p.regularize or (self.weight_decay == 0.0 and self.l1 == 0.0):
            return p.grad
        g = self._scratch(state, "_reg_grad", p.data)
        if self.weight_decay:
            np.multiply(p.data, self.weight_decay, out=g)
            g += p.grad
        else:
            np.copyto(g, p.grad)
        if self.l1:
            tmp = self._scratch(state, "_reg_tmp", p.data)
            np.sign(p.data, out=tmp)
            tmp *= self.l1
            g += tmp
        return g

    # -- persistence ---------------------------------------------------------
    def get_config(self):
        """Hyper-parameters (JSON-serialisable), without ``params``.

        Returns
        -------
        dict
            Includes ``"class"`` and the constructor keyword arguments.
        """
        cfg = {"class": type(self).__name__, "lr": self.initial_lr,
               "weight_decay": self.weight_decay, "l1": self.l1}
        cfg.update({k: getattr(self, k) for k in self.defaults})
        return cfg

    def state_dict(self):
        """Everything needed to resume: hyper-parameters, counters, slot arrays.

        Returns
        -------
        dict
            ``{"config": dict, "lr": float, "initial_lr": float,
            "iterations": int, "slots": {"<param index>.<name>": ndarray}}``;
            slot arrays are copies; everything except ``slots`` is
            JSON-serialisable.
        """
        slots = {}
        for i, state in enumerate(self.state):
            for key, value in state.items():
                if key.startswith("_"):
                    continue
                slots[f"{i}.{key}"] = np.array(value, copy=True)
        return {
            "config": self.get_config(),
            "lr": self.lr,
            "initial_lr": self.initial_lr,
            "iterations": self.iterations,
            "slots": slots,
        }

    def load_state_dict(self, state_dict):
        """Restore ``state_dict()`` output (for the same parameter list).

        Raises
        ------
        ValueError
            Other optimiser class, other number of parameters or slot shapes.
        """
        owner = type(self).__name__
        cfg = state_dict.get("config", {})
        if cfg.get("class", owner) != owner:
            raise ValueError(f"{owner}.load_state_dict: state is for {cfg.get('class')}")
        new_state = [{} for _ in self.params]
        for name, value in state_dict.get("slots", {}).items():
            idx, _, key = name.partition(".")
            if not idx.isdigit() or int(idx) >= len(self.params):
                raise ValueError(
                    f"{owner}.load_state_dict: slot {name!r} does not match "
                    f"{len(self.params)} parameters"
                )
            value = np.asarray(value)
            p = self.params[int(idx)]
            if value.ndim == 0 and value.dtype.kind in "iu":
                new_state[int(idx)][key] = int(value)
                continue
            if value.shape != p.data.shape:
                raise ValueError(
                    f"{owner}.load_state_dict: slot {name!r} has shape {value.shape}, "
                    f"parameter {idx} has shape {p.data.shape}"
                )
            new_state[int(idx)][key] = np.array(value, dtype=p.data.dtype, copy=True)
        for k in self.defaults:
            if k in cfg:
                setattr(self, k, cfg[k])
        for k in ("weight_decay", "l1"):
            if k in cfg:
                setattr(self, k, float(cfg[k]))
        self.state = new_state
        self.lr = float(state_dict.get("lr", self.lr))
        self.initial_lr = float(state_dict.get("initial_lr", self.initial_lr))
        self.iterations = int(state_dict.get("iterations", 0))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "class")
        return f"{type(self).__name__}({args})"


@register_optimizer("sgd")
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``v <- momentum * v + g`` (``v = g`` on the first step);
    ``w <- w - lr * (g + momentum * v if nesterov else v)``; plain
    ``w <- w - lr * g`` when ``momentum == 0``.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 0.01
    momentum : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0``.
    weight_decay, l2, l1 : float
        See ``Optimizer``.
    """

    defaults = {"momentum": 0.0, "nesterov": False}

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, *,
                 weight_decay=0.0, l2=None, l1=0.0):
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1)
        self.momentum = _check_beta("SGD", "momentum", momentum)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")

    def _update(self, p, grad, state):
        d = grad
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= self.momentum
                buf += grad
            if self.nesterov:
                d = self._scratch(state, "_d", p.data)
                np.multiply(buf, self.momentum, out=d)
                d += grad
            else:
                d = buf
        tmp = self._scratch(state, "_tmp", p.data)
        np.multiply(d, self.lr, out=tmp)
        p.data -= tmp

    def _fused_values(self):
        return (_kernels.OPTIM_SGD, self.lr, self.weight_decay, self.l1, self.momentum,
                self.nesterov, 0.0, 0.0, 0.0, 0.0)

    def _fused_tensor(self, p, state):
        buf = state.get("momentum_buffer") if self.momentum else None
        if not _fused_ok(p, state, buf, None):
            return None
        first = False
        if self.momentum and buf is None:
            # the kernel writes buf = grad on this first step
            buf = state["momentum_buffer"] = np.empty_like(p.data)
            first = True
        return (p.data, p.grad, buf, None, bool(p.regularize), first, 0.0, 0.0)


@register_optimizer()
class Adagrad(Optimizer):
    """Adagrad: ``s <- s + g**2``; ``w <- w - lr * g / (sqrt(s) + eps)``.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 0.01
    eps : float, default 1e-10
    initial_accumulator_value : float, default 0
    weight_decay, l2, l1 : float
        See ``Optimizer``.
    """

    defaults = {"eps": 1e-10, "initial_accumulator_value": 0.0}

    def __init__(self, params, lr=0.01, eps=1e-10, initial_accumulator_value=0.0, *,
                 weight_decay=0.0, l2=None, l1=0.0):
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1)
        self.eps = _check_nonneg("Adagrad", "eps", eps)
        self.initial_accumulator_value = _check_nonneg(
            "Adagrad", "initial_accumulator_value", initial_accumulator_value
        )

    def _update(self, p, grad, state):
        acc = state.get("sum")
        if acc is None:
            acc = state["sum"] = np.full_like(p.data, self.initial_accumulator_value)
        tmp = self._scratch(state, "_tmp", p.data)
        np.multiply(grad, grad, out=tmp)
        acc += tmp
        np.sqrt(acc, out=tmp)
        tmp += self.eps
        np.divide(grad, tmp, out=tmp)
        tmp *= self.lr
        p.data -= tmp

    def _fused_values(self):
        return (_kernels.OPTIM_ADAGRAD, self.lr, self.weight_decay, self.l1, 0.0, False, self.eps,
                0.0, 0.0, 0.0)

    def _fused_tensor(self, p, state):
        acc = state.get("sum")
        if not _fused_ok(p, state, acc, None):
            return None
        if acc is None:
            acc = state["sum"] = np.full_like(p.data, self.initial_accumulator_value)
        return (p.data, p.grad, acc, None, bool(p.regularize), False, 0.0, 0.0)


@register_optimizer("rmsprop")
class RMSprop(Optimizer):
    """RMSprop: ``v <- alpha*v + (1-alpha)*g**2``; ``w <- w - lr * g / (sqrt(v) + eps)``.

    With ``momentum > 0``: ``b <- momentum*b + g / (sqrt(v) + eps)``;
    ``w <- w - lr * b``.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 0.01
    alpha : float, default 0.99
        Decay of the squared-gradient average (Keras calls it ``rho``).
    eps : float, default 1e-8
    momentum : float, default 0
    weight_decay, l2, l1 : float
        See ``Optimizer``.
    """

    defaults = {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0}

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, *,
                 weight_decay=0.0, l2=None, l1=0.0):
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1)
        self.alpha = _check_beta("RMSprop", "alpha", alpha)
        self.eps = _check_nonneg("RMSprop", "eps", eps)
        self.momentum = _check_beta("RMSprop", "momentum", momentum)

    def _update(self, p, grad, state):
        sq = state.get("square_avg")
        if sq is None:
            sq = state["square_avg"] = np.zeros_like(p.data)
        tmp = self._scratch(state, "_tmp", p.data)
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.alpha
        sq *= self.alpha
        sq += tmp
        np.sqrt(sq, out=tmp)
        tmp += self.eps
        np.divide(grad, tmp, out=tmp)
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.zeros_like(p.data)
            buf *= self.momentum
            buf += tmp
            np.multiply(buf, self.lr, out=tmp)
        else:
            tmp *= self.lr
        p.data -= tmp

    def _fused_values(self):
        return (_kernels.OPTIM_RMSPROP, self.lr, self.weight_decay, self.l1, self.momentum, False,
                self.eps, self.alpha, 0.0, 0.0)

    def _fused_tensor(self, p, state):
        sq = state.get("square_avg")
        buf = state.get("momentum_buffer") if self.momentum else None
        if not _fused_ok(p, state, sq, buf):
            return None
        if sq is None:
            sq = state["square_avg"] = np.zeros_like(p.data)
        if self.momentum and buf is None:
            buf = state["momentum_buffer"] = np.zeros_like(p.data)
        return (p.data, p.grad, sq, buf, bool(p.regularize), False, 0.0, 0.0)


@register_optimizer()
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

    ``m <- b1*m + (1-b1)*g``; ``v <- b2*v + (1-b2)*g**2``;
    ``w <- w - lr/(1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)``, ``t`` the
    per-parameter step count.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay, l2, l1 : float
        See ``Optimizer`` (L2 is added to the gradient, as in ``torch.optim.Adam``).
    """

    defaults = {"betas": (0.9, 0.999), "eps": 1e-8}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *,
                 weight_decay=0.0, l2=None, l1=0.0):
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair of floats, got {betas!r}")
        self.betas = (_check_beta("Adam", "betas[0]", betas[0]),
                      _check_beta("Adam", "betas[1]", betas[1]))
        self.eps = _check_nonneg("Adam", "eps", eps)

    def get_config(self):
        """Hyper-parameters; ``betas`` as a list (JSON)."""
        cfg = super().get_config()
        cfg["betas"] = list(self.betas)
        return cfg

    def load_state_dict(self, state_dict):
        """Restore ``state_dict()`` output; see ``Optimizer.load_state_dict``."""
        super().load_state_dict(state_dict)
        self.betas = tuple(float(b) for b in self.betas)

    def _update(self, p, grad, state):
        b1, b2 = self.betas
        m = state.get("exp_avg")
        if m is None:
            m = state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] = 0
        v = state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"]
        tmp = self._scratch(state, "_tmp", p.data)
        m *= b1
        np.multiply(grad, 1.0 - b1, out=tmp)
        m += tmp
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - b2
        v *= b2
        v += tmp
        step_size = self.lr / (1.0 - b1**t)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - b2**t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        p.data -= tmp

    def _fused_values(self):
        b1, b2 = self.betas
        return (_kernels.OPTIM_ADAM, self.lr, self.weight_decay, self.l1, 0.0, False, self.eps,
                0.0, b1, b2)

    def _fused_tensor(self, p, state):
        m = state.get("exp_avg")
        if not _fused_ok(p, state, m, None if m is None else state["exp_avg_sq"]):
            return None
        if m is None:
            m = state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] = 0
        state["step"] += 1
        t = state["step"]
        b1, b2 = self.betas
        # the same Python expressions as _update, rounded to the dtype in the kernel
        step_size = self.lr / (1.0 - b1**t)
        bias_correction2 = math.sqrt(1.0 - b2**t)
        return (p.data, p.grad, m, state["exp_avg_sq"], bool(p.regularize), False, step_size,
                bias_correction2)


def _fused_ok(p, state, slot1, slot2):
    """True if ``p.data``, ``p.grad`` and its stored slots (None: not created yet)
    can go to the kernel.

    The verdict is kept in ``state["_fused_checked"]`` with the arrays it was
    reached for, and reused while ``p.data``, ``p.grad`` and the slots are the
    same objects: the checks cost more than the update of a small parameter.
    (An array whose flags are changed in place is still caught by the guard in
    ``_kernels.optim_step``.)
    """
    w, g = p.data, p.grad
    seen = state.get("_fused_checked")
    if (seen is not None and seen[0] is w and seen[1] is g and seen[2] is slot1
            and seen[3] is slot2):
        return True
    ok = (w.dtype in _FLOAT_DTYPES and g.dtype == w.dtype and g.shape == w.shape
          and w.size >= _FUSED_MIN_SIZE and w.flags.c_contiguous and w.flags.writeable
          and g.flags.c_contiguous and not np.may_share_memory(w, g)
          and _slot_fits(slot1, w) and _slot_fits(slot2, w))
    state["_fused_checked"] = (w, g, slot1, slot2) if ok else None
    return ok


def _slot_fits(slot, w):
    """True if a stored state slot (or None) can be handed to the kernel next to ``w``."""
    return slot is None or (
        type(slot) is np.ndarray and slot.dtype == w.dtype and slot.shape == w.shape
        and slot.flags.c_contiguous and slot.flags.writeable
        and not np.may_share_memory(slot, w))


# The _update methods the kernel reproduces, and the class that knows how.
_FUSED_UPDATES = {cls._update: cls for cls in (SGD, Adagrad, RMSprop, Adam)}


def get_optimizer(optimizer, params=None):
    """Resolve an optimiser given as an instance, a class or a name.

    Parameters
    ----------
    optimizer : Optimizer, type or str
        Names (case-insensitive): ``"sgd"``, ``"adam"``, ``"adagrad"``,
        ``"rmsprop"``; built with default hyper-parameters.
    params : iterable of Parameter or Module, optional
        Needed unless ``optimizer`` is already an instance.

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
    return cls(params, **config)


# -- learning-rate schedules -------------------------------------------------
class LRSchedule:
    """Base class: a map from epoch index (0-based) to learning rate.

    Parameters
    ----------
    lr0 : float, optional
        Base rate. Default: ``optimizer.initial_lr`` (the ``lr`` the optimiser
        was built with), which also survives a checkpoint round trip.
    optimizer : Optimizer, optional
        Needed for ``step()`` and when ``lr0`` is not given.

    Notes
    -----
    ``schedule(epoch)`` returns the rate for that epoch; ``schedule.step()``
    advances an internal epoch counter and writes the rate into
    ``optimizer.lr`` (call it at the start of each epoch, PyTorch style, or let
    ``LearningRateScheduler`` do it in ``fit``). Subclasses override
    ``get_lr(epoch, lr0)``.
    """

    def __init__(self, lr0=None, optimizer=None):
        self.lr0 = None if lr0 is None else _check_nonneg(type(self).__name__, "lr0", lr0)
        self.optimizer = optimizer
        self.last_epoch = -1

    def get_lr(self, epoch, lr0):
        """Learning rate at ``epoch`` from base rate ``lr0``."""
        raise NotImplementedError

    def base_lr(self, optimizer=None):
        """``lr0``, else the optimiser's ``initial_lr``."""
        if self.lr0 is not None:
            return self.lr0
        opt = optimizer if optimizer is not None else self.optimizer
        if opt is None:
            raise ValueError(f"{type(self).__name__}: give lr0 or an optimizer")
        return opt.initial_lr

    def __call__(self, epoch, optimizer=None):
        return float(self.get_lr(int(epoch), self.base_lr(optimizer)))

    def step(self, epoch=None):
        """Advance to ``epoch`` (default: the next one) and set ``optimizer.lr``.

        Returns
        -------
        float
            The new learning rate.
        """
        if self.optimizer is None:
            raise ValueError(f"{type(self).__name__}.step: no optimizer attached")
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self.optimizer.lr = self(self.last_epoch)
        return self.optimizer.lr


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

    def __init__(self, gamma, lr0=None, optimizer=None):
        super().__init__(lr0, optimizer)
        self.gamma = _check_nonneg("ExponentialDecay", "gamma", gamma)

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

    def __init__(self, step_size, gamma=0.1, lr0=None, optimizer=None):
        super().__init__(lr0, optimizer)
        if not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"StepDecay: step_size must be an int >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _check_nonneg("StepDecay", "gamma", gamma)

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

    def __init__(self, fn, lr0=None, optimizer=None):
        super().__init__(lr0, optimizer)
        if not callable(fn):
            raise TypeError(f"LambdaSchedule: fn must be callable, got {type(fn).__name__}")
        self.fn = fn

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
