"""The training history: one record per epoch (what history.csv/json, the progress lines and the
plots show)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class EpochRecord:
    """One row of the training history."""

    epoch: int
    loss: float
    metric: float | None
    val_loss: float | None
    val_metric: float | None
    lr: float
    seconds: float
    samples_per_s: float
    extras: dict[str, float | None] = field(default_factory=dict)  # val_top_k_accuracy, val_mae ...
    elapsed: float = 0.0  # training wall time since the run began (summed over resumes)
    metric_name: str | None = None

    def values(self) -> dict[str, Any]:
        """The row as history columns: epoch, loss, accuracy, val_loss, val_accuracy, ..., lr, time."""
        d: dict[str, Any] = {"epoch": self.epoch, "loss": self.loss}
        if self.metric_name and self.metric is not None:
            d[self.metric_name] = self.metric
        if self.val_loss is not None:
            d["val_loss"] = self.val_loss
        if self.metric_name and self.val_metric is not None:
            d["val_" + self.metric_name] = self.val_metric
        d.update(self.extras)
        d.update(lr=self.lr, seconds=self.seconds, samples_per_s=self.samples_per_s, elapsed=self.elapsed)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpochRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class History:
    """Per-epoch records of a fit, plus the name of the metric ('accuracy', ...)."""

    metric_name: str | None
    records: list[EpochRecord] = field(default_factory=list)
    # (record, asdict, values) of the records converted so far: a run directory saves the whole
    # history every epoch, and converting all of it each time made a 400-epoch digits_mlp run
    # quadratic (5 of its 10.6 s in dataclasses.asdict). Records are complete when appended.
    _converted: list[tuple[EpochRecord, dict[str, Any], dict[str, Any]]] = field(
        default_factory=list, repr=False, compare=False)

    def _sync(self) -> list[tuple[EpochRecord, dict[str, Any], dict[str, Any]]]:
        done = self._converted
        n = 0
        while n < len(done) and n < len(self.records) and done[n][0] is self.records[n]:
            n += 1
        del done[n:]
        done.extend((r, asdict(r), r.values()) for r in self.records[n:])
        return done

    def as_dicts(self) -> list[dict[str, Any]]:
        """Each record as a dict (all its fields), for checkpoints; treat as read-only."""
        return [d for _, d, _ in self._sync()]

    def rows(self) -> list[dict[str, Any]]:
        """Each epoch as its history columns (see :meth:`EpochRecord.values`); treat as read-only."""
        return [v for _, _, v in self._sync()]

    @property
    def last(self) -> EpochRecord:
        return self.records[-1]
