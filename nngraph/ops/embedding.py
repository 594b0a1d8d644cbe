"""Embedding: integer token ids -> learned vectors (a table lookup), exported as ONNX Gather.

    y[..., :] = W[ids[...], :]          W has shape (vocab_size, dim)
Backward: dW = 0, then dW[ids[...], :] += dy[..., :] (a scatter-add: an id that occurs several
times in the batch accumulates every occurrence's gradient). The ids get no gradient.
An id outside [0, vocab_size) is a DataError naming the id (never an out-of-bounds read).
"""
from __future__ import annotations

from numba import njit

from ..errors import DataError, ShapeError
from ..ir.graph import Node, TensorType
from .base import OpDef, ParamDecl


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


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "int64":
        raise ShapeError(f"layer {node.layer}: embedding expects integer token ids (input dtype \"int64\"), "
                         f"got {t.dtype}")
    return TensorType(t.shape + (node.attrs["dim"],))


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    v, d = node.attrs["vocab_size"], node.attrs["dim"]
    return [ParamDecl("W", (v, d), "uniform:0.05", v, d)]


def _bind_forward(node, xs, ps, y, ws):
    ids = xs[0].reshape(-1)
    w = ps[0]
    y2 = y.reshape(-1, w.shape[1])

    def run():
        bad = gather_rows(ids, w, y2)
        if bad >= 0:
            raise DataError(f"layer {node.layer}: token id {int(ids[bad])} is outside the vocabulary "
                            f"[0, {w.shape[0] - 1}]")
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws):
    ids = xs[0].reshape(-1)
    dw = dps[0]
    dy2 = dy.reshape(-1, dw.shape[1])

    def run():
        scatter_add_rows(ids, dy2, dw)
    return run


def _to_onnx(node, in_names, out_name, in_types, b):
    b.node("Gather", [node.params[0], in_names[0]], [out_name], axis=0)


def _reference(node, xs, ps):
    return ps[0][xs[0]]


EMBEDDING = OpDef("Embedding", _infer, _bind_forward, _bind_backward, _to_onnx, _reference, params=_params)
OPS = [EMBEDDING]
