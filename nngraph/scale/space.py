"""Search spaces of a sweep: ``--param PATH=SPACE`` parsed, and the trial list drawn from a seed.

    choice:a,b,c         one of the values, uniformly
    uniform:lo:hi        a float in [lo, hi)
    loguniform:lo:hi     a float whose log is uniform in [log lo, log hi) (0 < lo < hi)
    randint:lo:hi        an integer in [lo, hi) (hi excluded, as numpy and Ray Tune)
    grid:a,b,c           every value: the trials are the grid's cross product, each repeated with
                         ``trials`` random draws of the other parameters (Ray Tune's num_samples)

Values in ``choice``/``grid`` lists are JSON when they parse (``64``, ``0.1``, ``"relu"``, ``true``),
strings otherwise, as ``--set``. The trial list is drawn here, from ``numpy.random.default_rng(seed)``
in a fixed order, and stored in the sweep directory: the same command gives the same trials, and a
resumed sweep runs exactly the trials it planned (Ray Tune only schedules them).
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SpecError
from ..workflow import override_path

KINDS = ("choice", "uniform", "loguniform", "randint", "grid")


@dataclass(frozen=True)
class Param:
    """One swept spec path and its space."""

    path: str
    kind: str
    values: tuple[Any, ...] = ()  # choice, grid
    low: float = 0.0  # uniform, loguniform, randint
    high: float = 0.0

    def describe(self) -> str:
        if self.kind in ("choice", "grid"):
            return f"{self.path}={self.kind}:{','.join(json.dumps(v) for v in self.values)}"
        return f"{self.path}={self.kind}:{_num(self.low)}:{_num(self.high)}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "values": list(self.values), "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Param":
        return cls(d["path"], d["kind"], tuple(d.get("values", ())), d.get("low", 0.0), d.get("high", 0.0))


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError, ValueError):
        return raw


def _number(raw: str, what: str, item: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise SpecError(item, f"{what} {raw!r} is not a number") from None
    if not math.isfinite(v):
        raise SpecError(item, f"{what} {raw!r} is not finite")
    return v


def parse_param(item: str) -> Param:
    """``PATH=SPACE`` -> Param; a bad path, kind or bound is a SpecError naming the item."""
    path, sep, space = item.partition("=")
    if not sep or not path or not space:
        raise SpecError(item, "expected PATH=SPACE, e.g. optimizer.lr=loguniform:1e-4:1e-1")
    override_path(path)  # the same paths as --set
    kind, sep, rest = space.partition(":")
    if kind not in KINDS:
        raise SpecError(path, f"unknown space {kind!r} (use {', '.join(k + ':' for k in KINDS)})")
    if kind in ("choice", "grid"):
        values = tuple(_value(v) for v in rest.split(",")) if rest else ()
        if not values or any(v == "" for v in values):
            raise SpecError(path, f"{kind}: needs values separated by commas, e.g. {kind}:64,128,256")
        return Param(path, kind, values)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise SpecError(path, f"{kind}: needs two bounds, e.g. {kind}:{'1e-4:1e-1' if kind == 'loguniform' else '1:10'}")
    lo, hi = (_number(b, "bound", path) for b in bounds)
    if not lo < hi:
        raise SpecError(path, f"{kind}: the low bound {_num(lo)} must be below the high bound {_num(hi)}")
    if kind == "loguniform" and lo <= 0:
        raise SpecError(path, f"loguniform: bounds must be positive, got {_num(lo)}")
    if kind == "randint" and not (lo.is_integer() and hi.is_integer()):
        raise SpecError(path, "randint: bounds must be integers")
    if kind == "randint" and hi - lo < 1:
        raise SpecError(path, "randint: the range is empty")
    return Param(path, kind, low=lo, high=hi)


def parse_params(items: list[str] | tuple[str, ...]) -> list[Param]:
    params = [parse_param(i) for i in items]
    seen: set[str] = set()
    for p in params:
        if p.path in seen:
            raise SpecError(p.path, "given twice with --param")
        seen.add(p.path)
    return params


def _draw(p: Param, rng: np.random.Generator) -> Any:
    if p.kind == "choice":
        return p.values[int(rng.integers(len(p.values)))]
    if p.kind == "uniform":
        return float(rng.uniform(p.low, p.high))
    if p.kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
    return int(rng.integers(int(p.low), int(p.high)))


def plan_trials(params: list[Param], trials: int, seed: int) -> list[dict[str, Any]]:
    """The sweep's trials, in order: one dict of ``path -> value`` each. The grid's points (cross
    product, in the order given) each get ``trials`` draws of the random parameters; without grid
    parameters there are ``trials`` draws. Deterministic in ``seed``."""
    if trials < 1:
        raise SpecError("--trials", "must be at least 1")
    rng = np.random.default_rng(seed)
    grid = [p for p in params if p.kind == "grid"]
    points = list(itertools.product(*(p.values for p in grid))) if grid else [()]
    out = []
    for _ in range(trials):
        for point in points:
            fixed = dict(zip((p.path for p in grid), point))
            out.append({p.path: fixed[p.path] if p.kind == "grid" else _draw(p, rng) for p in params})
    return out
