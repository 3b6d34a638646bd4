"""Data-parallel training (``fastconv.distributed``): the fixed-order sum, and real MPI runs.

The MPI tests start ``mpiexec -n 2`` as a subprocess with a hard timeout
(they skip when mpi4py or mpiexec is missing: ``pip install ".[mpi]"``), so a
broken collective fails the test instead of hanging the suite.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import _collectives, distributed, models, nn, optim
from fastconv import datasets as ds

PKG_PARENT = str(Path(fastconv.__file__).resolve().parents[1])
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC),
                               reason="needs mpi4py and mpiexec (pip install '.[mpi]')")
MNIST_DIR = Path(os.environ.get("FASTCONV_MNIST_DIR")
                 or Path(__file__).resolve().parents[1].parent / "shared" / "mnist")
HAVE_MNIST = all((MNIST_DIR / (n + ".gz")).is_file() or (MNIST_DIR / n).is_file()
                 for n in ds.MNIST_FILES)


@pytest.fixture(autouse=True)
def _one_thread():
    # Results do not depend on the thread count; on a small shared CI machine
    # two spinning OpenMP threads make these hundreds of tiny steps 30x slower.
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


def blobs(n, seed, noise=1.9):
    """A 10-class problem a LeNet learns in a few hundred steps, but not perfectly."""
    rng = np.random.default_rng(1234)
    protos = rng.standard_normal((10, 1, 28, 28)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = protos[y] + noise * rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    return x, y


def lenet(seed=0):
    model = models.lenet5(seed=seed)
    model.compile(optimizer=optim.Adam(model.parameters(), lr=1e-3), loss="cross_entropy",
                  metrics=["accuracy"])
    return model


# --------------------------------------------------------------------------- #
# without MPI
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("leaves", [1, 2, 4, 6, 8, 12])
def test_tree_sum_is_the_same_for_every_rank_count(leaves):
    # the plan behind "the result does not depend on the number of ranks":
    # local subtrees per rank, then the tree above them, equals the whole tree
    rng = np.random.default_rng(leaves)
    values = [(rng.standard_normal(257) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
              for _ in range(leaves)]
    whole = distributed._tree_sum(0, leaves, {(i, i + 1): v.copy() for i, v in enumerate(values)})
    sequential = values[0].copy()
    for v in values[1:]:
        sequential += v
    for ranks in [r for r in range(1, leaves + 1) if leaves % r == 0]:
        nodes = distributed._local_nodes(0, leaves, leaves // ranks)
        assert [lo for lo, _, _ in nodes] == sorted(lo for lo, _, _ in nodes)
        partial = {}
        for lo, hi, rank in nodes:
            assert lo // (leaves // ranks) == rank == (hi - 1) // (leaves // ranks)
            partial[(lo, hi)] = distributed._tree_sum(
                lo, hi, {(i, i + 1): values[i].copy() for i in range(lo, hi)})
        got = distributed._tree_sum(0, leaves, partial)
        assert got.tobytes() == whole.tobytes(), f"{ranks} ranks"
    if leaves >= 4:  # the test can tell orders apart
        assert sequential.tobytes() != whole.tobytes()


def test_one_micro_batch_is_bitwise_sequential_fit():
    x, y = blobs(200, seed=1)
    a, b = lenet(), lenet()
    ha = a.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=3, augment=ds.RandomShift(1))
    hb = distributed.fit(b, x, y, batch_size=32, epochs=2, verbose=0, seed=3,
                         augment=ds.RandomShift(1))
    assert distributed.state_digest(a, a.optimizer) == distributed.state_digest(b, b.optimizer)
    assert ha.history["accuracy"] == hb.history["accuracy"]
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6)
    for p in b.parameters():  # the grads are the model's own arrays again
        assert p.grad.base is None


def test_micro_batches_change_the_sum_order_but_not_the_model_much():
    x, y = blobs(200, seed=1)
    one, two = lenet(), lenet()
    distributed.fit(one, x, y, batch_size=32, epochs=1, verbose=0, seed=3)
    distributed.fit(two, x, y, batch_size=32, epochs=1, verbose=0, seed=3, micro_batches=2)
    assert distributed.state_digest(one) != distributed.state_digest(two)
    for p, q in zip(one.parameters(), two.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-3, atol=1e-5)


def test_dropout_masks_follow_the_micro_batch_not_the_rank():
    # mnist_cnn has dropout: with micro_batches=2 each slice draws from its own
    # jumped stream, and the generator ends jumped by 2 per step
    x, y = blobs(40, seed=2)
    model = models.mnist_cnn(seed=0)
    model.compile(optimizer="sgd", loss="cross_entropy")
    start = np.random.Generator(model.layers[9].rng.bit_generator.jumped(0)).bit_generator.state
    distributed.fit(model, x, y, batch_size=20, epochs=1, verbose=0, seed=1, micro_batches=2,
                    shuffle=False)
    expect = np.random.PCG64()
    expect.state = start
    for _ in range(2):  # two steps
        expect = expect.jumped(2)
    assert model.layers[9].rng.bit_generator.state == expect.state


def _twin_params(seed, dtype):
    rng = np.random.default_rng(seed)
    shapes = [(7, 3, 5, 5), (7,), (33, 29), (1,), (3, 101)]
    made = []
    for _ in range(2):
        rng = np.random.default_rng(seed)
        made.append([nn.Parameter(rng.standard_normal(s).astype(dtype),
                                  regularize=len(s) > 1) for s in shapes])
    return made


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=1e-3, l1=1e-4),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda ps: optim.SGD(ps, lr=0.1),
    lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.5),
    lambda ps: optim.Adagrad(ps, lr=1e-2, l1=1e-4),
], ids=["adam", "sgd-nesterov", "sgd", "rmsprop-momentum", "adagrad"])
def test_sharded_step_is_bitwise_the_whole_step(make, dtype):
    # the sharded update (distributed.fit with more than one rank) runs the
    # fused kernel on slices cut anywhere, also inside a parameter and off the
    # SIMD width: every element must get the bits of the whole step
    whole, sliced = _twin_params(5, dtype)
    a, b = make(whole), make(sliced)
    sizes = [p.data.size for p in sliced]
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    n = int(sum(sizes))
    rng = np.random.default_rng(6)
    for step in range(3):
        flat = rng.standard_normal(n).astype(dtype)
        for p, q, off in zip(whole, sliced, offsets):
            p.grad[...] = flat[off:off + p.data.size].reshape(p.data.shape)
            q.grad[...] = 0  # the sharded step reads the shard, not .grad
        a.step()
        plan = b._begin_fused_step()
        assert plan is not None
        cuts = [0, 3, 175 + step, 1000, n - 5, n]  # boundaries inside parameters, unaligned
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            distributed._step_shard(plan, flat[lo:hi].copy(), lo, hi, offsets,
                                    list(range(len(sliced))), dtype == np.float64, 1)
        for p, q in zip(whole, sliced):
            assert p.data.tobytes() == q.data.tobytes(), f"step {step}"
        sa, sb = a.state_dict(), b.state_dict()
        assert sa["iterations"] == sb["iterations"] == step + 1
        assert sorted(sa["slots"]) == sorted(sb["slots"])
        for k in sa["slots"]:
            assert np.asarray(sa["slots"][k]).tobytes() == np.asarray(sb["slots"][k]).tobytes(), k


def test_begin_fused_step_changes_nothing_when_the_numpy_path_is_needed():
    # then distributed.fit falls back to the whole step, which must still see
    # untouched counters and slots
    for make in (lambda ps: optim.AdamW(ps, lr=1e-3), lambda ps: optim.NAdam(ps, lr=1e-3)):
        _, params = _twin_params(1, np.float32)
        opt = make(params)
        assert opt._begin_fused_step() is None
        assert opt.iterations == 0 and all(s == {} for s in opt.state)
    _, params = _twin_params(1, np.float32)
    opt = optim.Adam(params, lr=1e-3)
    opt.step()
    before = opt.state_dict()
    opt.lr = np.float64(1e-3)  # a NumPy scalar: the kernel does not reproduce NumPy's promotion
    assert opt._begin_fused_step() is None
    opt.fused = False
    assert opt._begin_fused_step() is None
    after = opt.state_dict()
    assert after["iterations"] == before["iterations"] == 1
    assert all(np.array_equal(after["slots"][k], before["slots"][k]) for k in before["slots"])
    # one parameter's slot the kernel cannot take: no step begun, not even for the others
    opt.fused, opt.lr = True, 1e-3
    opt.state[2]["exp_avg"] = np.asfortranarray(np.zeros((33, 29), np.float32))
    assert opt._begin_fused_step() is None
    assert opt.iterations == 1 and opt.state[0]["step"] == 1


def test_shard_cuts_are_aligned_and_cover_everything():
    for n in (0, 5, 16, 17, 1000, 3274634):
        for parts in (1, 2, 3, 7):
            cuts = _collectives._shard_cuts(n, parts)
            assert len(cuts) == parts + 1 and cuts[0] == 0 and cuts[-1] == n
            assert all(np.diff(cuts) >= 0)
            assert all(c % 16 == 0 or c == n for c in cuts)
            if n >= 16 * parts:
                assert max(np.diff(cuts)) - min(np.diff(cuts)) <= 16 + n % 16


def test_launcher_environment():
    assert distributed.launched_by_mpiexec({}) == 1
    assert distributed.launched_by_mpiexec({"PMI_SIZE": "4"}) == 4
    assert distributed.launched_by_mpiexec({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert distributed.launched_by_mpiexec({"PMI_SIZE": "x", "OMPI_COMM_WORLD_SIZE": "2"}) == 2


def test_default_threads_one_process():
    assert 1 <= distributed.default_threads() <= (os.cpu_count() or 1)


class _FakeComm:
    rank, size = 0, 2


@pytest.mark.parametrize("kwargs, err, match", [
    ({"micro_batches": 3, "comm": _FakeComm()}, ValueError, "multiple of the number of ranks"),
    ({"micro_batches": 0}, ValueError, "micro_batches must be >= 1"),
    ({"timeout": 0}, ValueError, "timeout must be"),
    ({"comm": "world"}, TypeError, "comm must be"),
    ({"check_every": -1}, ValueError, "check_every"),
])
def test_bad_arguments(kwargs, err, match):
    x, y = blobs(8, seed=0)
    with pytest.raises(err, match=match):
        distributed.fit(lenet(), x, y, verbose=0, **kwargs)


def test_rejects_what_it_cannot_keep_identical():
    x, y = blobs(8, seed=0)
    bn = nn.Sequential([nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)])
    bn.compile(optimizer="sgd", loss="cross_entropy")
    with pytest.raises(ValueError, match="buffers"):
        distributed.fit(bn, x, y, verbose=0)
    model = lenet()
    model.compile(optimizer="sgd", loss=nn.CrossEntropyLoss())
    model.loss.__class__ = type("MyLoss", (nn.CrossEntropyLoss,), {})
    with pytest.raises(ValueError, match="MyLoss"):
        distributed.fit(model, x, y, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        distributed.fit(models.lenet5(), x, y, verbose=0)


# --------------------------------------------------------------------------- #
# with MPI: mpiexec -n 2
# --------------------------------------------------------------------------- #

WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    import numpy as np
    from fastconv import distributed, models, nn, optim

    mode, data, out = sys.argv[1:4]
    comm = distributed.world_comm()
    d = np.load(data)
    # rank 1 starts from other weights: the broadcast from rank 0 must fix that
    model = models.lenet5(seed=comm.rank)
    opt = (optim.SGD(model.parameters(), lr=0.02, momentum=0.9) if str(d["opt"]) == "sgd"
           else optim.Adam(model.parameters(), lr=1e-3))
    model.compile(optimizer=opt, loss="cross_entropy", metrics=["accuracy"])

    sharded = []

    def on_batch_end(step, logs):
        sharded.append(logs["sharded"])
        if comm.rank == 1 and step == 3 and mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if comm.rank == 1 and step == 3 and mode == "hang":
            time.sleep(3600)
        if mode == "numpy-lr" and step == 20:
            # a NumPy scalar rate: the fused kernel does not apply, the
            # sharded route hands over to the whole step
            model.optimizer.lr = np.float64(model.optimizer.lr)

    hist = distributed.fit(model, d["x"], d["y"], batch_size=16, epochs=int(d["epochs"]),
                           verbose=0, seed=3, comm=comm, check_every=25,
                           timeout=5 if mode == "hang" else 120,
                           micro_batches=int(d["micro"]) or None, shard_optimizer=bool(d["shard"]),
                           callbacks=[nn.LambdaCallback(on_batch_end=on_batch_end)])
    test = distributed.evaluate(model, d["xt"], d["yt"], comm=comm)
    with open(os.path.join(out, f"rank{comm.rank}.json"), "w") as f:
        json.dump({"digest": distributed.state_digest(model, model.optimizer).hex(),
                   "accuracy": test["accuracy"], "loss": hist.history["loss"],
                   "threads": distributed.default_threads(comm),
                   "steps": model.optimizer.iterations,
                   "sharded_steps": sum(sharded)}, f)
""")


def mpirun(tmp_path, mode, n=2, timeout=120, epochs=3, samples=1600, micro=0, shard=True,
           opt="adam"):
    x, y = blobs(samples, seed=10)
    xt, yt = blobs(1000, seed=11)
    np.savez(tmp_path / "data.npz", x=x, y=y, xt=xt, yt=yt, epochs=epochs, micro=micro,
             shard=shard, opt=opt)
    (tmp_path / "worker.py").write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    t0 = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(tmp_path / "worker.py"),
                           mode, str(tmp_path / "data.npz"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)
    return proc, time.monotonic() - t0, (x, y, xt, yt)


@needs_mpi
def test_two_ranks_identical_weights_and_one_process_accuracy(tmp_path):
    proc, _, (x, y, xt, yt) = mpirun(tmp_path, "train")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["steps"] == 300  # 3 epochs of 100 global batches of 16
    assert r0["sharded_steps"] == r1["sharded_steps"] == 300  # the sharded optimiser step ran
    assert r0["digest"] == r1["digest"]  # bitwise the same weights and optimiser state
    assert r0["accuracy"] == r1["accuracy"] and r0["loss"] == r1["loss"]
    assert r0["threads"] == r1["threads"] == max(1, len(distributed._affinity()) // 2)
    # the stretch goal: one process with the same micro-batches gives the same bits
    alone = lenet(seed=0)
    distributed.fit(alone, x, y, batch_size=16, epochs=3, verbose=0, seed=3, micro_batches=2)
    assert distributed.state_digest(alone, alone.optimizer).hex() == r0["digest"]
    # and plain Sequential.fit (one backward per batch) learns as well, within noise
    plain = lenet(seed=0)
    plain.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=3)
    acc = plain.evaluate(xt, yt)["accuracy"]
    print(f"accuracy: 2 ranks {r0['accuracy']:.4f}, Sequential.fit {acc:.4f}")
    assert 0.6 < acc < 0.995, acc  # a problem where accuracy can tell runs apart
    assert abs(acc - r0["accuracy"]) <= 0.02, (acc, r0["accuracy"])


@needs_mpi
def test_three_ranks_take_the_reduce_scatter_path_and_equal_one_process(tmp_path):
    # with 2 ranks the tree is one addition (done by MPI's allreduce); 3 ranks
    # and 6 micro-batches need the general reduce-scatter over 6 tree nodes
    assert len(distributed._local_nodes(0, 6, 2)) > 2
    proc, _, (x, y, _, _) = mpirun(tmp_path, "train", n=3, epochs=1, samples=480, micro=6)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert [r["sharded_steps"] for r in ranks] == [30] * 3
    digests = {r["digest"] for r in ranks}
    alone = lenet(seed=0)
    distributed.fit(alone, x, y, batch_size=16, epochs=1, verbose=0, seed=3, micro_batches=6)
    assert digests == {distributed.state_digest(alone, alone.optimizer).hex()}


def _alone_digest(x, y, micro_batches, opt="adam", numpy_lr=False):
    model = models.lenet5(seed=0)
    model.compile(optimizer=(optim.SGD(model.parameters(), lr=0.02, momentum=0.9) if opt == "sgd"
                             else optim.Adam(model.parameters(), lr=1e-3)),
                  loss="cross_entropy", metrics=["accuracy"])

    def on_batch_end(step, logs):
        if numpy_lr and step == 20:
            model.optimizer.lr = np.float64(model.optimizer.lr)

    distributed.fit(model, x, y, batch_size=16, epochs=1, verbose=0, seed=3,
                    micro_batches=micro_batches,
                    callbacks=[nn.LambdaCallback(on_batch_end=on_batch_end)])
    return distributed.state_digest(model, model.optimizer).hex()


@needs_mpi
@pytest.mark.parametrize("mode, shard, opt, sharded", [
    ("train", False, "adam", 0),      # every rank runs the whole step on the allgathered gradient
    ("train", True, "sgd", 30),       # momentum: the first step writes the buffer on each shard
    ("numpy-lr", True, "adam", 21),   # sharded, then the whole step once the kernel cannot apply
])
def test_sharded_and_whole_steps_give_the_same_bits(tmp_path, mode, shard, opt, sharded):
    proc, _, (x, y, _, _) = mpirun(tmp_path, mode, epochs=1, samples=480, shard=shard, opt=opt)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["sharded_steps"] == r1["sharded_steps"] == sharded
    assert r0["digest"] == r1["digest"] == _alone_digest(x, y, 2, opt, mode == "numpy-lr")


@needs_mpi
def test_killed_rank_ends_the_job(tmp_path):
    proc, seconds, _ = mpirun(tmp_path, "kill", timeout=60)
    assert proc.returncode != 0
    assert seconds < 60
    assert not (tmp_path / "rank0.json").exists()


@needs_mpi
def test_hung_rank_aborts_the_job_with_a_clear_message(tmp_path):
    proc, seconds, _ = mpirun(tmp_path, "hang", timeout=60)
    assert proc.returncode != 0
    assert seconds < 60
    assert "did not complete within 5 s; another rank has died or hangs" in proc.stderr
    assert not (tmp_path / "rank0.json").exists()


@needs_mpi
@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST IDX files not found in {MNIST_DIR}")
def test_cli_under_mpiexec_resumes_and_equals_one_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    common = ["-m", "fastconv", "train", "--data-dir", str(MNIST_DIR), "--no-download",
              "--train-subset", "640", "--test-subset", "200", "--quiet"]

    def train(*args, ranks=2):
        cmd = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [sys.executable] + common + list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    out = train("--epochs", "1", "--checkpoint", "ck.npz", "--metrics-out", "m.json")
    assert out.count("test accuracy") == 1  # rank 0 alone reports
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["ranks"] == 2 and metrics["micro_batches"] == 2
    train("--epochs", "2", "--resume", "ck.npz", "--save", "resumed.npz")
    train("--epochs", "2", "--micro-batches", "2", "--save", "alone.npz", ranks=0)
    a = nn.load_model(tmp_path / "resumed.npz").state_dict()
    b = nn.load_model(tmp_path / "alone.npz").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
