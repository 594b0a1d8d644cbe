"""Scaled dot-product attention's kernels (equations in attention.py).

One (sample, head) pair is one unit of work: it reads only its own slices of z = [Q | K | V] and
writes only its own slices of O, P, dS and dz, so the pairs split over threads (prange) with the
same bits at any thread count. The five products per pair (Q K^T, P V; Pd^T G, G V^T, dS K, dS^T Q)
run on the single-thread vector GEMM (linalg.gemm.matmul_into; the heads are strided views of z, K
and V transposed into a scratch), whose summation order is fixed. Written as loops they ran at
~1 GFLOP/s (33 ms for the forward pass of 32 x 4 heads x 64 steps x 32 features, 65 ms backward;
the GEMMs take ~1 ms). Causal products compute the masked half too and overwrite it: a full tile
is faster than skipping it. Softmax sums accumulate in float64; the float32 exponentials are
act_math's vectorisable exp_neg (libm's scalar exp took 4 of the forward pass's 4.7 ms).
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, njit, prange

from ..linalg.gemm import matmul_into
from .act_math import exp_neg
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


@njit(cache=True, inline="always")
def _row_max(s, i, n):
    """max of s[i, :n] (n >= 1) with four running maxima (independent chains: ~4x faster than one)."""
    q = n - n % 4
    m0 = m1 = m2 = m3 = s[i, 0]
    for j in range(0, q, 4):
        m0 = max(m0, s[i, j])
        m1 = max(m1, s[i, j + 1])
        m2 = max(m2, s[i, j + 2])
        m3 = max(m3, s[i, j + 3])
    for j in range(q, n):
        m0 = max(m0, s[i, j])
    return max(max(m0, m1), max(m2, m3))


@njit(cache=True, inline="always")
def _row_dot(a, i, b, k, n):
    """sum over j < n of a[i, j] * b[k, j] in float64, four running sums added in a fixed order."""
    q = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for j in range(0, q, 4):
        s0 += np.float64(a[i, j]) * b[k, j]
        s1 += np.float64(a[i, j + 1]) * b[k, j + 1]
        s2 += np.float64(a[i, j + 2]) * b[k, j + 2]
        s3 += np.float64(a[i, j + 3]) * b[k, j + 3]
    for j in range(q, n):
        s0 += np.float64(a[i, j]) * b[k, j]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, error_model="numpy")
def _forward_pair(z, y, p, kt, r, ones, n, h, heads, causal, scale, drop, rate, keep, key):
    t = z.shape[1]
    f = y.shape[2]
    d = f // heads
    q0, k0, v0 = h * d, f + h * d, 2 * f + h * d
    for j in range(t):
        for c in range(d):
            kt[c, j] = z[n, j, k0 + c]
    s = p[n, h]
    matmul_into(z[n, :, q0:q0 + d], kt, s)  # S = Q K^T (the masked half too: a GEMM is faster than skipping)
    for i in range(t):
        jn = i + 1 if causal else t
        m = _row_max(s, i, jn) * scale
        for j in range(jn):  # no reduction in this loop: it vectorises (act_math.exp_neg)
            s[i, j] = exp_neg(m - s[i, j] * scale)
        inv = 1.0 / _row_dot(s, i, ones, 0, jn)
        for j in range(jn):
            s[i, j] *= inv
        for j in range(jn, t):
            s[i, j] = 0.0
    if drop:  # O = Pd V, Pd in the dS workspace (free until the backward pass)
        rn = r[n, h]
        for i in range(t):
            base = (h * t + i) * t
            for j in range(t):
                rn[i, j] = s[i, j] * keep if (s[i, j] != 0.0 and _kept(rate, key, base + j)) else 0.0
        matmul_into(rn, z[n, :, v0:v0 + d], y[n, :, q0:q0 + d])
    else:
        matmul_into(s, z[n, :, v0:v0 + d], y[n, :, q0:q0 + d])


@njit(cache=True, error_model="numpy")
def _backward_pair(z, p, dy, dz, vt, r, n, h, heads, causal, scale, drop, rate, keep, key):
    t = z.shape[1]
    f = dy.shape[2]
    d = f // heads
    q0, k0, v0 = h * d, f + h * d, 2 * f + h * d
    g = dy[n, :, q0:q0 + d]
    pn = p[n, h]
    rn = r[n, h]
    if drop:  # rn = Pd, for dV = Pd^T G
        for i in range(t):
            base = (h * t + i) * t
            for j in range(t):
                rn[i, j] = pn[i, j] * keep if (pn[i, j] != 0.0 and _kept(rate, key, base + j)) else 0.0
        matmul_into(rn.T, g, dz[n, :, v0:v0 + d])
    else:
        matmul_into(pn.T, g, dz[n, :, v0:v0 + d])
    for j in range(t):
        for c in range(d):
            vt[c, j] = z[n, j, v0 + c]
    matmul_into(g, vt, rn)  # dPd = G V^T
    for i in range(t):
        jn = i + 1 if causal else t
        base = (h * t + i) * t
        if drop:
            for j in range(jn):
                rn[i, j] = rn[i, j] * keep if _kept(rate, key, base + j) else 0.0
        dot = _row_dot(rn, i, pn, i, jn)
        for j in range(jn):
            rn[i, j] = pn[i, j] * (rn[i, j] - dot) * scale
        for j in range(jn, t):
            rn[i, j] = 0.0
    matmul_into(rn, z[n, :, k0:k0 + d], dz[n, :, q0:q0 + d])     # dQ = s dS K
    matmul_into(rn.T, z[n, :, q0:q0 + d], dz[n, :, k0:k0 + d])   # dK = s dS^T Q


@njit(cache=True, inline="always")
def _sample_key(base, first, n):
    return _absorb(base, first + np.uint64(n))


@njit(cache=True, error_model="numpy")
def forward_serial(z, y, p, kt, r, ones, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in range(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _forward_pair(z, y, p, kt[n, h], r, ones, n, h, heads, causal, scale, drop, rate, keep, _sample_key(base, first, n))


@njit(cache=True, parallel=True, error_model="numpy")
def forward_threaded(z, y, p, kt, r, ones, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in prange(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _forward_pair(z, y, p, kt[n, h], r, ones, n, h, heads, causal, scale, drop, rate, keep, _sample_key(base, first, n))


@njit(cache=True, error_model="numpy")
def backward_serial(z, p, dy, dz, vt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in range(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _backward_pair(z, p, dy, dz, vt[n, h], r, n, h, heads, causal, scale, drop, rate, keep,
                       _sample_key(base, first, n))


@njit(cache=True, parallel=True, error_model="numpy")
def backward_threaded(z, p, dy, dz, vt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    for u in prange(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _backward_pair(z, p, dy, dz, vt[n, h], r, n, h, heads, causal, scale, drop, rate, keep,
                       _sample_key(base, first, n))


def _workspace(node, types, batch):
    """P (batch, heads, T, T) kept for the backward pass, dS (the same shape) and K^T / V^T per pair."""
    heads = node.attrs["heads"]
    t, f3 = types[0].shape
    return {"p": (batch, heads, t, t), "ds": (batch, heads, t, t), "kt": (batch, heads, f3 // 3 // heads, t)}


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
    p, kt, r, counters = ws["p"], ws["kt"], ws["ds"], ctx.counters
    ones = np.ones((1, z.shape[1]), z.dtype)  # the softmax's row sum is _row_dot(row, ones)
    kernel = forward_threaded if threaded else forward_serial

    def run():
        kernel(z, y, p, kt, r, ones, heads, causal, scale, drop, rate, keep, seed, layer, counters)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    z, dz = xs[0], dxs[0]
    heads, causal, scale, drop, rate, keep, seed, layer, threaded = _settings(node, z, ctx)
    p, vt, row, counters = ws["p"], ws["kt"], ws["ds"], ctx.counters
    kernel = backward_threaded if threaded else backward_serial

    def run():
        kernel(z, p, dy, dz, vt, row, heads, causal, scale, drop, rate, keep, seed, layer, counters)
    return run


KERNELS = {"ScaledDotProductAttention": OpKernels(_bind_forward, _bind_backward, _workspace)}
