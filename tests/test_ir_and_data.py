"""Lowering (shape inference, shape errors naming the layer, the fusion pass) and the data loaders."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from nngraph.cli import main
from nngraph.data import DIGITS_TEST_FRACTION, fit_inputs, load_digits, load_source
from nngraph.errors import DataError, ShapeError
from nngraph.ir import output_activation
from nngraph.lowering import lower
from nngraph.spec import parse_spec


def spec_of(layers, inputs=None, **extra):
    return parse_spec({"name": "t", "inputs": inputs or {"x": {"shape": [4]}}, "layers": layers, **extra})


def test_shapes_are_inferred_and_activations_fused():
    g = lower(spec_of([{"type": "dense", "units": 8}, {"type": "relu"},
                       {"type": "dense", "units": 3, "name": "logits"}, {"type": "softmax", "name": "p"}]))
    assert [n.op for n in g.nodes] == ["Gemm", "Gemm"]
    assert [n.attrs["activation"] for n in g.nodes] == ["relu", "softmax"]
    assert g.output == "p" and g.values["p"].shape == (3,)
    assert output_activation(g) == "softmax"
    assert g.param_count == 4 * 8 + 8 + 8 * 3 + 3
    table = g.table()
    assert "Gemm+relu" in table and "total parameters: 67" in table


def test_activation_is_not_fused_into_a_gemm_that_feeds_another_node():
    g = lower(spec_of([{"type": "dense", "units": 4, "name": "h"}, {"type": "relu", "name": "r"},
                       {"type": "add", "inputs": ["h", "r"]}]))
    assert [n.op for n in g.nodes] == ["Gemm", "Relu", "Add"]


@pytest.mark.parametrize("layers, inputs, message", [
    ([{"type": "dense", "units": 3, "name": "a"}, {"type": "add", "inputs": ["x", "a"], "name": "sum"}], None,
     r"layer sum: add needs inputs of one shape, got x \(N, 4\) and a \(N, 3\)"),
    ([{"type": "concat", "inputs": ["x", "y"], "name": "cat", "axis": 0}], {"x": {"shape": [2, 3]}, "y": {"shape": [2, 4]}},
     r"layer cat: concat inputs must agree except on axis 0"),
    ([{"type": "softmax", "axis": 3, "name": "sm"}], None, r"layer sm: softmax axis 3 is out of range"),
    ([{"type": "dense", "units": 2, "name": "d"}], {"x": {"shape": [4], "dtype": "int64"}},
     r"layer d: dense expects float input"),
    ([{"type": "dense", "units": 2}], {"a": {"shape": [4]}, "b": {"shape": [4]}}, r"several inputs"),
])
def test_shape_errors_name_the_layer(layers, inputs, message):
    with pytest.raises(ShapeError, match=message):
        lower(spec_of(layers, inputs))


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits(), load_digits()
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert len(a.y) + len(a.y_test) == 1797 and len(a.y_test) == 450
    counts_all = np.bincount(np.concatenate([a.y, a.y_test]))
    counts_test = np.bincount(a.y_test)
    np.testing.assert_array_equal(counts_test, np.round(counts_all * DIGITS_TEST_FRACTION).astype(int))
    assert a.x.min() == 0 and a.x.max() == 1


def test_fit_inputs_reshapes_when_the_sizes_agree():
    x = np.arange(2 * 64, dtype=np.float64).reshape(2, 64)
    out = fit_inputs(x, {"img": ((1, 8, 8), "float32")})
    assert out["img"].shape == (2, 1, 8, 8) and out["img"].dtype == np.float32
    with pytest.raises(DataError, match=r"each sample has shape \(64,\), the model expects \(1, 7, 7\)"):
        fit_inputs(x, {"img": ((1, 7, 7), "float32")})
    with pytest.raises(DataError, match="contains NaN or Inf"):
        fit_inputs(np.array([[np.nan, 1.0]]), {"x": ((2,), "float32")})
    with pytest.raises(DataError, match="pass a dict of arrays"):
        fit_inputs(x, {"a": ((64,), "float32"), "b": ((64,), "float32")})


def test_csv_target_column_by_name_and_index(tmp_path):
    (tmp_path / "d.csv").write_text("label,a,b\n1,0.5,2\n0,1.5,3\n")
    ds = load_source(str(tmp_path / "d.csv"), {"target": "label"})
    np.testing.assert_array_equal(ds.y, [1, 0])
    np.testing.assert_array_equal(ds.x, [[0.5, 2], [1.5, 3]])
    ds = load_source(str(tmp_path / "d.csv"), {"target": 0})
    np.testing.assert_array_equal(ds.y, [1, 0])
    with pytest.raises(DataError, match="no target column 'nope'"):
        load_source(str(tmp_path / "d.csv"), {"target": "nope"})


def test_npy_pair_through_the_cli(tmp_path, specs_dir):
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 4, np.float32)
    y = np.array([0, 1, 1, 0] * 4, np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["train", str(specs_dir / "xor.json"), "--data", str(tmp_path / "x.npy"),
                                  "--targets", str(tmp_path / "y.npy"), "--epochs", "5", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.exists()
    r = CliRunner().invoke(main, ["train", str(specs_dir / "xor.json"), "--data", str(tmp_path / "x.npy")])
    assert r.exit_code == 2 and "needs its targets too" in r.output


def test_npz_with_test_split_reports_test_metrics(tmp_path, specs_dir):
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0], np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x, y_test=y)
    r = CliRunner().invoke(main, ["train", str(specs_dir / "xor.json"), "--data", str(tmp_path / "d.npz"),
                                  "--epochs", "3"])
    assert r.exit_code == 0 and "test: loss" in r.output
    np.savez(tmp_path / "half.npz", x=x, y=y, x_test=x)
    r = CliRunner().invoke(main, ["train", str(specs_dir / "xor.json"), "--data", str(tmp_path / "half.npz")])
    assert r.exit_code == 2 and "x_test and y_test must be given together" in r.output
