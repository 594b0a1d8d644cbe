"""sequence_pool and positional_embedding: harness rows (float32 = float64, numpy reference, finite
differences, ONNX parity), parity at several sequence lengths from one exported file, opsets, the
max's tie rule, the sinusoidal table, thread-count independence of the table gradient, and errors
(spec, lowering, and running an export past its max_length through the API and the CLI)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from nngraph.backend.params import sinusoidal_table
from nngraph.errors import DataError, ShapeError, SpecError
from nngraph.model import Model
from nngraph.onnx_io.dynamic_axes import with_time_length
from nngraph.spec import parse_spec

from .harness import OpCase, check_onnx_parity_lengths, randomize_params, table_tests

MODES = ("mean", "max", "first", "last")
GRU_SEQ = {"type": "gru", "units": 3, "return_sequences": True}


def _pos(kind, max_length=10):
    return {"type": "positional_embedding", "max_length": max_length, "kind": kind}


def _ids(case_id, layers, t=7, vocab=6):
    return OpCase(case_id, {"ids": [t]}, [{"type": "embedding", "vocab_size": vocab, "dim": 4}, *layers],
                  input_dtypes={"ids": "int64"}, id_limit=vocab)


CASES = [OpCase(f"sequence_pool-{m}", {"x": [5, 3]}, [{"type": "sequence_pool", "mode": m}]) for m in MODES]
CASES += [OpCase(f"dense-sequence_pool-{m}", {"x": [5, 3]}, [{"type": "dense", "units": 4},
                                                             {"type": "sequence_pool", "mode": m}]) for m in MODES]
CASES += [
    OpCase("sequence_pool-default-one-step", {"x": [1, 3]}, [{"type": "sequence_pool"}]),
    OpCase("gru-sequence_pool-max-dense", {"x": [4, 2]}, [GRU_SEQ, {"type": "sequence_pool", "mode": "max"},
                                                          {"type": "dense", "units": 2}]),
    OpCase("gru-sequence_pool-mean", {"x": [4, 2]}, [GRU_SEQ, {"type": "sequence_pool"}]),
]
CASES += [OpCase(f"dense-positional-{k}", {"x": [6, 2]}, [{"type": "dense", "units": 4}, _pos(k, 8)])
          for k in ("learned", "sinusoidal")]
CASES += [_ids(f"embedding-positional-{k}", [_pos(k)]) for k in ("learned", "sinusoidal")]
CASES += [
    OpCase("positional-learned-full-length-odd-features", {"x": [5, 3]}, [_pos("learned", 5)]),
    OpCase("positional-sinusoidal-then-gru", {"x": [4, 3]}, [_pos("sinusoidal", 6), GRU_SEQ]),
]

# float32 = float64, the numpy reference, finite differences, onnxruntime parity (harness.table_tests)
(test_float32_kernels_match_float64, test_forward_matches_numpy_reference,
 test_backward_matches_finite_differences, test_onnx_export_matches_onnxruntime) = table_tests(CASES)


# ---- one exported file at several sequence lengths -----------------------------------------------

LENGTH_CASES = [
    _ids("embedding-positional-dense", [_pos("learned", 12), {"type": "dense", "units": 3}], t=6),
    _ids("embedding-sinusoidal-dense", [_pos("sinusoidal", 12), {"type": "dense", "units": 3}], t=6),
    OpCase("gru-sequence_pool-dense", {"x": [5, 2]}, [GRU_SEQ, {"type": "sequence_pool", "mode": "max"},
                                                      {"type": "dense", "units": 2}]),
    OpCase("dense-sequence_pool-last", {"x": [5, 2]}, [{"type": "dense", "units": 3},
                                                       {"type": "sequence_pool", "mode": "last"}]),
]


@pytest.mark.parametrize("case", LENGTH_CASES, ids=lambda c: c.id)
def test_one_export_runs_at_every_sequence_length(case, tmp_path):
    """The input keeps a dynamic time axis; onnxruntime (and the other runtimes) on the one file
    match the Numba forward of the spec at T, a shorter and a longer length, batch 1/3/64."""
    timed = check_onnx_parity_lengths(case, tmp_path, lambda t: (t, 2, t + 3))
    assert timed == list(case.inputs), f"{case.id}: no dynamic time axis on {list(case.inputs)}"


def _model(layers, inputs=None, dtype=np.float32):
    inputs = inputs or {"x": {"shape": [5, 3]}}
    return Model.compile(parse_spec({"name": "t", "inputs": inputs, "layers": layers}), dtype=dtype)


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
@pytest.mark.parametrize("mode", MODES)
def test_sequence_pool_export_across_opsets(mode, opset, tmp_path):
    """ReduceMean/ReduceMax take ``axes`` as an attribute up to opset 17 and as an input from 18."""
    import onnxruntime as ort

    model = _model([{"type": "dense", "units": 4}, {"type": "sequence_pool", "mode": mode}])
    rng = np.random.default_rng(1)
    randomize_params(model, rng)
    path = model.export_onnx(tmp_path / "m.onnx", opset=opset)
    proto = onnx.load(str(path))
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", 4]
    x = rng.standard_normal((3, 7, 3)).astype(np.float32)  # a length the spec never saw
    m7 = Model.compile(with_time_length(model.spec, 7))
    m7.load_weights(model.params.as_dict())
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, m7.predict(x), atol=1e-5, rtol=0)


# ---- semantics -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequence_pool_max_routes_the_gradient_to_the_first_maximal_step(dtype):
    from nngraph.backend.program import Program

    model = _model([{"type": "sequence_pool", "mode": "max"}], {"x": {"shape": [4, 2]}}, dtype)
    x = np.array([[[1, 5], [3, 5], [3, 2], [0, 5]]], dtype)
    plan = Program(model.graph, model.params, input_grads=True).plan(1, training=True)
    plan.set_inputs({"x": x})
    np.testing.assert_array_equal(plan.forward(), [[3, 5]])
    plan.output_grad[...] = [[7, 9]]
    plan.backward()
    np.testing.assert_array_equal(plan.grads["x"], [[[0, 9], [7, 0], [0, 0], [0, 0]]])


def test_sinusoidal_table_is_the_vaswani_table_and_is_state():
    model = _model([_pos("sinusoidal", 9)], dtype=np.float64)  # F = 3: an odd feature count
    name = "positional_embedding_0.table"
    assert not model.params.all_infos[name].trainable and name not in model.params.grads
    want = np.zeros((9, 3))
    for t in range(9):
        for j in range(3):
            angle = t / 10000 ** ((j - j % 2) / 3)
            want[t, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    np.testing.assert_allclose(model.params.values[name], want, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(sinusoidal_table(9, 3), model.params.values[name])


def test_learned_table_init_is_a_small_normal_and_trains():
    model = _model([_pos("learned", 256), {"type": "sequence_pool"}], {"x": {"shape": [5, 8]}})
    table = model.params.values["positional_embedding_0.table"]
    assert table.shape == (256, 8) and model.params.all_infos["positional_embedding_0.table"].trainable
    assert 0.015 < table.std() < 0.025 and abs(table.mean()) < 0.005


def test_table_gradient_is_the_batch_sum_and_zero_past_the_length():
    from nngraph.backend.program import Program

    model = _model([_pos("learned", 8)], {"x": {"shape": [5, 3]}}, np.float64)
    plan = Program(model.graph, model.params, input_grads=True).plan(4, training=True)
    rng = np.random.default_rng(2)
    plan.set_inputs({"x": rng.standard_normal((4, 5, 3))})
    plan.forward()
    dy = rng.standard_normal((4, 5, 3))
    plan.output_grad[...] = dy
    model.params.grads["positional_embedding_0.table"][...] = np.nan  # overwritten, rows past T too
    plan.backward()
    g = model.params.grads["positional_embedding_0.table"]
    np.testing.assert_allclose(g[:5], dy.sum(axis=0), rtol=1e-14)
    np.testing.assert_array_equal(g[5:], 0)
    np.testing.assert_array_equal(plan.grads["x"], dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_kernels_give_the_serial_bits(dtype):
    """Table-gradient rows and pooled samples are split over fixed blocks: the same bits as serial."""
    from nngraph.ops import positional_kernels as P
    from nngraph.ops import sequence_pool_kernels as S

    rng = np.random.default_rng(5)
    dy = rng.standard_normal((37, 11, 6)).astype(dtype)
    a, b = np.empty((16, 6), dtype), np.empty((16, 6), dtype)
    P.table_backward(dy, a)
    P.table_backward_threaded(dy, b)
    assert np.array_equal(a, b)
    for mode in range(4):
        y1, y2 = np.empty((37, 6), dtype), np.empty((37, 6), dtype)
        S.pool_forward(dy, y1, mode)
        S.pool_forward_threaded(dy, y2, mode)
        dx1, dx2 = np.empty_like(dy), np.empty_like(dy)
        S.pool_backward(dy, y1, dx1, mode)
        S.pool_backward_threaded(dy, y1, dx2, mode)
        assert np.array_equal(y1, y2) and np.array_equal(dx1, dx2), mode


def test_builder_helpers_give_the_json_spec():
    from nngraph import spec as S

    built = S.build("t", inputs={"x": {"shape": [5, 3]}},
                    layers=[S.PositionalEmbedding(16, "sinusoidal"), S.PositionalEmbedding(), S.SequencePool("last")])
    assert [layer.to_dict() for layer in built.layers] == [
        {"type": "positional_embedding", "max_length": 16, "kind": "sinusoidal"},
        {"type": "positional_embedding"}, {"type": "sequence_pool", "mode": "last"}]


# ---- errors ----------------------------------------------------------------------------------

def test_sequence_longer_than_max_length_is_a_shape_error():
    with pytest.raises(ShapeError) as e:
        _model([{"type": "dense", "units": 4}, {**_pos("learned", 4), "name": "pos"}])
    assert str(e.value) == "layer pos: sequence length 5 exceeds positional_embedding's max_length 4"


@pytest.mark.parametrize("layer, inputs, fragment", [
    ({"type": "sequence_pool", "name": "p"}, {"x": {"shape": [4]}},
     "layer p: sequence_pool expects a float sequence (N, time, features), got (N, 4)"),
    ({"type": "sequence_pool", "name": "p"}, {"x": {"shape": [2, 4, 4]}},
     "layer p: sequence_pool expects a float sequence (N, time, features), got (N, 2, 4, 4)"),
    ({"type": "sequence_pool", "name": "p"}, {"x": {"shape": [4, 2], "dtype": "int64"}},
     "got (N, 4, 2) of int64 (add an embedding layer first)"),
    ({**_pos("learned"), "name": "q"}, {"x": {"shape": [4]}},
     "layer q: positional_embedding expects a float sequence (N, time, features), got (N, 4)"),
])
def test_wrong_input_is_a_one_line_shape_error(layer, inputs, fragment):
    with pytest.raises(ShapeError) as e:
        _model([layer], inputs)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("layer, path", [
    ({"type": "sequence_pool", "mode": "median"}, "layers[0].mode"),
    ({"type": "positional_embedding", "kind": "rotary"}, "layers[0].kind"),
    ({"type": "positional_embedding", "max_length": 0}, "layers[0].max_length"),
])
def test_bad_attribute_is_a_one_line_spec_error_naming_the_field(layer, path):
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "t", "inputs": {"x": {"shape": [5, 3]}}, "layers": [layer]})
    assert path in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.fixture(scope="module")
def positional_export(tmp_path_factory):
    """An exported embedding -> positional_embedding(max_length 8) -> dense model, compiled at T = 6."""
    layers = [{"type": "embedding", "vocab_size": 5, "dim": 4}, _pos("learned", 8), {"type": "dense", "units": 2}]
    model = _model(layers, {"ids": {"shape": [6], "dtype": "int64"}})
    path = tmp_path_factory.mktemp("pos") / "pos.onnx"
    model.export_onnx(path)
    return path


def test_export_records_the_max_length_and_run_refuses_longer_inputs(positional_export):
    from nngraph.runtime import run

    meta = {p.key: p.value for p in onnx.load(str(positional_export)).metadata_props}
    assert meta["nngraph.max_time_length"] == "8"
    ids = np.random.default_rng(0).integers(0, 5, (3, 9))
    for t in (1, 6, 8):
        assert run(positional_export, ids[:, :t]).shape == (3, t, 2)
    with pytest.raises(DataError) as e:
        run(positional_export, ids)
    assert str(e.value) == "input 'ids': sequence length 9 exceeds the model's max_length 8"
    again = Model.load_onnx(positional_export).to_onnx()  # a re-export recomputes the key
    assert {p.key: p.value for p in again.metadata_props}["nngraph.max_time_length"] == "8"


def test_models_without_a_length_limit_record_none(tmp_path):
    model = _model([GRU_SEQ, {"type": "sequence_pool"}])
    meta = {p.key for p in model.to_onnx().metadata_props}
    assert "nngraph.max_time_length" not in meta


def test_cli_run_past_max_length_is_one_error_line(positional_export, tmp_path):
    from nngraph.cli import main

    np.save(tmp_path / "long.npy", np.zeros((2, 11), np.int64))
    r = CliRunner().invoke(main, ["run", str(positional_export), "--input", str(tmp_path / "long.npy")],
                           catch_exceptions=False)
    assert r.exit_code != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == ["error: input 'ids': sequence length 11 exceeds the model's max_length 8"], r.stderr
    np.save(tmp_path / "ok.npy", np.zeros((2, 8), np.int64))
    r = CliRunner().invoke(main, ["run", str(positional_export), "--input", str(tmp_path / "ok.npy")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert np.asarray(json.loads(r.stdout)).shape == (2, 8, 2)
