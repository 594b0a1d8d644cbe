"""Transformers end to end: the shipped specs train through the CLI, export standard ONNX with
dynamic batch and time axes that onnxruntime runs at other lengths, and `nngraph sample` generates
from a causal transformer LM; `nngraph check` shows the block's expansion."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from nngraph.cli import main
from nngraph.model import Model
from nngraph.onnx_io.dynamic_axes import with_time_length
from nngraph.runtime import session
from nngraph.spec import load_spec
from nngraph.workflow import train

SPECS = Path(__file__).resolve().parents[1] / "specs"


def _quiet(_: str) -> None:
    pass


def test_waves_transformer_classifies_and_exports_a_dynamic_length_model(tmp_path):
    """specs/waves_transformer.json (30 epochs: 94% test accuracy); 12 epochs here."""
    out = tmp_path / "w.onnx"
    result = train(SPECS / "waves_transformer.json", epochs=12, output=out, log=_quiet)
    assert result.test["accuracy"] > 0.75, result.test  # chance is 1/3
    proto = onnx.load(str(out))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 1]
    assert {n.domain for n in proto.graph.node} == {""}
    sess = session(out)
    rng = np.random.default_rng(0)
    for length in (50, 31, 90):
        m = Model.compile(with_time_length(result.model.spec, length))
        m.load_weights(result.model.params.as_dict())
        for batch in (1, 3, 64):
            x = rng.standard_normal((batch, length, 1)).astype(np.float32)
            np.testing.assert_allclose(sess.run(None, {"x": x})[0], m.predict(x), atol=1e-5, rtol=0)


def test_shakespeare_transformer_spec_trains_on_a_small_corpus_and_samples(tmp_path):
    """The shipped LM spec, made small with --set (one block, 32 features, 32-character sequences),
    learns a repetitive corpus through `nngraph train`; `nngraph sample` then continues it through
    the exported causal model, whose input length follows the prime (shorter than the training
    sequences) and the sliding window."""
    corpus = "".join(("to be or not to be, that is the question.\n" if i % 2 else "ROMEO: wherefore art thou?\n")
                     for i in range(150))
    (tmp_path / "c.txt").write_text(corpus)
    out = tmp_path / "tlm.onnx"
    sets = ["data.seq_len=32", "data.stride=8", "layers[0].dim=32", "layers[2].heads=2",
            "layers[2].ff_units=64", "layers[2].dropout=0.0", "train.batch_size=16", "optimizer.lr=0.003",
            "train.schedule=null"]
    spec = json.loads((SPECS / "shakespeare_transformer.json").read_text())
    spec["layers"] = [spec["layers"][i] for i in (0, 1, 2, 5, 6)]  # one block
    spec["inputs"]["ids"]["shape"] = [32]
    (tmp_path / "t.json").write_text(json.dumps(spec))
    args = ["train", str(tmp_path / "t.json"), "--data", str(tmp_path / "c.txt"), "-o", str(out), "--epochs", "6"]
    for s in sets:
        args += ["--set", s]
    runner = CliRunner()
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    test_loss = float(res.output.split("test: loss ")[1].split()[0])
    assert test_loss < 1.0, res.output  # a uniform guess costs log(24) = 3.2 nats
    vocab = set(corpus)
    res = runner.invoke(main, ["sample", str(out), "--prime", "ROMEO:", "--length", "80", "--temperature", "0.3",
                               "--seed", "1"])
    assert res.exit_code == 0, res.output
    text = res.output.rstrip("\n")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 80 and set(text) <= vocab
    assert "wherefore" in text or "question" in text, text  # it continues the corpus's lines
    res = runner.invoke(main, ["verify", str(out), "--runtime", "onnxruntime,reference,openvino,tract"])
    assert res.exit_code == 0, res.output


def test_verify_tolerance_follows_the_output_scale():
    from nngraph.runtime import within_tolerance

    want = np.array([20.0, 0.0, -3.0])
    assert within_tolerance(want + [0, 1.5e-4, 0], want, 1e-5, 1e-4)      # 1e-5 * 20 + 0
    assert not within_tolerance(want + [0, 2.5e-4, 0], want, 1e-5, 1e-4)
    small = np.array([0.5, 0.0])
    assert within_tolerance(small + [0, 9e-6], small, 1e-5, 1e-4)        # scale at least 1
    assert not within_tolerance(small + [0, 1.1e-5], small, 1e-5, 1e-4)
    assert not within_tolerance(np.zeros(2), np.zeros(3), 1e-5, 1e-4)


def test_check_lists_the_transformer_block_expansion(tmp_path):
    res = CliRunner().invoke(main, ["check", str(SPECS / "shakespeare_transformer.json")])
    assert res.exit_code == 0, res.output
    for node in ("transformer_block_2/ln1", "transformer_block_2/attn/qkv", "transformer_block_2/attn/sdpa",
                 "transformer_block_4/ff1/gelu", "transformer_block_4/ff2", "ScaledDotProductAttention"):
        assert node in res.output, res.output
    spec = load_spec(SPECS / "shakespeare_transformer.json")
    assert spec.train.epochs >= 1
