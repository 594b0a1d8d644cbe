"""PositionalEmbedding: add a position's vector to each time step, (N, T, F) -> (N, T, F).

    y[n, t, :] = x[n, t, :] + P[t, :]           P = ``table`` of shape (max_length, F), T <= max_length
Backward: dx = dy;  dP[t, :] = sum over n of dy[n, t, :] for t < T, and dP[t, :] = 0 for t >= T.
kind "learned": P is a trainable parameter, init normal(0, 0.02) (GPT-2's). kind "sinusoidal": P is
non-trainable state holding Vaswani et al.'s table, P[t, 2i] = sin(t / 10000^(2i/F)),
P[t, 2i+1] = cos(t / 10000^(2i/F)) (``backend.params.sinusoidal_table``), saved and exported like
any state. Time rule SEQUENCE_OUT (the op reads the sequence and keeps its time axis).
ONNX: T = Gather(Shape(x), [1]); Add(x, Slice(table, [0], T, [0])): one exported file runs at any
T <= max_length (the exporter records max_length in the metadata, ``nngraph.max_time_length``, and
``runtime.run`` refuses longer inputs with a DataError). Kernels in positional_kernels.py.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import SEQUENCE_OUT, OpSpec, ParamDecl, same_attrs

INIT_STD = 0.02


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "float32" or len(t.shape) != 2:
        raise ShapeError(f"layer {node.layer}: positional_embedding expects a float sequence (N, time, features), "
                         f"got {t}" + (f" of {t.dtype} (add an embedding layer first)" if t.dtype != "float32" else ""))
    if t.shape[0] > node.attrs["max_length"]:
        raise ShapeError(f"layer {node.layer}: sequence length {t.shape[0]} exceeds positional_embedding's "
                         f"max_length {node.attrs['max_length']}")
    return t


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    length, f = node.attrs["max_length"], types[0].shape[1]
    if node.attrs.get("kind", "learned") == "sinusoidal":
        return [ParamDecl("table", (length, f), "sinusoidal", length, f, trainable=False)]
    return [ParamDecl("table", (length, f), f"normal:{INIT_STD}", length, f)]


def _to_onnx(node, in_names, out_name, in_types, b) -> None:
    n, x = node.name, in_names[0]
    shape, length, rows = (b.fresh(f"{n}/{s}") for s in ("shape", "length", "rows"))
    b.node("Shape", [x], [shape])
    b.node("Gather", [shape, b.constant(f"{n}/time_axis", np.array([1], np.int64))], [length], axis=0)
    zero = b.constant(f"{n}/zero", np.array([0], np.int64))
    b.node("Slice", [node.params[0], zero, length, zero], [rows])  # table[:T] (starts 0, axes 0)
    b.node("Add", [x, rows], [out_name])


def _reference(node, xs, ps, ctx=None) -> np.ndarray:
    return xs[0] + ps[0][:xs[0].shape[1]]


POSITIONAL_EMBEDDING = OpSpec("PositionalEmbedding", _infer, _to_onnx, _reference,
                              kernels="nngraph.ops.positional_kernels", params=_params,
                              layers={"positional_embedding": same_attrs}, time_rule=SEQUENCE_OUT)
SPECS = [POSITIONAL_EMBEDDING]
