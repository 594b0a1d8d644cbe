"""`nngraph verify --runtime`: an export checked on onnxruntime, onnx.reference, OpenVINO and tract
in one table against the Numba forward pass; the errors (unknown runtime, one not installed, a
runtime that fails on a model) as one line or a failed row. The op tables check every layer's
export on all four (tests/ops/harness.check_other_runtimes)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from nngraph.model import Model
from nngraph.spec import parse_spec
from nngraph.runtime import verify
from nngraph.runtimes import RUNTIMES, open_runtime, parse_runtimes

from .test_cli import invoke, one_error_line

ALL = ",".join(RUNTIMES)


def _export(tmp_path: Path, layers: list[dict], shape: list[int], name: str = "m") -> Path:
    spec = {"name": name, "inputs": {"x": {"shape": shape}}, "layers": layers, "loss": "cross_entropy"}
    model = Model.compile(parse_spec(spec))
    rng = np.random.default_rng(0)
    for arr in model.params.values.values():
        arr[...] = 0.3 * rng.standard_normal(arr.shape)
    out = tmp_path / f"{name}.onnx"
    model.export_onnx(out)
    return out


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("rt"), [
        {"type": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"}, {"type": "maxpool2d", "size": 2},
        {"type": "flatten"}, {"type": "dense", "units": 5, "activation": "softmax"}], [1, 8, 8], "cnn")


def test_verify_prints_one_table_of_every_runtime(cnn):
    r = invoke("verify", str(cnn), "--runtime", ALL)
    assert r.exit_code == 0, r.output
    table = r.output[r.output.index("runtime"):].splitlines()
    assert [line.split()[0] for line in table[1:5]] == list(RUNTIMES)
    assert all(line.rstrip().endswith("pass") for line in table[1:5]), r.output
    assert "1,3,64" in table[1] and "OK:" in r.output


def test_the_report_holds_each_runtimes_error_and_version(cnn):
    report = verify(cnn, (2, 5), runtimes=("openvino", "tract"))
    assert report.ok and [row["runtime"] for row in report.runtimes] == ["openvino", "tract"]
    for row in report.runtimes:
        assert row["batches"] == [2, 5] and row["max_abs"] < 1e-5 and row["version"][0].isdigit()


def test_recurrent_exports_run_on_tract_with_a_symbolic_batch(tmp_path):
    """With --explicit-states the export feeds zero initial states: tract, asked to make them for a
    symbolic batch, aborts the process (0.23). Here one optimized tract plan serves three batch
    sizes. The default file stays lean (onnxruntime: ~5 us less per call) and inspect says so."""
    import tract

    lean = _export(tmp_path, [{"type": "lstm", "units": 6}, {"type": "dense", "units": 3}], [5, 4], "lean")
    assert "Expand" not in [n.op_type for n in onnx.load(str(lean)).graph.node]
    assert invoke("inspect", str(lean)).output.count("--explicit-states") == 1
    spec = {"name": "lstm", "inputs": {"x": {"shape": [5, 4]}}, "loss": "cross_entropy",
            "layers": [{"type": "lstm", "units": 6}, {"type": "dense", "units": 3}]}
    model = Model.compile(parse_spec(spec))
    model.load_weights(Model.load_onnx(lean).params.as_dict())
    model.metadata["explicit_states"] = True
    path = tmp_path / "lstm.onnx"
    model.export_onnx(path)
    nodes = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Expand" in nodes and "LSTM" in nodes
    assert "--explicit-states" not in invoke("inspect", str(path)).output
    model = Model.load_onnx(path)
    m = tract.onnx().load(str(path))
    m.set_input_fact(0, "N,5,4,f32")
    plan = m.into_model().into_runnable()
    for batch in (1, 2, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 5, 4)).astype(np.float32)
        np.testing.assert_allclose(plan.run([x])[0].to_numpy(), model.predict(x), atol=1e-5, rtol=0)


def test_unknown_runtime_is_one_line_naming_the_choices(cnn):
    line = one_error_line(invoke("verify", str(cnn), "--runtime", "onnxruntime,tvm"))
    assert "'tvm'" in line and "openvino" in line and "tract" in line
    with pytest.raises(Exception, match="no runtime"):
        parse_runtimes(" , ")


@pytest.mark.parametrize("name,module", [("openvino", "openvino"), ("tract", "tract")])
def test_a_missing_runtime_names_the_extra(cnn, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    line = one_error_line(invoke("verify", str(cnn), "--runtime", f"onnxruntime,{name}"))
    assert f"'{name}'" in line and "nngraph[runtimes]" in line


def test_a_runtime_that_fails_on_a_model_is_a_failed_row_not_a_crash(tmp_path):
    """An operator from a custom domain: onnxruntime and tract cannot load it; verify of a foreign
    model through tract (in its own process) reports the failure in the table."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    good = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "relu.onnx"
    onnx.save(good, str(path))
    runner = open_runtime("tract", path)  # isolated: a child process
    feeds = {"x": np.array([[-1.0, 0.5, 2.0]], np.float32)}
    np.testing.assert_array_equal(runner.run(feeds), [[0.0, 0.5, 2.0]])
    bad = helper.make_model(helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], domain="example.ops")],
                                              "g", [x], [y]),
                            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.ops", 1)])
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    with pytest.raises(Exception, match=r"tract failed on bad.onnx \(exit [1-9]"):
        open_runtime("tract", tmp_path / "bad.onnx").run(feeds)


def test_foreign_models_compare_the_runtimes_with_onnxruntime(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g", [x], [y])
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    r = invoke("verify", str(path), "--runtime", ALL)
    assert r.exit_code == 0, r.output
    assert "against onnxruntime" in r.output and r.output.count("pass") == 4


def test_a_known_runtime_bug_is_named_in_the_failed_row(tmp_path):
    """tract 0.23 computes RNN/LSTM/GRU with their default activations whatever the file says:
    verify fails that row and says why; the op tables skip tract for those layers."""
    from nngraph.runtimes import known_issues

    path = _export(tmp_path, [{"type": "rnn", "units": 4, "activation": "relu"}, {"type": "dense", "units": 2}],
                   [3, 2], "relu_rnn")
    assert "tract" in known_issues(path)
    report = verify(path, (2,), runtimes=("openvino", "tract"))
    rows = {r["runtime"]: r for r in report.runtimes}
    assert rows["openvino"]["ok"] and not rows["tract"]["ok"] and not report.ok
    assert "known bug: tract (0.23.9) ignores the activations" in rows["tract"]["error"]
    plain = _export(tmp_path, [{"type": "gru", "units": 4}, {"type": "dense", "units": 2}], [3, 2], "gru")
    assert known_issues(plain) == {}
