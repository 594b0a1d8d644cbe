"""Numba kernels of strided Conv (see conv.py for the equations; stride 1 uses conv_shift.py).

The patches of a few samples at a time are unfolded side by side into a buffer col (K, m P) of
about conv_bind.COLUMNS columns that stays in the core's cache, multiplied by W right there with the vector
GEMM kernels (nngraph.linalg), and the bias + activation epilogue runs on the outputs while they are
still hot. The backward pass re-unfolds the samples instead of keeping a (K, N P) matrix from the
forward pass, so nothing but x and y scales with the batch. (One sample at a time, a stride-2 3x3
conv with 7x7 outputs made products with 49 columns: dW = dz col^T ran at 23 GFLOP/s, at 66 with
eight samples' 392 columns.)

Threading: samples are split into one block per thread (``prange``); each block owns its col
buffer and its partial dW/db (summed after the loop), so there are no races. A first version
unfolded the whole batch and called BLAS once per layer: on this shared 2-core machine the hand-off
between OpenBLAS's threads and Numba's cost milliseconds per call (a 32x144x512 product ran at
0.2 GFLOPS with 2 BLAS threads under load), which one parallel region per layer avoids.
"""
from __future__ import annotations

import math

import numpy as np

from numba import njit, prange, uint64

from ..linalg.gemm import matmul_into
from ..linalg.gemm_nt import matmul_nt_into
from ..linalg.packed import matmul_panels
from ..linalg.rows import add_every, take_every
from .act_math import sigmoid
from .activations import RELU, SIGMOID, TANH


@njit(cache=True, inline="always")
def valid_range(n_out, stride, offset, size):
    """[lo, hi) of output positions o with 0 <= o * stride + offset < size."""
    lo = 0
    while lo < n_out and lo * stride + offset < 0:
        lo += 1
    hi = n_out
    while hi > lo and (hi - 1) * stride + offset >= size:
        hi -= 1
    return lo, hi


# Inner loops index flat views of x and col with unsigned offsets: in Numba every row view costs
# reference-count updates (the unfolding ran 10x slower than the copy itself), and a signed index
# gets a negative-index wraparound branch per element (4-D indexing: 2.7 ms to unfold 64 samples of
# a 3x3 stride-2 conv on 32x14x14, flat unsigned offsets: 1.3 ms).

@njit(cache=True)
def im2col_one(x, n, col, base, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    """col[(c, i, j), base + a OW + b] = x[n, c, a sh - pt + i dh, b sw - pl + j dw] (0 in the
    padding): sample n's patches in the columns from ``base``."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    cf = col.reshape(-1)
    q = col.shape[1]
    for c in range(c_):
        xc = (n * c_ + c) * h_ * w_
        for i in range(kh):
            a_lo, a_hi = valid_range(oh, sh, i * dh - pt, h_)
            for j in range(kw):
                k = (c * kh + i) * kw + j
                off = j * dw - pl
                b_lo, b_hi = valid_range(ow, sw, off, w_)
                b_hi = max(b_hi, b_lo)
                for a in range(oh):
                    o = uint64(k * q + base + a * ow)
                    if a < a_lo or a >= a_hi:
                        for b in range(ow):
                            cf[o + uint64(b)] = 0
                        continue
                    src = uint64(xc + (a * sh - pt + i * dh) * w_ + off)
                    for b in range(b_lo):
                        cf[o + uint64(b)] = 0
                    take_every(xf, src + uint64(b_lo * sw), sw, cf, o + uint64(b_lo), b_hi - b_lo)
                    for b in range(b_hi, ow):
                        cf[o + uint64(b)] = 0


@njit(cache=True)
def col2im_one(dcol, dx, n, base, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    """The adjoint of im2col_one: dx[n, c, h, w] = sum of the dcol entries (columns from ``base``)
    x[n, c, h, w] was copied to."""
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    df = dx.reshape(-1)
    cf = dcol.reshape(-1)
    q = dcol.shape[1]
    for c in range(c_):
        xc = (n * c_ + c) * h_ * w_
        for t in range(xc, xc + h_ * w_):
            df[t] = 0
        for i in range(kh):
            a_lo, a_hi = valid_range(oh, sh, i * dh - pt, h_)
            for j in range(kw):
                k = (c * kh + i) * kw + j
                off = j * dw - pl
                b_lo, b_hi = valid_range(ow, sw, off, w_)
                for a in range(a_lo, a_hi):
                    o = uint64(k * q + base + a * ow)
                    dst = uint64(xc + (a * sh - pt + i * dh) * w_ + off)
                    if b_hi > b_lo:
                        add_every(cf, o + uint64(b_lo), df, dst + uint64(b_lo * sw), sw, b_hi - b_lo)


# dW = dz col^T for more than this many columns of col^T (C kh kw) runs on col^T packed into panels
# (linalg.packed) instead of dot products along col's rows. One thread, dW of one sub-block: 64 x
# 392 x 800 (32->64 5x5) 61 -> 99 GFLOP/s, 128 x 392 x 1600 45 -> 113, 128 x 392 x 576 70 -> 110;
# at 288 columns both ran 105, at 75 the dot products won (130 vs 69).
PACKED_K = 384
# The forward product W col packs col too from PACKED_F filters on (each panel then serves 16+ row
# tiles): 64->128 3x3 stride 2 on 64 px, forward 58 -> 47 ms (1 thread), 37-56 -> 26 (2); with 64
# filters (32->64 5x5 stride 2 on 32 px) the packing was not paid back (9.5 -> 9.2-12 ms).
PACKED_F = 128

# ---- per-sample forward and backward ----------------------------------------------------------

# The activations the epilogues below (and conv_shift.py's) have a branch for; anything else is a
# bind-time error (conv_bind.py), never a silent fall-through to identity or tanh.
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")


@njit(cache=True)
def _epilogue(z, y, b, code):
    """y[f, p] = act(z[f, p] + b[f]) for one sample ((F, P) views; b is zeros without a bias)."""
    f_, npos = y.shape
    for f in range(f_):
        r, o = z[f], y[f]
        bias = b[f]
        if code == RELU:
            for p in range(npos):
                v = r[p] + bias
                o[p] = v if v > 0 else 0
        elif code == SIGMOID:
            for p in range(npos):
                o[p] = sigmoid(r[p] + bias)
        elif code == TANH:
            for p in range(npos):
                o[p] = math.tanh(r[p] + bias)
        else:
            for p in range(npos):
                o[p] = r[p] + bias


@njit(cache=True)
def _forward_block(x, w, b, code, y, col, z, pk, groups, geo, lo, hi):
    """Samples [lo, hi) in sub-blocks of ``sub`` samples (geo): their patches side by side in
    col (K, m P), one product per group into z (F, m P), then each sample's epilogue into y.
    From PACKED_K patch rows and PACKED_F filters col is packed into panels (``pk``) first."""
    kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, sub = geo  # sub: samples per product (conv_bind.sub_block)
    f_ = w.shape[0]
    fg, kg = f_ // groups, w.shape[1]
    npos = oh * ow
    for n0 in range(lo, hi, sub):
        m = min(sub, hi - n0)
        for j in range(m):
            im2col_one(x, n0 + j, col, j * npos, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow)
        q = m * npos
        for g in range(groups):
            if kg >= PACKED_K and fg >= PACKED_F:
                matmul_panels(w[g * fg:(g + 1) * fg], col[g * kg:(g + 1) * kg, :q], z[g * fg:(g + 1) * fg, :q], pk,
                              False)
            else:
                matmul_into(w[g * fg:(g + 1) * fg], col[g * kg:(g + 1) * kg, :q], z[g * fg:(g + 1) * fg, :q], False,
                            False)
        for j in range(m):
            _epilogue(z[:, j * npos:(j + 1) * npos], y[n0 + j], b, code)


@njit(cache=True)
def forward(x, w, b, code, y, cols, zs, pks, groups, geo):
    """y[n] = act(W * x[n] + b) for every sample (one thread); cols[0], zs[0], pks[0] are its buffers."""
    _forward_block(x, w, b, code, y, cols[0], zs[0], pks[0], groups, geo, 0, x.shape[0])


@njit(cache=True, parallel=True)
def forward_threaded(x, w, b, code, y, cols, zs, pks, groups, geo):
    n, t = x.shape[0], cols.shape[0]
    for c in prange(t):  # one block of samples per thread, each with its own buffers
        _forward_block(x, w, b, code, y, cols[c], zs[c], pks[c], groups, geo, c * n // t, (c + 1) * n // t)


@njit(cache=True)
def _backward_block(x, w, y, dy, code, col, zb, pk, dw, db, use_bias, dx, want_dx, groups, geo, lo, hi):
    """Partial dW, db of samples [lo, hi) (and their dx), in the sub-blocks of ``_forward_block``:
    dz of m samples side by side in zb (F, m P), dW += zb col^T, dcol = W^T zb (in col) -> dx."""
    kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow, sub = geo
    f_ = w.shape[0]
    fg, kg = f_ // groups, w.shape[1]
    npos = oh * ow
    dw[:] = 0
    db[:] = 0
    for n0 in range(lo, hi, sub):
        m = min(sub, hi - n0)
        for j in range(m):
            n = n0 + j
            dz = dy[n]
            r = y[n]
            zero = np.float32(0)  # (an int 0 would make e float64)
            for f in range(f_):
                g, v, o = dz[f], r[f], zb[f, j * npos:(j + 1) * npos]
                s = 0.0
                if code == RELU:
                    for p in range(npos):
                        e = g[p] if v[p] > 0 else zero
                        o[p] = e
                        s += e
                elif code == SIGMOID:
                    for p in range(npos):
                        e = g[p] * (v[p] * (1 - v[p]))
                        o[p] = e
                        s += e
                elif code == TANH:
                    for p in range(npos):
                        e = g[p] * (1 - v[p] * v[p])
                        o[p] = e
                        s += e
                else:
                    for p in range(npos):
                        o[p] = g[p]
                        s += g[p]
                if use_bias:
                    db[f] += s
            im2col_one(x, n, col, j * npos, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow)
        q = m * npos
        for gi in range(groups):
            if kg >= PACKED_K:  # col^T packed into panels: long dot products lose to the tile kernel
                matmul_panels(zb[gi * fg:(gi + 1) * fg, :q], col[gi * kg:(gi + 1) * kg, :q].T,
                              dw[gi * fg:(gi + 1) * fg], pk, True)
            else:
                matmul_nt_into(zb[gi * fg:(gi + 1) * fg, :q], col[gi * kg:(gi + 1) * kg, :q],
                               dw[gi * fg:(gi + 1) * fg], True)
        if want_dx:
            for gi in range(groups):
                matmul_into(w[gi * fg:(gi + 1) * fg].T, zb[gi * fg:(gi + 1) * fg, :q], col[gi * kg:(gi + 1) * kg, :q],
                            False, False)
            for j in range(m):
                col2im_one(col, dx, n0 + j, j * npos, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow)


@njit(cache=True)
def sum_partials(parts, out):
    """out = parts[0] + parts[1] + ... in block order (the fixed order keeps bits thread-independent;
    out may be parts[0] itself)."""
    out[...] = parts[0]
    for c in range(1, parts.shape[0]):
        out += parts[c]


@njit(cache=True)
def backward(x, w, y, dy, code, cols, zs, pks, dws, dbs, use_bias, dx, want_dx, groups, geo, dw_out, db_out):
    """dW, db (and dx when want_dx) of every sample, one thread: the same blocks and the same
    partial sums as backward_threaded, so the bits do not depend on the thread count."""
    n, t = x.shape[0], cols.shape[0]
    for c in range(t):
        _backward_block(x, w, y, dy, code, cols[c], zs[c], pks[c], dws[c], dbs[c], use_bias, dx, want_dx, groups, geo,
                        c * n // t, (c + 1) * n // t)
    sum_partials(dws, dw_out)
    sum_partials(dbs, db_out)


@njit(cache=True, parallel=True)
def backward_threaded(x, w, y, dy, code, cols, zs, pks, dws, dbs, use_bias, dx, want_dx, groups, geo, dw_out,
                      db_out):
    n, t = x.shape[0], cols.shape[0]
    for c in prange(t):  # partial dW/db per block, summed below: no races
        _backward_block(x, w, y, dy, code, cols[c], zs[c], pks[c], dws[c], dbs[c], use_bias, dx, want_dx, groups, geo,
                        c * n // t, (c + 1) * n // t)
    sum_partials(dws, dw_out)
    sum_partials(dbs, db_out)
