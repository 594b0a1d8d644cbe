"""Spec -> IR: lower each layer to an op, infer every shape and declare every parameter.

A layer type's lowering is one entry in ``LOWERINGS``: it maps the layer's resolved attributes to
an IR op name and the op's attributes. Shape rules live with the ops (``nngraph.ops``).
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import ShapeError
from .ir import Graph, Node, ParamInfo, TensorType, fuse_activations
from .ops.registry import get_op
from .spec import Spec


def _same(op: str) -> Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]:
    return lambda attrs: (op, dict(attrs))


LOWERINGS: dict[str, Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    "dense": _same("Gemm"),
    "relu": _same("Relu"),
    "sigmoid": _same("Sigmoid"),
    "tanh": _same("Tanh"),
    "softmax": _same("Softmax"),
    "identity": _same("Identity"),
    "add": _same("Add"),
    "concat": _same("Concat"),
    "conv2d": lambda attrs: ("Conv", {**attrs, "rank": 2}),
    "conv1d": lambda attrs: ("Conv", {**attrs, "rank": 1}),
    "maxpool2d": _same("MaxPool"),
    "avgpool2d": _same("AveragePool"),
    "global_avgpool2d": _same("GlobalAveragePool"),
    "flatten": _same("Flatten"),
    "rnn": _same("RNN"),
    "lstm": _same("LSTM"),
    "gru": _same("GRU"),
    "embedding": _same("Embedding"),
}


def lower(spec: Spec, fuse: bool = True) -> Graph:
    """Build the typed IR graph of a spec. Raises ShapeError naming the layer on any mismatch."""
    values: dict[str, TensorType] = {name: TensorType(inp.shape, inp.dtype) for name, inp in spec.inputs}
    nodes: list[Node] = []
    params: dict[str, ParamInfo] = {}
    prev = spec.inputs[0][0]
    for layer, name in zip(spec.layers, spec.layer_names()):
        if layer.inputs is None and len(spec.inputs) > 1 and not nodes:
            raise ShapeError(f"layer {name}: the spec has several inputs; name the ones this layer reads "
                             "with \"inputs\"")
        inputs = tuple(layer.inputs) if layer.inputs is not None else (prev,)
        op_name, attrs = LOWERINGS[layer.type](layer.resolved())
        op = get_op(op_name)
        node = Node(name=name, op=op_name, inputs=inputs, output=name, attrs=attrs, layer=name)
        in_types = [values[v] for v in inputs]
        values[name] = op.infer(node, in_types)
        param_names = []
        for decl in op.params(node, in_types):
            pname = f"{name}.{decl.role}"
            params[pname] = ParamInfo(pname, decl.shape, decl.init, decl.fan_in, decl.fan_out)
            param_names.append(pname)
        nodes.append(Node(name, op_name, inputs, name, attrs, tuple(param_names), name))
        prev = name
    graph = Graph(tuple(n for n, _ in spec.inputs), tuple(nodes), prev, values, params)
    return fuse_activations(graph) if fuse else graph
