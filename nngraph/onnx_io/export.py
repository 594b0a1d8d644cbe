"""IR + parameters -> ONNX ModelProto with standard ops, a dynamic batch axis and the spec in the
metadata (so ``nngraph verify`` needs nothing but the .onnx file)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__
from ..errors import ExportError
from ..fileio import atomic_write_bytes
from ..ir import Graph
from ..ops.registry import get_op
from ..spec import Spec
from .dynamic_axes import TIME, time_dynamic_values

DEFAULT_OPSET = 17  # with IR version 8: read by onnxruntime >= 1.14 and most converters/runtimes
MIN_OPSET = 13      # Softmax's per-axis semantics (not 2-D coercion) start at 13
BATCH = "batch"
_ELEM = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def max_opset() -> int:
    return min(onnx.defs.onnx_opset_version(), 21)


def ir_version_for(opset: int) -> int:
    """The lowest ONNX IR version that carries ``opset`` (the widest-compatible pair)."""
    for release, ir, ops, *_ in helper.VERSION_TABLE:
        if ops >= opset:
            return ir
    raise ExportError(f"opset {opset} is newer than this onnx package knows")


class _Builder:
    """Collects nodes and initializers; what an op's ``to_onnx`` writes through."""

    def __init__(self, opset: int, params: dict[str, np.ndarray]):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._params = params
        self._names: set[str] = set(params)
        self._count = 0
        self._alias: dict[str, str] = {}
        self.explicit_states = False

    def resolve(self, name: str) -> str:
        """The ONNX name that carries ``name``'s value (itself unless it was aliased)."""
        return self._alias.get(name, name)

    def alias(self, out_name: str, in_name: str) -> None:
        """Make ``out_name`` stand for ``in_name`` without a node (an op that is the identity at
        inference, e.g. dropout): later nodes reading ``out_name`` read ``in_name`` instead."""
        self._alias[out_name] = self.resolve(in_name)

    def fresh(self, hint: str) -> str:
        name, i = hint, 1
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self._count += 1
        inputs = [self.resolve(v) for v in inputs]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{op_type}_{self._count}", **attrs))

    def constant(self, name_hint: str, value: np.ndarray) -> str:
        name = self.fresh(name_hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def param(self, name: str) -> np.ndarray:
        return self._params[name]


MAX_TIME_KEY = "max_time_length"  # metadata: the longest dynamic time axis the model accepts


def max_time_length(graph: Graph, dyn: set[str]) -> int | None:
    """The smallest ``max_length`` attribute (a positional embedding's table rows) of a node that
    reads a time-dynamic value, or None: ``runtime.run`` refuses longer sequences with a DataError.
    (Every time-dynamic input shares the one ``time`` axis, so one limit covers them all.)"""
    limits = [n.attrs["max_length"] for n in graph.nodes if "max_length" in n.attrs and n.inputs[0] in dyn]
    return min(limits) if limits else None


def build_model(spec: Spec, graph: Graph, params: dict[str, np.ndarray], opset: int = DEFAULT_OPSET,
                metadata: dict[str, Any] | None = None) -> onnx.ModelProto:
    """The ONNX model of a graph with the given float32 parameter values."""
    if not MIN_OPSET <= opset <= max_opset():
        raise ExportError(f"opset {opset} is not supported (choose {MIN_OPSET} to {max_opset()})")
    f32 = {k: np.ascontiguousarray(v, np.float32) for k, v in params.items()}
    b = _Builder(opset, f32)
    # recurrent layers feed explicit zero initial states (for tract; see ops/recurrent.py)
    b.explicit_states = bool((metadata or {}).get("explicit_states"))
    for name in graph.values:
        b._names.add(name)
    target = (metadata or {}).get("target_normalization")  # trained on standardised targets
    for node in graph.nodes:
        op = get_op(node.op)
        out = node.output
        if target and out == graph.output:  # the network's output feeds the inverse transform
            out = b.fresh(f"{graph.output}/standardized")
        op.to_onnx(node, list(node.inputs), out, [graph.values[v] for v in node.inputs], b)
        if out != node.output:
            b.alias(node.output, out)
    if target:  # outputs in target units: y * std + mean
        scaled = b.fresh(f"{graph.output}/scaled")
        b.node("Mul", [graph.output, b.constant("target_std", np.float32(target["std"]))], [scaled])
        b.node("Add", [scaled, b.constant("target_mean", np.float32(target["mean"]))], [graph.output])
    elif b.resolve(graph.output) != graph.output:  # the output is an alias: one Identity names it
        b.node("Identity", [graph.output], [graph.output])
    dyn = time_dynamic_values(graph)  # recurrent networks accept any sequence length

    def dims(name: str) -> list:
        shape = graph.values[name].shape
        return [BATCH, TIME, *shape[1:]] if name in dyn else [BATCH, *shape]

    inputs = [helper.make_tensor_value_info(n, _ELEM[graph.values[n].dtype], dims(n)) for n in graph.inputs]
    out_t = graph.values[graph.output]
    outputs = [helper.make_tensor_value_info(graph.output, _ELEM[out_t.dtype], dims(graph.output))]
    inits = [numpy_helper.from_array(f32[p], p) for p in graph.params] + b.initializers
    g = helper.make_graph(b.nodes, spec.name, inputs, outputs, initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="nngraph", producer_version=__version__,
                              doc_string=f"nngraph model {spec.name!r}")
    model.ir_version = ir_version_for(opset)
    meta = {"nngraph.spec": spec.to_json(), "nngraph.version": __version__}
    for k, v in (metadata or {}).items():
        meta[f"nngraph.{k}"] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    meta.pop(f"nngraph.{MAX_TIME_KEY}", None)  # recomputed below, never carried over from a loaded model
    limit = max_time_length(graph, dyn)
    if limit is not None:
        meta[f"nngraph.{MAX_TIME_KEY}"] = str(limit)
    helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported model fails onnx.checker: {e}") from None
    return model


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Serialise deterministically and write atomically."""
    return atomic_write_bytes(path, model.SerializeToString(deterministic=True))
