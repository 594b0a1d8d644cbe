"""Pooling kernels (equations in pool.py): bodies over a block [lo, hi) of (sample, channel) planes,
serial and threaded drivers, and their bindings."""
from __future__ import annotations

from numba import config, njit, prange

from .activations_kernels import CHUNKS
from .base import OpKernels, noop
from .maxpool2x2 import max1x2_backward_rows, max1x2_forward_rows, max2x2_backward_plane, max2x2_forward_plane
from .pool import as_planes, geometry


# Pooling is memory-bound and cheap: threads only for big tensors (the pool wake-up and barrier
# cost more than a small pass on a loaded 2-core machine).
THREADED_MIN = 1 << 18


def threaded(elements: int) -> bool:
    """Whether a pooling kernel over ``elements`` input values runs on Numba's threads."""
    return config.NUMBA_NUM_THREADS > 1 and elements >= THREADED_MIN


@njit(cache=True, inline="always")
def _clip_window(a, stride, pad, k, n):
    """[lo, hi) of the input rows (or columns) output position ``a`` reads, padding cut off."""
    start = a * stride - pad
    return max(start, 0), min(start + k, n)


@njit(cache=True, inline="always")
def _max_window(xp, h_lo, h_hi, w_lo, w_hi):
    """The window's maximum (tracking its position, as the backward must, costs 35% more)."""
    m = xp[h_lo, w_lo]
    for h in range(h_lo, h_hi):
        for w in range(w_lo, w_hi):
            if xp[h, w] > m:
                m = xp[h, w]
    return m


@njit(cache=True, inline="always")
def _argmax_window(xp, h_lo, h_hi, w_lo, w_hi):
    """Position of the first maximum in a window (forward and backward must agree on it)."""
    bh, bw = h_lo, w_lo
    m = xp[h_lo, w_lo]
    for h in range(h_lo, h_hi):
        for w in range(w_lo, w_hi):
            if xp[h, w] > m:
                m = xp[h, w]
                bh, bw = h, w
    return bh, bw


@njit(cache=True, inline="always")
def _tiles_2x2(kh, kw, sh, sw, pt, pl, h, w, oh, ow):
    """Whether the windows are 2 x 2 at stride 2 with no padding on any side (maxpool2x2.py's case)."""
    return kh == kw == sh == sw == 2 and pt == pl == 0 and 2 * oh <= h and 2 * ow <= w


@njit(cache=True, inline="always")
def _row_pairs(kh, kw, sh, sw, pt, pl, h, w, oh, ow):
    """Whether the windows are 1 x 2 at stride (1, 2) with no padding (a 1-D pool of size 2)."""
    return kh == sh == 1 and kw == sw == 2 and pt == pl == 0 and oh == h and 2 * ow <= w


@njit(cache=True)
def _maxpool_forward_planes(x, y, kh, kw, sh, sw, pt, pl, lo, hi):
    n_, c_, h_, w_ = x.shape
    oh, ow = y.shape[2], y.shape[3]
    if _row_pairs(kh, kw, sh, sw, pt, pl, h_, w_, oh, ow):  # all the block's rows as one array
        max1x2_forward_rows(x.reshape(-1, w_)[lo * h_:hi * h_], y.reshape(-1, ow)[lo * oh:hi * oh])
        return
    fast = _tiles_2x2(kh, kw, sh, sw, pt, pl, h_, w_, oh, ow)
    for q in range(lo, hi):
        n, c = q // c_, q % c_
        xp, yp = x[n, c], y[n, c]
        if fast:
            max2x2_forward_plane(xp, yp)
            continue
        for a in range(oh):
            h_lo, h_hi = _clip_window(a, sh, pt, kh, h_)
            for b in range(ow):
                w_lo, w_hi = _clip_window(b, sw, pl, kw, w_)
                yp[a, b] = _max_window(xp, h_lo, h_hi, w_lo, w_hi)


@njit(cache=True)
def maxpool_forward(x, y, kh, kw, sh, sw, pt, pl):
    _maxpool_forward_planes(x, y, kh, kw, sh, sw, pt, pl, 0, x.shape[0] * x.shape[1])


@njit(cache=True, parallel=True)
def maxpool_forward_threaded(x, y, kh, kw, sh, sw, pt, pl):
    m, k = x.shape[0] * x.shape[1], CHUNKS
    for c in prange(k):  # planes are disjoint: no races
        _maxpool_forward_planes(x, y, kh, kw, sh, sw, pt, pl, c * m // k, (c + 1) * m // k)


@njit(cache=True)
def _maxpool_backward_planes(x, dy, dx, kh, kw, sh, sw, pt, pl, lo, hi):
    n_, c_, h_, w_ = x.shape
    oh, ow = dy.shape[2], dy.shape[3]
    if _row_pairs(kh, kw, sh, sw, pt, pl, h_, w_, oh, ow):
        max1x2_backward_rows(x.reshape(-1, w_)[lo * h_:hi * h_], dy.reshape(-1, ow)[lo * oh:hi * oh],
                             dx.reshape(-1, w_)[lo * h_:hi * h_])
        return
    fast = _tiles_2x2(kh, kw, sh, sw, pt, pl, h_, w_, oh, ow)
    for q in range(lo, hi):
        n, c = q // c_, q % c_
        xp, gp, dp = x[n, c], dy[n, c], dx[n, c]
        if fast:
            max2x2_backward_plane(xp, gp, dp)
            continue
        for h in range(h_):
            for w in range(w_):
                dp[h, w] = 0
        for a in range(oh):
            h_lo, h_hi = _clip_window(a, sh, pt, kh, h_)
            for b in range(ow):
                w_lo, w_hi = _clip_window(b, sw, pl, kw, w_)
                bh, bw = _argmax_window(xp, h_lo, h_hi, w_lo, w_hi)
                dp[bh, bw] += gp[a, b]  # the gradient goes to the (first) maximum, as forward chose it


@njit(cache=True)
def maxpool_backward(x, dy, dx, kh, kw, sh, sw, pt, pl):
    _maxpool_backward_planes(x, dy, dx, kh, kw, sh, sw, pt, pl, 0, x.shape[0] * x.shape[1])


@njit(cache=True, parallel=True)
def maxpool_backward_threaded(x, dy, dx, kh, kw, sh, sw, pt, pl):
    m, k = x.shape[0] * x.shape[1], CHUNKS
    for c in prange(k):  # planes are disjoint: no races
        _maxpool_backward_planes(x, dy, dx, kh, kw, sh, sw, pt, pl, c * m // k, (c + 1) * m // k)


@njit(cache=True)
def _avgpool_forward_planes(x, y, kh, kw, sh, sw, pt, pl, lo, hi):
    n_, c_, h_, w_ = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for q in range(lo, hi):
        n, c = q // c_, q % c_
        xp, yp = x[n, c], y[n, c]
        for a in range(oh):
            h_lo, h_hi = _clip_window(a, sh, pt, kh, h_)
            for b in range(ow):
                w_lo, w_hi = _clip_window(b, sw, pl, kw, w_)
                s = 0.0
                for h in range(h_lo, h_hi):
                    for w in range(w_lo, w_hi):
                        s += xp[h, w]
                yp[a, b] = s / ((h_hi - h_lo) * (w_hi - w_lo))


@njit(cache=True)
def avgpool_forward(x, y, kh, kw, sh, sw, pt, pl):
    _avgpool_forward_planes(x, y, kh, kw, sh, sw, pt, pl, 0, x.shape[0] * x.shape[1])


@njit(cache=True, parallel=True)
def avgpool_forward_threaded(x, y, kh, kw, sh, sw, pt, pl):
    m, k = x.shape[0] * x.shape[1], CHUNKS
    for c in prange(k):  # planes are disjoint: no races
        _avgpool_forward_planes(x, y, kh, kw, sh, sw, pt, pl, c * m // k, (c + 1) * m // k)


@njit(cache=True)
def _avgpool_backward_planes(dy, dx, kh, kw, sh, sw, pt, pl, lo, hi):
    n_, c_, h_, w_ = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for q in range(lo, hi):
        n, c = q // c_, q % c_
        gp, dp = dy[n, c], dx[n, c]
        for h in range(h_):
            for w in range(w_):
                dp[h, w] = 0
        for a in range(oh):
            h_lo, h_hi = _clip_window(a, sh, pt, kh, h_)
            for b in range(ow):
                w_lo, w_hi = _clip_window(b, sw, pl, kw, w_)
                v = gp[a, b] / ((h_hi - h_lo) * (w_hi - w_lo))
                for h in range(h_lo, h_hi):
                    for w in range(w_lo, w_hi):
                        dp[h, w] += v


@njit(cache=True)
def avgpool_backward(dy, dx, kh, kw, sh, sw, pt, pl):
    _avgpool_backward_planes(dy, dx, kh, kw, sh, sw, pt, pl, 0, dy.shape[0] * dy.shape[1])


@njit(cache=True, parallel=True)
def avgpool_backward_threaded(dy, dx, kh, kw, sh, sw, pt, pl):
    m, k = dy.shape[0] * dy.shape[1], CHUNKS
    for c in prange(k):  # planes are disjoint: no races
        _avgpool_backward_planes(dy, dx, kh, kw, sh, sw, pt, pl, c * m // k, (c + 1) * m // k)


@njit(cache=True)
def global_avg_forward(x, y):
    m, k = x.shape
    inv = 1.0 / k
    for r in range(m):
        s = 0.0
        for j in range(k):
            s += x[r, j]
        y[r] = s * inv


@njit(cache=True)
def global_avg_backward(dy, dx):
    m, k = dx.shape
    inv = 1.0 / k
    for r in range(m):
        v = dy[r] * inv
        for j in range(k):
            dx[r, j] = v


def _bind_global_forward(node, xs, ps, y, ws, ctx):
    x2 = xs[0].reshape(xs[0].shape[0] * xs[0].shape[1], -1)  # one row per (sample, channel) plane
    y1 = y.reshape(-1)

    def run():
        global_avg_forward(x2, y1)
    return run


def _bind_global_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    dx2 = dxs[0].reshape(xs[0].shape[0] * xs[0].shape[1], -1)
    dy1 = dy.reshape(-1)

    def run():
        global_avg_backward(dy1, dx2)
    return run


def _kernels(kind: str) -> OpKernels:
    is_max = kind == "MaxPool"

    def bind_forward(node, xs, ps, y, ws, ctx):
        g = geometry(node, xs[0].shape[1:])
        x, y4, args = as_planes(xs[0]), as_planes(y), g["args"]  # 1-D: (N, C, 1, L) views
        par = threaded(x.size)
        fwd = (maxpool_forward_threaded if par else maxpool_forward) if is_max else \
            (avgpool_forward_threaded if par else avgpool_forward)

        def run():
            fwd(x, y4, *args)
        return run

    def bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
        dx = dxs[0]
        if dx is None:
            return noop
        g = geometry(node, xs[0].shape[1:])
        x, dy4, dx4, args = as_planes(xs[0]), as_planes(dy), as_planes(dx), g["args"]
        par = threaded(x.size)
        if is_max:
            max_bwd = maxpool_backward_threaded if par else maxpool_backward

            def run_max():
                max_bwd(x, dy4, dx4, *args)
            return run_max
        avg_bwd = avgpool_backward_threaded if par else avgpool_backward

        def run_avg():
            avg_bwd(dy4, dx4, *args)
        return run_avg

    return OpKernels(bind_forward, bind_backward)


KERNELS = {"MaxPool": _kernels("MaxPool"), "AveragePool": _kernels("AveragePool"),
           "GlobalAveragePool": OpKernels(_bind_global_forward, _bind_global_backward)}
