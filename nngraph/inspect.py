"""A human-readable description of an ONNX file: I/O with dynamic axes, ops, opset, IR version,
metadata. Reads the file with onnx only (no numba)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from onnx import TensorProto, numpy_helper

from .onnx_io.importer import read_model
from .quantize import META_KEY, quantization_lines


def _dims(vi) -> str:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_param if d.dim_param else str(d.dim_value) if d.HasField("dim_value") else "?")
    return "[" + ", ".join(dims) + "]"


def _elem(vi) -> str:
    return TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()


def _spec_summary(text: str) -> str:
    """One line for the embedded spec instead of its whole JSON."""
    try:
        spec = json.loads(text)
        return f"spec {spec.get('name')!r}, {len(spec.get('layers', []))} layers, loss {spec.get('loss')}"
    except (ValueError, AttributeError, RecursionError, TypeError):
        return "(unreadable spec JSON)"


def _batchnorm_lines(g) -> list[str]:
    """Each BatchNormalization node (inference form) with the running statistics it carries."""
    shapes = {t.name: list(t.dims) for t in g.initializer}
    rows = []
    for n in g.node:
        if n.op_type != "BatchNormalization":
            continue
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        mean, var = (n.input[3], n.input[4]) if len(n.input) >= 5 else ("?", "?")
        layer = n.input[1].rsplit(".", 1)[0] if len(n.input) > 1 and "." in n.input[1] else n.output[0]
        rows.append(f"  {layer}: running mean {mean} {shapes.get(mean, '?')}, running variance {var} "
                    f"{shapes.get(var, '?')}, epsilon {eps:g}")
    return ["batch norm (inference form, running statistics as initializers):"] + rows if rows else []


def describe(path: str | Path) -> str:
    model = read_model(path)
    g = model.graph
    init_names = {t.name for t in g.initializer}
    lines = [f"model: {path}", f"graph: {g.name}",
             f"producer: {model.producer_name} {model.producer_version}",
             f"IR version: {model.ir_version}",
             "opsets: " + ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import),
             "inputs:"]
    for vi in g.input:
        if vi.name not in init_names:
            lines.append(f"  {vi.name}: {_elem(vi)} {_dims(vi)}")
    lines.append("outputs:")
    for vi in g.output:
        lines.append(f"  {vi.name}: {_elem(vi)} {_dims(vi)}")
    counts = Counter(n.op_type for n in g.node)
    lines.append("ops: " + ", ".join(f"{op} x{c}" for op, c in counts.items()))
    n_params = sum(int(np.prod(t.dims)) for t in g.initializer)
    lines.append(f"initializers: {len(g.initializer)} ({n_params:,} values)")
    lines += _preprocessing(model)
    lines += _batchnorm_lines(g)
    meta = {p.key: p.value for p in model.metadata_props}
    lines += quantization_lines(meta)
    lines += _runtime_notes(g)
    if model.metadata_props:
        lines.append("metadata:")
        for p in model.metadata_props:
            value = _spec_summary(p.value) if p.key == "nngraph.spec" else \
                "(see quantization above)" if p.key == META_KEY else p.value
            lines.append(f"  {p.key}: {value}")
    return "\n".join(lines)


def _runtime_notes(g) -> list[str]:
    """Which runtime needs which export option, and known runtime bugs this file meets."""
    from .runtimes import _custom_recurrent_activation

    rec = [n for n in g.node if n.op_type in ("RNN", "LSTM", "GRU")]
    lines = []
    if any(len(n.input) < 6 or not n.input[5] for n in rec):
        lines.append("  tract (0.23): its recurrent layers have no initial-state inputs, which tract aborts on "
                     "when the batch is symbolic; export with --explicit-states to run there")
    if any(_custom_recurrent_activation(n) for n in rec):
        lines.append("  tract (0.23.9): computes RNN/LSTM/GRU with their default activations, not this file's "
                     "(a known tract bug): its results are wrong there")
    return ["runtimes:"] + lines if lines else []


def _values(a: np.ndarray) -> str:
    flat = a.ravel()
    shown = ", ".join(f"{v:.4g}" for v in flat[:4]) + (", ..." if flat.size > 4 else "")
    return f"[{shown}]"


def _preprocessing(model) -> list[str]:
    """The preprocessing the model does itself: its normalize layers (from the embedded spec and
    their state initializers) and the inverse target transform at the end."""
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        spec = json.loads(meta.get("nngraph.spec", "{}"))
        layers = spec.get("layers", [])
        inputs = list(spec.get("inputs", {}))
    except (ValueError, AttributeError, RecursionError, TypeError):
        return []
    if not isinstance(layers, list):  # metadata is the file's claim: anything JSON can hold
        return []
    inits = {t.name: t for t in model.graph.initializer}
    lines = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or layer.get("type") != "normalize":
            continue
        name = layer.get("name") or f"normalize_{i}"
        named = layer.get("inputs")
        reads = str((named if isinstance(named, list) and named else
                     [inputs[0]] if i == 0 and inputs else ["the previous layer"])[0])
        mode = layer.get("mode", "standard")
        if f"{name}.divisor" not in inits:
            continue
        divisor = numpy_helper.to_array(inits[f"{name}.divisor"])
        if mode == "scale":
            lines.append(f"  {name}: {reads} / {float(divisor.ravel()[0]):.6g}")
        elif f"{name}.shift" in inits:  # (an int8 export keeps only the initializers its nodes read)
            shift = numpy_helper.to_array(inits[f"{name}.shift"])
            lines.append(f"  {name}: ({reads} - shift) / divisor per feature ({mode}, from the training data; "
                         f"{divisor.size} feature{'s' if divisor.size != 1 else ''}): shift {_values(shift)}, "
                         f"divisor {_values(divisor)}")
    target = meta.get("nngraph.target_normalization")
    if target:
        t = json.loads(target)
        lines.append(f"  output: y * {t['std']:.6g} + {t['mean']:.6g} (the network learned standardised targets; "
                     "the model answers in target units)")
    return ["preprocessing (inside the model; it takes the raw inputs):"] + lines if lines else []
