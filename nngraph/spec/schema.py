"""Generate the published JSON Schema (``schema.json``) from the field tables."""
from __future__ import annotations

import json
from typing import Any

from . import tables as T
from .fields import field_json_schema


def _object(table: dict, extra: dict[str, Any] | None = None, const_type: str | None = None) -> dict:
    props: dict[str, Any] = {}
    if const_type is not None:
        props["type"] = {"const": const_type}
    props.update({k: field_json_schema(f) for k, f in table.items()})
    props.update(extra or {})
    req = (["type"] if const_type else []) + [k for k, f in table.items() if f.required]
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if req:
        out["required"] = req
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (draft 2020-12)."""
    common = {"name": {"type": "string", "minLength": 1, "description": "layer name (default <type>_<index>)"},
              "inputs": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                         "description": "names of earlier layers or inputs (default: the previous layer)"}}
    layers = []
    for typ, schema in T.LAYERS.items():
        obj = _object(schema.fields, common, const_type=typ)
        obj["description"] = schema.doc
        layers.append(obj)
    optimizers = [_object(tbl, const_type=typ) for typ, tbl in T.OPTIMIZERS.items()]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nngraph spec",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "inputs", "layers"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "spec_version": {"const": T.SPEC_VERSION},
            "inputs": {"type": "object", "minProperties": 1, "additionalProperties": _object(T.INPUT)},
            "layers": {"type": "array", "minItems": 1, "items": {"oneOf": layers}},
            "loss": {"enum": list(T.LOSSES), "default": "mse"},
            "optimizer": {"oneOf": optimizers},
            "train": _object(T.TRAIN),
            "data": {"oneOf": [{"type": "string", "minLength": 1}, _object(T.DATA)]},
        },
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
