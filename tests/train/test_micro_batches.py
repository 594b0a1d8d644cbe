"""Steps over big batches run as micro-batches (Trainer: ACTIVATION_BUDGET): the same loss, outputs
and parameter update as one pass, to float32 rounding."""
from __future__ import annotations

import numpy as np
import pytest

from nngraph.model import Model
from nngraph.spec import parse_spec
from nngraph.train import trainer as trainer_module

SPECS = {
    "cnn-softmax-ce": {"name": "cnn", "inputs": {"x": {"shape": [1, 8, 8]}},
                       "layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "activation": "relu"},
                                  {"type": "maxpool2d", "size": 2}, {"type": "flatten"},
                                  {"type": "dense", "units": 3, "activation": "softmax"}],
                       "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01}},
    "cnn-dropout": {"name": "cnnd", "inputs": {"x": {"shape": [1, 8, 8]}},
                    "layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"},
                               {"type": "flatten"}, {"type": "dropout", "rate": 0.5},
                               {"type": "dense", "units": 3, "activation": "softmax"}],
                    "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01}},
    "gru-mse": {"name": "gru", "inputs": {"x": {"shape": [6, 3]}},
                "layers": [{"type": "gru", "units": 5}, {"type": "dense", "units": 2}],
                "loss": "mse", "optimizer": {"type": "sgd", "lr": 0.1}},
}


def _one_step(spec: dict, budget: int, monkeypatch):
    monkeypatch.setattr(trainer_module, "ACTIVATION_BUDGET", budget)
    monkeypatch.setattr(trainer_module, "MICRO_BATCH_MIN", 8)
    model = Model.compile(parse_spec(spec), seed=1)
    rng = np.random.default_rng(0)
    n = 100
    x = rng.standard_normal((n,) + tuple(spec["inputs"]["x"]["shape"])).astype(np.float32)
    y = rng.integers(0, 3, n) if spec["loss"] == "cross_entropy" else rng.standard_normal((n, 2)).astype(np.float32)
    trainer = model.trainer()
    loss, out, t = trainer.step(model._feeds(x), model.targets(y), rng.permutation(n))
    return trainer._micro, loss, out.copy(), t.copy(), model.params.flat.copy()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_micro_batched_step_equals_one_pass(name, monkeypatch):
    micro_one, loss_one, out_one, t_one, params_one = _one_step(SPECS[name], 1 << 40, monkeypatch)
    micro_split, loss_split, out_split, t_split, params_split = _one_step(SPECS[name], 1, monkeypatch)
    assert micro_one >= 100 and micro_split == 8          # 100 rows: one pass vs 13 parts of 7-8
    np.testing.assert_allclose(loss_split, loss_one, rtol=1e-6)
    np.testing.assert_allclose(out_split, out_one, atol=1e-6)
    assert np.array_equal(t_split, t_one)
    start = Model.compile(parse_spec(SPECS[name]), seed=1).params.flat
    moved = np.abs(params_one - start).max()
    assert moved > 1e-4                                   # the step did change the parameters
    np.testing.assert_allclose(params_split, params_one, atol=1e-6 * max(1.0, moved * 100))


def test_bundled_specs_split_only_as_designed():
    """Micro-batches start above MICRO_BATCH_MIN samples: every bundled spec trains at <= 64 except
    mnist_convnet (Keras' batch 128), whose step may split: its ops are per-sample and its dropout
    masks are keyed by the sample's index in the whole batch (the split step equals one pass, see
    test_micro_batched_step_equals_one_pass)."""
    import json
    from pathlib import Path

    from nngraph.spec import load_spec

    for path in sorted(Path(__file__).resolve().parents[2].glob("specs/*.json")):
        batch = json.loads(path.read_text()).get("train", {}).get("batch_size", 32)
        if batch > trainer_module.MICRO_BATCH_MIN:
            assert path.name == "mnist_convnet.json", path.name
            assert Model.compile(load_spec(path)).trainer().program.per_sample


def test_networks_with_large_gradients_never_split(monkeypatch):
    """Each part rewrites every gradient: above SPLIT_GRADIENTS_MAX bytes of them a step is one pass
    whatever its activations."""
    monkeypatch.setattr(trainer_module, "ACTIVATION_BUDGET", 1)
    monkeypatch.setattr(trainer_module, "MICRO_BATCH_MIN", 8)
    small = {"name": "s", "inputs": {"x": {"shape": [20]}}, "layers": [{"type": "dense", "units": 3}],
             "loss": "mse", "optimizer": {"type": "sgd", "lr": 0.1}}
    wide = dict(small, layers=[{"type": "dense", "units": 1024, "activation": "relu"}, {"type": "dense", "units": 3}])
    wide["inputs"] = {"x": {"shape": [600]}}
    assert Model.compile(parse_spec(small)).trainer().micro_batch() == 8
    trainer = Model.compile(parse_spec(wide)).trainer()
    assert trainer.program.params.grad_flat.nbytes > trainer_module.SPLIT_GRADIENTS_MAX
    assert trainer.micro_batch() >= 1 << 62
