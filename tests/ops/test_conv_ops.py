"""Conv, pooling and flatten: one row per variant (see harness.py), plus shape rules and errors."""
import numpy as np
import onnx
import pytest

from nngraph.errors import ShapeError, SpecError
from nngraph.lowering import lower
from nngraph.model import Model
from nngraph.spec import parse_spec

from .harness import (OpCase, check_float32_matches_float64, check_forward_reference, check_gradients, check_onnx_parity,
                      make_feeds, randomize_params)


def conv(**kw):
    return {"type": "conv2d", **kw}


CASES = [
    OpCase("conv2d-valid", {"x": [2, 6, 5]}, [conv(filters=3, kernel=3)]),
    OpCase("conv2d-same-relu", {"x": [2, 6, 6]}, [conv(filters=4, kernel=3, padding="same", activation="relu")]),
    OpCase("conv2d-same-even-kernel", {"x": [1, 5, 6]}, [conv(filters=2, kernel=[2, 4], padding="same")]),
    OpCase("conv2d-stride2-same", {"x": [2, 7, 6]}, [conv(filters=3, kernel=3, stride=2, padding="same",
                                                           activation="tanh")]),
    OpCase("conv2d-stride-pair", {"x": [2, 9, 8]}, [conv(filters=2, kernel=[3, 2], stride=[2, 3])]),
    OpCase("conv2d-dilation", {"x": [2, 9, 9]}, [conv(filters=3, kernel=3, dilation=2, padding="same",
                                                       activation="sigmoid")]),
    OpCase("conv2d-dilation-stride", {"x": [2, 10, 9]}, [conv(filters=2, kernel=[3, 2], dilation=[2, 3],
                                                               stride=2, padding=1)]),
    OpCase("conv2d-explicit-pads", {"x": [2, 5, 6]}, [conv(filters=3, kernel=3, padding=[1, 0, 2, 1])]),
    OpCase("conv2d-pad-per-axis", {"x": [2, 5, 6]}, [conv(filters=3, kernel=3, padding=[2, 1], stride=2)]),
    OpCase("conv2d-groups", {"x": [4, 5, 5]}, [conv(filters=6, kernel=3, groups=2, padding="same",
                                                     activation="relu")]),
    OpCase("conv2d-depthwise-nobias", {"x": [3, 5, 5]}, [conv(filters=3, kernel=3, groups=3, use_bias=False)]),
    OpCase("conv2d-1x1", {"x": [5, 3, 4]}, [conv(filters=2, kernel=1)]),
    OpCase("conv1d-same", {"x": [3, 10]}, [{"type": "conv1d", "filters": 4, "kernel": 3, "padding": "same",
                                            "activation": "relu"}]),
    OpCase("conv1d-stride-dilation", {"x": [2, 13]}, [{"type": "conv1d", "filters": 3, "kernel": 3, "stride": 2,
                                                       "dilation": 2, "padding": [1, 2]}]),
    OpCase("conv1d-groups", {"x": [4, 8]}, [{"type": "conv1d", "filters": 2, "kernel": 2, "groups": 2}]),
    OpCase("maxpool2d", {"x": [2, 6, 6]}, [{"type": "maxpool2d", "size": 2}]),
    OpCase("maxpool2d-odd-valid", {"x": [2, 7, 5]}, [{"type": "maxpool2d", "size": 2}]),
    OpCase("maxpool2d-overlap", {"x": [2, 7, 7]}, [{"type": "maxpool2d", "size": 3, "stride": 2}]),
    OpCase("maxpool2d-same-odd", {"x": [2, 5, 7]}, [{"type": "maxpool2d", "size": 2, "padding": "same"}]),
    OpCase("maxpool2d-pads", {"x": [1, 6, 5]}, [{"type": "maxpool2d", "size": [3, 2], "stride": [1, 2],
                                                 "padding": [1, 0, 1, 1]}]),
    OpCase("avgpool2d", {"x": [2, 6, 6]}, [{"type": "avgpool2d", "size": 2}]),
    OpCase("avgpool2d-same-excludes-pad", {"x": [2, 5, 5]}, [{"type": "avgpool2d", "size": 3, "stride": 2,
                                                              "padding": "same"}]),
    OpCase("avgpool2d-overlap-pads", {"x": [1, 6, 7]}, [{"type": "avgpool2d", "size": [3, 2], "stride": 1,
                                                         "padding": 1}]),
    OpCase("global-avgpool2d", {"x": [3, 4, 5]}, [{"type": "global_avgpool2d"}]),
    OpCase("flatten", {"x": [2, 3, 4]}, [{"type": "flatten"}]),
    OpCase("cnn-stack", {"x": [1, 8, 8]}, [
        conv(filters=4, kernel=3, padding="same", activation="relu"),
        {"type": "maxpool2d", "size": 2},
        conv(filters=6, kernel=3, activation="relu"),
        {"type": "flatten"},
        {"type": "dense", "units": 5, "activation": "softmax"}]),
    OpCase("cnn-global", {"x": [2, 6, 6]}, [
        conv(filters=4, kernel=3, stride=2, padding="same", activation="tanh"),
        {"type": "avgpool2d", "size": 2, "stride": 1},
        {"type": "global_avgpool2d"},
        {"type": "dense", "units": 3}]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_reference(case):
    check_forward_reference(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_matches_finite_differences(case):
    check_gradients(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_kernels_match_float64(case):
    """float32 runs the vector GEMM kernels, float64 (the finite-difference checks) plain loops."""
    check_float32_matches_float64(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_onnx_export_matches_onnxruntime(case, tmp_path):
    check_onnx_parity(case, tmp_path)


# ---- shape rules and errors -------------------------------------------------------------------

def _graph(shape, layers):
    return lower(parse_spec({"name": "s", "inputs": {"x": {"shape": shape}}, "layers": layers}))


@pytest.mark.parametrize("size,kernel,stride,dilation,want", [
    (28, 5, 1, 1, 28), (28, 5, 2, 1, 14), (7, 2, 2, 1, 4), (10, 3, 3, 2, 4), (1, 3, 1, 1, 1)])
def test_same_padding_gives_ceil_of_input_over_stride(size, kernel, stride, dilation, want):
    g = _graph([1, size, size], [conv(filters=1, kernel=kernel, stride=stride, dilation=dilation, padding="same")])
    assert g.values["conv2d_0"].shape == (1, want, want)


def test_same_padding_puts_the_odd_unit_at_the_end():
    model = Model.compile(parse_spec({"name": "s", "inputs": {"x": {"shape": [1, 6, 6]}},
                                      "layers": [conv(filters=1, kernel=2, padding="same")]}))
    conv_node = next(n for n in model.to_onnx().graph.node if n.op_type == "Conv")
    pads = next(a for a in conv_node.attribute if a.name == "pads")
    assert list(pads.ints) == [0, 0, 1, 1]
    assert not any(a.name == "auto_pad" for a in conv_node.attribute)


def test_shapes_of_the_lenet_stack():
    g = _graph([1, 28, 28], [conv(filters=16, kernel=5, padding="same", activation="relu"),
                             {"type": "maxpool2d", "size": 2},
                             conv(filters=32, kernel=5, activation="relu"),
                             {"type": "avgpool2d", "size": 2, "stride": 2},
                             {"type": "flatten"}, {"type": "dense", "units": 10}])
    shapes = [g.values[n.output].shape for n in g.nodes]
    assert shapes == [(16, 28, 28), (16, 14, 14), (32, 10, 10), (32, 5, 5), (800,), (10,)]
    assert g.params["conv2d_2.W"].shape == (32, 16, 5, 5)
    assert g.params["dense_5.W"].shape == (10, 800)


def test_conv1d_weight_layout_and_shape():
    g = _graph([3, 20], [{"type": "conv1d", "filters": 8, "kernel": 5, "stride": 2}])
    assert g.values["conv1d_0"].shape == (8, 8)
    assert g.params["conv1d_0.W"].shape == (8, 3, 5)


def test_kernel_larger_than_padded_input_names_layer_and_sizes():
    with pytest.raises(ShapeError, match=r"layer c2: kernel 5x5 is larger than its padded input 4x4"):
        _graph([1, 8, 8], [conv(filters=2, kernel=3, name="c1"), {"type": "maxpool2d", "size": 1},
                           conv(filters=2, kernel=3, stride=1), conv(filters=2, kernel=5, name="c2")])


def test_dilated_kernel_span_is_reported():
    with pytest.raises(ShapeError, match=r"dilation 3x3, span 7.*padded input 6x6"):
        _graph([1, 6, 6], [conv(filters=1, kernel=3, dilation=3)])


def test_pool_window_larger_than_input():
    with pytest.raises(ShapeError, match=r"layer p: window 3x3 is larger than its padded input 2x2"):
        _graph([1, 2, 2], [{"type": "maxpool2d", "size": 3, "name": "p"}])


def test_pool_padding_must_be_smaller_than_window():
    with pytest.raises(ShapeError, match=r"smaller than the window"):
        _graph([1, 6, 6], [{"type": "avgpool2d", "size": 2, "padding": 2}])


def test_pool_stride_defaults_to_size():
    g = _graph([1, 9, 9], [{"type": "maxpool2d", "size": 3}])
    assert g.values["maxpool2d_0"].shape == (1, 3, 3)


def test_conv_needs_channels_axis():
    with pytest.raises(ShapeError, match=r"layer conv2d_0: conv2d expects float input \(N, channels, height, "
                                         r"width\), got \(N, 28, 28\)"):
        _graph([28, 28], [conv(filters=2, kernel=3)])


def test_groups_must_divide_channels_and_filters():
    with pytest.raises(ShapeError, match=r"groups 2 must divide both the input channels \(3\) and the filters \(4\)"):
        _graph([3, 5, 5], [conv(filters=4, kernel=3, groups=2)])


def test_padding_with_wrong_count_of_numbers():
    with pytest.raises(ShapeError, match=r"padding \[1, 2, 3\] must have 2 \(per axis\) or 4"):
        _graph([1, 5, 5], [conv(filters=1, kernel=3, padding=[1, 2, 3])])


@pytest.mark.parametrize("layer,path", [
    (conv(filters=0, kernel=3), "layers[0].filters"),
    (conv(filters=2, kernel=[3, 3, 3]), "layers[0].kernel"),
    (conv(filters=2, kernel=3, padding="full"), "layers[0].padding"),
    (conv(filters=2, kernel=3, activation="softmax"), "layers[0].activation"),
    ({"type": "maxpool2d"}, "layers[0].size"),
    ({"type": "maxpool2d", "size": 2, "stride": 0}, "layers[0].stride"),
])
def test_bad_keys_are_spec_errors_with_path(layer, path):
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "s", "inputs": {"x": {"shape": [1, 8, 8]}}, "layers": [layer]})
    assert e.value.path == path


def test_export_passes_full_checker_with_dynamic_batch(tmp_path):
    model = Model.compile(parse_spec({"name": "s", "inputs": {"x": {"shape": [1, 8, 8]}}, "layers": [
        conv(filters=4, kernel=3, padding="same", activation="relu"), {"type": "maxpool2d", "size": 2},
        {"type": "avgpool2d", "size": 2, "padding": "same"}, {"type": "global_avgpool2d"},
        {"type": "dense", "units": 3}]}))
    proto = model.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:5] == ["Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool"]
    avg = next(n for n in proto.graph.node if n.op_type == "AveragePool")
    assert {a.name: a for a in avg.attribute}["count_include_pad"].i == 0


def test_float32_forward_matches_float64():
    spec = CASES[-2].spec()
    m32 = Model.compile(spec)
    m64 = m32.astype(np.float64)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8))
    np.testing.assert_allclose(m32.predict(x.astype(np.float32)), m64.predict(x), atol=1e-5)


# ---- the threaded kernels (blocks of samples per thread, partial dW/db summed) ----------------

THREADED = ["conv2d-same-relu", "conv2d-stride2-same", "conv2d-groups", "conv1d-stride-dilation", "cnn-stack",
            "maxpool2d-overlap", "avgpool2d-same-excludes-pad"]


@pytest.mark.parametrize("case", [
    # 10x20 outputs: 2 samples unfold together (COLUMNS 512); blocks of 3 samples split 2 + 1
    OpCase("conv2d-stride2-subblocks", {"x": [2, 20, 40]}, [conv(filters=3, kernel=3, stride=2, padding="same",
                                                                 activation="relu")], batch=20),
    # 5x5 outputs: up to 20 samples together, capped by the block (3 of 20 samples / 8 blocks)
    OpCase("conv2d-stride2-groups-subblocks", {"x": [4, 9, 9]}, [conv(filters=4, kernel=3, stride=2, groups=2,
                                                                      padding="same")], batch=20),
    # 16 x 5 x 5 = 400 >= PACKED_K patch rows: dW on col^T packed into panels (float32)
    OpCase("conv2d-stride2-packed-dw", {"x": [16, 9, 9]}, [conv(filters=5, kernel=5, stride=2, padding="same",
                                                                activation="relu")], batch=20),
    # ... and >= PACKED_F filters: the forward product packs col into panels too (float32)
    OpCase("conv2d-stride2-packed-forward", {"x": [16, 7, 7]}, [conv(filters=128, kernel=5, stride=2,
                                                                     padding="same")], batch=5),
], ids=lambda c: c.id)
def test_strided_conv_unfolds_several_samples_at_a_time(case):
    """The strided path multiplies a few samples' patches at once (conv_bind.sub_block); uneven
    sub-blocks give the reference's forward, finite-difference gradients, float32 = float64."""
    from nngraph.ops.conv_bind import sub_block

    from nngraph.ops.conv_kernels import PACKED_F, PACKED_K

    assert sub_block(20, 200) == 2 and sub_block(20, 25) == 3 and sub_block(64, 49) == 8 and sub_block(64, 1024) == 1
    assert sub_block(32, 169) == 2  # 4 samples a block: 2 + 2, not 3 + 1
    assert PACKED_K <= 400 and PACKED_F <= 128
    check_forward_reference(case, batch=case.batch)
    check_gradients(case)
    check_float32_matches_float64(case)


@pytest.fixture
def force_threads(monkeypatch):
    """Every conv and pool call takes its threaded path, as if the machine had 3 threads."""
    from nngraph.ops import conv_bind as conv, pool_kernels as pool

    monkeypatch.setattr(conv, "THREADED_MIN", 0)
    monkeypatch.setattr(conv, "thread_count", lambda: 3)
    monkeypatch.setattr(pool, "threaded", lambda elements: True)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in THREADED], ids=lambda c: c.id)
def test_threaded_kernels_match_reference_and_finite_differences(case, force_threads):
    from dataclasses import replace

    case = replace(case, batch=11)  # more samples than blocks (8), unevenly split
    check_forward_reference(case)
    check_gradients(case)


def test_fast_2x2_maxpool_agrees_with_the_general_kernels_on_ties():
    """The 2x2/2 fast path and the general window loops pick the same (first) maximum, also when
    values tie, and leave rows/columns outside every window at zero gradient."""
    from nngraph.ops import pool_kernels as pool

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(3, 4, 9, 7)).astype(np.float32)  # many ties
    dy = rng.standard_normal((3, 4, 4, 3)).astype(np.float32)
    fast_y, slow_y = np.empty_like(dy), np.empty_like(dy)
    fast_dx, slow_dx = np.full_like(x, np.nan), np.full_like(x, np.nan)
    pool.maxpool_forward(x, fast_y, 2, 2, 2, 2, 0, 0)
    pool.maxpool_backward(x, dy, fast_dx, 2, 2, 2, 2, 0, 0)
    # the same windows through the general path: a 2x2 window given as (2, 2) at stride (2, 2) but
    # with a 1-pixel pad that never wins (pads at the far side only change nothing for floor mode)
    for q in range(3 * 4):
        n, c = divmod(q, 4)
        for a in range(4):
            for b in range(3):
                win = x[n, c, 2 * a:2 * a + 2, 2 * b:2 * b + 2]
                slow_y[n, c, a, b] = win.max()
    slow_dx[:] = 0
    for n in range(3):
        for c in range(4):
            for a in range(4):
                for b in range(3):
                    win = x[n, c, 2 * a:2 * a + 2, 2 * b:2 * b + 2]
                    i, j = divmod(int(np.argmax(win)), 2)  # numpy's argmax: the first maximum
                    slow_dx[n, c, 2 * a + i, 2 * b + j] += dy[n, c, a, b]
    assert np.array_equal(fast_y, slow_y)
    assert np.array_equal(fast_dx, slow_dx)


@pytest.mark.parametrize("nt_filters", [0, 1000], ids=["tile-over-transposed-dz", "dot-products"])
@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith(("conv2d", "conv1d")) and "stride" not in c.id],
                         ids=lambda c: c.id)
def test_both_weight_gradient_kernels(case, nt_filters, monkeypatch):
    """The stride-1 weight gradient has two kernels, picked by filters per group: force each."""
    from nngraph.ops import conv_bind as conv

    monkeypatch.setattr(conv, "NT_FILTERS", nt_filters)
    check_gradients(case)
    check_float32_matches_float64(case)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in THREADED and c.id.startswith(("conv", "cnn"))],
                         ids=lambda c: c.id)
def test_thread_count_does_not_change_the_bits(case, monkeypatch):
    """Serial and threaded conv calls cut samples into the same blocks and sum the partial dW/db in
    the same order: identical float32 outputs and gradients."""
    from dataclasses import replace

    from nngraph.backend.program import Program
    from nngraph.ops import conv_bind as conv

    case = replace(case, batch=13)

    def run(min_macs):
        monkeypatch.setattr(conv, "THREADED_MIN", min_macs)
        monkeypatch.setattr(conv, "thread_count", lambda: 2)
        model = Model.compile(case.spec())
        rng = np.random.default_rng(5)
        randomize_params(model, rng)
        feeds = make_feeds(case, model, case.batch, rng, np.float32)
        plan = Program(model.graph, model.params, input_grads=True).plan(case.batch, training=True)
        plan.set_inputs(feeds)
        out = plan.forward().copy()
        plan.output_grad[...] = rng.standard_normal(out.shape)
        plan.backward()
        return out, {k: v.copy() for k, v in model.params.grads.items()}

    out1, g1 = run(1 << 60)   # serial drivers
    out2, g2 = run(0)         # threaded drivers
    assert np.array_equal(out1, out2)
    for k in g1:
        assert np.array_equal(g1[k], g2[k]), k
