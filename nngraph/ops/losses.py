"""Losses: value and gradient w.r.t. the network output, in one fused Numba pass.

Rows: the output is viewed as M rows of K values (M = batch, or batch x time for sequence outputs);
losses average over rows.

    mse                   L = (1/M) sum_rows sum_k (y - t)^2            dy = 2 (y - t) / M
    cross_entropy         L = -(1/M) sum_rows sum_k t_k log p_k         p = softmax(z)
                          fused with a softmax output: dz = (p - t) / M (no division by p, stable)
                          on logits (no softmax layer): p is formed inside, log-sum-exp exact
    binary_cross_entropy  L = -(1/(MK)) sum [t log p + (1-t) log(1-p)]  p = sigmoid(z)
                          fused with a sigmoid output: dz = (p - t) / (MK)
Cross-entropy targets are class ids (M,) or one-hot / soft rows (M, K). The kernels are in
loss_kernels.py, imported on the first computation (so describing a model loads no Numba).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class LossDef:
    """A loss: the activation it fuses with, its kernels, and how it reads targets and scores."""

    name: str
    fuses_with: str | None
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray, bool], float]
    prepare_targets: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
    metric: str | None  # "accuracy" or "binary_accuracy"; regression reports the loss and MAE


def _float_targets(y: np.ndarray, out_shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise DataError(f"targets must be numeric, got dtype {y.dtype}")
    if y.shape[1:] == out_shape:
        return np.ascontiguousarray(y, dtype)
    if out_shape == (1,) and y.ndim == 1:  # a single-output model accepts targets of shape (N,)
        return np.ascontiguousarray(y.reshape(-1, 1), dtype)
    raise DataError(f"targets have shape {y.shape[1:]} per sample, the model outputs {out_shape}")


def _bce_targets(y: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Float targets that are probabilities: a value outside [0, 1] makes the loss negative or
    unbounded, so it is refused rather than trained on."""
    t = _float_targets(y, out_shape)
    bad = (t < 0) | (t > 1)
    if bad.any():
        v = t[bad]
        raise DataError(f"binary_cross_entropy targets must be in [0, 1], got values from {v.min():g} "
                        f"to {v.max():g} ({int(bad.sum())} outside)")
    return t


def _ce_targets(y: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    y = np.asarray(y)
    k = out_shape[-1]
    if y.shape[1:] == out_shape[:-1] and (y.dtype.kind in "iu" or (
            y.dtype.kind == "f" and y.size and np.all(np.mod(y, 1) == 0))):
        ids = y.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= k):
            raise DataError(f"class ids must be in [0, {k - 1}] for a {k}-way output, "
                            f"got values from {ids.min()} to {ids.max()}")
        return np.ascontiguousarray(ids)
    if y.shape[1:] == out_shape:
        return np.ascontiguousarray(y, np.float32)
    raise DataError(f"cross-entropy targets must be class ids of shape {('N',) + out_shape[:-1]} or one-hot "
                    f"rows of shape {('N',) + out_shape}, got {y.shape}")


def _kernel(name: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray, bool], float]:
    """compute(y, t, dy, fused) of loss_kernels.<name>, imported on the first call."""
    def compute(y: np.ndarray, t: np.ndarray, dy: np.ndarray, fused: bool) -> float:
        from . import loss_kernels

        return getattr(loss_kernels, name)(y, t, dy, fused)
    return compute


LOSSES: dict[str, LossDef] = {
    "mse": LossDef("mse", None, _kernel("mse"), _float_targets, None),
    "cross_entropy": LossDef("cross_entropy", "softmax", _kernel("ce"), _ce_targets, "accuracy"),
    "binary_cross_entropy": LossDef("binary_cross_entropy", "sigmoid", _kernel("bce"), _bce_targets,
                                    "binary_accuracy"),
}


def get_loss(name: str) -> LossDef:
    return LOSSES[name]
