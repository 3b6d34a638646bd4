"""``Sequential``: a stack of layers run in order.

Training and evaluation (``compile`` / ``fit`` / ``evaluate`` / ``predict``) live in
``fastconv.nn.trainer``; the methods of the same names here delegate to it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from .. import _routes
from .. import functional as F
from . import trainer
from .fusion import FusionPlan
from .layer_base import _Layer, _layer_spec, layer_from_config, register_layer
from .module import Array, Module, is_grad_enabled, no_grad
from .plan import InferencePlan, LayerInputError, StalePlan, layer_input_error, plannable
from .serialization import save_model

if TYPE_CHECKING:  # for annotations only
    from ..optim import LRSchedule, Optimizer
    from .callbacks import Callback, History
    from .losses import Loss

__all__ = ["Sequential"]

# Inference plans kept per model (one per input shape, dtype and kernel setting):
# predict's full batches and its last, shorter one need two.
_MAX_PLANS = 8


def _copy_out(y):
    """A copy of a model's output: one array, or the tuple a last layer with several
    outputs returns (``MaxPool2d(return_indices=True)``, ...)."""
    return tuple(a.copy() for a in y) if isinstance(y, tuple) else y.copy()


@register_layer
class Sequential(_Layer):
    """A stack of layers applied in order, with ``compile`` / ``fit`` / ``evaluate`` / ``predict``.

    The model stacks and runs its layers; the Keras-style methods delegate to
    ``fastconv.nn.trainer``, where the training loop and the metrics live.

    Parameters
    ----------
    *args : Module, or one list/tuple of Module
        ``Sequential(conv, relu, ...)`` (PyTorch's form), ``Sequential([conv,
        relu, ...])`` (Keras's form), ``Sequential(layer)`` or ``Sequential()``.
    layers : list of Module, optional
        Keyword form, ``Sequential(layers=[...])``; not together with ``args``.

    Attributes
    ----------
    layers : list of Module
    optimizer : Optimizer or None
        Set by ``compile``.
    loss : Loss or None
        Set by ``compile``.
    history : History or None
        Of the last ``fit``.
    stop_training : bool
        Set by callbacks to end ``fit`` after the current epoch.
    fit_rng : numpy.random.Generator or None
        The shuffling/augmentation generator of the current or last ``fit``
        (saved by ``ModelCheckpoint`` so that training can resume exactly).

    Notes
    -----
    **Inference** (``predict``, ``evaluate``, and ``forward`` in evaluation
    mode) runs through an inference plan (``fastconv.nn.plan``): built on the
    first call for each input shape and dtype, it checks the input and picks
    the kernels once, then each call is a short loop of kernel calls. The
    plan reads the parameters at every call (training updates and
    ``load_state_dict`` are seen) and rebuilds itself when the layers change.
    Evaluation-mode ``forward`` keeps nothing for ``backward`` (as inside
    ``no_grad``) unless ``needs_input_grad`` is True, which sends it through
    the layers (e.g. for saliency maps). Models with layers the plan does
    not know (custom ``Module`` subclasses) run layer by layer instead.

    **Threads.** One model may serve inference to any number of threads at
    once: ``predict``, ``evaluate`` and evaluation-mode ``forward`` write into
    buffers of the calling thread, and every call returns exactly what it
    would return alone (for models the plan cannot run, calls through the
    layers take turns under a lock: still correct, one at a time). Each
    thread keeps its own activation buffers per plan (~50 MB for the MNIST
    CNN at batch 256), freed when the thread ends. Training
    (``fit``, training-mode ``forward`` / ``backward``) uses the layers'
    shared buffers and caches: a second thread that tries to train the same
    model while it is being trained gets a ``RuntimeError`` instead of
    corrupting it, and ``backward`` refuses to run on a forward pass made by
    another thread. Inference while another thread trains the model is not
    an error, but it reads the weights as they are being updated.

    **Batch invariance.** Every kernel computes each sample's output in an
    order fixed by the layer shapes alone, so a sample's result is bitwise
    the same in any batch, at any position (``predict`` with any
    ``batch_size`` gives the same rows), and for any thread count. Layers
    that mix the samples on purpose (ONNX's forms: ``Flatten(axis=0)``,
    ``Softmax(axis=0)``, ...) are the exception: ``predict`` runs such a
    model on the whole input at once (see ``predict``).

    The layers of a ``Sequential`` write their outputs and gradients into
    arrays they reuse between steps (``reuse_buffers``); ``forward`` and
    ``backward`` of the top-level model return copies, so results handed to
    the caller are never overwritten. A top-level model does not compute the
    gradient with respect to its input (``needs_input_grad = False``, so
    ``backward`` returns None and the first conv layer skips its most
    expensive gradient); set ``model.needs_input_grad = True`` to get it
    (e.g. for saliency maps).

    Two speed-ups apply inside a ``Sequential`` only: a ``Conv2d`` directly
    followed by ``ReLU`` runs as one fused kernel call (``fuse_conv_relu``;
    results are bitwise identical; only with kernels whose fused ReLU keeps
    NaN, see ``fastconv.nn.layers.kernel_relu_propagates_nan``); a ``ReLU``
    directly followed by ``MaxPool2d`` back-propagates in the pool's backward
    (``fuse_relu_pool``; the ReLU mask is applied on the pooled grid, results
    are bitwise identical). Which layers fuse is decided once per layer list
    (``fastconv.nn.fusion``), not in every call. ``fit`` caps NumPy's BLAS at ``blas_threads``
    (default 1, via threadpoolctl when it is installed) for custom layers
    that use it; fastconv's own layers never do. Loss values in logs and
    ``evaluate`` are averages over samples. Changing a layer's
    hyper-parameters (stride, padding, ...) in place after the first
    inference call is not supported: build a new layer.

    Examples
    --------
    >>> from fastconv import nn                                      # doctest: +SKIP
    >>> model = nn.Sequential([nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    ...                        nn.Flatten(), nn.Linear(6 * 14 * 14, 10)])
    >>> model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    >>> history = model.fit(x_train, y_train, batch_size=64, epochs=3,
    ...                     validation_data=(x_test, y_test))
    >>> model.evaluate(x_test, y_test)
    {'loss': ..., 'accuracy': ...}
    """

    #: BLAS threads for NumPy matmuls of custom layers inside fit (None: leave
    #: the BLAS pool alone). Applied through threadpoolctl when it is installed.
    blas_threads = 1

    #: Let a Conv2d kernel apply a directly following ReLU in the same pass
    #: (saves one trip over the activation; results are identical). Read when
    #: the fusion plan is made (fastconv.nn.fusion); False runs the pair as two
    #: calls, which is how the tests show that fusing changes no bit.
    fuse_conv_relu = True

    #: Back-propagate a ``ReLU`` directly followed by ``MaxPool2d`` in the
    #: pool's backward (the mask is applied on the pooled grid; identical
    #: results). Read when the fusion plan is made, as ``fuse_conv_relu``.
    fuse_relu_pool = True

    def __init__(self, *args: Union[Module, Sequence[Module]],
                 layers: Optional[Sequence[Module]] = None) -> None:
        if args and layers is not None:
            raise TypeError("Sequential: pass the layers as arguments or as layers=[...], not both")
        if layers is None:  # `layers=` keeps the keyword form of earlier versions (and Keras)
            # the else branch's args are Modules (one list argument was the other form)
            layers = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args  # type: ignore[assignment]
            if len(args) == 1 and args[0] is None:
                layers = ()
        self.layers: List[Module] = []
        super().__init__()
        self.optimizer: Optional[Optimizer] = None
        self.loss: Optional[Loss] = None
        self.metrics: List[str] = []
        self.history = None
        self.stop_training = False
        self.fit_rng = None
        self._needs_input_grad = False
        self._reuse = False
        self._init_threading()
        for layer in layers:  # type: ignore[union-attr]  # not None: set above
            self.add(layer)

    def _init_threading(self):
        # Guards the layers' own buffers and caches (the layer-by-layer path):
        # training holds it without waiting, inference through the layers waits.
        self._lock = threading.RLock()
        self._trainer = None  # thread id of the thread training the model, if any
        self._kept = None     # thread whose forward pass the layers' caches hold
        self._plan_lock = threading.Lock()  # only for changes to the plan cache
        self._plans = {}
        self._plan_layers = None  # the layers the plans were built for
        self._plan_nested = []    # (nested Sequential, its layers) likewise
        self._plannable = False
        self._plan_dtype = None   # self.dtype when the plans were dropped last
        self._fusion_plan = None  # the layers' fused steps (fastconv.nn.fusion)

    def __getstate__(self):
        # locks cannot be pickled or deep-copied; plans are rebuilt on demand
        state = self.__dict__.copy()
        for key in ("_lock", "_trainer", "_kept", "_plan_lock", "_plans", "_plan_layers",
                    "_plan_nested", "_plannable", "_plan_dtype", "_fusion_plan"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_threading()

    # -- structure -------------------------------------------------------------
    def add(self, layer: Module) -> None:
        """Append a layer.

        Parameters
        ----------
        layer : Module
        """
        if not isinstance(layer, Module):
            raise TypeError(
                f"Sequential: layers[{len(self.layers)}] must be a fastconv.nn Module, "
                f"got {type(layer).__name__}"
            )
        # Re-scanning the whole list on every add made building an n-layer model
        # O(n^2) (40,000 layers from a 229 KB file took 24 s to load). The ids of
        # the layers and whether any has parameters are carried from the previous
        # add, as long as self.layers still ends where that add left it.
        n = len(self.layers)
        cache = getattr(self, "_add_cache", None)
        rebuilt = cache is None or cache[0] != n or (n and cache[1] is not self.layers[-1])
        if rebuilt:
            cache = (n, self.layers[-1] if n else None, {id(m) for m in self.layers},
                     any(bool(m.parameters()) for m in self.layers))
        ids, has_params = cache[2], cache[3]  # type: ignore[index]  # set just above
        if id(layer) in ids and any(layer is m for m in self.layers):
            raise ValueError("Sequential: the same layer object appears twice")
        outputs = getattr(self.layers[-1], "_n_outputs", 1) if n else 1
        if outputs > 1:
            # (PyTorch's nn.Sequential would hand the tuple to the next layer)
            raise ValueError(
                f"Sequential: layers[{n - 1}] ({type(self.layers[-1]).__name__}) returns "
                f"{outputs} arrays, so it can only be the last layer; got "
                f"{type(layer).__name__} after it")
        layer.reuse_buffers = True
        self.layers.append(layer)
        if rebuilt:  # the list was edited directly: set every layer's flag, as always
            self._configure_input_grads()
        else:  # the flags of the layers before it do not depend on the new one
            layer.needs_input_grad = self._needs_input_grad or has_params
        ids.add(id(layer))
        self._add_cache = (n + 1, layer, ids, has_params or bool(layer.parameters()))

    def named_children(self):
        """Yield ``(str(index), layer)``; parameter names are ``"<index>.<name>"``."""
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    @property
    def needs_input_grad(self):
        """Whether ``backward`` returns the gradient w.r.t. the model input."""
        return self._needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value):
        self._needs_input_grad = bool(value)
        self._configure_input_grads()

    @property
    def reuse_buffers(self):
        """True when nested in another container (then outputs are not copied)."""
        return self._reuse

    @reuse_buffers.setter
    def reuse_buffers(self, value):
        self._reuse = bool(value)

    def _configure_input_grads(self):
        # A layer needs grad-input iff something before it has parameters (or
        # the caller wants the input gradient); backward stops at the first
        # layer that returns None.
        upstream = self._needs_input_grad
        for layer in self.layers:
            layer.needs_input_grad = upstream
            upstream = upstream or bool(layer.parameters())

    @property
    def dtype(self):
        """Dtype of the parameters (float32 when there are none)."""
        for _, p in self.named_parameters():  # the first one: listing all is slow
            return p.dtype  # not p.data: that counts as handing the array out
        return np.dtype(np.float32)

    # -- computation -----------------------------------------------------------
    @contextlib.contextmanager
    def _using_layers(self, owner, training):
        """Hold the layers' shared buffers: a trainer never waits, inference does.

        A call that would train (or keep caches for backward) while another
        thread holds the layers raises instead of corrupting them; inference
        through the layers waits for other inference calls to finish.
        """
        lock = self._lock
        me = threading.get_ident()
        if not lock.acquire(blocking=False):
            trainer = self._trainer
            if training or (trainer is not None and trainer != me):
                raise RuntimeError(
                    f"{owner}: this model is in use by another thread"
                    f"{' that is training it' if trainer not in (None, me) else ''}; "
                    "a model cannot be trained from two threads at once, nor run "
                    "through its layers while another thread trains it (the layers "
                    "share their buffers and caches). Let the other call finish, or "
                    "train a copy (Sequential.from_config(model.get_config()) and "
                    "load_state_dict)"
                )
            lock.acquire()
        previous = self._trainer
        if training:
            self._trainer = me
        try:
            yield
        finally:
            self._trainer = previous
            lock.release()

    def _fusion(self):
        """The fusion plan of the current layer list (made again only when the
        list or a fusion switch changed since the last call)."""
        plan = self._fusion_plan
        if plan is None or not plan.fits(self.layers, self.fuse_conv_relu, self.fuse_relu_pool):
            plan = FusionPlan(self.layers, self.fuse_conv_relu, self.fuse_relu_pool)
            self._fusion_plan = plan
        return plan

    def _forward(self, x):
        layers = self.layers
        x0 = x
        for i, fused in self._fusion().forward:
            layer = layers[i]
            xin = x
            try:
                if fused:
                    # the conv kernel applies the ReLU in its own pass; the ReLU
                    # layer keeps the rectified output for its backward
                    x = layers[i + 1]._adopt(layer._forward(x, "relu"))
                else:
                    x = layer(x)
            except LayerInputError as exc:  # from a nested model: add our index
                raise exc.nested_in(i) from exc
            except ValueError as exc:
                # one place names the layer (and hints at the usual causes) for
                # every layer type; the plan builder does the same
                raise layer_input_error(layers, i, getattr(xin, "shape", ()), exc,
                                        getattr(x0, "shape", None)) from exc
        me = threading.get_ident()
        if is_grad_enabled():
            self._kept = me
        elif self._kept == me:
            self._kept = None
        return x

    # -- inference plans ---------------------------------------------------------
    def _refresh_plans(self):
        """Drop the plans when the layers (or a nested model's layers) changed."""
        if self._plan_layers == self.layers and not (
                self._plan_nested and any(m.layers != snap for m, snap in self._plan_nested)):
            return
        with self._plan_lock:
            nested = []
            stack = list(self.layers)
            while stack:
                m = stack.pop()
                if type(m) is type(self):
                    nested.append((m, list(m.layers)))
                    stack.extend(m.layers)
            self._plans = {}
            self._plannable = bool(self.layers) and plannable(self)
            self._plan_dtype = self.dtype
            self._plan_nested = nested
            self._plan_layers = list(self.layers)

    def _inference_dtype(self):
        """``self.dtype``, looked up again only when the layers change or a plan
        meets a parameter array of another shape or dtype (finding the
        parameters costs ~2 us, 5% of LeNet-5's predict at batch 1)."""
        self._refresh_plans()
        return self._plan_dtype

    def _plan_for(self, x):
        """The inference plan for input ``x`` (built on first use; raises for bad input)."""
        key = (x.shape, x.dtype, _routes.winograd_mode(), self.fuse_conv_relu)
        plan = self._plans.get(key)
        if plan is None:
            plan = InferencePlan(self, x.shape, x.dtype)
            with self._plan_lock:
                plans = self._plans
                if len(plans) >= _MAX_PLANS:
                    plans.pop(next(iter(plans)))
                plans[key] = plan
        return plan

    def _run_plan(self, x, out=None):
        try:
            return self._plan_for(x).run(x, out)
        except StalePlan:
            # a parameter was replaced by an array of another shape: plan again
            self._plan_layers = None
            self._refresh_plans()
        try:
            return self._plan_for(x).run(x, out)
        except StalePlan:
            raise RuntimeError(
                "Sequential: a parameter array changed shape or dtype during the call "
                "(another thread replacing parameters?)") from None

    def _infer(self, x, owner, out=None):
        """Evaluation-mode output for the batch ``x`` (the model's dtype).

        Written into ``out`` when given; otherwise the array may belong to the
        calling thread's plan buffers (valid until its next inference call).
        """
        self._refresh_plans()
        if self._plannable:
            return self._run_plan(x, out)
        with self._using_layers(owner, training=False):
            was_training = self.training
            self.eval()
            try:
                with no_grad():
                    y = self._forward(x)
                if out is None:
                    return _copy_out(y)
                out[...] = y
                return out
            finally:
                self.train(was_training)

    def forward(self, x: Array) -> Array:
        """Apply the layers in order.

        In evaluation mode this runs the inference plan (thread-safe; nothing
        is kept for ``backward``) unless ``needs_input_grad`` is True.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W) (or (N, features)), the model's dtype

        Returns
        -------
        ndarray
            Output of the last layer (logits for the models of this package).
        """
        if not self.training and not self._reuse and not self._needs_input_grad \
                and isinstance(x, np.ndarray):
            self._refresh_plans()
            if self._plannable:
                plan = self._plan_for(x)
                # a layer left in training mode inside an eval model (dropout,
                # batch norm) must act as such: that takes the layer path
                if not any(m.training for m in plan.mode_layers):
                    if self._kept is not None and self._kept == threading.get_ident():
                        self._kept = None  # the layers' caches are not of this pass
                    return self._run_plan(x, np.empty(plan.out_shape, plan.dtype))
        with self._using_layers("forward", training=self.training):
            y = self._forward(x)
            # layers write into reused buffers; a top-level caller gets its own copy
            return y if self._reuse or not self.layers else _copy_out(y)

    def backward(self, grad_out: Array) -> Optional[Array]:
        """Back-propagate through the layers in reverse order.

        Parameters
        ----------
        grad_out : ndarray
            dL/doutput, shape of the last ``forward`` output.

        Returns
        -------
        ndarray or None
            dL/dx when ``needs_input_grad`` is True, else None.

        Raises
        ------
        RuntimeError
            No forward pass of this thread kept its inputs (the last one ran
            inside ``no_grad``, through the inference plan, or in another
            thread), or another thread is training the model.
        """
        with self._using_layers("backward", training=True):
            if self.layers and self._kept != threading.get_ident():
                raise RuntimeError(
                    "Sequential.backward called without a preceding forward pass that kept "
                    "its inputs in this thread (a forward inside no_grad(), or in evaluation "
                    "mode through the inference plan, keeps nothing; use model.train(), or "
                    "set model.needs_input_grad = True for gradients in evaluation mode)"
                )
            g = grad_out
            layers = self.layers
            for i, fused in self._fusion().backward:
                if fused:  # the pool applies ReLU's mask on its own (smaller) grid
                    g = layers[i]._backward_after_relu(g)
                else:
                    g = layers[i].backward(g)  # None: checked below
                if g is None:
                    return None
            if not self._reuse and self.layers:
                g = g.copy()
            return g

    def get_config(self):
        """``{"layers": [{"class": ..., "config": ...}, ...]}``."""
        return {"layers": [_layer_spec(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """Rebuild from ``get_config()`` output (fresh weights)."""
        return cls([layer_from_config(spec) for spec in config.get("layers", [])])

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({i}): {layer!r}".replace("\n", "\n  ") for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"

    def summary(self, input_shape: Optional[Tuple[int, ...]] = None,
                print_fn: Callable[[str], Any] = print) -> str:
        """Print one line per layer: output shape (if ``input_shape``) and parameter count.

        Parameters
        ----------
        input_shape : tuple of int, optional
            Shape of one sample, e.g. ``(1, 28, 28)``.
        print_fn : callable, default print

        Returns
        -------
        str
            The printed table.
        """
        rows = [("layer", "output shape", "params")]
        x = None
        if input_shape is not None:
            x = np.zeros((1,) + tuple(input_shape), self.dtype)
        with self._using_layers("summary", training=False), no_grad():
            was_training = self.training
            self.eval()
            try:
                for i, layer in enumerate(self.layers):
                    shape = ""
                    if x is not None:
                        x = layer(x)
                        # a last layer with several outputs: each one's shape
                        shape = (", ".join(str(a.shape) for a in x) if isinstance(x, tuple)
                                 else str((None,) + x.shape[1:]))
                    rows.append((f"{i}: {type(layer).__name__}", shape, f"{layer.num_parameters():,}"))
            finally:
                self.train(was_training)
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total params: {self.num_parameters():,} "
                     f"(trainable {self.num_parameters(trainable_only=True):,})")
        text = "\n".join(lines)
        print_fn(text)
        return text
    # -- Keras-style API: thin methods over fastconv.nn.trainer ------------------
    # Their docstrings are the users' reference (help(model.fit)), so they stay
    # on the public methods while the work is in trainer: that is why this file
    # runs past 600 lines (about 310 of its lines are docstrings).
    def compile(self, optimizer: Union[Optimizer, str] = "adam",
                loss: Union[Loss, str] = "cross_entropy",
                metrics: Optional[Sequence[str]] = None) -> Sequential:
        """Choose the optimiser, loss and metrics for ``fit`` / ``evaluate``.

        Parameters
        ----------
        optimizer : Optimizer or str, default "adam"
            An instance built on ``model.parameters()`` or built without
            parameters (Keras form, ``Adam(lr=1e-3)``: bound here), or a name
            (``"sgd"``, ``"adam"``, ``"adagrad"``, ``"rmsprop"``) for default
            hyper-parameters.
        loss : Loss or str, default "cross_entropy"
            An instance or a name (``"cross_entropy"``, ``"mse"``, ...).
        metrics : list of str, optional
            Only ``"accuracy"`` (alias ``"acc"``) is supported.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Unknown names, or an optimiser built on another model's parameters.
        """
        return trainer.compile_model(self, optimizer, loss, metrics)

    def fit(self, x: Array, y: Array, batch_size: int = 64, epochs: int = 1,
            validation_data: Optional[Tuple[Array, Array]] = None,
            callbacks: Optional[Sequence[Union[Callback, LRSchedule]]] = None,
            verbose: Literal[0, 1, 2] = 1, shuffle: bool = True,
            seed: Union[None, int, np.random.Generator] = None,
            augment: Optional[Callable[[Array, np.random.Generator], Array]] = None,
            initial_epoch: int = 0, validation_batch_size: Optional[int] = None,
            validation_split: Optional[float] = None, sample_weight: Optional[ArrayLike] = None,
            class_weight: Optional[Mapping[int, float]] = None) -> History:
        """Train with mini-batch gradient descent.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W) (or (N, features))
            Any real dtype; batches are converted to the model's dtype. Integer
            input with values above 1 (raw 0-255 pixels) trains, with a
            ``UserWarning`` to scale it to [0, 1] first.
        y : ndarray
            int class labels (N,), or float one-hot / probability targets (N, classes).
        batch_size : int, default 64
        epochs : int, default 1
            Index of the last epoch (Keras convention: with ``initial_epoch``
            the run covers epochs ``initial_epoch .. epochs-1``).
        validation_data : (x_val, y_val), optional
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        callbacks : list of Callback, optional
        verbose : {0, 1, 2}, default 1
            0 silent; 1 a progress bar (tqdm if installed, else a text line)
            with loss/accuracy and images/s; 2 one line per epoch.
        shuffle : bool, default True
            Reshuffle the samples every epoch.
        seed : int, numpy.random.Generator or None
            Source of the shuffling order and of ``augment``'s randomness. A
            Generator is used (and advanced) as is, which lets a resumed run
            continue the random stream of an interrupted one.
        augment : callable, optional
            ``augment(x_batch, rng) -> x_batch`` applied to each training batch.
        initial_epoch : int, default 0
            Epoch to start from (for resuming).
        validation_batch_size : int, optional
            Default: ``max(batch_size, 256)``.
        validation_split : float in (0, 1), optional
            Keras's rule: the last ``ceil``-rounded ``validation_split`` fraction
            of ``x`` / ``y`` (taken before shuffling) is validation data, not
            trained on. Not together with ``validation_data``.
        sample_weight : ndarray of shape (N,), optional
            Finite weights >= 0 on each sample's loss and gradient. The batch
            loss is Keras's ``sum(w_i * l_i) / batch_size`` (not divided by the
            sum of the weights), where ``l_i`` is sample i's own loss (each
            built-in loss is a sum over samples; a custom loss must be too).
            Costs one extra loss call per sample. Validation is unweighted.
        class_weight : dict {class index: weight}, optional
            Per-sample weight ``class_weight[label]`` (1 for classes not in
            the dict), multiplied into ``sample_weight`` when both are given.

        Returns
        -------
        History
            ``history.history["loss"]``, ``["accuracy"]``, ``["val_loss"]``,
            ``["val_accuracy"]``, ``["images_per_second"]``, ``["lr"]``.

        Raises
        ------
        FloatingPointError
            A batch loss became NaN or Inf (names the epoch and step).
        ValueError, TypeError
            Bad arguments (shapes, lengths, dtypes, batch_size < 1, ...).
        RuntimeError
            The model is being trained (or run through its layers) by another
            thread: one model is trained by one thread at a time.
        """
        return trainer.fit(self, x, y, batch_size, epochs, validation_data, callbacks, verbose,
                           shuffle, seed, augment, initial_epoch, validation_batch_size,
                           validation_split, sample_weight, class_weight)

    def evaluate(self, x: Array, y: Array, batch_size: int = 256, verbose: int = 0,
                 per_class: bool = False) -> Dict[str, Any]:
        """Loss and metrics on ``(x, y)`` in evaluation mode.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W) (or (N, features))
        y : ndarray
            int class labels (N,) or float one-hot targets (N, classes).
        batch_size : int, default 256
        verbose : int, default 0
            1 prints the result.
        per_class : bool, default False
            Also return ``"confusion_matrix"`` (int64 (C, C), rows the true
            class, columns the predicted one, as scikit-learn's) and
            ``"per_class_accuracy"`` (float64 (C,), NaN for a class without
            samples); see ``fastconv.nn.metrics``.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}`` (accuracy for
            classification targets).

        Raises
        ------
        ValueError
            ``per_class=True`` with targets that are not classes.
        """
        return trainer.evaluate(self, x, y, batch_size, verbose, per_class)

    def predict(self, x: Array, batch_size: int = 256) -> Array:
        """Class probabilities for ``x`` (evaluation mode).

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W) (or (N, features))
        batch_size : int, default 256

        Returns
        -------
        ndarray of shape (N, classes), the model's dtype
            Softmax of the logits. If the last layer already is ``Softmax`` or
            ``Sigmoid``, or the model is compiled with a loss other than
            cross-entropy (e.g. MSE regression), the raw outputs instead.
            ``predict(x).argmax(1)`` gives the predicted classes. Each row is
            bitwise the same for any ``batch_size`` and position of the
            sample in ``x``. A model whose output is not one row per sample
            (a layer that mixes the batch: ``Flatten(axis=0)``,
            ``Softmax(axis=0)``, ``Gemm`` with ``trans_a`` or a per-row bias,
            ``BatchNorm*(track_running_stats=False)``, flat argmax indices)
            runs the whole of ``x`` as one batch, whatever ``batch_size``
            says; a model whose last layer returns several arrays returns
            them raw, as a tuple (also from one batch). An integer output
            (a ``Cast`` to an integer type last) is returned as it is.

        Notes
        -----
        Safe to call from several threads at once on one model (see the
        class notes).
        """
        return trainer.predict(self, x, batch_size)

    def save(self, path: Union[str, os.PathLike[str]], include_optimizer: bool = True) -> None:
        """Write weights, buffers, architecture and compile settings to one ``.npz``.

        See ``fastconv.nn.save_model``.
        """
        save_model(self, path, include_optimizer=include_optimizer)
