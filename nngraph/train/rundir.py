"""Run directories: everything needed to watch, resume, compare and export a training run.

    DIR/spec.json        the spec as used (command-line overrides applied), canonical JSON
    DIR/run.json         where the data came from (+ SHA-256 of the training arrays), status, command
    DIR/checkpoint.npz   the latest checkpoint: weights, optimizer, generator, counters, history
    DIR/best.npz         the weights of the best epoch by ``train.monitor`` (a full checkpoint)
    DIR/history.csv      a header, then one row per finished epoch (written as each epoch ends)
    DIR/history.json     the same rows as JSON, with the monitor and the best epoch

Every file is written atomically, and the directory itself is created complete (built under a
temporary name, then renamed), so a crash or SIGKILL at any moment leaves either no directory or
one that :func:`open_run` loads.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write_text, read_user_bytes
from .callbacks import Callback
from .runcheck import check_best, check_history, check_info
from .checkpoint import layout, load_checkpoint, save_checkpoint, state_layout
from .schedules import better, monitor_mode

if TYPE_CHECKING:
    from ..spec import Spec
    from .history import EpochRecord
    from .trainer import Trainer

SPEC, RUN, CHECKPOINT, BEST = "spec.json", "run.json", "checkpoint.npz", "best.npz"
HISTORY_CSV, HISTORY_JSON = "history.csv", "history.json"
MAX_SPEC_BYTES = 16 << 20
COLUMNS_FIRST = ("epoch", "loss")
COLUMNS_LAST = ("lr", "seconds", "samples_per_s", "elapsed")


def data_sha256(x: Any, y: np.ndarray) -> str:
    """Fingerprint of the training arrays (inputs by name, then targets)."""
    import hashlib

    h = hashlib.sha256()
    feeds = x if isinstance(x, dict) else {"x": x}
    for name in sorted(feeds):
        a = feeds[name]
        if hasattr(a, "chunks"):  # rows read from a file (data.arrays.NpyRows): hash block by block
            h.update(f"{name}{a.dtype}{a.shape}".encode())
            for block in a.chunks():
                h.update(memoryview(np.ascontiguousarray(block)).cast("B"))
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{name}{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    a = np.ascontiguousarray(y)
    h.update(f"y{a.dtype}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def create_run(path: str | Path, spec_json: str, run_info: dict[str, Any]) -> Path:
    """Create DIR with spec.json and run.json, atomically (temporary folder + rename)."""
    d = Path(path)
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise DataError(f"{d}: run directory already exists and is not empty; continue it with "
                        f"--resume {d}, or choose another --run-dir")
    tmp = d.with_name(f".{d.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        atomic_write_text(tmp / SPEC, spec_json)
        atomic_write_text(tmp / RUN, json.dumps(run_info, indent=2) + "\n")
        if d.exists():
            d.rmdir()
        os.replace(tmp, d)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # ENOSPC, EACCES, a signal: no .NAME.partial-PID left
        if isinstance(e, OSError):
            raise DataError(f"{d}: cannot create the run directory ({e.strerror or e})") from None
        raise
    return d


def update_run_info(path: Path, **changes: Any) -> dict[str, Any]:
    """Rewrite run.json with some keys changed (atomically)."""
    info = check_info(path / RUN, read_json(path / RUN))
    info.update(changes)
    atomic_write_text(path / RUN, json.dumps(info, indent=2) + "\n")
    return info


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"{path}: missing (is {path.parent} a run directory?)")
    try:
        return json.loads(read_user_bytes(path, "JSON file", limit=1 << 30).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{path}: unreadable ({e if not isinstance(e, RecursionError) else 'nested too deeply'})") from None


@dataclass
class Run:
    """A run directory read back: spec text, run info, latest checkpoint (None before the first)
    and the history rows as written."""

    path: Path
    spec_json: str
    info: dict[str, Any]
    checkpoint: tuple[dict[str, np.ndarray], dict[str, Any]] | None
    rows: list[dict[str, Any]]

    def best(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The best checkpoint (by the run's monitor); the latest if no epoch finished yet."""
        if (self.path / BEST).exists():
            arrays, meta = load_checkpoint(self.path / BEST)
            check_best(self.path / BEST, meta)
            return arrays, meta
        if self.checkpoint is None:
            raise DataError(f"{self.path}: no checkpoint yet")
        return self.checkpoint


def open_run(path: str | Path) -> Run:
    """Load a run directory (raises DataError naming the file if something is unreadable)."""
    d = Path(path)
    if not d.is_dir():
        raise DataError(f"{d}: no such run directory")
    if not (d / SPEC).exists():
        raise DataError(f"{d / SPEC}: missing (is {d} a run directory?)")
    try:
        spec_text = read_user_bytes(d / SPEC, "spec file", limit=MAX_SPEC_BYTES).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{d / SPEC}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    info = check_info(d / RUN, read_json(d / RUN))
    ckpt = load_checkpoint(d / CHECKPOINT) if (d / CHECKPOINT).exists() else None
    rows: list[dict[str, Any]] = []
    if (d / HISTORY_JSON).exists():
        doc = read_json(d / HISTORY_JSON)
        if not isinstance(doc, dict):
            raise DataError(f"{d / HISTORY_JSON}: expected a JSON object, got {type(doc).__name__}")
        rows = check_history(d / HISTORY_JSON, doc.get("epochs", []))
    elif ckpt is not None:
        rows = [_row(r) for r in ckpt[1]["history"]]
    return Run(d, spec_text, info, ckpt, rows)


def run_spec(run: Run) -> "Spec":
    """The run's spec; an invalid spec.json is a DataError naming the file."""
    from ..errors import SpecError
    from ..spec import Spec

    try:
        return Spec.from_json(run.spec_json)
    except SpecError as e:
        raise DataError(f"{run.path / SPEC}: not a valid spec ({e})") from None


def _row(d: dict[str, Any]) -> dict[str, Any]:
    from .history import EpochRecord

    return EpochRecord.from_dict(d).values()


def history_csv(rows: list[dict[str, Any]], cache: list | None = None) -> str:
    """Rows as CSV: epoch, loss, metrics..., lr, seconds, samples_per_s, elapsed. ``cache`` (a list
    the caller keeps between calls) holds the rows already formatted, so a run directory's
    rewrite each epoch formats only the new row (formatting all of them made long runs quadratic)."""
    cols: list[str] = list(COLUMNS_FIRST)
    for r in rows:
        cols += [k for k in r if k not in cols and k not in COLUMNS_LAST]
    cols += list(COLUMNS_LAST)
    if cache is None:
        cache = []
    if not cache or cache[0] != cols:
        cache[:] = [cols]
    lines = cache  # [cols, (row, line), ...]
    while len(lines) - 1 > len(rows) or (len(lines) > 1 and lines[-1][0] is not rows[len(lines) - 2]):
        lines.pop()

    def line(r: dict[str, Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            ["" if r.get(c) is None else (f"{r[c]:.9g}" if isinstance(r[c], float) else r[c]) for c in cols])
        return buf.getvalue()

    lines.extend((r, line(r)) for r in rows[len(lines) - 1:])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cols)
    return buf.getvalue() + "".join(text for _, text in lines[1:])


class RunDirCallback(Callback):
    """Writes history, checkpoints and the best checkpoint into a run directory as training goes."""

    key = "run_dir"

    def __init__(self, path: Path, monitor: str, epochs: int, checkpoint_every: int = 1):
        self.path, self.monitor, self.epochs, self.every = path, monitor, epochs, checkpoint_every
        self.mode = monitor_mode(monitor)
        self.best: float | None = None
        self.best_epoch = 0
        self.last_saved: tuple[int, int] | None = None
        self._row_json: list[tuple[dict[str, Any], str]] = []
        self._csv_lines: list[Any] = []

    def save(self, trainer: "Trainer", finished: bool = False) -> Path:
        arrays, meta = trainer.checkpoint()
        meta.update(layout=layout(trainer.program.params), state_layout=state_layout(trainer.program.params),
                    dtype=str(trainer.program.params.dtype), finished=finished, monitor=self.monitor, saved=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.last_saved = (trainer.epoch, trainer.batch)
        return save_checkpoint(self.path / CHECKPOINT, arrays, meta)

    def write_history(self, trainer: "Trainer", durable: bool = False) -> None:
        # Not fsync'd as each epoch ends: the checkpoint (durable) holds the history, and a resume
        # rewrites these files from it. Four fsyncs fewer per epoch: 100 epochs of digits_mlp with
        # a run directory took 1.9-2.1 s with them, 1.4-1.55 s without (0.85-1.1 s with none).
        rows = trainer.history.rows()
        atomic_write_text(self.path / HISTORY_CSV, history_csv(rows, self._csv_lines), durable)
        atomic_write_text(self.path / HISTORY_JSON, self._history_json(rows), durable)

    def _history_json(self, rows: list[dict[str, Any]]) -> str:
        """history.json with one epoch per line; each row's JSON is made once (json's indented
        encoder is pure Python: re-encoding every row each epoch was the other quadratic cost)."""
        cache = self._row_json
        while len(cache) > len(rows) or (cache and cache[-1][0] is not rows[len(cache) - 1]):
            cache.pop()
        cache.extend((r, json.dumps(r)) for r in rows[len(cache):])
        head = json.dumps({"monitor": self.monitor, "mode": self.mode, "best_epoch": self.best_epoch or None,
                           "best": self.best})
        body = ",\n  ".join(text for _, text in cache)
        return head[:-1] + (', "epochs": [\n  ' + body + "\n]}\n" if cache else ', "epochs": []}\n')

    def on_train_begin(self, trainer: "Trainer") -> None:
        for stale in self.path.glob(".*.tmp"):  # left by a kill in the middle of an atomic write
            stale.unlink(missing_ok=True)
        self.write_history(trainer)  # a resume truncates rows written after the checkpoint
        if trainer.epoch == 0 and trainer.batch == 0 and not (self.path / CHECKPOINT).exists():
            self.save(trainer)  # epoch 0: the initial weights, so the directory always has one
        update_run_info(self.path, status="running", message=None)

    def on_epoch_end(self, trainer: "Trainer", record: "EpochRecord") -> None:
        value = record.values().get(self.monitor)
        improved = value is not None and better(self.mode, value, self.best, 0.0)
        if improved:
            self.best, self.best_epoch = value, record.epoch
        self.write_history(trainer)
        if improved:
            arrays, meta = trainer.checkpoint()
            meta.update(layout=layout(trainer.program.params), state_layout=state_layout(trainer.program.params),
                        dtype=str(trainer.program.params.dtype), monitor=self.monitor, best=value,
                        best_epoch=record.epoch)
            save_checkpoint(self.path / BEST, {"params": arrays["params"], "state": arrays["state"]}, meta)
        if record.epoch % self.every == 0 or record.epoch >= self.epochs or trainer.stop_training:
            self.save(trainer)

    def on_interrupt(self, trainer: "Trainer", signal_name: str) -> None:
        self.save(trainer)
        update_run_info(self.path, status="interrupted", message=f"{signal_name} at epoch {trainer.epoch + 1}, "
                        f"batch {trainer.batch}")

    def on_diverged(self, trainer: "Trainer", error: Exception) -> None:
        update_run_info(self.path, status="diverged", message=str(error))

    def on_train_end(self, trainer: "Trainer") -> None:
        self.write_history(trainer, durable=True)  # a finished run's history survives a power loss
        self.save(trainer, finished=True)
        update_run_info(self.path, status="completed", message=None)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
