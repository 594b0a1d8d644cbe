"""A sweep's results: one row per planned trial, read back from the trial directories.

Each trial is an ordinary run directory (``trials/trial_007``) with a record beside it
(``trials/trial_007.json``: its parameters, status, error, wall time). The leaderboard is rebuilt from those files, so it is right
after a crash, a resume, or trials that ran on other machines of a cluster. Ranking: trials with a
value of the metric first, best first (``mode``), then errors, then trials not run yet.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text
from ..train.rundir import HISTORY_JSON, RUN


STATUSES = ("finished", "stopped", "error", "running", "pending")


def trial_name(i: int, n: int) -> str:
    return f"trial_{i:0{max(3, len(str(n - 1)))}d}"


def record_path(trial_dir: Path) -> Path:
    """The trial's record (values, status, error, seconds) beside its run directory:
    trials/trial_007.json for trials/trial_007/, which stays an ordinary run directory."""
    return trial_dir.with_name(trial_dir.name + ".json")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def trial_status(trial_dir: Path) -> str:
    """finished / stopped / error from trial.json; else finished if the run says so (the driver
    died before recording it), running if the run started, pending if it never did."""
    rec = read_json(record_path(trial_dir)) or {}
    if rec.get("status") in ("finished", "stopped", "error"):
        return rec["status"]
    run = read_json(trial_dir / RUN) or {}
    if run.get("status") == "completed":
        return "finished"
    return "running" if run else "pending"


def _history(trial_dir: Path) -> list[dict[str, Any]]:
    h = read_json(trial_dir / HISTORY_JSON) or {}
    rows = h.get("epochs", [])
    return [r for r in rows if isinstance(r, dict)]


@dataclass
class Leaderboard:
    """The ranked trials of a sweep; ``best`` is the best trial's run directory (None if no trial
    has a value of the metric)."""

    metric: str
    mode: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: Path | None = None
    params: list[str] = field(default_factory=list)  # the swept paths

    def table(self) -> str:
        """The leaderboard as aligned text."""
        params = self.params
        head = ["rank", "trial", *params, self.metric, "epoch", "epochs", "status", "seconds"]
        body = []
        for k, r in enumerate(self.rows, 1):
            value = r["best_metric"]
            body.append([str(k) if value is not None else "-", r["trial"],
                         *(_short(r["params"].get(p)) for p in params),
                         f"{value:.5g}" if value is not None else "-",
                         str(r["best_epoch"] or "-"), str(r["epochs"]),
                         r["status"] + (f": {r['error']}" if r.get("error") else ""),
                         f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-"])
        return format_table(head, body)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if not isinstance(v, str) else v


def format_table(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines)


def collect(sweep_dir: Path, plan: list[dict[str, Any]], metric: str, mode: str, params: list[str]) -> Leaderboard:
    """Read every planned trial's directory and rank them."""
    rows = []
    for i, params in enumerate(plan):
        name = trial_name(i, len(plan))
        d = sweep_dir / "trials" / name
        rec = read_json(record_path(d)) or {}
        hist = _history(d)
        values = [(r.get(metric), r.get("epoch")) for r in hist]
        values = [(v, e) for v, e in values if isinstance(v, (int, float)) and math.isfinite(v)]
        best = (max if mode == "max" else min)(values, key=lambda t: t[0]) if values else None
        run = read_json(d / RUN) or {}
        seconds = rec.get("seconds")
        if seconds is None and hist:
            seconds = hist[-1].get("elapsed")
        rows.append({"trial": name, "params": params, "best_metric": best[0] if best else None,
                     "best_epoch": best[1] if best else None, "epochs": len(hist), "status": trial_status(d),
                     "error": rec.get("error"), "seconds": seconds, "run_dir": f"trials/{name}",
                     "test_metrics": run.get("test_metrics")})
    sign = -1 if mode == "max" else 1
    order = {"finished": 0, "stopped": 0, "running": 0, "error": 1, "pending": 2}
    rows.sort(key=lambda r: (r["best_metric"] is None, order[r["status"]] if r["best_metric"] is None else 0,
                             sign * r["best_metric"] if r["best_metric"] is not None else 0, r["trial"]))
    best = sweep_dir / rows[0]["run_dir"] if rows and rows[0]["best_metric"] is not None else None
    return Leaderboard(metric, mode, rows, best, list(params))


def write(sweep_dir: Path, board: Leaderboard) -> None:
    """leaderboard.csv, leaderboard.json and the ``best`` link, each replaced atomically."""
    params = board.params
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["rank", "trial", *params, "best_" + board.metric, "best_epoch", "epochs", "status", "seconds",
                "error", "run_dir"])
    for k, r in enumerate(board.rows, 1):
        w.writerow([k if r["best_metric"] is not None else "", r["trial"],
                    *(json.dumps(r["params"].get(p)) if not isinstance(r["params"].get(p), str) else r["params"][p]
                      for p in params),
                    "" if r["best_metric"] is None else repr(float(r["best_metric"])), r["best_epoch"] or "",
                    r["epochs"], r["status"], "" if r["seconds"] is None else round(r["seconds"], 3),
                    r.get("error") or "", r["run_dir"]])
    atomic_write_text(sweep_dir / "leaderboard.csv", out.getvalue())
    doc = {"metric": board.metric, "mode": board.mode, "params": params,
           "best": None if board.best is None else board.best.relative_to(sweep_dir).as_posix(),
           "trials": board.rows}
    atomic_write_text(sweep_dir / "leaderboard.json", json.dumps(doc, indent=1) + "\n")
    link = sweep_dir / "best"
    if board.best is None:
        if link.is_symlink():
            link.unlink()
        return
    tmp = sweep_dir / ".best.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(board.best.relative_to(sweep_dir), tmp)  # relative: the sweep folder can move
    os.replace(tmp, link)
