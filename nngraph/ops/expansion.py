"""Layer expansions: spec layer types that lower to several primitive layers.

An expansion is a function ``(name, attrs, inputs, in_types, layer) -> [SubLayer]`` registered in a
module's ``EXPANSIONS`` dict (listed in ``registry``). ``lowering.lower`` replaces the layer by its
sub-layers, recursively (a transformer block contains an attention layer, which is itself an
expansion), so every node of the IR is a primitive op with its own proven gradient and ONNX lowering,
and ``nngraph check`` lists the expanded nodes. The last sub-layer carries the layer's own name, so
the layer's output keeps the name later layers refer to; the others are named ``<name>/<part>``.
Errors inside an expansion name the spec layer the user wrote (``layer``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SubLayer:
    """One layer an expansion produces: attributes as a spec would give them (omitted keys take the
    layer table's defaults) and the values it reads."""

    name: str
    type: str
    attrs: dict[str, Any]
    inputs: tuple[str, ...]
