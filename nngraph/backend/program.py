"""Program: executes an IR graph with Numba kernels.

``Program.plan(batch, training)`` allocates every activation, gradient and workspace buffer for
that batch size once and binds each op's kernels to them in that mode; a training step is then two
flat lists of closure calls (forward, backward) with no allocation. Plans are cached per batch size
and mode (a run uses at most two training plans — the batch size and the last, smaller batch — and
its inference plans for validation). Inference plans bind no backward pass and allocate no
gradients (only the output's, which the loss kernels write).

All plans of a program share one ``RunContext.counters`` buffer: the trainer writes the step (and a
micro-batch's first sample) there, and every bound kernel reads it when it runs.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ops.base import RunContext
from ..ops.registry import get_op
from .aligned import aligned_zeros, aligned_zeros_like
from .kernels import kernels_for
from .params import ParamStore

_DTYPES = {"float32": None, "int64": np.int64}


class Plan:
    """Buffers and bound kernels for one batch size in one mode (``ctx.training``)."""

    def __init__(self, graph: Graph, params: ParamStore, batch: int, input_grads: bool = False,
                 ctx: RunContext | None = None):
        ctx = RunContext(training=True) if ctx is None else ctx
        self.batch = batch
        self.ctx = ctx
        dtype = params.dtype
        vals: dict[str, np.ndarray] = {}
        for name, t in graph.values.items():
            dt = _DTYPES.get(t.dtype) or dtype
            vals[name] = aligned_zeros((batch,) + t.shape, dt)
        self.values = vals
        self.inputs = {n: vals[n] for n in graph.inputs}
        self.output = vals[graph.output]

        # A value needs a gradient when it is a node output or (optionally) a float graph input.
        needs = {n.output for n in graph.nodes} if ctx.training else set()
        if input_grads and ctx.training:
            needs |= {n for n in graph.inputs if graph.values[n].dtype == "float32"}
        # A value feeding k > 1 nodes: each consumer writes its own buffer; the sum is formed
        # before the producer's backward runs (reverse order guarantees all consumers ran).
        grads = {v: aligned_zeros_like(vals[v]) for v in needs}
        readers = {v: sum(v in m.inputs for m in graph.nodes) + (v == graph.output) for v in needs}
        shared, shared_parts = _add_sharing(graph, needs, readers)
        for node in reversed(graph.nodes):  # consumers first: an add's own output gradient may be shared too
            for v in node.inputs:
                if shared.get(v) == node.output:
                    grads[v] = grads[node.output]
        self.grads = grads
        # inference plans: the loss kernels still write an output gradient (evaluate's loss)
        self.output_grad = grads[graph.output] if graph.output in grads else aligned_zeros_like(self.output)
        fan: dict[str, list[np.ndarray]] = {}
        slots: dict[tuple[str, int], np.ndarray | None] = {}
        for node in graph.nodes:
            for i, v in enumerate(node.inputs):
                if v not in needs:
                    slots[(node.name, i)] = None
                    continue
                if readers[v] == 1:
                    slots[(node.name, i)] = grads[v]
                elif (node.name, i) in shared_parts:  # the add's output gradient is this part
                    fan.setdefault(v, []).append(grads[node.output])
                    slots[(node.name, i)] = grads[node.output]
                else:
                    buf = aligned_zeros_like(vals[v])
                    fan.setdefault(v, []).append(buf)
                    slots[(node.name, i)] = buf

        self.forward_calls = []
        backward_calls = []
        for node in graph.nodes:
            op = kernels_for(node.op)
            xs = [vals[v] for v in node.inputs]
            ps = [params.values[p] for p in node.params]
            dps = [params.grads.get(p) for p in node.params]  # None for non-trainable state
            in_types = [graph.values[v] for v in node.inputs]
            ws = {k: aligned_zeros(shape, dtype) for k, shape in op.workspace(node, in_types, batch).items()}
            y = vals[node.output]
            self.forward_calls.append(op.bind_forward(node, xs, ps, y, ws, ctx))
            if not ctx.training:
                continue
            dxs = [slots[(node.name, i)] for i in range(len(node.inputs))]
            calls = [op.bind_backward(node, xs, ps, y, grads[node.output], dxs, dps, ws, ctx)]
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
        if not self.ctx.training:
            raise RuntimeError("an inference plan has no backward pass")
        for call in self.backward_calls:
            call()


def _summer(total: np.ndarray, parts: list[np.ndarray]):
    from ..ops.join_kernels import adder  # here: describing and exporting a model loads no Numba

    adds = [adder(parts[0], parts[1], total)] + [adder(total, p, total) for p in parts[2:]]

    def run():
        for add in adds:
            add()
    return run


# An Add passes its output gradient unchanged to every input. One input may take that buffer
# itself instead of a copy: its producer's backward then reads (and may overwrite) the add's output
# gradient, which nothing reads after the add's own backward has copied it to the other inputs.
# A transformer block's two residual adds copied 1 MB each per step (0.3 ms apiece at batch 32).

def _add_sharing(graph: Graph, needs: set[str],
                 readers: dict[str, int]) -> tuple[dict[str, str], set[tuple[str, int]]]:
    """For each Add without a fused activation whose output has a gradient, the first input it reads
    once takes the add's output gradient buffer: as the input's whole gradient when the add is its
    only reader (returned {value: add output}; such an input is preferred), else as its part of the
    fan-in sum (returned {(add, input index)})."""
    shared: dict[str, str] = {}
    parts: set[tuple[str, int]] = set()
    for node in graph.nodes:
        if node.op != "Add" or node.attrs.get("activation", "identity") != "identity" or node.output not in needs:
            continue
        once = [(i, v) for i, v in enumerate(node.inputs) if v in needs and node.inputs.count(v) == 1]
        alone = [v for _, v in once if readers[v] == 1]
        if alone:
            shared[alone[0]] = node.output
        elif once:
            parts.add((node.name, once[0][0]))
    return shared, parts


class Program:
    """A graph bound to a parameter store, with plans cached per batch size and mode.

    ``seed`` keys the run's randomness (dropout masks); ``counters`` is the RunContext buffer all
    plans share (see the module docstring)."""

    def __init__(self, graph: Graph, params: ParamStore, input_grads: bool = False, seed: int = 0):
        self.graph = graph
        self.params = params
        self.input_grads = input_grads
        self.seed = seed
        self.counters = np.zeros(2, np.int64)
        self._plans: dict[tuple[int, bool], Plan] = {}

    def plan(self, batch: int, training: bool = False) -> Plan:
        """The plan for ``batch`` samples in training or inference mode (built once, then cached)."""
        key = (batch, training)
        p = self._plans.get(key)
        if p is None:
            ctx = RunContext(training=training, seed=self.seed, counters=self.counters)
            p = Plan(self.graph, self.params, batch, self.input_grads, ctx)
            self._plans[key] = p
        return p

    @property
    def per_sample(self) -> bool:
        """Whether every op treats samples independently (no batch statistics): only then may a
        batch be split into micro-batches."""
        return all(get_op(n.op).per_sample for n in self.graph.nodes)

    def activation_bytes_per_sample(self) -> int:
        """Bytes of every value and its gradient for one sample (what a plan's buffers grow by)."""
        item = np.dtype(self.params.dtype).itemsize
        return 2 * item * sum(int(np.prod(t.shape)) for t in self.graph.values.values())

    def forward(self, feeds: dict[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Inference (inference mode) over any number of samples, in chunks of ``batch_size``;
        returns a new array."""
        n = len(next(iter(feeds.values())))
        out = np.empty((n,) + self.graph.values[self.graph.output].shape,
                       _DTYPES.get(self.graph.values[self.graph.output].dtype) or self.params.dtype)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            plan = self.plan(stop - start)
            plan.set_inputs({k: v[start:stop] for k, v in feeds.items()})
            out[start:stop] = plan.forward()
        return out
