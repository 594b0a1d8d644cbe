"""GlobalMaxPool's kernels (equations in global_pool.py): bodies over a block [lo, hi) of the rows
of x viewed as (N C, H W), a serial and a threaded driver (fixed blocks of planes: the same bits at
any thread count, planes being independent), and their bindings."""
from __future__ import annotations

from numba import njit, prange

from .activations_kernels import CHUNKS
from .base import OpKernels, noop
from .pool_kernels import threaded


@njit(cache=True)
def _max_rows(x, y, lo, hi):
    k = x.shape[1]
    for r in range(lo, hi):
        m = x[r, 0]
        for j in range(1, k):
            if x[r, j] > m:
                m = x[r, j]
        y[r] = m


@njit(cache=True)
def _max_rows_backward(x, dy, dx, lo, hi):
    k = x.shape[1]
    for r in range(lo, hi):
        m, best = x[r, 0], 0
        for j in range(k):
            dx[r, j] = 0
            if x[r, j] > m:  # strict: the first maximum keeps the gradient at ties
                m, best = x[r, j], j
        dx[r, best] = dy[r]


@njit(cache=True)
def global_max_forward(x, y):
    _max_rows(x, y, 0, x.shape[0])


@njit(cache=True, parallel=True)
def global_max_forward_threaded(x, y):
    m, k = x.shape[0], CHUNKS
    for c in prange(k):  # disjoint rows: no races
        _max_rows(x, y, c * m // k, (c + 1) * m // k)


@njit(cache=True)
def global_max_backward(x, dy, dx):
    _max_rows_backward(x, dy, dx, 0, x.shape[0])


@njit(cache=True, parallel=True)
def global_max_backward_threaded(x, dy, dx):
    m, k = x.shape[0], CHUNKS
    for c in prange(k):  # disjoint rows: no races
        _max_rows_backward(x, dy, dx, c * m // k, (c + 1) * m // k)


def _rows(a):
    """(N, C, ...) as the (N C, rest) view (never a copy: kernels write through it)."""
    v = a.view()
    v.shape = (a.shape[0] * a.shape[1], -1)
    return v


def _bind_forward(node, xs, ps, y, ws, ctx):
    x2, y1 = _rows(xs[0]), y.reshape(-1)
    fwd = global_max_forward_threaded if threaded(x2.size) else global_max_forward

    def run():
        fwd(x2, y1)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    x2, dx2, dy1 = _rows(xs[0]), _rows(dxs[0]), dy.reshape(-1)
    bwd = global_max_backward_threaded if threaded(x2.size) else global_max_backward

    def run():
        bwd(x2, dy1, dx2)
    return run


KERNELS = {"GlobalMaxPool": OpKernels(_bind_forward, _bind_backward)}
