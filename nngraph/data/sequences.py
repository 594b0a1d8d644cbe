"""Sequence data: windowed time series from CSV, character corpora from text, generated series.

Windowing a series (spec keys under ``data``: window, horizon, columns, target, split, normalize):
    x[i] = features[i : i + window]            (window, n_features)
    y[i] = target[i + window + horizon - 1]    (1,)   -- the value `horizon` steps after the window
The last ``split`` fraction of the windows (chronologically) is the test set. With ``normalize``
(default true) the inputs are standardised inside the model (a ``normalize`` layer whose statistics
come from the training windows) and the target with the mean/std of the rows the TRAINING windows
cover (the test rows never leak in); the exported model ends with the inverse transform, so it takes
raw values and answers in target units.

A text corpus (.txt; keys seq_len, stride, split) becomes next-character pairs:
    x[i] = ids[s : s + seq_len],  y[i] = ids[s + 1 : s + seq_len + 1],  s = i * stride
with the vocabulary (sorted distinct characters) stored in the model metadata as ``vocab``, so
``nngraph sample`` needs nothing but the .onnx file. The last ``split`` fraction of the text is the
test (validation) text; windows never straddle the cut.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from . import Dataset, read_csv_rows

DEFAULT_SPLIT_SERIES = 0.2
DEFAULT_SPLIT_TEXT = 0.1
SERIES_LIMIT = 1e30  # |values| beyond this lose float32 precision in their squares


def _int_option(options: dict[str, Any], key: str, path: Path, default: int | None = None, minimum: int = 1) -> int:
    v = options.get(key, default)
    if v is None:
        raise DataError(f"{path}: data.{key} is required for this kind of data")
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise DataError(f"{path}: data.{key} must be an integer >= {minimum}, got {v!r}")
    return v


def _split_option(options: dict[str, Any], path: Path, default: float) -> float:
    v = options.get("split")
    v = default if v is None else v
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
        raise DataError(f"{path}: data.split must be a fraction in [0, 1), got {v!r}")
    return float(v)


# ---- CSV series ---------------------------------------------------------------------------------

def read_series(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """A CSV with a header row as {column name: float array}, numeric columns only (a column with
    any non-numeric cell, e.g. dates, is left out). Quoted cells and CRLF line ends are fine."""
    rows = read_csv_rows(path)
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row and at least one data row")
    header = [c.strip() for c in rows[0]]
    body = rows[1:]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise DataError(f"{path}: line {i + 2} has {len(r)} columns, expected {len(header)}")
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        try:
            cols[name] = np.array([float(r[j]) for r in body], np.float64)
        except ValueError:
            continue  # a label/date column
    if not cols:
        raise DataError(f"{path}: no numeric column (columns: {', '.join(header)})")
    for name, v in cols.items():
        if not np.all(np.isfinite(v)):
            raise DataError(f"{path}: column {name!r} contains NaN or Inf")
    return header, cols


def _pick(path: Path, header: list[str], cols: dict[str, np.ndarray], ref: Any, what: str) -> str:
    if isinstance(ref, int) and not isinstance(ref, bool):
        if not -len(header) <= ref < len(header):
            raise DataError(f"{path}: {what} column {ref} is out of range (the file has {len(header)} columns)")
        ref = header[ref]
    if ref not in cols:
        known = ", ".join(cols)
        raise DataError(f"{path}: {what} column {ref!r} is not a numeric column (numeric columns: {known})")
    return ref


def window_series(features: np.ndarray, target: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): x[i] = features[i:i+window], y[i] = target[i+window+horizon-1] (see module doc)."""
    n = len(features) - window - horizon + 1
    if n < 1:
        return np.zeros((0, window, features.shape[1]), features.dtype), np.zeros((0, 1), target.dtype)
    idx = np.arange(n)[:, None] + np.arange(window)[None, :]
    return features[idx], target[np.arange(n) + window + horizon - 1].reshape(-1, 1)


def load_series_csv(path: Path, options: dict[str, Any]) -> Dataset:
    """A CSV time series windowed into (x, y) pairs (see the module docstring)."""
    window = _int_option(options, "window", path)
    horizon = _int_option(options, "horizon", path, default=1)
    split = _split_option(options, path, DEFAULT_SPLIT_SERIES)
    header, cols = read_series(path)
    numeric = list(cols)
    target = _pick(path, header, cols, options["target"], "target") if options.get("target") is not None \
        else numeric[-1]
    refs = options.get("columns")
    if refs is None:
        names = numeric
    elif isinstance(refs, (list, tuple)) and refs:
        names = [_pick(path, header, cols, r, "feature") for r in refs]
    else:
        raise DataError(f"{path}: data.columns must be a non-empty list of column names or indices")
    feats = np.stack([cols[c] for c in names], axis=1)
    tgt = cols[target].copy()
    for name in dict.fromkeys(names + [target]):
        big = float(np.abs(cols[name]).max()) if len(cols[name]) else 0.0
        if big > SERIES_LIMIT:  # squares (std) overflow float64, values overflow float32: garbage
            raise DataError(f"{path}: column {name!r} has values up to {big:.3g}; nngraph trains in float32 "
                            f"and accepts series values up to {SERIES_LIMIT:.0e} (rescale the column)")
    n = len(feats) - window - horizon + 1
    if n < 2:
        raise DataError(f"{path}: {len(feats)} rows are too few for window {window} and horizon {horizon}")
    n_test = int(round(n * split))
    n_train = n - n_test
    if n_train < 1:
        raise DataError(f"{path}: split {split} leaves no training windows")
    meta: dict[str, Any] = {"window": window, "horizon": horizon, "columns": names, "target": target,
                            "task": "series"}
    input_layer = None
    if options.get("normalize", True):
        # Inputs: standardised inside the model (a normalize layer, statistics from the training
        # windows). Targets: standardised here with the training rows' mean and std, so the loss
        # keeps its scale; the export appends the inverse (y * std + mean): outputs in target units.
        rows = n_train + window + horizon - 1  # the rows the training windows and targets cover
        t_mean, t_std = float(tgt[:rows].mean()), float(tgt[:rows].std() or 1.0)
        tgt = (tgt - t_mean) / t_std
        input_layer = {"mode": "standard"}
        meta["normalization"] = {"inputs": "standardised inside the model (normalize layer)",
                                 "target_mean": round(t_mean, 8), "target_std": round(t_std, 8)}
        meta["target_normalization"] = {"mean": t_mean, "std": t_std}
    x, y = window_series(feats.astype(np.float32), tgt.astype(np.float32), window, horizon)
    ds = Dataset(x[:n_train], y[:n_train], meta=meta, input_layer=input_layer)
    if n_test:
        ds.x_test, ds.y_test = x[n_train:], y[n_train:]
    return ds


# ---- text corpus --------------------------------------------------------------------------------

def encode(text: str, vocab: str) -> np.ndarray:
    """Character ids of ``text`` in ``vocab``; a character outside it is a DataError."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return np.array([index[c] for c in text], np.int64)
    except KeyError as e:
        raise DataError(f"character {e.args[0]!r} is not in the model's vocabulary") from None


def load_text(path: Path, options: dict[str, Any]) -> Dataset:
    """A plain-text corpus as next-character prediction pairs (see the module docstring)."""
    seq_len = _int_option(options, "seq_len", path)
    stride = _int_option(options, "stride", path, default=seq_len)
    split = _split_option(options, path, DEFAULT_SPLIT_TEXT)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as UTF-8 text ({e})") from None
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    uniq, ids = np.unique(codes, return_inverse=True)
    vocab = "".join(chr(c) for c in uniq)
    ids = ids.astype(np.int64)
    cut = len(ids) - int(round(len(ids) * split))

    def pairs(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (len(seq) - 1 - seq_len) // stride + 1
        if n < 1:
            return np.zeros((0, seq_len), np.int64), np.zeros((0, seq_len), np.int64)
        idx = np.arange(n)[:, None] * stride + np.arange(seq_len)[None, :]
        return seq[idx], seq[idx + 1]

    x, y = pairs(ids[:cut])
    if len(x) == 0:
        raise DataError(f"{path}: {cut} characters of training text are too few for seq_len {seq_len}")
    ds = Dataset(x, y, meta={"vocab": vocab, "task": "char_lm", "seq_len": seq_len})
    if split > 0:
        xt, yt = pairs(ids[cut:])
        if len(xt):
            ds.x_test, ds.y_test = xt, yt
    return ds


# ---- generated data (built-in datasets) ----------------------------------------------------------

SINE_SEED = 20261125  # fixed forever: the published MSE refers to this data
SINE_STEPS = 40


def load_sine(n_train: int = 2000, n_test: int = 500) -> Dataset:
    """Built-in "sine": predict the next value of a sine wave from the previous 40.
    Each sample has its own frequency (0.1 .. 0.5 rad/step), phase and amplitude (0.5 .. 1);
    x (N, 40, 1), y (N, 1). Generated from a fixed seed, so every machine sees the same data."""
    rng = np.random.default_rng(SINE_SEED)
    n = n_train + n_test
    w = rng.uniform(0.1, 0.5, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    amp = rng.uniform(0.5, 1.0, (n, 1))
    t = np.arange(SINE_STEPS + 1)[None, :]
    s = (amp * np.sin(w * t + phase)).astype(np.float32)
    x, y = s[:, :SINE_STEPS, None], s[:, SINE_STEPS:]
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   meta={"source": "builtin:sine", "task": "series",
                         "generator": f"amp*sin(w*t+phase), w~U(0.1,0.5), amp~U(0.5,1), seed {SINE_SEED}"})


WAVE_CLASSES = ("sine", "square", "sawtooth")


def load_waves(n_train: int = 1500, n_test: int = 500, steps: int = 50) -> Dataset:
    """Built-in "waves": classify a noisy periodic signal as sine, square or sawtooth.
    Random period (8 .. 25 steps), phase and amplitude (0.5 .. 1.5), Gaussian noise sd 0.3;
    x (N, 50, 1), y class ids (N,). Fixed seed."""
    rng = np.random.default_rng(SINE_SEED + 1)
    n = n_train + n_test
    y = rng.integers(0, 3, n)
    period = rng.uniform(8, 25, (n, 1))
    phase = rng.uniform(0, 1, (n, 1))
    amp = rng.uniform(0.5, 1.5, (n, 1))
    u = (np.arange(steps)[None, :] / period + phase) % 1.0  # position within the period, 0..1
    waves = np.stack([np.sin(2 * np.pi * u), np.where(u < 0.5, 1.0, -1.0), 2 * u - 1], axis=0)
    x = amp * waves[y, np.arange(n)] + rng.normal(0, 0.3, (n, steps))
    x = x.astype(np.float32)[:, :, None]
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   meta={"source": "builtin:waves", "classes": list(WAVE_CLASSES)})
