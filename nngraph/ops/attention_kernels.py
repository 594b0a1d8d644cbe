"""Scaled dot-product attention's kernels (equations in attention.py).

One (sample, head) pair is one unit of work: it reads only its own slices of z = [Q | K | V] and
writes only its own slices of O, P, dS and dz, so the pairs split over threads (prange) with the
same bits at any thread count. The five products per pair (Q K^T, P V; Pd^T G, G V^T, dS K, dS^T Q)
run on the single-thread vector GEMM (linalg.gemm.matmul_into; the heads are strided views of z, K
and V transposed into a scratch), whose summation order is fixed. Written as loops they ran at
~1 GFLOP/s (33 ms for the forward pass of 32 x 4 heads x 64 steps x 32 features, 65 ms backward;
the GEMMs take ~1 ms). Causal products compute the masked half too and overwrite it: a full tile
is faster than skipping it. K^T and V^T are transposed 16 x 16 in registers (linalg.rows; as
scalar loops, 0.26 of the forward pass's 2.5 ms). The softmax's row max and sums run on float32
vectors (linalg.rows.row_max / row_sum / row_dot; float64 in scalar chains); its exponentials are
act_math's vectorisable exp_neg (libm's scalar exp took 4 of the forward pass's 4.7 ms).
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, njit, prange

from ..linalg.gemm import matmul_into
from ..linalg.rows import row_dot, row_max, row_sum, transpose_rows
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


@njit(cache=True, error_model="numpy")
def _dropped(src, dst, h, t, rate, keep, key):
    """dst = src with attention dropout applied (kept weights scaled by ``keep``): Pd from P."""
    for i in range(t):
        base = (h * t + i) * t
        for j in range(t):
            dst[i, j] = src[i, j] * keep if (src[i, j] != 0.0 and _kept(rate, key, base + j)) else 0.0


@njit(cache=True, error_model="numpy")
def _forward_pair(zf, z, y, p, kt, r, n, h, heads, causal, scale, drop, rate, keep, key):
    t = z.shape[1]
    f = y.shape[2]
    d = f // heads
    q0, k0, v0 = h * d, f + h * d, 2 * f + h * d
    transpose_rows(zf, (n * t) * 3 * f + k0, 3 * f, kt.reshape(kt.size), 0, t, t, d)  # K^T
    s = p[n, h]
    sf = s.reshape(t * t)
    matmul_into(z[n, :, q0:q0 + d], kt, s)  # S = Q K^T (the masked half too: a GEMM is faster than skipping)
    for i in range(t):
        jn = i + 1 if causal else t
        m = row_max(sf, i * t, jn) * scale
        for j in range(jn):  # no reduction in this loop: it vectorises (act_math.exp_neg)
            s[i, j] = exp_neg(m - s[i, j] * scale)
        inv = s.dtype.type(1.0) / row_sum(sf, i * t, jn)
        for j in range(jn):
            s[i, j] *= inv
        for j in range(jn, t):
            s[i, j] = 0.0
    if drop:  # O = Pd V, Pd in the dS workspace (free until the backward pass)
        _dropped(s, r[n, h], h, t, rate, keep, key)
        matmul_into(r[n, h], z[n, :, v0:v0 + d], y[n, :, q0:q0 + d])
    else:
        matmul_into(s, z[n, :, v0:v0 + d], y[n, :, q0:q0 + d])


@njit(cache=True, error_model="numpy")
def _backward_pair(zf, z, p, dy, dz, vt, r, n, h, heads, causal, scale, drop, rate, keep, key):
    t = z.shape[1]
    f = dy.shape[2]
    d = f // heads
    q0, k0, v0 = h * d, f + h * d, 2 * f + h * d
    g = dy[n, :, q0:q0 + d]
    pn = p[n, h]
    rn = r[n, h]
    pf, rf = pn.reshape(t * t), rn.reshape(t * t)
    if drop:  # rn = Pd, for dV = Pd^T G
        _dropped(pn, rn, h, t, rate, keep, key)
        matmul_into(rn.T, g, dz[n, :, v0:v0 + d])
    else:
        matmul_into(pn.T, g, dz[n, :, v0:v0 + d])
    transpose_rows(zf, (n * t) * 3 * f + v0, 3 * f, vt.reshape(vt.size), 0, t, t, d)  # V^T
    matmul_into(g, vt, rn)  # dPd = G V^T
    for i in range(t):
        jn = i + 1 if causal else t
        base = (h * t + i) * t
        if drop:
            for j in range(jn):
                rn[i, j] = rn[i, j] * keep if _kept(rate, key, base + j) else 0.0
        dot = row_dot(rf, i * t, pf, i * t, jn)
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
def forward_serial(z, y, p, kt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    zf = z.reshape(z.size)
    for u in range(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _forward_pair(zf, z, y, p, kt[n, h], r, n, h, heads, causal, scale, drop, rate, keep, _sample_key(base, first, n))


@njit(cache=True, parallel=True, error_model="numpy")
def forward_threaded(z, y, p, kt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    zf = z.reshape(z.size)
    for u in prange(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _forward_pair(zf, z, y, p, kt[n, h], r, n, h, heads, causal, scale, drop, rate, keep, _sample_key(base, first, n))


@njit(cache=True, error_model="numpy")
def backward_serial(z, p, dy, dz, vt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    zf = z.reshape(z.size)
    for u in range(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _backward_pair(zf, z, p, dy, dz, vt[n, h], r, n, h, heads, causal, scale, drop, rate, keep,
                       _sample_key(base, first, n))


@njit(cache=True, parallel=True, error_model="numpy")
def backward_threaded(z, p, dy, dz, vt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters):
    base, first = _keys(seed, layer, counters)
    zf = z.reshape(z.size)
    for u in prange(z.shape[0] * heads):
        n, h = u // heads, u % heads
        _backward_pair(zf, z, p, dy, dz, vt[n, h], r, n, h, heads, causal, scale, drop, rate, keep,
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
    kernel = forward_threaded if threaded else forward_serial

    def run():
        kernel(z, y, p, kt, r, heads, causal, scale, drop, rate, keep, seed, layer, counters)
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
