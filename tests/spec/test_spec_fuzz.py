"""Property-based fuzzing: whatever JSON a user writes, parsing either succeeds (and round-trips) or
raises a SpecError with a one-line message — never any other exception."""
from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nngraph.errors import SpecError  # noqa: E402
from nngraph.spec import Spec, parse_spec  # noqa: E402
from nngraph.spec import tables as T  # noqa: E402

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(-2, 2, allow_nan=False),
                    st.sampled_from(["relu", "same", "valid", "x", "", "digits", "softmax", "sgd", "adam"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=8)
layer_keys = sorted({k for s in T.LAYERS.values() for k in s.fields} | {"type", "name", "inputs"})
layers = st.dictionaries(st.sampled_from(layer_keys), st.one_of(values, st.sampled_from(sorted(T.LAYERS))),
                         max_size=5)
specs = st.fixed_dictionaries(
    {"name": st.one_of(st.just("n"), values),
     "inputs": st.one_of(st.just({"x": {"shape": [4]}}), values),
     "layers": st.one_of(st.lists(layers, min_size=1, max_size=4), values)},
    optional={"loss": st.one_of(st.sampled_from(list(T.LOSSES)), values),
              "optimizer": st.one_of(st.just({"type": "adam"}), values),
              "train": st.one_of(st.dictionaries(st.sampled_from(sorted(T.TRAIN)), values, max_size=3), values),
              "data": values})


@settings(max_examples=300, deadline=None)
@given(specs)
def test_any_json_parses_or_raises_a_spec_error(d):
    try:
        spec = parse_spec(d)
    except SpecError as e:
        assert "\n" not in str(e)
        return
    assert Spec.from_json(spec.to_json()) == spec
    json.loads(spec.to_json())
