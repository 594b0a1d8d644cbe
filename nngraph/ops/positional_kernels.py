"""PositionalEmbedding's kernels (equations in positional.py). Forward and dx over fixed blocks of
samples (independent); dtable over fixed blocks of positions t, each row summing its samples in
order n = 0, 1, ...: every value has one writer and one summation order, so the bits do not depend
on the thread count."""
from __future__ import annotations

from numba import njit, prange

from .activations_kernels import CHUNKS
from .base import OpKernels, noop
from .pool_kernels import threaded


@njit(cache=True)
def _add_rows(x, table, y, lo, hi):
    for n in range(lo, hi):
        for t in range(x.shape[1]):
            for f in range(x.shape[2]):
                y[n, t, f] = x[n, t, f] + table[t, f]


@njit(cache=True)
def _table_grad_rows(dy, dtable, lo, hi):
    """dtable[t] for t in [lo, hi): the sum over samples of dy[:, t] (0 past the sequence's length)."""
    t_len = dy.shape[1]
    for t in range(lo, hi):
        for f in range(dtable.shape[1]):
            dtable[t, f] = 0
        if t < t_len:
            for n in range(dy.shape[0]):
                for f in range(dtable.shape[1]):
                    dtable[t, f] += dy[n, t, f]


@njit(cache=True)
def add_forward(x, table, y):
    _add_rows(x, table, y, 0, x.shape[0])


@njit(cache=True, parallel=True)
def add_forward_threaded(x, table, y):
    m, k = x.shape[0], CHUNKS
    for c in prange(k):  # disjoint samples: no races
        _add_rows(x, table, y, c * m // k, (c + 1) * m // k)


@njit(cache=True)
def table_backward(dy, dtable):
    _table_grad_rows(dy, dtable, 0, dtable.shape[0])


@njit(cache=True, parallel=True)
def table_backward_threaded(dy, dtable):
    m, k = dtable.shape[0], CHUNKS
    for c in prange(k):  # disjoint positions, each summed over n in order: no races, fixed bits
        _table_grad_rows(dy, dtable, c * m // k, (c + 1) * m // k)


def _bind_forward(node, xs, ps, y, ws, ctx):
    x, table = xs[0], ps[0]
    fwd = add_forward_threaded if threaded(x.size) else add_forward

    def run():
        fwd(x, table, y)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    dx, dtable = dxs[0], dps[0]  # dtable None: a sinusoidal (non-trainable) table
    if dx is None and dtable is None:
        return noop
    bwd = table_backward_threaded if threaded(dy.size) else table_backward

    def run():
        if dtable is not None:
            bwd(dy, dtable)
        if dx is not None:
            dx[...] = dy
    return run


KERNELS = {"PositionalEmbedding": OpKernels(_bind_forward, _bind_backward)}
