"""Numba kernels of strided Conv (see conv.py for the equations; stride 1 uses conv_shift.py).

For each sample the patches are unfolded into a small buffer col (K, P) that stays in the core's
cache, multiplied by W right there with the vector GEMM kernels (nngraph.linalg), and the bias +
activation epilogue runs on the sample's output while it is still hot. The backward pass re-unfolds the sample instead of keeping a (K, N P) matrix from the
forward pass, so nothing but x and y scales with the batch.

Threading: samples are split into one block per thread (``prange``); each block owns its col
buffer and its partial dW/db (summed after the loop), so there are no races. A first version
unfolded the whole batch and called BLAS once per layer: on this shared 2-core machine the hand-off
between OpenBLAS's threads and Numba's cost milliseconds per call (a 32x144x512 product ran at
0.2 GFLOPS with 2 BLAS threads under load), which one parallel region per layer avoids.
"""
from __future__ import annotations

import math

from numba import njit, prange

from ..linalg.gemm import matmul_into
from ..linalg.gemm_nt import matmul_nt_into
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


# Inner loops index arrays directly instead of taking row views: in Numba every view costs
# reference-count updates, which made the unfolding 10x slower than the copy itself.

@njit(cache=True)
def im2col_one(x, n, col, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    """col[(c, i, j), a OW + b] = x[n, c, a sh - pt + i dh, b sw - pl + j dw] (0 in the padding)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    for c in range(c_):
        for i in range(kh):
            a_lo, a_hi = valid_range(oh, sh, i * dh - pt, h_)
            for j in range(kw):
                k = (c * kh + i) * kw + j
                off = j * dw - pl
                b_lo, b_hi = valid_range(ow, sw, off, w_)
                b_hi = max(b_hi, b_lo)
                for a in range(oh):
                    o = a * ow
                    if a < a_lo or a >= a_hi:
                        for b in range(ow):
                            col[k, o + b] = 0
                        continue
                    h = a * sh - pt + i * dh
                    for b in range(b_lo):
                        col[k, o + b] = 0
                    for b in range(b_lo, b_hi):
                        col[k, o + b] = x[n, c, h, b * sw + off]
                    for b in range(b_hi, ow):
                        col[k, o + b] = 0


@njit(cache=True)
def col2im_one(dcol, dx, n, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    """The adjoint of im2col_one: dx[n, c, h, w] = sum of the dcol entries x[n, c, h, w] was copied to."""
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    for c in range(c_):
        for h in range(h_):
            for w in range(w_):
                dx[n, c, h, w] = 0
        for i in range(kh):
            a_lo, a_hi = valid_range(oh, sh, i * dh - pt, h_)
            for j in range(kw):
                k = (c * kh + i) * kw + j
                off = j * dw - pl
                b_lo, b_hi = valid_range(ow, sw, off, w_)
                for a in range(a_lo, a_hi):
                    h = a * sh - pt + i * dh
                    o = a * ow
                    for b in range(b_lo, b_hi):
                        dx[n, c, h, b * sw + off] += dcol[k, o + b]


# ---- small dense products, register-blocked by four rows ---------------------------------------

# ---- per-sample forward and backward ----------------------------------------------------------

# The activations the epilogues below (and conv_shift.py's) have a branch for; anything else is a
# bind-time error (conv_bind.py), never a silent fall-through to identity or tanh.
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")


@njit(cache=True)
def _epilogue(z, b, use_bias, code):
    """In place on one sample's (F, P) output: z := act(z + b[f])."""
    f_, npos = z.shape
    for f in range(f_):
        r = z[f]
        bias = b[f]  # zeros without a bias
        if code == RELU:
            for p in range(npos):
                v = r[p] + bias
                r[p] = v if v > 0 else 0
        elif code == SIGMOID:
            for p in range(npos):
                v = r[p] + bias
                r[p] = sigmoid(v)
        elif code == TANH:
            for p in range(npos):
                r[p] = math.tanh(r[p] + bias)
        else:
            for p in range(npos):
                r[p] += bias


@njit(cache=True)
def _forward_block(x, w, b, use_bias, code, y, col, groups, geo, lo, hi):
    kh, kw, sh, sw, dh, dw, pt, pl, oh, ow = geo
    f_ = w.shape[0]
    fg, kg = f_ // groups, w.shape[1]
    for n in range(lo, hi):
        im2col_one(x, n, col, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow)
        for g in range(groups):
            matmul_into(w[g * fg:(g + 1) * fg], col[g * kg:(g + 1) * kg], y[n, g * fg:(g + 1) * fg], False,
                        False)
        _epilogue(y[n], b, use_bias, code)


@njit(cache=True)
def forward(x, w, b, use_bias, code, y, cols, groups, geo):
    """y[n] = act(W * x[n] + b) for every sample (one thread); cols[0] is the patch buffer."""
    _forward_block(x, w, b, use_bias, code, y, cols[0], groups, geo, 0, x.shape[0])


@njit(cache=True, parallel=True)
def forward_threaded(x, w, b, use_bias, code, y, cols, groups, geo):
    n, t = x.shape[0], cols.shape[0]
    for c in prange(t):  # one block of samples per thread, each with its own patch buffer
        _forward_block(x, w, b, use_bias, code, y, cols[c], groups, geo, c * n // t, (c + 1) * n // t)


@njit(cache=True)
def _backward_block(x, w, y, dy, code, col, dw, db, use_bias, dx, want_dx, groups, geo, lo, hi):
    kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow = geo
    f_ = w.shape[0]
    fg, kg = f_ // groups, w.shape[1]
    npos = oh * ow
    dw[:] = 0
    db[:] = 0
    for n in range(lo, hi):
        dz = dy[n]  # dy may be clobbered: dz = dy * act'(y) is formed in place
        r = y[n]
        for f in range(f_):
            g, v = dz[f], r[f]
            s = 0.0
            if code == RELU:
                for p in range(npos):
                    if v[p] <= 0:
                        g[p] = 0
                    s += g[p]
            elif code == SIGMOID:
                for p in range(npos):
                    g[p] *= v[p] * (1 - v[p])
                    s += g[p]
            elif code == TANH:
                for p in range(npos):
                    g[p] *= 1 - v[p] * v[p]
                    s += g[p]
            else:
                for p in range(npos):
                    s += g[p]
            if use_bias:
                db[f] += s
        im2col_one(x, n, col, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow)
        for gi in range(groups):
            matmul_nt_into(dz[gi * fg:(gi + 1) * fg], col[gi * kg:(gi + 1) * kg], dw[gi * fg:(gi + 1) * fg], True)
        if want_dx:
            for gi in range(groups):
                matmul_into(w[gi * fg:(gi + 1) * fg].T, dz[gi * fg:(gi + 1) * fg], col[gi * kg:(gi + 1) * kg], False,
                            False)
            col2im_one(col, dx, n, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow)


@njit(cache=True)
def sum_partials(parts, out):
    """out = parts[0] + parts[1] + ... in block order (the fixed order keeps bits thread-independent;
    out may be parts[0] itself)."""
    out[...] = parts[0]
    for c in range(1, parts.shape[0]):
        out += parts[c]


@njit(cache=True)
def backward(x, w, y, dy, code, cols, dws, dbs, use_bias, dx, want_dx, groups, geo, dw_out, db_out):
    """dW, db (and dx when want_dx) of every sample, one thread: the same blocks and the same
    partial sums as backward_threaded, so the bits do not depend on the thread count."""
    n, t = x.shape[0], cols.shape[0]
    for c in range(t):
        _backward_block(x, w, y, dy, code, cols[c], dws[c], dbs[c], use_bias, dx, want_dx, groups, geo,
                        c * n // t, (c + 1) * n // t)
    sum_partials(dws, dw_out)
    sum_partials(dbs, db_out)


@njit(cache=True, parallel=True)
def backward_threaded(x, w, y, dy, code, cols, dws, dbs, use_bias, dx, want_dx, groups, geo, dw_out, db_out):
    n, t = x.shape[0], cols.shape[0]
    for c in prange(t):  # partial dW/db per block, summed below: no races
        _backward_block(x, w, y, dy, code, cols[c], dws[c], dbs[c], use_bias, dx, want_dx, groups, geo,
                        c * n // t, (c + 1) * n // t)
    sum_partials(dws, dw_out)
    sum_partials(dbs, db_out)
