"""Gemm: the dense layer, y = act(x W^T + b), with the activation fused as an epilogue.

W has shape (units, in) — ONNX Gemm with transB=1 (and PyTorch's Linear) — so export is a re-wrap.
Inputs of rank > 1 (e.g. a sequence (time, features)) are treated as rows: the op acts on the last
axis, per time step.

Backward, with z = x W^T + b and dz = dy * act'(y) (see activations.py):
    dW = dz^T x        db = sum over rows of dz        dx = dz W
When the loss is fused with the activation (softmax + cross-entropy, sigmoid + binary
cross-entropy), the loss hands over dz directly and the activation derivative is skipped.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..linalg.gemm import NT_MIN_K, matmul, matmul_nt
from ..ir.graph import Node, TensorType
from .activations import CHUNKS, CODES, IDENTITY, ONNX_OP, apply_reference, epilogue_kernels
from .base import OpDef, ParamDecl


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


def _workspace(node: Node, types: list[TensorType], batch: int) -> dict[str, tuple[int, ...]]:
    """W^T, packed per forward call, for layers with few inputs (see linalg.gemm.NT_MIN_K)."""
    fan_in = types[0].shape[-1]
    return {"wt": (fan_in, node.attrs["units"])} if fan_in < NT_MIN_K else {}


def _bind_forward(node, xs, ps, y, ws):
    units = node.attrs["units"]
    x2 = xs[0].reshape(-1, xs[0].shape[-1])
    y2 = y.reshape(-1, units)
    w = ps[0]
    wt = ws.get("wt")
    use_bias = node.attrs.get("use_bias", True)
    b = ps[1] if use_bias else np.zeros(1, y.dtype)
    code = CODES[node.attrs.get("activation", "identity")]
    epilogue, _ = epilogue_kernels(y.size)

    def run():
        if wt is None:
            matmul_nt(x2, w, y2)  # x W^T straight from W's rows: no transposed copy
        else:
            np.copyto(wt, w.T)
            matmul(x2, wt, y2)
        epilogue(y2, b, use_bias, code)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws):
    units = node.attrs["units"]
    x2 = xs[0].reshape(-1, xs[0].shape[-1])
    y2 = y.reshape(-1, units)
    dz = dy.reshape(-1, units)
    dz_t = dz.T
    w = ps[0]
    dw = dps[0]
    use_bias = node.attrs.get("use_bias", True)
    db = dps[1] if use_bias else np.zeros(1, y.dtype)
    code = IDENTITY if node.attrs.get("loss_fused") else CODES[node.attrs.get("activation", "identity")]
    partial = np.zeros((CHUNKS, units), y.dtype)
    _, act_grad = epilogue_kernels(y.size)
    dx2 = dxs[0].reshape(-1, x2.shape[1]) if dxs[0] is not None else None

    if dx2 is None:  # first layer: skipping dx saves a third of its work
        def run():
            act_grad(dz, y2, code, db, use_bias, partial)
            matmul(dz_t, x2, dw)
        return run

    def run_dx():
        act_grad(dz, y2, code, db, use_bias, partial)
        matmul(dz_t, x2, dw)
        matmul(dz, w, dx2)
    return run_dx


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


def _reference(node, xs, ps):
    z = xs[0] @ ps[0].T
    if node.attrs.get("use_bias", True):
        z = z + ps[1]
    return apply_reference(node.attrs.get("activation", "identity"), z)


GEMM = OpDef("Gemm", _infer, _bind_forward, _bind_backward, _to_onnx, _reference, params=_params,
             workspace=_workspace)
OPS = [GEMM]
