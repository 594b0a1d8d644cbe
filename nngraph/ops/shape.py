"""Flatten: (N, d1, ..., dk) -> (N, d1 * ... * dk), row-major (ONNX Flatten with axis=1).

    forward  y = x viewed as rows          backward  dx = dy viewed back in x's shape
Both are one contiguous copy (values own their buffers in a plan); kernels in shape_kernels.py.
"""
from __future__ import annotations

from ..ir.graph import Node, TensorType
from .base import OpSpec, same_attrs


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    return TensorType((types[0].size,), types[0].dtype)


def _to_onnx(node, in_names, out_name, in_types, b):
    b.node("Flatten", in_names, [out_name], axis=1)


FLATTEN = OpSpec("Flatten", _infer, _to_onnx, lambda node, xs, ps, ctx: xs[0].reshape(len(xs[0]), -1).copy(),
                 kernels="nngraph.ops.shape_kernels", layers={"flatten": same_attrs})
SPECS = [FLATTEN]
