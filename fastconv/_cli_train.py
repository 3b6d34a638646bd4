"""``fastconv train``: settings, session, data and model, then the run and its report.

A run resumed with ``--resume`` from the checkpoint of epoch k gives bitwise
the same model as an uninterrupted run, because every random draw of epoch e
(shuffling order, augmentation) comes from a generator seeded by
``(seed, e)`` alone (``_EpochLog``), and the checkpoint holds everything else
(weights, optimiser slots and counters, dropout generator states).
"""

import functools
import math
import sys
import time

from ._cli_data import dataset_download, load_data
from ._cli_report import check_output_paths, print_result, throughput, write_metrics
from ._cli_resume import resumed_settings
from ._cli_settings import fresh_settings, given_settings, make_optimizer
from ._cli_status import EXIT_OK, CommandError
from ._cli_types import parse_augment

__all__ = ["cmd_train", "resolve", "epoch_seed_sequence"]


def cmd_train(args):
    """Run ``fastconv train``; returns the exit status."""
    import fastconv

    parser = args._parser
    wall0 = time.perf_counter()
    check_output_paths(args, parser)
    s, ckpt = resolve(args, parser)
    dist, download, no_download_given = _start_session(args, s, parser)
    quiet = args.quiet   # read after the session: it quiets every rank but 0
    log = functools.partial(_log, quiet)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    threads = fastconv.get_num_threads()
    (x_tr, y_tr), val, (x_te, y_te) = load_data(args, s, parser, log, download,
                                                 no_download_given)
    augment = parse_augment(s["augment"])
    model, start_epoch, history = _model_to_train(s, ckpt, args.resume, log)
    log(f"train {s['model']} on {s['dataset']}: {s['optimizer']} lr {s['lr']:g} "
        f"decay {s['lr_decay']:g}/epoch, "
        f"batch {s['batch_size']}, {s['epochs']} epochs, seed {s['seed']}, augment {s['augment']}, "
        f"{threads} thread(s), {s['dtype']}")
    if dist is not None:
        log(dist.describe())

    # tqdm bar on a terminal; one line per epoch (ours) otherwise
    verbose = 1 if (not quiet and sys.stdout.isatty()) else 0
    epochs = _EpochLog(args, s, model, history, start_epoch, len(x_tr), quiet or verbose != 0)
    _fit(model, dist, s, epochs, start_epoch, (x_tr, y_tr), val, augment, verbose, log)

    t0 = time.perf_counter()
    test = (model.evaluate if dist is None else functools.partial(dist.evaluate, model))(
        x_te, y_te, batch_size=1000)
    eval_seconds = time.perf_counter() - t0
    if not math.isfinite(test["loss"]):
        raise CommandError(f"test loss is {test['loss']}: the model diverged")
    if args.save is not None:
        model.save(args.save)
    wall = time.perf_counter() - wall0
    train_seconds, ips = throughput(history)
    if dist is not None and not dist.root:
        return EXIT_OK
    print_result(test, len(x_te), wall, ips)
    if args.save is not None:
        log(f"saved model to {args.save}")
    if args.metrics_out is not None:
        # keyed and ordered as in the JSON file
        write_metrics(args, s, {
            "threads": threads, "ranks": 1 if dist is None else dist.ranks,
            "train_size": int(len(x_tr)), "val_size": int(len(val[0])) if val else 0,
            "test_size": int(len(x_te)),
            "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
            "train_images_per_second": ips, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "wall_seconds": wall,
            "resumed_from_epoch": start_epoch if ckpt is not None else None,
            "history": history}, log)
    return EXIT_OK


def _log(quiet, msg):
    if not quiet:
        print(msg, flush=True)


def resolve(args, parser):
    """Merge command line, checkpoint and recipe into one settings dict; ``(settings, ckpt)``."""
    given = given_settings(args)
    if args.resume is not None:
        return resumed_settings(args, parser, given)
    return fresh_settings(args, given), None


def _start_session(args, s, parser):
    """``(session, download, no_download_given)``: fastconv.distributed's session and
    whether the data set may be downloaded.

    The session is None for a plain one-process run. It is data-parallel when
    mpiexec started more than one rank (read from the launcher's environment,
    so a plain run never imports mpi4py) or when --micro-batches is given (or
    recorded in the checkpoint resumed from). It may change ``args``: quiet and
    no outputs on ranks other than 0, downloads off once rank 0 fetched MNIST.
    """
    from . import distributed

    no_download_given = args.no_download
    download = dataset_download(no_download_given, s["dataset"])
    if s["dataset"] != "mnist":
        # the session pre-downloads MNIST on rank 0 unless told not to
        args.no_download = True
    dist = distributed.cli_session(args, s, parser)
    if s["dataset"] == "mnist":
        # the session may have downloaded MNIST on rank 0 and turned downloads off
        download = not args.no_download
    return dist, download, no_download_given


def _model_to_train(s, ckpt, resume, log):
    """``(model, start_epoch, history)``: a new compiled model, or the checkpoint's."""
    import numpy as np

    from . import models

    if ckpt is None:
        model = getattr(models, s["model"])(seed=s["seed"], dtype=np.dtype(s["dtype"]))
        opt = make_optimizer(s["optimizer"], model.parameters(), s["lr"], s["weight_decay"])
        model.compile(optimizer=opt, loss="cross_entropy", metrics=["accuracy"])
        return model, 0, []
    start_epoch = ckpt["epoch"] + 1
    log(f"resuming from {resume} after epoch {start_epoch} of {s['epochs']}")
    return ckpt["model"], start_epoch, list(ckpt["extra"].get("history", []))


def epoch_seed_sequence(seed, epoch):
    """The seed of every random draw of ``epoch`` (shuffling order, augmentation)."""
    import numpy as np

    # A spawn key of our own keeps these streams apart from the ones
    # fastconv.models draws the initial weights from (SeedSequence(seed).spawn).
    return np.random.SeedSequence(seed, spawn_key=(0xDA7A, epoch))


class _EpochLog:
    """What a run does around each epoch: reseed, time, record, print, checkpoint.

    Every epoch draws from a generator seeded by (seed, epoch) alone, so the
    shuffling order and augmentation of epoch e do not depend on whether the
    run was interrupted before it. fit draws from the Generator object ``rng``
    passed in; resetting its state in ``begin`` happens before fit's draws.
    """

    def __init__(self, args, s, model, history, start_epoch, n_train, silent):
        import numpy as np

        self.rng = np.random.default_rng(epoch_seed_sequence(s["seed"], start_epoch))
        self.s, self.model, self.history = s, model, history
        self.n_train = n_train
        self.silent = silent   # --quiet, or fit draws a progress bar
        self.checkpoint = args.checkpoint
        self.started = {}

    def begin(self, epoch, logs=None):
        import numpy as np

        self.rng.bit_generator.state = np.random.default_rng(
            epoch_seed_sequence(self.s["seed"], epoch)).bit_generator.state
        self.started[epoch] = time.perf_counter()

    def end(self, epoch, logs=None):
        from . import nn

        record = {"epoch": epoch + 1, "seconds": time.perf_counter() - self.started[epoch]}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        record["train_images"] = self.n_train
        self.history.append(record)
        if not math.isfinite(record.get("loss", 0.0)):
            raise FloatingPointError(f"epoch {epoch + 1}: training loss is {record['loss']}")
        if not self.silent:
            print(self._line(record), flush=True)
        if self.checkpoint is not None:
            # nn.save_checkpoint looked up now: tests replace it
            nn.save_checkpoint(self.checkpoint, self.model, self.model.optimizer, epoch,
                               rng_state=self.rng,
                               extra={"cli": {"settings": self.s}, "history": self.history})

    def _line(self, record):
        parts = [f"epoch {record['epoch']}/{self.s['epochs']}", f"loss {record['loss']:.4f}"]
        if "accuracy" in record:
            parts.append(f"acc {record['accuracy']:.4f}")
        if "val_loss" in record:
            parts.append(f"val_loss {record['val_loss']:.4f}")
            parts.append(f"val_acc {record['val_accuracy']:.4f}")
        parts += [f"lr {record['lr']:.3g}", f"{record['images_per_second']:,.0f} img/s",
                  f"{record['seconds']:.1f} s"]
        return "  ".join(parts)


def _fit(model, dist, s, epochs, start_epoch, train, val, augment, verbose, log):
    """Train epochs ``start_epoch`` .. ``s["epochs"] - 1``; a NaN/Inf loss is a CommandError."""
    from . import nn
    from .optim import ExponentialDecay

    callbacks = [
        nn.LearningRateScheduler(ExponentialDecay(s["lr_decay"], lr0=s["lr"])),
        nn.LambdaCallback(on_epoch_begin=epochs.begin, on_epoch_end=epochs.end),
    ]
    if start_epoch >= s["epochs"]:
        log(f"nothing to train: the checkpoint already completed {start_epoch} epochs")
        return
    fit = model.fit if dist is None else functools.partial(dist.fit, model)
    try:
        fit(*train, batch_size=s["batch_size"], epochs=s["epochs"], initial_epoch=start_epoch,
            validation_data=val, callbacks=callbacks, verbose=verbose, shuffle=True,
            seed=epochs.rng, augment=augment)
    except FloatingPointError as exc:
        raise CommandError(
            f"training diverged: {exc}. Lower --lr (now {s['lr']:g}) or check the data"
        ) from None
