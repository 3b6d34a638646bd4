"""``Module`` and ``Parameter``: the base of every layer.

A module owns its parameters (``Parameter``: ``data`` plus an accumulated
``grad``) and buffers (state that is saved but not trained, such as batch-norm
running statistics). ``forward(x)`` caches what ``backward`` needs;
``backward(grad_out)`` adds the parameter gradients into ``Parameter.grad`` and
returns the gradient with respect to the input.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple, TypeVar

import numpy as np
from numpy.typing import NDArray

# What layers take and return: float32 or float64 arrays (dtype checked at run time).
Array = NDArray[Any]
_M = TypeVar("_M", bound="Module")

__all__ = ["Module", "Parameter", "no_grad", "is_grad_enabled"]

# Grad mode is per thread (as in PyTorch): one thread's ``no_grad`` block must
# not switch off caching in a thread that is training at the same time.
_grad_mode = threading.local()


def is_grad_enabled() -> bool:
    """Whether layers cache what ``backward`` needs (False inside ``no_grad``).

    The setting belongs to the calling thread.

    Returns
    -------
    bool
    """
    return getattr(_grad_mode, "enabled", True)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Context manager for inference: layers skip caching for ``backward``.

    Inside the block max-pool layers do not compute argmax indices and no
    layer keeps a reference to its input, so inference is faster and lighter.
    Calling ``backward`` on a forward pass made inside the block raises
    ``RuntimeError``. It applies to the calling thread only.

    Examples
    --------
    >>> with no_grad():                                   # doctest: +SKIP
    ...     logits = model(x)
    """
    previous = is_grad_enabled()
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


class Parameter:
    """A trainable array and its accumulated gradient.

    Parameters
    ----------
    data : array_like
        Initial value; stored as a C-contiguous float32 or float64 array.
    requires_grad : bool, default True
        False freezes the parameter: layers skip its gradient and optimisers
        skip its update.
    regularize : bool, default True
        Whether optimisers apply L1 / L2 penalties to it. Layers set this to
        False for biases and batch-norm scale/shift, which are conventionally
        not decayed.

    Attributes
    ----------
    data : ndarray
        The value, updated in place by optimisers (so references stay valid).
    grad : ndarray
        Same shape and dtype as ``data``; ``backward`` adds into it and
        ``Optimizer.zero_grad`` resets it to zero.
    """

    # ``data`` is a property over ``_data`` that counts every time the array is
    # handed out (``_version``): whoever writes it in place must have taken it
    # through ``data``. With ``_kernels.sole_reference`` (nobody else holds the
    # array) that proves it unchanged since a given count, which lets an
    # inference plan keep a derived copy (a transposed weight) without
    # re-reading the whole array at every call.
    __slots__ = ("_data", "_version", "grad", "requires_grad", "regularize")

    def __init__(self, data: Any, requires_grad: bool = True, regularize: bool = True) -> None:
        data = np.array(data, copy=True, order="C")
        if data.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"Parameter: data must be float32 or float64, got dtype {data.dtype}"
            )
        self._version = 0
        self.data = data
        self.grad = np.zeros_like(data)
        self.requires_grad = bool(requires_grad)
        self.regularize = bool(regularize)

    @property
    def data(self) -> np.ndarray:
        """The value, an ndarray updated in place by optimisers."""
        self._version += 1
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        # getattr: a pickle of an older Parameter sets ``data`` before any count
        self._version = getattr(self, "_version", 0) + 1
        self._data = value

    @property
    def shape(self) -> Tuple[int, ...]:
        """Shape of ``data``."""
        return self._data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Dtype of ``data``."""
        return self._data.dtype

    @property
    def size(self) -> int:
        """Number of elements of ``data``."""
        return self._data.size

    def zero_grad(self) -> None:
        """Set ``grad`` to zero in place."""
        self.grad.fill(0)

    def __repr__(self) -> str:
        return f"Parameter(shape={self._data.shape}, dtype={self._data.dtype})"


class Module:
    """Base class of layers and containers.

    Subclasses implement ``forward(x)`` and ``backward(grad_out)``, store
    their ``Parameter`` objects as attributes (found by ``named_parameters`` in
    attribute order) and list non-trainable saved arrays in ``_buffer_names``.
    Containers override ``named_children``.

    Attributes
    ----------
    training : bool
        Training mode (True) or evaluation mode (False); see ``train``/``eval``.
    needs_input_grad : bool
        When False, ``backward`` may skip the gradient with respect to the
        input and return None. ``Sequential`` sets it on its first layer
        because nothing upstream consumes that gradient.
    reuse_buffers : bool
        When True, the layer writes its outputs and input gradients into arrays
        it keeps between calls, instead of allocating new ones each step. Set
        by ``Sequential`` on its layers: the array returned by a layer is then
        only valid until that layer's next call.
    """

    _buffer_names: Tuple[str, ...] = ()

    def __init__(self) -> None:
        self.training = True
        self.needs_input_grad = True
        self.reuse_buffers = False
        self._scratch: Dict[str, Array] = {}

    # -- the computation ---------------------------------------------------
    def forward(self, x: Array) -> Array:
        """Compute the output for input ``x``, caching what ``backward`` needs."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad_out: Array) -> Optional[Array]:
        """Gradient of the loss w.r.t. the input, given it w.r.t. the output.

        Parameter gradients are added into ``Parameter.grad``.
        """
        name = type(self).__name__
        if type(self).forward is not Module.forward:
            raise NotImplementedError(
                f"{name} defines forward but not backward; fastconv has no autograd: "
                f"implement {name}.backward(grad_out) returning the gradient with respect to "
                "the input and adding each parameter's gradient into its .grad")
        raise NotImplementedError(f"{name}.backward")

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def _buffer(self, name, shape, dtype):
        """An uninitialised array for output ``name``: reused when allowed."""
        if not self.reuse_buffers:
            return np.empty(shape, dtype)
        buf = self._scratch.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
            self._scratch[name] = buf
        return buf

    def _saved(self, name):
        """Fetch a forward-pass cache entry or explain why it is missing."""
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a preceding forward "
                "pass that kept its inputs (forward inside no_grad() keeps nothing)"
            )
        return value

    # -- tree walking --------------------------------------------------------
    def named_children(self):
        """Yield ``(name, module)`` for direct sub-modules."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator[Module]:
        """Yield direct sub-modules."""
        for _, m in self.named_children():
            yield m

    def modules(self) -> Iterator[Module]:
        """Yield this module and all sub-modules, depth first."""
        yield self
        for m in self.children():
            yield from m.modules()

    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, Parameter]]:
        """Yield ``(dotted_name, Parameter)`` for this module and its children.

        Parameters
        ----------
        prefix : str, default ""
            Prepended to every name.

        Yields
        ------
        name : str
        param : Parameter
        """
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for cname, child in self.named_children():
            yield from child.named_parameters(prefix + cname + ".")

    def parameters(self) -> List[Parameter]:
        """List of all ``Parameter`` objects (trainable or frozen), in order.

        Returns
        -------
        list of Parameter
        """
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        """Yield ``(dotted_name, ndarray)`` for saved non-trainable state."""
        for name in self._buffer_names:
            yield prefix + name, getattr(self, name)
        for cname, child in self.named_children():
            yield from child.named_buffers(prefix + cname + ".")

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zero."""
        for p in self.parameters():
            p.grad.fill(0)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total number of parameter elements.

        Parameters
        ----------
        trainable_only : bool, default False
            Count only parameters with ``requires_grad``.

        Returns
        -------
        int
        """
        return int(
            sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)
        )

    # -- modes ---------------------------------------------------------------
    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode (dropout active, batch norm uses batch statistics).

        Parameters
        ----------
        mode : bool, default True

        Returns
        -------
        self
        """
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self: _M) -> _M:
        """Set evaluation mode; same as ``train(False)``.

        Returns
        -------
        self
        """
        return self.train(False)

    # -- state ---------------------------------------------------------------
    def state_dict(self) -> Dict[str, Array]:
        """Copies of all parameters and buffers, keyed by dotted name.

        Returns
        -------
        dict of str to ndarray
            Parameters first (in ``named_parameters`` order), then buffers.
        """
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        for name, b in self.named_buffers():
            state[name] = np.array(b, copy=True)
        return state

    def load_state_dict(self, state_dict: Dict[str, Any], strict: bool = True) -> None:
        """Copy values from ``state_dict`` into this module, in place.

        Arrays are copied into the existing parameter arrays (so optimisers
        that hold references keep working) and cast to their dtype.

        Parameters
        ----------
        state_dict : mapping of str to array_like
        strict : bool, default True
            Raise if ``state_dict`` has missing or unexpected keys.

        Raises
        ------
        ValueError
            Missing or unexpected keys (when ``strict``) or a shape mismatch.
        """
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(dict(self.named_buffers()))
        if strict:
            missing = [k for k in targets if k not in state_dict]
            unexpected = [k for k in state_dict if k not in targets]
            if missing or unexpected:
                raise ValueError(
                    f"load_state_dict: state_dict does not match {type(self).__name__}: "
                    f"missing keys {missing}, unexpected keys {unexpected}"
                )
        for name, target in targets.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            if value.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: {name!r} expects shape {target.shape}, "
                    f"got shape {value.shape}"
                )
            np.copyto(target, value, casting="unsafe")

    # -- RNG state (dropout masks) for bitwise-reproducible resume -----------
    def get_rng_state(self):
        """Bit-generator states of modules that draw random numbers.

        Returns
        -------
        dict of str to dict
            Keyed by module path ("" for this module); JSON-serialisable.
        """
        states = {}
        for prefix, m in self._named_modules():
            rng = getattr(m, "rng", None)
            if isinstance(rng, np.random.Generator):
                states[prefix] = rng.bit_generator.state
        return states

    def set_rng_state(self, states):
        """Restore states produced by ``get_rng_state``.

        Parameters
        ----------
        states : dict of str to dict
        """
        modules = dict(self._named_modules())
        for prefix, state in states.items():
            m = modules.get(prefix)
            if m is None or not isinstance(getattr(m, "rng", None), np.random.Generator):
                raise ValueError(
                    f"set_rng_state: no random module at {prefix!r} in {type(self).__name__}"
                )
            m.rng.bit_generator.state = state

    def _named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child._named_modules(f"{prefix}.{name}" if prefix else name)

    # -- config (save / load) ------------------------------------------------
    def get_config(self):
        """Constructor arguments (JSON-serialisable) that rebuild this module.

        Returns
        -------
        dict
        """
        return {}

    def extra_repr(self):
        """Text shown inside the parentheses of ``repr``."""
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
