"""Recurrent networks end to end: the example specs train, export lean ONNX with dynamic batch and
time axes, and the sequence data loaders and `nngraph sample` behave."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from nngraph.cli import main
from nngraph.data import load_source
from nngraph.data.sequences import load_series_csv, load_text, window_series
from nngraph.errors import DataError, ShapeError, SpecError
from nngraph.model import Model
from nngraph.onnx_io.dynamic_axes import with_time_length
from nngraph.runtime import session
from nngraph.spec import parse_spec
from nngraph.workflow import train

SPECS = Path(__file__).resolve().parents[1] / "specs"
SINE_TEST_MSE = 1e-4  # specs/sine_rnn.json reaches 2.8e-5 (seeds 1-3: 2.2e-5 to 4.5e-5)


def _quiet(_: str) -> None:
    pass


def _ort_parity_two_lengths(model: Model, path: Path, lengths: tuple[int, ...]) -> None:
    sess = session(path)
    rng = np.random.default_rng(0)
    name = sess.get_inputs()[0].name
    for length in lengths:
        m = Model.compile(with_time_length(model.spec, length))
        m.load_weights(model.params.as_dict())
        for batch in (1, 3, 64):
            x = rng.standard_normal((batch, length) + m.graph.values[name].shape[1:]).astype(np.float32)
            np.testing.assert_allclose(sess.run(None, {name: x})[0], m.predict(x), atol=1e-5, rtol=0)


def test_sine_rnn_reaches_its_test_mse_and_exports_a_lean_dynamic_model(tmp_path):
    out = tmp_path / "sine.onnx"
    result = train(SPECS / "sine_rnn.json", output=out, log=_quiet)
    assert result.test["loss"] < SINE_TEST_MSE, result.test
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["Transpose", "RNN", "Squeeze", "Gemm"], ops  # no Shape/Gather/ConstantOfShape
    rnn = next(n for n in proto.graph.node if n.op_type == "RNN")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in rnn.attribute}
    assert attrs["hidden_size"] == 32 and attrs["direction"] == b"forward" and attrs["layout"] == 0
    assert attrs["activations"] == [b"Tanh"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 1]
    _ort_parity_two_lengths(result.model, out, (40, 17))


def test_bidirectional_gru_classifies_waves(tmp_path):
    result = train(SPECS / "waves_gru.json", epochs=4, output=tmp_path / "w.onnx", log=_quiet)
    assert result.test["accuracy"] > 0.85, result.test
    _ort_parity_two_lengths(result.model, tmp_path / "w.onnx", (50, 80))


def test_lstm_exports_with_explicit_attributes_and_initial_states(tmp_path):
    spec = parse_spec({"name": "s", "inputs": {"x": {"shape": [6, 3]}, "h0": {"shape": [8]}, "c0": {"shape": [8]}},
                       "layers": [{"type": "lstm", "units": 4, "bidirectional": True, "return_sequences": True,
                                   "inputs": ["x", "h0", "c0"]}, {"type": "dense", "units": 2}]})
    model = Model.compile(spec)
    model.export_onnx(tmp_path / "l.onnx")
    proto = onnx.load(str(tmp_path / "l.onnx"))
    lstm = next(n for n in proto.graph.node if n.op_type == "LSTM")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lstm.attribute}
    assert attrs["activations"] == [b"Sigmoid", b"Tanh", b"Tanh"] * 2 and attrs["direction"] == b"bidirectional"
    assert not {"Shape", "Gather", "ConstantOfShape"} & {n.op_type for n in proto.graph.node}
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims == {"x": ["batch", "time", 3], "h0": ["batch", 8], "c0": ["batch", 8]}
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", "time", 2]


def test_a_layer_that_needs_a_fixed_length_keeps_the_time_axis_static(tmp_path):
    spec = parse_spec({"name": "s", "inputs": {"x": {"shape": [5, 2]}},
                       "layers": [{"type": "gru", "units": 3, "return_sequences": True}, {"type": "flatten"},
                                  {"type": "dense", "units": 1}]})
    Model.compile(spec).export_onnx(tmp_path / "f.onnx")
    shape = onnx.load(str(tmp_path / "f.onnx")).graph.input[0].type.tensor_type.shape
    dims = [d.dim_param or d.dim_value for d in shape.dim]
    assert dims == ["batch", 5, 2]


# ---- spec and shape errors -------------------------------------------------------------------------

def test_recurrent_spec_errors_name_the_path_and_the_layer():
    base = {"name": "s", "inputs": {"x": {"shape": [5, 2]}}}
    with pytest.raises(SpecError, match=r"layers\[0\]\.units: expected an integer >= 1, got 0"):
        parse_spec({**base, "layers": [{"type": "lstm", "units": 0}]})
    with pytest.raises(SpecError, match=r"layers\[0\]\.activation"):
        parse_spec({**base, "layers": [{"type": "gru", "units": 2, "activation": "softmax"}]})
    with pytest.raises(SpecError, match=r"layers\[0\]\.linear_before_reset: unknown key"):
        parse_spec({**base, "layers": [{"type": "lstm", "units": 2, "linear_before_reset": True}]})
    flat = parse_spec({**base, "inputs": {"x": {"shape": [10]}}, "layers": [{"type": "rnn", "units": 2}]})
    with pytest.raises(ShapeError, match=r"layer rnn_0: rnn expects a float sequence \(time, features\)"):
        Model.compile(flat)
    ids = parse_spec({**base, "inputs": {"x": {"shape": [5], "dtype": "int64"}},
                      "layers": [{"type": "gru", "units": 2}]})
    with pytest.raises(ShapeError, match="embedding layer first"):
        Model.compile(ids)
    bad_state = parse_spec({**base, "inputs": {"x": {"shape": [5, 2]}, "h": {"shape": [3]}},
                            "layers": [{"type": "rnn", "units": 2, "bidirectional": True, "inputs": ["x", "h"]}]})
    with pytest.raises(ShapeError, match=r"initial state must have shape \(N, 4\)"):
        Model.compile(bad_state)


def test_embedding_rejects_out_of_range_ids():
    spec = parse_spec({"name": "e", "inputs": {"ids": {"shape": [3], "dtype": "int64"}},
                       "layers": [{"type": "embedding", "vocab_size": 4, "dim": 2}]})
    model = Model.compile(spec)
    np.testing.assert_array_equal(model.predict(np.array([[0, 3, 1]])), model.params["embedding_0.W"][[0, 3, 1]][None])
    with pytest.raises(DataError, match=r"token id 7 is outside the vocabulary \[0, 3\]"):
        model.predict(np.array([[0, 7, 1]]))


# ---- data: windowed CSV series, text corpora, built-ins --------------------------------------------

def _series_csv(path: Path, n: int = 40) -> np.ndarray:
    values = 100 + 10 * np.arange(n) + 5 * np.sin(np.arange(n))
    lines = ['"Month","Passengers"'] + [f'"2000-{i:03d}",{v:.4f}' for i, v in enumerate(values)]
    path.write_text("\r\n".join(lines), encoding="utf-8")
    return values


def test_window_series_pairs_each_window_with_the_value_horizon_steps_later():
    f = np.arange(10, dtype=np.float32).reshape(-1, 1)
    x, y = window_series(f, f[:, 0] * 10, window=3, horizon=2)
    assert x.shape == (6, 3, 1) and y.shape == (6, 1)
    np.testing.assert_array_equal(x[1, :, 0], [1, 2, 3])
    assert y[1, 0] == 50  # the target 2 steps after the window 1..3


def test_csv_series_is_windowed_and_the_target_normalised_with_training_rows_only(tmp_path):
    values = _series_csv(tmp_path / "s.csv")
    ds = load_series_csv(tmp_path / "s.csv", {"window": 4, "split": 0.25})
    assert ds.x.shape == (27, 4, 1) and ds.x_test.shape == (9, 4, 1) and ds.y.shape == (27, 1)
    norm = ds.meta["target_normalization"]
    rows = 27 + 4  # the training windows and their targets cover the first 31 rows
    assert norm["mean"] == pytest.approx(values[:rows].mean(), rel=1e-6)
    assert ds.x[0, 0, 0] == pytest.approx(values[0], rel=1e-6)  # inputs raw: the model standardises them
    assert ds.input_layer == {"mode": "standard"}
    assert ds.y[0, 0] == pytest.approx((values[4] - values[:rows].mean()) / values[:rows].std(), rel=1e-5)
    assert ds.meta["target"] == "Passengers" and ds.meta["columns"] == ["Passengers"]
    raw = load_series_csv(tmp_path / "s.csv", {"window": 4, "normalize": False, "split": 0})
    assert raw.x_test is None and raw.y[0, 0] == pytest.approx(values[4], rel=1e-6)
    with pytest.raises(DataError, match="not a numeric column"):
        load_series_csv(tmp_path / "s.csv", {"window": 4, "target": "Month"})
    with pytest.raises(DataError, match="too few"):
        load_series_csv(tmp_path / "s.csv", {"window": 60})


def test_multivariate_csv_picks_feature_columns_and_target(tmp_path):
    rows = ["date,temp,humidity,load"] + [f"d{i},{i},{10 * i},{100 * i}" for i in range(12)]
    (tmp_path / "m.csv").write_text("\n".join(rows))
    ds = load_series_csv(tmp_path / "m.csv", {"window": 3, "horizon": 2, "columns": ["temp", 2], "target": "load",
                                              "normalize": False, "split": 0})
    assert ds.x.shape == (8, 3, 2) and ds.meta["columns"] == ["temp", "humidity"]
    np.testing.assert_array_equal(ds.x[0], [[0, 0], [1, 10], [2, 20]])
    assert ds.y[0, 0] == 400  # load two steps after the window 0..2
    with pytest.raises(DataError, match="feature column 'rain' is not a numeric column"):
        load_series_csv(tmp_path / "m.csv", {"window": 3, "columns": ["rain"]})


def test_cli_trains_an_lstm_on_a_windowed_csv_given_with_data(tmp_path):
    _series_csv(tmp_path / "series.csv", 60)
    spec = json.loads((SPECS / "airline_lstm.json").read_text())
    spec["train"]["epochs"] = 3
    (tmp_path / "a.json").write_text(json.dumps(spec))
    out = tmp_path / "a.onnx"
    res = CliRunner().invoke(main, ["train", str(tmp_path / "a.json"), "--data", str(tmp_path / "series.csv"),
                                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "test: loss" in res.output and out.exists()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["nngraph.window"]) == 12 and "nngraph.normalization" in meta


def test_text_corpus_becomes_next_character_pairs(tmp_path):
    text = "abcabcabd\n" * 20
    (tmp_path / "t.txt").write_text(text)
    ds = load_text(tmp_path / "t.txt", {"seq_len": 8, "split": 0.2})
    assert ds.meta["vocab"] == "\nabcd" and ds.meta["task"] == "char_lm"
    vocab = ds.meta["vocab"]
    assert "".join(vocab[i] for i in ds.x[0]) == text[:8]
    np.testing.assert_array_equal(ds.x[:, 1:], ds.y[:, :-1])
    assert len(ds.x) == (160 - 1 - 8) // 8 + 1 and ds.x_test is not None
    with pytest.raises(DataError, match="seq_len is required"):
        load_text(tmp_path / "t.txt", {})


def test_builtin_sequence_datasets_are_fixed():
    a, b = load_source("sine"), load_source("sine")
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (2000, 40, 1) and a.x_test.shape == (500, 40, 1)
    w = load_source("waves")
    assert w.x.shape == (1500, 50, 1) and set(np.unique(w.y)) == {0, 1, 2}


# ---- character language model + `nngraph sample` ----------------------------------------------------

def test_char_lm_trains_and_nngraph_sample_generates_from_the_vocabulary(tmp_path):
    corpus = "".join(("to be or not to be, that is the question.\n" if i % 2 else "ROMEO: wherefore art thou?\n")
                     for i in range(120))
    (tmp_path / "c.txt").write_text(corpus)
    vocab = sorted(set(corpus))
    spec = {"name": "lm", "inputs": {"ids": {"shape": [24], "dtype": "int64"}},
            "layers": [{"type": "embedding", "vocab_size": len(vocab), "dim": 8},
                       {"type": "gru", "units": 32, "return_sequences": True, "linear_before_reset": True},
                       {"type": "dense", "units": len(vocab)}],
            "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
            "train": {"epochs": 12, "batch_size": 16, "clip_norm": 5.0},
            "data": {"train": "c.txt", "seq_len": 24, "stride": 6, "split": 0.1}}
    (tmp_path / "lm.json").write_text(json.dumps(spec))
    out = tmp_path / "lm.onnx"
    result = train(tmp_path / "lm.json", output=out, log=_quiet)
    assert result.test["loss"] < 1.0, result.test  # a uniform guess costs log(22) = 3.1 nats
    runner = CliRunner()
    res = runner.invoke(main, ["sample", str(out), "--prime", "ROMEO:", "--length", "60", "--temperature", "0.5",
                               "--seed", "3"])
    assert res.exit_code == 0, res.output
    text = res.output.rstrip("\n")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 60 and set(text) <= set(vocab)
    again = runner.invoke(main, ["sample", str(out), "--prime", "ROMEO:", "--length", "60", "--temperature", "0.5",
                                 "--seed", "3"])
    assert again.output == res.output
    bad = runner.invoke(main, ["sample", str(out), "--prime", "ZZZ"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "'Z' is not in the model's vocabulary" in bad.output
    notlm = runner.invoke(main, ["sample", str(tmp_path / "missing.onnx")])
    assert notlm.exit_code == 2
