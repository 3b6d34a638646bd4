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
            sys.stderr.write(
                f"fastconv.distributed: rank {comm.rank} of {comm.size}: {what} did not complete "
                f"within {timeout:g} s; another rank has died or hangs. Aborting the MPI job.\n"
            )
            sys.stderr.flush()
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

    Plan (made once): which tree nodes each rank sums locally, and the
    element slices of the reduce-scatter. Per call: local subtree sums, one
    ``Ialltoallv`` so that rank ``j`` holds slice ``j`` of every node, the
    tree above the nodes on that slice, one ``Iallgatherv`` of the slices.
    """

    def __init__(self, comm, length, dtype, leaves, timeout):
        self.comm, self.timeout = comm, timeout
        size, rank = comm.size, comm.rank
        self.leaves = leaves
        per = leaves // size
        self.first_leaf = rank * per
        nodes = _local_nodes(0, leaves, per)
        self.my_nodes = [(lo, hi) for lo, hi, r in nodes if r == rank]
        self.all_nodes = [(lo, hi) for lo, hi, _ in nodes]
        self.out = None
        if size == 1:
            return
        self.cuts = _split_points(length, size)
        chunk = np.diff(self.cuts)
        per_rank = [sum(1 for _, _, r in nodes if r == s) for s in range(size)]
        mine = len(self.my_nodes)
        self.scounts = mine * chunk
        # node-major send layout: slice j of node k at k*chunk[j] within block j;
        # with one node that is the node's own array, sent without a copy
        self.sdispls = mine * self.cuts[:-1]
        self.rcounts = np.array(per_rank) * chunk[rank]
        self.rdispls = np.concatenate(([0], np.cumsum(self.rcounts)[:-1]))
        self.sendbuf = np.empty(mine * length, dtype) if mine > 1 else None
        self.recvbuf = np.empty(len(nodes) * chunk[rank], dtype)
        self.chunk = chunk
        self.out = np.empty(length, dtype)

    def reduce(self, leaf_buffers):
        """Tree sum of all ranks' leaves; ``leaf_buffers`` are this rank's, in order.

        The buffers are overwritten. Returns the sum (the same bits on every rank).
        """
        local = {(self.first_leaf + i, self.first_leaf + i + 1): b for i, b in enumerate(leaf_buffers)}
        node_sums = [_tree_sum(lo, hi, local) for lo, hi in self.my_nodes]
        if self.comm.size == 1:
            return node_sums[0]
        comm, rank = self.comm, self.comm.rank
        if len(self.all_nodes) == 2:
            # two nodes: the tree is one addition per element, and a + b == b + a
            # in IEEE arithmetic, so MPI's own allreduce gives the same bits in
            # any order it likes; measured ~30% faster than the general path
            # for the 13 MB MNIST-CNN gradient on 2 ranks (MPICH, shared memory)
            _wait(comm, comm.Iallreduce(node_sums[0], self.out, op=_mpi().SUM),
                  "the gradient allreduce (Iallreduce)", self.timeout)
            return self.out
        # reduce-scatter: slice j of every local node goes to rank j, nodes in tree order
        sendbuf = self.sendbuf
        if sendbuf is None:
            sendbuf = node_sums[0]
        else:
            pos = 0
            for j in range(comm.size):
                a, b = self.cuts[j], self.cuts[j + 1]
                for s in node_sums:
                    sendbuf[pos:pos + b - a] = s[a:b]
                    pos += b - a
        _wait(comm, comm.Ialltoallv([sendbuf, (self.scounts, self.sdispls)],
                                    [self.recvbuf, (self.rcounts, self.rdispls)]),
              "the gradient reduce-scatter (Ialltoallv)", self.timeout)
        n = self.chunk[rank]
        pieces = {node: self.recvbuf[i * n:(i + 1) * n] for i, node in enumerate(self.all_nodes)}
        mine = _tree_sum(0, self.leaves, pieces)
        _wait(comm, comm.Iallgatherv(mine, [self.out, (self.chunk, self.cuts[:-1])]),
              "the gradient allgather (Iallgatherv)", self.timeout)
        return self.out
