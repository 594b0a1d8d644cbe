"""BatchNormalization: harness rows (both modes, finite differences, ONNX parity), running statistics,
PyTorch parity, batch-norm folding on export, validation, training integration and checkpoints."""
from __future__ import annotations

import numpy as np
import pytest

from nngraph.backend.program import Program
from nngraph.errors import ShapeError, SpecError
from nngraph.model import Model
from nngraph.ops.batchnorm import reference_running_stats
from nngraph.spec import parse_spec

from .harness import OpCase, check_float32_matches_float64, check_forward_reference, check_gradients, check_onnx_parity

BN = {"type": "batchnorm"}

CASES = [
    OpCase("bn-dense", {"x": [5]}, [{"type": "dense", "units": 4}, BN]),
    OpCase("bn-dense-nobias-momentum", {"x": [5]}, [{"type": "dense", "units": 3, "use_bias": False},
                                                     {"type": "batchnorm", "momentum": 0.3, "epsilon": 1e-3}]),
    OpCase("bn-conv1d", {"x": [2, 9]}, [{"type": "conv1d", "filters": 3, "kernel": 3}, BN]),
    OpCase("bn-conv2d-relu", {"x": [2, 5, 5]}, [{"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
                                                BN, {"type": "relu"}]),
    OpCase("bn-input-features", {"x": [6]}, [BN]),
    OpCase("bn-input-image", {"x": [3, 4, 5]}, [BN]),
    OpCase("bn-relu-conv-bn", {"x": [1, 6, 6]}, [
        {"type": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"}, BN,
        {"type": "flatten"}, {"type": "dense", "units": 3}, BN]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_kernels_match_float64(case):
    check_float32_matches_float64(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_reference(case):
    check_forward_reference(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_matches_finite_differences(case):
    check_gradients(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_onnx_export_matches_onnxruntime(case, tmp_path):
    check_onnx_parity(case, tmp_path)
