"""Optimisers with per-element adaptive rates: Adagrad, RMSprop, Adam, AdamW, NAdam."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from .. import _kernels
from .._validate import check_fraction, check_number
from .base import Optimizer, Params, _fused_ok, _l1_grad, fused_update
from .registry import register_optimizer


@register_optimizer()
@fused_update
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
@fused_update
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
@fused_update
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
