"""History of a run as a text table and as a PNG of its curves (matplotlib, an optional extra)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NNGraphError
from ..fileio import atomic_write_bytes
from .progress import fmt

if TYPE_CHECKING:
    from .rundir import Run


class MissingExtra(NNGraphError):
    """An optional dependency is not installed."""


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def format_table(run: "Run") -> str:
    """The run's epochs as an aligned table, the best epoch marked with '*', and a status line."""
    rows = run.rows
    head = f"{run.path}: {run.info.get('status', '?')}"
    if run.info.get("message"):
        head += f" ({run.info['message']})"
    if not rows:
        return head + "\nno finished epoch yet"
    cols = _columns(rows)
    monitor = (run.checkpoint[1].get("monitor") if run.checkpoint else None) or "loss"
    best = run.checkpoint[1]["callbacks"].get("run_dir", {}).get("best_epoch") if run.checkpoint else None

    def cell(c: str, v: Any) -> str:
        if v is None:
            return "-"
        if c == "lr":
            return f"{v:.3g}"
        if c in ("seconds", "elapsed"):
            return f"{v:.2f}"
        if c == "samples_per_s":
            return f"{v:,.0f}"
        return fmt(v) if isinstance(v, float) else str(v)

    table = [[c for c in cols]] + [[cell(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    lines = [head, f"monitor: {monitor}" + (f", best epoch {best}" if best else "")]
    for j, t in enumerate(table):
        mark = "*" if j > 0 and rows[j - 1].get("epoch") == best else " "
        lines.append(mark + "  ".join(v.rjust(w) for v, w in zip(t, widths)))
    return "\n".join(lines)


def plot_history(run: "Run", path: str | Path) -> Path:
    """Write a PNG: loss (train/validation), the metric (train/validation), the learning rate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("plotting needs matplotlib, an optional extra: pip install 'nngraph[plot]' "
                           "(or pip install matplotlib)") from None
    rows = run.rows
    if not rows:
        raise NNGraphError(f"{run.path}: no finished epoch to plot yet")
    cols = _columns(rows)
    ep = [r["epoch"] for r in rows]
    metrics = [c for c in cols if c not in ("epoch", "loss", "val_loss", "lr", "seconds", "samples_per_s",
                                            "elapsed") and not c.startswith("val_")]
    panels = 2 + bool(metrics)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), dpi=100)

    def series(ax: Any, name: str, label: str, style: str = "-") -> None:
        pts = [(e, r[name]) for e, r in zip(ep, rows) if r.get(name) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", markersize=3, label=label)

    ax = axes[0]
    series(ax, "loss", "train")
    series(ax, "val_loss", "validation", "--")
    best = run.checkpoint[1]["callbacks"].get("run_dir", {}).get("best_epoch") if run.checkpoint else None
    if best:
        ax.axvline(best, color="grey", lw=0.8, ls=":", label=f"best (epoch {best})")
    ax.set(title="loss", xlabel="epoch")
    ax.legend()
    if metrics:
        ax = axes[1]
        for m in metrics:
            series(ax, m, f"train {m}")
            series(ax, f"val_{m}", f"validation {m}", "--")
        for c in cols:
            if c.startswith("val_") and c not in ("val_loss",) and c[4:] not in metrics:
                series(ax, c, c.replace("val_", "validation "), ":")
        ax.set(title=", ".join(metrics), xlabel="epoch")
        ax.legend()
    ax = axes[-1]
    series(ax, "lr", "learning rate")
    ax.set(title="learning rate", xlabel="epoch")
    if len({r["lr"] for r in rows}) > 1 and min(r["lr"] for r in rows) > 0:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    if len({r["lr"] for r in rows}) == 1:
        axes[-1].set_ylim(0, 2 * rows[0]["lr"])
    fig.suptitle(f"{run.path.name}: {Path(run.info.get('spec_file') or 'spec').stem}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
