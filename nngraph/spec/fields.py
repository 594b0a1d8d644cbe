"""Field constraints as data: each spec section is a table ``key -> Field``.

One function, :func:`check_field`, turns a violation into the uniform message
``<path>: expected <what>, got <value>``; the JSON Schema is generated from the same tables, so the
published schema and the validator cannot drift apart.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import SpecError

REQUIRED = object()  # sentinel: the key must be given

# Integers without an explicit maximum are capped in magnitude: a size, count or step beyond 2**31 - 1
# cannot describe a network that fits in memory (or an ONNX attribute), and a value beyond int64
# would fail much later, inside Numba typing or numpy (issue 11). A table may set a larger maximum
# (train.seed allows any int64).
INT_LIMIT = 2**31 - 1


def show(value: Any) -> str:
    """Render a received value the way the user wrote it (JSON)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        # str() of an int beyond sys.get_int_max_str_digits() raises; never print 4,000 digits anyway
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = json.dumps(value)  # ensure_ascii: a lone surrogate prints as \ud800, never breaks stderr
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Field:
    """One key of a spec section.

    kind: ``int`` | ``float`` | ``bool`` | ``str`` | ``enum`` | ``int_or_pair`` | ``padding`` |
    ``shape`` | ``str_list`` | ``any`` | ``table`` | ``typed_table``. ``minimum``/``maximum`` bound
    numbers (``exclusive_min``/``exclusive_max`` make the lower/upper bound strict); ``options`` lists the allowed strings of
    an enum (or of each item of a ``str_list``). A ``table`` is a nested object checked against the
    field table ``sub``; a ``typed_table`` is a nested object with a ``"type"`` key choosing its
    field table from ``sub`` (``{type: table}``), like the optimizer section.
    """

    kind: str
    default: Any = REQUIRED
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    options: tuple = ()
    nullable: bool = False
    sub: Any = None  # nested field table(s) of a table / typed_table

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """Human phrase for what the field accepts, used in error messages."""
        if self.kind == "enum":
            return "one of " + ", ".join(f'"{o}"' for o in self.options)
        base = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "int_or_pair": "an integer or a list of 2 integers",
            "padding": '"valid", "same", an integer or a list of integers',
            "shape": "a list of integers >= 1",
            "str_list": "a list of strings",
            "any": "a value",
            "table": "an object",
            "typed_table": "an object with a \"type\" (" + ", ".join(f'"{t}"' for t in (self.sub or ())) + ")",
        }[self.kind]
        lo = ">" if self.exclusive_min else ">="
        hi = "<" if self.exclusive_max else "<="
        if self.minimum is not None and self.maximum is not None:
            return f"{base} {lo} {_num(self.minimum)} and {hi} {_num(self.maximum)}"
        if self.minimum is not None:
            return f"{base} {lo} {_num(self.minimum)}"
        if self.maximum is not None:
            return f"{base} {hi} {_num(self.maximum)}"
        return base


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:  # an int beyond the float range (10**400) is not a usable number either
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _int_limit(f: Field) -> int:
    return int(f.maximum) if f.maximum is not None else INT_LIMIT


def _int_ok(f: Field, v: Any) -> bool:
    """An int within the field's bounds and within the implicit magnitude cap."""
    return _is_int(v) and _in_range(f, v) and abs(v) <= _int_limit(f)


def _in_range(f: Field, v: float) -> bool:
    if f.minimum is not None and (v <= f.minimum if f.exclusive_min else v < f.minimum):
        return False
    if f.maximum is not None and (v >= f.maximum if f.exclusive_max else v > f.maximum):
        return False
    return True


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def join_path(path: str, key: Any) -> str:
    """``path.key``, or ``path["odd key"]`` when the key is not a plain name (so a path stays one
    readable line whatever the user's keys contain)."""
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def check_field(f: Field, value: Any, path: str) -> Any:
    """Validate ``value`` against ``f``; return it normalised (lists become tuples)."""
    fail = SpecError(path, f"expected {f.describe()}, got {show(value)}")
    if value is None:
        if f.nullable:
            return None
        raise fail
    k = f.kind
    if k in ("int", "int_or_pair") and _is_int(value) and _in_range(f, value) and abs(value) > _int_limit(f):
        raise SpecError(path, f"expected {f.describe()}, got {show(value)} (too large: at most {_int_limit(f)})")
    if k == "int":
        if not _int_ok(f, value):
            raise fail
        return value
    if k == "float":
        if not _is_number(value) or not _in_range(f, value):
            raise fail
        return value
    if k == "bool":
        if not isinstance(value, bool):
            raise fail
        return value
    if k == "str":
        if not isinstance(value, str) or not value:
            raise fail
        return value
    if k == "enum":
        if value not in f.options:
            raise fail
        return value
    if k == "int_or_pair":
        if _int_ok(f, value):
            return value
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_int_ok(f, v) for v in value):
            return tuple(value)
        raise fail
    if k == "padding":
        if value in ("valid", "same"):
            return value
        if _is_int(value) and 0 <= value <= INT_LIMIT:
            return value
        if isinstance(value, (list, tuple)) and value and all(_is_int(v) and 0 <= v <= INT_LIMIT for v in value):
            return tuple(value)
        raise fail
    if k == "shape":
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) and 1 <= v <= INT_LIMIT for v in value):
            raise fail
        return tuple(value)
    if k == "str_list":
        if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, str) and v for v in value
        ):
            raise fail
        for i, v in enumerate(value):
            if f.options and v not in f.options:
                raise SpecError(f"{path}[{i}]", "expected one of " + ", ".join(f'"{o}"' for o in f.options)
                                + f", got {show(v)}")
        return tuple(value)
    if k == "any":
        return value
    if k == "table":
        return check_section(f.sub, value, path, path.rsplit(".", 1)[-1])
    if k == "typed_table":
        if not isinstance(value, dict) or "type" not in value:
            raise fail
        if not isinstance(value["type"], str) or value["type"] not in f.sub:  # a list is unhashable
            raise SpecError(f"{path}.type", "expected one of " + ", ".join(f'"{t}"' for t in f.sub)
                            + f", got {show(value['type'])}")
        typ = value["type"]
        return {"type": typ, **check_section(f.sub[typ], value, path, f"a {typ} {path.rsplit('.', 1)[-1]}",
                                             skip=("type",))}
    raise AssertionError(f"unknown field kind {k}")


def check_section(
    table: dict[str, Field], data: Any, path: str, what: str, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check a JSON object against a field table: closed (unknown keys are errors), required keys
    present, each value valid. Returns only the keys the user gave, normalised, in their order."""
    if not isinstance(data, dict):
        raise SpecError(path, f"expected an object ({what}), got {show(data)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in skip:
            continue
        sub = join_path(path, key)
        if key not in table:
            known = ", ".join(sorted(set(table) | set(skip)))
            raise SpecError(sub, f"unknown key for {what} (known: {known})")
        out[key] = check_field(table[key], value, sub)
    for key, f in table.items():
        if f.required and key not in data:
            raise SpecError(join_path(path, key), f"required for {what}, missing")
    return out


def resolved(table: dict[str, Field], given: dict[str, Any]) -> dict[str, Any]:
    """The given values with every omitted optional key filled with its default. A number field
    written as an integer (``"lr": 1``) resolves to a float, so kernels never see a Python int
    (an int beyond int64 fails Numba's typing)."""
    out = {k: given.get(k, f.default) for k, f in table.items() if k in given or not f.required}
    for k, v in out.items():
        if table[k].kind == "float" and _is_int(v):
            out[k] = float(v)
    return out


def resolved_nested(f: Field, given: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``table``/``typed_table`` value with its own omitted keys filled in (None stays None)."""
    if given is None:
        return None
    if f.kind == "typed_table":
        return {"type": given["type"], **resolved(f.sub[given["type"]], given)}
    return resolved(f.sub, given)


def field_json_schema(f: Field) -> dict[str, Any]:
    """One field as a JSON Schema fragment."""
    k = f.kind
    lo = {"exclusiveMinimum" if f.exclusive_min else "minimum": f.minimum} if f.minimum is not None else {}
    hi = {"exclusiveMaximum" if f.exclusive_max else "maximum": f.maximum} if f.maximum is not None else {}
    if k in ("int", "int_or_pair") and f.maximum is None:
        hi = {"maximum": INT_LIMIT}
    if k == "int":
        s: dict[str, Any] = {"type": "integer", **lo, **hi}
    elif k == "float":
        s = {"type": "number", **lo, **hi}
    elif k == "bool":
        s = {"type": "boolean"}
    elif k == "str":
        s = {"type": "string", "minLength": 1}
    elif k == "enum":
        s = {"enum": list(f.options)}
    elif k == "int_or_pair":
        one = {"type": "integer", **lo, **hi}
        s = {"oneOf": [one, {"type": "array", "items": one, "minItems": 2, "maxItems": 2}]}
    elif k == "padding":
        pad = {"type": "integer", "minimum": 0, "maximum": INT_LIMIT}
        s = {"oneOf": [{"enum": ["valid", "same"]}, pad, {"type": "array", "items": pad, "minItems": 1}]}
    elif k == "shape":
        s = {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": INT_LIMIT}}
    elif k == "str_list":
        item = {"enum": list(f.options)} if f.options else {"type": "string", "minLength": 1}
        s = {"type": "array", "items": item, "minItems": 1}
    elif k == "table":
        s = table_json_schema(f.sub)
    elif k == "typed_table":
        s = {"oneOf": [table_json_schema(tbl, typ) for typ, tbl in f.sub.items()]}
    else:
        s = {}
    if f.nullable:
        s = {"oneOf": [s, {"type": "null"}]}
    if f.doc:
        s["description"] = f.doc
    if not f.required and f.default is not None and not callable(f.default):
        s["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
    return s


def table_json_schema(table: dict[str, Field], const_type: str | None = None) -> dict[str, Any]:
    """A field table as a closed JSON Schema object (with ``"type": const`` for typed tables)."""
    props: dict[str, Any] = {"type": {"const": const_type}} if const_type is not None else {}
    props.update({k: field_json_schema(f) for k, f in table.items()})
    req = (["type"] if const_type else []) + [k for k, f in table.items() if f.required]
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if req:
        out["required"] = req
    return out


FieldTable = dict[str, Field]
Normaliser = Callable[[dict[str, Any], str], dict[str, Any]]
__all__ = ["Field", "REQUIRED", "INT_LIMIT", "check_field", "check_section", "resolved", "resolved_nested",
           "field_json_schema", "table_json_schema", "show",
           "FieldTable", "field"]
