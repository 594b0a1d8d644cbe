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
