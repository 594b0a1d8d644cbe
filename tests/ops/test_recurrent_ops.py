"""Recurrent ops (RNN, LSTM, GRU) and Embedding: one row per variant, through the shared harness
(forward vs numpy, float64 finite-difference gradients, onnxruntime parity at batch 1/3/64), plus
parity at a second sequence length from the same exported file."""
import numpy as np
import pytest

from nngraph.model import Model

from .harness import (OpCase, check_float32_matches_float64, check_forward_reference, check_gradients, check_onnx_parity,
                      check_onnx_parity_lengths, make_feeds, randomize_params)


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
    timed = check_onnx_parity_lengths(case, tmp_path, lambda t: (t, t + 3), reference=_reference_supports(case))
    has_recurrent = any(layer["type"] in RECURRENT for layer in case.layers)
    assert bool(timed) == has_recurrent, f"{case.id}: inputs with a time axis: {timed}"


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
