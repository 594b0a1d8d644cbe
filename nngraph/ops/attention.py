"""Multi-head scaled dot-product self-attention.

The ``attention`` layer is a small expansion into primitive nodes (``EXPANSIONS``), so the IR, the
gradients and the ONNX graph stay made of ops that are each proven on their own:

    <name>/qkv    dense, units 3F:  [Q | K | V] = x W_qkv^T + b_qkv      (PyTorch's in_proj layout)
    <name>/sdpa   SDPA (this op):   O = heads of softmax(Q K^T / sqrt(d) + mask) V, concatenated
    <name>        dense, units F:   y = O W_o^T + b_o                      (PyTorch's out_proj)

SDPA reads the projected sequence z = [Q | K | V] of shape (N, T, 3F) and writes O (N, T, F). With
H heads of d = F / H features, head h of sample n uses columns h d .. h d + d - 1 of Q, K and V
(the heads are contiguous feature slices, as in torch.nn.MultiheadAttention):

    S_ij  = s sum_c Q_ic K_jc,          s = 1 / sqrt(d)
    P_ij  = exp(S_ij - max_j S_ij) / sum_j exp(...)   over j <= i when causal, over all j otherwise
    Pd_ij = P_ij m_ij                   attention dropout in training mode (m as in dropout.py,
                                        element e = (h T + i) T + j of sample n), else Pd = P
    O_ic  = sum_j Pd_ij V_jc

Backward, per (n, h), from G = dO:

    dV_jc = sum_i Pd_ij G_ic            dPd_ij = sum_c G_ic V_jc           dP_ij = dPd_ij m_ij
    dS_ij = P_ij (dP_ij - sum_k dP_ik P_ik)                  (softmax; masked entries have P = 0)
    dQ_ic = s sum_j dS_ij K_jc          dK_jc = s sum_i dS_ij Q_ic

Memory: the softmax P is kept from the forward pass for the backward pass, N * H * T^2 floats (a
workspace; batch 32, 4 heads, T = 64: 2 MiB in float32), plus K^T per (n, h) as scratch. The
dropout mask is recomputed from its counters, never stored.

ONNX (opset >= 13): Split -> Reshape (0, 0, H, d) -> Transpose -> MatMul -> Mul(s) -> [causal:
Where(col > row, -inf, S) with row/col = Range(0, T) of the actual T, read by Shape at run time,
so one file serves every sequence length] -> Softmax(axis=-1) -> MatMul -> Transpose -> Reshape
(0, 0, F). Batch and time stay dynamic. Kernels in attention_kernels.py.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import SEQUENCE_OUT, OpSpec, same_attrs
from .dropout import keep_mask, layer_key
from .expansion import SubLayer


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    heads = node.attrs["heads"]
    if t.dtype != "float32" or len(t.shape) != 2 or t.shape[1] % (3 * heads):
        raise ShapeError(f"layer {node.layer}: scaled dot-product attention expects float (N, time, 3 * features) "
                         f"with features divisible by heads={heads}, got {t}")
    return TensorType((t.shape[0], t.shape[1] // 3))


def check_attention_input(layer: str, t: TensorType, heads: int) -> int:
    """The feature count F of an attention layer's input (N, time, F); one-line errors otherwise."""
    if t.dtype != "float32" or len(t.shape) != 2:
        raise ShapeError(f"layer {layer}: attention expects a float sequence (N, time, features), got {t}"
                         + (f" of {t.dtype}" if t.dtype != "float32" else ""))
    f = t.shape[1]
    if f % heads:
        raise ShapeError(f"layer {layer}: attention features ({f}) must be divisible by heads ({heads})")
    return f


def expand_attention(name: str, attrs: dict[str, Any], inputs: tuple[str, ...], types: list[TensorType],
                     layer: str) -> list[SubLayer]:
    """attention -> qkv dense, SDPA, output dense (see the module docstring)."""
    f = check_attention_input(layer, types[0], attrs["heads"])
    bias = attrs.get("use_bias", True)
    return [
        SubLayer(f"{name}/qkv", "dense", {"units": 3 * f, "use_bias": bias}, inputs),
        SubLayer(f"{name}/sdpa", "scaled_dot_product_attention",
                 {"heads": attrs["heads"], "causal": attrs["causal"], "dropout": attrs["dropout"]}, (f"{name}/qkv",)),
        SubLayer(name, "dense", {"units": f, "use_bias": bias}, (f"{name}/sdpa",)),
    ]


def _to_onnx(node, in_names, out_name, in_types, b) -> None:
    heads = node.attrs["heads"]
    f = in_types[0].shape[1] // 3
    d = f // heads
    n = node.name
    q, k, v = (b.fresh(f"{n}/{t}") for t in "qkv")
    b.node("Split", [in_names[0], b.constant(f"{n}/split", np.array([f, f, f], np.int64))], [q, k, v], axis=2)
    shape4 = b.constant(f"{n}/heads_shape", np.array([0, 0, heads, d], np.int64))
    heads_of = {}
    for t, perm in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3])):
        r, tr = b.fresh(f"{t}/split_heads"), b.fresh(f"{t}/transposed")
        b.node("Reshape", [t, shape4], [r])
        b.node("Transpose", [r], [tr], perm=perm)
        heads_of[t] = tr
    raw, scores = b.fresh(f"{n}/qk"), b.fresh(f"{n}/scores")
    b.node("MatMul", [heads_of[q], heads_of[k]], [raw])
    b.node("Mul", [raw, b.constant(f"{n}/scale", np.array(1.0 / math.sqrt(d), np.float32))], [scores])
    if node.attrs.get("causal"):
        shape, length, steps, rows, cols, future, masked = (
            b.fresh(f"{n}/{t}") for t in ("shape", "length", "steps", "rows", "cols", "future", "masked"))
        b.node("Shape", [in_names[0]], [shape])
        b.node("Gather", [shape, b.constant(f"{n}/time_axis", np.array(1, np.int64))], [length], axis=0)
        b.node("Range", [b.constant(f"{n}/zero", np.array(0, np.int64)), length,
                         b.constant(f"{n}/one", np.array(1, np.int64))], [steps])
        b.node("Unsqueeze", [steps, b.constant(f"{n}/axis1", np.array([1], np.int64))], [rows])
        b.node("Unsqueeze", [steps, b.constant(f"{n}/axis0", np.array([0], np.int64))], [cols])
        b.node("Greater", [cols, rows], [future])
        b.node("Where", [future, b.constant(f"{n}/minus_inf", np.array(-np.inf, np.float32)), scores], [masked])
        scores = masked
    probs, ctx, ctx_t = b.fresh(f"{n}/probs"), b.fresh(f"{n}/context"), b.fresh(f"{n}/context_t")
    b.node("Softmax", [scores], [probs], axis=-1)
    b.node("MatMul", [probs, heads_of[v]], [ctx])
    b.node("Transpose", [ctx], [ctx_t], perm=[0, 2, 1, 3])
    b.node("Reshape", [ctx_t, b.constant(f"{n}/merge_shape", np.array([0, 0, f], np.int64))], [out_name])


def attention_probs(node: Node, z: np.ndarray, ctx=None) -> tuple[np.ndarray, np.ndarray]:
    """(P, Pd) of shape (N, H, T, T) in plain numpy: the softmax and its dropped-out form."""
    heads = node.attrs["heads"]
    nb, t, f3 = z.shape
    f = f3 // 3
    d = f // heads
    q = z[..., :f].reshape(nb, t, heads, d).transpose(0, 2, 1, 3)
    k = z[..., f:2 * f].reshape(nb, t, heads, d).transpose(0, 2, 1, 3)
    s = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(d)
    if node.attrs.get("causal"):
        s = np.where(np.triu(np.ones((t, t), bool), 1), -np.inf, s)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    rate = float(node.attrs.get("dropout", 0.0))
    if ctx is None or not ctx.training or rate == 0.0:
        return p, p
    keep = keep_mask(ctx.seed, int(ctx.counters[0]), layer_key(node), int(ctx.counters[1]), nb, heads * t * t, rate)
    return p, p * np.where(keep, 1.0 / (1.0 - rate), 0.0).reshape(p.shape).astype(p.dtype)


def _reference(node, xs, ps, ctx=None) -> np.ndarray:
    z = xs[0]
    heads = node.attrs["heads"]
    nb, t, f3 = z.shape
    f = f3 // 3
    v = z[..., 2 * f:].reshape(nb, t, heads, f // heads).transpose(0, 2, 1, 3)
    _, pd = attention_probs(node, z, ctx)
    return (pd @ v).transpose(0, 2, 1, 3).reshape(nb, t, f)


def _scratch(node: Node, types: list[TensorType]) -> int:
    """Floats per sample the kernels keep: P and dS (heads x T x T each) and K^T (F x T)."""
    t, f3 = types[0].shape
    return 2 * node.attrs["heads"] * t * t + f3 // 3 * t


SDPA = OpSpec("ScaledDotProductAttention", _infer, _to_onnx, _reference, kernels="nngraph.ops.attention_kernels",
              layers={"scaled_dot_product_attention": same_attrs}, time_rule=SEQUENCE_OUT, scratch=_scratch)
SPECS = [SDPA]
EXPANSIONS = {"attention": expand_attention}
