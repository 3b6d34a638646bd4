"""Optimisers and learning-rate schedules.

An ``Optimizer`` holds ``fastconv.nn.Parameter`` objects in parameter groups
(``param_groups``, as in ``torch.optim``: each group has its own learning
rate and other hyper-parameters). It can be built without them, the Keras way
(``Adam(lr=1e-3)``), and bound later by ``bind`` or ``Sequential.compile``.
``zero_grad()`` resets the gradients; ``step()`` applies the optional L1/L2
penalty to each gradient and hands it to the subclass's one update method,
``_update(param, grad, state)``, which changes ``param.data`` in place with
whole-array NumPy calls (``out=`` arguments and per-parameter scratch arrays,
so a step allocates nothing large). Inside ``step`` the hyper-parameter
attributes (``self.lr``, ``self.momentum``, ...) read the group being updated.

Update rules follow ``torch.optim`` (same defaults, same formulas), so results
can be compared against PyTorch directly. ``clip_grad_norm_`` and
``clip_grad_value_`` follow ``torch.nn.utils``.

Fused path: for SGD, Adagrad, RMSprop and Adam, ``step()`` hands every
C-contiguous float32/float64 parameter (with gradient and state slots of the
same dtype and shape) to one compiled call per parameter group and dtype,
``_kernels.optim_step`` (csrc/fc_optim.c), which does the whole update in one OpenMP-parallel pass per
parameter instead of a dozen NumPy passes. It performs the same operations in
the same order with the same rounding, so its results are bitwise those of the
NumPy code in ``_update``, which stays the reference and the path for anything
else (AdamW and NAdam, other layouts, subclasses that override ``_update`` or
``_regularized_grad``, hyper-parameters that are NumPy scalars). Set
``optimizer.fused = False``, or ``FASTCONV_FUSED_OPTIM=0`` in the environment
before import, to use the NumPy path throughout.

Schedules (``ExponentialDecay``, ``StepDecay``, ``LambdaSchedule``) map an
epoch index to a learning rate from the base rate ``lr0`` (by default each
parameter group's ``initial_lr``); pass them in ``fit(callbacks=[...])`` or
call ``schedule.step()`` at the end of each epoch in a hand-written loop
(PyTorch's convention). ``fastconv.nn.callbacks.ReduceLROnPlateau`` cuts the
rate when a metric stalls.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

import numpy as np

from . import _kernels
from ._validate import check_fraction, check_number
from .functional import get_num_threads

if TYPE_CHECKING:  # for annotations only: fastconv.nn imports this module
    from .nn.module import Module, Parameter

# What an optimiser optimises: parameters, a module (its parameters()), group dicts.
Params = Union[Iterable["Parameter"], "Module", List[Dict[str, Any]]]
_O = TypeVar("_O", bound="Optimizer")

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "clip_grad_norm_",
    "clip_grad_value_",
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


class Optimizer:
    """Base class of the optimisers.

    Parameters
    ----------
    params : iterable of Parameter, a Module, a list of dicts, or None
        What to optimise (a module's ``parameters()`` when given a module).
        Frozen parameters (``requires_grad=False``) are skipped. A list of
        dicts makes parameter groups, as in ``torch.optim``: each dict holds
        ``"params"`` and may override any hyper-parameter for its parameters,
        e.g. ``[{"params": backbone, "lr": 1e-4}, {"params": head}]``. None
        (the Keras form, ``Adam(lr=1e-3)``) builds an optimiser without
        parameters; ``bind`` or ``Sequential.compile`` gives it them later.
    lr : float
        Learning rate; ``self.lr`` may be changed between steps (schedules do).
    weight_decay : float, default 0
        L2 penalty: ``weight_decay * w`` is added to the gradient (penalty
        ``weight_decay/2 * ||w||^2``), as in ``torch.optim``.
    l2 : float, optional
        Alias of ``weight_decay``.
    l1 : float, default 0
        L1 penalty: ``l1 * sign(w)`` is added to the gradient.

    Attributes
    ----------
    param_groups : list of dict
        One dict per group: ``"params"`` and every hyper-parameter (``"lr"``,
        ``"initial_lr"``, ``"weight_decay"``, ``"l1"`` and the class's own).
        Writing ``group["lr"]`` changes that group's rate.
    params : list of Parameter
        All parameters, group after group.

    Notes
    -----
    Penalties apply only to parameters with ``regularize=True``: the layers
    of ``fastconv.nn`` set it for conv/dense weights and clear it for biases
    and batch-norm parameters. Subclasses override ``_update``.

    Hyper-parameter attributes (``opt.lr``, ``opt.momentum``, ...) read the
    first group (inside ``step``, the group being updated) and writing one
    sets it in every group, like the PyTorch idiom
    ``for g in opt.param_groups: g["lr"] = lr``; per-group values go through
    ``param_groups``.

    The attribute ``fused`` (default True, or False when the environment has
    ``FASTCONV_FUSED_OPTIM=0``) lets ``step`` use the compiled update where it
    applies; it gives bitwise the results of ``_update`` (see the module doc).
    """

    # Properties installed after the class body (see _hyper_property); declared
    # here so type checkers know them.
    lr: float
    initial_lr: float
    weight_decay: float
    l1: float

    defaults = {}
    _scalar_slots = ()   # float state entries that are not arrays (NAdam's mu_product)
    fused = _FUSED_DEFAULT  # use the compiled update where it applies (see the module doc)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # hyper-parameters live in the group dicts; attributes are views on them
        for name in cls.defaults:
            if not isinstance(getattr(cls, name, None), property):
                setattr(cls, name, _hyper_property(name))

    def __init__(self, params: Optional[Params] = None, lr: Optional[float] = None, *,
                 weight_decay: float = 0.0, l2: Optional[float] = None, l1: float = 0.0,
                 **hyper: Any) -> None:
        owner = type(self).__name__
        self._active = None
        self.param_groups = []
        self.params = []
        self.state = []
        self.iterations = 0
        if lr is None:
            raise TypeError(f"{owner}: lr is required")
        if l2 is not None:
            if weight_decay and float(weight_decay) != float(l2):
                raise ValueError(
                    f"{owner}: give weight_decay or its alias l2, not both "
                    f"(got weight_decay={weight_decay}, l2={l2})"
                )
            weight_decay = l2
        self._hyper = self._check_hyper(
            dict(hyper, lr=lr, weight_decay=weight_decay, l1=l1), owner)
        self._hyper["initial_lr"] = self._hyper["lr"]
        if params is not None:
            self.bind(params)

    # -- hyper-parameters and parameter groups -----------------------------------
    def _check_hyper(self, h, owner):
        """Validate and normalise one group's hyper-parameters (``h`` is changed in place).

        Subclasses extend it for their own keys (and call this one).
        """
        for k in ("lr", "weight_decay", "l1"):
            h[k] = check_number(owner, k, h[k])
        if "initial_lr" in h:
            h["initial_lr"] = check_number(owner, "initial_lr", h["initial_lr"])
        return h

    @property
    def bound(self) -> bool:
        """True once the optimiser has parameters (see ``bind``)."""
        return bool(self.param_groups)

    def bind(self: _O, params: Params) -> _O:
        """Give an optimiser built without parameters (``Adam(lr=1e-3)``) its parameters.

        Parameters
        ----------
        params : iterable of Parameter, a Module, or a list of group dicts
            As the ``params`` argument of the constructor.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            The optimiser already has parameters (use ``add_param_group`` to
            add more), or ``params`` is empty or repeats a parameter.
        TypeError
            An entry is not a ``fastconv.nn.Parameter``.
        """
        owner = type(self).__name__
        if self.param_groups:
            raise ValueError(
                f"{owner}.bind: the optimizer already has {len(self.params)} parameters; "
                "use add_param_group to add more, or build a new optimizer")
        if hasattr(params, "parameters") and callable(params.parameters):
            params = params.parameters()
        if isinstance(params, dict):
            params = [params]
        # a Module was replaced by its parameters() above, which hasattr does not narrow
        params = list(params)  # type: ignore[arg-type]
        if not params:
            raise ValueError(f"{owner}: params is empty")
        groups = params if all(isinstance(g, dict) for g in params) else [{"params": params}]
        try:
            for group in groups:
                self.add_param_group(group)
        except Exception:
            self.param_groups, self.params, self.state = [], [], []
            raise
        return self

    def add_param_group(self, group):
        """Add parameters with their own hyper-parameters (``torch.optim`` semantics).

        Parameters
        ----------
        group : dict
            ``"params"`` (iterable of Parameter, or a Module) and optionally
            any hyper-parameter of this optimiser; missing ones take the
            values the optimiser was built with.

        Raises
        ------
        ValueError
            Unknown keys, empty ``params``, or a parameter already optimised.
        TypeError
            ``group`` is not a dict or an entry is not a ``fastconv.nn.Parameter``.
        """
        from .nn.module import Parameter

        owner = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(
                f"{owner}: a parameter group must be a dict with a 'params' entry, "
                f"got {type(group).__name__}")
        unknown = sorted(set(group) - set(self._hyper) - {"params"})
        if unknown:
            raise ValueError(
                f"{owner}: parameter group has unknown keys {unknown}; "
                f"expected 'params' and any of {sorted(self._hyper)}")
        params = group["params"]
        if hasattr(params, "parameters") and callable(params.parameters):
            params = params.parameters()
        params = [params] if isinstance(params, Parameter) else list(params)
        if not params:
            raise ValueError(f"{owner}: params is empty")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{owner}: params[{i}] must be a fastconv.nn.Parameter, got {type(p).__name__}"
                )
        seen = {id(p) for p in self.params}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{owner}: params contains the same Parameter twice")
        h = dict(self._hyper)
        h.update((k, v) for k, v in group.items() if k != "params")
        if "lr" in group and "initial_lr" not in group:
            h["initial_lr"] = h["lr"]
        h = self._check_hyper(h, owner)
        h["params"] = params
        self.param_groups.append(h)
        self.params.extend(params)
        self.state.extend({} for _ in params)

    def _require_bound(self, what):
        if not self.param_groups:
            owner = type(self).__name__
            raise RuntimeError(
                f"{owner}.{what}: the optimizer has no parameters yet; pass them to "
                f"{owner}(params, ...), call opt.bind(model.parameters()), or hand the "
                "optimizer to model.compile(optimizer=opt)")

    def _group_slices(self):
        """Yield ``(group, params, states)`` of each group (flat lists are group after group)."""
        lo = 0
        for group in self.param_groups:
            hi = lo + len(group["params"])
            yield group, self.params[lo:hi], self.state[lo:hi]
            lo = hi

    # -- the loop ------------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every parameter's ``grad`` to zero, in place."""
        self._require_bound("zero_grad")
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        """Apply one update to every trainable parameter, in place.

        Raises
        ------
        RuntimeError
            The optimiser has no parameters yet (see ``bind``).
        """
        self._require_bound("step")
        self.iterations += 1
        try:
            for group, params, states in self._group_slices():
                self._active = group   # hyper-parameter attributes read this group
                self._step_group(params, states)
        finally:
            self._active = None

    def _step_group(self, params, states):
        hyper = self._fused_hyper() if self.fused else None
        if hyper is None:
            for p, state in zip(params, states):
                if p.requires_grad:
                    self._update(p, self._regularized_grad(p, state), state)
            return
        batch = {np.dtype(np.float32): [], np.dtype(np.float64): []}
        for p, state in zip(params, states):
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
    def _group_config(self, group):
        """JSON-ready hyper-parameters of one group (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in group.items() if k != "params"}

    def get_config(self):
        """Hyper-parameters (JSON-serialisable), without ``params``.

        Returns
        -------
        dict
            Includes ``"class"`` and the constructor keyword arguments. With
            more than one parameter group, also ``"param_groups"``: per group
            ``"params"`` (positions in ``self.params``) and its
            hyper-parameters, current ``lr`` included.
        """
        first = self.param_groups[0] if self.param_groups else self._hyper
        if len(self.param_groups) > 1:
            first = self._hyper
        cfg = {"class": type(self).__name__, "lr": first["initial_lr"],
               "weight_decay": first["weight_decay"], "l1": first["l1"]}
        cfg.update({k: list(first[k]) if isinstance(first[k], tuple) else first[k]
                    for k in self.defaults})
        if len(self.param_groups) > 1:
            groups, lo = [], 0
            for group in self.param_groups:
                n = len(group["params"])
                groups.append(dict(self._group_config(group), params=list(range(lo, lo + n))))
                lo += n
            cfg["param_groups"] = groups
        return cfg

    def state_dict(self):
        """Everything needed to resume: hyper-parameters, counters, slot arrays.

        Returns
        -------
        dict
            ``{"config": dict, "lr": float, "initial_lr": float,
            "iterations": int, "slots": {"<param index>.<name>": ndarray}}``;
            slot arrays are copies; everything except ``slots`` is
            JSON-serialisable. ``lr`` and ``initial_lr`` are the first
            group's; ``config["param_groups"]`` holds every group's when there
            are several.
        """
        self._require_bound("state_dict")
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
            Other optimiser class, other number of parameters, groups or slot shapes.
        """
        owner = type(self).__name__
        self._require_bound("load_state_dict")
        cfg = state_dict.get("config", {})
        if cfg.get("class", owner) != owner:
            raise ValueError(f"{owner}.load_state_dict: state is for {cfg.get('class')}")
        saved_groups = cfg.get("param_groups")
        if saved_groups is not None and (
                [len(g["params"]) for g in saved_groups]
                != [len(g["params"]) for g in self.param_groups]):
            raise ValueError(
                f"{owner}.load_state_dict: state has groups of sizes "
                f"{[len(g['params']) for g in saved_groups]}, this optimizer "
                f"{[len(g['params']) for g in self.param_groups]}")
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
                new_state[int(idx)][key] = int(value)   # the step count
                continue
            if key in self._scalar_slots and value.ndim == 0:
                new_state[int(idx)][key] = float(value)
                continue
            if value.shape != p.data.shape:
                raise ValueError(
                    f"{owner}.load_state_dict: slot {name!r} has shape {value.shape}, "
                    f"parameter {idx} has shape {p.data.shape}"
                )
            new_state[int(idx)][key] = np.array(value, dtype=p.data.dtype, copy=True)
        if saved_groups is not None:
            for group, saved in zip(self.param_groups, saved_groups):
                h = {k: (tuple(v) if isinstance(v, list) else v)
                     for k, v in saved.items() if k != "params"}
                group.update(self._check_hyper(h, owner))
        else:
            h = {k: getattr(self, k) for k in self._hyper}
            h.update((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()
                     if k in self._hyper and k not in ("lr", "initial_lr"))
            h["lr"] = state_dict.get("lr", self.lr)
            h["initial_lr"] = state_dict.get("initial_lr", self.initial_lr)
            for k, v in self._check_hyper(h, owner).items():
                setattr(self, k, v)
        self.state = new_state
        self.iterations = int(state_dict.get("iterations", 0))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "class")
        return f"{type(self).__name__}({args})"


def _hyper_property(name):
    """Attribute view of hyper-parameter ``name`` (see ``Optimizer``'s Notes)."""

    def get(self):
        group = self._active
        if group is None:
            group = self.param_groups[0] if self.param_groups else self._hyper
        return group[name]

    def set(self, value):
        self._hyper[name] = value
        for group in self.param_groups:
            group[name] = value

    return property(get, set, doc=f"``{name}`` of the first parameter group; "
                                  "setting it sets every group's.")


for _name in ("lr", "initial_lr", "weight_decay", "l1"):
    setattr(Optimizer, _name, _hyper_property(_name))
del _name


@register_optimizer("sgd")
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``v <- momentum * v + g`` (``v = g`` on the first step);
    ``w <- w - lr * (g + momentum * v if nesterov else v)``; plain
    ``w <- w - lr * g`` when ``momentum == 0``.

    Parameters
    ----------
    params : iterable of Parameter, a Module, a list of group dicts, or None
        See ``Optimizer`` (None: bind later, Keras form).
    lr : float, default 0.01
    momentum : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0``.
    weight_decay, l2, l1 : float
        See ``Optimizer``.
    """

    defaults = {"momentum": 0.0, "nesterov": False}

    def __init__(self, params: Optional[Params] = None, lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, *, weight_decay: float = 0.0,
                 l2: Optional[float] = None, l1: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1,
                         momentum=momentum, nesterov=nesterov)

    def _check_hyper(self, h, owner):
        h = super()._check_hyper(h, owner)
        h["momentum"] = check_fraction(owner, "momentum", h["momentum"])
        h["nesterov"] = bool(h["nesterov"])
        if h["nesterov"] and h["momentum"] == 0.0:
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0")
        return h

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
    params : iterable of Parameter, a Module, a list of group dicts, or None
        See ``Optimizer`` (None: bind later, Keras form).
    lr : float, default 0.01
    eps : float, default 1e-10
    initial_accumulator_value : float, default 0
    weight_decay, l2, l1 : float
        See ``Optimizer``.
    """

    defaults = {"eps": 1e-10, "initial_accumulator_value": 0.0}

    def __init__(self, params: Optional[Params] = None, lr: float = 0.01, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0, *, weight_decay: float = 0.0,
                 l2: Optional[float] = None, l1: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1, eps=eps,
                         initial_accumulator_value=initial_accumulator_value)

    def _check_hyper(self, h, owner):
        h = super()._check_hyper(h, owner)
        h["eps"] = check_number(owner, "eps", h["eps"])
        h["initial_accumulator_value"] = check_number(
            owner, "initial_accumulator_value", h["initial_accumulator_value"])
        return h

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
    params : iterable of Parameter, a Module, a list of group dicts, or None
        See ``Optimizer`` (None: bind later, Keras form).
    lr : float, default 0.01
    alpha : float, default 0.99
        Decay of the squared-gradient average (Keras calls it ``rho``).
    eps : float, default 1e-8
    momentum : float, default 0
    weight_decay, l2, l1 : float
        See ``Optimizer``.
    """

    defaults = {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0}

    def __init__(self, params: Optional[Params] = None, lr: float = 0.01, alpha: float = 0.99,
                 eps: float = 1e-8, momentum: float = 0.0, *, weight_decay: float = 0.0,
                 l2: Optional[float] = None, l1: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1, alpha=alpha,
                         eps=eps, momentum=momentum)

    def _check_hyper(self, h, owner):
        h = super()._check_hyper(h, owner)
        h["alpha"] = check_fraction(owner, "alpha", h["alpha"])
        h["eps"] = check_number(owner, "eps", h["eps"])
        h["momentum"] = check_fraction(owner, "momentum", h["momentum"])
        return h

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


def _update_moments(m, v, grad, b1, b2, tmp):
    """Adam's moment estimates in place: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2.

    The NumPy path of Adam, AdamW and NAdam (the fused kernel does the same
    operations in the same order); ``tmp`` is scratch of the parameter's shape.
    """
    m *= b1
    np.multiply(grad, 1.0 - b1, out=tmp)
    m += tmp
    np.multiply(grad, grad, out=tmp)
    tmp *= 1.0 - b2
    v *= b2
    v += tmp


@register_optimizer()
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

    ``m <- b1*m + (1-b1)*g``; ``v <- b2*v + (1-b2)*g**2``;
    ``w <- w - lr/(1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)``, ``t`` the
    per-parameter step count.

    Parameters
    ----------
    params : iterable of Parameter, a Module, a list of group dicts, or None
        See ``Optimizer`` (None: bind later, Keras form).
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay, l2, l1 : float
        See ``Optimizer`` (L2 is added to the gradient, as in ``torch.optim.Adam``).
    """

    defaults = {"betas": (0.9, 0.999), "eps": 1e-8}

    def __init__(self, params: Optional[Params] = None, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                 weight_decay: float = 0.0, l2: Optional[float] = None, l1: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1, betas=betas,
                         eps=eps)

    def _check_hyper(self, h, owner):
        return _check_betas_eps(super()._check_hyper(h, owner), owner)

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
        _update_moments(m, v, grad, b1, b2, tmp)
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


@register_optimizer()
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``.

    ``w <- w * (1 - lr * weight_decay)``, then the ``Adam`` update from the
    gradient (to which nothing is added for the decay).

    Parameters
    ----------
    params : iterable of Parameter, a Module, a list of group dicts, or None
        See ``Optimizer`` (None: bind later, Keras form).
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.01
        Decoupled decay rate (PyTorch's default). Like the penalties of every
        optimiser here, it applies only to parameters with ``regularize=True``
        (fastconv layers clear it for biases and batch-norm parameters, which
        PyTorch users exclude through a parameter group).
    l2 : float, optional
        Alias of ``weight_decay``.
    l1 : float, default 0
        L1 penalty added to the gradient, as in ``Optimizer``.

    Notes
    -----
    Runs on the NumPy path (no fused kernel).
    """

    def __init__(self, params: Optional[Params] = None, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                 weight_decay: float = 0.01, l2: Optional[float] = None, l1: float = 0.0) -> None:
        super().__init__(params, lr, betas, eps, weight_decay=weight_decay, l2=l2, l1=l1)

    def _regularized_grad(self, p, state):
        # the decay is applied to the weights in _update, not to the gradient
        return _l1_grad(self, p, state)

    def _update(self, p, grad, state):
        if p.regularize and self.weight_decay:
            p.data *= 1.0 - self.lr * self.weight_decay
        Adam._update(self, p, grad, state)


@register_optimizer()
class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat, 2016), as ``torch.optim.NAdam``.

    With ``t`` the per-parameter step, ``mu_t = b1 * (1 - 0.5 * 0.96**(t * momentum_decay))``
    and ``P_t = mu_1 * ... * mu_t``:
    ``m <- b1*m + (1-b1)*g``; ``v <- b2*v + (1-b2)*g**2``;
    ``d = sqrt(v / (1 - b2**t)) + eps``;
    ``w <- w - lr*(1-mu_t)/(1-P_t) * g/d - lr*mu_{t+1}/(1-P_t*mu_{t+1}) * m/d``.

    Parameters
    ----------
    params : iterable of Parameter, a Module, a list of group dicts, or None
        See ``Optimizer`` (None: bind later, Keras form).
    lr : float, default 2e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    momentum_decay : float, default 4e-3
    decoupled_weight_decay : bool, default False
        False: ``weight_decay * w`` is added to the gradient (L2, like
        ``Optimizer``); True: ``w <- w * (1 - lr * weight_decay)`` before the
        update (AdamW-style, PyTorch's ``NAdam(decoupled_weight_decay=True)``).
    weight_decay, l2, l1 : float
        See ``Optimizer``.

    Notes
    -----
    The state holds ``exp_avg``, ``exp_avg_sq``, ``step`` and ``mu_product``
    (a float). Runs on the NumPy path (no fused kernel).
    """

    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "momentum_decay": 4e-3,
                "decoupled_weight_decay": False}
    _scalar_slots = ("mu_product",)

    def __init__(self, params: Optional[Params] = None, lr: float = 2e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 weight_decay: float = 0.0, l2: Optional[float] = None, l1: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, l2=l2, l1=l1, betas=betas,
                         eps=eps, momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay)

    def _check_hyper(self, h, owner):
        h = _check_betas_eps(super()._check_hyper(h, owner), owner)
        h["momentum_decay"] = check_number(owner, "momentum_decay", h["momentum_decay"])
        h["decoupled_weight_decay"] = bool(h["decoupled_weight_decay"])
        return h

    def _regularized_grad(self, p, state):
        if self.decoupled_weight_decay:
            return _l1_grad(self, p, state)
        return Optimizer._regularized_grad(self, p, state)

    def _update(self, p, grad, state):
        b1, b2 = self.betas
        m = state.get("exp_avg")
        if m is None:
            m = state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] = 0
            state["mu_product"] = 1.0
        v = state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"]
        if self.decoupled_weight_decay and p.regularize and self.weight_decay:
            p.data *= 1.0 - self.lr * self.weight_decay
        # the same scalar expressions as torch.optim.NAdam, in Python floats
        bias_correction2 = 1.0 - b2**t
        mu = b1 * (1.0 - 0.5 * (0.96 ** (t * self.momentum_decay)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * self.momentum_decay)))
        mu_product = state["mu_product"] * mu
        state["mu_product"] = mu_product
        tmp = self._scratch(state, "_tmp", p.data)
        _update_moments(m, v, grad, b1, b2, tmp)
        denom = self._scratch(state, "_denom", p.data)
        np.divide(v, bias_correction2, out=denom)
        np.sqrt(denom, out=denom)
        denom += self.eps
        np.divide(grad, denom, out=tmp)
        tmp *= self.lr * (1.0 - mu) / (1.0 - mu_product)
        p.data -= tmp
        np.divide(m, denom, out=tmp)
        tmp *= self.lr * mu_next / (1.0 - mu_product * mu_next)
        p.data -= tmp


def _check_betas_eps(h, owner):
    betas = h["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair of floats, got {betas!r}")
    h["betas"] = (check_fraction(owner, "betas[0]", betas[0]),
                  check_fraction(owner, "betas[1]", betas[1]))
    h["eps"] = check_number(owner, "eps", h["eps"])
    return h


def _l1_grad(opt, p, state):
    """The gradient plus the L1 term only (for optimisers that decay weights directly)."""
    if not p.regularize or opt.l1 == 0.0:
        return p.grad
    g = opt._scratch(state, "_reg_grad", p.data)
    np.sign(p.data, out=g)
    g *= opt.l1
    g += p.grad
    return g


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


# -- gradient clipping ---------------------------------------------------------
def _grad_params(params, owner):
    from .nn.module import Parameter

    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    params = [params] if isinstance(params, Parameter) else list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(
                f"{owner}: parameters[{i}] must be a fastconv.nn.Parameter, got {type(p).__name__}")
    return [p for p in params if p.requires_grad]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so that their joint norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the norm is taken over all the
    gradients as if concatenated into one vector; every gradient is multiplied
    by ``min(1, max_norm / (total_norm + 1e-6))``.

    Parameters
    ----------
    parameters : Parameter, iterable of Parameter, or a Module
        Frozen parameters (``requires_grad=False``) are left out.
    max_norm : float
        Must be >= 0.
    norm_type : float, default 2.0
        Order of the norm (> 0); ``float("inf")`` for the largest absolute value.
    error_if_nonfinite : bool, default False
        Raise if the total norm is NaN or infinite (otherwise gradients are
        scaled by a NaN factor, as in PyTorch).

    Returns
    -------
    float
        The total norm of the gradients before clipping.

    Raises
    ------
    ValueError
        Bad ``max_norm`` / ``norm_type``, or a non-finite norm when
        ``error_if_nonfinite``.
    """
    owner = "clip_grad_norm_"
    params = _grad_params(parameters, owner)
    max_norm = check_number(owner, "max_norm", max_norm)
    try:
        norm_type = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: norm_type must be a number, got {norm_type!r}") from None
    if not norm_type > 0:
        raise ValueError(f"{owner}: norm_type must be > 0 (or inf), got {norm_type}")
    if not params:
        return 0.0
    # per-parameter norms in float64 (PyTorch takes them in the gradient's dtype,
    # so float32 results agree to float32 rounding)
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(p.grad))) if p.grad.size else 0.0 for p in params)
    else:
        norms = np.array([np.linalg.norm(p.grad.ravel().astype(np.float64), norm_type)
                          if p.grad.size else 0.0 for p in params])
        total = float(np.linalg.norm(norms, norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(
            f"{owner}: the total norm of order {norm_type} of the gradients is {total}; "
            "pass error_if_nonfinite=False to scale them anyway")
    coef = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
    if coef < 1.0 or math.isnan(coef):
        for p in params:
            p.grad *= coef
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]``, in place.

    As ``torch.nn.utils.clip_grad_value_``.

    Parameters
    ----------
    parameters : Parameter, iterable of Parameter, or a Module
        Frozen parameters are left out.
    clip_value : float
        Must be >= 0.

    Raises
    ------
    ValueError
        ``clip_value`` negative, NaN or infinite.
    """
    owner = "clip_grad_value_"
    params = _grad_params(parameters, owner)
    clip_value = check_number(owner, "clip_value", clip_value)
    for p in params:
        np.clip(p.grad, -clip_value, clip_value, out=p.grad)


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


# -- learning-rate schedules -------------------------------------------------
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
