"""Each loss, fused with its activation or on raw outputs: value vs a numpy reference, gradient vs
float64 central finite differences (through the activation, for the fused forms)."""
from __future__ import annotations

import numpy as np
import pytest

from nngraph.errors import DataError
from nngraph.ops.activations import apply_reference
from nngraph.ops.losses import get_loss


def softmax(z):
    return apply_reference("softmax", z)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def ref_loss(name, z, t, fused):
    """Loss as a function of the pre-activation z (fused) or the raw output z (unfused)."""
    m = z.reshape(-1, z.shape[-1]).shape[0]
    if name == "mse":
        return np.sum((z - t) ** 2) / m
    if name == "cross_entropy":
        p = softmax(z)
        if t.dtype.kind == "i":
            return -np.sum(np.log(np.take_along_axis(p.reshape(-1, p.shape[-1]), t.reshape(-1, 1), 1))) / m
        return -np.sum(t * np.log(p)) / m
    p = sigmoid(z)
    return -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))


def activation_for(name, fused):
    if not fused:
        return lambda z: z
    return {"cross_entropy": softmax, "binary_cross_entropy": sigmoid}[name]


def targets(name, shape, rng, ids):
    if name == "cross_entropy":
        if ids:
            return rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int64)
        return softmax(rng.standard_normal(shape))  # soft targets exercise the general path
    if name == "binary_cross_entropy":
        return (rng.random(shape) > 0.5).astype(np.float64)
    return rng.standard_normal(shape)


CASES = [("mse", False, False, (5, 3)), ("mse", False, False, (4, 2, 3)),
         ("cross_entropy", True, True, (6, 4)), ("cross_entropy", True, False, (6, 4)),
         ("cross_entropy", False, True, (6, 4)), ("cross_entropy", False, False, (6, 4)),
         ("cross_entropy", True, True, (3, 5, 4)),
         ("binary_cross_entropy", True, False, (5, 3)), ("binary_cross_entropy", False, False, (5, 3))]


@pytest.mark.parametrize("name, fused, ids, shape", CASES,
                         ids=[f"{c[0]}-{'fused' if c[1] else 'raw'}-{'ids' if c[2] else 'dense'}-{len(c[3])}d"
                              for c in CASES])
def test_loss_value_and_gradient(name, fused, ids, shape):
    rng = np.random.default_rng(0)
    loss = get_loss(name)
    z = rng.standard_normal(shape)
    t = targets(name, shape, rng, ids)
    act = activation_for(name, fused)
    dy = np.empty_like(z)
    value = loss.compute(act(z), t, dy, fused)
    np.testing.assert_allclose(value, ref_loss(name, z, t, fused), rtol=1e-10)
    h = 1e-6
    for _ in range(3):
        v = rng.standard_normal(shape)
        numeric = (ref_loss(name, z + h * v, t, fused) - ref_loss(name, z - h * v, t, fused)) / (2 * h)
        assert abs(np.sum(dy * v) - numeric) <= 1e-7 * max(1, abs(numeric))


def test_fused_cross_entropy_is_stable_for_saturated_softmax():
    loss = get_loss("cross_entropy")
    p = np.array([[1.0, 0.0, 0.0]], np.float32)  # the true class got probability 0 after underflow
    dy = np.empty_like(p)
    value = loss.compute(p, np.array([1]), dy, True)
    assert np.isfinite(value) and value > 60
    np.testing.assert_allclose(dy, [[1, -1, 0]])


@pytest.mark.parametrize("name, fused, ids", [("cross_entropy", True, True), ("cross_entropy", True, False),
                                              ("cross_entropy", False, True), ("cross_entropy", False, False),
                                              ("binary_cross_entropy", True, False),
                                              ("binary_cross_entropy", False, False), ("mse", False, False)])
def test_gradients_hold_no_subnormal_numbers(name, fused, ids):
    """Confident logits give softmax probabilities of e^-90: subnormal in float32, or just above and
    subnormal after one product downstream; every product reading one takes a microcode assist (a
    conv backward behind them ran 10x slower). The loss gradients write entries below 2^-64 as 0
    and keep the others exact."""
    loss = get_loss(name)
    z = np.array([[95.0, 0.0, 3.0, -1.0], [0.0, 60.0, 2.0, 1.0]], np.float32)  # e^-60: normal, yet negligible
    t = targets(name, z.shape, np.random.default_rng(0), ids)
    if name == "mse":
        t = z + np.float32(1e-25)  # negligible differences
    y = apply_reference("softmax" if name == "cross_entropy" else "sigmoid", z.astype(np.float64)).astype(np.float32) \
        if not fused and name != "mse" else z
    dy = np.empty_like(z)
    loss.compute(y, t, dy, fused)
    tiny = 2.0 ** -64
    assert not np.any((dy != 0) & (np.abs(dy) < tiny))
    full = np.empty(z.shape, np.float64)
    loss.compute(y.astype(np.float64), t, full, fused)
    normal = np.abs(full) >= tiny
    np.testing.assert_allclose(dy[normal], full[normal], rtol=1e-5)
    assert not (name == "cross_entropy" and ids and fused) or not normal.all()  # it does reach the subnormal range


def test_single_output_model_accepts_flat_targets():
    t = get_loss("mse").prepare_targets(np.arange(4.0), (1,))
    assert t.shape == (4, 1)


@pytest.mark.parametrize("y, msg", [
    (np.array([0, 1, 5]), r"class ids must be in \[0, 2\]"),
    (np.zeros((3, 4)), "cross-entropy targets must be class ids"),
])
def test_bad_cross_entropy_targets(y, msg):
    with pytest.raises(DataError, match=msg):
        get_loss("cross_entropy").prepare_targets(y, (3,))


def test_mse_target_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"targets have shape \(3,\) per sample, the model outputs \(2,\)"):
        get_loss("mse").prepare_targets(np.zeros((5, 3)), (2,))
