"""``fastconv.dask.predict``: Dask blocks give exactly ``model.predict``.

Skips without dask (``pip install ".[dask]"``). Inference is batch-invariant,
so the result equals ``predict`` on the same blocks and one ``predict`` over the
whole array, bitwise.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import datasets as ds
from fastconv import models, nn

da = pytest.importorskip("dask.array")
fdask = pytest.importorskip("fastconv.dask")

ROOT = Path(__file__).resolve().parents[1]
PKG_PARENT = str(Path(fastconv.__file__).resolve().parents[1])
MNIST_DIR = Path(os.environ.get("FASTCONV_MNIST_DIR")
                 or Path(__file__).resolve().parents[1].parent / "shared" / "mnist")
HAVE_MNIST = all((MNIST_DIR / (n + ".gz")).is_file() or (MNIST_DIR / n).is_file()
                 for n in ds.MNIST_FILES)


@pytest.fixture(autouse=True)
def _one_thread():
    # results do not depend on it; spinning OpenMP threads slow small blocks on a busy CI box
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    m = models.lenet5(seed=0)
    m.compile(optimizer="adam", loss="cross_entropy")
    rng = np.random.default_rng(1)
    m.fit(rng.standard_normal((64, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 64),
          batch_size=32, epochs=1, verbose=0, seed=0)
    return m


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).standard_normal((700, 1, 28, 28)).astype(np.float32)


def blockwise(model, x, chunks, batch_size=256):
    cuts = np.cumsum(chunks)[:-1]
    return np.concatenate([model.predict(b, batch_size=batch_size) for b in np.split(x, cuts)])


@pytest.mark.parametrize("n, chunk, batch_size", [(700, 700, 256), (700, 300, 128),
                                                   (700, 97, 32), (30, 1, 8)])
def test_predict_equals_local_predict_on_the_same_blocks(model, images, n, chunk, batch_size):
    arr = da.from_array(images[:n], chunks=(chunk, 1, 28, 28))
    lazy = fdask.predict(model, arr, batch_size=batch_size)
    assert lazy.shape == (n, 10) and lazy.dtype == np.float32
    got = lazy.compute(scheduler="sync")
    assert np.array_equal(got, blockwise(model, images[:n], arr.chunks[0], batch_size))
    assert np.array_equal(got, model.predict(images[:n])), "not batch-invariant"


def test_other_chunking_of_the_inner_axes_and_dtypes(model, images):
    # inner axes are merged into one chunk; integer images are converted per batch
    arr = da.from_array((images * 50).astype(np.int16), chunks=(350, 1, 14, 28))
    got = fdask.predict(model, arr).compute(scheduler="sync")
    ref = blockwise(model, (images * 50).astype(np.int16), (350, 350))
    assert np.array_equal(got, ref)


def test_regression_outputs_are_not_softmaxed():
    m = nn.Sequential([nn.Flatten(), nn.Linear(4, 3, rng=0)])
    m.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).standard_normal((10, 2, 2)).astype(np.float32)
    got = fdask.predict(m, da.from_array(x, chunks=(5, 2, 2))).compute(scheduler="sync")
    assert np.array_equal(got, blockwise(m, x, (5, 5)))
    assert not np.allclose(got.sum(axis=1), 1.0)


def test_bad_inputs(model, images):
    with pytest.raises(TypeError, match="dask.array.Array"):
        fdask.predict(model, images)
    with pytest.raises(TypeError, match="Sequential"):
        fdask.predict(object(), da.from_array(images))
    with pytest.raises(ValueError, match=r"samples of shape \(1, 14, 28\)"):
        fdask.predict(model, da.from_array(images[:, :, :14]))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fdask.predict(model, da.from_array(np.zeros(5, np.float32)))
    with pytest.raises(TypeError, match="real numbers"):
        fdask.predict(model, da.from_array(np.zeros((2, 1, 28, 28), complex)))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fdask.predict(model, da.from_array(images), batch_size=0)


def test_predictor_pickles_without_buffers(model):
    import pickle

    blob = pickle.dumps(fdask._Predictor(model))
    weights = sum(p.data.nbytes for p in model.parameters())
    assert len(blob) < weights + 64_000  # weights and config, no optimiser slots or activations


def test_two_worker_local_cluster(model, images):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  processes=True) as cluster, distributed.Client(cluster):
        arr = da.from_array(images, chunks=(175, 1, 28, 28))
        got = fdask.predict(model, arr).compute()
    assert np.array_equal(got, blockwise(model, images, arr.chunks[0]))
    assert np.array_equal(got, model.predict(images))


def test_threaded_scheduler_equals_whole_array_predict(model, images):
    # several threads of one process predicting blocks at once (Dask's default
    # scheduler for arrays): no shared buffers, no thread-pool limits to race on
    arr = da.from_array(images, chunks=(50, 1, 28, 28))
    got = fdask.predict(model, arr).compute(scheduler="threads", num_workers=4)
    assert np.array_equal(got, model.predict(images))


@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST IDX files not found in {MNIST_DIR}")
def test_example_scores_mnist_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    env = dict(os.environ, PYTHONPATH=PKG_PARENT, FASTCONV_MNIST_DIR=str(MNIST_DIR))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "dask_predict.py"),
                           "--train-images", "2000", "--chunk", "2500"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "10000 images in 4 blocks" in proc.stdout
    assert "bitwise equal to one local predict over all images: True" in proc.stdout
    accuracy = float(proc.stdout.split("test accuracy ")[1].split(";")[0])
    assert accuracy > 0.7  # LeNet-5 after one epoch on 2,000 images
