"""1-D pooling, global pools and residual adds: one row per variant (see harness.py), gradient routing
at ties against numpy, PyTorch parity, shape rules and errors."""
from dataclasses import replace

import numpy as np
import onnx
import pytest

from nngraph.backend.program import Program
from nngraph.errors import ShapeError, SpecError
from nngraph.lowering import lower
from nngraph.model import Model
from nngraph.spec import parse_spec

from .harness import (OpCase, check_float32_matches_float64, check_forward_reference, check_gradients, check_onnx_parity,
                      check_other_runtimes,
                      make_feeds, randomize_params)


def mp(**kw):
    return {"type": "maxpool1d", **kw}


def ap(**kw):
    return {"type": "avgpool1d", **kw}


def conv2d(**kw):
    return {"type": "conv2d", **kw}


RESNET_BLOCK = [
    conv2d(filters=4, kernel=3, stride=2, padding="same", activation="relu", name="a"),
    conv2d(filters=4, kernel=3, padding="same", name="b"),
    conv2d(filters=4, kernel=1, stride=2, inputs=["x"], name="proj"),
    {"type": "add", "inputs": ["b", "proj"], "name": "sum"},
    {"type": "relu", "name": "out"},
]

CASES = [
    OpCase("maxpool1d-valid", {"x": [2, 9]}, [mp(size=2)]),
    OpCase("maxpool1d-same", {"x": [3, 7]}, [mp(size=3, stride=2, padding="same")]),
    OpCase("maxpool1d-overlap", {"x": [2, 10]}, [mp(size=3, stride=2)]),
    OpCase("maxpool1d-pads", {"x": [2, 8]}, [mp(size=3, stride=2, padding=[2, 1])]),
    OpCase("maxpool1d-int-pad-stride1", {"x": [2, 6]}, [mp(size=4, stride=1, padding=1)]),
    OpCase("avgpool1d", {"x": [2, 8]}, [ap(size=2)]),
    OpCase("avgpool1d-same-excludes-pad", {"x": [2, 7]}, [ap(size=3, stride=2, padding="same")]),
    OpCase("avgpool1d-overlap-pads", {"x": [3, 9]}, [ap(size=4, stride=1, padding=[1, 3])]),
    OpCase("global-avgpool1d", {"x": [3, 7]}, [{"type": "global_avgpool1d"}]),
    OpCase("global-maxpool2d", {"x": [3, 4, 5]}, [{"type": "global_maxpool2d"}]),
    OpCase("global-maxpool2d-1x1", {"x": [4, 1, 1]}, [{"type": "global_maxpool2d"}]),
    OpCase("cnn1d-stack", {"x": [2, 16]}, [
        {"type": "conv1d", "filters": 4, "kernel": 3, "padding": "same", "activation": "tanh"},
        mp(size=2),
        {"type": "conv1d", "filters": 5, "kernel": 3, "stride": 2, "activation": "relu"},
        ap(size=2, stride=1, padding="same"),
        {"type": "global_avgpool1d"},
        {"type": "dense", "units": 3, "activation": "softmax"}]),
    OpCase("cnn2d-global-max", {"x": [2, 6, 6]}, [
        conv2d(filters=3, kernel=3, padding="same", activation="tanh"),
        {"type": "global_maxpool2d"},
        {"type": "dense", "units": 2}]),
    OpCase("resnet-block-projection", {"x": [2, 6, 6]}, RESNET_BLOCK),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_reference(case):
    check_forward_reference(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_matches_finite_differences(case):
    check_gradients(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_kernels_match_float64(case):
    check_float32_matches_float64(case)


# onnx.reference (1.23) runs MaxPool at stride 1 through CommonPool, which applies only 4-number
# pads: 1-D pads are added to the length without padding the array (IndexError). onnxruntime only.
ORT_ONLY = {"maxpool1d-int-pad-stride1"}


def _check_onnxruntime_parity(case, tmp_path, atol=1e-5):
    import onnxruntime as ort

    model = Model.compile(case.spec())
    rng = np.random.default_rng(0)
    randomize_params(model, rng)
    path = tmp_path / f"{case.id}.onnx"
    model.export_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs = []
    for batch in (1, 3, 64):
        feeds = make_feeds(case, model, batch, rng, np.float32)
        runs.append((f"batch {batch}", feeds, model.predict(feeds)))
        np.testing.assert_allclose(sess.run(None, feeds)[0], runs[-1][2], atol=atol, rtol=0)
    check_other_runtimes(case.id, path, runs, atol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_onnx_export_matches_onnxruntime(case, tmp_path):
    if case.id in ORT_ONLY:
        _check_onnxruntime_parity(case, tmp_path)
    else:
        check_onnx_parity(case, tmp_path)


# ---- direct runs: ties, PyTorch -----------------------------------------------------------------

def _run(layers, x, dy=None, dtype=np.float64):
    """(y, dx) of a one-input network on x, with dy fed back (random when None)."""
    model = Model.compile(parse_spec({"name": "t", "inputs": {"x": {"shape": list(x.shape[1:])}},
                                      "layers": layers}), dtype=dtype)
    randomize_params(model, np.random.default_rng(0))
    plan = Program(model.graph, model.params, input_grads=True).plan(len(x), training=True)
    plan.set_inputs({"x": x.astype(dtype)})
    y = plan.forward().copy()
    plan.output_grad[...] = np.random.default_rng(1).standard_normal(y.shape) if dy is None else dy
    plan.backward()
    return y, plan.grads["x"].copy()


def _first_max_windows(x, size, stride, pad_begin, out_len, dy):
    """numpy reference of max pooling over the last axis: y and dx with each window's gradient routed to
    its first maximum (np.argmax picks the first)."""
    n, c, length = x.shape
    y = np.empty((n, c, out_len))
    dx = np.zeros_like(x, dtype=np.float64)
    for o in range(out_len):
        lo, hi = max(o * stride - pad_begin, 0), min(o * stride - pad_begin + size, length)
        win = x[:, :, lo:hi]
        y[:, :, o] = win.max(axis=2)
        arg = lo + win.argmax(axis=2)
        for i in range(n):
            for j in range(c):
                dx[i, j, arg[i, j]] += dy[i, j, o]
    return y, dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_maxpool2d_routes_the_gradient_to_the_first_maximum_at_ties(dtype):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(5, 3, 4, 5)).astype(dtype)  # every plane has ties at its maximum
    dy = rng.standard_normal((5, 3))
    y, dx = _run([{"type": "global_maxpool2d"}], x, dy, dtype)
    flat = x.reshape(15, 20)
    want = np.zeros_like(flat, dtype=np.float64)
    want[np.arange(15), flat.argmax(axis=1)] = dy.reshape(-1).astype(dtype)
    assert np.array_equal(y, flat.max(axis=1).reshape(5, 3))
    assert np.array_equal(dx, want.reshape(x.shape).astype(dtype))
    assert (np.count_nonzero(dx.reshape(15, 20), axis=1) <= 1).all()  # exactly one element per plane


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,stride,padding,pad_begin", [(2, 2, "valid", 0), (3, 2, [2, 1], 2), (3, 1, "same", 1)])
def test_maxpool1d_routes_the_gradient_to_the_first_maximum_at_ties(dtype, size, stride, padding, pad_begin):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, size=(3, 2, 11)).astype(dtype)
    y, _ = _run([mp(size=size, stride=stride, padding=padding)], x, None, dtype)
    dy = np.random.default_rng(6).standard_normal(y.shape)
    y, dx = _run([mp(size=size, stride=stride, padding=padding)], x, dy, dtype)
    want_y, want_dx = _first_max_windows(x, size, stride, pad_begin, y.shape[2], dy.astype(dtype))
    assert np.array_equal(y, want_y)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-6, atol=0)


TORCH_POOLS = [
    ("max", dict(size=2), dict(kernel_size=2)),
    ("max", dict(size=3, stride=2), dict(kernel_size=3, stride=2)),
    ("max", dict(size=3, stride=1, padding=1), dict(kernel_size=3, stride=1, padding=1)),
    ("max", dict(size=4, stride=3, padding=2), dict(kernel_size=4, stride=3, padding=2)),
    ("avg", dict(size=2), dict(kernel_size=2)),
    ("avg", dict(size=3, stride=2, padding=1), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg", dict(size=4, stride=1, padding=2), dict(kernel_size=4, stride=1, padding=2, count_include_pad=False)),
]


@pytest.mark.parametrize("kind,ours,theirs", TORCH_POOLS, ids=lambda v: str(v))
def test_1d_pools_match_torch_forward_and_gradient(kind, ours, theirs):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(7).standard_normal((3, 4, 13))
    xt = torch.tensor(x, requires_grad=True)
    yt = (F.max_pool1d if kind == "max" else F.avg_pool1d)(xt, **theirs)
    dy = np.random.default_rng(8).standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    y, dx = _run([(mp if kind == "max" else ap)(**ours)], x, dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_asymmetric_same_maxpool1d_matches_torch_with_minus_inf_padding():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(9).standard_normal((2, 3, 10))
    xt = torch.tensor(x, requires_grad=True)
    # size 3, stride 2 on 10: 5 outputs, one pad unit, at the end (torch pools take symmetric pads only)
    yt = F.max_pool1d(F.pad(xt, (0, 1), value=-np.inf), kernel_size=3, stride=2)
    dy = np.random.default_rng(10).standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    y, dx = _run([mp(size=3, stride=2, padding="same")], x, dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_global_maxpool2d_matches_torch_adaptive_max_pool(ties):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, size=(4, 3, 5, 6)).astype(np.float64) if ties else rng.standard_normal((4, 3, 5, 6))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.adaptive_max_pool2d(xt, 1).flatten(1)
    dy = rng.standard_normal((4, 3))
    yt.backward(torch.tensor(dy))
    y, dx = _run([{"type": "global_maxpool2d"}], x, dy)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_global_avgpool1d_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(12).standard_normal((3, 5, 9))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.adaptive_avg_pool1d(xt, 1).flatten(1)
    dy = np.random.default_rng(13).standard_normal((3, 5))
    yt.backward(torch.tensor(dy))
    y, dx = _run([{"type": "global_avgpool1d"}], x, dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---- threads ---------------------------------------------------------------------------------------

THREADED = ["maxpool1d-same", "avgpool1d-overlap-pads", "global-avgpool1d", "global-maxpool2d", "cnn1d-stack"]


@pytest.fixture
def force_threads(monkeypatch):
    """Every pooling call takes its threaded path."""
    from nngraph.ops import global_pool_kernels, pool_kernels

    monkeypatch.setattr(pool_kernels, "threaded", lambda elements: True)
    monkeypatch.setattr(global_pool_kernels, "threaded", lambda elements: True)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in THREADED], ids=lambda c: c.id)
def test_threaded_kernels_match_reference_and_finite_differences(case, force_threads):
    case = replace(case, batch=11)  # more planes than blocks (8), unevenly split
    check_forward_reference(case)
    check_gradients(case)


def test_threaded_global_maxpool_gives_the_same_bits(monkeypatch):
    from nngraph.ops import global_pool_kernels as gp

    rng = np.random.default_rng(14)
    x = rng.integers(0, 4, size=(13, 5, 6, 7)).astype(np.float32)
    dy = rng.standard_normal((13, 5)).astype(np.float32)
    runs = []
    for on in (False, True):
        monkeypatch.setattr(gp, "threaded", lambda elements, on=on: on)
        runs.append(_run([{"type": "global_maxpool2d"}], x, dy, np.float32))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])


# ---- shapes, errors, export ----------------------------------------------------------------------

def _graph(shape, layers):
    return lower(parse_spec({"name": "s", "inputs": {"x": {"shape": shape}}, "layers": layers}))


@pytest.mark.parametrize("layer,length,want", [
    (mp(size=2), 9, 4), (mp(size=3), 9, 3), (mp(size=3, stride=2, padding="same"), 10, 5),
    (ap(size=2, padding="same"), 7, 4), (ap(size=3, stride=1, padding=[2, 0]), 5, 5), (mp(size=1), 1, 1)])
def test_1d_output_lengths(layer, length, want):
    assert _graph([2, length], [{**layer, "name": "p"}]).values["p"].shape == (2, want)


def test_global_pools_give_one_value_per_channel():
    g = _graph([3, 8], [{"type": "conv1d", "filters": 5, "kernel": 3}, {"type": "global_avgpool1d", "name": "g"}])
    assert g.values["g"].shape == (5,)
    g = _graph([3, 4, 4], [{"type": "global_maxpool2d", "name": "g"}])
    assert g.values["g"].shape == (3,)


@pytest.mark.parametrize("shape,layer,message", [
    ([1, 6], mp(size=2, padding=2, name="p"), r"layer p: padding \[2, 2\] must be smaller than the window 2"),
    ([1, 6], ap(size=3, padding=[0, 3], name="p"), r"layer p: padding \[0, 3\] must be smaller than the window 3"),
    ([1, 2], mp(size=3, name="p"), r"layer p: window 3 is larger than its padded input 2 \(input 2\)"),
    ([1, 2], ap(size=5, padding=1, name="p"), r"layer p: window 5 is larger than its padded input 4"),
    ([1, 4, 4], mp(size=2, name="p"), r"layer p: maxpool1d expects float input \(N, channels, length\), "
                                      r"got \(N, 1, 4, 4\)"),
    ([8], ap(size=2, name="p"), r"layer p: avgpool1d expects float input \(N, channels, length\)"),
    ([1, 4, 4], {"type": "global_avgpool1d", "name": "p"}, r"layer p: global_avgpool1d expects float input "
                                                          r"\(N, channels, length\)"),
    ([4, 4], {"type": "global_maxpool2d", "name": "p"}, r"layer p: global_maxpool2d expects float input "
                                                       r"\(N, channels, height, width\), got \(N, 4, 4\)"),
    ([1, 6], mp(size=2, padding=[1, 1, 1], name="p"), r"layer p: padding \[1, 1, 1\] must have 1 \(per axis\) or 2"),
])
def test_shape_errors_name_the_layer(shape, layer, message):
    with pytest.raises(ShapeError, match=message):
        _graph(shape, [layer])


@pytest.mark.parametrize("layer,path", [
    (mp(), "layers[0].size"),
    (mp(size=[2, 2]), "layers[0].size"),
    (mp(size=0), "layers[0].size"),
    (ap(size=2, stride=0), "layers[0].stride"),
    (ap(size=2, stride=[1]), "layers[0].stride"),
    (mp(size=2, padding="full"), "layers[0].padding"),
    ({"type": "global_maxpool2d", "size": 2}, "layers[0].size"),
])
def test_bad_keys_are_spec_errors_with_path(layer, path):
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "s", "inputs": {"x": {"shape": [1, 8]}}, "layers": [layer]})
    assert e.value.path == path


def test_export_uses_1d_attributes_and_passes_the_full_checker():
    model = Model.compile(parse_spec({"name": "s", "inputs": {"x": {"shape": [2, 12]}}, "layers": [
        mp(size=3, stride=2, padding="same"), ap(size=2, padding=[1, 0]), {"type": "global_avgpool1d"}]}))
    proto = model.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    nodes = {n.op_type: {a.name: a for a in n.attribute} for n in proto.graph.node}
    assert list(nodes) == ["MaxPool", "AveragePool", "GlobalAveragePool", "Flatten"]
    assert list(nodes["MaxPool"]["kernel_shape"].ints) == [3]
    assert list(nodes["MaxPool"]["strides"].ints) == [2]
    assert list(nodes["MaxPool"]["pads"].ints) == [0, 1]
    assert list(nodes["AveragePool"]["pads"].ints) == [1, 0]
    assert nodes["AveragePool"]["count_include_pad"].i == 0


def test_global_maxpool2d_exports_global_max_pool_and_flatten():
    model = Model.compile(parse_spec({"name": "s", "inputs": {"x": {"shape": [3, 4, 4]}},
                                      "layers": [{"type": "global_maxpool2d"}]}))
    proto = model.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node] == ["GlobalMaxPool", "Flatten"]


# ---- residual add -----------------------------------------------------------------------------------

def test_add_of_disagreeing_branches_names_both_layers_and_shapes():
    layers = [conv2d(filters=8, kernel=3, padding="same", name="conv_1"),
              conv2d(filters=8, kernel=3, padding="same", activation="relu", name="conv_2"),
              conv2d(filters=16, kernel=3, stride=2, padding="same", name="conv_3"),
              {"type": "relu", "name": "relu_4"},
              {"type": "add", "inputs": ["conv_3", "conv_1"], "name": "add_5"}]
    with pytest.raises(ShapeError, match=r"^layer add_5: add needs inputs of one shape, got conv_3 \(N, 16, 14, 14\) "
                                         r"and conv_1 \(N, 8, 28, 28\)$"):
        _graph([1, 28, 28], layers)


def test_add_names_the_first_input_that_disagrees():
    layers = [{"type": "dense", "units": 4, "name": "a"}, {"type": "dense", "units": 4, "name": "b", "inputs": ["x"]},
              {"type": "dense", "units": 3, "name": "c", "inputs": ["x"]},
              {"type": "add", "inputs": ["a", "b", "c"], "name": "s"}]
    with pytest.raises(ShapeError, match=r"layer s: add needs inputs of one shape, got a \(N, 4\) and c \(N, 3\)"):
        _graph([5], layers)


def test_resnet_block_with_projection_shortcut_compiles_and_exports():
    g = _graph([2, 6, 6], RESNET_BLOCK)
    assert g.values["a"].shape == g.values["proj"].shape == g.values["out"].shape == (4, 3, 3)
    assert g.params["proj.W"].shape == (4, 2, 1, 1)
    proto = Model.compile(CASES[-1].spec()).to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert sorted(n.op_type for n in proto.graph.node) == ["Add", "Conv", "Conv", "Conv", "Relu", "Relu"]


def test_resnet_block_float32_forward_matches_float64():
    m32 = Model.compile(CASES[-1].spec())
    randomize_params(m32, np.random.default_rng(0))
    m64 = m32.astype(np.float64)
    x = make_feeds(CASES[-1], m32, 5, np.random.default_rng(1), np.float64)["x"]
    np.testing.assert_allclose(m32.predict(x.astype(np.float32)), m64.predict(x), atol=1e-5)
