"""Graph -> Graph passes. Pure functions: they return a new graph and never touch parameters' values."""
from __future__ import annotations

from dataclasses import replace

from .graph import Graph, Node

# stand-alone activation op -> the activation name a producer's epilogue knows it by
_FUSABLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax"}


def _fuses(node: Node) -> frozenset[str]:
    from ..ops.registry import get_op

    return get_op(node.op).fuses


def fuse_activations(graph: Graph) -> Graph:
    """Fold a stand-alone activation into the node before it (a Gemm, Conv, BatchNormalization or
    Add), when that node feeds nothing else and its epilogue computes that activation
    (``OpSpec.fuses``).

    The fused node computes the activation in its epilogue (one pass over memory instead of two)
    and takes over the activation's output name, so downstream references are unchanged.
    """
    nodes = list(graph.nodes)
    values = dict(graph.values)
    changed = True
    while changed:
        changed = False
        for i, act in enumerate(nodes):
            kind = _FUSABLE.get(act.op)
            if kind is None or (act.op == "Softmax" and act.attrs.get("axis", -1) != -1):
                continue
            src = next((n for n in nodes if n.output == act.inputs[0]), None)
            if src is None or kind not in _fuses(src) or src.attrs.get("activation", "identity") != "identity":
                continue
            if src.output == graph.output or sum(src.output in n.inputs for n in nodes) != 1:
                continue
            if act.output == graph.output and src.op != "Gemm":
                continue  # only the Gemm's backward knows a loss that returns dz (mark_loss_fused)
            fused = replace(src, output=act.output, attrs={**src.attrs, "activation": kind})
            del values[src.output]
            nodes[nodes.index(src)] = fused
            nodes.remove(act)
            changed = True
            break
    return replace(graph, nodes=tuple(nodes), values=values)


def mark_loss_fused(graph: Graph, activation: str | None) -> Graph:
    """Tell the output node its activation's derivative is folded into the loss (softmax +
    cross-entropy, sigmoid + binary cross-entropy): its backward then passes the gradient straight
    through. Returns the graph unchanged when the output is not produced by that activation."""
    if activation is None or output_activation(graph) != activation:
        return graph
    nodes = tuple(replace(n, attrs={**n.attrs, "loss_fused": True}) if n.output == graph.output else n
                  for n in graph.nodes)
    return replace(graph, nodes=nodes)


def output_activation(graph: Graph) -> str:
    """The activation that produces the graph output ('identity' when none)."""
    node = graph.producer(graph.output)
    if node is None:
        return "identity"
    if node.op in _FUSABLE:
        if node.op == "Softmax" and node.attrs.get("axis", -1) != -1:
            return "identity"
        return _FUSABLE[node.op]
    return node.attrs.get("activation", "identity") if node.op == "Gemm" else "identity"
