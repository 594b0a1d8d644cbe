"""Prove a network's hand-derived gradients against float64 central finite differences.

``gradcheck(spec)`` builds the network in float64 with random (seeded) weights, inputs and targets,
computes the gradient of the training loss with the backward kernels — through the fused
softmax/sigmoid + loss path exactly as training uses it — and compares it, for every parameter,
with (L(θ + h v) - L(θ - h v)) / 2h along random directions v and on single coordinates.
The op tests use the same machinery with the objective L = sum(r * y) for a random r, which checks
every op in isolation.

Kinks: a ReLU or a max is not differentiable where its input is 0 or tied, and a probe whose ±h step
crosses such a point gives a difference quotient that is no derivative at all. With batch norm every
channel is normalised to unit variance, so tens of thousands of pre-activations sit near 0 and a
random direction moves all of them (mnist_resnet's convs failed at 1e-3 on every seed; the same
network with tanh and average pooling passes at 1e-10). So a probe that disagrees with the analytic
gradient is measured again with smaller steps (h/4, h/16, ... h/1024; float64 rounding stays near
1e-8 of the loss there): the first two successive quotients that agree to tol/4 lie on a smooth
stretch, and the later one is the derivative the analytic value must match — a wrong gradient cannot
hide, since on a smooth stretch every step gives the same quotient. A probe whose quotients never
settle is replaced by a fresh one (reported as ``kinks``).
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
    kinks: int = 0    # probes whose step crossed a non-differentiable point (remeasured or redrawn)

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
            kinks = f"  ({r.kinks} probe{'s' * (r.kinks != 1)} across a kink, remeasured)" if r.kinks else ""
            lines.append(f"{r.name:<{width}}  {r.checks:>6}  {r.max_error:9.2e}{flag}{kinks}")
        lines.append(f"{'OK' if self.ok else 'FAILED'}: float64 central differences, tolerance {self.tol:g}")
        return "\n".join(lines)


def compare_gradients(plan: Plan, objective: Callable[[], float], grads: dict[str, np.ndarray],
                      targets: dict[str, np.ndarray], rng: np.random.Generator, h: float = 1e-6,
                      directions: int = 2, coords: int = 6, tol: float = 1e-6,
                      max_redraws: int = 8) -> list[GradRow]:
    """For each named array in ``targets`` (perturbed in place), the worst error of the analytic
    gradient ``grads[name]`` against central differences of ``objective``. A probe that misses by
    more than ``tol`` is measured again at h/4; if the two quotients disagree the step crossed a
    kink and the probe is redrawn (at most ``max_redraws`` times per array; see the module docstring)."""
    rows = []
    for label, arr in targets.items():
        g = grads[label]
        worst, n, kinks = 0.0, 0, 0

        def quotient(v: np.ndarray, step: float) -> float:
            base = arr.copy()
            arr[...] = base + step * v
            up = objective()
            arr[...] = base - step * v
            down = objective()
            arr[...] = base
            return (up - down) / (2 * step)

        def coordinate(i: int) -> np.ndarray:
            e = np.zeros(arr.size)
            e[i] = 1.0
            return e.reshape(arr.shape)

        probes = [rng.standard_normal(arr.shape) for _ in range(directions)]
        probes += [coordinate(i) for i in rng.choice(arr.size, size=min(coords, arr.size), replace=False)]
        while probes:
            v = probes.pop(0)
            numeric = quotient(v, h)
            analytic = float(np.sum(g * v))
            error = abs(numeric - analytic) / max(1.0, abs(numeric))
            if error > tol:
                settled = _settled_quotient(quotient, v, h, numeric, tol)
                if settled is None and kinks < max_redraws:  # never smooth at any step: redraw
                    kinks += 1
                    probes.append(rng.standard_normal(arr.shape) if np.count_nonzero(v) > 1
                                  else coordinate(int(rng.integers(arr.size))))
                    continue
                if settled is not None:
                    if abs(settled - numeric) > tol / 4 * max(1.0, abs(settled)):
                        kinks += 1  # the h step straddled a kink; the smaller steps did not
                    error = abs(settled - analytic) / max(1.0, abs(settled))
            worst = max(worst, error)
            n += 1
        rows.append(GradRow(label, n, worst, kinks))
    return rows


def _settled_quotient(quotient: Callable[[np.ndarray, float], float], v: np.ndarray, h: float, first: float,
                      tol: float) -> float | None:
    """The quotient at the first step (h/4, h/16, ...) where it agrees with the previous step's to
    tol/4, or None when no two successive steps agree (every step crosses a kink)."""
    prev = first
    for k in range(1, 6):
        q = quotient(v, h / 4 ** k)
        if abs(q - prev) <= tol / 4 * max(1.0, abs(q)):
            return q
        prev = q
    return None


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
    rows = compare_gradients(plan, objective, grads, {k: model.params.values[k] for k in grads}, rng, tol=tol)
    return GradReport(rows, tol)
