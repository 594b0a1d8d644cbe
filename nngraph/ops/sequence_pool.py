"""SequencePool: one vector per sequence, (N, T, F) -> (N, F), pooled over the time axis.

    mean   y[n, f] = sum_t x[n, t, f] / T           dx[n, t, f] = dy[n, f] / T
    max    y[n, f] = max_t x[n, t, f]               dx[n, t, f] = dy[n, f] if t = argmax_t x[n, :, f] else 0
    first  y[n, f] = x[n, 0, f]                     dx[n, 0, f] = dy[n, f], 0 at every other step
    last   y[n, f] = x[n, T - 1, f]                 dx[n, T - 1, f] = dy[n, f], 0 at every other step
The max's argmax is the FIRST maximal step (global_maxpool2d's convention), so at ties exactly one
step takes the gradient; the backward recomputes it from x. Time rule SEQUENCE: the op reads any
length and the output has no time axis, so an exported model keeps a dynamic time axis.
ONNX: ReduceMean / ReduceMax over axis 1 with keepdims=0 (``axes`` an attribute up to opset 17, an
input from 18); first and last are Gather(axis=1) of index 0 / -1 (a negative index counts from the
end, so "last" follows a dynamic T). Kernels in sequence_pool_kernels.py.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import SEQUENCE, OpSpec, same_attrs

MODES = ("mean", "max", "first", "last")  # the kernels' mode code is the index in this tuple


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "float32" or len(t.shape) != 2:
        raise ShapeError(f"layer {node.layer}: sequence_pool expects a float sequence (N, time, features), got {t}"
                         + (f" of {t.dtype} (add an embedding layer first)" if t.dtype != "float32" else ""))
    return TensorType(t.shape[1:])


def _to_onnx(node, in_names, out_name, in_types, b) -> None:
    mode = node.attrs.get("mode", "mean")
    if mode in ("first", "last"):
        index = b.constant(f"{node.name}/{mode}", np.array(0 if mode == "first" else -1, np.int64))
        b.node("Gather", [in_names[0], index], [out_name], axis=1)  # a scalar index drops the axis
        return
    op = "ReduceMean" if mode == "mean" else "ReduceMax"
    if b.opset >= 18:
        b.node(op, [in_names[0], b.constant(f"{node.name}/axes", np.array([1], np.int64))], [out_name], keepdims=0)
    else:
        b.node(op, [in_names[0]], [out_name], axes=[1], keepdims=0)


def _reference(node, xs, ps, ctx=None) -> np.ndarray:
    x, mode = xs[0], node.attrs.get("mode", "mean")
    return {"mean": lambda: x.mean(axis=1), "max": lambda: x.max(axis=1),
            "first": lambda: x[:, 0].copy(), "last": lambda: x[:, -1].copy()}[mode]()


SEQUENCE_POOL = OpSpec("SequencePool", _infer, _to_onnx, _reference, kernels="nngraph.ops.sequence_pool_kernels",
                       layers={"sequence_pool": same_attrs}, time_rule=SEQUENCE)
SPECS = [SEQUENCE_POOL]
