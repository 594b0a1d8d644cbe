"""Dropout: harness rows (forward vs reference in both modes, gradients with the mask held fixed,
ONNX parity, float32 vs float64) and the properties of its counter-based mask."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from nngraph.backend.program import Program
from nngraph.errors import SpecError
from nngraph.model import Model
from nngraph.ops.dropout import keep_mask, uniforms
from nngraph.spec import parse_spec

from .harness import OpCase, check_float32_matches_float64, check_forward_reference, check_gradients, check_onnx_parity

CASES = [
    OpCase("dense-dropout", {"x": [5]}, [{"type": "dense", "units": 6, "activation": "tanh"},
                                         {"type": "dropout", "rate": 0.5}]),
    OpCase("dense-dropout-dense", {"x": [5]}, [{"type": "dense", "units": 8, "activation": "relu"},
                                               {"type": "dropout", "rate": 0.3},
                                               {"type": "dense", "units": 3}]),
    OpCase("dropout-on-input", {"x": [7]}, [{"type": "dropout", "rate": 0.4}]),
    OpCase("rnn-seq-dropout", {"x": [4, 2]}, [{"type": "rnn", "units": 5, "return_sequences": True},
                                              {"type": "dropout", "rate": 0.5}], scale=0.7),
    OpCase("dropout-rate0", {"x": [6]}, [{"type": "dense", "units": 4}, {"type": "dropout", "rate": 0}]),
    OpCase("conv-dropout", {"x": [2, 5, 5]}, [{"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
                                              {"type": "dropout", "rate": 0.25}]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_reference(case):
    check_forward_reference(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_matches_finite_differences(case):
    check_gradients(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_matches_float64(case):
    check_float32_matches_float64(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_onnx_export_matches_onnxruntime(case, tmp_path):
    check_onnx_parity(case, tmp_path)


# ---- the mask ---------------------------------------------------------------------------------


def _model(layers, shape=(50,), seed=0):
    spec = parse_spec({"name": "d", "inputs": {"x": {"shape": list(shape)}}, "layers": layers,
                       "train": {"seed": seed}})
    return Model.compile(spec, dtype=np.float64)


def _run(model, x, training=True, counters=(0, 0), seed=None):
    seed = model.spec.train.resolved()["seed"] if seed is None else seed
    program = Program(model.graph, model.params, seed=seed)
    program.counters[:] = counters
    plan = program.plan(len(x), training)
    plan.set_inputs({"x": x})
    out = plan.forward().copy()
    return {n.output: plan.values[n.output].copy() for n in model.graph.nodes} | {"out": out}


def test_kept_fraction_is_one_minus_rate():
    rate, n = 0.3, 400 * 500
    model = _model([{"type": "dropout", "rate": rate}], shape=(500,))
    y = _run(model, np.ones((400, 500)))["out"]
    kept = y != 0
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(kept.sum() - n * (1 - rate)) < 5 * sigma
    assert np.all(y[kept] == 1 / (1 - rate))
    u = uniforms(1, 2, 3, 0, 300, 300)  # the uniforms themselves: mean 1/2, in [0, 1)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)


def test_mask_is_a_function_of_seed_step_layer_sample():
    a = keep_mask(0, 5, 11, 0, 8, 64, 0.5)
    assert np.array_equal(a, keep_mask(0, 5, 11, 0, 8, 64, 0.5))         # equal for equal keys
    for other in (keep_mask(1, 5, 11, 0, 8, 64, 0.5), keep_mask(0, 6, 11, 0, 8, 64, 0.5),
                  keep_mask(0, 5, 12, 0, 8, 64, 0.5), keep_mask(0, 5, 11, 8, 8, 64, 0.5)):
        assert (a != other).mean() > 0.3                                  # seed, step, layer, sample
    assert (a[0] != a[1]).mean() > 0.3                                    # samples of one pass differ


def test_kernel_masks_differ_across_steps_layers_and_seeds():
    layers = [{"type": "dropout", "rate": 0.5, "name": "d1"}, {"type": "dropout", "rate": 0.5, "name": "d2"}]
    model = _model(layers, shape=(200,))
    x = np.ones((4, 200))
    base = _run(model, x, counters=(3, 0))
    assert np.array_equal(base["d1"], _run(model, x, counters=(3, 0))["d1"])
    assert (base["d1"] != _run(model, x, counters=(4, 0))["d1"]).mean() > 0.3   # step
    assert (base["d1"] != _run(model, x, counters=(3, 0), seed=9)["d1"]).mean() > 0.3  # seed
    d2 = _run(_model([{"type": "dropout", "rate": 0.5, "name": "d2"}], shape=(200,)), x, counters=(3, 0))
    assert (base["d1"] != d2["d2"]).mean() > 0.3                             # layer


def test_micro_batched_passes_draw_the_whole_batch_mask():
    model = _model([{"type": "dense", "units": 30}, {"type": "dropout", "rate": 0.5}])
    x = np.random.default_rng(0).standard_normal((8, 50))
    whole = _run(model, x, counters=(7, 0))["out"]
    parts = [_run(model, x[:3], counters=(7, 0))["out"], _run(model, x[3:], counters=(7, 3))["out"]]
    assert np.array_equal(np.concatenate(parts), whole)


def test_inference_mode_is_the_identity():
    model = _model([{"type": "dropout", "rate": 0.9}])
    x = np.random.default_rng(1).standard_normal((5, 50))
    assert np.array_equal(_run(model, x, training=False, counters=(3, 1))["out"], x)
    assert np.array_equal(model.predict(x), x)


def test_backward_uses_the_forward_mask():
    model = _model([{"type": "dropout", "rate": 0.5}])
    x = np.random.default_rng(2).standard_normal((6, 50))
    program = Program(model.graph, model.params, input_grads=True, seed=0)
    program.counters[:] = (2, 5)
    plan = program.plan(6, True)
    plan.set_inputs({"x": x})
    y = plan.forward().copy()
    plan.output_grad[...] = 1.0
    plan.backward()
    assert np.array_equal(plan.grads["x"] * x, y)  # dx = m, y = x * m


THREADS_SCRIPT = r"""
import hashlib, numpy as np
import nngraph.ops.dropout_kernels as dk
dk.THREADED_MIN = 0  # so 2 threads really split the samples
from nngraph.backend.program import Program
from nngraph.model import Model
from nngraph.spec import parse_spec
m = Model.compile(parse_spec({"name": "d", "inputs": {"x": {"shape": [6, 40]}},
                              "layers": [{"type": "dropout", "rate": 0.4}], "train": {"seed": 5}}))
p = Program(m.graph, m.params, input_grads=True, seed=5)
p.counters[:] = (11, 2)
plan = p.plan(37, True)
plan.set_inputs({"x": np.random.default_rng(0).standard_normal((37, 6, 40))})
h = hashlib.sha256(plan.forward().tobytes())
plan.output_grad[...] = 1
plan.backward()
h.update(plan.grads["x"].tobytes())
print(h.hexdigest())
"""


def _digest(threads: int) -> str:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_one_and_two_threads_draw_the_same_mask():
    assert _digest(1) == _digest(2)


# ---- spec and export --------------------------------------------------------------------------


@pytest.mark.parametrize("layer, fragment", [
    ({"type": "dropout", "rate": 1}, "expected a number >= 0 and < 1, got 1"),
    ({"type": "dropout", "rate": 1.5}, "expected a number >= 0 and < 1"),
    ({"type": "dropout", "rate": -0.1}, "expected a number >= 0 and < 1"),
    ({"type": "dropout", "rate": "0.5"}, 'got "0.5"'),
    ({"type": "dropout", "rate": True}, "got true"),
])
def test_rate_errors_name_the_path(layer, fragment):
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "d", "inputs": {"x": {"shape": [3]}}, "layers": [{"type": "dense", "units": 2}, layer]})
    assert e.value.path == "layers[1].rate"
    assert fragment in e.value.message


def test_missing_and_unknown_keys():
    with pytest.raises(SpecError, match=r"layers\[0\]\.rate: required"):
        parse_spec({"name": "d", "inputs": {"x": {"shape": [3]}}, "layers": [{"type": "dropout"}]})
    with pytest.raises(SpecError, match=r"layers\[0\]\.p: unknown key"):
        parse_spec({"name": "d", "inputs": {"x": {"shape": [3]}}, "layers": [{"type": "dropout", "rate": 0.1, "p": 1}]})


@pytest.mark.parametrize("shape, layers", [
    ([6], [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dropout", "rate": 0.5},
           {"type": "dense", "units": 3}]),
    ([1, 6, 6], [{"type": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"}, {"type": "dropout", "rate": 0.5},
                 {"type": "dropout", "rate": 0.2}, {"type": "flatten"}, {"type": "dense", "units": 2}]),
])
def test_export_has_no_dropout_node(shape, layers, tmp_path):
    import onnxruntime as ort

    model = Model.compile(parse_spec({"name": "d", "inputs": {"x": {"shape": shape}}, "layers": layers}))
    path = model.export_onnx(tmp_path / "d.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Dropout" not in ops and "Identity" not in ops, ops
    x = np.random.default_rng(0).standard_normal((5, *shape)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, model.predict(x), atol=1e-5, rtol=0)


def test_export_names_an_aliased_output_with_one_identity(tmp_path):
    model = Model.compile(parse_spec({"name": "d", "inputs": {"x": {"shape": [4]}},
                                      "layers": [{"type": "dense", "units": 3}, {"type": "dropout", "rate": 0.5}]}))
    g = onnx.load(str(model.export_onnx(tmp_path / "d.onnx"))).graph
    assert [n.op_type for n in g.node] == ["Gemm", "Identity"]
    assert g.node[1].input == [g.node[0].output[0]] and g.node[1].output == [g.output[0].name]


def test_export_after_a_sequence_keeps_the_time_axis_dynamic(tmp_path):
    import onnxruntime as ort

    layers = [{"type": "rnn", "units": 4, "return_sequences": True}, {"type": "dropout", "rate": 0.5},
              {"type": "dense", "units": 2}]
    model = Model.compile(parse_spec({"name": "d", "inputs": {"x": {"shape": [5, 3]}}, "layers": layers}))
    path = model.export_onnx(tmp_path / "d.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 9, 3)).astype(np.float32)  # 9 steps, not 5
    got = sess.run(None, {"x": x})[0]
    assert got.shape == (2, 9, 2)
    np.testing.assert_allclose(got[:, :5], model.predict(x[:, :5]), atol=1e-5, rtol=0)
