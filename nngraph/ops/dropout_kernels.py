"""Dropout's kernels (equations and the hash in dropout.py).

Forward (training, rate > 0):  y_ij = x_ij * m_ij;  backward: dx_ij = dy_ij * m_ij, with
m_ij = 1 / (1 - rate) if u(seed, step, layer, first + i, j) >= rate else 0. The backward recomputes
the mask from the same counters (the trainer does not change them between a pass's forward and
backward), so no buffer holds it. Each element's mask bit is its own hash, so the prange split over
samples gives the same bits at any thread count. Inference mode or rate == 0: plain copies.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .base import OpKernels, noop
from .dropout import GOLDEN, MIX1, MIX2, as_u64, layer_key

_G = np.uint64(GOLDEN)
_M1 = np.uint64(MIX1)
_M2 = np.uint64(MIX2)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_INV53 = 2.0 ** -53


@njit(cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def _absorb(h, v):
    return _mix((h ^ v) + _G)


@njit(cache=True, parallel=True)
def _masked(x, y, vals, seed, layer, counters, rate):
    """y[i, j] = x[i, j] * (vals[1] if u_ij >= rate else vals[0]) for (n, f) views x, y."""
    n, f = x.shape
    step = np.uint64(counters[0])
    first = np.uint64(counters[1])
    base = _absorb(_absorb(_absorb(_ZERO, seed), step), layer)
    for i in prange(n):
        key = _absorb(base, first + np.uint64(i))
        z = key
        for j in range(f):
            z = z + _G  # key + (j + 1) G
            u = np.float64(_mix(z) >> _S11) * _INV53
            m = vals[1] if u >= rate else vals[0]
            y[i, j] = x[i, j] * m


def _bind(node, src, dst, ctx):
    """The closure y = x * mask (training, rate > 0) or y = x (otherwise) on (batch, ...) buffers."""
    rate = float(node.attrs["rate"])
    if not ctx.training or rate == 0.0:
        def copy():
            np.copyto(dst, src)
        return copy
    n = src.shape[0]
    x2, y2 = src.reshape(n, -1), dst.reshape(n, -1)
    assert np.shares_memory(y2, dst), "dropout needs contiguous buffers"
    vals = np.array([0.0, 1.0 / (1.0 - rate)], dtype=dst.dtype)
    seed, layer = np.uint64(as_u64(ctx.seed)), np.uint64(layer_key(node))
    counters = ctx.counters

    def run():
        _masked(x2, y2, vals, seed, layer, counters, rate)
    return run


def _bind_forward(node, xs, ps, y, ws, ctx):
    return _bind(node, xs[0], y, ctx)


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    return _bind(node, dy, dxs[0], ctx)


KERNELS = {"Dropout": OpKernels(_bind_forward, _bind_backward)}
