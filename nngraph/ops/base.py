"""OpSpec and OpKernels: what an IR operator is, apart from how it runs.

An op's *description* (``OpSpec``) is pure Python and imports no Numba: its shape rule, its
parameters and non-trainable state, the layer types that lower to it, its rule for a sequence
axis, whether it couples the samples of a batch, which activations its epilogue takes over, a
plain-numpy reference and its ONNX lowering. ``nngraph check``, lowering, export, ``inspect`` and
``sample`` read only descriptions (``ops.registry.SPECS``), so they start without compiling or
loading a kernel.

The *kernels* (``OpKernels``) live in the module the description names in ``kernels``, which
registers them in its ``KERNELS`` dict; ``nngraph.backend.kernels`` imports that module only when
a program binds the op.

Kernel binding: ``bind_forward``/``bind_backward`` receive the actual buffers once, when the backend
plans a batch size and a mode, and return a zero-argument closure; a step is then a flat list of
closure calls with no allocation and no per-call reshaping. ``ctx`` (a ``RunContext``) says whether
the plan trains, and carries the step counter and the run's seed for reproducible randomness.

Backward contract: ``dy`` is the gradient of the loss w.r.t. the node's output and may be clobbered;
each entry of ``dxs`` is a buffer to *overwrite* with the input's gradient, or ``None`` when that
input needs no gradient; ``ps`` holds every declared parameter and state array in declaration
order, ``dps`` the matching gradient buffers to overwrite (``None`` for state, which has no
gradient). The backend sums gradients where a value feeds several nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from ..ir.graph import Node, TensorType

Closure = Callable[[], None]
AttrMap = Callable[[dict[str, Any]], dict[str, Any]]

# Sequence-axis rules (``OpSpec.time_rule``), read by ``onnx_io.dynamic_axes``:
PER_STEP = "per_step"   # acts on each time step alone: a time axis on the input flows to the output
SEQUENCE = "sequence"   # reads its first input as a sequence (recurrent layers, sequence_pool); the
                        # output keeps the time axis only when the node's return_sequences is true
SEQUENCE_OUT = "sequence_out"  # reads its whole first input as a sequence and keeps its time axis
                               # (attention, positional embedding): any length works, but steps mix
FIXED = "fixed"         # needs a fixed length (flatten, conv, pooling over time, ...)


@dataclass(frozen=True)
class ParamDecl:
    """A parameter (or, with ``trainable=False``, non-trainable state such as running statistics)
    an op needs: a role (``W``, ``b``, ``running_mean``, ...) used as the name suffix, and its init."""

    role: str
    shape: tuple[int, ...]
    init: str
    fan_in: int
    fan_out: int
    trainable: bool = True


@dataclass(frozen=True)
class RunContext:
    """What a plan's kernels know about the run they are part of, fixed when they are bound.

    training   training mode (dropout active, batch statistics) or inference mode
    seed       the run's seed (``train.seed``): randomness is a pure function of it
    counters   int64[2], written by the trainer before each pass: [0] the optimizer step the
               pass belongs to, [1] the position of the pass's first sample within the batch
               (non-zero for the second and later micro-batches), so a dropout mask depends on
               (seed, step, layer, sample index in the batch) and on nothing else
    """

    training: bool = False
    seed: int = 0
    counters: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64), compare=False)

    @property
    def step(self) -> int:
        return int(self.counters[0])


class OnnxBuilder(Protocol):
    """What a lowering may do (implemented by ``nngraph.onnx_io.export``)."""

    opset: int

    def node(self, op_type: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None: ...
    def constant(self, name_hint: str, value: np.ndarray) -> str: ...
    def fresh(self, hint: str) -> str: ...
    def param(self, name: str) -> np.ndarray: ...
    def alias(self, out_name: str, in_name: str) -> None: ...


def _no_params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    return []


def per_step_on_sequences(node: Node, types: list[TensorType]) -> str:
    """The time rule of an op that acts on the last axis: per step on (time, features)."""
    return PER_STEP if len(types[0].shape) >= 2 else FIXED


@dataclass(frozen=True)
class OpSpec:
    """The description every op registers (pure Python; see the module docstring).

    name          the IR op name
    infer(node, in_types) -> out_type           shape rule; raises ShapeError naming node.layer
    to_onnx(node, in_names, out_name, in_types, b)   emits ONNX nodes through an OnnxBuilder
                                                     (always the inference form)
    reference(node, xs, ps, ctx) -> y            plain-numpy forward (both modes), the tests' oracle
    kernels       module path whose ``KERNELS[name]`` is this op's OpKernels
    params(node, in_types) -> [ParamDecl]        parameters and state, in the order kernels get them
    layers        spec layer type -> function of the layer's resolved attributes giving the node's
                  attributes (the lowering of each layer type that becomes this op)
    time_rule     PER_STEP | SEQUENCE | FIXED, or a function (node, in_types) -> one of them
    per_sample    False when a sample's output depends on the other samples of the batch (batch
                  statistics): the trainer then never splits a batch into micro-batches
    fuses         activations this op's epilogue computes itself (a following activation node
                  of one of these kinds is folded into it; any other stays a node of its own)
    scratch(node, in_types) -> floats per sample its kernels keep besides the output (attention's
                  softmax matrices), counted by the memory estimate (``ir.memory``)
    """

    name: str
    infer: Callable[[Node, list[TensorType]], TensorType]
    to_onnx: Callable[..., None]
    reference: Callable[..., np.ndarray]
    kernels: str
    params: Callable[[Node, list[TensorType]], list[ParamDecl]] = _no_params
    layers: dict[str, AttrMap] = field(default_factory=dict)
    time_rule: str | Callable[[Node, list[TensorType]], str] = FIXED
    per_sample: bool = True
    fuses: frozenset[str] = frozenset()
    scratch: Callable[[Node, list[TensorType]], int] | None = None

    def time_rule_for(self, node: Node, in_types: list[TensorType]) -> str:
        rule = self.time_rule
        return rule if isinstance(rule, str) else rule(node, in_types)


def _no_workspace(node: Node, types: list[TensorType], batch: int) -> dict[str, tuple[int, ...]]:
    return {}


@dataclass(frozen=True)
class OpKernels:
    """How an op runs: its bound kernels (in a module that may import Numba).

    bind_forward(node, xs, ps, y, ws, ctx) -> closure
    bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx) -> closure
    workspace(node, in_types, batch) -> {name: shape}   scratch buffers (with the batch axis)
    """

    bind_forward: Callable[..., Closure]
    bind_backward: Callable[..., Closure]
    workspace: Callable[[Node, list[TensorType], int], dict[str, tuple[int, ...]]] = _no_workspace


def same_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The usual layer lowering: the node takes the layer's resolved attributes as they are."""
    return dict(attrs)


def noop() -> None:
    """A closure that does nothing (e.g. the gradient of an input nobody asked for)."""
