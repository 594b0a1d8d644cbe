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
act_math's exp_neg (libm's scalar exp took 4 of the forward pass's 4.7 ms), on whole masked vectors
in float32 (``softmax_row``, act_math.vexp_neg): LLVM's vectorised loop left a causal row's i + 1
elements scalar. One thread, 32 x 4 heads x 64 x 32, interleaved A/B: forward 1.79 -> 1.59 ms
(causal 1.81 -> 1.61), backward unchanged (causal 2.58 -> 2.41); the same bits.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, njit, prange, types
from numba.extending import overload

from ..linalg.gemm import matmul_into
from ..linalg.rows import row_dot, row_max, row_sum, transpose_rows
from ..linalg.vec import LANES, data_ptr, vadd, vkeep_n, vload, vload_n, vmul, vsplat_value, vstore_n, vsub, vsum, vzero
from .act_math import exp_neg, vexp_neg
from .base import OpKernels, noop
from .dropout import as_u64, layer_key
from .dropout_kernels import _G, _INV53, _S11, _absorb, _keys, _mix

# Below this many multiply-adds per pass a parallel region costs more than it saves (wake-up and
# barrier, ~10-20 us on the 2-core machine).
THREADED_MIN = 1 << 17
_J = dict(cache=True, error_model="numpy")


def softmax_row(s, s0, n, scale):
    """In place: s[s0 : s0 + n] := softmax(scale * s[s0 : s0 + n])."""
    row = np.exp(scale * (s[s0:s0 + n] - s[s0:s0 + n].max()))
    s[s0:s0 + n] = row / row.sum()


def softmax_grad_row(g, p, s0, n, scale):
    """In place: g[s0 : s0 + n] := scale * p (g - sum(g p)) over that row: dS from dP and P."""
    row = slice(s0, s0 + n)
    g[row] = p[row] * (g[row] - np.dot(g[row], p[row])) * scale


@overload(softmax_row, jit_options=_J, inline="always")
def _softmax_row_jit(s, s0, n, scale):
    if s.dtype == types.float32:
        def vector(s, s0, n, scale):
            ps = data_ptr(s)
            mv, sv = vsplat_value(row_max(s, s0, n) * scale), vsplat_value(scale)
            acc = vzero()
            for j in range(0, n, LANES):  # e^(m - s) and its sum in one pass (row_sum's lane order)
                e = vkeep_n(vexp_neg(vsub(mv, vmul(vload_n(ps, s0 + j, n - j), sv))), n - j)
                vstore_n(ps, s0 + j, e, n - j)
                acc = vadd(acc, e)
            inv = vsplat_value(np.float32(1.0) / vsum(acc))
            for j in range(0, n, LANES):
                vstore_n(ps, s0 + j, vmul(vload_n(ps, s0 + j, n - j), inv), n - j)
        return vector

    def scalar(s, s0, n, scale):
        m = row_max(s, s0, n) * scale
        for j in range(s0, s0 + n):
            s[j] = exp_neg(m - s[j] * scale)
        inv = 1.0 / row_sum(s, s0, n)
        for j in range(s0, s0 + n):
            s[j] *= inv
    return scalar


@overload(softmax_grad_row, jit_options=_J, inline="always")
def _softmax_grad_row_jit(g, p, s0, n, scale):
    if g.dtype == types.float32 and p.dtype == types.float32:
        def vector(g, p, s0, n, scale):
            pg, pp = data_ptr(g), data_ptr(p)
            dot, sv = vsplat_value(row_dot(g, s0, p, s0, n)), vsplat_value(scale)
            whole = n - n % LANES
            for j in range(0, whole, LANES):  # unmasked: 5% faster over 64-wide rows
                vstore_n(pg, s0 + j, vmul(vmul(vload(pp, s0 + j), vsub(vload(pg, s0 + j), dot)), sv), LANES)
            if whole < n:
                r = vmul(vmul(vload_n(pp, s0 + whole, n - whole), vsub(vload_n(pg, s0 + whole, n - whole), dot)), sv)
                vstore_n(pg, s0 + whole, r, n - whole)
        return vector

    def scalar(g, p, s0, n, scale):
        dot = row_dot(g, s0, p, s0, n)
        for j in range(s0, s0 + n):
            g[j] = p[j] * (g[j] - dot) * scale
    return scalar


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
        softmax_row(sf, i * t, jn, scale)
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
        softmax_grad_row(rf, pf, i * t, jn, scale)
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
