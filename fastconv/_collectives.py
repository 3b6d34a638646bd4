"""MPI collectives for ``fastconv.distributed``: byte exchanges with a deadline and the fixed-order gradient sum.

Every collective is non-blocking and polled (``_wait``), so a dead or hung
rank aborts the job after a timeout instead of holding it forever. The
gradient sum adds the micro-batches' vectors over one fixed binary tree
(``_tree_sum``), whichever rank holds which leaves, so the result has the
same bits for any number of ranks (``_TreeReducer``).
"""

import os
import sys
import time

import numpy as np


class _SerialComm:
    """The one-process stand-in for a communicator (``comm=None``)."""

    rank = 0
    size = 1


def _mpi():
    from mpi4py import MPI

    return MPI


def _wait(comm, request, what, timeout):
    """Wait for a non-blocking MPI request; abort the job past ``timeout`` seconds.

    Polls ``Test`` without sleeping: MPI moves a large message in pipelined
    pieces only while the ranks are inside MPI calls, so even a 60 us sleep
    between polls made a 13 MB exchange take most of a second (measured,
    MPICH shared memory). ``sched_yield`` between polls still hands the core
    to other work when the node is oversubscribed.
    """
    if request.Test():
        return
    deadline = time.monotonic() + timeout
    while not request.Test():
        _yield()
        if time.monotonic() > deadline:
            _abort(comm, what, timeout)


def _wait_all(comm, requests, what, timeout):
    """``_wait`` for a list of requests: all of them complete, or the job is aborted."""
    test_all = _mpi().Request.Testall
    if test_all(requests):
        return
    deadline = time.monotonic() + timeout
    while not test_all(requests):
        _yield()
        if time.monotonic() > deadline:
            _abort(comm, what, timeout)


# Seconds between writing the abort message and calling Abort. mpiexec (Hydra)
# forwards a rank's stderr from a pipe; on Abort it kills every rank and exits,
# and if that comes first the pipe is never read: the user sees no message at
# all, not even MPICH's own abort line. Measured with a 2-rank script that
# writes one line and aborts: lost in 11 of 120 runs without the pause, in 0
# of 240 with 0.1-1 s. It costs one second on a path that has already waited
# `timeout` seconds.
_ABORT_FLUSH_S = 1.0


def _abort(comm, what, timeout):
    sys.stderr.write(
        f"fastconv.distributed: rank {comm.rank} of {comm.size}: {what} did not complete "
        f"within {timeout:g} s; another rank has died or hangs. Aborting the MPI job.\n"
    )
    sys.stderr.flush()
    time.sleep(_ABORT_FLUSH_S)
    _mpi().COMM_WORLD.Abort(1)
    # MPICH's Abort can return before the launcher kills this process
    os._exit(1)


_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


def _allgather_bytes(comm, data, what, timeout):
    """Every rank's ``data`` (bytes), in rank order, through non-blocking collectives."""
    if comm.size == 1:
        return [bytes(data)]
    sizes = np.zeros(comm.size, np.int64)
    _wait(comm, comm.Iallgather(np.array([len(data)], np.int64), sizes), what, timeout)
    displs = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.empty(int(sizes.sum()), np.uint8)
    _wait(comm, comm.Iallgatherv(np.frombuffer(data, np.uint8),
                                 [out, (sizes, displs)]), what, timeout)
    return [out[d:d + s].tobytes() for d, s in zip(displs, sizes)]


def _bcast_bytes(comm, data, what, timeout, root=0):
    """Rank ``root``'s ``data`` (bytes) on every rank."""
    if comm.size == 1:
        return bytes(data)
    size = np.array([len(data) if comm.rank == root else 0], np.int64)
    _wait(comm, comm.Ibcast(size, root=root), what, timeout)
    buf = np.frombuffer(data, np.uint8).copy() if comm.rank == root else np.empty(int(size[0]), np.uint8)
    _wait(comm, comm.Ibcast(buf, root=root), what, timeout)
    return buf.tobytes()


def _shard_cuts(n, parts, align=16):
    """Boundaries of ``parts`` near-equal shards of ``n`` elements, multiples of ``align``.

    ``parts + 1`` ints from 0 to n. Whole ``align``-element blocks (64 bytes of
    float32) start every shard of a 64-byte aligned array on a cache line, so
    the optimiser kernel runs whole vectors from a shard's first element. (The
    bits do not depend on the cuts: the update is elementwise.)
    """
    blocks = -(-n // align)
    cuts = _split_points(blocks, parts) * align
    cuts[-1] = n
    return np.minimum(cuts, n)


def _split_points(n, parts):
    """Boundaries of ``np.array_split(range(n), parts)``: ``parts + 1`` ints from 0 to n."""
    base, extra = divmod(n, parts)
    sizes = [base + 1] * extra + [base] * (parts - extra)
    return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


# --------------------------------------------------------------------------- #
# the fixed-order gradient sum
# --------------------------------------------------------------------------- #


def _tree_sum(lo, hi, values):
    """Sum of leaves ``lo .. hi-1`` over the fixed binary tree, in place.

    ``values`` maps ``(lo, hi)`` nodes to arrays; a node found there is not
    split further. Sums are written into the left operand (every array in
    ``values`` is scratch of the caller), so the result is the array of the
    leftmost node.
    """
    v = values.get((lo, hi))
    if v is not None:
        return v
    mid = (lo + hi) // 2
    a = _tree_sum(lo, mid, values)
    b = _tree_sum(mid, hi, values)
    np.add(a, b, out=a)
    return a


def _local_nodes(lo, hi, per_rank):
    """The largest tree nodes whose leaves all live on one rank, left to right.

    Returns a list of ``(lo, hi, rank)``; rank ``r`` owns leaves
    ``r*per_rank .. (r+1)*per_rank - 1``.
    """
    if lo // per_rank == (hi - 1) // per_rank:
        return [(lo, hi, lo // per_rank)]
    mid = (lo + hi) // 2
    return _local_nodes(lo, mid, per_rank) + _local_nodes(mid, hi, per_rank)


class _TreeReducer:
    """Sums per-micro-batch vectors over the fixed tree across the ranks.

    A vector is ``n`` elements cut into shards (rank ``j`` owns
    ``cuts[j]:cuts[j+1]``, see ``_shard_cuts``) and then ``tail`` scalars
    (the loss and the correct count) that every rank needs.

    Plan (made once): which tree nodes each rank sums locally. Per call
    (``reduce_scatter``): the local subtree sums; point-to-point messages
    give rank ``j`` shard ``j`` of every other rank's nodes (its own nodes'
    shards are used where they lie, uncopied); the tree above the nodes is
    summed on that shard; the nodes' tails go to every rank (a small
    ``Iallgatherv``) and every rank sums the tail tree itself. ``allgather``
    then spreads the shards when a rank needs the whole sum.

    Point-to-point messages instead of MPI's reduce-scatter: on the 2-core
    reference machine (MPICH 5, shared memory) ``Isend``/``Irecv`` of the
    other rank's half plus one ``np.add`` took 0.7 ms for the 13 MB
    MNIST-CNN gradient, ``Ireduce_scatter`` 1.3-3 ms, ``Ialltoallv`` 4 ms and
    the ``Iallreduce`` used before 5-6 ms (bench/scaling.py breaks a step down).
    """

    def __init__(self, comm, n, dtype, leaves, timeout, tail=2, cuts=None):
        self.comm, self.timeout = comm, timeout
        size, rank = comm.size, comm.rank
        self.n, self.tail, self.leaves = n, tail, leaves
        per = leaves // size
        self.first_leaf = rank * per
        nodes = _local_nodes(0, leaves, per)
        self.my_nodes = [(lo, hi) for lo, hi, r in nodes if r == rank]
        self.all_nodes = [(lo, hi) for lo, hi, _ in nodes]
        self.owner = [r for _, _, r in nodes]
        self.cuts = _shard_cuts(n, size) if cuts is None else np.asarray(cuts, np.int64)
        if len(self.cuts) != size + 1 or self.cuts[0] != 0 or self.cuts[-1] != n:
            raise ValueError(f"_TreeReducer: cuts must run from 0 to {n} in {size} shards, "
                             f"got {list(self.cuts)}")
        self.lo, self.hi = int(self.cuts[rank]), int(self.cuts[rank + 1])
        self.out = np.empty(n + tail, dtype)
        if size == 1:
            return
        shard = self.hi - self.lo
        self.recv = {node: np.empty(shard, dtype) for node, r in zip(self.all_nodes, self.owner)
                     if r != rank}
        counts = np.array([tail * self.owner.count(r) for r in range(size)], np.int64)
        self.tail_counts = (counts, np.concatenate(([0], np.cumsum(counts)[:-1])))
        self.tail_send = np.empty(tail * len(self.my_nodes), dtype)
        self.tail_recv = np.empty(tail * len(nodes), dtype)

    def reduce_scatter(self, leaf_buffers):
        """Tree sum of all ranks' leaves, this rank's shard only.

        ``leaf_buffers`` are this rank's leaves (length ``n + tail``), in
        order; they are overwritten. Returns ``(shard, tail)``: elements
        ``lo:hi`` of the sum and its ``tail`` scalars (the same bits as the
        whole tree's on every rank).
        """
        local = {(self.first_leaf + i, self.first_leaf + i + 1): b for i, b in enumerate(leaf_buffers)}
        node_sums = [_tree_sum(lo, hi, local) for lo, hi in self.my_nodes]
        n = self.n
        if self.comm.size == 1:
            self.whole = node_sums[0]   # allgather hands it back uncopied
            return self.whole[:n], self.whole[n:]
        comm, rank, cuts = self.comm, self.comm.rank, self.cuts
        requests = []
        for k, node in enumerate(self.all_nodes):
            # (a shard can be empty when there are more ranks than 16-element blocks)
            if self.owner[k] != rank and self.hi > self.lo:
                requests.append(comm.Irecv(self.recv[node], source=self.owner[k], tag=k))
        mine = iter(node_sums)
        pieces = {}
        for k, node in enumerate(self.all_nodes):
            if self.owner[k] != rank:
                pieces[node] = self.recv[node]
                continue
            s = next(mine)
            pieces[node] = s[self.lo:self.hi]
            for j in range(comm.size):
                if j != rank and cuts[j + 1] > cuts[j]:
                    requests.append(comm.Isend(s[cuts[j]:cuts[j + 1]], dest=j, tag=k))
        for i, s in enumerate(node_sums):
            self.tail_send[i * self.tail:(i + 1) * self.tail] = s[n:]
        requests.append(comm.Iallgatherv(self.tail_send, [self.tail_recv, self.tail_counts]))
        _wait_all(comm, requests, "the gradient reduce-scatter", self.timeout)
        t = self.tail
        tails = {node: self.tail_recv[k * t:(k + 1) * t] for k, node in enumerate(self.all_nodes)}
        return _tree_sum(0, self.leaves, pieces), _tree_sum(0, self.leaves, tails)

    def allgather(self, shard, tail):
        """The whole sum (length ``n + tail``) from every rank's shard.

        ``self.out``, or with one rank the summed leaf itself.
        """
        if self.comm.size == 1:
            return self.whole
        out, n = self.out, self.n
        counts = np.diff(self.cuts)
        _wait(self.comm, self.comm.Iallgatherv(shard, [out[:n], (counts, self.cuts[:-1])]),
              "the gradient allgather (Iallgatherv)", self.timeout)
        out[n:] = tail
        return out

    def reduce(self, leaf_buffers):
        """Tree sum of all ranks' leaves (``reduce_scatter`` then ``allgather``)."""
        return self.allgather(*self.reduce_scatter(leaf_buffers))


class _ShardGather:
    """Spreads every rank's shard of a set of arrays laid end to end, in place.

    ``sizes`` are the arrays' element counts in flat order and ``cuts`` the
    shard boundaries over their concatenation (``_TreeReducer.cuts``): rank
    ``j`` holds the current values of elements ``cuts[j]:cuts[j+1]``. One
    in-place ``Iallgatherv`` per array (the parameters and optimiser slots
    stay the arrays they are; nothing is copied through a flat buffer), all
    in flight together.
    """

    def __init__(self, comm, sizes, cuts, timeout):
        self.comm, self.timeout = comm, timeout
        self.counts = []
        off = 0
        for n in sizes:
            lo = np.clip(cuts[:-1], off, off + n)
            hi = np.clip(cuts[1:], off, off + n)
            self.counts.append((hi - lo, lo - off))
            off += n

    def gather(self, arrays, what):
        """Complete ``arrays`` (C-contiguous, in flat order; None skips one) on every rank."""
        if self.comm.size == 1:
            return
        inplace = _mpi().IN_PLACE
        requests = []
        for a, counts in zip(arrays, self.counts):
            if a is None:
                continue
            if not a.flags.c_contiguous:  # reshape would gather into a copy
                raise RuntimeError(f"fastconv.distributed: {what}: an array is not C-contiguous")
            requests.append(self.comm.Iallgatherv(inplace, [a.reshape(-1), counts]))
        _wait_all(self.comm, requests, what, self.timeout)
