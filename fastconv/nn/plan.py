"""Inference plans: a ``Sequential`` turned once into a list of kernel calls.

``Sequential.predict``, ``evaluate`` and ``forward`` in evaluation mode run a
plan instead of calling the layers one by one. A plan is built for one input
shape and dtype; building it does, once, what every layer call would
otherwise repeat: the input checks (with the layers' own error messages),
output shapes, fusion (a ``Conv2d`` followed by ``ReLU`` is one kernel call,
as in ``Sequential._forward``; both ask ``fastconv.nn.fusion``) and the choice of kernel. Running it is a loop
over calls into ``fastconv._kernels`` with nothing left to check but the
identity of each parameter array.

Parameters are read at every call, so training updates, ``load_state_dict``
and optimiser steps are seen; a parameter replaced by an array of another
shape makes the owner rebuild the plan. Arrays derived from a weight (the
copy of W a Linear reads for a few rows: in panels for one row, k-major for
more; a Winograd conv's transformed weights and their packing) are kept
only while provably current (``_ParamStep._derived_weight``), and give the
bits of the kernels that derive them on every call. When every
step has an op, one ``_kernels.PlanProgram`` call makes all the kernel calls
from C (no Python per step). Outputs go into buffers that belong to
the calling thread (``threading.local``), never into the layers' own buffers:
any number of threads may run one plan at once, and each gets the result a
single thread would (bitwise: the kernels' results do not depend on the
thread count, and every sample's result does not depend on its batch).

The computation is evaluation mode whatever the layers' ``training`` flags
say: ``Dropout`` is the identity and batch normalisation uses the running
statistics. Results are bitwise those of the layer-by-layer forward in
evaluation mode.
"""

import threading

import numpy as np

from .. import _kernels
from .. import functional as F
from .fusion import forward_steps
from .activations import ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv1d, Conv2d
from .dense import Flatten, Linear
from .normalization import BatchNorm1d, BatchNorm2d, Dropout
from .pooling import AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .layer_errors import LayerInputError, layer_input_error  # noqa: F401 (re-exported)
from .plan_steps import (  # noqa: F401 (StalePlan re-exported)
    StalePlan,
    _Activation,
    _AvgPool,
    _BUFFER,
    _BatchNorm,
    _Conv,
    _INPLACE,
    _Identity,
    _Linear,
    _MaxPool,
    _ParamStep,
    _Relu,
    _Reshape,
    fuse_pool,
    fuse_relu,
)

__all__ = ["InferencePlan", "LayerInputError", "plannable"]

_KNOWN = (Conv2d, Conv1d, ReLU, MaxPool2d, AvgPool2d, MaxPool1d, AvgPool1d, Linear, Flatten,
          Dropout, Sigmoid, Tanh, Softmax, BatchNorm1d, BatchNorm2d)


def _flat_layers(model):
    """The layers of ``model`` with nested ``Sequential`` models spliced in."""
    return [layer for _, layer in _flat_paths(model)]


def _flat_paths(model, prefix=()):
    """``(path, layer)`` for the layers of ``_flat_layers``; ``path`` is the index
    in each enclosing model, outermost first (for error messages)."""
    out = []
    for j, layer in enumerate(model.layers):
        if type(layer) is type(model):
            out.extend(_flat_paths(layer, prefix + (j,)))
        else:
            out.append((prefix + (j,), layer))
    return out


def plannable(model):
    """Whether every layer of ``model`` (nested Sequentials included) can be planned.

    Not a layer that returns several arrays (``MaxPool2d(return_indices=True)``,
    ...) or whose output is not row by row of its input (``Flatten(axis=0)``,
    batch statistics in evaluation): those run through the layers.
    """
    return all(type(layer) in _KNOWN and getattr(layer, "_n_outputs", 1) == 1
               and not getattr(layer, "_whole_batch", False) for layer in _flat_layers(model))


class InferencePlan:
    """The evaluation-mode forward of a ``Sequential`` for one input shape and dtype.

    Parameters
    ----------
    model : Sequential
        Every layer must be of a type in ``_KNOWN`` (see ``plannable``).
    shape : tuple of int
        Input shape, batch axis included.
    dtype : numpy dtype

    Raises
    ------
    ValueError, TypeError
        The input does not fit the layers: the message the layer (or the
        kernel API) would give for the same input.

    Attributes
    ----------
    out_shape : tuple of int
    mode_layers : list of Module
        Layers whose forward depends on ``training`` (dropout, batch norm): a
        ``forward`` with any of them in training mode must not use the plan.
    """

    def __init__(self, model, shape, dtype):
        dtype = np.dtype(dtype)
        paths = _flat_paths(model)
        layers = [layer for _, layer in paths]
        self.shape = tuple(shape)
        self.dtype = dtype
        self.mode_layers = [m for m in layers if isinstance(m, (Dropout, BatchNorm1d, BatchNorm2d))]
        steps = []
        shape = self.shape
        owned = False  # whether the current value is a buffer of the plan (not the caller's x)
        # the conv+ReLU pairs Sequential._forward fuses, decided by the same function
        for i, fused in forward_steps(layers, model.fuse_conv_relu):
            try:
                step = self._step(layers[i], shape, dtype, fused, owned)
            except LayerInputError:
                raise
            except ValueError as exc:
                # the message Sequential._forward gives for the same input
                labels = [".".join(map(str, p)) for p, _ in paths]
                err = layer_input_error(layers, i, shape, exc, self.shape, labels)
                raise LayerInputError(paths[i][0], err.layer, err.reason) from exc
            if step.kind == _BUFFER:
                owned = True
            steps.append(step)
            shape = step.out_shape
        self.steps = steps
        self.out_shape = shape
        self._finish()

    @staticmethod
    def _step(layer, shape, dtype, relu, owned):
        """The step for ``layer`` (``relu``: a conv layer that applies the next layer's ReLU)."""
        kind = type(layer)
        if kind in (Conv2d, Conv1d):
            return _Conv(layer, shape, dtype, relu)
        if kind is Linear:
            step = _Linear(layer, shape, dtype)
        elif kind in (MaxPool2d, MaxPool1d):
            step = _MaxPool(layer, shape, dtype)
        elif kind in (AvgPool2d, AvgPool1d):
            step = _AvgPool(layer, shape, dtype)
        elif kind is ReLU:
            step = _Relu(shape, dtype, inplace=owned)
        elif kind in (Sigmoid, Tanh, Softmax):
            step = _Activation(layer, shape, dtype)
        elif kind in (BatchNorm1d, BatchNorm2d):
            step = _BatchNorm(layer, shape, dtype)
        elif kind is Flatten:
            step = _Reshape(shape)
        elif kind is Dropout:
            step = _Identity(shape, dtype)
        else:
            raise TypeError(f"InferencePlan: cannot plan a {kind.__name__} layer")
        return step

    def _finish(self):
        steps, shape = self.steps, self.out_shape
        # The step whose buffer the result is: a caller's `out` can take its
        # place when only in-place steps follow it and the shapes agree.
        self.producer = None
        for j in range(len(steps) - 1, -1, -1):
            if steps[j].kind == _BUFFER:
                if steps[j].out_shape == shape:
                    self.producer = j
                break
            if steps[j].kind != _INPLACE:
                break
        self._buffer_shapes = [s.out_shape if s.kind == _BUFFER else None for s in steps]
        self._local = threading.local()
        self._build_program()

    def _build_program(self):
        """The steps as one ``_kernels.PlanProgram`` (one call from Python for the
        whole model, ~1 us less per step at batch 1), when every step has an op.
        Slots: 0 the input, 1 + i step i's buffer, then each parameter step's
        weight and bias.

        Two pairs of steps become one op (``plan_steps.fuse_pool`` and
        ``fuse_relu`` say when; the bits are those of the two steps): a direct or
        Winograd conv followed by a 2x2/2 max-pool (the conv's output is never
        stored, so its buffer is not made), and a Linear followed by ReLU.
        """
        self.program = None
        self._unused, self._relu_fused = [], []
        steps = self.steps
        ops, params = [], []
        nslots = 1 + len(steps)
        slot = 0
        unused = []  # buffers of steps fused away
        i = 0
        while i < len(steps):
            step = steps[i]
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            w = b = -1
            if isinstance(step, _ParamStep):
                w, b = nslots, nslots + 1
            dst = slot if step.kind == _INPLACE else 1 + i
            op = step.program_op(slot, dst, w, b)
            if op is None:
                return
            skip = 0
            fused = fuse_pool(step, nxt) if op else None
            if fused is not None:
                op = (fused,) + op[1:3] + (2 + i,) + op[4:]
                unused.append(i)
                dst, skip = 2 + i, 1
            elif op and fuse_relu(step, nxt):
                op = op[:6] + (True,) + op[7:]
                self._relu_fused.append(i + 1)
                skip = 1
            i += 1 + skip
            if op == ():
                continue
            if w >= 0:
                params.append((step, len(ops), w, b))
                nslots += 2
            ops.append(op)
            slot = dst
        if not ops or slot == 0:
            return
        self.program = _kernels.PlanProgram(ops, nslots)
        self._nslots, self._nops = nslots, len(ops)
        self._no_variants = [0] * len(ops)
        self._params_ops = params
        self._final_slot = slot
        self._unused = unused

    def _run_program(self, x, out, nt):
        slots = getattr(self._local, "slots", None)
        if slots is None:  # this thread's buffers, but none for the steps fused away
            shapes = [None if i in self._unused else s for i, s in enumerate(self._buffer_shapes)]
            slots = [None] + [None if s is None else np.empty(s, self.dtype) for s in shapes]
            slots += [None] * (self._nslots - len(slots))
            self._local.slots = slots
        # a list per call: no reference to x, out or a weight outlives the call
        # (a held weight would look like a writer's to _derived_weight)
        arrays = slots[:]
        arrays[0] = x
        if out is not None and self.producer is not None:
            arrays[1 + self.producer] = out
        variants = self._no_variants[:]
        for step, k, w, b in self._params_ops:
            variants[k], arrays[w], arrays[b] = step.operands()
        self.program.run(arrays, variants, nt)
        y = arrays[self._final_slot]
        if y.shape != self.out_shape:
            y = y.reshape(self.out_shape)
        return y

    def _buffers(self):
        """This thread's output arrays, one per buffer-writing step, for running
        the steps one by one (made on first use)."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            bufs = [None if s is None else np.empty(s, self.dtype) for s in self._buffer_shapes]
            self._local.bufs = bufs
        return bufs

    def run(self, x, out=None):
        """Evaluate the model on ``x``.

        Parameters
        ----------
        x : ndarray of the plan's shape and dtype
        out : ndarray of shape ``out_shape``, C-contiguous, optional
            Where to write the result (the last kernel writes straight into
            it when it can).

        Returns
        -------
        ndarray
            ``out``, or else an array that belongs to the calling thread and
            is overwritten by its next run of this plan.

        Raises
        ------
        StalePlan
            A parameter was replaced by an array of another shape or dtype.
        """
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        if x.shape[0] == 0:  # the kernels are not called for empty batches
            y = np.empty(self.out_shape, self.dtype)
            if out is not None:
                return out
            return y
        nt = F.get_num_threads()
        if self.program is not None:
            x = self._run_program(x, out, nt)
            if out is not None and x is not out:
                np.copyto(out, x)
                return out
            return x
        bufs = self._buffers()
        producer = self.producer if out is not None else None
        for i, step in enumerate(self.steps):
            x = step.run(x, out if i == producer else bufs[i], nt)
        if out is not None and x is not out:
            np.copyto(out, x)
            return out
        return x
