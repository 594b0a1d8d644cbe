"""Recurrent ops (RNN, LSTM, GRU) and Embedding: one row per variant, through the shared harness
(forward vs numpy, float64 finite-difference gradients, onnxruntime parity at batch 1/3/64), plus
parity at a second sequence length from the same exported file."""
import numpy as np
import pytest

from nngraph.model import Model
from nngraph.onnx_io.dynamic_axes import TIME, with_time_length

from .harness import (OpCase, check_float32_matches_float64, check_forward_reference, check_gradients, check_onnx_parity,
                      check_other_runtimes,
                      make_feeds, randomize_params)


def _rec(kind, seq, bi, **extra):
    return {"type": kind, "units": 3, "return_sequences": seq, "bidirectional": bi, **extra}


def _label(kind, seq, bi, extra):
    parts = [kind, "bi" if bi else "uni", "seq" if seq else "last"]
    parts += [f"{k}-{v}" for k, v in extra.items()]
    return "-".join(str(p) for p in parts)


VARIANTS = [("rnn", {}), ("rnn", {"activation": "relu"}), ("rnn", {"activation": "sigmoid"}),
            ("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": True})]
CASES = [OpCase(_label(kind, seq, bi, extra), {"x": [4, 2]}, [_rec(kind, seq, bi, **extra)], scale=0.7)
         for kind, extra in VARIANTS for bi in (False, True) for seq in (False, True)]
CASES += [
    OpCase("lstm-relu-bi-seq", {"x": [3, 2]}, [_rec("lstm", True, True, activation="relu")]),
    OpCase("gru-sigmoid-uni-last", {"x": [3, 2]}, [_rec("gru", False, False, activation="sigmoid")]),
    OpCase("rnn-initial-state", {"x": [4, 2], "h0": [6]}, [{**_rec("rnn", True, True), "inputs": ["x", "h0"]}]),
    OpCase("lstm-initial-states", {"x": [4, 2], "h0": [3], "c0": [3]},
           [{**_rec("lstm", False, False), "inputs": ["x", "h0", "c0"]}]),
    OpCase("lstm-initial-h-only", {"x": [4, 2], "h0": [6]}, [{**_rec("lstm", True, True), "inputs": ["x", "h0"]}]),
    OpCase("gru-initial-state-lbr", {"x": [4, 2], "h0": [6]},
           [{**_rec("gru", False, True, linear_before_reset=True), "inputs": ["x", "h0"]}]),
    OpCase("gru-initial-state", {"x": [4, 2], "h0": [3]}, [{**_rec("gru", True, False), "inputs": ["x", "h0"]}]),
    OpCase("stacked-lstm-dense-per-step", {"x": [5, 2]}, [_rec("lstm", True, True), _rec("gru", True, False),
                                                         {"type": "dense", "units": 2, "activation": "tanh"}]),
    OpCase("rnn-last-dense", {"x": [5, 3]}, [_rec("rnn", False, True), {"type": "dense", "units": 2}]),
    OpCase("embedding", {"ids": [4]}, [{"type": "embedding", "vocab_size": 5, "dim": 3}],
           input_dtypes={"ids": "int64"}),
    OpCase("embedding-gru-dense", {"ids": [6]}, [{"type": "embedding", "vocab_size": 7, "dim": 3},
                                                  _rec("gru", True, False), {"type": "dense", "units": 7}],
           input_dtypes={"ids": "int64"}, id_limit=7),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_reference(case):
    check_forward_reference(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_matches_finite_differences(case):
    check_gradients(case)


def _reference_supports(case: OpCase) -> bool:
    """onnx.reference implements RNN with Tanh only and ignores LSTM/GRU ``activations``."""
    return all(layer.get("activation", "tanh") == "tanh" for layer in case.layers if layer["type"] in RECURRENT)


RECURRENT = ("rnn", "lstm", "gru")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_onnx_export_matches_onnxruntime(case, tmp_path):
    """One exported file, batch 1/3/64, at the trained sequence length and a longer one."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    model = Model.compile(case.spec())
    rng = np.random.default_rng(0)
    randomize_params(model, rng)
    path = tmp_path / f"{case.id}.onnx"
    model.export_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = ReferenceEvaluator(str(path)) if _reference_supports(case) else None
    seq_inputs = [i for i in sess.get_inputs() if TIME in i.shape]
    has_recurrent = any(layer["type"] in RECURRENT for layer in case.layers)
    assert bool(seq_inputs) == has_recurrent, f"{case.id}: input shapes {[i.shape for i in sess.get_inputs()]}"
    t0 = case.inputs[seq_inputs[0].name][0] if seq_inputs else 0
    runs = []
    for length in ((t0, t0 + 3) if seq_inputs else (t0,)):
        other = model
        if length != t0:
            other = Model.compile(with_time_length(model.spec, length))
            other.load_weights(model.params.as_dict())
        for batch in (1, 3, 64):
            feeds = make_feeds(case, other, batch, rng, np.float32)
            ours = other.predict(feeds)
            runs.append((f"T={length}, batch {batch}", feeds, ours))
            theirs = sess.run(None, feeds)[0]
            assert theirs.shape == ours.shape, f"{case.id}: T={length} batch {batch}: {theirs.shape} vs {ours.shape}"
            np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0,
                                       err_msg=f"{case.id}: onnxruntime, T={length}, batch {batch}")
            if ref is not None and batch <= 3:
                np.testing.assert_allclose(ref.run(None, feeds)[0], theirs, atol=1e-5, rtol=1e-5,
                                           err_msg=f"{case.id}: onnx.reference, T={length}, batch {batch}")
    check_other_runtimes(case.id, path, runs)


def test_harness_parity_row_for_the_default_variants(tmp_path):
    """The shared harness's own parity check agrees (tanh variants, which onnx.reference supports)."""
    for case in CASES:
        if _reference_supports(case) and case.id.endswith(("bi-seq", "uni-last")):
            check_onnx_parity(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_kernels_match_float64(case):
    """float32 runs the vector GEMM kernels inside the time loop; float64 (the gradient checks) plain
    loops: both must compute the same forward pass and gradients."""
    check_float32_matches_float64(case)


@pytest.mark.parametrize("case", [c for c in CASES if c.id != "embedding"], ids=lambda c: c.id)
def test_batch_chunks_on_threads_give_the_same_bits(case, monkeypatch):
    """Wide batches split over threads (each runs the whole time loop for its rows): forward and all
    gradients must equal the one-chunk run exactly, whatever the split (here 3 chunks of 24 rows)."""
    from nngraph.backend.program import Program
    from nngraph.ops import recurrent_kernels as recurrent

    def run(parts):
        monkeypatch.setattr(recurrent, "chunks", lambda *a: parts)
        model = Model.compile(case.spec())
        rng = np.random.default_rng(3)
        randomize_params(model, rng)
        feeds = make_feeds(case, model, 24, rng, np.float32)
        plan = Program(model.graph, model.params, input_grads=True).plan(24, training=True)
        plan.set_inputs(feeds)
        out = plan.forward().copy()
        plan.output_grad[...] = rng.standard_normal(out.shape)
        plan.backward()
        grads = {k: v.copy() for k, v in model.params.grads.items()}
        grads.update({n: plan.grads[n].copy() for n in model.graph.inputs if n in plan.grads})
        return out, grads

    out1, g1 = run(1)
    out3, g3 = run(3)
    assert np.array_equal(out1, out3), case.id
    for k in g1:
        assert np.array_equal(g1[k], g3[k]), f"{case.id}: {k}"
