"""A compile-time estimate of the memory a network needs, so a spec that cannot fit (``units`` of
10**7 on 64 inputs, a huge conv) is an error at ``check`` naming the layer and the bytes, instead of a
MemoryError, a ValueError from numpy or a protobuf EncodeError minutes later.

The estimate is a lower bound of what training allocates, in float32:
- parameters and non-trainable state, plus per trainable parameter a gradient and up to 3 optimizer
  slots (Adam's two moments; RMSprop centered: square average, momentum and mean);
- per sample, every value of the graph twice (the forward output and its gradient), and what an
  op's kernels keep besides (``OpSpec.scratch``: attention's softmax matrices, 2 heads T^2), times
  the batch.
Other kernel workspaces come on top, so a spec under the limit may still be tight; one over it
cannot run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ShapeError
from .graph import Graph

FLOAT_BYTES = 4
# ONNX models are one protobuf message, limited to 2 GiB; the initializers must fit with room for
# the graph and the metadata (the spec).
ONNX_LIMIT = 2**31 - 2**20
OPTIMIZER_SLOTS = 3  # the most any optimizer keeps per parameter (rmsprop centered with momentum)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (binary units, as ``free -h``)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:,.0f} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def physical_memory() -> int | None:
    """The machine's RAM in bytes (None where the platform does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a graph needs: its parameters (the ONNX initializers), their training companions, and
    its activations per sample; ``largest_*`` name the layers that dominate."""

    param_bytes: int
    trainable_bytes: int
    activation_bytes_per_sample: int
    largest_param_layer: str
    largest_param_layer_bytes: int
    largest_activation_layer: str
    largest_activation_layer_bytes: int

    def training_bytes(self, batch_size: int) -> int:
        """Parameters + gradients + optimizer slots + forward and backward activations of a batch."""
        return (self.param_bytes + self.trainable_bytes * (1 + OPTIMIZER_SLOTS)
                + self.activation_bytes_per_sample * batch_size)

    def summary(self, batch_size: int) -> str:
        """One line for ``nngraph check``."""
        return (f"memory: parameters {human_bytes(self.param_bytes)}, activations "
                f"{human_bytes(self.activation_bytes_per_sample)} per sample; training at batch size "
                f"{batch_size} needs at least {human_bytes(self.training_bytes(batch_size))}")


def estimate_memory(graph: Graph) -> MemoryEstimate:
    """Sum the graph's parameter and activation bytes, per spec layer."""
    from ..ops.registry import get_op  # ops import the IR: resolved at call time

    per_layer_params: dict[str, int] = {}
    per_layer_act: dict[str, int] = {}
    trainable = 0
    for n in graph.nodes:
        for p in n.params:
            info = graph.params[p]
            b = info.size * FLOAT_BYTES
            per_layer_params[n.layer or n.name] = per_layer_params.get(n.layer or n.name, 0) + b
            trainable += b if info.trainable else 0
        t = graph.values[n.output]
        # int64 values (token ids) are inputs only; every node output is float32
        scratch = get_op(n.op).scratch
        extra = scratch(n, [graph.values[v] for v in n.inputs]) if scratch is not None else 0
        per_layer_act[n.layer or n.name] = (per_layer_act.get(n.layer or n.name, 0)
                                            + (2 * t.size + extra) * FLOAT_BYTES)
    inputs = sum(graph.values[i].size * 8 for i in graph.inputs)
    big_p = max(per_layer_params.items(), key=lambda kv: kv[1], default=("", 0))
    big_a = max(per_layer_act.items(), key=lambda kv: kv[1], default=("", 0))
    return MemoryEstimate(sum(per_layer_params.values()), trainable, sum(per_layer_act.values()) + inputs,
                          big_p[0], big_p[1], big_a[0], big_a[1])


def check_memory(graph: Graph, batch_size: int, available: int | None = None) -> MemoryEstimate:
    """Raise ShapeError naming the layer and the bytes when the parameters exceed ONNX's 2 GB
    limit or training at ``batch_size`` cannot fit in ``available`` bytes (default: the machine's
    physical memory). Returns the estimate."""
    est = estimate_memory(graph)
    if est.param_bytes > ONNX_LIMIT:
        raise ShapeError(f"layer {est.largest_param_layer}: its parameters take "
                         f"{human_bytes(est.largest_param_layer_bytes)} ({est.largest_param_layer_bytes:,} bytes), "
                         f"the network's {human_bytes(est.param_bytes)}: beyond the 2 GB an ONNX model can hold")
    available = physical_memory() if available is None else available
    need = est.training_bytes(batch_size)
    if available is not None and need > available:
        act = est.activation_bytes_per_sample * batch_size
        layer, lb = ((est.largest_param_layer, est.largest_param_layer_bytes * (1 + OPTIMIZER_SLOTS + 1))
                     if est.param_bytes * (2 + OPTIMIZER_SLOTS) >= act else
                     (est.largest_activation_layer, est.largest_activation_layer_bytes * batch_size))
        raise ShapeError(f"layer {layer}: needs {human_bytes(lb)} ({lb:,} bytes) to train at batch size "
                         f"{batch_size}, the network at least {human_bytes(need)}: more than this machine's "
                         f"{human_bytes(available)} of memory")
    return est
