"""The train section's nested tables (schedule, early_stopping): JSON-path errors, defaults,
round trip, published schema."""
from __future__ import annotations

import json

import pytest

from nngraph.errors import SpecError
from nngraph.spec import Spec
from nngraph.spec.fields import resolved_nested
from nngraph.spec.schema import json_schema
from nngraph.spec.tables import TRAIN

BASE = {"name": "n", "inputs": {"x": {"shape": [3]}}, "layers": [{"type": "dense", "units": 2}]}


def spec_with(**train: object) -> Spec:
    return Spec.from_dict({**BASE, "train": train})


@pytest.mark.parametrize("train,path,phrase", [
    ({"schedule": {"type": "cos"}}, "train.schedule.type", 'expected one of "constant", "step"'),
    ({"schedule": {"gamma": 0.5}}, "train.schedule", 'expected an object with a "type"'),
    ({"schedule": {"type": "step"}}, "train.schedule.step_size", "required for a step schedule"),
    ({"schedule": {"type": "step", "step_size": 0}}, "train.schedule.step_size", "expected an integer >= 1"),
    ({"schedule": {"type": "cosine", "warmup": 2}}, "train.schedule.warmup", "unknown key for a cosine schedule"),
    ({"schedule": {"type": "reduce_on_plateau", "factor": 1.5}}, "train.schedule.factor", "<= 1"),
    ({"early_stopping": {"patience": -1}}, "train.early_stopping.patience", "expected an integer >= 0"),
    ({"early_stopping": {"restore": True}}, "train.early_stopping.restore", "unknown key for early_stopping"),
    ({"early_stopping": 3}, "train.early_stopping", "expected an object"),
    ({"metrics": ["mae", "f1"]}, "train.metrics[1]", 'expected one of "top_k_accuracy", "mse", "mae"'),
    ({"checkpoint_every": 0}, "train.checkpoint_every", "expected an integer >= 1"),
])
def test_nested_errors_name_the_path(train: dict, path: str, phrase: str) -> None:
    with pytest.raises(SpecError) as e:
        spec_with(**train)
    assert e.value.path == path and phrase in e.value.message, str(e.value)


def test_defaults_and_round_trip() -> None:
    s = spec_with(schedule={"type": "cosine", "warmup_epochs": 2}, early_stopping={"patience": 3})
    assert resolved_nested(TRAIN["schedule"], s.train.schedule) == {
        "type": "cosine", "epochs": None, "min_lr": 0.0, "warmup_epochs": 2}
    assert resolved_nested(TRAIN["early_stopping"], s.train.early_stopping) == {
        "monitor": None, "patience": 3, "min_delta": 0.0, "restore_best": True}
    assert Spec.from_json(s.to_json()) == s
    assert json.loads(s.to_json())["train"]["schedule"] == {"type": "cosine", "warmup_epochs": 2}
    for opt in ({"type": "adamw"}, {"type": "rmsprop", "centered": True, "weight_decay": 0.1}):
        assert Spec.from_dict({**BASE, "optimizer": opt}).optimizer.resolved()["weight_decay"] >= 0


def test_schema_documents_nested_tables() -> None:
    train = json_schema()["properties"]["train"]["properties"]
    variants = train["schedule"]["oneOf"][0]["oneOf"]
    assert {v["properties"]["type"]["const"] for v in variants} == {
        "constant", "step", "exponential", "cosine", "reduce_on_plateau"}
    step = next(v for v in variants if v["properties"]["type"]["const"] == "step")
    assert step["required"] == ["type", "step_size"] and step["additionalProperties"] is False
    es = train["early_stopping"]["oneOf"][0]
    assert set(es["properties"]) == {"monitor", "patience", "min_delta", "restore_best"}
    assert train["metrics"]["oneOf"][0]["items"] == {"enum": ["top_k_accuracy", "mse", "mae"]}
    optimizers = {o["properties"]["type"]["const"] for o in json_schema()["properties"]["optimizer"]["oneOf"]}
    assert {"sgd", "adam", "adamw", "rmsprop"} <= optimizers
