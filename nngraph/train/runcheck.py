"""Checks of what a run directory's files hold, before anything trusts them.

A run directory is user data: it can be edited, truncated, copied between versions or crafted.
Every verb that reads one (``history``, ``export``, ``train --resume``) goes through these checks,
so a bad file is one DataError naming the file and what is wrong, never a KeyError or a silently
wrong resume. Nothing here writes: a refused directory is left exactly as it was.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

# the keys Trainer.checkpoint() writes, with the check each value must pass
_COUNTERS = ("epoch", "batch", "step")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_layout(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], list)
        and all(_is_int(d) and d >= 0 for d in e[1]) for e in v)


def _flat_size(entries: list[list[Any]]) -> int:
    from ..backend.params import ALIGN

    total = sum(-(-int(np.prod(shape, dtype=np.int64)) // ALIGN) * ALIGN for _, shape in entries)
    return max(total, ALIGN)  # ParamStore never allocates an empty buffer


def check_checkpoint(path: Path, arrays: dict[str, np.ndarray], meta: Any) -> None:
    """A checkpoint's metadata has every key with a sane value, and its flat arrays the sizes its
    layout states; a DataError naming ``path`` otherwise."""
    if not isinstance(meta, dict):
        raise DataError(f"{path}: corrupt checkpoint metadata (a JSON object expected, got {type(meta).__name__})")
    missing = [k for k in (*_COUNTERS, "lr", "rng_state", "partial", "elapsed", "schedule", "history",
                           "callbacks") if k not in meta]
    if missing:
        raise DataError(f"{path}: checkpoint metadata is missing {', '.join(missing)}")
    for k in _COUNTERS:
        if not _is_int(meta[k]) or meta[k] < 0:
            raise DataError(f"{path}: checkpoint {k} must be an integer >= 0, got {meta[k]!r}")
    if not _is_num(meta["lr"]) or meta["lr"] < 0:
        raise DataError(f"{path}: checkpoint lr must be a number >= 0, got {meta['lr']!r}")
    if not _is_num(meta["elapsed"]) or meta["elapsed"] < 0:
        raise DataError(f"{path}: checkpoint elapsed must be a number >= 0, got {meta['elapsed']!r}")
    p = meta["partial"]
    if not (isinstance(p, list) and len(p) == 4 and all(_is_num(v) and v >= 0 for v in p)):
        raise DataError(f"{path}: checkpoint partial must be 4 numbers >= 0, got {p!r}")
    if not isinstance(meta["rng_state"], dict) or not isinstance(meta["rng_state"].get("state"), dict):
        raise DataError(f"{path}: checkpoint rng_state is not a generator state")
    for k in ("schedule", "callbacks"):
        if not isinstance(meta[k], dict):
            raise DataError(f"{path}: checkpoint {k} must be a JSON object")
    check_history(path, meta["history"], records=True)
    if len(meta["history"]) != meta["epoch"]:
        raise DataError(f"{path}: checkpoint says {meta['epoch']} epochs are done but holds "
                        f"{len(meta['history'])} history records")
    for key in ("layout", "state_layout"):
        if key in meta and not _is_layout(meta[key]):
            raise DataError(f"{path}: checkpoint {key} is not a list of [name, shape]")
    if "params" not in arrays:
        raise DataError(f"{path}: checkpoint has no 'params' array")
    for key, array in (("layout", "params"), ("state_layout", "state")):
        if key not in meta:  # a bare Trainer.checkpoint(): the model checks the sizes when loading
            continue
        entries = meta.get(key) or []
        a = arrays.get(array)
        if a is None:
            if entries:
                raise DataError(f"{path}: checkpoint has no {array!r} array")
            continue
        if a.ndim != 1 or a.dtype.kind != "f" or a.size != _flat_size(entries):
            raise DataError(f"{path}: checkpoint {array!r} holds {a.size:,} {a.dtype} values in shape "
                            f"{a.shape}, its {key} needs a flat float array of {_flat_size(entries):,}")


def check_best(path: Path, meta: dict[str, Any]) -> None:
    """The extra keys of ``best.npz``: monitor, best value and epoch."""
    if not isinstance(meta.get("monitor"), str) or not _is_num(meta.get("best")) \
            or not _is_int(meta.get("best_epoch")) or meta.get("best_epoch", -1) < 0:
        raise DataError(f"{path}: not a best checkpoint (its metadata lacks a valid monitor, best and best_epoch)")


def check_history(path: Path, rows: Any, records: bool = False) -> list[dict[str, Any]]:
    """History rows (checkpoint records or history.json's epochs): a list of objects with an integer
    epoch (1, 2, ...) and a numeric loss; every other value a number or null (records may also
    carry ``extras`` and ``metric_name``)."""
    if not isinstance(rows, list):
        raise DataError(f"{path}: history must be a list of epochs, got {type(rows).__name__}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"{path}: history row {i + 1} is not an object: {str(r)[:40]!r}")
        if r.get("epoch") != i + 1 or not _is_int(r.get("epoch")):
            raise DataError(f"{path}: history row {i + 1} has epoch {r.get('epoch')!r}, expected {i + 1}")
        if not isinstance(r.get("loss"), (int, float)) or isinstance(r.get("loss"), bool):
            raise DataError(f"{path}: history row {i + 1} has no numeric loss")
        for k, v in r.items():
            if records and k == "metric_name":
                ok = v is None or isinstance(v, str)
            elif records and k == "extras":
                ok = isinstance(v, dict) and all(x is None or _is_plain_num(x) for x in v.values())
            else:
                ok = v is None or _is_plain_num(v)
            if not ok:
                raise DataError(f"{path}: history row {i + 1}: {k} is {str(v)[:40]!r}, not a number")
        if records:
            for k in ("metric", "val_loss", "val_metric", "lr", "seconds", "samples_per_s"):
                if k not in r:
                    raise DataError(f"{path}: history record {i + 1} lacks {k}")
    return rows


def _is_plain_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_info(path: Path, info: Any) -> dict[str, Any]:
    """run.json: a JSON object whose path-like entries are strings (or null)."""
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(info).__name__}")
    for k in ("data", "targets", "base_dir", "data_sha256", "status"):
        if info.get(k) is not None and not isinstance(info[k], str):
            raise DataError(f"{path}: {k} must be a string, got {str(info[k])[:40]!r}")
    if info.get("data_meta") is not None and not isinstance(info["data_meta"], dict):
        raise DataError(f"{path}: data_meta must be a JSON object")
    return info
