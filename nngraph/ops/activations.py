"""Activations: Relu, Sigmoid, Tanh, Softmax, Identity — as stand-alone ops and as fused epilogues.

This module is the activation vocabulary of the ops: the codes every kernel dispatches on
(``CODES``), the plain-numpy reference of every activation (``apply_reference``), the bind-time
check that a kernel handles the code it is given (``check_activation``) and the ONNX lowering of the
element-wise activations (``emit_onnx``). The scalar Numba math lives in act_math.py; the
stand-alone LeakyRelu, Elu, Gelu, Silu and Softplus ops in pointwise.py.

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

import math

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import OpSpec, per_step_on_sequences, same_attrs

IDENTITY, RELU, SIGMOID, TANH, SOFTMAX = 0, 1, 2, 3, 4
LEAKY_RELU, ELU, GELU, SILU, SOFTPLUS = 5, 6, 7, 8, 9
CODES = {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX,
         "leaky_relu": LEAKY_RELU, "elu": ELU, "gelu": GELU, "silu": SILU, "softplus": SOFTPLUS}
ONNX_OP = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}
# The ``alpha`` an activation takes when it is a dense/conv ``activation`` (the layer types carry
# their own ``alpha`` key with the same default, see spec/tables.py).
DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}


def check_activation(node: Node, supported: tuple[str, ...] | frozenset[str], default: str = "identity") -> int:
    """The code of ``node.attrs["activation"]`` for a kernel that handles the activations in
    ``supported``. Raised at bind time, so an activation a kernel has no branch for is an error
    instead of silently running another one (an unknown code used to fall through to identity in
    the dense/conv epilogues, and to tanh in the stride-1 conv epilogue)."""
    kind = node.attrs.get("activation", default)
    if kind not in supported:
        raise ValueError(f"layer {node.layer}: op {node.op} ({node.name}) has no kernel for activation "
                         f"{kind!r} (code {CODES.get(kind, '?')}); it handles {', '.join(sorted(supported))}")
    return CODES[kind]


def apply_reference(kind: str, z: np.ndarray, axis: int = -1, alpha: float | None = None) -> np.ndarray:
    """Plain-numpy activation, the tests' oracle (``alpha``: DEFAULT_ALPHA when None)."""
    if kind in DEFAULT_ALPHA and alpha is None:
        alpha = DEFAULT_ALPHA[kind]
    if kind == "leaky_relu":
        return np.where(z >= 0, z, alpha * z)
    if kind == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if kind == "gelu":
        erf = np.vectorize(math.erf, otypes=[z.dtype])
        return 0.5 * z * (1 + erf(z / np.sqrt(2)))
    if kind == "silu":
        return z / (1 + np.exp(-z))
    if kind == "softplus":
        return np.logaddexp(z, 0)
    if kind == "relu":
        return np.maximum(z, 0)
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if kind == "tanh":
        return np.tanh(z)
    if kind == "softmax":
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    if kind == "identity":
        return z.copy()
    raise ValueError(f"no reference for activation {kind!r}")


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


def emit_onnx(kind: str, x: str, out: str, b, name: str, alpha: float | None = None) -> None:
    """ONNX nodes computing ``out = kind(x)`` for an element-wise activation (softmax has an axis:
    its callers emit it). Silu is x * Sigmoid(x); Gelu is the Gelu op from opset 20, before that
    0.5 x (1 + Erf(x / sqrt 2))."""
    if kind in DEFAULT_ALPHA and alpha is None:
        alpha = DEFAULT_ALPHA[kind]
    if kind == "identity":
        b.node("Identity", [x], [out])
    elif kind in ("relu", "sigmoid", "tanh"):
        b.node(ONNX_OP[kind], [x], [out])
    elif kind == "leaky_relu":
        b.node("LeakyRelu", [x], [out], alpha=float(alpha))
    elif kind == "elu":
        b.node("Elu", [x], [out], alpha=float(alpha))
    elif kind == "softplus":
        b.node("Softplus", [x], [out])
    elif kind == "silu":
        s = b.fresh(f"{name}/sigmoid")
        b.node("Sigmoid", [x], [s])
        b.node("Mul", [x, s], [out])
    elif kind == "gelu" and b.opset >= 20:
        b.node("Gelu", [x], [out])
    elif kind == "gelu":
        scaled, erf, one_plus, half_x = (b.fresh(f"{name}/{t}") for t in ("scaled", "erf", "one_plus", "half_x"))
        b.node("Div", [x, b.constant(f"{name}/sqrt2", np.array(math.sqrt(2.0), np.float32))], [scaled])
        b.node("Erf", [scaled], [erf])
        b.node("Add", [erf, b.constant(f"{name}/one", np.array(1.0, np.float32))], [one_plus])
        b.node("Mul", [x, b.constant(f"{name}/half", np.array(0.5, np.float32))], [half_x])
        b.node("Mul", [half_x, one_plus], [out])
    else:
        raise ValueError(f"layer {name}: no ONNX lowering for activation {kind!r}")
