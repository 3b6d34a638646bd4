"""Stochastic gradient descent (with optional Nesterov momentum)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .. import _kernels
from .._validate import check_fraction
from .base import Optimizer, Params, _fused_ok, fused_update
from .registry import register_optimizer


@register_optimizer("sgd")
@fused_update
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
