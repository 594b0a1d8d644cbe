"""Flatten: (N, d1, ..., dk) -> (N, d1 * ... * dk), row-major (ONNX Flatten with axis=1).

    forward  y = x viewed as rows          backward  dx = dy viewed back in x's shape
Both are one contiguous copy (values own their buffers in a plan).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Node, TensorType
from .base import OpDef


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    return TensorType((types[0].size,), types[0].dtype)


def _bind_forward(node, xs, ps, y, ws):
    src = xs[0].reshape(y.shape)

    def run():
        np.copyto(y, src)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws):
    if dxs[0] is None:
        return lambda: None
    dst = dxs[0].reshape(dy.shape)

    def run():
        np.copyto(dst, dy)
    return run


def _to_onnx(node, in_names, out_name, in_types, b):
    b.node("Flatten", in_names, [out_name], axis=1)


FLATTEN = OpDef("Flatten", _infer, _bind_forward, _bind_backward, _to_onnx,
                lambda node, xs, ps: xs[0].reshape(len(xs[0]), -1).copy())
OPS = [FLATTEN]
