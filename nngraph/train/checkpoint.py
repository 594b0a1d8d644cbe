"""Checkpoint files: one ``.npz`` (no pickle) holding the run's arrays and its JSON metadata.

Arrays: ``params`` (the flat parameter buffer, so a checkpoint of any network is one array),
``state`` (the flat buffer of non-trainable state such as batch norm's running statistics),
``optimizer.<name>`` (moments, velocities), ``<callback>.<name>`` (e.g. early stopping's best
weights). Metadata (``meta.json``, stored as a uint8 array): counters, learning rate, the shuffling
generator's state, schedule/callback state, the history, and a description of the parameter layout
so a checkpoint can be checked against a model before loading.
Files are written atomically (temporary file, fsync, rename): a kill leaves the old file or the new.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write_bytes

FORMAT = 1


def layout(params: Any) -> list[list[Any]]:
    """[name, shape] of each trainable parameter, in buffer order (ParamStore)."""
    return [[name, list(info.shape)] for name, info in params.infos.items()]


def state_layout(params: Any) -> list[list[Any]]:
    """[name, shape] of each non-trainable state array, in its buffer's order (ParamStore)."""
    return [[name, list(info.shape)] for name, info in params.state_infos.items()]


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write arrays + metadata as one .npz, atomically."""
    meta = {"format": FORMAT, **meta}
    text = json.dumps(meta, default=_plain).encode("utf-8")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()},
             **{"meta.json": np.frombuffer(text, np.uint8)})
    return atomic_write_bytes(path, buf.getvalue())


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint: (arrays, metadata). Raises DataError naming the file if it is unreadable."""
    from ..data.arrays import load_npz

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: checkpoint not found")
    try:
        arrays = load_npz(p)  # regular file, .npy members only, headers checked against sizes
    except DataError as e:
        raise DataError(f"not a readable checkpoint: {e}") from None
    raw = arrays.pop("meta.json", None)
    if raw is None or "params" not in arrays:
        raise DataError(f"{p}: not an nngraph checkpoint (no params/meta.json)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: corrupt checkpoint metadata ({e})") from None
    except RecursionError:
        raise DataError(f"{p}: corrupt checkpoint metadata (nested too deeply)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{p}: checkpoint format {fmt!r}, this nngraph reads {FORMAT}")
    from .runcheck import check_checkpoint

    check_checkpoint(p, arrays, meta)
    return arrays, meta


def weights(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The named parameter and state arrays of a checkpoint (views into its flat buffers)."""
    out = _unpack(arrays["params"], meta["layout"])
    if meta.get("state_layout"):
        out.update(_unpack(arrays["state"], meta["state_layout"]))
    return out


def _unpack(flat: np.ndarray, entries: list[list[Any]]) -> dict[str, np.ndarray]:
    from ..backend.params import ALIGN

    out, offset = {}, 0
    for name, shape in entries:
        size = int(np.prod(shape)) if shape else 1
        out[name] = flat[offset:offset + size].reshape(shape)
        offset += -(-size // ALIGN) * ALIGN
    return out
