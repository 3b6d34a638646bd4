"""The optimiser base class: parameter groups, the step loop, the fused path, persistence.

Subclasses (``sgd.py``, ``adaptive.py``) override ``_update`` and, for the
fused path, ``_fused_values`` / ``_fused_tensor`` (see ``fastconv.optim``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

import numpy as np

from .. import _kernels
from .._validate import FLOAT_DTYPES, check_number
from ..functional import get_num_threads

if TYPE_CHECKING:  # annotations only: fastconv.optim does not import fastconv.nn
    from ..nn.module import Module, Parameter

# What an optimiser optimises: parameters, a module (its parameters()), group dicts.
Params = Union[Iterable["Parameter"], "Module", List[Dict[str, Any]]]
_O = TypeVar("_O", bound="Optimizer")

_FUSED_DEFAULT = os.environ.get("FASTCONV_FUSED_OPTIM", "1").strip().lower() not in (
    "0", "false", "no", "off")

# The _update methods the kernel reproduces, and the class that knows how
# (filled by @fused_update on SGD, Adagrad, RMSprop and Adam).
_FUSED_UPDATES: Dict[Any, type] = {}


def fused_update(cls):
    """Class decorator: ``cls._update`` is reproduced by ``_kernels.optim_step``.

    A subclass that overrides ``_update`` is not in the table, so it takes the
    NumPy path.
    """
    _FUSED_UPDATES[cls._update] = cls
    return cls


def is_parameter(p):
    """True if ``p`` has what an optimiser reads and writes: a ``fastconv.nn.Parameter``.

    Checked by its attributes, so that this package need not import
    ``fastconv.nn`` (which imports it to compile models).
    """
    return (isinstance(getattr(p, "data", None), np.ndarray)
            and isinstance(getattr(p, "grad", None), np.ndarray)
            and hasattr(p, "requires_grad") and hasattr(p, "regularize"))


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

    defaults: Dict[str, Any] = {}
    _scalar_slots: Tuple[str, ...] = ()   # float state entries that are not arrays (NAdam's mu_product)
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
        self.param_groups: List[Dict[str, Any]] = []
        self.params: List[Any] = []
        self.state: List[Dict[str, Any]] = []
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
        params = [params] if is_parameter(params) else list(params)
        if not params:
            raise ValueError(f"{owner}: params is empty")
        for i, p in enumerate(params):
            if not is_parameter(p):
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

    def _begin_fused_step(self):
        """Begin one step whose kernel calls the caller makes, on parts of the arrays.

        For ``fastconv.distributed``'s sharded step: every rank advances the
        whole optimiser state's counters, then updates only its share of each
        parameter's elements with ``_kernels.optim_step`` (elementwise, so the
        share's bits equal a whole step's).

        Returns
        -------
        list of (tuple, list of (int, tuple)) or None
            Per parameter group: the kernel's hyper-parameter tuple and, per
            trainable parameter, its index in ``self.params`` and its
            ``optim_step`` tensor tuple. ``iterations`` and the per-parameter
            counters are then advanced and missing slots created, as ``step``
            would. None, with nothing changed, when some parameter would take
            the NumPy path (call ``step`` instead). The tensors keep their
            parameters' dtypes; ``optim_step`` takes one dtype per call.
        """
        self._require_bound("step")
        if not self.fused:
            return None
        plan, staged, index = [], [], 0
        try:
            for group, params, states in self._group_slices():
                self._active = group   # hyper-parameter attributes read this group
                hyper = self._fused_hyper()
                if hyper is None:
                    return None
                entries = []
                for p, state in zip(params, states):
                    if p.requires_grad:
                        # _fused_tensor advances counters and creates slots: on a
                        # copy of the state until every parameter has passed
                        trial = dict(state)
                        t = self._fused_tensor(p, trial)
                        if t is None:
                            return None
                        staged.append((state, trial))
                        entries.append((index, t))
                    index += 1
                plan.append((hyper, entries))
        finally:
            self._active = None
        for state, trial in staged:
            state.update(trial)
        self.iterations += 1
        return plan

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
    ok = (w.dtype in FLOAT_DTYPES and g.dtype == w.dtype and g.shape == w.shape
          and w.flags.c_contiguous and w.flags.writeable
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
