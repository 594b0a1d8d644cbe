"""int8 exports: onnxruntime's static quantization in QDQ form, calibrated on the training data.

``quantize_file(float.onnx, int8.onnx, calibration)`` writes the float32 export with its Conv, Gemm
and MatMul weights stored as int8 (per output channel, symmetric) and their input activations
quantized to uint8 (per tensor, from the calibration sample's min/max), as plain
QuantizeLinear/DequantizeLinear pairs around float operators: the standard ONNX form every
runtime runs (onnxruntime fuses the pairs into int8 kernels; OpenVINO and tract run them too).
Everything else (activations, pooling, normalization, softmax, recurrent layers) stays float32;
``inspect`` lists both sides from the metadata.

Recurrent layers: a portable int8 LSTM does not exist in ONNX. ``dynamic_recurrent`` quantizes
LSTM weights dynamically into onnxruntime's contrib op ``com.microsoft.DynamicQuantizeLSTM`` (GRU
and RNN have none): such a file runs on onnxruntime only, and its metadata says so.

The metadata keeps the float32 parent's (spec, preprocessing, labels, test metrics) and adds
``nngraph.quantization``: format, calibration sample (count, seed, SHA-256 of its bytes), the float
parent's file hash and test metrics, and the quantized / float32 operator lists.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, ExportError

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
META_KEY = "nngraph.quantization"
DEFAULT_CALIBRATION = 256
CALIBRATION_BATCH = 64


def calibration_sample(x: np.ndarray | dict[str, np.ndarray], n: int = DEFAULT_CALIBRATION,
                       seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """A fixed, seeded sample of ``n`` rows of the training inputs (all when fewer), in row order,
    and the SHA-256 of its bytes."""
    feeds = x if isinstance(x, dict) else {"x": x}
    total = len(next(iter(feeds.values())))
    if n < 1:
        raise DataError(f"--calibration-samples must be at least 1 (got {n})")
    rows = np.sort(np.random.default_rng(seed).permutation(total)[:n]) if n < total else np.arange(total)
    sample = {k: np.ascontiguousarray(np.asarray(v)[rows]) for k, v in feeds.items()}
    h = hashlib.sha256()
    for k in sorted(sample):
        h.update(k.encode())
        h.update(sample[k].tobytes())
    return sample, h.hexdigest()


def _reader(feeds: dict[str, np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    n = len(next(iter(feeds.values())))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{k: v[i:i + CALIBRATION_BATCH] for k, v in feeds.items()}
                                  for i in range(0, n, CALIBRATION_BATCH)])

        def get_next(self):
            return next(self._batches, None)
    return Reader()


def _op_lists(model) -> tuple[list[str], list[str]]:
    """(quantized, float32) weight-carrying nodes, as "name (OpType)": a Conv/Gemm/MatMul is
    quantized when its weight comes out of a DequantizeLinear; DynamicQuantizeLSTM is quantized."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    quantized, kept = [], []
    for n in model.graph.node:
        label = f"{n.name or n.output[0]} ({n.op_type})"
        if n.op_type == "DynamicQuantizeLSTM":
            quantized.append(label)
        elif n.op_type in QUANTIZED_OPS:
            w = made_by.get(n.input[1]) if len(n.input) > 1 else None
            (quantized if w is not None and w.op_type == "DequantizeLinear" else kept).append(label)
        elif n.op_type in RECURRENT_OPS:
            kept.append(label)
    return quantized, kept


def _compact(model) -> None:
    """Drop initializers no node reads (a normalize shift the quantizer folded away) and the
    inferred value_info (optional; tract trips on its symbolic batch), and store every initializer
    as raw bytes (numpy_helper writes small int8 tensors as 4-byte varints). The weights' zero
    points stay although they are all 0: without them onnxruntime does not fuse the QDQ pairs into
    int8 kernels (digits_cnn at batch 64: 0.55 ms with them, 0.78 without, float32 0.53)."""
    from onnx import numpy_helper

    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.value_info[:]
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(numpy_helper.to_array(t), t.name) for t in keep)


def quantize_file(float_path: str | Path, out_path: str | Path, calibration: dict[str, np.ndarray],
                  calibration_hash: str, *, seed: int = 0, dynamic_recurrent: bool = False) -> dict[str, Any]:
    """Write the int8 (QDQ) version of the float32 export ``float_path`` to ``out_path``
    (atomically), calibrated on ``calibration`` (input name -> rows); returns the metadata entry."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from .fileio import atomic_write_bytes
    from .onnx_io.importer import read_model

    parent = read_model(float_path)
    ops = {n.op_type for n in parent.graph.node}
    if not ops & set(QUANTIZED_OPS) and not (dynamic_recurrent and "LSTM" in ops):
        raise ExportError(f"{float_path}: nothing to quantize (no Conv, Gemm or MatMul"
                          + (", no LSTM" if dynamic_recurrent else "") + ")")
    if dynamic_recurrent and not ops & set(RECURRENT_OPS):
        raise ExportError("--dynamic-recurrent: the model has no recurrent layer")
    if dynamic_recurrent and ops & {"GRU", "RNN"} and "LSTM" not in ops:
        raise ExportError("--dynamic-recurrent: onnxruntime quantizes LSTM only (this model has "
                          + ", ".join(sorted(ops & {"GRU", "RNN"})) + "); export it without the flag")
    meta = {p.key: p.value for p in parent.metadata_props}
    import onnxruntime as ort

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice ("consider pre-processing") on stderr
    # and onnxruntime's own log lines from the calibration session (e.g. "Removing initializer ..."):
    # stderr is progress and one error line (as runtime.session does)
    ort.set_default_logger_severity(4)
    with tempfile.TemporaryDirectory(prefix="nngraph-quantize-") as d:
        static = Path(d) / "static.onnx"
        try:
            quantize_static(str(float_path), str(static), _reader(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
            final = static
            if dynamic_recurrent:
                final = Path(d) / "dynamic.onnx"
                quantize_dynamic(str(static), str(final), op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
        except (ExportError, DataError):
            raise
        except Exception as e:  # onnxruntime's quantizer raises plain exceptions
            raise ExportError(f"{float_path}: onnxruntime's quantizer failed ({type(e).__name__}: {e})") from None
        finally:
            logging.getLogger().setLevel(quiet)
        model = onnx.load(str(final))
    _compact(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"the int8 model fails onnx.checker: {e}") from None
    quantized, kept = _op_lists(model)
    info = {
        "format": "QDQ (QuantizeLinear/DequantizeLinear)",
        "weights": "int8, per output channel, symmetric",
        "activations": "uint8, per tensor, min/max calibration",
        "calibration": {"samples": int(len(next(iter(calibration.values())))), "seed": seed,
                        "sha256": calibration_hash},
        "parent": {"sha256": hashlib.sha256(Path(float_path).read_bytes()).hexdigest(),
                   "test_metrics": json.loads(meta["nngraph.test_metrics"]) if "nngraph.test_metrics" in meta
                   else None},
        "quantized": quantized,
        "float32": kept,
        "onnxruntime_only": any("DynamicQuantizeLSTM" in q for q in quantized),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        if k != META_KEY:
            model.metadata_props.add(key=k, value=v)
    model.metadata_props.add(key=META_KEY, value=json.dumps(info))
    atomic_write_bytes(out_path, model.SerializeToString())
    return info


def quantization_lines(meta: dict[str, str]) -> list[str]:
    """``inspect``'s description of a quantized file's metadata entry (nothing for float files)."""
    if META_KEY not in meta:
        return []
    try:
        q = json.loads(meta[META_KEY])
        cal = q["calibration"]
        lines = ["quantization:", f"  {q['format']}; weights {q['weights']}; activations {q['activations']}",
                 f"  calibrated on {cal['samples']} training samples (seed {cal['seed']}, SHA-256 "
                 f"{cal['sha256'][:16]}...)",
                 f"  quantized: {', '.join(q['quantized']) or 'none'}",
                 f"  float32: {', '.join(q['float32']) or 'none'} (and every operator without weights)"]
        if q.get("onnxruntime_only"):
            lines.append("  runs on onnxruntime only: DynamicQuantizeLSTM is an onnxruntime contrib operator")
        parent = q.get("parent") or {}
        if parent.get("test_metrics"):
            lines.append("  float32 parent's test metrics: " + ", ".join(f"{k} {v}" for k, v in
                                                                       parent["test_metrics"].items()))
        return lines
    except (ValueError, KeyError, TypeError, AttributeError):
        return ["quantization: (unreadable metadata)"]


def _calibration_feeds(model, x, n: int, seed: int) -> tuple[dict[str, np.ndarray], str]:
    """The seeded sample of the training inputs ``x``, as the exported model's inputs (float32 /
    int64)."""
    feeds = model._feeds(x)
    total = len(next(iter(feeds.values())))
    rows = np.sort(np.random.default_rng(seed).permutation(total)[:n]) if n < total else np.arange(total)
    picked = {}
    for name, v in feeds.items():
        a = np.take(v, rows, axis=0)
        picked[name] = a.astype(np.int64 if model.graph.values[name].dtype == "int64" else np.float32)
    return calibration_sample(picked, len(rows), seed)


def quantize_model(model, x, out_path: str | Path, *, samples: int = DEFAULT_CALIBRATION, seed: int = 0,
                   dynamic_recurrent: bool = False, opset: int | None = None,
                   fold_batchnorm: bool = False) -> dict[str, Any]:
    """Export ``model`` (float32, with its metadata) and write its int8 QDQ version to ``out_path``,
    calibrated on ``samples`` seeded rows of its training inputs ``x``."""
    if samples < 1:
        raise DataError(f"--calibration-samples must be at least 1 (got {samples})")
    feeds, digest = _calibration_feeds(model, x, samples, seed)
    with tempfile.TemporaryDirectory(prefix="nngraph-float-") as d:
        float_path = Path(d) / "float32.onnx"
        model.export_onnx(float_path, opset, fold_batchnorm)
        return quantize_file(float_path, out_path, feeds, digest, seed=seed, dynamic_recurrent=dynamic_recurrent)


def quantize_run(run_dir: str | Path, out_path: str | Path, *, best: bool = False, samples: int = DEFAULT_CALIBRATION,
                 seed: int = 0, dynamic_recurrent: bool = False, opset: int | None = None,
                 fold_batchnorm: bool = False, explicit_states: bool = False) -> dict[str, Any]:
    """``nngraph export RUN --quantize int8``: the run's latest (or best) checkpoint, calibrated on
    its own training data (read again from where the run recorded it; its SHA-256 must match)."""
    from .train import rundir as R
    from .workflow import load_data, run_model

    model, _ = run_model(run_dir, best=best)
    if explicit_states:
        model.metadata["explicit_states"] = True
    run = R.open_run(run_dir)
    info = run.info
    base_dir = Path(info["base_dir"]) if info.get("base_dir") else None
    ds = load_data(R.run_spec(run), info.get("data"), base_dir, info.get("targets"))
    if info.get("data_sha256") and R.data_sha256(ds.x, ds.y) != info["data_sha256"]:
        raise DataError(f"{run.path}: the training data changed since the run (SHA-256 differs); the "
                        "calibration sample must come from the data the run trained on")
    return quantize_model(model, ds.x, out_path, samples=samples, seed=seed, dynamic_recurrent=dynamic_recurrent,
                          opset=opset, fold_batchnorm=fold_batchnorm)


def describe_result(path: str | Path, info: dict[str, Any]) -> str:
    """One line on what a quantized export holds."""
    n_q, n_f = len(info["quantized"]), len(info["float32"])
    kept = f"; float32: {', '.join(info['float32'])}" if n_f else ""
    only = "; onnxruntime only (DynamicQuantizeLSTM)" if info["onnxruntime_only"] else ""
    return (f"wrote {path} (int8 QDQ: {n_q} of {n_q + n_f} weight layers quantized, calibrated on "
            f"{info['calibration']['samples']} training samples{kept}{only})")
