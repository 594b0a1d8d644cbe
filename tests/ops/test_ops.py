"""Every op, every variant: one row each. Adding an op adds rows here (see harness.py)."""
import pytest

from .harness import OpCase, table_tests

CASES = [
    OpCase("dense-identity", {"x": [5]}, [{"type": "dense", "units": 3}]),
    OpCase("dense-relu", {"x": [5]}, [{"type": "dense", "units": 4, "activation": "relu"}]),
    OpCase("dense-sigmoid", {"x": [5]}, [{"type": "dense", "units": 4, "activation": "sigmoid"}]),
    OpCase("dense-tanh", {"x": [5]}, [{"type": "dense", "units": 4, "activation": "tanh"}]),
    OpCase("dense-softmax", {"x": [5]}, [{"type": "dense", "units": 4, "activation": "softmax"}]),
    OpCase("dense-nobias", {"x": [5]}, [{"type": "dense", "units": 3, "use_bias": False, "activation": "tanh"}]),
    OpCase("dense-sequence", {"x": [4, 5]}, [{"type": "dense", "units": 3, "activation": "relu"}]),
    OpCase("dense-stack", {"x": [6]}, [{"type": "dense", "units": 5, "activation": "relu"},
                                       {"type": "dense", "units": 4, "activation": "sigmoid"},
                                       {"type": "dense", "units": 3, "activation": "softmax"}]),
    OpCase("relu", {"x": [7]}, [{"type": "relu"}]),
    OpCase("sigmoid", {"x": [7]}, [{"type": "sigmoid"}]),
    OpCase("tanh", {"x": [2, 3]}, [{"type": "tanh"}]),
    OpCase("softmax", {"x": [6]}, [{"type": "softmax"}]),
    OpCase("softmax-axis0", {"x": [3, 4]}, [{"type": "softmax", "axis": 0}]),
    OpCase("identity", {"x": [3]}, [{"type": "identity"}]),
    OpCase("dense-then-relu-fused", {"x": [5]}, [{"type": "dense", "units": 4}, {"type": "relu"}]),
    OpCase("add-residual", {"x": [4]}, [{"type": "dense", "units": 4, "activation": "tanh", "name": "h"},
                                        {"type": "add", "inputs": ["x", "h"]}]),
    OpCase("add-then-relu-fused", {"x": [2, 3]}, [{"type": "dense", "units": 3, "name": "h"},
                                                 {"type": "add", "inputs": ["x", "h"]}, {"type": "relu"}]),
    OpCase("concat-two-inputs", {"a": [3], "b": [2]}, [
        {"type": "dense", "units": 4, "inputs": ["a"], "name": "da"},
        {"type": "dense", "units": 2, "inputs": ["b"], "name": "db"},
        {"type": "concat", "inputs": ["da", "db", "a"]}]),
    OpCase("fan-out", {"x": [4]}, [{"type": "dense", "units": 3, "name": "h"},
                                   {"type": "dense", "units": 3, "activation": "sigmoid", "name": "p", "inputs": ["h"]},
                                   {"type": "add", "inputs": ["h", "p", "h"]}]),
]


# float32 = float64, the numpy reference, finite differences, onnxruntime parity (harness.table_tests)
(test_float32_kernels_match_float64, test_forward_matches_numpy_reference,
 test_backward_matches_finite_differences, test_onnx_export_matches_onnxruntime) = table_tests(CASES)


def test_relu_layers_fuse_into_the_ops_whose_epilogue_computes_them():
    """conv -> relu, batchnorm -> relu and add -> relu become one node each (ir.passes), except at
    the graph output, where only a Gemm takes the activation over (its backward knows the fused loss)."""
    from nngraph.lowering import lower
    from nngraph.spec import parse_spec

    spec = parse_spec({"name": "f", "inputs": {"x": {"shape": [2, 6, 6]}}, "layers": [
        {"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same", "name": "c"}, {"type": "relu", "name": "r1"},
        {"type": "batchnorm", "name": "bn"}, {"type": "relu", "name": "r2"},
        {"type": "add", "inputs": ["r1", "r2"], "name": "a"}, {"type": "relu", "name": "r3"},
        {"type": "flatten"}, {"type": "sigmoid", "name": "out"}]})
    g = lower(spec)
    assert [(n.op, n.attrs.get("activation")) for n in g.nodes] == [
        ("Conv", "relu"), ("BatchNormalization", "relu"), ("Add", "relu"), ("Flatten", None), ("Sigmoid", None)]
    assert [n.output for n in g.nodes][:3] == ["r1", "r2", "r3"]
