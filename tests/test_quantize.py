"""int8 exports (`--quantize int8` on export and train): QDQ format with per-channel Conv/Gemm
weights, calibrated on a seeded sample of the run's training data; smaller, nearly as accurate,
described by inspect, run by every runtime; the errors as one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from nngraph.runtime import run as ort_run
from nngraph.runtimes import RUNTIMES

from .test_cli import invoke, one_error_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory) -> tuple[Path, Path]:
    """digits_cnn trained 4 epochs in a run directory, and its float32 export."""
    d = tmp_path_factory.mktemp("q")
    run, out = d / "run", d / "cnn.onnx"
    r = invoke("train", str(ROOT / "specs" / "digits_cnn.json"), "--run-dir", str(run), "--epochs", "4",
               "-o", str(out), "-q")
    assert r.exit_code == 0, r.output
    return run, out


def _accuracy(path: Path) -> float:
    r = invoke("evaluate", str(path), "--data", "digits", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["accuracy"]


def test_export_quantize_writes_a_small_qdq_model_nearly_as_accurate(cnn_run, tmp_path):
    run, float_path = cnn_run
    q = tmp_path / "cnn.int8.onnx"
    r = invoke("export", str(run), "-o", str(q), "--quantize", "int8", "--calibration-samples", "200")
    assert r.exit_code == 0, r.output
    assert "3 of 3 weight layers quantized, calibrated on 200 training samples" in r.output
    model = onnx.load(str(q))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]  # portable: no contrib ops
    weights = {t.name: t for t in model.graph.initializer}
    int8 = [t for t in weights.values() if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(int8) == 3
    scales = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in {t.name for t in int8}]
    assert all(len(weights[n.input[1]].dims) == 1 and weights[n.input[1]].dims[0] > 1 for n in scales)  # per channel
    # int8 weights are a quarter of float32's; this 22k-parameter model also carries ~6 KB of graph
    # (QDQ nodes) and metadata in both files: 33% (mnist_lenet: see tools/bench_quantize.py)
    stored = sum(len(t.raw_data) for t in int8)
    assert stored <= 0.26 * float_path.stat().st_size and q.stat().st_size <= 0.35 * float_path.stat().st_size
    float_acc, int8_acc = _accuracy(float_path), _accuracy(q)
    assert int8_acc >= float_acc - 0.02, (float_acc, int8_acc)
    meta = {p.key: p.value for p in model.metadata_props}
    info = json.loads(meta["nngraph.quantization"])
    assert info["calibration"]["samples"] == 200 and len(info["calibration"]["sha256"]) == 64
    assert info["parent"]["test_metrics"]["accuracy"] > 0.5 and "nngraph.spec" in meta
    assert info["float32"] == [] and not info["onnxruntime_only"]


def test_calibration_is_seeded_so_two_exports_are_identical(cnn_run, tmp_path):
    run, _ = cnn_run
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for p in (a, b):
        assert invoke("export", str(run), "-o", str(p), "--quantize", "int8").exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    other = tmp_path / "c.onnx"
    assert invoke("export", str(run), "-o", str(other), "--quantize", "int8", "--calibration-samples", "50").exit_code == 0
    meta = lambda p: json.loads({x.key: x.value for x in onnx.load(str(p)).metadata_props}["nngraph.quantization"])
    assert meta(other)["calibration"]["sha256"] != meta(a)["calibration"]["sha256"]


def test_inspect_names_the_quantized_and_float_layers(cnn_run, tmp_path):
    run, _ = cnn_run
    q = tmp_path / "q.onnx"
    assert invoke("export", str(run), "-o", str(q), "--quantize", "int8").exit_code == 0
    text = invoke("inspect", str(q)).output
    assert "quantization:" in text and "int8, per output channel" in text
    assert "calibrated on 256 training samples" in text and "float32 parent's test metrics" in text
    assert text.count("(Conv)") == 2 and "(Gemm)" in text


def test_every_runtime_runs_the_int8_model(cnn_run, tmp_path):
    """onnxruntime fuses the QDQ pairs into int8 kernels; the reference evaluator, OpenVINO and
    tract compute them their own way: the same outputs within a few quantization steps of the
    probabilities (atol 0.02), and the same classes."""
    run, _ = cnn_run
    q = tmp_path / "q.onnx"
    assert invoke("export", str(run), "-o", str(q), "--quantize", "int8").exit_code == 0
    r = invoke("verify", str(q), "--runtime", ",".join(RUNTIMES), "--atol", "0.02", "--rtol", "0")
    assert r.exit_code == 0, r.output
    assert r.output.count("pass") == 4


def test_train_quantize_writes_both_models(tmp_path):
    out = tmp_path / "mlp.onnx"
    r = invoke("train", str(ROOT / "specs" / "digits_mlp.json"), "--epochs", "3", "-o", str(out), "-q",
               "--quantize", "int8", "--calibration-samples", "64")
    assert r.exit_code == 0, r.output
    q = tmp_path / "mlp.int8.onnx"
    assert out.exists() and q.exists() and f"wrote {q}" in r.output
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32) * 16
    assert ort_run(q, x).shape == (5, 10)


def test_recurrent_layers_stay_float_unless_asked(tmp_path):
    run = tmp_path / "run"
    spec = json.loads((ROOT / "specs" / "sine_rnn.json").read_text())
    assert invoke("train", str(ROOT / "specs" / "sine_rnn.json"), "--run-dir", str(run), "--epochs", "1",
                  "-q").exit_code == 0
    q = tmp_path / "q.onnx"
    r = invoke("export", str(run), "-o", str(q), "--quantize", "int8")
    assert r.exit_code == 0, r.output
    assert "float32:" in r.output and spec["layers"][0]["type"] in ("rnn", "lstm", "gru")


@pytest.mark.parametrize("args,needle", [
    (["--dynamic-recurrent"], "--dynamic-recurrent needs --quantize"),
    (["--quantize", "int4"], "int4"),
    (["--quantize", "int8", "--calibration-samples", "0"], "calibration-samples"),
])
def test_bad_quantize_options_are_one_line(cnn_run, tmp_path, args, needle):
    run, _ = cnn_run
    assert needle in one_error_line(invoke("export", str(run), "-o", str(tmp_path / "x.onnx"), *args))
    assert not (tmp_path / "x.onnx").exists()


def test_train_quantize_needs_an_output():
    line = one_error_line(invoke("train", str(ROOT / "specs" / "digits_mlp.json"), "--quantize", "int8"))
    assert "--quantize needs -o" in line


def test_dynamic_recurrent_is_onnxruntime_only_and_says_so(tmp_path):
    """--dynamic-recurrent: LSTM weights in onnxruntime's contrib DynamicQuantizeLSTM; the metadata
    and inspect say the file runs on onnxruntime only; onnxruntime runs it close to the float model.
    A GRU has no such operator: one line."""
    d = tmp_path
    seq = np.random.default_rng(0).standard_normal((64, 6, 3)).astype(np.float32)
    np.save(d / "x.npy", seq)
    np.save(d / "y.npy", (seq.sum(axis=(1, 2)) > 0).astype(np.int64))
    for kind in ("lstm", "gru"):
        spec = {"name": kind, "inputs": {"x": {"shape": [6, 3]}},
                "layers": [{"type": kind, "units": 8}, {"type": "dense", "units": 2, "activation": "softmax"}],
                "loss": "cross_entropy", "train": {"epochs": 2, "batch_size": 16}}
        (d / f"{kind}.json").write_text(json.dumps(spec))
        run = d / f"run_{kind}"
        assert invoke("train", str(d / f"{kind}.json"), "--data", str(d / "x.npy"), "--targets", str(d / "y.npy"),
                      "--run-dir", str(run), "-q").exit_code == 0
    q = d / "lstm.int8.onnx"
    r = invoke("export", str(d / "run_lstm"), "-o", str(q), "--quantize", "int8", "--dynamic-recurrent")
    assert r.exit_code == 0, r.output
    assert "onnxruntime only" in r.output
    model = onnx.load(str(q))
    assert "DynamicQuantizeLSTM" in [n.op_type for n in model.graph.node]
    info = json.loads({p.key: p.value for p in model.metadata_props}["nngraph.quantization"])
    assert info["onnxruntime_only"] and any("DynamicQuantizeLSTM" in x for x in info["quantized"])
    assert "runs on onnxruntime only" in invoke("inspect", str(q)).output
    assert ort_run(q, seq[:5]).shape == (5, 2)
    line = one_error_line(invoke("export", str(d / "run_gru"), "-o", str(d / "g.onnx"), "--quantize", "int8",
                                 "--dynamic-recurrent"))
    assert "quantizes LSTM only" in line and not (d / "g.onnx").exists()


def test_an_idx_image_model_quantizes_quietly_and_keeps_its_preprocessing(tmp_path):
    """Raw IDX pixels: the model scales them itself (a normalize layer). The int8 export keeps the
    scale and the class output, says nothing on stderr (no onnxruntime log lines), and inspect
    describes the preprocessing although the int8 file dropped the layer's unused shift."""
    import subprocess
    import sys

    from .test_conv_e2e import TOY_SPEC, toy_images, write_idx

    rng = np.random.default_rng(0)
    folder = tmp_path / "toy_mnist"
    folder.mkdir()
    x, y = toy_images(256, rng)
    xt, yt = toy_images(64, rng)
    for name, a in (("train-images-idx3-ubyte.gz", x), ("train-labels-idx1-ubyte.gz", y),
                    ("t10k-images-idx3-ubyte.gz", xt), ("t10k-labels-idx1-ubyte.gz", yt)):
        write_idx(folder / name, a)
    (tmp_path / "toy.json").write_text(json.dumps(TOY_SPEC))
    run, q = tmp_path / "run", tmp_path / "toy.int8.onnx"
    assert invoke("train", str(tmp_path / "toy.json"), "--data", str(folder), "--run-dir", str(run), "-q").exit_code == 0
    r = subprocess.run([sys.executable, "-m", "nngraph.cli", "export", str(run), "-o", str(q), "--quantize", "int8"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = invoke("inspect", str(q)).output
    assert "preprocessing (inside the model" in text and "/ 255" in text and "quantization:" in text
    acc = json.loads(invoke("evaluate", str(q), "--data", str(folder), "--json").stdout)["accuracy"]
    assert acc >= 0.9
    raw = xt[:4].astype(np.float32).reshape(4, 1, 12, 12)  # raw pixels in, probabilities out
    assert np.allclose(ort_run(q, raw).sum(axis=1), 1, atol=1e-3)
