"""Scaled dot-product attention's kernels (equations in attention.py).

One (sample, head) pair is one unit of work: it reads only its own slices of z = [Q | K | V] and
writes only its own slices of O, P and dz, so the pairs split over threads (prange) with the same
bits at any thread count. Every product is written as an axpy whose inner loop runs over a
contiguous axis — S_i. += (s Q_ic) K^T_c. over a transposed copy of K, O_i. += Pd_ij V_j., the
gradients likewise — so LLVM vectorises it without fastmath (a dot product's reduction would stay
scalar: 16x slower on the 16-lane machines this targets), and the summation order is fixed. Softmax
sums accumulate in float64. Causal rows stop at the diagonal: half the work.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, njit, prange

from .base import OpKernels, noop
from .dropout import as_u64, layer_key
from .dropout_kernels import _G, _INV53, _S11, _absorb, _keys, _mix

# Below this many multiply-adds per pass a parallel region costs more than it saves (wake-up and
# barrier, ~10-20 us on the 2-core machine).
THREADED_MIN = 1 << 17


@njit(cache=True, inline="always")
def _kept(rate, key, e):
    """Whether attention-weight element e of the sample whose dropout key is ``key`` survives."""
    u = np.float64(_mix(key + (np.uint64(e) + np.uint64(1)) * _G) >> _S11) * _INV53
    return u >= rate


@njit(cache=True)
def _forward_pair(z, y, p, kt, n, h, heads, causal, scale, drop, rate, keep, key):
    t = z.shape[1]
    f = y.shape[2]
    d = f // heads
    q0, k0, v0 = h * d, f + h * d, 2 * f + h * d
    for j in range(t):
        for c in range(d):
            kt[c, j] = z[n, j, k0 + c]
    for i in range(t):
        jn = i + 1 if causal else t
        for j in range(t):
            p[n, h, i, j] = 0.0
        for c in range(d):
            a = z[n, i, q0 + c] * scale
            for j in range(jn):
                p[n, h, i, j] += a * kt[c, j]
        m = p[n, h, i, 0]
        for j in range(1, jn):
            m = max(m, p[n, h, i, j])
        tot = 0.0
        for j in range(jn):
            e = math.exp(p[n, h, i, j] - m)
            p[n, h, i, j] = e
            tot += e
        inv = 1.0 / tot
        for j in range(jn):
            p[n, h, i, j] *= inv
        for c in range(d):
            y[n, i, q0 + c] = 0.0
        base = (h * t + i) * t
        for j in range(jn):
            pj = p[n, h, i, j]
            if drop:
                pj = pj * keep if _kept(rate, key, base + j) else 0.0
            for c in range(d):
                y[n, i, q0 + c] += pj * z[n, j, v0 + c]


@njit(cache=True)
def _backward_pair(z, p, dy, dz, vt, r, n, h, heads, causal, scale, drop, rate, keep, key):
    t = z.shape[1]
    f = dy.shape[2]
    d = f // heads
    q0, k0, v0 = h * d, f + h * d, 2 * f + h * d
    for j in range(t):
        for c in range(d):
            vt[c, j] = z[n, j, v0 + c]
            dz[n, j, k0 + c] = 0.0
            dz[n, j, v0 + c] = 0.0
    for i in range(t):
        jn = i + 1 if causal else t
        for j in range(jn):
            r[n, h, j] = 0.0
        for c in range(d):  # dPd_i. = G_i. V^T
            a = dy[n, i, q0 + c]
            for j in range(jn):
                r[n, h, j] += a * vt[c, j]
        base = (h * t + i) * t
        dot = 0.0
        for j in range(jn):
            pd = p[n, h, i, j]
            if drop:
                if _kept(rate, key, base + j):
                    pd = pd * keep
                    r[n, h, j] *= keep
                else:
                    pd = 0.0
                    r[n, h, j] = 0.0
            for c in range(d):  # dV_j. += Pd_ij G_i.
                dz[n, j, v0 + c] += pd * dy[n, i, q0 + c]
            dot += r[n, h, j] * p[n, h, i, j]
        for j in range(jn):
            r[n, h, j] = p[n, h, i, j] * (r[n, h, j] - dot) * scale
        for c in range(d):
            dz[n, i, q0 + c] = 0.0
        for j in range(jn):
            g = r[n, h, j]
            for c in range(d):
                dz[n, i, q0 + c] += g * z[n, j, k0 + c]
            for c in range(d):
                dz[n, j, k0 + c] += g * z[n, i, q0 + c]


@njit(cache=True, inline="always")
def _sample_key(base, first, n):
    return _absorb(base, first + np.uint64(n))


@njit(cache=True)
def forward_serial(z, y, p, kt, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in range(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _forward_pair(z, y, p, kt[n, h], n, h, heads, causal, scale, drop, rate, keep, _sample_key(base, first, n))


@njit(cache=True, parallel=True)
def forward_threaded(z, y, p, kt, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in prange(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _forward_pair(z, y, p, kt[n, h], n, h, heads, causal, scale, drop, rate, keep, _sample_key(base, first, n))


@njit(cache=True)
def backward_serial(z, p, dy, dz, vt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in range(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _backward_pair(z, p, dy, dz, vt[n, h], r, n, h, heads, causal, scale, drop, rate, keep,
                       _sample_key(base, first, n))


@njit(cache=True, parallel=True)
def backward_threaded(z, p, dy, dz, vt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in prange(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _backward_pair(z, p, dy, dz, vt[n, h], r, n, h, heads, causal, scale, drop, rate, keep,
                       _sample_key(base, first, n))


def _workspace(node, types, batch):
    """P (batch, heads, T, T) kept for the backward pass; K^T / V^T and one score row per pair."""
    heads = node.attrs["heads"]
    t, f3 = types[0].shape
    return {"p": (batch, heads, t, t), "kt": (batch, heads, f3 // 3 // heads, t), "row": (batch, heads, t)}


def _settings(node, z, ctx):
    heads = node.attrs["heads"]
    d = z.shape[2] // 3 // heads
    rate = float(node.attrs.get("dropout", 0.0))
    drop = bool(ctx.training and rate > 0.0)
    dtype = z.dtype.type
    work = z.shape[0] * heads * z.shape[1] * z.shape[1] * d
    threaded = config.NUMBA_NUM_THREADS > 1 and work >= THREADED_MIN
    return (heads, bool(node.attrs.get("causal", False)), dtype(1.0 / math.sqrt(d)), drop, rate,
            dtype(1.0 / (1.0 - rate)), np.uint64(as_u64(ctx.seed)), np.uint64(layer_key(node)), threaded)


def _bind_forward(node, xs, ps, y, ws, ctx):
    z = xs[0]
    heads, causal, scale, drop, rate, keep, seed, layer, threaded = _settings(node, z, ctx)
    p, kt, counters = ws["p"], ws["kt"], ctx.counters
    kernel = forward_threaded if threaded else forward_serial

    def run():
        kernel(z, y, p, kt, heads, causal, scale, drop, rate, keep, seed, layer, counters)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    z, dz = xs[0], dxs[0]
    heads, causal, scale, drop, rate, keep, seed, layer, threaded = _settings(node, z, ctx)
    p, vt, row, counters = ws["p"], ws["kt"], ws["row"], ctx.counters
    kernel = backward_threaded if threaded else backward_serial

    def run():
        kernel(z, p, dy, dz, vt, row, heads, causal, scale, drop, rate, keep, seed, layer, counters)
    return run


KERNELS = {"ScaledDotProductAttention": OpKernels(_bind_forward, _bind_backward, _workspace)}
