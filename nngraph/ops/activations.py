"""Activations: Relu, Sigmoid, Tanh, Softmax, Identity — as stand-alone ops and as fused epilogues.

Forward / backward (y is the output, dy the incoming gradient):
    relu      y = max(z, 0)               dz = dy * [y > 0]     (the subgradient at 0 is taken as 0)
    sigmoid   y = 1 / (1 + e^-z)          dz = dy * y (1 - y)
    tanh      y = tanh z                  dz = dy * (1 - y^2)
    softmax   y_i = e^z_i / sum_j e^z_j   dz_i = y_i (dy_i - sum_j dy_j y_j)
    identity  y = z                       dz = dy
Every derivative is written in terms of y, so the forward pass can work in place and the backward
pass needs no saved pre-activation. Kernels (and the epilogues dense layers fuse) in
activations_kernels.py.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import OpSpec, per_step_on_sequences, same_attrs

IDENTITY, RELU, SIGMOID, TANH, SOFTMAX = 0, 1, 2, 3, 4
CODES = {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX}
ONNX_OP = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}


def apply_reference(kind: str, z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Plain-numpy activation, the tests' oracle."""
    if kind == "relu":
        return np.maximum(z, 0)
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if kind == "tanh":
        return np.tanh(z)
    if kind == "softmax":
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    return z.copy()


# ---- stand-alone activation ops --------------------------------------------------------------


def softmax_axis(node: Node, ndim_no_batch: int) -> int:
    axis = node.attrs.get("axis", -1)
    return axis if axis < 0 else axis - ndim_no_batch  # negative, relative to the full tensor


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if node.op == "Softmax":
        axis = node.attrs.get("axis", -1)
        if not -len(t.shape) <= axis < len(t.shape):
            raise ShapeError(f"layer {node.layer}: softmax axis {axis} is out of range for input shape {t}")
    return t


def _time_rule(node: Node, types: list[TensorType]) -> str:
    """Per step on sequences, unless a softmax normalises over time."""
    rank = len(types[0].shape)
    if node.op == "Softmax" and node.attrs.get("axis", -1) not in (-1, rank - 1):
        return "fixed"
    return per_step_on_sequences(node, types)


def _to_onnx(node, in_names, out_name, in_types, b):
    if node.op == "Identity":
        b.node("Identity", in_names, [out_name])
    elif node.op == "Softmax":
        b.node("Softmax", in_names, [out_name], axis=softmax_axis(node, len(in_types[0].shape)))
    else:
        b.node(node.op, in_names, [out_name])


def _reference(node, xs, ps, ctx=None):
    kind = node.op.lower()
    axis = softmax_axis(node, xs[0].ndim - 1) if kind == "softmax" else -1
    return apply_reference(kind, xs[0], axis)


def _spec(kind: str) -> OpSpec:
    return OpSpec(kind.capitalize(), _infer, _to_onnx, _reference, kernels="nngraph.ops.activations_kernels",
                  layers={kind: same_attrs}, time_rule=_time_rule)


SPECS = [_spec(kind) for kind in ("relu", "sigmoid", "tanh", "softmax", "identity")]
