"""LayerNorm: normalise the last axis of every row (a dense or sequence output's features).

Per row x of F = m features (every other axis, time included, is a row index):
    mu = sum(x) / m        var = sum((x - mu)^2) / m   (biased)      inv_std = 1 / sqrt(var + eps)
    xhat = (x - mu) inv_std                 y = scale * xhat + bias
with learned ``scale`` (init 1) and ``bias`` (init 0) of shape (F,). Backward, per row:
    dxhat = dy * scale
    dx = inv_std / m * (m dxhat - sum(dxhat) - xhat sum(dxhat xhat))
    dscale = sum over rows of dy * xhat      dbias = sum over rows of dy
Rows are independent (per sample, per time step). ONNX: LayerNormalization(axis=-1, epsilon) from
opset 17; below, ReduceMean / Sub / Mul / ReduceMean / Add / Sqrt / Div / Mul / Add (ReduceMean's
``axes`` is an attribute up to opset 17). Kernels in layernorm_kernels.py.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import OpSpec, ParamDecl, per_step_on_sequences, same_attrs


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "float32" or not t.shape:
        raise ShapeError(f"layer {node.layer}: layernorm expects float input with a feature axis, got {t}"
                         + (f" of {t.dtype}" if t.dtype != "float32" else ""))
    return t


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    f = types[0].shape[-1]
    return [ParamDecl("scale", (f,), "ones", f, f), ParamDecl("bias", (f,), "zeros", f, f)]


def _to_onnx(node, in_names, out_name, in_types, b):
    eps = float(node.attrs.get("epsilon", 1e-5))
    x, (scale, bias) = in_names[0], node.params
    if b.opset >= 17:
        b.node("LayerNormalization", [x, scale, bias], [out_name], axis=-1, epsilon=eps)
        return
    n = node.name
    mean, d, d2, var, var_eps, std, xhat, scaled = (
        b.fresh(f"{n}/{t}") for t in ("mean", "centered", "squared", "var", "var_eps", "std", "xhat", "scaled"))
    b.node("ReduceMean", [x], [mean], axes=[-1], keepdims=1)
    b.node("Sub", [x, mean], [d])
    b.node("Mul", [d, d], [d2])
    b.node("ReduceMean", [d2], [var], axes=[-1], keepdims=1)
    b.node("Add", [var, b.constant(f"{n}/epsilon", np.array(eps, np.float32))], [var_eps])
    b.node("Sqrt", [var_eps], [std])
    b.node("Div", [d, std], [xhat])
    b.node("Mul", [xhat, scale], [scaled])
    b.node("Add", [scaled, bias], [out_name])


def _reference(node, xs, ps, ctx=None):
    x = xs[0]
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + node.attrs.get("epsilon", 1e-5)) * ps[0] + ps[1]


LAYERNORM = OpSpec("LayerNorm", _infer, _to_onnx, _reference, kernels="nngraph.ops.layernorm_kernels",
                   params=_params, layers={"layernorm": same_attrs}, time_rule=per_step_on_sequences)
SPECS = [LAYERNORM]
