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
    size = check_model_file(p)
    if size == 0:
        raise ExportError(f"{p}: the file is empty, not an ONNX model")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf raises several unrelated types for a corrupt file
        raise ExportError(f"{p}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node and not model.graph.output:  # protobuf parses many byte strings as "empty"
        raise ExportError(f"{p}: not an ONNX model (no graph)")
    g = model.graph
    names = [v.name for v in (*g.input, *g.output, *g.initializer, *g.node)]
    names += [x for n in g.node for x in (n.op_type, *n.input, *n.output)]
    names += [d.dim_param for v in (*g.input, *g.output) for d in v.type.tensor_type.shape.dim]
    names += [x for prop in model.metadata_props for x in (prop.key, prop.value)]
    if any(not isinstance(n, str) for n in names):  # protobuf hands back bytes for invalid UTF-8
        raise ExportError(f"{p}: names or metadata that are not valid UTF-8 (a corrupt file)")
    return model


def check_model_file(p: Path) -> int:
    """The size of a model path, which must be a regular file (ExportError otherwise)."""
    from ..errors import DataError
    from ..fileio import check_user_file

    try:
        return check_user_file(p, "ONNX model file")
    except DataError as e:
        raise ExportError(str(e)) from None


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
    params = {}
    for t in model.graph.initializer:
        params[t.name] = _initializer(path, t)
    return Imported(spec, params, meta, model)


def _initializer(path: str | Path, t: onnx.TensorProto) -> np.ndarray:
    """An initializer as an array; its data must hold exactly the values its shape states."""
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise ExportError(f"{path}: initializer {t.name!r} has a negative dimension {dims}")
    want = int(np.prod(dims, dtype=object))
    if t.HasField("raw_data") or t.raw_data:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type else 0
        if itemsize == 0 or len(t.raw_data) != want * itemsize:
            raise ExportError(f"{path}: initializer {t.name!r}: its raw data holds {len(t.raw_data):,} bytes, "
                              f"its shape {dims} needs {want * itemsize:,}")
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:  # onnx raises ValueError/TypeError/KeyError for inconsistent tensors
        raise ExportError(f"{path}: initializer {t.name!r} is unreadable ({type(e).__name__}: {e})") from None
    if a.size != want:
        raise ExportError(f"{path}: initializer {t.name!r} holds {a.size:,} values, its shape {dims} needs {want:,}")
    return a


def metadata_json(meta: dict[str, str], key: str) -> Any:
    raw = meta.get(f"nngraph.{key}")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw
