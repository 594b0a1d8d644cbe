"""Metrics beyond the loss: accuracy, top-k accuracy, MSE, MAE and the confusion matrix.

Each metric is a running sum over batches (so validation needs no extra memory); targets are class
ids (M,) or rows (M, K) like the losses'. The training loop itself only counts the loss's own metric
with the Numba counters (``count_correct``); the running metrics serve validation and evaluation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from ..ops.losses import LossDef


def _rows(y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = y.shape[-1]
    return y.reshape(-1, k), (t.reshape(-1) if t.dtype.kind in "iu" else t.reshape(-1, k))


def class_ids(t2: np.ndarray) -> np.ndarray:
    """Class ids of targets given as ids or one-hot/soft rows."""
    return t2 if t2.ndim == 1 else np.argmax(t2, axis=1)


def dense_targets(t2: np.ndarray, k: int, dtype: Any) -> np.ndarray:
    """Targets as (M, K) rows (one-hot for ids)."""
    if t2.ndim == 2:
        return t2.astype(dtype, copy=False)
    out = np.zeros((len(t2), k), dtype)
    out[np.arange(len(t2)), t2] = 1
    return out


class RunningMetric:
    """A metric as (sum, count) accumulated over batches."""

    def __init__(self, name: str, k: int = 5):
        self.name, self.k = name, k
        self.total, self.count = 0.0, 0

    def update(self, y: np.ndarray, t: np.ndarray) -> None:
        y2, t2 = _rows(y, t)
        if self.name == "accuracy":
            self.total += float(np.sum(np.argmax(y2, axis=1) == class_ids(t2)))
            self.count += len(y2)
        elif self.name == "top_k_accuracy":
            k = min(self.k, y2.shape[1])
            top = np.argpartition(-y2, k - 1, axis=1)[:, :k]
            self.total += float(np.sum(np.any(top == class_ids(t2)[:, None], axis=1)))
            self.count += len(y2)
        else:
            d = y2.astype(np.float64) - dense_targets(t2, y2.shape[1], np.float64)
            self.total += float(np.sum(d * d) if self.name == "mse" else np.sum(np.abs(d)))
            self.count += d.size

    def value(self) -> float | None:
        return self.total / self.count if self.count else None


def confusion_matrix(pred: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (true, pred), 1)
    return m


def summarize(y: np.ndarray, t: np.ndarray, loss_metric: str | None, top_k: int = 5) -> dict[str, Any]:
    """All metrics that apply to outputs ``y`` and targets ``t`` (used by ``nngraph evaluate``)."""
    y2, t2 = _rows(y, t)
    out: dict[str, Any] = {"samples": int(len(y2))}
    names = ["mse", "mae"]
    if loss_metric == "accuracy":
        names = ["accuracy"] + (["top_k_accuracy"] if y2.shape[1] > top_k else []) + names
    for name in names:
        m = RunningMetric(name, top_k)
        m.update(y2, t2)
        out[f"top_{top_k}_accuracy" if name == "top_k_accuracy" else name] = m.value()
    if loss_metric == "binary_accuracy":
        out["binary_accuracy"] = float(np.mean((y2 > 0.5) == (dense_targets(t2, y2.shape[1], y2.dtype) > 0.5)))
    if loss_metric == "accuracy":
        out["confusion_matrix"] = confusion_matrix(np.argmax(y2, axis=1), class_ids(t2), y2.shape[1]).tolist()
    return out


def format_confusion(m: list[list[int]]) -> str:
    """The confusion matrix as an aligned text table (rows: true class, columns: predicted)."""
    k = len(m)
    w = max(4, max(len(str(v)) for row in m for v in row) + 1)
    lines = ["true\\pred".ljust(9) + "".join(str(j).rjust(w) for j in range(k))]
    lines += [str(i).ljust(9) + "".join(str(v).rjust(w) for v in row) for i, row in enumerate(m)]
    return "\n".join(lines)


# ---- the loss's own metric, counted per training batch -----------------------------------------

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
