"""The losses' fused Numba kernels: value and gradient in one pass (equations in losses.py)."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_TINY = 1e-30  # floor inside log(): an underflowed probability costs at most -log(1e-30) = 69 nats

# Gradient entries smaller than 2^-64 (5.4e-20) are written as 0. Softmax probabilities of e^-87
# (confident logits) are just above float32's smallest normal number, and their products with
# weights and activations downstream are subnormal: every product that reads a subnormal operand
# takes a microcode assist on x86, and the backward of a 64->128 5x5 conv on 64 x 64 inputs (batch
# 32) behind such a gradient ran 7.3 s instead of 0.7 (bench_shapes: 4 samples/s vs PyTorch's 20).
# An entry that small is 2^-40 below the float32 resolution of any entry >= 2^-17 (the target's
# (p - 1)/batch is far larger), so it can change no sum a normal-size term enters.
_NEGLIGIBLE = 2.0 ** -64


@njit(cache=True, inline="always")
def _flush(v):
    return v if abs(v) >= _NEGLIGIBLE else 0.0


@njit(cache=True)
def mse_kernel(y, t, dy):
    m, k = y.shape
    total = 0.0
    scale = 2.0 / m
    for i in range(m):
        for j in range(k):
            d = y[i, j] - t[i, j]
            total += d * d
            dy[i, j] = _flush(scale * d)
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
            dz[i, j] = _flush((p[i, j] - t[i, j]) * inv)
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
            dz[i, j] = _flush(p[i, j] * inv)
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
            dz[i, j] = _flush((dz[i, j] - t[i, j]) * inv)
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
            dz[i, j] = _flush(dz[i, j] * inv)
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
            dz[i, j] = _flush((q - t[i, j]) * inv)
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
            dz[i, j] = _flush((s - t[i, j]) * inv)
    return total * inv


def _rows(a: np.ndarray, k: int) -> np.ndarray:
    return a.reshape(-1, k)


def mse(y, t, dy, fused):
    k = y.shape[-1]
    return mse_kernel(_rows(y, k), _rows(t, k), _rows(dy, k))


def ce(y, t, dy, fused):
    k = y.shape[-1]
    y2, dy2 = _rows(y, k), _rows(dy, k)
    if t.dtype.kind in "iu":
        return (ce_probs_ids if fused else ce_logits_ids)(y2, t.reshape(-1), dy2)
    return (ce_probs_onehot if fused else ce_logits_onehot)(y2, _rows(t, k), dy2)


def bce(y, t, dy, fused):
    k = y.shape[-1]
    return (bce_probs if fused else bce_logits)(_rows(y, k), _rows(t, k), _rows(dy, k))
