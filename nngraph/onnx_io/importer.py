"""ONNX -> spec + IR + parameters, for models nngraph exported (the spec rides in the metadata)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ExportError, NNGraphError
from ..spec import Spec


@dataclass
class Imported:
    spec: Spec
    params: dict[str, np.ndarray]
    metadata: dict[str, str]
    model: onnx.ModelProto


def read_model(path: str | Path) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{p}: file not found")
    try:
        return onnx.load(str(p))
    except Exception as e:  # protobuf raises several unrelated types for a corrupt file
        raise ExportError(f"{p}: not a readable ONNX model ({type(e).__name__}: {e})") from None


def import_model(path: str | Path) -> Imported:
    """Read an nngraph-exported model: its spec, parameter values and metadata."""
    model = read_model(path)
    meta = {p.key: p.value for p in model.metadata_props}
    if "nngraph.spec" not in meta:
        raise ExportError(f"{path}: no nngraph spec in the model metadata (was it exported by nngraph?)")
    try:
        spec = Spec.from_json(meta["nngraph.spec"])
    except NNGraphError as e:
        raise ExportError(f"{path}: the embedded spec is invalid: {e}") from None
    params = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return Imported(spec, params, meta, model)


def metadata_json(meta: dict[str, str], key: str) -> Any:
    raw = meta.get(f"nngraph.{key}")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
