"""LayerNorm and the element-wise activations (leaky_relu, elu, gelu, silu, softplus): harness rows
(see harness.py), ONNX export across opsets, PyTorch as an oracle, and the validation errors."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

from nngraph.backend.program import Program
from nngraph.errors import SpecError
from nngraph.model import Model
from nngraph.ops import layernorm_kernels as LK
from nngraph.ops.registry import get_op
from nngraph.spec import parse_spec

from .harness import OpCase, randomize_params, table_tests

ACTS = ("leaky_relu", "elu", "gelu", "silu", "softplus")

CASES = [
    OpCase("layernorm-vector", {"x": [6]}, [{"type": "layernorm"}]),
    OpCase("layernorm-epsilon", {"x": [5]}, [{"type": "layernorm", "epsilon": 0.1}]),
    OpCase("layernorm-sequence", {"x": [4, 5]}, [{"type": "dense", "units": 6}, {"type": "layernorm"}]),
    OpCase("layernorm-then-dense", {"x": [5]}, [{"type": "dense", "units": 6, "activation": "tanh"},
                                                {"type": "layernorm"}, {"type": "dense", "units": 3}]),
    OpCase("leaky_relu-alpha", {"x": [7]}, [{"type": "leaky_relu", "alpha": 0.2}]),
    OpCase("elu-alpha", {"x": [7]}, [{"type": "elu", "alpha": 0.5}]),
    OpCase("gelu-sequence", {"x": [3, 4]}, [{"type": "dense", "units": 5, "activation": "gelu"}]),
    OpCase("silu-conv1d", {"x": [2, 9]}, [{"type": "conv1d", "filters": 3, "kernel": 3, "activation": "silu"}]),
    OpCase("elu-conv1d-strided", {"x": [2, 9]}, [{"type": "conv1d", "filters": 3, "kernel": 3, "stride": 2,
                                                  "activation": "elu"}]),
]
CASES += [OpCase(kind, {"x": [7]}, [{"type": kind}], scale=2.0) for kind in ACTS]
CASES += [OpCase(f"dense-{kind}", {"x": [5]}, [{"type": "dense", "units": 4, "activation": kind}]) for kind in ACTS]
CASES += [OpCase(f"conv2d-{kind}", {"x": [2, 5, 5]}, [{"type": "conv2d", "filters": 3, "kernel": 3,
                                                        "padding": "same", "activation": kind}]) for kind in ACTS]


# float32 = float64, the numpy reference, finite differences, onnxruntime parity (harness.table_tests)
(test_float32_kernels_match_float64, test_forward_matches_numpy_reference,
 test_backward_matches_finite_differences, test_onnx_export_matches_onnxruntime) = table_tests(CASES)


# ---- lowering and export ------------------------------------------------------------------------

def _compile(layers, shape=(5,), dtype=np.float32):
    return Model.compile(parse_spec({"name": "t", "inputs": {"x": {"shape": list(shape)}}, "layers": layers}),
                         dtype=dtype)


def test_dense_activation_is_its_own_node_with_the_default_alpha():
    model = _compile([{"type": "dense", "units": 4, "activation": "leaky_relu", "name": "d"},
                      {"type": "dense", "units": 3, "activation": "elu", "name": "e"}])
    ops = [(n.name, n.op, n.output, n.attrs.get("alpha")) for n in model.graph.nodes]
    assert ops == [("d", "Gemm", "d/linear", None), ("d/leaky_relu", "LeakyRelu", "d", 0.01),
                   ("e", "Gemm", "e/linear", None), ("e/elu", "Elu", "e", 1.0)]


@pytest.mark.parametrize("opset", [13, 17, 20, 21])
@pytest.mark.parametrize("layers, shape", [
    ([{"type": "dense", "units": 6, "activation": "gelu"}, {"type": "layernorm", "epsilon": 1e-3}], (4, 5)),
    ([{"type": "gelu"}, {"type": "layernorm"}, {"type": "silu"}], (6,)),
], ids=["sequence", "vector"])
def test_export_across_opsets(layers, shape, opset, tmp_path):
    """LayerNormalization from opset 17 and Gelu from 20, their decompositions below; onnxruntime
    and onnx.reference agree with the Numba forward."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    model = _compile(layers, shape)
    rng = np.random.default_rng(0)
    randomize_params(model, rng)
    path = model.export_onnx(tmp_path / f"m{opset}.onnx", opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert ("LayerNormalization" in ops) == (opset >= 17)
    assert ("Gelu" in ops) == (opset >= 20)
    assert ("Erf" in ops) == (opset < 20)
    x = rng.standard_normal((3,) + shape).astype(np.float32)
    ours = model.predict(x)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ReferenceEvaluator(str(path)).run(None, {"x": x})[0], ours, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("opset", [14, 17])
def test_layernorm_and_activations_keep_a_dynamic_time_axis(opset, tmp_path):
    """Per step on sequences: after a recurrent layer the exported model takes any length (opset
    14: the recurrent export's ``layout`` attribute needs it; 14 takes the LayerNorm decomposition)."""
    import onnxruntime as ort

    from nngraph.onnx_io.dynamic_axes import with_time_length

    model = _compile([{"type": "gru", "units": 4, "return_sequences": True}, {"type": "layernorm"},
                      {"type": "dense", "units": 3, "activation": "gelu"}, {"type": "silu"}], (5, 2))
    randomize_params(model, np.random.default_rng(4))
    path = model.export_onnx(tmp_path / "t.onnx", opset=opset)
    proto = onnx.load(str(path))
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", "time", 2]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for length in (5, 9):
        m = Model.compile(with_time_length(model.spec, length))
        m.load_weights(model.params.as_dict())
        x = np.random.default_rng(length).standard_normal((3, length, 2)).astype(np.float32)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], m.predict(x), atol=1e-5, rtol=0)


# ---- kernels: an activation nobody handles is a bind-time error; thread-count independence -----

@pytest.mark.parametrize("layers, shape, op", [
    ([{"type": "dense", "units": 3}], (4,), "Gemm"),
    ([{"type": "conv2d", "filters": 2, "kernel": 3}], (1, 5, 5), "Conv"),
    ([{"type": "conv1d", "filters": 2, "kernel": 3, "stride": 2}], (1, 7), "Conv"),
    ([{"type": "rnn", "units": 3}], (4, 2), "RNN"),
    ([{"type": "lstm", "units": 3}], (4, 2), "LSTM"),
], ids=["dense", "conv2d", "conv1d-strided", "rnn", "lstm"])
def test_unhandled_activation_code_is_a_bind_error(layers, shape, op):
    """An activation the op's kernels have no branch for (forced past lowering) used to run as
    identity (dense, strided conv, recurrent cells) or tanh (stride-1 conv): now bind refuses it."""
    model = _compile(layers, shape)
    node = model.graph.nodes[0]
    assert node.op == op
    bad = replace(model.graph, nodes=(replace(node, attrs={**node.attrs, "activation": "gelu"}),))
    with pytest.raises(ValueError, match=rf"layer {node.layer}: op {op} .* no kernel for activation 'gelu'"):
        Program(bad, model.params).plan(2, training=True)


def test_epilogues_handle_what_their_ops_claim_to_fuse():
    from nngraph.ops.activations_kernels import EPILOGUE_ACTIVATIONS
    from nngraph.ops.conv_kernels import ACTIVATIONS

    assert get_op("Gemm").fuses <= set(EPILOGUE_ACTIVATIONS)
    assert get_op("Conv").fuses <= set(ACTIVATIONS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_threaded_kernels_give_the_serial_bits(dtype):
    rng = np.random.default_rng(1)
    r, f = 37, 11
    x = rng.standard_normal((r, f)).astype(dtype)
    scale, bias = rng.standard_normal(f).astype(dtype), rng.standard_normal(f).astype(dtype)
    dy = rng.standard_normal((r, f)).astype(dtype)
    out = {}
    for threaded in (False, True):
        fwd, bwd = LK.kernels_for(0, threaded)
        y, dx = np.empty_like(x), np.empty_like(x)
        dscale, dbias = np.empty_like(scale), np.empty_like(bias)
        fwd(x, scale, bias, 1e-5, y, LK.ROW_BLOCKS)
        bwd(x, scale, 1e-5, dy, dx, True, np.zeros((LK.ROW_BLOCKS, 2, f)), dscale, dbias)
        out[threaded] = (y, dx, dscale, dbias)
    for a, b in zip(out[False], out[True]):
        assert a.tobytes() == b.tobytes()


_TRAIN_SCRIPT = r"""
import hashlib, numpy as np
import nngraph.ops.layernorm_kernels as L, nngraph.ops.pointwise_kernels as P
L.THREADED_MIN = 0; P.PARALLEL_MIN = 0
from nngraph.model import Model
from nngraph.spec import parse_spec
model = Model.compile(parse_spec({"name": "ln", "inputs": {"x": {"shape": [6, 5]}}, "loss": "mse",
    "layers": [{"type": "dense", "units": 16, "activation": "gelu"}, {"type": "layernorm"},
               {"type": "elu"}, {"type": "flatten"}, {"type": "dense", "units": 2}],
    "optimizer": {"type": "adam", "lr": 0.01}}), seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 6, 5)).astype(np.float32)
y = rng.standard_normal((64, 2)).astype(np.float32)
trainer = model.trainer()
for step in range(3):
    trainer.step(model._feeds(x), model.targets(y), rng.permutation(64)[:48])
print(hashlib.sha256(model.params.flat.tobytes()).hexdigest())
"""


def test_one_and_two_threads_train_the_same_bits():
    """The threaded layernorm and activation kernels (thresholds forced to 0) at 1 and 2 threads."""
    import os
    import subprocess
    import sys

    def digest(threads: int) -> str:
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        return subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
    assert digest(1) == digest(2)


# ---- PyTorch as the oracle -----------------------------------------------------------------------

def _run(model, x, dy):
    """(y, dx, {param: grad}) of one float64 forward/backward pass with output gradient dy."""
    plan = Program(model.graph, model.params, input_grads=True).plan(x.shape[0], training=True)
    plan.set_inputs({"x": x})
    y = plan.forward().copy()
    plan.output_grad[...] = dy
    plan.backward()
    return y, plan.grads["x"].copy(), {k: v.copy() for k, v in model.params.grads.items()}


@pytest.mark.parametrize("shape", [(8,), (5, 8)], ids=["vector", "sequence"])
def test_layernorm_matches_torch(shape):
    torch = pytest.importorskip("torch")
    model = _compile([{"type": "layernorm", "epsilon": 1e-3, "name": "ln"}], shape, np.float64)
    rng = np.random.default_rng(2)
    randomize_params(model, rng)
    x = 3 * rng.standard_normal((4,) + shape) + 1
    dy = rng.standard_normal(x.shape)
    y, dx, grads = _run(model, x, dy)

    ln = torch.nn.LayerNorm(shape[-1], eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(model.params.values["ln.scale"]))
        ln.bias.copy_(torch.from_numpy(model.params.values["ln.bias"]))
    tx = torch.tensor(x, requires_grad=True)
    ty = ln(tx)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["ln.scale"], ln.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["ln.bias"], ln.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", [
    {"type": "leaky_relu"}, {"type": "leaky_relu", "alpha": 0.3}, {"type": "elu"}, {"type": "elu", "alpha": 0.7},
    {"type": "gelu"}, {"type": "silu"}, {"type": "softplus"}], ids=lambda d: "-".join(map(str, d.values())))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_matches_torch(layer, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fn = {"leaky_relu": lambda t: F.leaky_relu(t, layer.get("alpha", 0.01)),
          "elu": lambda t: F.elu(t, layer.get("alpha", 1.0)),
          "gelu": lambda t: F.gelu(t, approximate="none"), "silu": F.silu, "softplus": F.softplus}[layer["type"]]
    model = _compile([layer], (40,), dtype)
    rng = np.random.default_rng(3)
    x = (4 * rng.standard_normal((5, 40))).astype(dtype)
    x[0, :3] = (-30, 30, 0.0)  # saturated tails and the kink at 0
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, dx, _ = _run(model, x, dy)
    tx = torch.tensor(x, requires_grad=True)
    ty = fn(tx)
    ty.backward(torch.from_numpy(dy))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol, atol=tol)


# ---- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, path, fragment", [
    ({"type": "layernorm", "epsilon": 0}, "layers[0].epsilon", "expected a number > 0, got 0"),
    ({"type": "layernorm", "epsilon": -1e-5}, "layers[0].epsilon", "expected a number > 0"),
    ({"type": "layernorm", "axis": 0}, "layers[0]", "axis"),
    ({"type": "elu", "alpha": 0}, "layers[0].alpha", "expected a number > 0, got 0"),
    ({"type": "leaky_relu", "alpha": -0.1}, "layers[0].alpha", "expected a number >= 0, got -0.1"),
    ({"type": "leaky_relu", "alpha": "big"}, "layers[0].alpha", "expected a number"),
    ({"type": "gelu", "alpha": 1.0}, "layers[0]", "alpha"),
    ({"type": "dense", "units": 2, "activation": "swish"}, "layers[0].activation", '"silu"'),
    ({"type": "conv1d", "filters": 2, "kernel": 2, "activation": "gelu_tanh"}, "layers[0].activation", '"gelu"'),
], ids=lambda v: str(v) if not isinstance(v, dict) else v["type"])
def test_validation_errors(layer, path, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "t", "inputs": {"x": {"shape": [3, 4]}}, "layers": [layer]})
    message = str(info.value)
    assert "\n" not in message and message.startswith(path) and fragment in message, message
