"""Synchronous data-parallel training over MPI (through ``mpi4py``).

Run the same script on every rank (``mpiexec -n 4 python train.py``, or
``mpiexec -n 4 python -m fastconv train ...``); :func:`fit` then trains one
model on all of them, the way Horovod does: every rank holds the whole model,
works on its part of each global batch, and the ranks sum their gradients
before every optimiser step.

What every rank does, per step of a global batch of ``batch_size`` samples:

1. the same data order and augmentation on every rank (one shared seed; each
   rank prepares the whole global batch, which is cheap next to the network);
2. the global batch is cut into ``micro_batches`` equal slices (micro-batch
   ``m`` is ``np.array_split(batch, micro_batches)[m]``); rank ``r`` runs
   forward and backward on micro-batches ``r*k .. r*k+k-1``
   (``k = micro_batches / ranks``), each into a gradient buffer of its own;
3. the per-micro-batch gradients are summed over a fixed binary tree
   (``sum(lo, hi) = sum(lo, mid) + sum(mid, hi)``, ``mid = (lo + hi) // 2``):
   subtrees that lie on one rank are summed there, the rest after a
   reduce-scatter (point-to-point messages: rank ``j`` gets shard ``j`` of
   every other rank's partial sums) on rank ``j``'s shard. Each element is
   added in the same order whatever the number of ranks;
4. rank ``j`` applies the optimiser step to shard ``j`` of the parameters
   and of the optimiser's slots (the fused kernel is elementwise, so the
   shard gets the bits of a whole step), and the ranks allgather the
   updated parameters: every rank holds copies of one result (ZeRO stage 1;
   ``shard_optimizer=False``, or an optimiser without a fused kernel,
   allgathers the summed gradient instead and every rank runs the whole
   step on it).

The consequences (tested in ``tests/test_distributed.py``):

* all ranks hold bitwise identical weights after every step; the
  optimiser slots are gathered and a digest of weights and optimiser state
  is compared across ranks every ``check_every`` steps and at every epoch
  end (``RuntimeError`` if not);
* the result depends on ``micro_batches`` but not on the number of ranks:
  1, 2 or 4 ranks (any divisor of ``micro_batches``) give bitwise the same
  model, and so does one process without MPI (``comm=None``);
* with ``micro_batches=1`` (hence one process), ``fit`` is bitwise
  ``Sequential.fit``. Sequential.fit computes a batch's gradient in one
  backward pass, so it matches a data-parallel run only where that gradient
  does not depend on how the batch is split; it does not in general (a sum
  of per-sample terms depends on its order in floating point).

Dropout: with ``micro_batches > 1`` micro-batch ``m`` of a step draws its
masks from the layer's generator jumped ``m`` times (``bit_generator.jumped``),
and the next step starts from the generator jumped ``micro_batches`` times,
so the masks do not depend on which rank runs which micro-batch.

A rank that dies or hangs: every collective here is non-blocking and waited
for with a deadline (``timeout`` seconds); past it the rank prints which
operation stalled and calls ``MPI.COMM_WORLD.Abort(1)``, which ends the whole
job. (``mpiexec`` itself also ends the job when a rank exits abnormally.)

Threads: by default each rank uses ``cores_on_its_node // ranks_on_its_node``
OpenMP threads (at least 1), so ranks x threads do not oversubscribe a node.
"""

import copy
import hashlib
import os
import pickle
import time

import numpy as np

from ._collectives import (  # _tree_sum, _local_nodes: tests check the tree through this module
    _allgather_bytes,
    _bcast_bytes,
    _local_nodes,
    _mpi,
    _SerialComm,
    _ShardGather,
    _split_points,
    _tree_sum,
    _TreeReducer,
    _wait,
)
from ._validate import check_int
from .nn.fit_args import _check_xy, _predicted_classes, _sample_weighted, _true_labels
from .nn.losses import CrossEntropyLoss, MSELoss
from .nn.trainer import (inference_batches, raw_outputs_are_probabilities, require_compiled,
                          whole_batch)
from .nn.training_loop import TrainStep, check_finite, make_run, run_epochs

__all__ = [
    "fit",
    "evaluate",
    "world_comm",
    "launched_by_mpiexec",
    "default_threads",
    "state_digest",
    "DEFAULT_TIMEOUT",
]

# The MPI collectives and the fixed-order gradient sum are in _collectives.
# What is left stays one file past 600 lines: fit, evaluate and the command
# line session share its private helpers, and a third of it is docstrings.

#: Seconds a collective may wait for the other ranks before the job is
#: aborted. Long enough for rank 0 to write a checkpoint or for a slow node
#: to finish its evaluation share; short enough that a dead rank does not
#: hold a cluster allocation for long.
DEFAULT_TIMEOUT = 300.0

# Environment variables that MPI launchers set in every process they start:
# MPICH/Hydra and Intel MPI (PMI_SIZE), Open MPI, MVAPICH2, PMIx launchers.
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def launched_by_mpiexec(environ=None):
    """World size announced by the MPI launcher's environment (1 when not under MPI).

    Reads the variables ``mpiexec`` sets in each process it starts (MPICH and
    Intel MPI ``PMI_SIZE``, Open MPI ``OMPI_COMM_WORLD_SIZE``, MVAPICH2
    ``MV2_COMM_WORLD_SIZE``), so the caller can decide to use MPI without
    importing ``mpi4py`` (which initialises MPI) first.

    Parameters
    ----------
    environ : mapping, optional
        Default ``os.environ``.

    Returns
    -------
    int
    """
    environ = os.environ if environ is None else environ
    for name in _WORLD_SIZE_VARS:
        value = environ.get(name)
        if value is not None:
            try:
                return max(1, int(value))
            except ValueError:
                continue
    return 1


def world_comm():
    """``mpi4py.MPI.COMM_WORLD``, with an install hint when mpi4py is missing.

    Returns
    -------
    mpi4py.MPI.Comm

    Raises
    ------
    ImportError
        mpi4py is not installed (``pip install "fastconv[mpi]"``).
    """
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "fastconv.distributed needs mpi4py and an MPI library: "
            "pip install mpi4py mpich (or pip install 'fastconv[mpi]')"
        ) from exc
    return MPI.COMM_WORLD


def default_threads(comm=None):
    """OpenMP threads per rank that keep ranks x threads within the node's cores.

    ``max(1, cores // ranks)`` on each node, where ``cores`` is the number of
    distinct CPUs the node's ranks may run on (their affinity masks joined)
    and ``ranks`` the number of ranks on that node; never more than the CPUs
    this rank itself may use (a launcher that binds each rank to a core then
    gives each rank its own cores).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default: ``COMM_WORLD`` when running under MPI, else one process.

    Returns
    -------
    int
    """
    mine = _affinity()
    if comm is None:
        comm = world_comm() if launched_by_mpiexec() > 1 else _SerialComm()
    if comm.size == 1:
        return max(1, len(mine))
    node = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    try:
        masks = [pickle.loads(b) for b in
                 _allgather_bytes(node, pickle.dumps(sorted(mine)), "the thread-count exchange",
                                  DEFAULT_TIMEOUT)]
    finally:
        node.Free()
    cores = set().union(*map(set, masks))
    return max(1, min(len(mine), len(cores) // len(masks)))


def _affinity():
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def state_digest(model, optimizer=None):
    """SHA-256 of the weights, buffers, dropout states and optimiser state.

    Two ranks with equal digests hold bitwise the same training state.

    Parameters
    ----------
    model : Module
    optimizer : Optimizer, optional

    Returns
    -------
    bytes
        32 bytes.
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.data).tobytes())
    for name, b in model.named_buffers():
        h.update(name.encode())
        h.update(np.ascontiguousarray(b).tobytes())
    h.update(repr(sorted(model.get_rng_state().items())).encode())
    if optimizer is not None:
        state = optimizer.state_dict()
        h.update(repr((state["lr"], state["iterations"])).encode())
        for key in sorted(state["slots"]):
            h.update(key.encode())
            h.update(np.ascontiguousarray(state["slots"][key]).tobytes())
    return h.digest()


def _check_same_state(comm, model, optimizer, when, timeout):
    if comm.size == 1:
        return
    digests = _allgather_bytes(comm, state_digest(model, optimizer), "the weight check", timeout)
    if len(set(digests)) != 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RuntimeError(
            f"fastconv.distributed: ranks {differ} hold other weights or optimiser state than "
            f"rank 0 {when}; the ranks ran different code, data or settings"
        )


def _sync_from_root(comm, model, optimizer, timeout):
    """Give every rank rank 0's weights, buffers, dropout states and optimiser state."""
    if comm.size == 1:
        return
    blob = b""
    if comm.rank == 0:
        blob = pickle.dumps({"model": model.state_dict(), "rng": model.get_rng_state(),
                             "optimizer": optimizer.state_dict()}, protocol=pickle.HIGHEST_PROTOCOL)
    state = pickle.loads(_bcast_bytes(comm, blob, "the broadcast of rank 0's weights", timeout))
    if comm.rank != 0:
        model.load_state_dict(state["model"])
        model.set_rng_state(state["rng"])
        optimizer.load_state_dict(state["optimizer"])


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #


def _point_grads(params, flat):
    """Make every ``p.grad`` a view of its slice of ``flat`` (backward adds there)."""
    off = 0
    for p in params:
        n = p.data.size
        p.grad = flat[off:off + n].reshape(p.data.shape)
        off += n


def _loss_sum_and_grad(loss_fn, out, target, n_global):
    """Summed loss of a micro-batch and dL/dout of the *global* batch's loss.

    For a "mean" loss the gradient is scaled by the global batch size with the
    very operations the loss's own ``backward`` uses on a whole batch, so a
    micro-batch's rows get the bits a whole-batch backward would give them.
    """
    reduction = loss_fn.reduction
    loss_fn.reduction = "sum"
    try:
        total = loss_fn.forward(out, target)
        grad = loss_fn.backward()
    finally:
        loss_fn.reduction = reduction
    if reduction == "mean":
        if isinstance(loss_fn, CrossEntropyLoss):
            grad /= n_global                                  # CrossEntropyLoss.backward: grad /= n
        elif isinstance(loss_fn, MSELoss):
            diff = loss_fn._diff                              # MSELoss.backward: diff * (2 / size)
            per_sample = diff.size // max(len(diff), 1)
            grad = diff * diff.dtype.type(2.0 / (n_global * per_sample))
    return total, grad


def _check_loss(loss_fn, owner):
    if getattr(loss_fn, "reduction", None) == "sum":
        return
    if type(loss_fn) not in (CrossEntropyLoss, MSELoss):
        raise ValueError(
            f"{owner}: a loss with reduction 'mean' must be CrossEntropyLoss or MSELoss (their "
            f"global-batch scaling is known), got {type(loss_fn).__name__}; use reduction='sum'"
        )


def _random_modules(model, owner):
    mods = []
    for prefix, m in model._named_modules():
        rng = getattr(m, "rng", None)
        if isinstance(rng, np.random.Generator):
            if not hasattr(rng.bit_generator, "jumped"):
                raise ValueError(
                    f"{owner}: module {prefix or type(m).__name__!r} draws from a "
                    f"{type(rng.bit_generator).__name__} generator, which cannot be jumped; "
                    "use numpy's default PCG64"
                )
            mods.append(m)
    return mods


def _as_comm(comm, owner):
    if comm is None:
        return _SerialComm()
    for attr in ("rank", "size"):
        if not isinstance(getattr(comm, attr, None), int):
            raise TypeError(f"{owner}: comm must be an mpi4py communicator or None, got {comm!r}")
    return comm


def _slice_gradients(model, params, leaves, first, micro_batches, randoms, xb, yb, labels):
    """Forward and backward of this rank's slices of one global batch, one per leaf.

    Leaf ``i`` receives slice ``first + i``'s parameter gradients (of the
    global batch's loss), then its summed loss and its correct count (when
    ``labels`` is given). Dropout draws from the step's generator jumped by
    the slice index; afterwards every random module holds the generator
    jumped by ``micro_batches``, on every rank alike.
    """
    loss_fn = model.loss
    m = len(xb)
    n_grad = len(leaves[0]) - 2
    probabilities = raw_outputs_are_probabilities(model)
    cuts = _split_points(m, micro_batches)
    bases = [mod.rng.bit_generator for mod in randoms]
    for i, leaf in enumerate(leaves):
        s = first + i
        a, b = int(cuts[s]), int(cuts[s + 1])
        leaf.fill(0)
        if a == b:  # fewer samples than slices (the last batch of an epoch)
            continue
        for mod, base in zip(randoms, bases):
            mod.rng = np.random.Generator(base.jumped(s))
        _point_grads(params, leaf)
        out = model._forward(xb[a:b])
        total, grad = _loss_sum_and_grad(loss_fn, out, yb[a:b], m)
        model.backward(grad)
        leaf[n_grad] = total
        if labels is not None:
            leaf[n_grad + 1] = np.count_nonzero(
                _predicted_classes(out, probabilities) == labels[a:b])
    for mod, base in zip(randoms, bases):
        mod.rng = np.random.Generator(base.jumped(micro_batches))


def fit(model, x, y, batch_size=64, epochs=1, validation_data=None, callbacks=None, verbose=1,
        shuffle=True, seed=None, augment=None, initial_epoch=0, validation_batch_size=None, *,
        comm=None, micro_batches=None, threads=None, timeout=DEFAULT_TIMEOUT, check_every=100,
        shard_optimizer=True):
    """Data-parallel ``Sequential.fit``: same arguments and result, run on all MPI ranks.

    Call it on every rank with the same arguments and the same data; rank 0's
    weights and optimiser state are broadcast first. Returns the same
    ``History`` on every rank.

    Parameters
    ----------
    model : Sequential
        Compiled (``model.compile``); no batch-norm layers (their running
        statistics would be per-rank).
    x, y, batch_size, epochs, validation_data, callbacks, verbose, shuffle, seed, augment, \
initial_epoch, validation_batch_size
        As in ``Sequential.fit``. ``batch_size`` is the global batch, whatever
        the number of ranks. ``verbose`` applies on rank 0 only (other ranks
        are silent). Callbacks run on every rank (a learning-rate schedule
        must); make side effects such as writing files conditional on
        ``comm.rank == 0``.
    comm : mpi4py.MPI.Comm, optional
        Usually ``fastconv.distributed.world_comm()``; None trains in this
        process alone (same arithmetic, no MPI needed).
    micro_batches : int, optional
        Slices each global batch is cut into; a multiple of ``comm.size``
        (default ``comm.size``). The trained model depends on it, not on the
        number of ranks.
    threads : int, optional
        OpenMP threads of this rank, set with ``fastconv.set_num_threads``
        (for the rest of the process too). Default with more than one rank:
        ``default_threads(comm)``, the node's cores divided among its ranks,
        so that ranks x threads never oversubscribe it; with one rank the
        thread count is left alone. Results do not depend on it.
    timeout : float, default DEFAULT_TIMEOUT
        Seconds a collective may wait for the other ranks before the job is
        aborted with ``MPI.COMM_WORLD.Abort(1)``.
    check_every : int, default 100
        Compare a digest of the weights and optimiser state across ranks
        every this many steps (and at every epoch end); 0 only at epoch ends.
    shard_optimizer : bool, default True
        With more than one rank and an optimiser on the fused kernel (SGD,
        Adagrad, RMSprop, Adam): each rank updates only its shard of the
        parameters and the ranks then exchange the updated parameters
        instead of the summed gradient (same bits, 1/ranks of the
        optimiser's work per rank). The optimiser's slots are then complete
        on every rank at every weight check and epoch end, and when ``fit``
        returns; a callback that reads them between those points sees this
        rank's shard current only. False: every rank runs the whole step.

    Returns
    -------
    History
        As ``Sequential.fit``'s, plus per epoch ``"comm_seconds"`` (this
        rank's time in the exchange, waiting for slower ranks included).
        Each ``on_batch_end`` gets the step's ``comm_seconds``, ``sharded``
        (True if it took the sharded update) and its phases: ``compute_seconds`` (forward and backward of the rank's
        micro-batches), ``reduce_seconds`` (the reduce-scatter),
        ``update_seconds`` (the optimiser) and ``gather_seconds`` (the
        allgather of parameters, or of the gradient when not sharded).

    Raises
    ------
    ValueError, TypeError
        Bad arguments (also ``micro_batches`` not a multiple of the ranks).
    FloatingPointError
        The global batch loss became NaN or Inf (on every rank alike).
    RuntimeError
        The ranks' weights differ (they ran different code or data).
    """
    owner = "distributed.fit"
    comm = _as_comm(comm, owner)
    if not callable(getattr(model, "_forward", None)) or not hasattr(model, "layers"):
        raise TypeError(f"{owner}: model must be a fastconv.nn.Sequential, got {type(model).__name__}")
    require_compiled(model, owner)
    if list(model.named_buffers()):
        raise ValueError(
            f"{owner}: the model has buffers ({[n for n, _ in model.named_buffers()]}), e.g. "
            "batch-norm running statistics, which each rank would update from its own samples"
        )
    x, y = _check_xy(owner, x, y)
    run = make_run(model, owner, x, y, batch_size=batch_size, epochs=epochs,
                   initial_epoch=initial_epoch, verbose=verbose, augment=augment,
                   validation_data=validation_data, validation_batch_size=validation_batch_size,
                   shuffle=shuffle, seed=seed, callbacks=callbacks)
    if micro_batches is None:
        micro_batches = comm.size
    micro_batches = check_int(owner, "micro_batches", micro_batches, minimum=1)
    if micro_batches % comm.size:
        raise ValueError(
            f"{owner}: micro_batches must be a multiple of the number of ranks ({comm.size}), "
            f"got {micro_batches}"
        )
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
        raise ValueError(f"{owner}: timeout must be a number of seconds > 0, got {timeout!r}")
    check_every = check_int(owner, "check_every", check_every, minimum=0)
    if threads is not None:
        threads = check_int(owner, "threads", threads, minimum=1)
    if not isinstance(shard_optimizer, (bool, np.bool_)):
        raise TypeError(f"{owner}: shard_optimizer must be True or False, got {shard_optimizer!r}")
    _check_loss(model.loss, owner)
    params = model.parameters()
    if any(p.data.dtype != run.dtype for p in params):
        raise TypeError(f"{owner}: all parameters must share one dtype, got "
                        f"{sorted({p.data.dtype.name for p in params})}")
    randoms = _random_modules(model, owner) if micro_batches > 1 else []

    if threads is None and comm.size > 1:
        threads = default_threads(comm)
    if threads is not None:
        from .functional import set_num_threads

        set_num_threads(threads)
    _sync_from_root(comm, model, model.optimizer, timeout)
    _check_same_state(comm, model, model.optimizer, "after the initial broadcast", timeout)

    if comm.rank != 0:
        run.verbose = 0
    run.extra_params = {"ranks": comm.size, "micro_batches": micro_batches}
    step = _DataParallelStep(model, run, comm, micro_batches, randoms, timeout, check_every,
                             bool(shard_optimizer))
    return run_epochs(model, run, step)


class _DataParallelStep(TrainStep):
    """One global batch: this rank's micro-batch slices, the gradient exchange, the update.

    Every rank adds the same tree of slice gradients in the same order, so
    the update (and so the model) does not depend on the number of ranks.

    Sharded update (``shard_optimizer``, more than one rank, an optimiser on
    the fused kernel): the exchange stops at the reduce-scatter; rank ``j``
    updates shard ``j`` of the parameters and their optimiser slots alone,
    then the ranks allgather the updated parameters in place (ZeRO stage 1).
    Each rank then runs 1/ranks of the optimiser's work, and the parameters
    are copies of one result, so they are identical by construction. The
    slots are gathered only when someone looks: every ``check_every`` steps
    and at every epoch end (before callbacks save checkpoints), and with them
    the last summed gradient into the parameters' ``.grad``.
    """

    PHASES = ("compute", "reduce", "update", "gather")

    def __init__(self, model, run, comm, micro_batches, randoms, timeout, check_every,
                 shard_optimizer):
        self.model, self.run, self.comm, self.timeout = model, run, comm, timeout
        self.micro_batches, self.randoms, self.check_every = micro_batches, randoms, check_every
        self.params = model.parameters()
        self.own_grads = [p.grad for p in self.params]
        sizes = [p.data.size for p in self.params]
        # leaf layout: all gradients, then the micro-batch's summed loss and correct count
        self.n_grad = sum(sizes)
        per_rank = micro_batches // comm.size
        self.leaves = [np.zeros(self.n_grad + 2, run.dtype) for _ in range(per_rank)]
        self.reducer = _TreeReducer(comm, self.n_grad, run.dtype, micro_batches, timeout)
        self.first = comm.rank * per_rank
        self.offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        self.gather = _ShardGather(comm, sizes, self.reducer.cuts, timeout)
        place = {id(p): k for k, p in enumerate(self.params)}
        opt = model.optimizer
        self.opt_place = [place.get(id(p)) for p in opt.params]  # optimiser index -> model index
        # an optimiser that also updates arrays outside the model has no shard of them
        self.shard = (shard_optimizer and comm.size > 1
                      and all(k is not None for k in self.opt_place))
        self.sharded = False     # the last step took the sharded update
        self.last = None         # (shard, tail) of a sharded step whose gradient is not gathered
        self.partial = False     # optimiser slots current on this rank's shard only
        self.comm_seconds = 0.0
        self.times = dict.fromkeys(self.PHASES, 0.0)

    def __call__(self, xb, yb, idx, at):
        run, opt = self.run, self.model.optimizer
        t0 = time.perf_counter()
        _slice_gradients(self.model, self.params, self.leaves, self.first, self.micro_batches,
                         self.randoms, xb, yb, run.labels[idx] if run.want_acc else None)
        t1 = time.perf_counter()
        shard, tail = self.reducer.reduce_scatter(self.leaves)
        t2 = time.perf_counter()
        loss_sum, correct = float(tail[0]), int(tail[1])
        batch_loss = loss_sum / len(idx) if self.model.loss.reduction == "mean" else loss_sum
        check_finite("distributed.fit", batch_loss, at, run.steps, opt.lr)
        plan = opt._begin_fused_step() if self.shard else None
        if plan is not None:
            self._update_shard(plan, shard)
            t3 = time.perf_counter()
            self.gather.gather([p.data for p in self.params], "the parameter allgather")
            t4 = time.perf_counter()
            self.last, self.partial, self.sharded = (shard, tail), True, True
            update, gather = t3 - t2, t4 - t3
        else:
            summed = self.reducer.allgather(shard, tail)
            t3 = time.perf_counter()
            self._gather_slots()  # a whole step reads every rank's shard of the slots
            _point_grads(self.params, summed)
            opt.step()
            self.last, self.sharded = None, False
            update, gather = time.perf_counter() - t3, t3 - t2
        self.times = {"compute": t1 - t0, "reduce": t2 - t1, "update": update, "gather": gather}
        self.comm_seconds += t2 - t1 + gather
        return batch_loss, loss_sum, correct

    def _update_shard(self, plan, shard):
        from .functional import get_num_threads

        _step_shard(plan, shard, self.reducer.lo, self.reducer.hi, self.offsets,
                    self.opt_place, self.run.dtype == np.float64, get_num_threads())

    def _complete(self):
        """Gather the optimiser slots and the last gradient after sharded steps."""
        self._gather_slots()
        if self.last is not None:
            _point_grads(self.params, self.reducer.allgather(*self.last))
            self.last = None

    def _gather_slots(self):
        if self.partial:
            opt = self.model.optimizer
            slots = {}
            for i, state in enumerate(opt.state):
                k = self.opt_place[i]
                for key, value in state.items():
                    if (not key.startswith("_") and isinstance(value, np.ndarray)
                            and value.shape == self.params[k].data.shape):
                        slots.setdefault(key, [None] * len(self.params))[k] = value
            for key in sorted(slots):  # the same order on every rank
                self.gather.gather(slots[key], f"the gather of the optimiser's {key!r}")
            self.partial = False

    def epoch_loss(self, loss_sum, seen):
        # a "sum" loss logs the epoch's sum, as it always has here
        return loss_sum / seen if self.model.loss.reduction == "mean" else loss_sum

    def batch_logs(self):
        t = self.times
        return {"comm_seconds": t["reduce"] + t["gather"], "sharded": self.sharded,
                **{f"{k}_seconds": t[k] for k in self.PHASES}}

    def after_step(self, epoch, step):
        if self.check_every and (step + 1) % self.check_every == 0:
            self._complete()
            _check_same_state(self.comm, self.model, self.model.optimizer,
                              f"after epoch {epoch + 1} step {step + 1}", self.timeout)

    def end_epoch(self, epoch):
        self._complete()
        _check_same_state(self.comm, self.model, self.model.optimizer,
                          f"at the end of epoch {epoch + 1}", self.timeout)
        seconds, self.comm_seconds = self.comm_seconds, 0.0
        return {"comm_seconds": seconds}

    def validate(self, x, y, batch_size):
        return evaluate(self.model, x, y, batch_size=batch_size, comm=self.comm,
                        timeout=self.timeout)

    def close(self):
        # the gradients were pointed into the reduced buffer: give the
        # parameters their own arrays back, holding the last gradient (this
        # rank's shard of it only if the run stopped mid-epoch by an exception:
        # no collective runs here, the other ranks may be elsewhere)
        for p, g in zip(self.params, self.own_grads):
            g[...] = p.grad
            p.grad = g


def _step_shard(plan, shard, lo, hi, offsets, place, f64, nthreads):
    """The optimiser step on elements ``lo:hi`` of the parameters laid end to end.

    ``plan`` is ``Optimizer._begin_fused_step()``'s; ``shard`` holds the
    summed gradient of those elements; ``offsets[place[i]]`` is where the
    optimiser's parameter ``i`` starts in the flat layout. The fused kernel is
    elementwise, so every element gets the bits of a whole ``step()``.
    """
    from . import _kernels

    for hyper, entries in plan:
        tensors = []
        for i, (w, _, slot1, slot2, regularize, first, step_size, bc2) in entries:
            off = int(offsets[place[i]])
            a, b = max(lo, off), min(hi, off + w.size)
            if a >= b:
                continue
            part = slice(a - off, b - off)
            tensors.append((w.reshape(-1)[part], shard[a - lo:b - lo],
                            None if slot1 is None else slot1.reshape(-1)[part],
                            None if slot2 is None else slot2.reshape(-1)[part],
                            regularize, first, step_size, bc2))
        if tensors:
            _kernels.optim_step(hyper, tensors, f64, nthreads)


def evaluate(model, x, y, batch_size=256, comm=None, timeout=DEFAULT_TIMEOUT):
    """``Sequential.evaluate`` with the samples split over the ranks.

    Rank ``r`` evaluates the ``r``-th of ``comm.size`` contiguous slices
    (``np.array_split``); the per-rank sums are added in rank order, so every
    rank returns the same numbers. Accuracy is exact; the loss may differ
    from a one-process ``evaluate`` in the last bits.

    Parameters
    ----------
    model : Sequential
    x, y : ndarray
        The same on every rank.
    batch_size : int, default 256
    comm : mpi4py.MPI.Comm, optional
    timeout : float, default DEFAULT_TIMEOUT

    Returns
    -------
    dict
        ``{"loss": float, "accuracy": float}`` (accuracy for class targets).
    """
    owner = "distributed.evaluate"
    comm = _as_comm(comm, owner)
    if model.loss is None:
        raise RuntimeError(f"{owner}: call model.compile(...) first (the loss is needed)")
    if whole_batch(model):  # each rank's share would be its own batch
        raise ValueError(f"{owner}: the model's output is not one row per sample (a layer "
                         "mixes the batch, or it returns several arrays); use model.evaluate")
    x, y = _check_xy(owner, x, y)
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    if len(x) == 0:
        raise ValueError(f"{owner}: x is empty")
    cuts = _split_points(len(x), comm.size)
    xs, ys = x[cuts[comm.rank]:cuts[comm.rank + 1]], y[cuts[comm.rank]:cuts[comm.rank + 1]]
    labels = _true_labels(ys)
    sums = np.zeros(2, np.float64)
    loss = copy.copy(model.loss)   # a loss keeps arrays for backward: not the model's own
    if len(xs):
        for sl, out in inference_batches(model, xs, batch_size, owner):
            sums[0] += _sample_weighted(loss, loss.forward(out, ys[sl]), len(out))
            if labels is not None:
                sums[1] += np.count_nonzero(out.argmax(axis=1) == labels[sl])
    parts = [np.frombuffer(b, np.float64) for b in
             _allgather_bytes(comm, sums.tobytes(), "the evaluation gather", timeout)]
    loss_sum, correct = 0.0, 0
    for part in parts:  # rank order, the same on every rank
        loss_sum += float(part[0])
        correct += int(part[1])
    result = {"loss": loss_sum / len(x)}
    if labels is not None:
        result["accuracy"] = correct / len(x)
    return result


# --------------------------------------------------------------------------- #
# the command line (fastconv train under mpiexec, or with --micro-batches)
# --------------------------------------------------------------------------- #


class CLISession:
    """What ``fastconv train`` changes when it trains data-parallel.

    Made by :func:`cli_session`. On creation: picks the communicator and the
    micro-batch count (recorded in ``settings["micro_batches"]``), sets the
    thread count (``default_threads`` unless ``--threads``), lets rank 0
    alone download MNIST, and silences the other ranks (no printing, no
    checkpoint, model or metrics files). ``fit`` and ``evaluate`` then stand
    in for the model's own.
    """

    def __init__(self, args, settings, parser):
        world = launched_by_mpiexec()
        self.comm = world_comm() if world > 1 else _SerialComm()
        self.ranks = self.comm.size
        self.root = self.comm.rank == 0
        self.timeout = DEFAULT_TIMEOUT if args.mpi_timeout is None else float(args.mpi_timeout)
        if settings.get("micro_batches") is None:
            if args.resume is not None:
                parser.error(f"--resume: {args.resume} was written by a one-process run "
                             "(Sequential.fit); resume it without mpiexec")
            settings["micro_batches"] = self.ranks
        self.micro_batches = settings["micro_batches"]
        if self.micro_batches % self.ranks:
            parser.error(f"--micro-batches {self.micro_batches} is not a multiple of the "
                         f"{self.ranks} MPI ranks")
        if args.threads is None:
            from .functional import set_num_threads

            set_num_threads(default_threads(self.comm if self.ranks > 1 else None))
        if not self.root:
            args.quiet = True
            args.save = args.checkpoint = args.metrics_out = None
        if self.ranks > 1 and not args.no_download:
            # one download, then every rank reads the files (on several
            # machines each needs its copy, or a shared --data-dir)
            if self.root:
                import numpy as np

                from . import datasets

                try:
                    datasets.load_mnist(args.data_dir, download=True,
                                        dtype=np.dtype(settings["dtype"]), progress=not args.quiet)
                except (OSError, ValueError):
                    pass  # cmd_train's own load reports it
            _wait(self.comm, self.comm.Ibarrier(), "the wait for rank 0's MNIST download",
                  max(self.timeout, 3600.0))
            args.no_download = True

    def describe(self):
        """One line for the log."""
        return (f"data-parallel: {self.ranks} rank(s), {self.micro_batches} micro-batch(es) "
                "per batch (the result depends on the micro-batches only)")

    def fit(self, model, *args, **kwargs):
        """:func:`fit` on this session's communicator (threads as set up: --threads or the default)."""
        from .functional import get_num_threads

        return fit(model, *args, comm=self.comm if self.ranks > 1 else None,
                   micro_batches=self.micro_batches, threads=get_num_threads(),
                   timeout=self.timeout, **kwargs)

    def evaluate(self, model, x, y, batch_size=256):
        """:func:`evaluate` on this session's communicator."""
        return evaluate(model, x, y, batch_size=batch_size,
                        comm=self.comm if self.ranks > 1 else None, timeout=self.timeout)


def cli_session(args, settings, parser):
    """A :class:`CLISession` when ``fastconv train`` runs under ``mpiexec`` or with
    ``--micro-batches``; None for a plain one-process run (``Sequential.fit``).
    """
    if launched_by_mpiexec() == 1 and settings.get("micro_batches") is None:
        return None
    return CLISession(args, settings, parser)
