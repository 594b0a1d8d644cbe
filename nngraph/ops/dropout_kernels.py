"""Dropout's kernels (equations and the hash in dropout.py).

Forward (training, rate > 0):  y_ij = x_ij * m_ij;  backward: dx_ij = dy_ij * m_ij, with
m_ij = 1 / (1 - rate) if u(seed, step, layer, first + i, j) >= rate else 0. The backward recomputes
the mask from the same counters (the trainer does not change them between a pass's forward and
backward), so no buffer holds it. Each element's mask bit is its own hash, so the prange split over
samples gives the same bits at any thread count. Inference mode or rate == 0: plain copies.
"""
from __future__ import annotations

import numpy as np
from numba import config, njit, prange

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

# A hash and a multiply per element (serial: ~1.7 ns/element, 7 us for 32x128 float32 on the shared
# 2-core machine); threads only pay off on big tensors (wake-up and barrier), as for pooling.
THREADED_MIN = 1 << 18


@njit(cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def _absorb(h, v):
    return _mix((h ^ v) + _G)


@njit(cache=True, inline="always")
def _row(x, y, vals, base, first, rate, i):
    """Sample row i: y[i, j] = x[i, j] * (vals[1] if u_ij >= rate else vals[0])."""
    z = _absorb(base, first + np.uint64(i))  # key_i; z + (j + 1) G walks its splitmix64 stream
    for j in range(x.shape[1]):
        z = z + _G
        u = np.float64(_mix(z) >> _S11) * _INV53
        m = vals[1] if u >= rate else vals[0]
        y[i, j] = x[i, j] * m


@njit(cache=True, inline="always")
def _keys(seed, layer, counters):
    """(absorb(absorb(absorb(0, seed), step), layer), first) from the run-time counters."""
    return _absorb(_absorb(_absorb(_ZERO, seed), np.uint64(counters[0])), layer), np.uint64(counters[1])


@njit(cache=True)
def masked_serial(x, y, vals, seed, layer, counters, rate):
    """y = x * mask on (n, f) views, one thread."""
    base, first = _keys(seed, layer, counters)
    for i in range(x.shape[0]):
        _row(x, y, vals, base, first, rate, i)


@njit(cache=True, parallel=True)
def masked_threaded(x, y, vals, seed, layer, counters, rate):
    """y = x * mask on (n, f) views, samples shared over threads (each element's bit is its own hash)."""
    base, first = _keys(seed, layer, counters)
    for i in prange(x.shape[0]):
        _row(x, y, vals, base, first, rate, i)


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
    kernel = masked_threaded if config.NUMBA_NUM_THREADS > 1 and src.size >= THREADED_MIN else masked_serial

    def run():
        kernel(x2, y2, vals, seed, layer, counters, rate)
    return run


def _bind_forward(node, xs, ps, y, ws, ctx):
    return _bind(node, xs[0], y, ctx)


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    return _bind(node, dy, dxs[0], ctx)


KERNELS = {"Dropout": OpKernels(_bind_forward, _bind_backward)}
