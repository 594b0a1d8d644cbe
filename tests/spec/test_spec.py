"""Spec parsing and validation: round trips, the builder, every constraint's error, the schema."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nngraph import spec as S
from nngraph.errors import SpecError
from nngraph.spec import tables as T
from nngraph.spec.fields import Field
from nngraph.spec.schema import schema_text

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "specs").glob("*.json"))

BASE = {"name": "t", "inputs": {"x": {"shape": [4]}}, "layers": [{"type": "dense", "units": 2}]}


def with_(**changes):
    d = json.loads(json.dumps(BASE))
    d.update(changes)
    return d


def error_of(d) -> SpecError:
    with pytest.raises(SpecError) as info:
        S.parse_spec(d)
    return info.value


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_every_shipped_spec_round_trips_byte_for_byte(path):
    text = path.read_text()
    spec = S.Spec.from_json(text)
    assert spec.to_json() == text
    assert S.Spec.from_json(spec.to_json()) == spec


def test_builder_produces_the_same_spec_as_json():
    built = S.build("xor", inputs={"x": S.Input((2,))},
                    layers=[S.Dense(4, activation="sigmoid"), S.Dense(1, activation="sigmoid")],
                    loss="mse", optimizer=S.SGD(lr=0.5),
                    train=S.TrainConfig(epochs=2000, batch_size=4, seed=0, shuffle=False), data="xor.csv")
    assert built == S.load_spec(ROOT / "specs" / "xor.json")
    assert built.to_json() == (ROOT / "specs" / "xor.json").read_text()


def test_builder_builds_the_shipped_tabular_spec_with_batchnorm_and_dropout():
    built = S.build("friedman_mlp_bn", inputs={"x": S.Input((5,))},
                    layers=[S.Dense(128, use_bias=False), S.BatchNorm(), S.Activation("relu"), S.Dropout(0.1),
                            S.Dense(64, use_bias=False), S.BatchNorm(), S.Activation("relu"),
                            S.Dense(1, name="y")],
                    loss="mse", optimizer=S.Adam(lr=0.003),
                    train=S.TrainConfig(epochs=150, batch_size=32, seed=0, validation_split=0.1,
                                        schedule={"type": "cosine"}),
                    data={"train": "data/friedman1_train.csv", "test": "data/friedman1_test.csv", "target": "y"})
    assert built == S.load_spec(ROOT / "specs" / "friedman_mlp_bn.json")
    assert built.to_json() == (ROOT / "specs" / "friedman_mlp_bn.json").read_text()


def test_defaults_are_resolved_but_not_written():
    spec = S.parse_spec(BASE)
    assert spec.layers[0].get("activation") == "identity"
    assert spec.train.epochs == T.TRAIN["epochs"].default
    assert "activation" not in json.loads(spec.to_json())["layers"][0]


@pytest.mark.parametrize("d, path, fragment", [
    (with_(layers=[{"type": "dense", "units": 0}]), "layers[0].units", "expected an integer >= 1, got 0"),
    (with_(layers=[{"type": "dense", "units": 2.5}]), "layers[0].units", "got 2.5"),
    (with_(layers=[{"type": "dense", "units": True}]), "layers[0].units", "got true"),
    (with_(layers=[{"type": "dense"}]), "layers[0].units", "missing"),
    (with_(layers=[{"type": "dense", "units": 2, "activaton": "relu"}]), "layers[0].activaton", "unknown key"),
    (with_(layers=[{"type": "dense", "units": 2, "activation": "swish"}]), "layers[0].activation", '"relu"'),
    (with_(layers=[{"type": "dens", "units": 2}]), "layers[0].type", "unknown layer type"),
    (with_(layers=[{"units": 2}]), "layers[0].type", "missing"),
    (with_(layers=[]), "layers", "non-empty"),
    (with_(layers=[{"type": "dense", "units": 2, "inputs": ["nope"]}]), "layers[0].inputs[0]", "not an input"),
    (with_(layers=[{"type": "dense", "units": 2, "name": "x"}]), "layers[0].name", "duplicate"),
    (with_(layers=[{"type": "add"}]), "layers[0].inputs", "takes 2 to 64 inputs, got 1"),
    (with_(inputs={"x": {"shape": [0]}}), "inputs.x.shape", "integers >= 1"),
    (with_(inputs={"x": {"shape": []}}), "inputs.x.shape", "at least one"),
    (with_(inputs={"x": {}}), "inputs.x.shape", "missing"),
    (with_(inputs={}), "inputs", "expected an object"),
    (with_(loss="hinge"), "loss", "expected one of"),
    (with_(optimizer={"type": "sgd", "lr": 0}), "optimizer.lr", "expected a number > 0"),
    (with_(optimizer={"type": "sgd", "lr": -1}), "optimizer.lr", "got -1"),
    (with_(optimizer={"type": "sgd", "momentum": 2}), "optimizer.momentum", "<= 1"),
    (with_(optimizer={"type": "lbfgs"}), "optimizer.type", "unknown optimizer"),
    (with_(optimizer={"type": "adam", "beta3": 0.5}), "optimizer.beta3", "unknown key"),
    (with_(train={"epochs": 0}), "train.epochs", "expected an integer >= 1, got 0"),
    (with_(train={"batch_size": "32"}), "train.batch_size", 'got "32"'),
    (with_(train={"validation_split": 0.95}), "train.validation_split", "<= 0.9"),
    (with_(train={"shufle": True}), "train.shufle", "unknown key"),
    (with_(spec_version=2), "spec_version", "expected 1"),
    (with_(extra=1), "extra", "unknown top-level key"),
    (with_(data=5), "data", "expected a dataset name"),
    (with_(data={"trian": "a.csv"}), "data.trian", "unknown key"),
    ({"inputs": {"x": {"shape": [1]}}, "layers": [{"type": "relu"}]}, "name", "missing"),
    ([1, 2], "", "must be a JSON object"),
])
def test_each_error_names_its_json_path(d, path, fragment):
    e = error_of(d)
    assert e.path == path
    assert fragment in e.message
    assert "\n" not in str(e)


def _invalid_values(f: Field):
    """Values that must violate a field's constraint (generated from the constraint itself)."""
    bad = [None] if not f.nullable else []
    if f.kind in ("int", "float"):
        bad += ["text", True]
        if f.minimum is not None:
            bad.append(f.minimum if f.exclusive_min else f.minimum - 1)
        if f.maximum is not None:
            bad.append(f.maximum if f.exclusive_max else f.maximum + 1)
        if f.kind == "int":
            bad.append(1.5)
    elif f.kind == "bool":
        bad += [1, "true"]
    elif f.kind == "enum":
        bad += ["no-such-option", 3]
    elif f.kind in ("str",):
        bad += ["", 7]
    elif f.kind == "int_or_pair":
        bad += ["3", [1, 2, 3], [1, "a"]]
        if f.minimum is not None:
            bad.append(int(f.minimum) - 1)
    elif f.kind == "padding":
        bad += ["full", -1, [1, -1]]
    elif f.kind == "shape":
        bad += [[0], "3", [1.5]]
    elif f.kind == "str_list":
        bad += [[], "a", [1]]
    return bad


def _walk_constraints():
    for typ, schema in T.LAYERS.items():
        for key, f in schema.fields.items():
            for value in _invalid_values(f):
                yield f"layers.{typ}.{key}={value!r}", ("layer", typ, key, value)
    for typ, table in T.OPTIMIZERS.items():
        for key, f in table.items():
            for value in _invalid_values(f):
                yield f"optimizer.{typ}.{key}={value!r}", ("optimizer", typ, key, value)
    for key, f in T.TRAIN.items():
        if f.kind == "table":  # nested sections are checked through their own keys
            continue
        for value in _invalid_values(f):
            yield f"train.{key}={value!r}", ("train", None, key, value)


CONSTRAINTS = list(_walk_constraints())


@pytest.mark.parametrize("case", [c for _, c in CONSTRAINTS], ids=[i for i, _ in CONSTRAINTS])
def test_every_constraint_rejects_a_violating_value(case):
    where, typ, key, value = case
    if where == "layer":
        layer = {"type": typ, key: value}
        for k, f in T.LAYERS[typ].fields.items():  # fill the other required keys validly
            if f.required and k != key:
                layer[k] = {"int": 2, "int_or_pair": 2, "float": 0.5, "str": "a"}.get(f.kind, 2)
        d = with_(layers=[layer])
        want = f"layers[0].{key}"
    elif where == "optimizer":
        d = with_(optimizer={"type": typ, key: value})
        want = f"optimizer.{key}"
    else:
        d = with_(train={key: value})
        want = f"train.{key}"
    e = error_of(d)
    assert e.path == want, str(e)
    assert "expected" in e.message


def test_published_schema_is_in_sync_with_the_tables():
    assert (ROOT / "nngraph" / "spec" / "schema.json").read_text() == schema_text()


def test_invalid_json_is_a_spec_error_with_position():
    with pytest.raises(SpecError, match="not valid JSON: .* line 1"):
        S.Spec.from_json('{"name": ')


def test_missing_spec_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        S.load_spec(tmp_path / "none.json")


def test_exclusive_max_is_a_strict_upper_bound():
    from nngraph.spec.fields import Field, check_field, field_json_schema

    f = Field("float", doc="a rate", minimum=0, maximum=1, exclusive_max=True)
    assert check_field(f, 0, "r") == 0
    assert check_field(f, 0.999, "r") == 0.999
    with pytest.raises(SpecError, match=r"r: expected a number >= 0 and < 1, got 1"):
        check_field(f, 1, "r")
    s = field_json_schema(f)
    assert s["exclusiveMaximum"] == 1 and "maximum" not in s and s["minimum"] == 0
    assert Field("int", maximum=3).describe() == "an integer <= 3"
