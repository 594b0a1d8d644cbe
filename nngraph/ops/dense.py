"""Gemm: the dense layer, y = act(x W^T + b), with the activation fused as an epilogue.

W has shape (units, in) — ONNX Gemm with transB=1 (and PyTorch's Linear) — so export is a re-wrap.
Inputs of rank > 1 (e.g. a sequence (time, features)) are treated as rows: the op acts on the last
axis, per time step.

Backward, with z = x W^T + b and dz = dy * act'(y) (see activations.py):
    dW = dz^T x        db = sum over rows of dz        dx = dz W
When the loss is fused with the activation (softmax + cross-entropy, sigmoid + binary
cross-entropy), the loss hands over dz directly and the activation derivative is skipped.
Kernels in dense_kernels.py.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .activations import ONNX_OP, apply_reference
from .base import OpSpec, ParamDecl, per_step_on_sequences, same_attrs


def default_initializer(activation: str) -> str:
    return "he_uniform" if activation == "relu" else "glorot_uniform"


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "float32":
        raise ShapeError(f"layer {node.layer}: dense expects float input, got {t.dtype} "
                         "(use an embedding layer for token ids)")
    return TensorType(t.shape[:-1] + (node.attrs["units"],))


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    fan_in, units = types[0].shape[-1], node.attrs["units"]
    init = node.attrs.get("initializer") or default_initializer(node.attrs.get("activation", "identity"))
    decls = [ParamDecl("W", (units, fan_in), init, fan_in, units)]
    if node.attrs.get("use_bias", True):
        decls.append(ParamDecl("b", (units,), "zeros", fan_in, units))
    return decls


def _to_onnx(node, in_names, out_name, in_types, b):
    act = node.attrs.get("activation", "identity")
    use_bias = node.attrs.get("use_bias", True)
    w, bias = node.params[0], (node.params[1] if use_bias else None)
    lin = out_name if act == "identity" else b.fresh(f"{node.name}/linear")
    if len(in_types[0].shape) == 1:
        b.node("Gemm", [in_names[0], w] + ([bias] if bias else []), [lin], transB=1, alpha=1.0, beta=1.0)
    else:  # Gemm is 2-D only: MatMul broadcasts over the leading axes
        w_t = b.fresh(f"{node.name}/W_T")
        b.node("Transpose", [w], [w_t], perm=[1, 0])
        mm = lin if bias is None else b.fresh(f"{node.name}/matmul")
        b.node("MatMul", [in_names[0], w_t], [mm])
        if bias is not None:
            b.node("Add", [mm, bias], [lin])
    if act == "softmax":
        b.node("Softmax", [lin], [out_name], axis=-1)
    elif act != "identity":
        b.node(ONNX_OP[act], [lin], [out_name])


def _reference(node, xs, ps, ctx=None):
    z = xs[0] @ ps[0].T
    if node.attrs.get("use_bias", True):
        z = z + ps[1]
    return apply_reference(node.attrs.get("activation", "identity"), z)


GEMM = OpSpec("Gemm", _infer, _to_onnx, _reference, kernels="nngraph.ops.dense_kernels", params=_params,
              layers={"dense": same_attrs}, time_rule=per_step_on_sequences,
              fuses=frozenset({"relu", "sigmoid", "tanh", "softmax"}))
SPECS = [GEMM]
