"""Progress reporting: a live bar on a terminal, plain log lines elsewhere (CI, pipes, files).

The bar is redrawn from ``on_progress``, which the trainer calls at most ~10 times a second (it
adapts a step stride), so reporting costs a few microseconds per redraw and nothing per step.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable, TextIO

from .callbacks import Callback

if TYPE_CHECKING:
    from .history import EpochRecord
    from .trainer import Trainer


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt(v: float) -> str:
    """A metric with four significant digits: 0.9867, 1.000, 2.800e-05 (never 0.0000 for a small
    loss), 1235 — the format of every loss and metric nngraph prints."""
    text = f"{v:#.4g}"
    return text[:-1] if text.endswith(".") else text


def format_record(rec: "EpochRecord", metric: str | None, epochs: int) -> str:
    """One summary line for a finished epoch."""
    parts = [f"epoch {rec.epoch:>{len(str(epochs))}}/{epochs}", f"loss {fmt(rec.loss)}"]
    if metric and rec.metric is not None:
        parts.append(f"{metric} {fmt(rec.metric)}")
    if rec.val_loss is not None:
        parts.append(f"val_loss {fmt(rec.val_loss)}")
    if metric and rec.val_metric is not None:
        parts.append(f"val_{metric} {fmt(rec.val_metric)}")
    for k, v in rec.extras.items():
        if v is not None:
            parts.append(f"{k} {fmt(v)}")
    parts.append(f"{rec.samples_per_s:,.0f} samples/s")
    return "  ".join(parts)


class ProgressBar(Callback):
    """``epoch 3/10 [#########.........] 1120/1875  loss 0.1234  accuracy 0.9612  8,412 samples/s  ETA 0:07``"""

    wants_progress = True

    def __init__(self, epochs: int, samples: int, batch_size: int, stream: TextIO | None = None, width: int = 24):
        self.epochs, self.samples, self.batch_size = epochs, samples, batch_size
        self.stream = stream or sys.stderr
        self.width = width
        self._t0 = 0.0
        self._start_batch = 0
        self._len = 0

    def _write(self, text: str, end: str = "") -> None:
        pad = max(0, self._len - len(text))
        self.stream.write("\r" + text + " " * pad + end)
        self.stream.flush()
        self._len = 0 if end else len(text)

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        self._t0 = time.perf_counter()
        self._start_batch = trainer.batch

    def on_progress(self, trainer: "Trainer", epoch: int, batch: int, batches: int, loss: float,
                    metric: float | None) -> None:
        now = time.perf_counter() - self._t0
        done = batch - self._start_batch
        rate = done * self.batch_size / now if now > 0 else 0.0
        eta = (batches - batch) * (now / done) if done else 0.0
        filled = int(self.width * batch / batches)
        m = trainer.loss.metric
        text = (f"epoch {epoch + 1}/{self.epochs} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{batch}/{batches}  loss {fmt(loss)}" + (f"  {m} {fmt(metric)}" if m and metric is not None else "")
                + f"  {rate:,.0f} samples/s  ETA {_clock(eta)}")
        self._write(text)

    def on_epoch_end(self, trainer: "Trainer", record: "EpochRecord") -> None:
        self._write(format_record(record, trainer.loss.metric, self.epochs) + f"  {record.seconds:.1f}s", "\n")

    def on_interrupt(self, trainer: "Trainer", signal_name: str) -> None:
        if self._len:
            self.stream.write("\n")
            self.stream.flush()
            self._len = 0

    on_diverged = on_interrupt  # type: ignore[assignment]


class LogLines(Callback):
    """One line per epoch (at most ~20 lines however long the run: first, every k-th, last), plus a
    line every ``every_s`` seconds inside long epochs, so a CI log shows the run is alive."""

    wants_progress = True

    def __init__(self, epochs: int, log: Callable[[str], None], every_s: float = 30.0):
        self.epochs, self.log, self.every_s = epochs, log, every_s
        self.every = max(1, epochs // 20)
        self._last = time.perf_counter()

    def on_progress(self, trainer: "Trainer", epoch: int, batch: int, batches: int, loss: float,
                    metric: float | None) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            m = trainer.loss.metric
            self.log(f"epoch {epoch + 1}/{self.epochs}  batch {batch}/{batches}  loss {fmt(loss)}"
                     + (f"  {m} {fmt(metric)}" if m and metric is not None else ""))

    def on_epoch_end(self, trainer: "Trainer", record: "EpochRecord") -> None:
        e = record.epoch
        self._last = time.perf_counter()
        if e == 1 or e % self.every == 0 or e == self.epochs or trainer.stop_training:
            self.log(format_record(record, trainer.loss.metric, self.epochs))
