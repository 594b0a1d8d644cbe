"""Feedforward networks end to end: the shipped specs train to their stated quality, exports verify,
runs are reproducible, fine-tuning starts from exported weights."""
from __future__ import annotations

import numpy as np
import pytest

import nngraph
from nngraph.errors import ShapeError
from nngraph.model import Model
from nngraph.runtime import verify
from nngraph.spec import load_spec
from nngraph.workflow import train


def quiet(_msg: str) -> None:
    pass


def test_xor_reaches_loss_below_0_01(specs_dir, tmp_path):
    result = train(specs_dir / "xor.json", output=tmp_path / "xor.onnx", log=quiet)
    assert result.history.last.loss < 0.01
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    np.testing.assert_array_equal(result.model.predict(x).ravel() > 0.5, [False, True, True, False])
    assert verify(tmp_path / "xor.onnx").ok


def test_digits_mlp_reaches_97_percent_test_accuracy(specs_dir, tmp_path):
    result = train(specs_dir / "digits_mlp.json", output=tmp_path / "d.onnx", log=quiet)
    assert result.test["accuracy"] >= 0.97
    report = verify(tmp_path / "d.onnx", reference=True)
    assert report.ok and report.max_abs < 1e-5
    # the test accuracy is recorded in the model's metadata, and onnxruntime reproduces it
    y = nngraph.run(tmp_path / "d.onnx", result.dataset.x_test)
    assert np.mean(y.argmax(1) == result.dataset.y_test) == pytest.approx(result.test["accuracy"])


def test_friedman_regression_test_mse(specs_dir):
    result = train(specs_dir / "friedman_regression.json", log=quiet)
    # the noise variance is 1.0 and y has variance ~24: a test MSE under 2.5 is a fitted model
    assert result.test["loss"] < 2.5


def test_same_seed_gives_byte_identical_onnx(specs_dir, tmp_path):
    for name in ("a", "b"):
        train(specs_dir / "xor.json", output=tmp_path / f"{name}.onnx", epochs=50, log=quiet)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    spec = load_spec(specs_dir / "digits_mlp.json")
    Model.compile(spec).export_onnx(tmp_path / "c.onnx")
    Model.compile(spec).export_onnx(tmp_path / "d.onnx")
    assert (tmp_path / "c.onnx").read_bytes() == (tmp_path / "d.onnx").read_bytes()
    Model.compile(spec, seed=1).export_onnx(tmp_path / "e.onnx")
    assert (tmp_path / "e.onnx").read_bytes() != (tmp_path / "c.onnx").read_bytes()


def test_fine_tuning_starts_from_exported_weights(specs_dir, tmp_path):
    first = train(specs_dir / "digits_mlp.json", output=tmp_path / "m.onnx", epochs=3, log=quiet)
    again = train(specs_dir / "digits_mlp.json", init=tmp_path / "m.onnx", epochs=1, log=quiet)
    scratch = train(specs_dir / "digits_mlp.json", epochs=1, log=quiet)
    assert again.history.records[0].loss < scratch.history.records[0].loss
    assert again.history.records[0].loss < first.history.records[0].loss


def test_init_from_another_architecture_is_a_shape_error(specs_dir, tmp_path):
    train(specs_dir / "xor.json", output=tmp_path / "xor.onnx", epochs=1, log=quiet)
    with pytest.raises(ShapeError, match="weights do not fit this spec"):
        train(specs_dir / "digits_mlp.json", init=tmp_path / "xor.onnx", epochs=1, log=quiet)


def test_python_api_walkthrough(tmp_path):
    from nngraph import spec as S

    spec = S.build("blobs", inputs={"x": S.Input((2,))},
                   layers=[S.Dense(16, "relu"), S.Dense(3, "softmax")], loss="cross_entropy",
                   optimizer=S.Adam(lr=0.01), train=S.TrainConfig(epochs=30, batch_size=16, seed=1))
    rng = np.random.default_rng(0)
    centers = np.array([[0, 3], [3, 0], [-3, -3]], np.float32)
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.standard_normal((300, 2)).astype(np.float32) * 0.5
    model = nngraph.compile(spec)
    model.fit(x, y)
    assert model.evaluate(x, y)["accuracy"] > 0.97
    model.export_onnx(tmp_path / "blobs.onnx")
    assert nngraph.verify(tmp_path / "blobs.onnx").ok
    np.testing.assert_allclose(nngraph.run(tmp_path / "blobs.onnx", x), model.predict(x), atol=1e-5)
    reloaded = nngraph.load(tmp_path / "blobs.onnx")
    np.testing.assert_array_equal(reloaded.predict(x), model.predict(x))


def test_unshuffled_runs_are_exactly_reproducible(specs_dir):
    spec = load_spec(specs_dir / "digits_mlp.json")
    spec = type(spec)(**{**spec.__dict__, "train": spec.train.replace(shuffle=False, epochs=2)})
    ds = nngraph.load_data(spec)
    a, b = Model.compile(spec), Model.compile(spec)
    a.fit(ds.x, ds.y)
    b.fit(ds.x, ds.y)
    np.testing.assert_array_equal(a.params.flat, b.params.flat)


def test_float64_training_matches_float32_closely(specs_dir):
    spec = load_spec(specs_dir / "xor.json")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    y = np.array([0, 1, 1, 0])
    m32, m64 = Model.compile(spec), Model.compile(spec, dtype=np.float64)
    m32.fit(x, y, epochs=200)
    m64.fit(x, y, epochs=200)
    assert m64.params.flat.dtype == np.float64
    np.testing.assert_allclose(m32.params.flat, m64.params.flat, atol=1e-4)


def test_validation_split_holds_out_the_last_rows(specs_dir):
    spec = load_spec(specs_dir / "xor.json")
    model = Model.compile(spec)
    x = np.tile(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32), (5, 1))
    y = np.tile(np.array([0, 1, 1, 0]), 5)
    hist = model.fit(x, y, epochs=2, validation_split=0.2)
    assert hist.last.val_loss is not None
