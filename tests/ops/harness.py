"""One helper that checks an op case end to end, so an op test is one table row.

A case is a tiny spec: inputs and layers. ``check_case`` then proves, for every node,
  1. forward (Numba) == the op's plain-numpy reference (float64);
  2. backward == float64 central finite differences of L = sum(r * y) for a random r,
     w.r.t. every parameter and every float input, along random directions and on single coordinates;
  3. the ONNX export agrees with the Numba forward in onnxruntime at batch 1, 3 and 64 (float32,
     1e-5 abs), and onnx.reference.ReferenceEvaluator agrees with onnxruntime.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nngraph.backend.program import Program
from nngraph.gradcheck import compare_gradients
from nngraph.runtime import random_inputs
from nngraph.model import Model
from nngraph.ops.registry import get_op
from nngraph.spec import parse_spec


@dataclass
class OpCase:
    id: str
    inputs: dict[str, list[int]]
    layers: list[dict[str, Any]]
    input_dtypes: dict[str, str] = field(default_factory=dict)
    id_limit: int = 5          # for integer inputs: ids drawn from [0, id_limit)
    grad_tol: float = 1e-6     # relative tolerance of the finite-difference check
    batch: int = 3             # batch used by the gradient check
    scale: float = 1.0         # std of random float inputs
    seed: int = 3              # the run's seed (dropout masks)

    def spec(self):
        return parse_spec({
            "name": self.id.replace("-", "_"),
            "inputs": {k: ({"shape": v, "dtype": self.input_dtypes[k]} if k in self.input_dtypes else {"shape": v})
                       for k, v in self.inputs.items()},
            "layers": self.layers,
            "train": {"seed": self.seed},
        })


def make_feeds(case: OpCase, model: Model, batch: int, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
    return random_inputs(model, batch, rng, dtype, case.scale, case.id_limit)


def randomize_params(model: Model, rng: np.random.Generator) -> None:
    """Non-trivial values everywhere (zero biases would hide bias-gradient bugs)."""
    for name, arr in model.params.values.items():
        if model.params.all_infos[name].trainable:
            arr[...] = 0.5 * rng.standard_normal(arr.shape)
        else:  # state (running statistics): positive values near 1, so a variance stays a variance
            arr[...] = 1.0 + 0.5 * np.abs(rng.standard_normal(arr.shape))


def check_forward_reference(case: OpCase, seed: int = 0, batch: int = 4) -> None:
    model = Model.compile(case.spec(), dtype=np.float64)
    rng = np.random.default_rng(seed)
    randomize_params(model, rng)
    feeds = make_feeds(case, model, batch, rng, np.float64)
    for training in (False, True):
        plan = Program(model.graph, model.params, seed=case.seed).plan(batch, training)
        plan.set_inputs(feeds)
        plan.forward()
        for node in model.graph.nodes:
            op = get_op(node.op)
            xs = [plan.values[v] for v in node.inputs]
            ps = [model.params.values[p] for p in node.params]
            want = op.reference(node, xs, ps, plan.ctx)
            got = plan.values[node.output]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10,
                                       err_msg=f"{case.id}: forward of {node.name} (training={training})")


def check_gradients(case: OpCase, seed: int = 0, h: float = 1e-6, coords: int = 6) -> None:
    """Backward vs float64 central differences of L = sum(r * y), for every parameter and float input
    (the same comparison ``nngraph gradcheck`` runs on a whole network's loss)."""
    model = Model.compile(case.spec(), dtype=np.float64)
    rng = np.random.default_rng(seed)
    randomize_params(model, rng)
    batch = case.batch
    feeds = make_feeds(case, model, batch, rng, np.float64)
    plan = Program(model.graph, model.params, input_grads=True, seed=case.seed).plan(batch, training=True)
    r = rng.standard_normal(plan.output.shape)

    def objective() -> float:
        plan.set_inputs(feeds)
        return float(np.sum(r * plan.forward()))

    objective()
    plan.output_grad[...] = r
    plan.backward()
    grads = {f"param {k}": v.copy() for k, v in model.params.grads.items()}
    targets = {f"param {k}": model.params.values[k] for k in model.params.grads}
    for name in model.graph.inputs:
        if model.graph.values[name].dtype != "int64":
            grads[f"input {name}"] = plan.grads[name].copy()
            targets[f"input {name}"] = feeds[name]
    for row in compare_gradients(plan, objective, grads, targets, rng, h=h, coords=coords, tol=case.grad_tol):
        assert row.ok(case.grad_tol), f"{case.id}: {row.name}: gradient error {row.max_error:.3g} vs finite differences"


def check_onnx_parity(case: OpCase, tmp_path, seed: int = 0, atol: float = 1e-5) -> None:
    check_onnx_parity_lengths(case, tmp_path, lambda t: (t,), seed, atol)


def check_onnx_parity_lengths(case: OpCase, tmp_path, lengths: Callable[[int], tuple[int, ...]], seed: int = 0,
                              atol: float = 1e-5, reference: bool = True) -> list[str]:
    """One exported file: onnxruntime, onnx.reference (batch <= 3, when ``reference``), OpenVINO and
    tract give the Numba forward pass of the same weights at batch 1, 3 and 64, at every sequence
    length of ``lengths(T)`` (T the spec's; a model compiled at each). A model whose inputs have no
    dynamic time axis runs at its own shape only. Returns the names of the inputs with that axis."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from nngraph.onnx_io.dynamic_axes import TIME, with_time_length

    model = Model.compile(case.spec())
    rng = np.random.default_rng(seed)
    randomize_params(model, rng)
    path = tmp_path / f"{case.id}.onnx"
    model.export_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = ReferenceEvaluator(str(path)) if reference else None
    timed = [i.name for i in sess.get_inputs() if TIME in i.shape]
    t0 = case.inputs[timed[0]][0] if timed else 0
    runs = []
    for length in (lengths(t0) if timed else (t0,)):
        other = model
        if length != t0:
            other = Model.compile(with_time_length(model.spec, length))
            other.load_weights(model.params.as_dict())
        where = f"T={length}, batch" if timed else "batch"
        for batch in (1, 3, 64):
            feeds = make_feeds(case, other, batch, rng, np.float32)
            ours = other.predict(feeds)
            runs.append((f"{where} {batch}", feeds, ours))
            theirs = sess.run(None, feeds)[0]
            assert theirs.shape == ours.shape, f"{case.id}: {where} {batch}: shape {theirs.shape} vs {ours.shape}"
            np.testing.assert_allclose(theirs, ours, atol=atol, rtol=0, err_msg=f"{case.id}: onnxruntime, {where} {batch}")
            if ref is not None and batch <= 3:
                np.testing.assert_allclose(ref.run(None, feeds)[0], theirs, atol=atol, rtol=1e-5,
                                           err_msg=f"{case.id}: onnx.reference, {where} {batch}")
    check_other_runtimes(case.id, path, runs, atol)
    return timed


# The runtimes besides onnxruntime and onnx.reference that every op-table export must run on (the
# test extra installs them, as `nngraph[runtimes]` does for users).
OTHER_RUNTIMES = ("openvino", "tract")


def check_other_runtimes(case_id: str, path, runs: list[tuple[str, dict, np.ndarray]], atol: float = 1e-5) -> None:
    """OpenVINO (f32 precision hint) and tract give the Numba forward pass's outputs on every
    (label, feeds, expected output) of ``runs`` within ``atol``."""
    from nngraph.runtimes import known_issues, open_runtime

    known = known_issues(path)  # e.g. tract and non-default recurrent activations (README, Deployment)
    for name in OTHER_RUNTIMES:
        if name in known:
            continue
        runner = open_runtime(name, path, isolated=False)
        for label, feeds, ours in runs:
            got = np.asarray(runner.run(feeds))
            assert got.shape == ours.shape, f"{case_id}: {name}, {label}: shape {got.shape} vs {ours.shape}"
            np.testing.assert_allclose(got, ours, atol=atol, rtol=0, err_msg=f"{case_id}: {name} {runner.version}, {label}")


def _backward(case: OpCase, dtype, seed: int):
    """(output, {gradient name: value}) of L = sum(r * y) with the same seeded params, inputs and r."""
    model = Model.compile(case.spec(), dtype=dtype)
    rng = np.random.default_rng(seed)
    randomize_params(model, rng)
    feeds = make_feeds(case, model, case.batch, rng, np.float64)
    feeds = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in feeds.items()}
    plan = Program(model.graph, model.params, input_grads=True, seed=case.seed).plan(case.batch, training=True)
    r = rng.standard_normal(plan.output.shape)
    plan.set_inputs(feeds)
    out = plan.forward().astype(np.float64)
    plan.output_grad[...] = r
    plan.backward()
    grads = {f"param {k}": v.astype(np.float64) for k, v in model.params.grads.items()}
    for name in model.graph.inputs:
        if model.graph.values[name].dtype != "int64":
            grads[f"input {name}"] = plan.grads[name].astype(np.float64)
    return out, grads


def check_float32_matches_float64(case: OpCase, seed: int = 0, tol: float = 2e-5) -> None:
    """The float32 kernels (the vector GEMM paths, which float64 never takes) compute what the
    float64 ones do, forward and backward, to float32 accuracy relative to each tensor's scale."""
    out32, g32 = _backward(case, np.float32, seed)
    out64, g64 = _backward(case, np.float64, seed)
    scale = max(1.0, float(np.abs(out64).max()))
    assert np.abs(out32 - out64).max() <= tol * scale, f"{case.id}: float32 forward differs from float64"
    for name, want in g64.items():
        scale = max(1.0, float(np.abs(want).max()))
        err = float(np.abs(g32[name] - want).max())
        assert err <= tol * scale * 10, f"{case.id}: float32 {name} differs from float64 by {err:.3g}"


def table_tests(cases: list[OpCase]):
    """The four op-table tests every op file runs over its CASES: float32 = float64, forward vs the
    numpy reference, backward vs finite differences, onnxruntime parity. Assign them to module
    names starting with ``test_`` so pytest collects them there."""
    import pytest

    each = pytest.mark.parametrize("case", cases, ids=lambda c: c.id)

    @each
    def float32(case):
        check_float32_matches_float64(case)

    @each
    def forward(case):
        check_forward_reference(case)

    @each
    def backward(case):
        check_gradients(case)

    @each
    def onnx_parity(case, tmp_path):
        check_onnx_parity(case, tmp_path)

    return float32, forward, backward, onnx_parity
