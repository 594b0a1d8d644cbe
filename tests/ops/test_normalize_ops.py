"""The normalize op: harness rows (forward vs numpy, backward vs finite differences, ONNX parity in
onnxruntime and onnx.reference, float32 vs float64), the statistics it computes from the training
inputs, and its errors."""
from __future__ import annotations

import numpy as np
import pytest

from nngraph.errors import ShapeError, SpecError
from nngraph.model import Model
from nngraph.spec import parse_spec

from .harness import OpCase, table_tests

CASES = [
    OpCase("normalize-vector", {"x": [6]}, [{"type": "normalize"}, {"type": "dense", "units": 3}]),
    OpCase("normalize-minmax", {"x": [5]}, [{"type": "normalize", "mode": "minmax"}]),
    OpCase("normalize-scale", {"x": [4]}, [{"type": "normalize", "mode": "scale", "factor": 0.25}]),
    OpCase("normalize-sequence", {"x": [4, 3]}, [{"type": "normalize"}, {"type": "dense", "units": 2}]),
    OpCase("normalize-image", {"x": [2, 4, 4]}, [{"type": "normalize"},
                                                 {"type": "conv2d", "filters": 2, "kernel": 3}]),
    OpCase("normalize-axis0", {"x": [3, 5]}, [{"type": "normalize", "axis": 0}]),
    OpCase("normalize-scale-inside", {"x": [5]}, [{"type": "dense", "units": 4, "activation": "tanh"},
                                                  {"type": "normalize", "mode": "scale", "factor": 3.0}]),
]


# float32 = float64, the numpy reference, finite differences, onnxruntime parity (harness.table_tests)
(test_float32_kernels_match_float64, test_forward_matches_numpy_reference,
 test_backward_matches_finite_differences, test_onnx_export_matches_onnxruntime) = table_tests(CASES)


def _model(layers, shape, loss="mse"):
    return Model.compile(parse_spec({"name": "t", "inputs": {"x": {"shape": list(shape)}}, "layers": layers,
                                     "loss": loss, "train": {"epochs": 1, "batch_size": 8, "shuffle": False}}))


@pytest.mark.parametrize("mode", ["standard", "minmax"])
def test_statistics_come_from_the_training_split_before_the_first_step(mode):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 4)).astype(np.float32) * np.array([1, 10, 100, 0], np.float32) + 5
    model = _model([{"type": "normalize", "mode": mode, "name": "n"}, {"type": "dense", "units": 1}], (3, 4))
    model.fit(x, np.zeros((40, 3, 1), np.float32), validation_split=0.25)
    train = x[:30].reshape(-1, 4).astype(np.float64)
    if mode == "standard":
        shift, spread = train.mean(0), train.std(0)
    else:
        shift, spread = train.min(0), train.max(0) - train.min(0)
    spread[3] = 1.0  # a constant feature is not divided by zero
    np.testing.assert_allclose(model.params["n.shift"], shift, rtol=1e-6)
    np.testing.assert_allclose(model.params["n.divisor"], spread, rtol=1e-6)
    before = model.params.as_dict()
    model.fit(x * 2, np.zeros((40, 3, 1), np.float32), epochs=1)  # a second fit keeps the statistics
    np.testing.assert_array_equal(model.params["n.shift"], before["n.shift"])


def test_image_statistics_are_per_channel():
    x = np.random.default_rng(1).normal(size=(10, 2, 3, 3)).astype(np.float32) + np.array([1, 50], np.float32)[:, None, None]
    model = _model([{"type": "normalize", "name": "n"}, {"type": "flatten"}, {"type": "dense", "units": 1}], (2, 3, 3))
    model.fit(x, np.zeros((10, 1), np.float32))
    assert model.params["n.shift"].shape == (2, 1, 1)
    np.testing.assert_allclose(model.params["n.shift"].ravel(), x.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_scale_mode_is_fixed_at_compile_time():
    model = _model([{"type": "normalize", "mode": "scale", "factor": 0.5, "name": "n"}], (3,))
    assert model.normalizers_fitted
    np.testing.assert_array_equal(model.predict(np.array([[2.0, 4.0, -6.0]])), [[1.0, 2.0, -3.0]])


def test_statistics_need_a_model_input():
    with pytest.raises(ShapeError, match="layer n: normalize with mode 'standard' must read a model input"):
        _model([{"type": "dense", "units": 3}, {"type": "normalize", "name": "n"}], (4,))


@pytest.mark.parametrize("attrs, path", [({"mode": "zscore"}, "layers[0].mode"),
                                         ({"factor": 0}, "layers[0].factor"),
                                         ({"scale": 2}, "layers[0].scale")])
def test_invalid_attributes_name_the_path(attrs, path):
    with pytest.raises(SpecError) as e:
        _model([{"type": "normalize", **attrs}], (3,))
    assert str(e.value).startswith(path)
