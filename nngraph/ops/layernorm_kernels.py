"""LayerNorm's kernels (equations in layernorm.py).

Rows are cut into ROW_BLOCKS fixed blocks (fewer when there are fewer rows). Forward: every row on
its own, so any split gives the same bits. Backward: dx per row; dscale and dbias as one float64
partial per block, summed in block order afterwards, by the serial and the threaded kernel alike,
so the parameter gradients do not depend on the thread count. Mean, variance and the row sums of
the backward pass accumulate in float64 (float32 rows: the SIMD kernels below); the backward pass
recomputes mean and 1/std from x (x is intact) instead of storing them, so both passes use the same
values.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, njit, prange, types
from numba.extending import overload

from ..linalg.vec import (LANES, data_ptr, vadd, vfma, vkeep_n, vload_n, vmul, vsplat_value, vstore_n, vsub, vsum,
                          vzero)
from .base import OpKernels

_J = dict(cache=True, error_model="numpy")
ROW_BLOCKS = 8
# Threaded from this many elements: ~2 ns per element forward, ~5 backward, so 2^16 elements are
# 0.1-0.3 ms of work against a parallel region's ~20 us (2048 rows of 128 stayed on one thread of
# two at the old 2^20).
THREADED_MIN = 1 << 16


@njit(cache=True, inline="always")
def _sum8(x, i, m):
    """sum_j x[i, j] in float64: eight running sums (j mod 8) added in a fixed order. One chain of
    dependent float64 adds cost ~4 cycles per element (LayerNorm over 2048 rows of 128 took 0.85 ms
    forward); eight keep both FP-add ports busy."""
    q = m - m % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, q, 8):
        a0 += x[i, j]
        a1 += x[i, j + 1]
        a2 += x[i, j + 2]
        a3 += x[i, j + 3]
        a4 += x[i, j + 4]
        a5 += x[i, j + 5]
        a6 += x[i, j + 6]
        a7 += x[i, j + 7]
    for j in range(q, m):
        a0 += x[i, j]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, inline="always")
def _sq8(x, i, m, mu):
    """sum_j (x[i, j] - mu)^2 in float64, as _sum8."""
    q = m - m % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, q, 8):
        d0, d1, d2, d3 = x[i, j] - mu, x[i, j + 1] - mu, x[i, j + 2] - mu, x[i, j + 3] - mu
        d4, d5, d6, d7 = x[i, j + 4] - mu, x[i, j + 5] - mu, x[i, j + 6] - mu, x[i, j + 7] - mu
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        a4 += d4 * d4
        a5 += d5 * d5
        a6 += d6 * d6
        a7 += d7 * d7
    for j in range(q, m):
        d = x[i, j] - mu
        a0 += d * d
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, inline="always")
def _row_stats(x, i, eps):
    """(mean, 1 / sqrt(biased variance + eps)) of row i, in float64."""
    m = x.shape[1]
    mu = _sum8(x, i, m) / m
    return mu, 1.0 / math.sqrt(_sq8(x, i, m, mu) / m + eps)


@njit(cache=True, error_model="numpy")
def _forward_rows(x, scale, bias, eps, y, lo, hi):
    for i in range(lo, hi):
        mu, inv = _row_stats(x, i, eps)
        for j in range(x.shape[1]):
            y[i, j] = scale[j] * ((x[i, j] - mu) * inv) + bias[j]


@njit(cache=True, error_model="numpy")
def _backward_rows(x, scale, eps, dy, dx, want_dx, part, lo, hi):
    """Rows [lo, hi): dx (when want_dx) and this block's partial dscale (part[0]), dbias (part[1])."""
    m = x.shape[1]
    for j in range(m):
        part[0, j] = 0.0
        part[1, j] = 0.0
    q = m - m % 4
    for i in range(lo, hi):
        mu, inv = _row_stats(x, i, eps)
        for j in range(m):  # no reduction here: this loop vectorises
            g = dy[i, j]
            part[0, j] += g * ((x[i, j] - mu) * inv)
            part[1, j] += g
        # s1 = sum of dxhat, s2 = sum of dxhat * xhat: four running sums each, as in _row_stats
        a0 = a1 = a2 = a3 = 0.0
        b0 = b1 = b2 = b3 = 0.0
        for j in range(0, q, 4):
            g0 = dy[i, j] * scale[j]
            g1 = dy[i, j + 1] * scale[j + 1]
            g2 = dy[i, j + 2] * scale[j + 2]
            g3 = dy[i, j + 3] * scale[j + 3]
            a0 += g0
            a1 += g1
            a2 += g2
            a3 += g3
            b0 += g0 * ((x[i, j] - mu) * inv)
            b1 += g1 * ((x[i, j + 1] - mu) * inv)
            b2 += g2 * ((x[i, j + 2] - mu) * inv)
            b3 += g3 * ((x[i, j + 3] - mu) * inv)
        for j in range(q, m):
            g0 = dy[i, j] * scale[j]
            a0 += g0
            b0 += g0 * ((x[i, j] - mu) * inv)
        s1 = (a0 + a1) + (a2 + a3)
        s2 = (b0 + b1) + (b2 + b3)
        if want_dx:
            k = inv / m
            for j in range(m):
                xh = (x[i, j] - mu) * inv
                dx[i, j] = k * (m * (dy[i, j] * scale[j]) - s1 - xh * s2)


@njit(cache=True, error_model="numpy")
def _sum_blocks(parts, dscale, dbias):
    """dscale, dbias = the block partials summed in block order."""
    for j in range(dscale.shape[0]):
        a = 0.0
        b = 0.0
        for c in range(parts.shape[0]):
            a += parts[c, 0, j]
            b += parts[c, 1, j]
        dscale[j] = a
        dbias[j] = b


# ---- float32 rows on the SIMD vector type (linalg.vec) ----------------------------------------------
# The scalar kernels above accumulate in float64, whose reductions LLVM leaves scalar without
# fast-math: ~2 ns per element forward, ~5 backward (LayerNorm over 2048 rows of 128: 0.5 and 1.4 ms,
# 9% of a transformer step). Here a row is LANES-wide vectors: its sums accumulate in float32 lanes
# and are reduced with vsum (a fixed tree), so every thread computes the same bits; the float32
# mean of a row of O(1) values is off the float64 one by ~1e-7 relative (the op table's float32 vs
# float64 check bounds it). The block partials of dscale and dbias stay float64. float64 arrays (the
# gradient checks) and non-contiguous ones take the scalar rows (``forward_rows`` picks).


@njit(cache=True, inline="always", error_model="numpy")
def _vstats(px, base, m, eps):
    """(mean, 1 / sqrt(variance + eps)) of the float32 row at px[base : base + m]."""
    acc = vzero()
    for j in range(0, m, LANES):
        acc = vadd(acc, vload_n(px, base + j, m - j))
    mu = vsum(acc) / np.float32(m)
    muv = vsplat_value(mu)
    acc = vzero()
    for j in range(0, m, LANES):
        d = vkeep_n(vsub(vload_n(px, base + j, m - j), muv), m - j)
        acc = vfma(d, d, acc)
    inv = np.float32(1.0) / np.float32(math.sqrt(vsum(acc) / np.float32(m) + np.float32(eps)))
    return mu, inv


@njit(cache=True, error_model="numpy")
def _vforward_rows(x, scale, bias, eps, y, lo, hi):
    m = x.shape[1]
    px, py, ps, pb = data_ptr(x), data_ptr(y), data_ptr(scale), data_ptr(bias)
    for i in range(lo, hi):
        base = i * m
        mu, inv = _vstats(px, base, m, eps)
        muv, invv = vsplat_value(mu), vsplat_value(inv)
        for j in range(0, m, LANES):
            xh = vmul(vsub(vload_n(px, base + j, m - j), muv), invv)
            vstore_n(py, base + j, vfma(xh, vload_n(ps, j, m - j), vload_n(pb, j, m - j)), m - j)


@njit(cache=True, error_model="numpy")
def _vbackward_rows(x, scale, eps, dy, dx, want_dx, part, lo, hi):
    m = x.shape[1]
    px, pg, pd, ps = data_ptr(x), data_ptr(dy), data_ptr(dx), data_ptr(scale)
    for j in range(m):
        part[0, j] = 0.0
        part[1, j] = 0.0
    mf = np.float32(m)
    for i in range(lo, hi):
        base = i * m
        mu, inv = _vstats(px, base, m, eps)
        for j in range(m):  # float64 partials: no reduction in the loop, it vectorises
            g = np.float64(dy[i, j])
            part[0, j] += g * np.float64((x[i, j] - mu) * inv)
            part[1, j] += g
        if not want_dx:
            continue
        muv, invv = vsplat_value(mu), vsplat_value(inv)
        a1 = vzero()  # sum of dxhat = dy * scale
        a2 = vzero()  # sum of dxhat * xhat
        for j in range(0, m, LANES):
            gs = vmul(vload_n(pg, base + j, m - j), vload_n(ps, j, m - j))
            a1 = vadd(a1, gs)
            a2 = vfma(gs, vmul(vsub(vload_n(px, base + j, m - j), muv), invv), a2)
        s1v, s2v = vsplat_value(vsum(a1)), vsplat_value(vsum(a2))
        kv, mv = vsplat_value(inv / mf), vsplat_value(mf)
        for j in range(0, m, LANES):
            gs = vmul(vload_n(pg, base + j, m - j), vload_n(ps, j, m - j))
            xh = vmul(vsub(vload_n(px, base + j, m - j), muv), invv)
            vstore_n(pd, base + j, vmul(kv, vsub(vsub(vmul(mv, gs), s1v), vmul(xh, s2v))), m - j)


# ---- the drivers: one per direction and threading; the row kernel follows the array types -----------

def forward_rows(x, scale, bias, eps, y, lo, hi):
    """Rows [lo, hi) of the forward pass: the vector rows for C-contiguous float32 arrays, else the
    float64-accumulating scalar rows."""


def backward_rows(x, scale, eps, dy, dx, want_dx, part, lo, hi):
    """Rows [lo, hi) of the backward pass (see ``forward_rows``)."""


def _vector_types(*arrays) -> bool:
    return all(isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C" for a in arrays)


@overload(forward_rows, jit_options=_J)
def _forward_rows_jit(x, scale, bias, eps, y, lo, hi):
    if _vector_types(x, scale, bias, y):
        return lambda x, scale, bias, eps, y, lo, hi: _vforward_rows(x, scale, bias, eps, y, lo, hi)
    return lambda x, scale, bias, eps, y, lo, hi: _forward_rows(x, scale, bias, eps, y, lo, hi)


@overload(backward_rows, jit_options=_J)
def _backward_rows_jit(x, scale, eps, dy, dx, want_dx, part, lo, hi):
    if _vector_types(x, scale, dy, dx):
        return lambda x, scale, eps, dy, dx, want_dx, part, lo, hi: _vbackward_rows(
            x, scale, eps, dy, dx, want_dx, part, lo, hi)
    return lambda x, scale, eps, dy, dx, want_dx, part, lo, hi: _backward_rows(
        x, scale, eps, dy, dx, want_dx, part, lo, hi)


@njit(**_J)
def forward_serial(x, scale, bias, eps, y, blocks):
    """y = scale * xhat + bias for every row of x (R, F)."""
    forward_rows(x, scale, bias, eps, y, 0, x.shape[0])


@njit(parallel=True, **_J)
def forward_threaded(x, scale, bias, eps, y, blocks):
    r = x.shape[0]
    for c in prange(blocks):
        forward_rows(x, scale, bias, eps, y, c * r // blocks, (c + 1) * r // blocks)


@njit(**_J)
def backward_serial(x, scale, eps, dy, dx, want_dx, parts, dscale, dbias):
    """dx, dscale, dbias of every row, on one thread, block by block (the threaded twin's sums)."""
    r, blocks = x.shape[0], parts.shape[0]
    for c in range(blocks):
        backward_rows(x, scale, eps, dy, dx, want_dx, parts[c], c * r // blocks, (c + 1) * r // blocks)
    _sum_blocks(parts, dscale, dbias)


@njit(parallel=True, **_J)
def backward_threaded(x, scale, eps, dy, dx, want_dx, parts, dscale, dbias):
    r, blocks = x.shape[0], parts.shape[0]
    for c in prange(blocks):
        backward_rows(x, scale, eps, dy, dx, want_dx, parts[c], c * r // blocks, (c + 1) * r // blocks)
    _sum_blocks(parts, dscale, dbias)


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


def _blocks(rows: int) -> int:
    return max(1, min(ROW_BLOCKS, rows))


def kernels_for(size: int, threaded: bool | None = None):
    """(forward, backward) kernels for an output of ``size`` elements."""
    if threaded is None:
        threaded = config.NUMBA_NUM_THREADS > 1 and size >= THREADED_MIN
    return (forward_threaded, backward_threaded) if threaded else (forward_serial, backward_serial)


def _bind_forward(node, xs, ps, y, ws, ctx):
    x2, y2 = _rows(xs[0]), _rows(y)
    scale, bias = ps
    eps = float(node.attrs.get("epsilon", 1e-5))
    blocks = _blocks(x2.shape[0])
    fwd, _ = kernels_for(y.size)

    def run():
        fwd(x2, scale, bias, eps, y2, blocks)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    x2, dy2 = _rows(xs[0]), _rows(dy)
    scale = ps[0]
    dscale, dbias = dps
    eps = float(node.attrs.get("epsilon", 1e-5))
    want_dx = dxs[0] is not None
    dx2 = _rows(dxs[0]) if want_dx else np.zeros((1, 1), y.dtype)
    parts = np.zeros((_blocks(x2.shape[0]), 2, x2.shape[1]))  # float64 partial sums per block
    _, bwd = kernels_for(y.size)

    def run():
        bwd(x2, scale, eps, dy2, dx2, want_dx, parts, dscale, dbias)
    return run


KERNELS = {"LayerNorm": OpKernels(_bind_forward, _bind_backward)}
