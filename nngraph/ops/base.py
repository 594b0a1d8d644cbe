"""OpDef: everything about one IR operator in one place.

An op module defines its shape rule, parameter declarations, forward and backward kernels (derived
by hand; the equations are in the module docstring) and its ONNX lowering, and registers them in
one ``OpDef``. The backend and the exporter only ever talk to ops through this record.

Kernel binding: ``bind_forward``/``bind_backward`` receive the actual buffers once, when the backend
plans a batch size, and return a zero-argument closure; the training step is then a flat list of
closure calls with no allocation and no per-call reshaping.

Backward contract: ``dy`` is the gradient of the loss w.r.t. the node's output and may be clobbered;
each entry of ``dxs`` is a buffer to *overwrite* with the input's gradient, or ``None`` when that
input needs no gradient; ``dps`` are the parameter-gradient buffers to overwrite. The backend sums
gradients where a value feeds several nodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ..ir.graph import Node, TensorType

Closure = Callable[[], None]


@dataclass(frozen=True)
class ParamDecl:
    """A parameter an op needs: a role (``W``, ``b``, ...) used as the name suffix, and its init."""

    role: str
    shape: tuple[int, ...]
    init: str
    fan_in: int
    fan_out: int


class OnnxBuilder(Protocol):
    """What a lowering may do (implemented by ``nngraph.onnx_io.export``)."""

    opset: int

    def node(self, op_type: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None: ...
    def constant(self, name_hint: str, value: np.ndarray) -> str: ...
    def fresh(self, hint: str) -> str: ...
    def param(self, name: str) -> np.ndarray: ...


@dataclass(frozen=True)
class OpDef:
    """The record every op registers.

    infer(node, in_types) -> out_type            shape rule; raises ShapeError naming node.layer
    params(node, in_types) -> [ParamDecl]        parameters, in the order kernels receive them
    bind_forward(node, xs, ps, y, ws) -> closure
    bind_backward(node, xs, ps, y, dy, dxs, dps, ws) -> closure
    to_onnx(node, in_names, out_name, in_types, b) emits ONNX nodes through an OnnxBuilder
    workspace(node, in_types, batch) -> {name: shape}   scratch buffers (with the batch axis)
    reference(node, xs, ps) -> y                  plain-numpy forward, the tests' oracle
    """

    name: str
    infer: Callable[[Node, list[TensorType]], TensorType]
    bind_forward: Callable[..., Closure]
    bind_backward: Callable[..., Closure]
    to_onnx: Callable[..., None]
    reference: Callable[..., np.ndarray]
    params: Callable[[Node, list[TensorType]], list[ParamDecl]] = lambda node, types: []
    workspace: Callable[[Node, list[TensorType], int], dict[str, tuple[int, ...]]] = (
        lambda node, types, batch: {})


def noop() -> None:
    """A closure that does nothing (e.g. the gradient of an input nobody asked for)."""
