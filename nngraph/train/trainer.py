"""The training loop: mini-batches, fused loss, backward, optimizer step, metrics, history.

The epoch loop stays in Python; every step is a fixed sequence of bound Numba/BLAS calls with no
allocation (batches are gathered into preallocated buffers with ``np.take(..., out=)``).
With ``shuffle=False`` and ``validation_split=0`` batches are taken in file order, so a run is
exactly reproducible by anyone.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from numba import njit

from ..backend.program import Program
from ..errors import DataError, TrainingDiverged
from ..ops.losses import LossDef
from .optimizers import Optimizer, clip_by_global_norm


@njit(cache=True)
def count_correct_ids(y, t):
    n = 0
    for i in range(y.shape[0]):
        best = 0
        for j in range(1, y.shape[1]):
            if y[i, j] > y[i, best]:
                best = j
        if best == t[i]:
            n += 1
    return n


@njit(cache=True)
def count_correct_onehot(y, t):
    n = 0
    for i in range(y.shape[0]):
        best, tbest = 0, 0
        for j in range(1, y.shape[1]):
            if y[i, j] > y[i, best]:
                best = j
            if t[i, j] > t[i, tbest]:
                tbest = j
        if best == tbest:
            n += 1
    return n


@njit(cache=True)
def count_correct_binary(y, t, threshold):
    n = 0
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            if (y[i, j] > threshold) == (t[i, j] > 0.5):
                n += 1
    return n


def count_correct(loss: LossDef, y: np.ndarray, t: np.ndarray, fused: bool) -> tuple[int, int]:
    """(correct, total) predictions of a batch, for the loss's metric."""
    k = y.shape[-1]
    y2 = y.reshape(-1, k)
    if loss.metric == "accuracy":
        if t.dtype.kind in "iu":
            return count_correct_ids(y2, t.reshape(-1)), y2.shape[0]
        return count_correct_onehot(y2, t.reshape(-1, k)), y2.shape[0]
    if loss.metric == "binary_accuracy":
        return count_correct_binary(y2, t.reshape(-1, k), 0.5 if fused else 0.0), y2.size
    return 0, 0


@dataclass
class EpochRecord:
    """One row of the training history."""

    epoch: int
    loss: float
    metric: float | None
    val_loss: float | None
    val_metric: float | None
    lr: float
    seconds: float
    samples_per_s: float


@dataclass
class History:
    """Per-epoch records of a fit, plus the name of the metric ('accuracy', ...)."""

    metric_name: str | None
    records: list[EpochRecord] = field(default_factory=list)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

    @property
    def last(self) -> EpochRecord:
        return self.records[-1]


Feeds = dict[str, np.ndarray]


def take_rows(feeds: Feeds, idx: np.ndarray) -> Feeds:
    return {k: v[idx] for k, v in feeds.items()}


class Trainer:
    """Runs mini-batch training of a Program with a loss and an optimizer."""

    def __init__(self, program: Program, loss: LossDef, fused: bool, optimizer: Optimizer,
                 clip_norm: float | None = None):
        self.program = program
        self.clip_norm = clip_norm
        self.loss = loss
        self.fused = fused
        self.optimizer = optimizer
        self._targets: dict[int, np.ndarray] = {}

    def _target_buffer(self, y: np.ndarray, batch: int) -> np.ndarray:
        buf = self._targets.get(batch)
        if buf is None or buf.dtype != y.dtype:
            buf = np.empty((batch,) + y.shape[1:], y.dtype)
            self._targets[batch] = buf
        return buf

    def step(self, x: Feeds, y: np.ndarray, idx: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """One training step on rows ``idx``: returns (loss, outputs, targets) of the batch."""
        plan = self.program.plan(len(idx))
        for name, buf in plan.inputs.items():
            np.take(x[name], idx, axis=0, out=buf)
        t = self._target_buffer(y, len(idx))
        np.take(y, idx, axis=0, out=t)
        out = plan.forward()
        value = self.loss.compute(out, t, plan.output_grad, self.fused)
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"training diverged: the loss became {value} at step {self.optimizer.t + 1}; "
                "lower the learning rate or check the data for NaN/Inf")
        plan.backward()
        if self.clip_norm is not None:
            clip_by_global_norm(self.program.params.grad_flat, self.clip_norm)
        self.optimizer.step()
        return value, out, t

    def evaluate(self, x: Feeds, y: np.ndarray, batch_size: int = 512) -> tuple[float, float | None]:
        """Mean loss and metric over a dataset (no parameter change)."""
        n = len(y)
        total, correct, count = 0.0, 0, 0
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            plan = self.program.plan(len(idx))
            for name, buf in plan.inputs.items():
                np.take(x[name], idx, axis=0, out=buf)
            t = self._target_buffer(y, len(idx))
            np.take(y, idx, axis=0, out=t)
            out = plan.forward()
            total += self.loss.compute(out, t, plan.output_grad, self.fused) * len(idx)
            c, m = count_correct(self.loss, out, t, self.fused)
            correct, count = correct + c, count + m
        return total / max(n, 1), (correct / count if count else None)

    def fit(self, x: Feeds, y: np.ndarray, *, epochs: int, batch_size: int, shuffle: bool, seed: int,
            validation: tuple[Feeds, np.ndarray] | None = None,
            on_epoch: Callable[[EpochRecord], None] | None = None) -> History:
        """Train for ``epochs`` passes; ``on_epoch`` is called with each finished epoch's record."""
        n = len(y)
        if n == 0:
            raise DataError("no training samples")
        rng = np.random.default_rng(seed)
        history = History(self.loss.metric)
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            order = rng.permutation(n) if shuffle else np.arange(n)
            total, correct, count = 0.0, 0, 0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                value, out, t = self.step(x, y, idx)
                total += value * len(idx)
                if self.loss.metric:
                    c, m = count_correct(self.loss, out, t, self.fused)
                    correct, count = correct + c, count + m
            seconds = time.perf_counter() - t0
            val_loss = val_metric = None
            if validation is not None and len(validation[1]):
                val_loss, val_metric = self.evaluate(*validation)
            rec = EpochRecord(epoch, total / n, (correct / count if count else None), val_loss, val_metric,
                              self.optimizer.lr, seconds, n / seconds if seconds > 0 else float("inf"))
            history.records.append(rec)
            if on_epoch is not None:
                on_epoch(rec)
        return history
