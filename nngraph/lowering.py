"""Spec -> IR: lower each layer to an op, infer every shape and declare every parameter and state.

Which op a layer type becomes, and with which attributes, is part of the op's description
(``OpSpec.layers``); ``lower`` is a loop over the layers. A layer whose op has an output
epilogue (``OpSpec.fuses``, dense and conv) but whose ``activation`` that epilogue does not compute
becomes two nodes: the op, writing ``<layer>/linear``,
and the activation op, which takes the layer's name. A layer type with an expansion (attention,
transformer_block; ``ops.expansion``) becomes its sub-layers, each lowered the same way.
"""
from __future__ import annotations

from .errors import ShapeError
from .ir import Graph, Node, ParamInfo, TensorType, fuse_activations
from .ir.memory import check_memory
from .ops.normalize import check_reads_input
from .ops.registry import EXPANSIONS, get_op, layer_op
from .spec import Spec
from .spec.fields import resolved
from .spec.tables import LAYERS


def lower(spec: Spec, fuse: bool = True) -> Graph:
    """Build the typed IR graph of a spec. Raises ShapeError naming the layer on any mismatch."""
    values: dict[str, TensorType] = {name: TensorType(inp.shape, inp.dtype) for name, inp in spec.inputs}
    nodes: list[Node] = []
    params: dict[str, ParamInfo] = {}

    def add(name: str, op_name: str, inputs: tuple[str, ...], output: str, attrs: dict, layer: str) -> None:
        op = get_op(op_name)
        if output in params:
            raise ShapeError(f"layer {layer}: the name {output!r} is already taken by a parameter")
        node = Node(name=name, op=op_name, inputs=inputs, output=output, attrs=attrs, layer=layer)
        in_types = [values[v] for v in inputs]
        values[output] = op.infer(node, in_types)
        param_names = []
        for decl in op.params(node, in_types):
            pname = f"{name}.{decl.role}"
            if pname in params or pname in values:
                raise ShapeError(f"layer {layer}: its parameter name {pname!r} is already taken")
            params[pname] = ParamInfo(pname, decl.shape, decl.init, decl.fan_in, decl.fan_out, decl.trainable)
            param_names.append(pname)
        nodes.append(Node(name, op_name, inputs, output, attrs, tuple(param_names), layer))

    def emit(name: str, layer_type: str, attrs: dict, inputs: tuple[str, ...], layer: str) -> None:
        """Lower one layer (``attrs`` resolved); an expansion's sub-layers recursively."""
        if name in values:
            raise ShapeError(f"layer {layer}: the name {name!r} is already taken")
        expand = EXPANSIONS.get(layer_type)
        if expand is not None:
            for sub in expand(name, attrs, inputs, [values[v] for v in inputs], layer):
                fields = LAYERS[sub.type].fields if sub.type in LAYERS else None
                emit(sub.name, sub.type, resolved(fields, sub.attrs) if fields else dict(sub.attrs), sub.inputs, layer)
            return
        op = layer_op(layer_type)
        attrs = op.layers[layer_type](attrs)
        act = attrs.get("activation")
        if op.fuses and act is not None and act != "identity" and act not in op.fuses:
            act_op = layer_op(act)
            add(name, op.name, inputs, f"{name}/linear", {**attrs, "activation": "identity"}, layer)
            add(f"{name}/{act}", act_op.name, (f"{name}/linear",), name, act_op.layers[act]({}), layer)
        else:
            add(name, op.name, inputs, name, attrs, layer)

    prev = spec.inputs[0][0]
    for layer, name in zip(spec.layers, spec.layer_names()):
        if layer.inputs is None and len(spec.inputs) > 1 and not nodes:
            raise ShapeError(f"layer {name}: the spec has several inputs; name the ones this layer reads "
                             "with \"inputs\"")
        emit(name, layer.type, layer.resolved(), tuple(layer.inputs) if layer.inputs is not None else (prev,), name)
        prev = name
    graph = Graph(tuple(n for n, _ in spec.inputs), tuple(nodes), prev, values, params)
    check_reads_input(graph)
    _check_loss_output(spec, graph)
    # before any weight is drawn: a network that cannot fit is a one-line error naming the layer
    check_memory(graph, spec.train.batch_size)
    return fuse_activations(graph) if fuse else graph



def _check_loss_output(spec: Spec, graph: Graph) -> None:
    """cross_entropy reads rows of class scores: (N, classes), or (N, time, classes) for sequences.
    An image-shaped output such as (N, 64, 2, 10) — a dense layer applied to the last axis of a conv's
    output — is a spec mistake caught here, not when the data's targets fail to fit it."""
    if spec.loss != "cross_entropy":
        return
    out = graph.values[graph.output]
    if len(out.shape) >= 3:
        node = graph.producer(graph.output)
        layer = node.layer if node is not None else graph.output
        raise ShapeError(f"layer {layer}: loss cross_entropy expects scores of shape (N, classes) or "
                         f"(N, time, classes), the network outputs {out}; is a flatten layer missing "
                         "before the last dense layer?")
