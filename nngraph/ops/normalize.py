"""Normalize: preprocessing inside the graph, y = (x - shift) / divisor per feature.

The feature axis of a sample is ``axis`` (default: the channel axis, 0, of a (C, H, W) image; the
last axis otherwise, so (F,) features and the features of (time, F) sequences). ``shift`` and
``divisor`` are non-trainable state of the broadcast shape of that axis ((F,), or (C, 1, 1) for
images), so the kernels, the numpy reference and the ONNX ``Sub`` + ``Div`` broadcast the same way.
A division, not a multiplication by the reciprocal: pixel / 255 is then bit for bit what the IDX
loader computed before the scaling moved into the model.

Modes (``mode``):
    standard   shift = mean, divisor = std              (population std; a constant feature: 1)
    minmax     shift = min,  divisor = max - min        (a constant feature: 1)
    scale      shift = 0,    divisor = 1 / factor       (fixed: e.g. factor 1/255 for uint8 pixels)
The statistics are computed by ``fit_normalizers`` from the training inputs (every sample and every
position except the feature axis) before the first training step, then never change: they are
checkpointed and restored like batch norm's running statistics, and a resumed run keeps them.
``standard``/``minmax`` must read a graph input directly (the statistics are of the user's data).

Forward   y  = (x - shift) / divisor
Backward  dx = dy / divisor         (shift and divisor are state: no gradient)
Exported as ONNX ``Sub`` then ``Div`` (mode scale: one ``Div``) with the state as initializers
(``<layer>.shift``, ``<layer>.divisor``). Kernels in normalize_kernels.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Graph, Node, TensorType
from .base import FIXED, PER_STEP, OpSpec, ParamDecl, RunContext, same_attrs

OP = "Normalize"
MODES = ("standard", "minmax", "scale")


def feature_axis(node: Node, rank: int) -> int:
    """The normalised axis within one sample (non-negative, batch excluded)."""
    axis = node.attrs.get("axis")
    if axis is None:
        axis = 0 if rank == 3 else -1
    return axis % rank


def state_shape(node: Node, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shift/divisor shape: the feature axis' length followed by a 1 per later axis."""
    a = feature_axis(node, len(shape))
    return (shape[a],) + (1,) * (len(shape) - a - 1)


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "float32" or len(t.shape) < 1:
        raise ShapeError(f"layer {node.layer}: normalize expects float input with a feature axis, got {t}"
                         + (f" of {t.dtype}" if t.dtype != "float32" else ""))
    axis = node.attrs.get("axis")
    if axis is not None and not -len(t.shape) <= axis < len(t.shape):
        raise ShapeError(f"layer {node.layer}: normalize axis {axis} is out of range for input shape {t}")
    return t


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    shape = state_shape(node, types[0].shape)
    c = shape[0]
    div_init = f"const:{1.0 / float(node.attrs['factor'])!r}" if node.attrs["mode"] == "scale" else "ones"
    return [ParamDecl("shift", shape, "zeros", c, c, trainable=False),
            ParamDecl("divisor", shape, div_init, c, c, trainable=False)]


def _to_onnx(node: Node, in_names: list[str], out_name: str, in_types: list[TensorType], b: Any) -> None:
    shift, divisor = node.params
    if node.attrs["mode"] == "scale" and not np.any(b.param(shift)):  # a fixed factor: one Div
        b.node("Div", [in_names[0], divisor], [out_name])
        return
    centred = b.fresh(f"{node.output}/centred")
    b.node("Sub", [in_names[0], shift], [centred])
    b.node("Div", [centred, divisor], [out_name])


def _reference(node: Node, xs: list[np.ndarray], ps: list[np.ndarray], ctx: RunContext | None = None) -> np.ndarray:
    x = xs[0]
    return ((x - ps[0].astype(x.dtype)) / ps[1].astype(x.dtype)).astype(x.dtype)


def _time_rule(node: Node, types: list[TensorType]) -> str:
    rank = len(types[0].shape)
    return PER_STEP if rank >= 2 and feature_axis(node, rank) == rank - 1 else FIXED


def statistics(mode: str, x: np.ndarray, axis: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(shift, divisor) of ``x`` (batch first) over every axis but ``axis`` (batch-inclusive index),
    computed in float64 and shaped ``shape``."""
    moved = np.moveaxis(np.asarray(x, np.float64), axis, -1).reshape(-1, x.shape[axis])
    if len(moved) == 0:
        raise ValueError("no samples to compute normalization statistics from")
    if mode == "standard":
        shift, spread = moved.mean(axis=0), moved.std(axis=0)
    else:  # minmax
        shift = moved.min(axis=0)
        spread = moved.max(axis=0) - shift
    spread[~(spread > 0)] = 1.0  # a constant feature passes through centred, never divided by zero
    return shift.reshape(shape), spread.reshape(shape)


def fitted_nodes(graph: Graph) -> list[Node]:
    """The normalize nodes whose statistics come from the training data (mode standard/minmax)."""
    return [n for n in graph.nodes if n.op == OP and n.attrs["mode"] != "scale"]


def check_reads_input(graph: Graph) -> None:
    """A normalize that computes statistics must read a graph input: its statistics are of the
    user's raw data, known before the first step."""
    for n in fitted_nodes(graph):
        if n.inputs[0] not in graph.inputs:
            raise ShapeError(f"layer {n.layer}: normalize with mode {n.attrs['mode']!r} must read a model input "
                             f"directly (it reads {n.inputs[0]!r}); use mode \"scale\" or batchnorm/layernorm "
                             "inside the network")


def fit_normalizers(graph: Graph, values: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[str]:
    """Fill the shift/divisor state of every fitted normalize node from the training inputs ``feeds``
    (arrays with the batch axis first); returns the layers filled."""
    done = []
    for n in fitted_nodes(graph):
        x = feeds[n.inputs[0]]
        shape = graph.values[n.inputs[0]].shape
        shift, divisor = statistics(n.attrs["mode"], x, feature_axis(n, len(shape)) + 1, state_shape(n, shape))
        values[n.params[0]][...] = shift
        values[n.params[1]][...] = divisor
        done.append(n.layer)
    return done


NORMALIZE = OpSpec(OP, _infer, _to_onnx, _reference, kernels="nngraph.ops.normalize_kernels", params=_params,
                   layers={"normalize": same_attrs}, time_rule=_time_rule)
SPECS = [NORMALIZE]
