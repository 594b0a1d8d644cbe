"""``nngraph evaluate``: an exported model run through onnxruntime on a dataset, with every metric."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data import _all_finite, load_source
from ..errors import DataError
from .metrics import summarize


def evaluate_onnx(model_path: str | Path, data: str, targets: str | None = None, split: str = "auto",
                  top_k: int = 5, batch_size: int = 1024) -> dict[str, Any]:
    """Loss (the spec's, from the model's metadata), accuracy, top-k accuracy, MSE, MAE and, for a
    classifier, the confusion matrix of an ONNX model's predictions made by onnxruntime."""
    from ..model import Model
    from ..runtime import run, session

    ds = load_source(data, {"y": targets} if targets else None)
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
    model = Model.load_onnx(model_path)
    sess = session(model_path)
    feeds = x if isinstance(x, dict) else {"": x}
    n = len(y)
    outs = []
    for start in range(0, n, batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in feeds.items()}
        outs.append(run(model_path, chunk[""] if "" in chunk else chunk, sess=sess))
    out = np.concatenate(outs) if outs else np.zeros((0,))
    t = model.targets(y)
    res: dict[str, Any] = {"split": "test" if use_test else "train"}
    loss = model.loss
    grad = np.empty_like(out)
    res["loss"] = float(loss.compute(np.ascontiguousarray(out, model.params.dtype), t, grad, model._loss_fused()))
    res.update(summarize(out, t, loss.metric, top_k))
    return {"samples": res.pop("samples"), **res}
