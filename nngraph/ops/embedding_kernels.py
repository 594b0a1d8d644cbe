"""Embedding's kernels: a gather forward, a scatter-add backward (equations in embedding.py)."""
from __future__ import annotations

from numba import njit

from ..errors import DataError
from .base import OpKernels


@njit(cache=True)
def gather_rows(ids, w, y):
    """y[i] = w[ids[i]]; returns the index of the first out-of-range id, or -1."""
    v = w.shape[0]
    for i in range(ids.shape[0]):
        j = ids[i]
        if j < 0 or j >= v:
            return i
        y[i, :] = w[j]
    return -1


@njit(cache=True)
def scatter_add_rows(ids, dy, dw):
    dw[:] = 0
    for i in range(ids.shape[0]):
        row = dw[ids[i]]
        g = dy[i]
        for k in range(g.shape[0]):
            row[k] += g[k]


def _bind_forward(node, xs, ps, y, ws, ctx):
    ids = xs[0].reshape(-1)
    w = ps[0]
    y2 = y.reshape(-1, w.shape[1])

    def run():
        bad = gather_rows(ids, w, y2)
        if bad >= 0:
            raise DataError(f"layer {node.layer}: token id {int(ids[bad])} is outside the vocabulary "
                            f"[0, {w.shape[0] - 1}]")
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    ids = xs[0].reshape(-1)
    dw = dps[0]
    dy2 = dy.reshape(-1, dw.shape[1])

    def run():
        scatter_add_rows(ids, dy2, dw)
    return run


KERNELS = {"Embedding": OpKernels(_bind_forward, _bind_backward)}
