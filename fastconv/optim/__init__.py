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

Layout: ``base`` (``Optimizer``), ``sgd``, ``adaptive`` (Adagrad, RMSprop,
Adam, AdamW, NAdam), ``clip``, ``schedules``, and ``registry`` (names to
classes: ``get_optimizer``, ``optimizer_from_config``; saved models name their
optimiser's class, not its module). This package does not import
``fastconv.nn``: parameters are recognised by their attributes.

Schedules (``ExponentialDecay``, ``StepDecay``, ``LambdaSchedule``) map an
epoch index to a learning rate from the base rate ``lr0`` (by default each
parameter group's ``initial_lr``); pass them in ``fit(callbacks=[...])`` or
call ``schedule.step()`` at the end of each epoch in a hand-written loop
(PyTorch's convention). ``fastconv.nn.callbacks.ReduceLROnPlateau`` cuts the
rate when a metric stalls.
"""

from .adaptive import Adagrad, Adam, AdamW, NAdam, RMSprop
from .base import Optimizer
from .clip import clip_grad_norm_, clip_grad_value_
from .registry import _OPTIMIZERS, get_optimizer, optimizer_from_config, register_optimizer
from .schedules import ExponentialDecay, LambdaSchedule, LRSchedule, StepDecay
from .sgd import SGD

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
