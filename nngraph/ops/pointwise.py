"""LeakyRelu, Elu, Gelu, Silu, Softplus: element-wise activations as stand-alone ops.

They are also the ``activation`` of dense, conv1d and conv2d layers: those ops' epilogues do not
fuse them, so lowering writes ``<layer>/linear`` and one of these ops takes the layer's name.

Forward and backward (z is the op's input, dy the incoming gradient; dz = dy * act'(z)):
    leaky_relu  y = z (z >= 0), alpha z          act'(z) = 1 (z > 0), alpha (z <= 0)
    elu         y = z (z > 0), alpha (e^z - 1)   act'(z) = 1 (z > 0), alpha e^z (z <= 0)
    gelu        y = z Phi(z)                     act'(z) = Phi(z) + z e^(-z^2/2) / sqrt(2 pi)
                Phi(z) = (1 + erf(z / sqrt 2)) / 2 (the exact GELU, not the tanh approximation)
    silu        y = z s(z), s the sigmoid        act'(z) = s(z) (1 + z (1 - s(z)))
    softplus    y = log(1 + e^z)                 act'(z) = s(z)
The derivative is computed from z (the input buffer, intact at backward time), not from y.
ONNX: LeakyRelu(alpha), Elu(alpha), Softplus, Sigmoid + Mul for silu, Gelu from opset 20 (before:
0.5 x (1 + Erf(x / sqrt 2))). Scalar math in act_math.py, kernels in pointwise_kernels.py.
"""
from __future__ import annotations

from typing import Any

from ..ir.graph import Node, TensorType
from .activations import DEFAULT_ALPHA, apply_reference, emit_onnx
from .base import OpSpec, per_step_on_sequences

OP_NAMES = {"leaky_relu": "LeakyRelu", "elu": "Elu", "gelu": "Gelu", "silu": "Silu", "softplus": "Softplus"}
KIND = {op: kind for kind, op in OP_NAMES.items()}


def alpha_of(node: Node) -> float | None:
    """The node's alpha (None for the activations without one)."""
    kind = KIND[node.op]
    return float(node.attrs.get("alpha", DEFAULT_ALPHA[kind])) if kind in DEFAULT_ALPHA else None


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    return types[0]


def _to_onnx(node, in_names, out_name, in_types, b):
    emit_onnx(KIND[node.op], in_names[0], out_name, b, node.name, alpha_of(node))


def _reference(node, xs, ps, ctx=None):
    return apply_reference(KIND[node.op], xs[0], alpha=alpha_of(node))


def _layer_attrs(kind: str):
    """A layer's lowering: alpha always explicit on the node (the default when the activation
    comes from a dense/conv ``activation`` key, which passes no attributes)."""
    def attrs_of(attrs: dict[str, Any]) -> dict[str, Any]:
        return {"alpha": float(attrs.get("alpha", DEFAULT_ALPHA[kind]))} if kind in DEFAULT_ALPHA else {}
    return attrs_of


SPECS = [OpSpec(op, _infer, _to_onnx, _reference, kernels="nngraph.ops.pointwise_kernels",
                layers={kind: _layer_attrs(kind)}, time_rule=per_step_on_sequences)
         for kind, op in OP_NAMES.items()]
