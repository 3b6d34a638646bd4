"""Batch inference on Dask: ``predict`` over a ``dask.array`` of images.

    import dask.array as da
    from distributed import Client
    import fastconv.dask

    client = Client("tcp://scheduler:8786")          # or LocalCluster(), or none
    images = da.from_array(x_test, chunks=(1000, 1, 28, 28))
    probs = fastconv.dask.predict(model, images).compute()

The model travels to the workers once, as one small task (its architecture,
weights and loss; no optimiser state, no activation buffers), and each block
of images is scored there with ``Sequential.predict``. Every block is
computed exactly as ``model.predict(block, batch_size)`` would compute it in
this process, so the result equals
``np.concatenate([model.predict(b, batch_size) for b in blocks])`` bitwise,
whatever the scheduler, the number of workers or their threads.

Whether that also equals ``model.predict(x)`` over the whole array in one
call depends on the model being batch-invariant (a sample's output not
depending on which batch it is in); see docs/distributed.md.
"""

import threading

import numpy as np

from ._validate import check_int

__all__ = ["predict"]


class _Predictor:
    """What a worker needs to rebuild the model: config, weights, loss; picklable.

    Each worker thread rebuilds its own copy (once) from these arrays; a model
    may serve several threads (its inference plan keeps per-thread buffers), but
    a copy per thread costs little and keeps the workers independent.
    """

    def __init__(self, model):
        self.config = model.get_config()
        self.cls = type(model)
        self.state = model.state_dict()
        loss = model.loss
        self.loss = None if loss is None else {"class": type(loss).__name__, "config": loss.get_config()}
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def __dask_tokenize__(self):
        # a content hash, so equal models give equal task keys (and no pickling to hash)
        import hashlib
        import json

        h = hashlib.sha256(json.dumps([self.cls.__name__, self.config, self.loss],
                                      sort_keys=True, default=str).encode())
        for name in sorted(self.state):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.state[name]).tobytes())
        return h.hexdigest()

    def model(self):
        model = getattr(self._local, "model", None)
        if model is None:
            from .nn.losses import loss_from_config

            model = self.cls.from_config(self.config)
            model.load_state_dict(self.state)
            # the loss decides whether predict applies softmax (cross-entropy) or not
            model.loss = None if self.loss is None else loss_from_config(self.loss)
            model.eval()
            self._local.model = model
        return model

    def __call__(self, block, batch_size):
        # predict touches no BLAS pool (nn.Linear runs on fastconv's GEMM), so
        # threads of one worker need no shared thread-pool limit
        return self.model().predict(block, batch_size=batch_size)


def _predict_block(block, predictor, batch_size):
    return predictor(block, batch_size)


def predict(model, array, batch_size=256):
    """Class probabilities for a dask array of samples, block by block.

    Parameters
    ----------
    model : Sequential
        Trained; it is not modified. Its outputs per sample must have a fixed
        shape (e.g. logits of shape (classes,)).
    array : dask.array.Array of shape (N, C, H, W) (or (N, features))
        Any real dtype (converted per batch, as ``predict`` does). Chunked
        along the first axis only; other axes are merged into one chunk.
    batch_size : int, default 256
        Batch size of ``model.predict`` inside each block.

    Returns
    -------
    dask.array.Array of shape (N, classes), the model's dtype
        Lazy; ``.compute()`` runs it on the current scheduler (a
        ``distributed.Client`` when one is active). Block ``i`` equals
        ``model.predict(block_i, batch_size)`` bitwise.

    Raises
    ------
    TypeError
        ``model`` is not a fastconv Sequential, or ``array`` not a dask array
        of real numbers.
    ValueError
        ``array`` has fewer than 2 dimensions or samples of the wrong shape,
        or ``batch_size < 1``.
    """
    import dask
    import dask.array as da

    from .nn.sequential import Sequential

    owner = "fastconv.dask.predict"
    if not isinstance(model, Sequential):
        raise TypeError(f"{owner}: model must be a fastconv.nn.Sequential, got {type(model).__name__}")
    if not isinstance(array, da.Array):
        raise TypeError(f"{owner}: array must be a dask.array.Array, got {type(array).__name__} "
                        "(use model.predict for NumPy arrays)")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{owner}: array must hold real numbers, got dtype {array.dtype}")
    if array.ndim < 2:
        raise ValueError(f"{owner}: array must have a batch axis and at least 2 dimensions "
                         f"(N, C, H, W) or (N, features), got shape {array.shape}")
    if any(_unknown(s) for s in array.shape):
        raise ValueError(f"{owner}: array has unknown chunk sizes {array.shape}; "
                         "call array.compute_chunk_sizes() first")
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    from .nn.trainer import whole_batch

    if whole_batch(model):
        # each block would be its own batch: not what the model computes on the array
        raise ValueError(f"{owner}: the model's output is not one row per sample (a layer "
                         "mixes the batch, e.g. Flatten(axis=0), or it returns several "
                         "arrays); predict it on the whole array with model.predict")
    # one sample here gives the output's shape and dtype (and a clear error for
    # samples of the wrong shape before any task runs)
    try:
        probe = model.predict(np.zeros((1,) + array.shape[1:], array.dtype), batch_size=1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{owner}: the model rejects samples of shape {array.shape[1:]}: {exc}") \
            from None
    if array.numblocks[1:] != (1,) * (array.ndim - 1):
        array = array.rechunk({axis: -1 for axis in range(1, array.ndim)})
    out_ndim = probe.ndim
    extra = {}
    if out_ndim < array.ndim:
        extra["drop_axis"] = list(range(out_ndim, array.ndim))
    elif out_ndim > array.ndim:
        extra["new_axis"] = list(range(array.ndim, out_ndim))
    predictor = dask.delayed(_Predictor(model), pure=True)
    return array.map_blocks(
        _predict_block, predictor, batch_size,
        dtype=probe.dtype, chunks=(array.chunks[0],) + tuple((s,) for s in probe.shape[1:]),
        meta=np.empty((0,) + probe.shape[1:], probe.dtype), **extra,
    )


def _unknown(size):
    """True for dask's unknown chunk size (NaN)."""
    return isinstance(size, float) and size != size
