"""Stride-1 convolution without im2col: products over shifted rows of the padded image.

With stride 1 the patch matrix needs no copy. Pad one sample into xp (C planes of Hp x Wp, laid out
flat) and compute the output on the "wide" grid of OH rows x Wp columns (q = a Wp + b): tap
k = (c, i, j) then reads the contiguous run xp[off_k + q], off_k = c Hp Wp + i dh Wp + j dw, so
    zw[f, q]  = sum_k W[f, k] xp[off_k + q]                      (forward; columns b >= OW are
                                                                   discarded by the epilogue)
    dW[f, k] += sum_q dzw[f, q] xp[off_k + q]                    (dzw = dz on the wide grid,
    dxp[off_k + q] += sum_f W[f, k] dzw[f, q]                      zero in columns b >= OW)
and dx is the interior of dxp. Every product streams contiguous rows that stay in L1/L2 for the
sample, four rows of W (or of dz) per load; the wide grid costs (Wp - OW) / OW extra columns
(e.g. 18/14 for a 5x5 'same' conv on 14x14), far less than the unfolding it replaces.
Each sample has its own padded copy (xps[n]), written by the forward pass and read again by the
backward one; the padding stays zero forever: only the interior is ever written.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..linalg.gemm import gemm_tables
from ..linalg.gemm_nt import gemm_nt_tables
from ..linalg.rows import bias_relu_rows, copy_rows, relu_grad_rows, transpose_rows
from .act_math import sigmoid
from .activations import IDENTITY, RELU, SIGMOID
from .conv_kernels import sum_partials


def offsets(c: int, kh: int, kw: int, dh: int, dw: int, hp: int, wp: int) -> np.ndarray:
    """off_k for k = (c, i, j) in W's column order."""
    ci, ii, jj = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    return (ci * hp * wp + ii * dh * wp + jj * dw).reshape(-1).astype(np.int64)


@njit(cache=True)
def _pad_in(x, n, xp, pt, pl, hp, wp):
    """Sample n's interior into the padded planes of xp (the padding stays zero)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    for c in range(c_):
        copy_rows(x[n, c].reshape(h_ * w_), 0, w_, xp, c * hp * wp + pt * wp + pl, wp, h_, w_)


# The sigmoid and tanh epilogues (ReLU and identity, the common cases, take linalg.rows' masked
# vectors): one call per plane with the activation chosen outside the loops, so each loop is
# branch-free. No fast-math (spelled out, so they do not inherit a caller's): with "contract" or
# "reassoc" LLVM may optimise the copy linked into a caller differently from the function's own
# library, and a process that compiled the kernels would train other bits than one that loaded them
# from the cache (rnn_math.JIT; tests/test_cache_bits.py). The running sum stays scalar.

@njit(cache=True, fastmath=False)
def _bias_act_plane(zw, r0, wp, bias, code, dst, ow):
    """dst[a * ow + c] = act(zw[r0 + a * wp + c] + bias) for act sigmoid or tanh: wide grid -> (OH, OW)."""
    oh = dst.shape[0] // ow
    for a in range(oh):
        src, out = zw[r0 + a * wp:r0 + a * wp + ow], dst[a * ow:(a + 1) * ow]
        if code == SIGMOID:
            for i in range(ow):
                v = src[i] + bias
                out[i] = sigmoid(v)
        else:
            for i in range(ow):
                out[i] = math.tanh(src[i] + bias)


@njit(cache=True, fastmath=False)
def _act_grad_plane(dy, y, code, zw, r0, wp, ow):
    """zw[r0 + a * wp + c] = dy act'(y) at (a, c) for act sigmoid or tanh (act' in terms of the
    output y); returns its sum."""
    oh = dy.shape[0] // ow
    s = zw.dtype.type(0)
    for a in range(oh):
        g_, y_, out = dy[a * ow:(a + 1) * ow], y[a * ow:(a + 1) * ow], zw[r0 + a * wp:r0 + a * wp + ow]
        if code == SIGMOID:
            for i in range(ow):
                g = g_[i] * y_[i] * (1 - y_[i])
                out[i] = g
                s += g
        else:
            for i in range(ow):
                g = g_[i] * (1 - y_[i] * y_[i])
                out[i] = g
                s += g
    return s


@njit(cache=True)
def _forward_block(x, w, b, use_bias, code, y, xps, zw, offs, arow, groups, pt, pl, hp, wp, ow, lo, hi):
    """Samples lo..hi-1: zw (F rows of length L, flat) = W X on the wide grid, then the epilogue."""
    f_ = y.shape[1]
    kg = w.shape[0] // f_
    fg = f_ // groups
    oh = y.shape[2] // ow
    L = zw.shape[0] // f_
    q = oh * wp
    for n in range(lo, hi):
        xp = xps[n]
        _pad_in(x, n, xp, pt, pl, hp, wp)
        for g in range(groups):
            gemm_tables(kg, w, arow[g * fg:(g + 1) * fg], 1, xp, offs[g * kg:(g + 1) * kg], 0,
                        zw, g * fg * L, L, fg, q, False)
        for f in range(f_):  # epilogue: wide grid -> (OH, OW), + bias (zeros without one), activation
            if code == RELU or code == IDENTITY:
                bias_relu_rows(zw, f * L, wp, y[n, f], 0, ow, oh, ow, b[f], code == RELU)
            else:
                _bias_act_plane(zw, f * L, wp, b[f], code, y[n, f], ow)


@njit(cache=True)
def forward(x, w, b, use_bias, code, y, xps, zws, offs, arow, groups, pt, pl, hp, wp, ow):
    """Every sample on one thread (zws[0] is its scratch)."""
    _forward_block(x, w, b, use_bias, code, y, xps, zws[0], offs, arow, groups, pt, pl, hp, wp, ow, 0,
                   x.shape[0])


@njit(cache=True, parallel=True)
def forward_threaded(x, w, b, use_bias, code, y, xps, zws, offs, arow, groups, pt, pl, hp, wp, ow):
    n, t = x.shape[0], zws.shape[0]
    for c in prange(t):  # blocks of samples on the threads, each with its own scratch
        _forward_block(x, w, b, use_bias, code, y, xps, zws[c], offs, arow, groups, pt, pl, hp, wp, ow,
                       c * n // t, (c + 1) * n // t)


@njit(cache=True)
def _backward_block(x, y, dy, code, xps, zw, dzt, dxp, dwt, db, use_bias, dx, want_dx, offs, qrow,
                    wperm, xrow, xoffs, groups, front, pt, pl, hp, wp, ow, nt, dzrow, lo, hi):
    """Samples lo..hi-1: dwt and db accumulate; dx when want_dx (see module docstring). dwt is dW^T
    (K, F) from the tile kernel over transposed dz, or with ``nt`` dW (F, K) from dot products of
    dz rows (dzrow) with shifted input rows: for few filters, where the tile's 32 columns would
    mostly be empty."""
    f_ = dy.shape[1]
    kg = offs.shape[0] // groups
    fg = f_ // groups
    oh = y.shape[2] // ow
    L = zw.shape[0] // f_
    q = oh * wp
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    cg = c_ // groups
    k2 = xoffs.shape[0] // groups
    dwt[:] = 0
    db[:] = 0
    zw[:] = 0   # the front pad, columns b >= OW and the tail stay zero: they must not contribute
    dzt[:] = 0
    for n in range(lo, hi):
        for f in range(f_):  # dz = dy act'(y) onto the wide grid, after the front pad
            if code == RELU or code == IDENTITY:
                s = relu_grad_rows(dy[n, f], 0, ow, y[n, f], 0, ow, zw, f * L + front, wp, oh, ow, code == RELU)
            else:
                s = _act_grad_plane(dy[n, f], y[n, f], code, zw, f * L + front, wp, ow)
            if use_bias:
                db[f] += s
        if not nt:  # and transposed (positions x filters) for the dW product
            transpose_rows(zw, front, L, dzt, 0, f_, f_, q)
        xp = xps[n]  # padded by the forward pass
        for gi in range(groups):
            if nt:  # dW[f, k] += sum_q dz[f, q] xp[off_k + q]
                gemm_nt_tables(q, zw, dzrow[gi * fg:(gi + 1) * fg], xp, offs[gi * kg:(gi + 1) * kg],
                               dwt, gi * fg * kg, kg, fg, kg, True)
            else:   # dW^T[k, f] += sum_q xp[off_k + q] dz[f, q]
                gemm_tables(q, xp, offs[gi * kg:(gi + 1) * kg], 1, dzt, qrow, gi * fg,
                            dwt, gi * fg, f_, kg, fg, True)
        if want_dx:
            for gi in range(groups):  # dxp[c, q'] = sum_(f,i,j) W[f, c, i, j] dz[f, q' - i dh Wp - j dw]
                gemm_tables(k2, wperm, xrow[gi * cg:(gi + 1) * cg], 1, zw, xoffs[gi * k2:(gi + 1) * k2], pt * wp,
                            dxp, gi * cg * hp * wp + pt * wp, hp * wp, cg, h_ * wp, False)
            for c in range(c_):  # the interior of dxp
                copy_rows(dxp, c * hp * wp + pt * wp + pl, wp, dx[n, c].reshape(h_ * w_), 0, w_, h_, w_)


@njit(cache=True)
def _transpose_into(dwt, dw_out):
    """dw_out[f, k] = dwt[k * F + f]."""
    f_, k_ = dw_out.shape
    for k in range(k_):
        for f in range(f_):
            dw_out[f, k] = dwt[k * f_ + f]


@njit(cache=True)
def _store_dw(dwt, nt, dw_out):
    if nt:
        dw_out[:, :] = dwt.reshape(dw_out.shape)
    else:
        _transpose_into(dwt, dw_out)


@njit(cache=True)
def backward(x, y, dy, code, xps, zws, dzts, dxps, dwts, dbs, use_bias, dx, want_dx, offs, qrow, wperm, xrow,
             xoffs, groups, front, pt, pl, hp, wp, ow, nt, dzrow, dw_out, db_out):
    """dW, db (and dx when want_dx) over every sample on one thread: the same blocks and partial
    sums as backward_threaded, so the bits do not depend on the thread count."""
    n, t = x.shape[0], zws.shape[0]
    for c in range(t):
        _backward_block(x, y, dy, code, xps, zws[c], dzts[c], dxps[c], dwts[c], dbs[c], use_bias, dx, want_dx,
                        offs, qrow, wperm, xrow, xoffs, groups, front, pt, pl, hp, wp, ow, nt, dzrow,
                        c * n // t, (c + 1) * n // t)
    sum_partials(dwts, dwts[0])
    _store_dw(dwts[0], nt, dw_out)
    sum_partials(dbs, db_out)


@njit(cache=True, parallel=True)
def backward_threaded(x, y, dy, code, xps, zws, dzts, dxps, dwts, dbs, use_bias, dx, want_dx, offs, qrow, wperm,
                      xrow, xoffs, groups, front, pt, pl, hp, wp, ow, nt, dzrow, dw_out, db_out):
    n, t = x.shape[0], zws.shape[0]
    for c in prange(t):  # partial dW/db per block, summed below in a fixed order: no races
        _backward_block(x, y, dy, code, xps, zws[c], dzts[c], dxps[c], dwts[c], dbs[c], use_bias, dx, want_dx,
                        offs, qrow, wperm, xrow, xoffs, groups, front, pt, pl, hp, wp, ow, nt, dzrow,
                        c * n // t, (c + 1) * n // t)
    sum_partials(dwts, dwts[0])
    _store_dw(dwts[0], nt, dw_out)
    sum_partials(dbs, db_out)
