"""Add and Concat: the ops that join branches of a DAG.

    add:    y = x_1 + ... + x_k          dx_i = dy
            (a following relu layer is fused: y = max(sum, 0), dx_i = dy [y > 0] — a ResNet's
            add-then-relu in one pass)
    concat: y = [x_1, ..., x_k] on axis  dx_i = the slice of dy that x_i filled
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .activations import apply_reference
from .base import FIXED, PER_STEP, OpSpec, same_attrs


def _infer_add(node: Node, types: list[TensorType]) -> TensorType:
    """Every input must have the first one's shape; the error names both disagreeing inputs (the
    layers or spec inputs whose outputs they are) with their shapes."""
    for name, t in zip(node.inputs[1:], types[1:]):
        if t.shape != types[0].shape:
            raise ShapeError(f"layer {node.layer}: add needs inputs of one shape, got "
                             f"{node.inputs[0]} {types[0]} and {name} {t}")
    return types[0]


def _add_to_onnx(node, in_names, out_name, in_types, b):
    relu = node.attrs.get("activation", "identity") == "relu"  # a following relu layer, fused
    out = b.fresh(f"{node.name}/sum") if relu else out_name
    b.node("Add" if len(in_names) == 2 else "Sum", in_names, [out])
    if relu:
        b.node("Relu", [out], [out_name])


def _add_reference(node, xs, ps, ctx=None):
    return apply_reference(node.attrs.get("activation", "identity"), sum(xs[1:], xs[0].copy()))


ADD = OpSpec("Add", _infer_add, _add_to_onnx, _add_reference, kernels="nngraph.ops.join_kernels",
             layers={"add": same_attrs}, time_rule=PER_STEP, fuses=frozenset({"relu"}))


def _axis(node: Node, rank: int) -> int:
    """The concat axis within one sample (non-negative, batch excluded)."""
    return node.attrs.get("axis", -1) % rank


def _infer_concat(node: Node, types: list[TensorType]) -> TensorType:
    rank = len(types[0].shape)
    axis = node.attrs.get("axis", -1)
    if not -rank <= axis < rank:
        raise ShapeError(f"layer {node.layer}: concat axis {axis} is out of range for input shape {types[0]}")
    a = axis % rank
    for t in types:
        if len(t.shape) != rank or t.shape[:a] + t.shape[a + 1:] != types[0].shape[:a] + types[0].shape[a + 1:]:
            raise ShapeError(f"layer {node.layer}: concat inputs must agree except on axis {axis}, got "
                             + " and ".join(str(u) for u in types))
    return TensorType(types[0].shape[:a] + (sum(t.shape[a] for t in types),) + types[0].shape[a + 1:])


def concat_slices(node, xs):
    """(batch-inclusive axis, the index tuple of each input's slice of the output)."""
    a = _axis(node, xs[0].ndim - 1) + 1
    out, start = [], 0
    for x in xs:
        idx = [slice(None)] * x.ndim
        idx[a] = slice(start, start + x.shape[a])
        out.append(tuple(idx))
        start += x.shape[a]
    return a, out


def _concat_to_onnx(node, in_names, out_name, in_types, b):
    b.node("Concat", in_names, [out_name], axis=_axis(node, len(in_types[0].shape)) + 1)


def _concat_time_rule(node: Node, types: list[TensorType]) -> str:
    return FIXED if _axis(node, len(types[0].shape)) == 0 else PER_STEP  # joining along time fixes it


CONCAT = OpSpec("Concat", _infer_concat, _concat_to_onnx,
                lambda node, xs, ps, ctx=None: np.concatenate(xs, axis=_axis(node, xs[0].ndim - 1) + 1),
                kernels="nngraph.ops.join_kernels", layers={"concat": same_attrs}, time_rule=_concat_time_rule)
SPECS = [ADD, CONCAT]
