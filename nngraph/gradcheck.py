"""Prove a network's hand-derived gradients against float64 central finite differences.

``gradcheck(spec)`` builds the network in float64 with random (seeded) weights, inputs and targets,
computes the gradient of the training loss with the backward kernels — through the fused
softmax/sigmoid + loss path exactly as training uses it — and compares it, for every parameter,
with (L(θ + h v) - L(θ - h v)) / 2h along random directions v and on single coordinates.
The op tests use the same machinery with the objective L = sum(r * y) for a random r, which checks
every op in isolation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .backend.program import Plan, Program
from .ir import mark_loss_fused
from .model import Model
from .runtime import random_inputs
from .spec import Spec


@dataclass
class GradRow:
    """The worst disagreement found for one parameter (or input)."""

    name: str
    checks: int
    max_error: float  # |analytic - numeric| / max(1, |numeric|)

    def ok(self, tol: float) -> bool:
        return self.max_error <= tol


@dataclass
class GradReport:
    rows: list[GradRow] = field(default_factory=list)
    tol: float = 1e-6

    @property
    def ok(self) -> bool:
        return all(r.ok(self.tol) for r in self.rows)

    def summary(self) -> str:
        width = max([len(r.name) for r in self.rows] + [9])
        lines = [f"{'parameter':<{width}}  checks  max error"]
        for r in self.rows:
            flag = "" if r.ok(self.tol) else "   <-- exceeds tolerance"
            lines.append(f"{r.name:<{width}}  {r.checks:>6}  {r.max_error:9.2e}{flag}")
        lines.append(f"{'OK' if self.ok else 'FAILED'}: float64 central differences, tolerance {self.tol:g}")
        return "\n".join(lines)


def compare_gradients(plan: Plan, objective: Callable[[], float], grads: dict[str, np.ndarray],
                      targets: dict[str, np.ndarray], rng: np.random.Generator, h: float = 1e-6,
                      directions: int = 2, coords: int = 6) -> list[GradRow]:
    """For each named array in ``targets`` (perturbed in place), the worst error of the analytic
    gradient ``grads[name]`` against central differences of ``objective``."""
    rows = []
    for label, arr in targets.items():
        g = grads[label]
        worst, n = 0.0, 0
        probes = [rng.standard_normal(arr.shape) for _ in range(directions)]
        flat_idx = rng.choice(arr.size, size=min(coords, arr.size), replace=False)
        for i in flat_idx:
            e = np.zeros(arr.size)
            e[i] = 1.0
            probes.append(e.reshape(arr.shape))
        for v in probes:
            base = arr.copy()
            arr[...] = base + h * v
            up = objective()
            arr[...] = base - h * v
            down = objective()
            arr[...] = base
            numeric = (up - down) / (2 * h)
            analytic = float(np.sum(g * v))
            worst = max(worst, abs(numeric - analytic) / max(1.0, abs(numeric)))
            n += 1
        rows.append(GradRow(label, n, worst))
    return rows


def _random_targets(model: Model, batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = (batch,) + model.graph.values[model.graph.output].shape
    if model.spec.loss == "cross_entropy":
        return rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int64)
    if model.spec.loss == "binary_cross_entropy":
        return (rng.random(shape) > 0.5).astype(np.float64)
    return rng.standard_normal(shape)


def gradcheck(spec: Spec, seed: int = 0, batch: int = 3, tol: float = 1e-6) -> GradReport:
    """Check the gradient of the spec's training loss w.r.t. every parameter (float64)."""
    model = Model.compile(spec, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    # The spec's own initial weights keep activations in range (large random weights saturate
    # softmax, where the loss's log floor makes finite differences meaningless); parameters the
    # initializer sets to zero get small random values, since zero biases would hide bugs.
    for name in model.params.grads:  # trainable parameters only (state has no gradient)
        arr = model.params.values[name]
        if not arr.any():
            arr[...] = 0.1 * rng.standard_normal(arr.shape)
    loss = model.loss
    graph = mark_loss_fused(model.graph, loss.fuses_with)
    plan = Program(graph, model.params, seed=seed).plan(batch, training=True)
    feeds = random_inputs(model, batch, rng, np.float64)
    t = _random_targets(model, batch, rng)
    fused = model._loss_fused()

    def objective() -> float:
        plan.set_inputs(feeds)
        return float(loss.compute(plan.forward(), t, plan.output_grad, fused))

    objective()
    plan.backward()
    grads = {k: v.copy() for k, v in model.params.grads.items()}
    rows = compare_gradients(plan, objective, grads, {k: model.params.values[k] for k in grads}, rng)
    return GradReport(rows, tol)
