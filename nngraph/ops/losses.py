"""Losses: value and gradient w.r.t. the network output, in one fused Numba pass.

Rows: the output is viewed as M rows of K values (M = batch, or batch x time for sequence outputs);
losses average over rows.

    mse                   L = (1/M) sum_rows sum_k (y - t)^2            dy = 2 (y - t) / M
    cross_entropy         L = -(1/M) sum_rows sum_k t_k log p_k         p = softmax(z)
                          fused with a softmax output: dz = (p - t) / M (no division by p, stable)
                          on logits (no softmax layer): p is formed inside, log-sum-exp exact
    binary_cross_entropy  L = -(1/(MK)) sum [t log p + (1-t) log(1-p)]  p = sigmoid(z)
                          fused with a sigmoid output: dz = (p - t) / (MK)
Cross-entropy targets are class ids (M,) or one-hot / soft rows (M, K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit

from ..errors import DataError

_TINY = 1e-30  # floor inside log(): an underflowed probability costs at most -log(1e-30) = 69 nats


@njit(cache=True)
def mse_kernel(y, t, dy):
    m, k = y.shape
    total = 0.0
    scale = 2.0 / m
    for i in range(m):
        for j in range(k):
            d = y[i, j] - t[i, j]
            total += d * d
            dy[i, j] = scale * d
    return total / m


@njit(cache=True)
def ce_probs_onehot(p, t, dz):
    m, k = p.shape
    total = 0.0
    inv = 1.0 / m
    for i in range(m):
        for j in range(k):
            if t[i, j] != 0:
                total -= t[i, j] * math.log(max(p[i, j], _TINY))
            dz[i, j] = (p[i, j] - t[i, j]) * inv
    return total * inv


@njit(cache=True)
def ce_probs_ids(p, t, dz):
    m, k = p.shape
    total = 0.0
    inv = 1.0 / m
    for i in range(m):
        c = t[i]
        total -= math.log(max(p[i, c], _TINY))
        for j in range(k):
            dz[i, j] = p[i, j] * inv
        dz[i, c] -= inv
    return total * inv


@njit(cache=True)
def _softmax_row_into(z, out):
    mx = z[0]
    for j in range(1, z.shape[0]):
        mx = max(mx, z[j])
    s = 0.0
    for j in range(z.shape[0]):
        e = math.exp(z[j] - mx)
        out[j] = e
        s += e
    for j in range(z.shape[0]):
        out[j] /= s
    return mx + math.log(s)  # log-sum-exp


@njit(cache=True)
def ce_logits_onehot(z, t, dz):
    m, k = z.shape
    total = 0.0
    inv = 1.0 / m
    for i in range(m):
        lse = _softmax_row_into(z[i], dz[i])
        for j in range(k):
            total += t[i, j] * (lse - z[i, j])
            dz[i, j] = (dz[i, j] - t[i, j]) * inv
    return total * inv


@njit(cache=True)
def ce_logits_ids(z, t, dz):
    m, k = z.shape
    total = 0.0
    inv = 1.0 / m
    for i in range(m):
        lse = _softmax_row_into(z[i], dz[i])
        c = t[i]
        total += lse - z[i, c]
        for j in range(k):
            dz[i, j] *= inv
        dz[i, c] -= inv
    return total * inv


@njit(cache=True)
def bce_probs(p, t, dz):
    m, k = p.shape
    total = 0.0
    inv = 1.0 / (m * k)
    for i in range(m):
        for j in range(k):
            q = p[i, j]
            total -= t[i, j] * math.log(max(q, _TINY)) + (1 - t[i, j]) * math.log(max(1 - q, _TINY))
            dz[i, j] = (q - t[i, j]) * inv
    return total * inv


@njit(cache=True)
def bce_logits(z, t, dz):
    m, k = z.shape
    total = 0.0
    inv = 1.0 / (m * k)
    for i in range(m):
        for j in range(k):
            x = z[i, j]
            # max(x,0) - x t + log(1 + e^-|x|): no overflow for any x
            total += max(x, 0.0) - x * t[i, j] + math.log1p(math.exp(-abs(x)))
            if x >= 0:
                s = 1.0 / (1.0 + math.exp(-x))
            else:
                e = math.exp(x)
                s = e / (1.0 + e)
            dz[i, j] = (s - t[i, j]) * inv
    return total * inv


@dataclass(frozen=True)
class LossDef:
    """A loss: the activation it fuses with, its kernels, and how it reads targets and scores."""

    name: str
    fuses_with: str | None
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray, bool], float]
    prepare_targets: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
    metric: str | None  # "accuracy" or "binary_accuracy"; regression reports the loss and MAE


def _rows(a: np.ndarray, k: int) -> np.ndarray:
    return a.reshape(-1, k)


def _mse(y, t, dy, fused):
    k = y.shape[-1]
    return mse_kernel(_rows(y, k), _rows(t, k), _rows(dy, k))


def _ce(y, t, dy, fused):
    k = y.shape[-1]
    y2, dy2 = _rows(y, k), _rows(dy, k)
    if t.dtype.kind in "iu":
        return (ce_probs_ids if fused else ce_logits_ids)(y2, t.reshape(-1), dy2)
    return (ce_probs_onehot if fused else ce_logits_onehot)(y2, _rows(t, k), dy2)


def _bce(y, t, dy, fused):
    k = y.shape[-1]
    return (bce_probs if fused else bce_logits)(_rows(y, k), _rows(t, k), _rows(dy, k))


def _float_targets(y: np.ndarray, out_shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise DataError(f"targets must be numeric, got dtype {y.dtype}")
    if y.shape[1:] == out_shape:
        return np.ascontiguousarray(y, dtype)
    if out_shape == (1,) and y.ndim == 1:  # a single-output model accepts targets of shape (N,)
        return np.ascontiguousarray(y.reshape(-1, 1), dtype)
    raise DataError(f"targets have shape {y.shape[1:]} per sample, the model outputs {out_shape}")


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


LOSSES: dict[str, LossDef] = {
    "mse": LossDef("mse", None, _mse, _float_targets, None),
    "cross_entropy": LossDef("cross_entropy", "softmax", _ce, _ce_targets, "accuracy"),
    "binary_cross_entropy": LossDef("binary_cross_entropy", "sigmoid", _bce, _float_targets,
                                    "binary_accuracy"),
}


def get_loss(name: str) -> LossDef:
    return LOSSES[name]
