"""Program: executes an IR graph with Numba kernels.

``Program.plan(batch)`` allocates every activation, gradient and workspace buffer for that batch size
once and binds each op's kernels to them; a training step is then two flat lists of closure calls
(forward, backward) with no allocation. Plans are cached per batch size (a run uses at most two:
the batch size and the last, smaller batch).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ops.registry import get_op
from .params import ParamStore

_DTYPES = {"float32": None, "int64": np.int64}


class Plan:
    """Buffers and bound kernels for one batch size."""

    def __init__(self, graph: Graph, params: ParamStore, batch: int, input_grads: bool = False):
        self.batch = batch
        dtype = params.dtype
        vals: dict[str, np.ndarray] = {}
        for name, t in graph.values.items():
            dt = _DTYPES.get(t.dtype) or dtype
            vals[name] = np.zeros((batch,) + t.shape, dt)
        self.values = vals
        self.inputs = {n: vals[n] for n in graph.inputs}
        self.output = vals[graph.output]

        # A value needs a gradient when it is a node output or (optionally) a float graph input.
        needs = {n.output for n in graph.nodes}
        if input_grads:
            needs |= {n for n in graph.inputs if graph.values[n].dtype == "float32"}
        # A value feeding k > 1 nodes: each consumer writes its own buffer; the sum is formed
        # before the producer's backward runs (reverse order guarantees all consumers ran).
        grads = {v: np.zeros_like(vals[v]) for v in needs}
        self.grads = grads
        self.output_grad = grads[graph.output]
        fan: dict[str, list[np.ndarray]] = {}
        slots: dict[tuple[str, int], np.ndarray | None] = {}
        for node in graph.nodes:
            for i, v in enumerate(node.inputs):
                if v not in needs:
                    slots[(node.name, i)] = None
                    continue
                n_consumers = sum(v in m.inputs for m in graph.nodes) + (v == graph.output)
                if n_consumers == 1:
                    slots[(node.name, i)] = grads[v]
                else:
                    buf = np.zeros_like(vals[v])
                    fan.setdefault(v, []).append(buf)
                    slots[(node.name, i)] = buf

        self.forward_calls = []
        backward_calls = []
        for node in graph.nodes:
            op = get_op(node.op)
            xs = [vals[v] for v in node.inputs]
            ps = [params.values[p] for p in node.params]
            dps = [params.grads[p] for p in node.params]
            in_types = [graph.values[v] for v in node.inputs]
            ws = {k: np.zeros(shape, dtype) for k, shape in op.workspace(node, in_types, batch).items()}
            y = vals[node.output]
            self.forward_calls.append(op.bind_forward(node, xs, ps, y, ws))
            dxs = [slots[(node.name, i)] for i in range(len(node.inputs))]
            calls = [op.bind_backward(node, xs, ps, y, grads[node.output], dxs, dps, ws)]
            parts = fan.get(node.output)
            if parts:
                calls.insert(0, _summer(grads[node.output], parts))
            backward_calls.append(calls)
        # Reverse topological order; the fan-in sum of a value precedes its producer's backward.
        self.backward_calls = [c for calls in reversed(backward_calls) for c in calls]
        # Graph inputs have no producer: their fan-in sums come last.
        self.backward_calls += [_summer(grads[v], fan[v]) for v in graph.inputs if v in fan]

    def set_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        for name, buf in self.inputs.items():
            buf[...] = feeds[name]

    def forward(self) -> np.ndarray:
        for call in self.forward_calls:
            call()
        return self.output

    def backward(self) -> None:
        """Propagate ``output_grad`` (set by the loss) into the parameter gradients."""
        for call in self.backward_calls:
            call()


def _summer(total: np.ndarray, parts: list[np.ndarray]):
    first, rest = parts[0], parts[1:]

    def run():
        np.copyto(total, first)
        for p in rest:
            np.add(total, p, out=total)
    return run


class Program:
    """A graph bound to a parameter store, with plans cached per batch size."""

    def __init__(self, graph: Graph, params: ParamStore, input_grads: bool = False):
        self.graph = graph
        self.params = params
        self.input_grads = input_grads
        self._plans: dict[int, Plan] = {}

    def plan(self, batch: int) -> Plan:
        p = self._plans.get(batch)
        if p is None:
            p = Plan(self.graph, self.params, batch, self.input_grads)
            self._plans[batch] = p
        return p

    def activation_bytes_per_sample(self) -> int:
        """Bytes of every value and its gradient for one sample (what a plan's buffers grow by)."""
        item = np.dtype(self.params.dtype).itemsize
        return 2 * item * sum(int(np.prod(t.shape)) for t in self.graph.values.values())

    def forward(self, feeds: dict[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Inference over any number of samples, in chunks of ``batch_size``; returns a new array."""
        n = len(next(iter(feeds.values())))
        out = np.empty((n,) + self.graph.values[self.graph.output].shape,
                       _DTYPES.get(self.graph.values[self.graph.output].dtype) or self.params.dtype)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            plan = self.plan(stop - start)
            plan.set_inputs({k: v[start:stop] for k, v in feeds.items()})
            out[start:stop] = plan.forward()
        return out
