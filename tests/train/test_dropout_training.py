"""Training with dropout is reproducible: the mask depends on (seed, step, layer, sample) only, so two
runs with one seed give the same bits, another seed other weights, and micro-batches the same step."""
from __future__ import annotations

import numpy as np

from nngraph.model import Model
from nngraph.spec import parse_spec
from nngraph.train import trainer as trainer_module


def _spec(seed: int) -> dict:
    return {"name": "drop", "inputs": {"x": {"shape": [6]}},
            "layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dropout", "rate": 0.5},
                       {"type": "dense", "units": 3, "activation": "softmax"}],
            "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
            "train": {"epochs": 3, "batch_size": 16, "seed": seed}}


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 6)).astype(np.float32), rng.integers(0, 3, 64)


def _fit(seed: int) -> np.ndarray:
    model = Model.compile(parse_spec(_spec(seed)), seed=0)  # one initialisation: only the masks vary
    x, y = _data()
    model.fit(x, y, shuffle=False)
    return model.params.flat.copy()


def test_same_seed_same_bits_other_seed_other_weights():
    a, b, c = _fit(1), _fit(1), _fit(2)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-4)


def test_micro_batched_step_draws_the_same_masks(monkeypatch):
    def one_step(budget: int):
        monkeypatch.setattr(trainer_module, "ACTIVATION_BUDGET", budget)
        monkeypatch.setattr(trainer_module, "MICRO_BATCH_MIN", 8)
        model = Model.compile(parse_spec(_spec(4)), seed=0)
        x, y = _data()
        trainer = model.trainer()
        loss, out, _ = trainer.step(model._feeds(x), model.targets(y), np.arange(64))
        return trainer._micro, loss, out.copy(), model.params.flat.copy()

    micro_one, loss_one, out_one, p_one = one_step(1 << 40)
    micro_split, loss_split, out_split, p_split = one_step(1)
    assert micro_one >= 64 and micro_split == 8
    np.testing.assert_allclose(out_split, out_one, atol=1e-6)
    np.testing.assert_allclose(loss_split, loss_one, rtol=1e-6)
    np.testing.assert_allclose(p_split, p_one, atol=1e-6)
