"""``nngraph evaluate``: an ONNX model run through onnxruntime on a dataset, with every metric.

An nngraph model brings its loss and how its data is read (a series' windowing, target column and
normalization, class labels) in its metadata; any other ONNX model is evaluated with ``loss``
(or ``task``), by default inferred from its output: one value per sample is a regression (mse),
several a classification (cross-entropy, on probabilities when every row is a distribution, else
on logits).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data import _all_finite, load_source
from ..errors import DataError
from .metrics import summarize

TASKS = {"regression": "mse", "classification": "cross_entropy", "binary": "binary_cross_entropy"}
FILE_KEYS = ("train", "y", "test", "y_test")  # where the data is: the command line says


def infer_loss(out: np.ndarray) -> str:
    """The loss for an output without nngraph metadata: mse for one value per sample, else
    cross-entropy."""
    return "mse" if out.ndim == 1 or out.shape[-1] == 1 else "cross_entropy"


def _probabilities(out: np.ndarray, loss: str) -> bool:
    """Whether outputs already went through the loss's activation (softmax/sigmoid), or are logits."""
    if out.size == 0 or np.any(out < 0) or np.any(out > 1):
        return False
    if loss == "cross_entropy":
        return bool(np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))
    return True


def evaluate_onnx(model_path: str | Path, data: str, targets: str | None = None, split: str = "auto",
                  top_k: int = 5, batch_size: int = 1024, loss: str | None = None,
                  task: str | None = None) -> dict[str, Any]:
    """Loss, accuracy, top-k accuracy, MSE, MAE and, for a classifier, the confusion matrix of an
    ONNX model's predictions made by onnxruntime. For an nngraph model the loss is the spec's
    (``loss`` overrides it) and ``data`` is read the way the model's spec reads it; for any other
    model ``loss`` or ``task`` (regression, classification, binary) or the output's shape decides.
    Regression metrics are in the units of the data's targets."""
    from ..onnx_io.importer import metadata_json, read_model
    from ..ops.losses import get_loss
    from ..runtime import run, session

    if task is not None and task not in TASKS:
        raise DataError(f"unknown task {task!r} (choose {', '.join(TASKS)})")
    meta = {p.key: p.value for p in read_model(model_path).metadata_props}
    model = None
    options: dict[str, Any] = {}
    if "nngraph.spec" in meta:
        from ..model import Model

        from ..quantize import META_KEY

        model = Model.load_onnx(model_path, weights=META_KEY not in meta)  # int8: the spec only
        # read the data as the model was trained: windowing, target column, normalization, labels
        options = {k: v for k, v in (model.spec.data_dict() or {}).items() if k not in FILE_KEYS}
        if metadata_json(meta, "classes") is not None:
            options["classes"] = list(metadata_json(meta, "classes"))
    if targets:
        options["y"] = targets
    ds = load_source(data, options)
    use_test = split == "test" or (split == "auto" and ds.x_test is not None)
    if use_test and ds.x_test is None:
        raise DataError(f"{data}: has no test part (use --split train)")
    x, y = (ds.x_test, ds.y_test) if use_test else (ds.x, ds.y)
    if len(y) == 0:
        raise DataError(f"{data}: the {'test' if use_test else 'training'} part has no samples to evaluate")
    for name, a in (x if isinstance(x, dict) else {"x": x}).items():
        if a.dtype.kind == "f" and not _all_finite(a):
            # onnxruntime would happily report "loss nan": a metric of garbage is not a result
            raise DataError(f"{data}: input {name!r} contains NaN or Inf")
    target_norm = ds.meta.get("target_normalization")
    if target_norm and (model is None or model.metadata.get("target_normalization")):
        # the data's targets were standardised; the model answers in target units: compare in those
        y = np.asarray(y, np.float64) * target_norm["std"] + target_norm["mean"]
    sess = session(model_path)
    feeds = x if isinstance(x, dict) else {"": x}
    n = len(y)
    outs = []
    for start in range(0, n, batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in feeds.items()}
        outs.append(run(model_path, chunk[""] if "" in chunk else chunk, sess=sess))
    out = np.concatenate(outs) if outs else np.zeros((0,))
    if out.ndim == 1:
        out = out.reshape(-1, 1)
    out = np.ascontiguousarray(out, np.float32)
    name = loss or (TASKS[task] if task else None) or (model.spec.loss if model is not None else infer_loss(out))
    lossdef = get_loss(name)
    t = lossdef.prepare_targets(np.asarray(y), out.shape[1:])
    if t.dtype.kind == "f":
        t = np.ascontiguousarray(t, np.float32)
        if not np.all(np.isfinite(t)):
            raise DataError(f"{data}: targets contain NaN or Inf")
    if model is not None and name == model.spec.loss:
        fused = model._loss_fused()
    else:
        fused = lossdef.fuses_with is not None and _probabilities(out, name)
    res: dict[str, Any] = {"split": "test" if use_test else "train", "loss_function": name}
    res["loss"] = float(lossdef.compute(out, t, np.empty_like(out), fused))
    res.update(summarize(out, t, lossdef.metric, top_k))
    return {"samples": res.pop("samples"), **res}
