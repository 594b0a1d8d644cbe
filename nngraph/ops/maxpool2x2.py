"""Max pooling's common case, a 2 x 2 window at stride 2 without padding, one (H, W) plane at a time.

The windows tile the input. float32 runs LANES windows per step on vectors (the left and right
columns of a row pair split apart with shuffles, the gradient routed to each window's first
maximum by lane masks); the scalar loops (float64, the gradient checks) define the same thing.
Plain loops over LeNet's 7- and 14-wide rows never reached LLVM's vector code: 5x slower. pool.py
calls these for every plane the case applies to.
"""
from __future__ import annotations

from numba import types
from numba.extending import overload

from ..linalg.vec import (LANES, data_ptr, veven, vinterleave_hi, vinterleave_lo, vload_n, vmark, vmax, vodd,
                          vstore_n, vtake, vzero)


def max2x2_forward_plane(xp, yp):
    for a in range(yp.shape[0]):
        r0, r1, out = xp[2 * a], xp[2 * a + 1], yp[a]
        for b in range(yp.shape[1]):
            out[b] = max(max(r0[2 * b], r0[2 * b + 1]), max(r1[2 * b], r1[2 * b + 1]))


def max2x2_backward_plane(xp, gp, dp):
    """The gradient to the first maximum in row-major order, like the general path; dx rows and
    columns outside every window (odd sizes) are zero."""
    oh, ow = gp.shape
    dp[:, :] = 0
    for a in range(oh):
        for b in range(ow):
            best, bi, bj = xp[2 * a, 2 * b], 0, 0
            for i, j in ((0, 1), (1, 0), (1, 1)):
                if xp[2 * a + i, 2 * b + j] > best:
                    best, bi, bj = xp[2 * a + i, 2 * b + j], i, j
            dp[2 * a + bi, 2 * b + bj] = gp[a, b]


@overload(max2x2_forward_plane, jit_options=dict(cache=True))
def _max2x2_forward_jit(xp, yp):
    if xp.dtype == types.float32 and yp.dtype == types.float32:
        def vector(xp, yp):
            w, (oh, ow) = xp.shape[1], yp.shape
            px, py = data_ptr(xp), data_ptr(yp)
            for a in range(oh):
                r0 = 2 * a * w
                for b0 in range(0, ow, LANES):
                    n, c0, c1 = 2 * (ow - b0), r0 + 2 * b0, r0 + w + 2 * b0
                    lo0, hi0 = vload_n(px, c0, n), vload_n(px, c0 + LANES, n - LANES)
                    lo1, hi1 = vload_n(px, c1, n), vload_n(px, c1 + LANES, n - LANES)
                    m = vmax(vmax(veven(lo0, hi0), vodd(lo0, hi0)), vmax(veven(lo1, hi1), vodd(lo1, hi1)))
                    vstore_n(py, a * ow + b0, m, ow - b0)
        return vector
    return max2x2_forward_plane


@overload(max2x2_backward_plane, jit_options=dict(cache=True))
def _max2x2_backward_jit(xp, gp, dp):
    if xp.dtype == types.float32 and gp.dtype == types.float32 and dp.dtype == types.float32:
        def vector(xp, gp, dp):
            (h, w), (oh, ow) = xp.shape, gp.shape
            px, pg, pd = data_ptr(xp), data_ptr(gp), data_ptr(dp)
            for a in range(oh):
                r0 = 2 * a * w
                for b0 in range(0, ow, LANES):
                    n, c0, c1 = 2 * (ow - b0), r0 + 2 * b0, r0 + w + 2 * b0
                    lo0, hi0 = vload_n(px, c0, n), vload_n(px, c0 + LANES, n - LANES)
                    lo1, hi1 = vload_n(px, c1, n), vload_n(px, c1 + LANES, n - LANES)
                    v00, v01, v10, v11 = veven(lo0, hi0), vodd(lo0, hi0), veven(lo1, hi1), vodd(lo1, hi1)
                    m = vmax(vmax(v00, v01), vmax(v10, v11))
                    g = vload_n(pg, a * ow + b0, ow - b0)
                    t = vzero()
                    d00 = vtake(v00, m, g, t)
                    t = vmark(v00, m, t)
                    d01 = vtake(v01, m, g, t)
                    t = vmark(v01, m, t)
                    d10 = vtake(v10, m, g, t)
                    t = vmark(v10, m, t)
                    d11 = vtake(v11, m, g, t)
                    vstore_n(pd, c0, vinterleave_lo(d00, d01), n)
                    vstore_n(pd, c0 + LANES, vinterleave_hi(d00, d01), n - LANES)
                    vstore_n(pd, c1, vinterleave_lo(d10, d11), n)
                    vstore_n(pd, c1 + LANES, vinterleave_hi(d10, d11), n - LANES)
                if w > 2 * ow:
                    dp[2 * a, 2 * ow:] = 0
                    dp[2 * a + 1, 2 * ow:] = 0
            if h > 2 * oh:
                dp[2 * oh:, :] = 0
        return vector
    return max2x2_backward_plane


# ---- 1 x 2 windows at stride 2 along rows (a 1-D max pool of size 2: conv1d's usual follower) ------
# Every (sample, channel) row is one flat row here: the plane loop's per-plane views cost more than
# a 100-long row's work (conv1d 64->64 over 100 steps, batch 64: forward 1.4 ms, backward 2.4 ms).

def max1x2_forward_rows(x2, y2):
    """y2[r, b] = max(x2[r, 2b], x2[r, 2b + 1]) for (rows, W) and (rows, OW) arrays."""
    for r in range(y2.shape[0]):
        for b in range(y2.shape[1]):
            y2[r, b] = max(x2[r, 2 * b], x2[r, 2 * b + 1])


def max1x2_backward_rows(x2, g2, d2):
    """The gradient to each window's first maximum; columns past the last window get zero."""
    d2[:, :] = 0
    for r in range(g2.shape[0]):
        for b in range(g2.shape[1]):
            j = 2 * b + 1 if x2[r, 2 * b + 1] > x2[r, 2 * b] else 2 * b
            d2[r, j] = g2[r, b]


@overload(max1x2_forward_rows, jit_options=dict(cache=True))
def _max1x2_forward_jit(x2, y2):
    if x2.dtype == types.float32 and y2.dtype == types.float32:
        def vector(x2, y2):
            w, (rows, ow) = x2.shape[1], y2.shape
            px, py = data_ptr(x2), data_ptr(y2)
            for r in range(rows):
                for b0 in range(0, ow, LANES):
                    n, c0 = 2 * (ow - b0), r * w + 2 * b0
                    lo, hi = vload_n(px, c0, n), vload_n(px, c0 + LANES, n - LANES)
                    vstore_n(py, r * ow + b0, vmax(veven(lo, hi), vodd(lo, hi)), ow - b0)
        return vector
    return max1x2_forward_rows


@overload(max1x2_backward_rows, jit_options=dict(cache=True))
def _max1x2_backward_jit(x2, g2, d2):
    if x2.dtype == types.float32 and g2.dtype == types.float32 and d2.dtype == types.float32:
        def vector(x2, g2, d2):
            w, (rows, ow) = x2.shape[1], g2.shape
            px, pg, pd = data_ptr(x2), data_ptr(g2), data_ptr(d2)
            for r in range(rows):
                for b0 in range(0, ow, LANES):
                    n, c0 = 2 * (ow - b0), r * w + 2 * b0
                    lo, hi = vload_n(px, c0, n), vload_n(px, c0 + LANES, n - LANES)
                    v0, v1 = veven(lo, hi), vodd(lo, hi)
                    m = vmax(v0, v1)
                    g = vload_n(pg, r * ow + b0, ow - b0)
                    d0 = vtake(v0, m, g, vzero())
                    d1 = vtake(v1, m, g, vmark(v0, m, vzero()))
                    vstore_n(pd, c0, vinterleave_lo(d0, d1), n)
                    vstore_n(pd, c0 + LANES, vinterleave_hi(d0, d1), n - LANES)
                for c in range(2 * ow, w):
                    d2[r, c] = 0
        return vector
    return max1x2_backward_rows
