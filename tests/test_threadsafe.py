"""One model shared by several Python threads.

Inference (predict, evaluate, evaluation-mode forward) from many threads at
once gives every thread exactly the single-thread result; training one model
from two threads at once is refused with a RuntimeError instead of
corrupting it; grad mode is per thread. The kernels themselves release the
GIL: 8 Python threads calling them at once (different shapes, both dtypes, 2
and 1 OpenMP threads each) give the serial results bit for bit.
"""

import copy
import pickle
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, models, nn

from workloads import WORKLOADS, parallel_regions, run_workload

THREADS = 8
CALLS = 20


def run_threads(target, n=THREADS):
    """Start ``n`` threads on ``target(k)`` at once; re-raise the first failure."""
    errors = []
    barrier = threading.Barrier(n)

    def body(k):
        try:
            barrier.wait()
            target(k)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("build", [models.lenet5, models.mnist_cnn], ids=["lenet5", "mnist_cnn"])
def test_concurrent_predict_is_bitwise_the_single_thread_result(build):
    """Regression: one Sequential used by several threads (a web server calling
    predict) gave 145 of 160 wrong results without an error, because the layers
    reused output buffers while the kernels released the GIL."""
    model = build(seed=0)
    rng = np.random.default_rng(0)
    # each thread its own inputs and batch sizes, so shared buffers would show
    inputs = [rng.standard_normal((1 + (k % 3) * 7, 1, 28, 28)).astype(np.float32)
              for k in range(THREADS)]
    want = [model.predict(x) for x in inputs]
    wrong = []

    def work(k):
        for c in range(CALLS):
            got = model.predict(inputs[k], batch_size=1 + c % 4)
            if got.tobytes() != want[k].tobytes():
                wrong.append((k, c))

    run_threads(work)
    assert not wrong, f"{len(wrong)} of {THREADS * CALLS} results differ"


def test_concurrent_forward_and_evaluate():
    model = models.lenet5(seed=1).compile("adam", "cross_entropy", metrics=["accuracy"]).eval()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((5 + k, 1, 28, 28)).astype(np.float32) for k in range(THREADS)]
    labels = [rng.integers(0, 10, len(x)) for x in inputs]
    logits = [model.forward(x) for x in inputs]
    scores = [model.evaluate(x, y, batch_size=4) for x, y in zip(inputs, labels)]
    wrong = []

    def work(k):
        for _ in range(CALLS // 2):
            if model.forward(inputs[k]).tobytes() != logits[k].tobytes():
                wrong.append(("forward", k))
            if model.evaluate(inputs[k], labels[k], batch_size=4) != scores[k]:
                wrong.append(("evaluate", k))

    run_threads(work)
    assert not wrong, wrong


class Doubler(nn.Module):
    """A custom layer: the model runs through its layers, under the model's lock."""

    def forward(self, x):
        y = self._buffer("y", x.shape, x.dtype)
        np.multiply(x, 2, out=y)
        return y


def test_concurrent_inference_through_the_layers():
    """A model the plan cannot run is still correct from many threads (one at a time)."""
    model = nn.Sequential([nn.Flatten(), nn.Linear(64, 32, rng=0), Doubler(), nn.ReLU(),
                           nn.Linear(32, 4, rng=1)])
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((3 + k, 1, 8, 8)).astype(np.float32) for k in range(THREADS)]
    want = [model.predict(x) for x in inputs]
    model.eval()
    logits = [model.forward(x) for x in inputs]
    wrong = []

    def work(k):
        for _ in range(CALLS // 2):
            if model.predict(inputs[k]).tobytes() != want[k].tobytes():
                wrong.append(("predict", k))
            if model.forward(inputs[k]).tobytes() != logits[k].tobytes():
                wrong.append(("forward", k))

    run_threads(work)
    assert not wrong, wrong


def blocked_fit(model, x, y):
    """Run fit in a thread that stops in its first batch until released."""
    inside, release = threading.Event(), threading.Event()
    errors = []

    class Hold(nn.Callback):
        def on_batch_begin(self, batch, logs=None):
            if batch == 0:
                inside.set()
                release.wait(30)

    def body():
        try:
            model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[Hold()])
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=body)
    t.start()
    assert inside.wait(30)
    return t, release, errors


def training_data(rng):
    model = models.lenet5(seed=0).compile("sgd", "cross_entropy")
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    return model, x, rng.integers(0, 10, 8)


def test_training_from_two_threads_is_refused(rng):
    model, x, y = training_data(rng)
    t, release, errors = blocked_fit(model, x, y)
    try:
        with pytest.raises(RuntimeError, match="fit: this model is in use by another thread"):
            model.fit(x, y, verbose=0)
        with pytest.raises(RuntimeError, match="forward: .*another thread that is training it"):
            model.forward(x)  # training mode
        with pytest.raises(RuntimeError, match="backward: .*another thread"):
            model.backward(np.ones((8, 10), np.float32))
        # inference is not refused: it runs on the plan, beside the training
        assert model.predict(x).shape == (8, 10)
    finally:
        release.set()
        t.join()
    assert not errors, errors
    # the lock is released after fit, also after a failing fit
    model.fit(x, y, verbose=0)
    with pytest.raises(ValueError):
        model.fit(x, y, batch_size=0, verbose=0)
    model.fit(x, y, verbose=0)


def test_backward_of_another_threads_forward_is_refused(rng):
    model, x, _ = training_data(rng)
    model.forward(x)
    errors = []

    def other():
        try:
            model.backward(np.ones((8, 10), np.float32))
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and "in this thread" in str(errors[0])
    model.backward(np.ones((8, 10), np.float32))  # the thread that ran forward may


def test_grad_mode_is_per_thread():
    seen = {}
    entered, leave = threading.Event(), threading.Event()

    def inside():
        with nn.no_grad():
            entered.set()
            leave.wait(30)
            seen["inside"] = nn.is_grad_enabled()

    t = threading.Thread(target=inside)
    t.start()
    assert entered.wait(30)
    seen["main"] = nn.is_grad_enabled()
    leave.set()
    t.join()
    assert seen == {"inside": False, "main": True}


def test_models_still_copy_and_pickle(rng):
    model = models.lenet5(seed=0)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    want = model.predict(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(clone.predict(x), want)
        clone.compile("sgd", "cross_entropy").fit(x, np.array([1, 2]), verbose=0)


# ------------------------------------------ kernels from 8 Python threads ---
def test_eight_threads_give_serial_results_bitwise(restore_threads):
    jobs = [(i, dt) for i in range(len(WORKLOADS)) for dt in (np.float32, np.float64)]
    serial = {job: run_workload(*job) for job in jobs}
    barrier = threading.Barrier(8)
    results, errors = {}, []

    def worker(t):
        try:
            barrier.wait(timeout=30)
            for rnd in range(3):  # rotate, so every round pairs different shapes
                for k in range(len(jobs)):
                    job = jobs[(k + 2 * t + rnd) % len(jobs)]
                    results[(t, rnd, job)] = run_workload(*job)
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append((t, exc))

    # Without this the controller, seeing 8 callers late on a 2-core machine, runs
    # most calls on one thread, and the 2-thread round would test few real teams.
    _kernels.team_adaptive(False)
    try:
        fastconv.set_num_threads(2)
        before = parallel_regions()
        for job in jobs:
            run_workload(*job)
        regions_per_round = parallel_regions() - before
        assert regions_per_round > 0 or not fastconv.openmp_enabled()
        for threads in (2, 1):  # OpenMP teams inside each Python thread, then serial kernels
            fastconv.set_num_threads(threads)
            results.clear()
            before = parallel_regions()
            pool = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
            for th in pool:
                th.start()
            for th in pool:
                th.join(timeout=300)
            assert not any(th.is_alive() for th in pool), "a kernel thread hung"
            assert not errors, errors
            assert len(results) == 8 * 3 * len(jobs)
            for (t, rnd, job), got in results.items():
                assert got == serial[job], f"thread {t} round {rnd} workload {job} differs"
            # every call above the cut-off, in every Python thread, ran on a team
            want = 8 * 3 * regions_per_round if threads == 2 else 0
            assert parallel_regions() - before == want, f"{threads} thread(s)"
    finally:
        _kernels.team_adaptive(True)
        _kernels.team_reset()
