"""Attention and the transformer block: one row per variant through the shared harness (float32 =
float64, forward vs numpy, float64 finite differences, onnxruntime / onnx.reference / OpenVINO / tract
parity at batch 1/3/64), parity at two sequence lengths from one exported file, the expansion, the
errors, and (with PyTorch installed) torch.nn.TransformerEncoderLayer loaded with the same weights."""
from __future__ import annotations

import numpy as np
import pytest

from nngraph.errors import ShapeError
from nngraph.lowering import lower
from nngraph.model import Model
from nngraph.spec import parse_spec

from .harness import OpCase, check_onnx_parity_lengths, randomize_params, table_tests


def _block(**kw):
    return {"type": "transformer_block", "heads": 2, "ff_units": 6, **kw}


CASES = [
    OpCase("attention-1head", {"x": [5, 4]}, [{"type": "attention", "heads": 1}]),
    OpCase("attention-1head-causal", {"x": [5, 4]}, [{"type": "attention", "heads": 1, "causal": True}]),
    OpCase("attention-4heads", {"x": [6, 8]}, [{"type": "attention", "heads": 4}]),
    OpCase("attention-2heads-causal", {"x": [6, 4]}, [{"type": "attention", "heads": 2, "causal": True}]),
    OpCase("attention-causal-dropout", {"x": [6, 4]}, [{"type": "attention", "heads": 2, "causal": True,
                                                        "dropout": 0.3}]),
    OpCase("attention-nobias", {"x": [4, 6]}, [{"type": "attention", "heads": 3, "use_bias": False}]),
    OpCase("attention-one-step", {"x": [1, 4]}, [{"type": "attention", "heads": 2, "causal": True}]),
    OpCase("block-pre-causal", {"x": [5, 8]}, [_block(causal=True, dropout=0.2)]),
    OpCase("block-post", {"x": [5, 8]}, [_block(heads=4, norm="post", dropout=0.0)]),
    OpCase("block-post-relu-dropout", {"x": [4, 4]}, [_block(norm="post", activation="relu", dropout=0.25)]),
    OpCase("lm-two-blocks", {"ids": [6]}, [{"type": "embedding", "vocab_size": 7, "dim": 8},
                                           _block(causal=True, dropout=0.0), _block(causal=True, dropout=0.1),
                                           {"type": "layernorm"}, {"type": "dense", "units": 7}],
           input_dtypes={"ids": "int64"}, id_limit=7),
]

(test_float32_kernels_match_float64, test_forward_matches_numpy_reference,
 test_backward_matches_finite_differences, test_onnx_export_matches_onnxruntime) = table_tests(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_one_export_runs_at_two_sequence_lengths(case, tmp_path):
    """The exported file has a dynamic time axis: at a longer length than the spec's (the table's
    parity test runs that one; the causal mask is built from the actual length), onnxruntime,
    onnx.reference, OpenVINO and tract give the Numba forward pass of the same weights, batch 1/3/64."""
    timed = check_onnx_parity_lengths(case, tmp_path, lambda t: (t + 5,), seed=1)
    assert timed == list(case.inputs), f"{case.id}: no dynamic time axis on {list(case.inputs)}"


def test_export_uses_standard_operators_only(tmp_path):
    import onnx

    model = Model.compile(CASES[-1].spec())
    path = tmp_path / "lm.onnx"
    model.export_onnx(path)
    m = onnx.load(str(path))
    ops = {n.op_type for n in m.graph.node}
    assert {n.domain for n in m.graph.node} <= {""}, "contrib ops in the export"
    assert {"MatMul", "Softmax", "Where", "Range", "Transpose", "Reshape"} <= ops
    assert all(a.i == -1 for n in m.graph.node if n.op_type == "Softmax" for a in n.attribute if a.name == "axis")
    assert m.opset_import[0].version == 17


def test_the_block_expands_to_primitive_nodes():
    spec = parse_spec({"name": "b", "inputs": {"x": {"shape": [5, 8]}}, "layers": [
        _block(causal=True, dropout=0.1, name="enc")]})
    g = lower(spec)
    assert [(n.name, n.op) for n in g.nodes] == [
        ("enc/ln1", "LayerNorm"), ("enc/attn/qkv", "Gemm"), ("enc/attn/sdpa", "ScaledDotProductAttention"),
        ("enc/attn", "Gemm"), ("enc/drop1", "Dropout"), ("enc/res1", "Add"), ("enc/ln2", "LayerNorm"),
        ("enc/ff1", "Gemm"), ("enc/ff1/gelu", "Gelu"), ("enc/ff_drop", "Dropout"), ("enc/ff2", "Gemm"),
        ("enc/drop2", "Dropout"), ("enc", "Add")]
    assert g.output == "enc" and all(n.layer == "enc" for n in g.nodes)
    assert g.values["enc/attn/qkv"].shape == (5, 24)
    sdpa = g.nodes[2]
    assert sdpa.attrs == {"heads": 2, "causal": True, "dropout": 0.1}
    # rate 0: no dropout nodes at all
    g0 = lower(parse_spec({"name": "b", "inputs": {"x": {"shape": [5, 8]}}, "layers": [_block(dropout=0.0)]}))
    assert not any(n.op == "Dropout" for n in g0.nodes)


@pytest.mark.parametrize("layers,message", [
    ([{"type": "attention", "heads": 3}], "layer attention_0: attention features (4) must be divisible by heads (3)"),
    ([_block(heads=3)], "layer transformer_block_0: attention features (4) must be divisible by heads (3)"),
    ([{"type": "flatten"}, {"type": "attention", "heads": 1}],
     "layer attention_1: attention expects a float sequence (N, time, features), got (N, 20)"),
])
def test_shape_errors_name_the_layer(layers, message):
    spec = parse_spec({"name": "e", "inputs": {"x": {"shape": [5, 4]}}, "layers": layers})
    with pytest.raises(ShapeError) as e:
        lower(spec)
    assert str(e.value) == message


def test_attention_weights_memory_is_batch_heads_t_squared():
    from nngraph.backend.program import Program

    spec = parse_spec({"name": "m", "inputs": {"x": {"shape": [16, 8]}}, "layers": [
        {"type": "attention", "heads": 4, "causal": True}]})
    model = Model.compile(spec)
    plan = Program(model.graph, model.params).plan(3, training=True)
    assert plan.output.shape == (3, 16, 8)
    from nngraph.ops.attention_kernels import _workspace
    assert _workspace(model.graph.nodes[1], [model.graph.values["attention_0/qkv"]], 3)["p"] == (3, 4, 16, 16)
    # the memory estimate (nngraph check, the fit check) counts P and dS: 2 * heads * T^2 per sample
    from nngraph.ir.memory import estimate_memory
    values = 2 * (16 * 24 + 16 * 8 + 16 * 8)           # the three nodes' outputs and gradients
    assert estimate_memory(model.graph).activation_bytes_per_sample == \
        4 * (values + 2 * 4 * 16 * 16 + 8 * 16) + 16 * 8 * 8  # + K^T scratch; the input (8 bytes a value)
    long = parse_spec({"name": "m", "inputs": {"x": {"shape": [8192, 64]}}, "train": {"batch_size": 64},
                       "layers": [{"type": "attention", "heads": 8}]})
    with pytest.raises(ShapeError) as e:
        lower(long)
    assert str(e.value).startswith("layer attention_0: needs ") and "\n" not in str(e.value)


def _torch_layer(torch, f, heads, ff, norm_first):
    layer = torch.nn.TransformerEncoderLayer(d_model=f, nhead=heads, dim_feedforward=ff, dropout=0.0,
                                             activation="gelu", batch_first=True, norm_first=norm_first)
    return layer.double()


@pytest.mark.parametrize("norm,causal,heads", [("pre", True, 4), ("post", False, 2), ("pre", False, 1)])
def test_block_matches_torch_transformer_encoder_layer(norm, causal, heads):
    """Forward, input gradient and every parameter gradient equal PyTorch's, in float64, with the
    same weights (in_proj = qkv dense, out_proj = attention output dense, linear1/2 = ff1/ff2)."""
    torch = pytest.importorskip("torch")
    f, t, ff, n = 8, 7, 12, 3
    spec = parse_spec({"name": "t", "inputs": {"x": {"shape": [t, f]}}, "layers": [
        {"type": "transformer_block", "heads": heads, "ff_units": ff, "causal": causal, "dropout": 0.0,
         "norm": norm, "name": "b"}]})
    model = Model.compile(spec, dtype=np.float64)
    rng = np.random.default_rng(5)
    randomize_params(model, rng)
    p = model.params.values
    layer = _torch_layer(torch, f, heads, ff, norm == "pre")
    pairs = {"self_attn.in_proj_weight": "b/attn/qkv.W", "self_attn.in_proj_bias": "b/attn/qkv.b",
             "self_attn.out_proj.weight": "b/attn.W", "self_attn.out_proj.bias": "b/attn.b",
             "linear1.weight": "b/ff1.W", "linear1.bias": "b/ff1.b", "linear2.weight": "b/ff2.W",
             "linear2.bias": "b/ff2.b", "norm1.weight": "b/ln1.scale", "norm1.bias": "b/ln1.bias",
             "norm2.weight": "b/ln2.scale", "norm2.bias": "b/ln2.bias"}
    if norm == "post":  # the block's last node, its second layer norm, carries the block's name
        pairs.update({"norm2.weight": "b.scale", "norm2.bias": "b.bias"})
    with torch.no_grad():
        for tname, ours in pairs.items():
            layer.get_parameter(tname).copy_(torch.from_numpy(p[ours]))
    layer.train()  # dropout 0; the fast inference path would skip the gradient
    x = rng.standard_normal((n, t, f))
    r = rng.standard_normal((n, t, f))
    xt = torch.from_numpy(x).requires_grad_(True)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(t, dtype=torch.float64) if causal else None
    yt = layer(xt, src_mask=mask, is_causal=causal)
    (yt * torch.from_numpy(r)).sum().backward()

    from nngraph.backend.program import Program
    plan = Program(model.graph, model.params, input_grads=True).plan(n, training=True)
    plan.set_inputs({"x": x})
    y = plan.forward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    plan.output_grad[...] = r
    plan.backward()
    np.testing.assert_allclose(plan.grads["x"], xt.grad.numpy(), rtol=1e-9, atol=1e-10)
    for tname, ours in pairs.items():
        np.testing.assert_allclose(model.params.grads[ours], layer.get_parameter(tname).grad.numpy(), rtol=1e-9,
                                   atol=1e-10, err_msg=f"gradient of {ours} vs torch {tname}")


def test_attention_matches_torch_scaled_dot_product_attention():
    """The SDPA node alone against F.scaled_dot_product_attention (float64, causal, 4 heads)."""
    torch = pytest.importorskip("torch")
    spec = parse_spec({"name": "s", "inputs": {"x": {"shape": [9, 8]}}, "layers": [
        {"type": "attention", "heads": 4, "causal": True, "name": "a"}]})
    model = Model.compile(spec, dtype=np.float64)
    rng = np.random.default_rng(2)
    randomize_params(model, rng)
    from nngraph.backend.program import Program
    plan = Program(model.graph, model.params).plan(2, training=False)
    x = rng.standard_normal((2, 9, 8))
    plan.set_inputs({"x": x})
    plan.forward()
    z = torch.from_numpy(plan.values["a/qkv"])
    q, k, v = (z[..., i * 8:(i + 1) * 8].reshape(2, 9, 4, 2).transpose(1, 2) for i in range(3))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 9, 8)
    np.testing.assert_allclose(plan.values["a/sdpa"], o.numpy(), rtol=1e-12, atol=1e-12)
