"""Preprocessing travels inside the model: the exported model takes the raw values of the user's
files (IDX pixels 0..255, raw series values, raw tabular features) and answers in target units, in
onnxruntime and onnx.reference alike, with the same answers as the training pipeline."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import nngraph

from nngraph.cli import main
from nngraph.data.sequences import window_series
from nngraph.model import Model
from nngraph.runtime import run, verify
from nngraph.spec import Spec
from nngraph.train.evaluate import evaluate_onnx
from nngraph.workflow import load_data, train, with_preprocessing

from .test_conv_e2e import TOY_SPEC, idx_folder, toy_images, write_idx  # noqa: F401  (fixture)

SERIES_SPEC = {
    "name": "series", "inputs": {"x": {"shape": [6, 2]}},
    "layers": [{"type": "lstm", "units": 8}, {"type": "dense", "units": 1}],
    "loss": "mse", "optimizer": {"type": "adam", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 16, "shuffle": False},
    "data": {"train": "temps.csv", "window": 6, "target": "temp"},
}


def _series_csv(path, n=120):
    t = np.arange(n)
    temp = 15 + 8 * np.sin(t / 6) + 0.1 * t  # raw °C
    hum = 60 + 20 * np.cos(t / 5)
    path.write_text("day,hum,temp\n" + "\n".join(f"d{i},{h:.3f},{c:.3f}" for i, (h, c) in enumerate(zip(hum, temp))))
    return np.round(np.stack([hum, temp], 1), 3)


def _without_layer(model: Model, layer: str) -> Model:
    """The same network without one (leading) layer, with the trained weights: the old pipeline."""
    d = model.spec.to_dict()
    d["layers"] = [l for l in d["layers"] if l.get("name") != layer]
    other = Model.compile(Spec.from_dict(d))
    other.load_weights({k: v for k, v in model.params.as_dict().items() if not k.startswith(layer + ".")})
    return other


def test_run_on_raw_pixels_equals_the_training_pipeline(idx_folder, tmp_path):
    folder, _, _ = idx_folder
    (tmp_path / "toy.json").write_text(json.dumps({**TOY_SPEC, "train": {"epochs": 2, "batch_size": 32}}))
    out = tmp_path / "toy.onnx"
    res = train(tmp_path / "toy.json", data=str(folder), output=out, progress="none", log=lambda s: None)
    layers = [l.name for l in res.model.spec.layers]
    assert layers[0] == "image_normalize" and layers[1:] == ["conv2d_0", "maxpool2d_1", "conv2d_2", "flatten_3",
                                                              "dense_4"]  # names unchanged
    raw = toy_images(16, np.random.default_rng(9))[0]  # uint8 0..255, as in the files
    np.save(tmp_path / "raw.npy", raw)
    r = CliRunner().invoke(main, ["run", str(out), "--input", str(tmp_path / "raw.npy"), "-o", str(tmp_path / "p.npy")])
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "p.npy")
    np.testing.assert_allclose(got, res.model.predict(raw), atol=1e-5)
    old = _without_layer(res.model, "image_normalize")  # what training did before: the loader's / 255
    old_pixels = raw.astype(np.float32) / np.float32(255)
    np.testing.assert_allclose(got, old.predict(old_pixels), atol=1e-5)
    np.testing.assert_array_equal(res.model.predict(raw), old.predict(old_pixels))  # the same bits
    # the test accuracy is the model's on raw pixels: evaluate reads the folder as it is
    ev = evaluate_onnx(out, str(folder))
    assert ev["accuracy"] == pytest.approx(res.test["accuracy"], abs=1e-6)
    report = verify(out, inputs=raw.astype(np.float32), reference=True)
    assert report.ok and report.reference_max_abs < 1e-4


def test_run_on_raw_series_values_equals_the_training_pipeline(tmp_path):
    values = _series_csv(tmp_path / "temps.csv")
    (tmp_path / "s.json").write_text(json.dumps(SERIES_SPEC))
    out = tmp_path / "s.onnx"
    res = train(tmp_path / "s.json", output=out, progress="none", log=lambda s: None)
    model = res.model
    assert model.spec.layers[0].type == "normalize" and model.spec.layers[0].name == "x_normalize"
    # statistics of the training windows, computed before the first step
    n_train = len(res.dataset.y)
    train_x = res.dataset.x.reshape(-1, 2).astype(np.float64)
    np.testing.assert_allclose(model.params["x_normalize.shift"], train_x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(model.params["x_normalize.divisor"], train_x.std(0), rtol=1e-5)
    # raw windows of the file, in °C, as a user would feed them
    x_raw, y_raw = window_series(values.astype(np.float32), values[:, 1].astype(np.float32), 6, 1)
    x_test, y_test = x_raw[n_train:], y_raw[n_train:]
    np.testing.assert_allclose(x_test, res.dataset.x_test, rtol=1e-6)
    ort = run(out, x_test)
    # the training pipeline: the network on standardised inputs, outputs times std plus mean
    t = res.dataset.meta["target_normalization"]
    old = _without_layer(model, "x_normalize")
    old.metadata.clear()
    std_x = (x_test - model.params["x_normalize.shift"]) / model.params["x_normalize.divisor"]
    want = old.predict(std_x) * t["std"] + t["mean"]
    np.testing.assert_allclose(ort, want, rtol=1e-4, atol=1e-3)
    # in target units: the error is of the order of the data's, not of standardised values
    assert np.abs(ort - y_test).mean() < 5 * np.abs(y_test - y_test.mean()).mean()
    assert res.test["loss_target_units"] == pytest.approx(res.test["loss"] * t["std"] ** 2)
    report = verify(out, inputs=x_test, reference=True)  # Numba (reloaded) vs onnxruntime vs onnx.reference
    assert report.ok and report.reference_max_abs < 1e-3
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops[:2] == ["Sub", "Div"] and ops[-2:] == ["Mul", "Add"]


def test_history_gives_regression_losses_in_target_units(tmp_path):
    _series_csv(tmp_path / "temps.csv")
    spec = json.loads(json.dumps(SERIES_SPEC))
    spec["train"].update(validation_split=0.25, metrics=["mae"])
    (tmp_path / "s.json").write_text(json.dumps(spec))
    lines: list[str] = []
    res = train(tmp_path / "s.json", run_dir=tmp_path / "run", progress="lines", log=lines.append)
    std, mean = (res.dataset.meta["target_normalization"][k] for k in ("std", "mean"))
    rows = res.history.rows()
    assert len(rows) == 3
    for r in rows:
        assert r["loss_target_units"] == pytest.approx(r["loss"] * std ** 2)
        assert r["val_loss_target_units"] == pytest.approx(r["val_loss"] * std ** 2)
        assert r["val_mae_target_units"] == pytest.approx(r["val_mae"] * std)
    # independently: the last epoch's validation errors from predictions in °C (the final weights)
    x, y = res.dataset.x, res.dataset.y
    cut = len(y) - int(round(len(y) * 0.25))
    pred = res.model.predict(x[cut:]).reshape(-1).astype(np.float64)
    y_units = y[cut:].reshape(-1).astype(np.float64) * std + mean
    assert rows[-1]["val_loss_target_units"] == pytest.approx(np.mean((pred - y_units) ** 2), rel=1e-4)
    assert rows[-1]["val_mae_target_units"] == pytest.approx(np.mean(np.abs(pred - y_units)), rel=1e-4)
    assert any("val_loss_target_units" in line for line in lines if line.startswith("epoch 3/3"))
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss_target_units", "val_loss_target_units", "val_mae_target_units"} <= set(header)
    assert res.test["loss_target_units"] == pytest.approx(res.test["loss"] * std ** 2)


def test_normalize_true_standardises_tabular_csv_inputs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)) * [1, 100, 1000] + [0, 50, -500]
    y = x @ [1, 0.01, 0.001]
    np.savetxt(tmp_path / "t.csv", np.column_stack([x, y]), delimiter=",", header="a,b,c,y", comments="")
    spec = {"name": "tab", "inputs": {"x": {"shape": [3]}}, "layers": [{"type": "dense", "units": 1}],
            "loss": "mse", "train": {"epochs": 1, "batch_size": 16}, "data": {"train": "t.csv", "normalize": True}}
    (tmp_path / "t.json").write_text(json.dumps(spec))
    res = train(tmp_path / "t.json", output=tmp_path / "t.onnx", progress="none", log=lambda s: None)
    np.testing.assert_allclose(res.model.params["x_normalize.shift"], x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(res.model.params["x_normalize.divisor"], x.std(0), rtol=1e-5)
    assert verify(tmp_path / "t.onnx", inputs=x.astype(np.float32), reference=True).ok
    del spec["data"]["normalize"]  # without it: no normalize layer (unchanged behaviour)
    plain = Spec.from_dict(spec)
    assert with_preprocessing(plain, load_data(plain, base_dir=tmp_path)) == plain


def test_resume_keeps_the_statistics_it_checkpointed(tmp_path, monkeypatch):
    _series_csv(tmp_path / "temps.csv")
    (tmp_path / "s.json").write_text(json.dumps({**SERIES_SPEC, "train": {**SERIES_SPEC["train"], "epochs": 1}}))
    first = train(tmp_path / "s.json", run_dir=tmp_path / "run", progress="none", log=lambda s: None)
    stats = first.model.params["x_normalize.shift"].copy()
    spec_json = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert spec_json["layers"][0] == {"type": "normalize", "name": "x_normalize", "mode": "standard"}

    def refuse(*a, **k):
        raise AssertionError("statistics recomputed on resume")
    monkeypatch.setattr("nngraph.model.fit_normalizers", refuse)
    again = train(resume=tmp_path / "run", epochs=2, progress="none", log=lambda s: None)
    np.testing.assert_array_equal(again.model.params["x_normalize.shift"], stats)
    assert [l.type for l in again.model.spec.layers].count("normalize") == 1


def test_a_spec_that_declares_its_own_normalize_gets_no_second_one(idx_folder, tmp_path):
    folder, _, _ = idx_folder
    spec = {**TOY_SPEC, "layers": [{"type": "normalize", "mode": "minmax"}] + TOY_SPEC["layers"],
            "train": {"epochs": 1, "batch_size": 64}}
    (tmp_path / "toy.json").write_text(json.dumps(spec))
    res = train(tmp_path / "toy.json", data=str(folder), progress="none", log=lambda s: None)
    assert [l.type for l in res.model.spec.layers].count("normalize") == 1
    assert res.model.params["normalize_0.divisor"][0, 0, 0] == pytest.approx(255, rel=0.05)


def test_a_spec_read_from_a_file_resolves_relative_data_paths_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    _series_csv(folder / "temps.csv")
    (folder / "s.json").write_text(json.dumps(SERIES_SPEC))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = nngraph.load_spec(folder / "s.json")
    assert spec.base_dir == folder.resolve() and spec == Spec.from_dict(SERIES_SPEC)
    ds = nngraph.load_data(spec)
    assert ds.x.shape[1:] == (6, 2)
    res = train(spec, progress="none", log=lambda s: None)  # a Spec object, not a path
    assert res.model.spec.layers[0].type == "normalize"


@pytest.mark.parametrize("value, text", [(2.8e-5, "2.800e-05"), (0.98667, "0.9867"), (1.0, "1.000"),
                                         (1234.56, "1235"), (0.012345, "0.01235"), (0.0, "0.000")])
def test_metrics_print_four_significant_digits(value, text):
    from nngraph.train.progress import fmt

    assert fmt(value) == text


def test_inspect_shows_the_preprocessing(tmp_path):
    _series_csv(tmp_path / "temps.csv")
    (tmp_path / "s.json").write_text(json.dumps({**SERIES_SPEC, "train": {**SERIES_SPEC["train"], "epochs": 1}}))
    train(tmp_path / "s.json", output=tmp_path / "s.onnx", progress="none", log=lambda s: None)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "s.onnx")])
    assert r.exit_code == 0, r.output
    assert "preprocessing (inside the model; it takes the raw inputs):" in r.output
    assert "x_normalize: (x - shift) / divisor per feature (standard" in r.output
    assert "output: y * " in r.output and "target units" in r.output


# ---- models without nngraph metadata ------------------------------------------------------------

def _foreign_model(path, kind: str):
    """A hand-built ONNX model (no nngraph metadata): a linear regression or a softmax classifier."""
    from onnx import TensorProto, helper, numpy_helper

    k = 1 if kind == "regression" else 3
    w = np.arange(4 * k, dtype=np.float32).reshape(4, k) / 10
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z" if k > 1 else "y"])]
    if k > 1:
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=-1))
    g = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", k])],
                          initializer=[numpy_helper.from_array(w, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return w


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_evaluate_a_model_without_nngraph_metadata(tmp_path, kind):
    w = _foreign_model(tmp_path / "f.onnx", kind)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = (x @ w)[:, 0] + 0.5 if kind == "regression" else rng.integers(0, 3, 50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "f.onnx"), "--data", str(tmp_path / "d.npz"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    if kind == "regression":  # inferred from the one-value output
        assert res["loss_function"] == "mse" and res["loss"] == pytest.approx(0.25, rel=1e-5)
    else:  # several outputs: cross-entropy on the softmax probabilities
        z = x @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        assert res["loss_function"] == "cross_entropy"
        assert res["loss"] == pytest.approx(-np.log(p[np.arange(50), y]).mean(), rel=1e-4)
        assert "accuracy" in res and "confusion_matrix" in res
    task = {"regression": "regression", "classification": "classification"}[kind]
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "f.onnx"), "--data", str(tmp_path / "d.npz"),
                                  "--task", task, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["loss"] == pytest.approx(res["loss"])
    if kind == "classification":  # a loss that does not fit the output is one line, exit 2
        r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "f.onnx"), "--data", str(tmp_path / "d.npz"),
                                      "--loss", "mse"])
        assert r.exit_code == 2 and r.output.startswith("error: targets have shape")


def test_verify_a_model_without_nngraph_metadata_compares_the_runtimes(tmp_path):
    _foreign_model(tmp_path / "f.onnx", "classification")
    r = CliRunner().invoke(main, ["verify", str(tmp_path / "f.onnx")])
    assert r.exit_code == 0, r.output
    assert "compared with onnx.reference" in r.output and "OK" in r.output


def test_evaluate_reads_a_series_csv_with_the_models_windowing(tmp_path):
    _series_csv(tmp_path / "temps.csv")
    (tmp_path / "s.json").write_text(json.dumps(SERIES_SPEC))
    res = train(tmp_path / "s.json", output=tmp_path / "s.onnx", progress="none", log=lambda s: None)
    ev = evaluate_onnx(tmp_path / "s.onnx", str(tmp_path / "temps.csv"))  # no --window etc.: the model's
    assert ev["samples"] == len(res.dataset.y_test) and ev["split"] == "test"
    assert ev["loss"] == pytest.approx(res.test["loss_target_units"], rel=1e-3)  # in °C²


# ---- string class labels ------------------------------------------------------------------------

def test_string_class_labels_in_a_csv_map_to_ids_and_run_labels_prints_them(tmp_path):
    rng = np.random.default_rng(0)
    names = np.array(["setosa", "versicolor", "virginica"])

    def write(path, n):
        ids = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 2)) + np.stack([ids * 3.0, -ids * 2.0], 1)
        path.write_text("\n".join(f"{a:.4f},{b:.4f},{names[i]}" for (a, b), i in zip(x, ids)) + "\n")  # no header
        return x.astype(np.float32), ids
    x, ids = write(tmp_path / "train.csv", 120)
    xt, idt = write(tmp_path / "test.csv", 30)
    spec = {"name": "flowers", "inputs": {"x": {"shape": [2]}},
            "layers": [{"type": "dense", "units": 3, "activation": "softmax"}], "loss": "cross_entropy",
            "optimizer": {"type": "adam", "lr": 0.05}, "train": {"epochs": 20, "batch_size": 16},
            "data": {"train": "train.csv", "test": "test.csv"}}
    (tmp_path / "f.json").write_text(json.dumps(spec))
    res = train(tmp_path / "f.json", output=tmp_path / "f.onnx", progress="none", log=lambda s: None)
    np.testing.assert_array_equal(res.dataset.y, ids)  # sorted labels: setosa 0, versicolor 1, virginica 2
    assert res.model.metadata["classes"] == list(names) and res.test["accuracy"] > 0.9
    np.save(tmp_path / "xt.npy", xt[:6])
    r = CliRunner().invoke(main, ["run", str(tmp_path / "f.onnx"), "--input", str(tmp_path / "xt.npy"), "--labels"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got == list(names[np.argmax(run(tmp_path / "f.onnx", xt[:6]), 1)])
    assert sum(g == n for g, n in zip(got, names[idt[:6]])) >= 5
    ev = evaluate_onnx(tmp_path / "f.onnx", str(tmp_path / "test.csv"), split="train")  # labels mapped by the model's list
    assert ev["accuracy"] == pytest.approx(res.test["accuracy"])
    (tmp_path / "bad.csv").write_text("1.0,2.0,rose\n")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "f.onnx"), "--data", str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "class label 'rose' is not one of the model's classes" in r.output


def test_run_labels_needs_a_label_list(tmp_path):
    _foreign_model(tmp_path / "f.onnx", "classification")
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    r = CliRunner().invoke(main, ["run", str(tmp_path / "f.onnx"), "--input", str(tmp_path / "x.npy"), "--labels"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "no class labels" in r.output


def test_a_normalize_layer_in_front_leaves_the_initial_weights_unchanged():
    plain = Spec.from_dict({**SERIES_SPEC, "layers": [{**l, "name": f"l{i}"} for i, l in enumerate(SERIES_SPEC["layers"])]})
    d = plain.to_dict()
    d["layers"] = [{"type": "normalize", "name": "x_normalize"}] + d["layers"]
    a, b = Model.compile(plain), Model.compile(Spec.from_dict(d))
    for name, value in a.params.as_dict().items():
        np.testing.assert_array_equal(b.params[name], value)
