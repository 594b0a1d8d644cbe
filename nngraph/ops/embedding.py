"""Embedding: integer token ids -> learned vectors (a table lookup), exported as ONNX Gather.

    y[..., :] = W[ids[...], :]          W has shape (vocab_size, dim)
Backward: dW = 0, then dW[ids[...], :] += dy[..., :] (a scatter-add: an id that occurs several
times in the batch accumulates every occurrence's gradient). The ids get no gradient.
An id outside [0, vocab_size) is a DataError naming the id (never an out-of-bounds read).
Kernels in embedding_kernels.py.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import PER_STEP, OpSpec, ParamDecl, same_attrs


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "int64":
        raise ShapeError(f"layer {node.layer}: embedding expects integer token ids (input dtype \"int64\"), "
                         f"got {t.dtype}")
    return TensorType(t.shape + (node.attrs["dim"],))


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    v, d = node.attrs["vocab_size"], node.attrs["dim"]
    return [ParamDecl("W", (v, d), "uniform:0.05", v, d)]


def _to_onnx(node, in_names, out_name, in_types, b):
    b.node("Gather", [node.params[0], in_names[0]], [out_name], axis=0)


def _reference(node, xs, ps, ctx=None):
    return ps[0][xs[0]]


EMBEDDING = OpSpec("Embedding", _infer, _to_onnx, _reference, kernels="nngraph.ops.embedding_kernels",
                   params=_params, layers={"embedding": same_attrs}, time_rule=PER_STEP)
SPECS = [EMBEDDING]
