"""The Spec: frozen dataclasses holding exactly what the user wrote (validated, defaults not filled in),
so ``Spec -> JSON -> Spec`` is the identity and ``to_json`` reproduces a canonical file byte for byte.
Resolved values (with defaults) are read through ``.get``/attribute access.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError
from . import tables as T
from .fields import join_path, check_field, check_section, resolved, show

TOP_LEVEL = ("name", "spec_version", "inputs", "layers", "loss", "optimizer", "train", "data")


def _freeze(d: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(d.items())


@dataclass(frozen=True)
class Input:
    """A graph input: shape of one sample (batch excluded) and element type."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"shape": list(self.shape)}
        if self.dtype != "float32":
            d["dtype"] = self.dtype
        return d


@dataclass(frozen=True)
class Layer:
    """One layer: its type, optional name and inputs, and the attributes the user gave."""

    type: str
    attrs: tuple[tuple[str, Any], ...] = ()
    name: str | None = None
    inputs: tuple[str, ...] | None = None

    def get(self, key: str) -> Any:
        """The attribute's value, or its default from the layer table."""
        return self.resolved()[key]

    def resolved(self) -> dict[str, Any]:
        return resolved(T.LAYERS[self.type].fields, dict(self.attrs))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.name is not None:
            d["name"] = self.name
        if self.inputs is not None:
            d["inputs"] = list(self.inputs)
        for k, v in self.attrs:
            d[k] = list(v) if isinstance(v, tuple) else v
        return d


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: its type and the hyperparameters the user gave."""

    type: str
    attrs: tuple[tuple[str, Any], ...] = ()

    def resolved(self) -> dict[str, Any]:
        return resolved(T.OPTIMIZERS[self.type], dict(self.attrs))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dict(self.attrs)}


@dataclass(frozen=True)
class Train:
    """The ``train`` section: only the keys the user gave; ``get`` fills in defaults."""

    attrs: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str) -> Any:
        return self.resolved()[key]

    def resolved(self) -> dict[str, Any]:
        return resolved(T.TRAIN, dict(self.attrs))

    def __getattr__(self, key: str) -> Any:
        if key in T.TRAIN:
            return self.get(key)
        raise AttributeError(key)

    def replace(self, **changes: Any) -> "Train":
        """A copy with some keys set (each checked like the JSON value)."""
        d = dict(self.attrs)
        for k, v in changes.items():
            if k not in T.TRAIN:
                raise SpecError(f"train.{k}", "unknown key for train")
            d[k] = check_field(T.TRAIN[k], v, f"train.{k}")
        return Train(_freeze(d))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.attrs}


@dataclass(frozen=True)
class Spec:
    """A validated network spec. Build it from JSON (:meth:`from_json`, :func:`load_spec`) or with the
    Python builder in :mod:`nngraph.spec.builder`; both produce equal objects."""

    name: str
    inputs: tuple[tuple[str, Input], ...]
    layers: tuple[Layer, ...]
    loss: str = "mse"
    optimizer: Optimizer = field(default_factory=lambda: Optimizer("sgd"))
    train: Train = field(default_factory=Train)
    data: Any = None  # None, a string, or a tuple of (key, value) pairs (see tables.DATA)
    spec_version: int = T.SPEC_VERSION
    # The folder of the file the spec was read from (``load_spec``): relative ``data`` paths resolve
    # against it, as on the command line. Not part of the spec's value (equality, JSON).
    base_dir: Path | None = field(default=None, compare=False, repr=False)

    # ---- views -----------------------------------------------------------------------------
    @property
    def input_map(self) -> dict[str, Input]:
        return dict(self.inputs)

    def layer_names(self) -> list[str]:
        """Every layer's name: the given one or ``<type>_<index>``."""
        return [l.name if l.name is not None else f"{l.type}_{i}" for i, l in enumerate(self.layers)]

    def data_dict(self) -> dict[str, Any] | None:
        if self.data is None:
            return None
        if isinstance(self.data, str):
            return {"train": self.data}
        return dict(self.data)

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "spec_version": self.spec_version}
        d["inputs"] = {k: v.to_dict() for k, v in self.inputs}
        d["layers"] = [l.to_dict() for l in self.layers]
        d["loss"] = self.loss
        d["optimizer"] = self.optimizer.to_dict()
        d["train"] = self.train.to_dict()
        if self.data is not None:
            d["data"] = self.data if isinstance(self.data, str) else dict(self.data)
        return d

    def to_json(self) -> str:
        """Canonical JSON: 2-space indent, layers one per line, trailing newline."""
        d = self.to_dict()
        lines = ["{"]
        items = list(d.items())
        for i, (k, v) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            if k == "layers":
                lines.append('  "layers": [')
                for j, layer in enumerate(v):
                    lc = "," if j < len(v) - 1 else ""
                    lines.append("    " + json.dumps(layer) + lc)
                lines.append("  ]" + comma)
            else:
                lines.append(f"  {json.dumps(k)}: {json.dumps(v)}{comma}")
        lines.append("}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> "Spec":
        return parse_spec(d)

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError("", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:
            raise SpecError("", f"not a usable spec: JSON nested too deep (a spec nests at most {MAX_DEPTH} "
                            "levels)") from None
        except ValueError:  # an integer literal beyond sys.get_int_max_str_digits()
            raise SpecError("", "not a usable spec: an integer literal has more than "
                            f"{sys.get_int_max_str_digits()} digits") from None
        return parse_spec(d)


MAX_DEPTH = 32  # the deepest real spec (a schedule inside train) nests 4 levels


def _check_structure(d: Any) -> None:
    """Reject what no field table could accept but would break code before it: nesting deeper than
    MAX_DEPTH (recursion in json/printing) and strings that are not valid Unicode (a lone
    surrogate, legal in JSON's \\ud800 escapes, cannot be encoded to UTF-8 for a file or a terminal).
    Iterative, so it never recurses itself."""
    stack: list[tuple[Any, str, int]] = [(d, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, (list, tuple)):
            items = list(enumerate(node))
        else:
            items = []
        for key, value in items:
            sub = f"{path}[{key}]" if isinstance(key, int) else join_path(path, key)
            for s in (key, value):
                if isinstance(s, str):
                    try:
                        s.encode("utf-8")
                    except UnicodeEncodeError:
                        raise SpecError(sub, "contains a lone surrogate (not valid Unicode text): "
                                        + show(s)) from None
            if isinstance(value, (dict, list, tuple)):
                stack.append((value, sub, depth + 1))


def parse_spec(d: Any) -> Spec:
    """Validate a JSON object and build the Spec. Every error names its JSON path."""
    if not isinstance(d, dict):
        raise SpecError("", f"a spec must be a JSON object, got {show(d)}")
    _check_structure(d)
    for key in d:
        if key not in TOP_LEVEL:
            raise SpecError(join_path("", key), f"unknown top-level key (known: {', '.join(TOP_LEVEL)})")
    for key in ("name", "inputs", "layers"):
        if key not in d:
            raise SpecError(key, "required, missing")
    name = d["name"]
    if not isinstance(name, str) or not name:
        raise SpecError("name", f"expected a non-empty string, got {show(name)}")
    version = d.get("spec_version", T.SPEC_VERSION)
    if type(version) is not int or version != T.SPEC_VERSION:  # true and 1.0 == 1 in Python, not in a spec
        raise SpecError("spec_version", f"expected {T.SPEC_VERSION}, got {show(version)}")

    inputs = _parse_inputs(d["inputs"])
    layers = _parse_layers(d["layers"], [k for k, _ in inputs])

    loss = d.get("loss", "mse")
    if not isinstance(loss, str) or loss not in T.LOSSES:
        raise SpecError("loss", f"expected one of {', '.join(T.LOSSES)}, got {show(loss)}")

    optimizer = _parse_optimizer(d.get("optimizer", {"type": "sgd"}))
    train = Train(tuple(check_section(T.TRAIN, d.get("train", {}), "train", "train").items()))
    data = _parse_data(d.get("data"))
    return Spec(name=name, inputs=inputs, layers=layers, loss=loss, optimizer=optimizer, train=train,
                data=data, spec_version=version)


def _parse_inputs(raw: Any) -> tuple[tuple[str, Input], ...]:
    if not isinstance(raw, dict) or not raw:
        raise SpecError("inputs", f"expected an object mapping input names to {{\"shape\": [...]}}, got {show(raw)}")
    out = []
    for name, body in raw.items():
        path = join_path("inputs", name)
        vals = check_section(T.INPUT, body, path, "an input")
        if not vals["shape"]:
            raise SpecError(f"{path}.shape", "expected at least one dimension, got []")
        out.append((name, Input(tuple(vals["shape"]), vals.get("dtype", "float32"))))
    return tuple(out)


def _parse_layers(raw: Any, input_names: list[str]) -> tuple[Layer, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("layers", f"expected a non-empty list of layers, got {show(raw)}")
    known = list(input_names)
    layers = []
    for i, body in enumerate(raw):
        path = f"layers[{i}]"
        if not isinstance(body, dict):
            raise SpecError(path, f"expected an object with a \"type\", got {show(body)}")
        if "type" not in body:
            raise SpecError(f"{path}.type", "required, missing")
        typ = body["type"]
        if not isinstance(typ, str) or typ not in T.LAYERS:
            raise SpecError(f"{path}.type", f"unknown layer type {show(typ)} (known: {', '.join(sorted(T.LAYERS))})")
        schema = T.LAYERS[typ]
        attrs = check_section(schema.fields, body, path, f"a {typ} layer", skip=T.COMMON_LAYER_KEYS)
        name = body.get("name")
        if name is not None:
            if not isinstance(name, str) or not name:
                raise SpecError(f"{path}.name", f"expected a non-empty string, got {show(name)}")
        auto = name if name is not None else f"{typ}_{i}"
        if auto in known:
            raise SpecError(f"{path}.name", f"duplicate name {show(auto)}")
        inputs = body.get("inputs")
        if inputs is not None:
            inputs = check_field(T.Field("str_list"), inputs, f"{path}.inputs")
            for j, ref in enumerate(inputs):
                if ref not in known:
                    raise SpecError(f"{path}.inputs[{j}]",
                                    f"{show(ref)} is not an input or an earlier layer (known: {', '.join(known)})")
        n_in = len(inputs) if inputs is not None else 1
        if not schema.min_inputs <= n_in <= schema.max_inputs:
            want = (str(schema.min_inputs) if schema.min_inputs == schema.max_inputs
                    else f"{schema.min_inputs} to {schema.max_inputs}")
            raise SpecError(f"{path}.inputs", f"a {typ} layer takes {want} inputs, got {n_in}")
        known.append(auto)
        layers.append(Layer(typ, tuple(attrs.items()), name, inputs))
    _check_reserved_names(known, len(input_names))
    return tuple(layers)


def _check_reserved_names(names: list[str], n_inputs: int) -> None:
    """A name may not be one the IR derives from another name: ``<layer>.<role>`` is a parameter
    (``dense_0.b``) and ``<layer>/...`` an internal value (``dense_0/linear``). Both directions —
    the clashing name may come before or after the layer — are caught here, at validation, instead
    of at lowering or export."""
    taken = set(names)
    for i, name in enumerate(names):
        for sep in (".", "/"):
            head = name.split(sep)[0] if sep == "/" else name.rpartition(".")[0]
            while head:
                if head in taken and head != name:
                    path = (join_path("inputs", name) if i < n_inputs else f"layers[{i - n_inputs}].name")
                    what = "a parameter" if sep == "." else "an internal value"
                    raise SpecError(path, f"the name {show(name)} is reserved for {what} of {show(head)}; "
                                    "choose another name")
                head = head.rpartition(sep)[0] if sep == "." else ""


def _parse_optimizer(raw: Any) -> Optimizer:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or "type" not in raw:
        raise SpecError("optimizer", f"expected an object with a \"type\", got {show(raw)}")
    typ = raw["type"]
    if not isinstance(typ, str) or typ not in T.OPTIMIZERS:
        raise SpecError("optimizer.type", f"unknown optimizer {show(typ)} (known: {', '.join(T.OPTIMIZERS)})")
    attrs = check_section(T.OPTIMIZERS[typ], raw, "optimizer", f"the {typ} optimizer", skip=("type",))
    return Optimizer(typ, tuple(attrs.items()))


def _parse_data(raw: Any) -> Any:
    if raw is None:
        return None
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, dict):
        return tuple(check_section(T.DATA, raw, "data", "data").items())
    raise SpecError("data", f"expected a dataset name, a file path or an object, got {show(raw)}")


MAX_SPEC_BYTES = 16 << 20


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file. Relative data paths are relative to the file's folder: the
    spec remembers it (``Spec.base_dir``), so ``nngraph.load_data(spec)`` finds them from any cwd."""
    from ..errors import DataError
    from ..fileio import read_user_bytes

    p = Path(path)
    try:
        # a regular file only (never /dev/zero or a FIFO), and no spec is megabytes long
        text = read_user_bytes(p, "spec file", limit=MAX_SPEC_BYTES).decode("utf-8")
    except DataError as e:
        if not p.exists():
            raise SpecError("", f"spec file not found: {p}") from None
        raise SpecError("", f"cannot read spec file {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError("", f"cannot read spec file {p}: {e}") from None
    import dataclasses

    return dataclasses.replace(Spec.from_json(text), base_dir=p.resolve().parent)
