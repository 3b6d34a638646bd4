"""Score the 10,000 MNIST test images on a Dask cluster with fastconv.dask.predict.

    pip install "dask[distributed]"
    python examples/dask_predict.py                       # a 2-worker LocalCluster
    python examples/dask_predict.py --model lenet5.npz    # a model saved by `fastconv train --save`
    python examples/dask_predict.py --scheduler tcp://host:8786   # an existing cluster

Without --model it first trains LeNet-5 for one epoch on --train-images
images (a minute or less). It then scores the test set on the cluster in
blocks of --chunk images, checks that the result is bitwise the same as
one ``model.predict`` over all images in this process, and prints the accuracy.
The workers need fastconv importable (an installed fastconv, or PYTHONPATH).
"""

import argparse
import time

import numpy as np

import fastconv
import fastconv.dask
from fastconv import models, nn

import _common  # noqa: E402  (examples/_common.py: finds MNIST as every example does)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a .npz written by `fastconv train --save` or model.save")
    p.add_argument("--data-dir", help="MNIST IDX files (default: $FASTCONV_MNIST_DIR, else "
                                      "../shared/mnist beside the repository, else fastconv's "
                                      "cache, downloading if needed)")
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--chunk", type=int, default=1000, help="images per Dask block")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (else a LocalCluster)")
    args = p.parse_args(argv)


    import dask.array as da
    from distributed import Client, LocalCluster

    (x_tr, y_tr), (x_te, y_te) = _common.load_mnist(args.data_dir)
    x_te, y_te = x_te[:args.test_images], y_te[:args.test_images]
    if args.model:
        model = nn.load_model(args.model)
    else:
        model = models.lenet5(seed=0)
        model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
        t0 = time.perf_counter()
        model.fit(x_tr[:args.train_images], y_tr[:args.train_images], batch_size=64, epochs=1,
                  verbose=0, seed=0)
        print(f"trained LeNet-5 on {args.train_images} images in {time.perf_counter() - t0:.1f} s")

    images = da.from_array(x_te, chunks=(args.chunk,) + x_te.shape[1:])
    if args.scheduler:
        cluster, client = None, Client(args.scheduler)
    else:
        # one thread per worker process: the kernels' OpenMP threads are the
        # parallelism inside a block (Dask's nanny sets OMP_NUM_THREADS=1)
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        t0 = time.perf_counter()
        probs = fastconv.dask.predict(model, images).compute()
        seconds = time.perf_counter() - t0
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    # inference is batch-invariant: one local call over all images gives the same rows
    local = model.predict(x_te)
    same = np.array_equal(probs, local)
    accuracy = float(np.mean(probs.argmax(axis=1) == y_te))
    print(f"Dask: {len(x_te)} images in {images.numblocks[0]} blocks, {seconds:.2f} s "
          f"({len(x_te) / seconds:,.0f} img/s); test accuracy {accuracy:.4f}; "
          f"bitwise equal to one local predict over all images: {same}")
    print(f"fastconv {fastconv.__version__}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
