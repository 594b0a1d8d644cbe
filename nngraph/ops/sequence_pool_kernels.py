"""SequencePool's kernels (equations in sequence_pool.py): bodies over a block [lo, hi) of the
samples of x (N, T, F), a serial and a threaded driver (fixed blocks of samples; samples are
independent, so the bits do not depend on the thread count), and their bindings. ``mode`` is the
index of the mode in ``sequence_pool.MODES``. The mean accumulates in float64."""
from __future__ import annotations

from numba import njit, prange

from .activations_kernels import CHUNKS
from .base import OpKernels, noop
from .pool_kernels import threaded
from .sequence_pool import MODES


@njit(cache=True)
def _pool_samples(x, y, mode, lo, hi):
    t_len, f_len = x.shape[1], x.shape[2]
    for n in range(lo, hi):
        for f in range(f_len):
            if mode == 0:
                s = 0.0
                for t in range(t_len):
                    s += x[n, t, f]
                y[n, f] = s / t_len
            elif mode == 1:
                m = x[n, 0, f]
                for t in range(1, t_len):
                    if x[n, t, f] > m:
                        m = x[n, t, f]
                y[n, f] = m
            else:
                y[n, f] = x[n, 0 if mode == 2 else t_len - 1, f]


@njit(cache=True)
def _unpool_samples(x, dy, dx, mode, lo, hi):
    t_len, f_len = x.shape[1], x.shape[2]
    for n in range(lo, hi):
        for t in range(t_len):
            for f in range(f_len):
                dx[n, t, f] = dy[n, f] / t_len if mode == 0 else 0
        if mode == 1:
            for f in range(f_len):
                m, best = x[n, 0, f], 0
                for t in range(1, t_len):
                    if x[n, t, f] > m:  # strict: the first maximum keeps the gradient at ties
                        m, best = x[n, t, f], t
                dx[n, best, f] = dy[n, f]
        elif mode >= 2:
            t = 0 if mode == 2 else t_len - 1
            for f in range(f_len):
                dx[n, t, f] = dy[n, f]


@njit(cache=True)
def pool_forward(x, y, mode):
    _pool_samples(x, y, mode, 0, x.shape[0])


@njit(cache=True, parallel=True)
def pool_forward_threaded(x, y, mode):
    m, k = x.shape[0], CHUNKS
    for c in prange(k):  # disjoint samples: no races
        _pool_samples(x, y, mode, c * m // k, (c + 1) * m // k)


@njit(cache=True)
def pool_backward(x, dy, dx, mode):
    _unpool_samples(x, dy, dx, mode, 0, x.shape[0])


@njit(cache=True, parallel=True)
def pool_backward_threaded(x, dy, dx, mode):
    m, k = x.shape[0], CHUNKS
    for c in prange(k):  # disjoint samples: no races
        _unpool_samples(x, dy, dx, mode, c * m // k, (c + 1) * m // k)


def _mode(node) -> int:
    return MODES.index(node.attrs.get("mode", "mean"))


def _bind_forward(node, xs, ps, y, ws, ctx):
    x, mode = xs[0], _mode(node)
    fwd = pool_forward_threaded if threaded(x.size) else pool_forward

    def run():
        fwd(x, y, mode)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    x, dx, mode = xs[0], dxs[0], _mode(node)
    bwd = pool_backward_threaded if threaded(x.size) else pool_backward

    def run():
        bwd(x, dy, dx, mode)
    return run


KERNELS = {"SequencePool": OpKernels(_bind_forward, _bind_backward)}
