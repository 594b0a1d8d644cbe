"""Which values may have a dynamic time axis in the exported ONNX model.

Training runs at the spec's fixed sequence length, but a recurrent network's weights do not depend
on it, so the exported model should accept any length. A graph input gets a dynamic time axis
(its first per-sample axis, ONNX dim_param ``time``) when every node its values reach acts per time
step or reads it as its sequence; each op says which in its description (``OpSpec.time_rule``:
``per_step`` — dense on the last axis, activations, embedding, add, concat on a feature axis,
normalisation over features; ``sequence`` — recurrent layers, whose output keeps the time axis only
with ``return_sequences``; ``sequence_out`` — attention and positional embeddings, which read the
whole sequence and keep its time axis; ``fixed`` — anything else). A network that reaches a ``fixed`` op keeps
a fixed length. Networks with no sequence op (recurrent, attention, ...) are left unchanged.
"""
from __future__ import annotations

from ..ir import Graph
from ..ops.base import PER_STEP, SEQUENCE, SEQUENCE_OUT
from ..ops.registry import get_op

TIME = "time"


def _propagate(graph: Graph, seed: set[str]) -> tuple[set[str], bool]:
    """(values with a dynamic time axis, whether that assignment is valid and reaches a recurrent op)."""
    dyn = set(seed)
    reaches = False
    for node in graph.nodes:
        flags = [v in dyn for v in node.inputs]
        if not any(flags):
            continue
        rule = get_op(node.op).time_rule_for(node, [graph.values[v] for v in node.inputs])
        if rule in (SEQUENCE, SEQUENCE_OUT):
            if not flags[0] or any(flags[1:]):  # initial states have no time axis
                return dyn, False
            reaches = True
            if rule == SEQUENCE_OUT or node.attrs.get("return_sequences"):
                dyn.add(node.output)
        elif rule == PER_STEP and all(flags):
            dyn.add(node.output)
        else:
            return dyn, False
    return dyn, reaches


def time_dynamic_values(graph: Graph) -> set[str]:
    """Names of graph inputs and node outputs whose first per-sample axis is a dynamic time axis."""
    ok = set()
    for name in graph.inputs:
        t = graph.values[name]
        if len(t.shape) >= (1 if t.dtype == "int64" else 2) and _propagate(graph, {name})[1]:
            ok.add(name)
    if not ok:
        return set()
    dyn, valid = _propagate(graph, ok)
    return dyn if valid else set()


def with_time_length(spec, length: int):
    """A copy of ``spec`` whose time-dynamic inputs have sequence length ``length`` (the weights
    of the original fit it unchanged)."""
    from ..lowering import lower
    from ..spec import parse_spec

    dyn = time_dynamic_values(lower(spec))
    d = spec.to_dict()
    for name, body in d["inputs"].items():
        if name in dyn:
            body["shape"] = [length, *body["shape"][1:]]
    return parse_spec(d)
