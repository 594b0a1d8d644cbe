"""The end-to-end job behind ``nngraph train``: spec + data -> trained Model -> ONNX, as one API call."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .data import Dataset, load_source
from .errors import DataError
from .model import Model
from .spec import Spec, load_spec
from .train.trainer import EpochRecord, History


def load_data(spec: Spec, source: str | None = None, base_dir: Path | None = None,
              targets: str | None = None) -> Dataset:
    """The dataset a spec trains on: ``source`` (a CLI --data) overrides the spec's ``data``."""
    options = spec.data_dict() or {}
    if source is not None:
        options = {"train": source, **({"target": options["target"]} if "target" in options else {})}
    if targets is not None:
        options["y"] = targets
    if not options.get("train"):
        raise DataError(f"spec {spec.name!r} names no data; give --data (a file, a folder or a built-in "
                        "name such as digits)")
    return load_source(options["train"], options, base_dir)


@dataclass
class TrainResult:
    model: Model
    history: History
    test: dict[str, float] | None
    dataset: Dataset
    output: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def format_record(rec: EpochRecord, metric: str | None, epochs: int) -> str:
    """One progress line for an epoch."""
    parts = [f"epoch {rec.epoch:>{len(str(epochs))}}/{epochs}", f"loss {rec.loss:.4f}"]
    if metric and rec.metric is not None:
        parts.append(f"{metric} {rec.metric:.4f}")
    if rec.val_loss is not None:
        parts.append(f"val_loss {rec.val_loss:.4f}")
    if metric and rec.val_metric is not None:
        parts.append(f"val_{metric} {rec.val_metric:.4f}")
    parts.append(f"{rec.samples_per_s:,.0f} samples/s")
    return "  ".join(parts)


def train(spec: Spec | str | Path, *, data: str | None = None, targets: str | None = None,
          output: str | Path | None = None, init: str | Path | None = None, epochs: int | None = None,
          opset: int | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a spec on its data (or ``data``), report test metrics, optionally write ONNX.

    ``init`` starts from the weights of an nngraph-exported ONNX model of the same architecture.
    """
    base_dir = None
    if not isinstance(spec, Spec):
        base_dir = Path(spec).resolve().parent
        spec = load_spec(spec)
    log = log or (lambda s: print(s, file=sys.stderr))
    ds = load_data(spec, data, base_dir, targets)
    model = Model.compile(spec)
    if init is not None:
        src = Model.load_onnx(init)
        model.load_weights(src.params.as_dict(copy=False), source=str(init))
        log(f"initial weights from {init}")
    n_epochs = spec.train.epochs if epochs is None else epochs
    metric = model.loss.metric
    every = max(1, n_epochs // 20)  # at most ~20 progress lines however long the run

    def on_epoch(rec: EpochRecord) -> None:
        if rec.epoch == 1 or rec.epoch % every == 0 or rec.epoch == n_epochs:
            log(format_record(rec, metric, n_epochs))

    history = model.fit(ds.x, ds.y, epochs=n_epochs, on_epoch=on_epoch)
    test = None
    if ds.x_test is not None:
        test = model.evaluate(ds.x_test, ds.y_test)
        log("test: " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()))
    model.metadata.update({k: v for k, v in ds.meta.items()})
    if test is not None:
        model.metadata["test_metrics"] = {k: round(v, 6) for k, v in test.items()}
    written = model.export_onnx(output, opset) if output is not None else None
    if written is not None:
        log(f"wrote {written}")
    return TrainResult(model, history, test, ds, written)
