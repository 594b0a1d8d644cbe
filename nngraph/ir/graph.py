"""The IR: small frozen dataclasses. Shapes exclude the batch axis (it is dynamic everywhere);
parameter values live outside the graph (see ``nngraph.backend.params``), so one graph serves many
weight sets."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorType:
    """Shape of one sample (batch excluded) and element type."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        return "(N, " + ", ".join(str(d) for d in self.shape) + ")"


@dataclass(frozen=True)
class ParamInfo:
    """A learned parameter, or (``trainable=False``) an op's non-trainable state such as running
    statistics: shape (full, no batch), initializer and the fans it scales by."""

    name: str
    shape: tuple[int, ...]
    init: str
    fan_in: int
    fan_out: int
    trainable: bool = True

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Node:
    """One operation. ``params`` are parameter names in ``Graph.params``, in the order the op declares."""

    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    layer: str = ""  # the spec layer this node came from (for messages)


@dataclass(frozen=True)
class Graph:
    """A typed graph: every value (inputs and node outputs) has a TensorType."""

    inputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    output: str
    values: dict[str, TensorType]
    params: dict[str, ParamInfo]

    def producer(self, value: str) -> Node | None:
        for n in self.nodes:
            if n.output == value:
                return n
        return None

    def consumers(self, value: str) -> list[Node]:
        return [n for n in self.nodes if value in n.inputs]

    @property
    def param_count(self) -> int:
        """Trainable parameters (state such as running statistics is counted by state_count)."""
        return sum(p.size for p in self.params.values() if p.trainable)

    @property
    def state_count(self) -> int:
        return sum(p.size for p in self.params.values() if not p.trainable)

    def table(self) -> str:
        """The IR as a readable table: node, op, output shape, parameter count, and the total."""
        rows = [("node", "op", "inputs", "output shape", "params")]
        for name in self.inputs:
            rows.append((name, "Input", "", str(self.values[name]), "0"))
        for n in self.nodes:
            op = n.op
            act = n.attrs.get("activation")
            if act and act != "identity":
                op = f"{op}+{act}"
            count = sum(self.params[p].size for p in n.params if self.params[p].trainable)
            rows.append((n.name, op, ",".join(n.inputs), str(self.values[n.output]), f"{count:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"total parameters: {self.param_count:,}"
                     + (f" (+ {self.state_count:,} non-trainable state values)" if self.state_count else ""))
        return "\n".join(lines)
