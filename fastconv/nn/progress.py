"""Progress display of ``fit``: a tqdm bar per epoch, or a throttled text line."""

import sys
import time

def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """tqdm bar per epoch when tqdm is installed, else a throttled text line.

    When the stream is not a terminal (a log file, a pipe) ``verbose=1`` prints
    one line per epoch as ``verbose=2`` does: ``\\r`` redraws would leave
    hundreds of overwritten lines per epoch in the file (Keras and tqdm do the
    same).
    """

    def __init__(self, verbose, epochs, steps, stream=None):
        self.stream = stream if stream is not None else sys.stdout
        if verbose == 1 and not _isatty(self.stream):
            verbose = 2
        self.verbose = verbose
        self.epochs = epochs
        self.steps = steps
        self._tqdm = None
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            self._tqdm = tqdm

    def begin_epoch(self, epoch):
        self.epoch = epoch
        self._last = 0.0
        self._done = 0
        self._t0 = time.perf_counter()
        if self.verbose == 1 and self._tqdm is not None:
            self.bar = self._tqdm(
                total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}", unit="batch",
                leave=True, dynamic_ncols=True,
            )

    @staticmethod
    def _fmt(logs):
        parts = []
        for k, v in logs.items():
            if k == "images_per_second":
                parts.append(f"{v:,.0f} img/s")
            elif k == "lr":
                parts.append(f"lr {v:.3g}")
            else:
                parts.append(f"{k} {v:.4f}")
        return "  ".join(parts)

    def update(self, step, logs, seen=None):
        """Redraw after ``step``; ``seen`` samples so far give the img/s shown."""
        if self.verbose != 1:
            return
        now = time.perf_counter()
        if seen is not None and now > self._t0:
            logs = dict(logs, images_per_second=seen / (now - self._t0))
        if self._tqdm is not None:
            self.bar.update(step + 1 - self._done)
            self._done = step + 1
            if now - self._last > 0.25:
                self._last = now
                self.bar.set_postfix_str(self._fmt(logs), refresh=False)
        elif now - self._last > 0.5 or step + 1 == self.steps:
            self._last = now
            self.stream.write(
                f"\rEpoch {self.epoch + 1}/{self.epochs} {step + 1}/{self.steps}  {self._fmt(logs)}"
            )
            self.stream.flush()

    def end_epoch(self, logs):
        if self.verbose == 0:
            return
        if self.verbose == 1 and self._tqdm is not None:
            self.bar.set_postfix_str(self._fmt(logs), refresh=True)
            self.bar.close()
            return
        prefix = "\r" if self.verbose == 1 else ""
        self.stream.write(
            f"{prefix}Epoch {self.epoch + 1}/{self.epochs} {self.steps}/{self.steps}  {self._fmt(logs)}\n"
        )
        self.stream.flush()

    def close(self):
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.close()

