"""onnxruntime: run inference on exported models, and verify them against the Numba forward pass."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, ExportError

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64}


def session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session (``threads`` 0 lets onnxruntime choose)."""
    import onnxruntime as ort

    from .onnx_io.importer import check_model_file

    p = Path(path)
    check_model_file(p)
    # errors only, for the session and for onnxruntime's process-wide logger (which prints its
    # own "[W:onnxruntime:...]" lines on stderr): a command's stderr is progress and one error line
    ort.set_default_logger_severity(4)  # fatal only: a load error reaches the user as our one line
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 4
    try:
        return ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad models
        raise ExportError(f"{p}: onnxruntime cannot load the model ({e})") from None


def input_specs(sess) -> list[tuple[str, tuple, Any]]:
    """(name, shape with None for dynamic axes, numpy dtype) for each model input."""
    out = []
    try:
        for i in sess.get_inputs():
            shape = tuple(d if isinstance(d, int) else None for d in i.shape)
            out.append((i.name, shape, _ORT_TYPES.get(i.type, np.float32)))
    except UnicodeDecodeError:  # a name (or type string) that is not UTF-8: a corrupt file
        raise ExportError("the model's input names are not valid UTF-8 (a corrupt file)") from None
    return out


def _max_time_length(sess) -> int | None:
    """The longest sequence an nngraph export accepts on its dynamic time axis (positional
    embeddings' max_length, ``nngraph.max_time_length`` in the metadata), or None."""
    try:
        raw = sess.get_modelmeta().custom_metadata_map.get("nngraph.max_time_length")
        return int(raw) if raw is not None else None
    except (ValueError, UnicodeDecodeError):  # a hand-edited or corrupt value: onnxruntime decides
        return None


def run(path: str | Path, inputs: np.ndarray | dict[str, np.ndarray], sess=None) -> np.ndarray:
    """Run a model on a batch in onnxruntime; returns its (first) output."""
    sess = sess or session(path)
    specs = input_specs(sess)
    if not isinstance(inputs, dict):
        if len(specs) != 1:
            raise DataError(f"the model has {len(specs)} inputs ({', '.join(s[0] for s in specs)}); "
                            "give one array per input")
        inputs = {specs[0][0]: inputs}
    limit = _max_time_length(sess)
    feeds = {}
    for name, shape, dtype in specs:
        if name not in inputs:
            raise DataError(f"missing input {name!r} (given: {', '.join(inputs)})")
        a = np.asarray(inputs[name])
        fixed = shape[1:]
        if len(fixed) and a.ndim >= 1 and tuple(a.shape[1:]) != fixed and all(d is not None for d in fixed):
            if int(np.prod(a.shape[1:])) == int(np.prod(fixed)):
                a = a.reshape((len(a),) + fixed)  # e.g. (N, 64) images for a (N, 1, 8, 8) input
            else:
                raise DataError(f"input {name!r}: each sample has shape {tuple(a.shape[1:])}, "
                                f"the model expects {fixed}")
        if np.issubdtype(dtype, np.integer):
            if a.dtype.kind not in "iu":
                raise DataError(f"input {name!r}: expected integer ids, got dtype {a.dtype}")
            if a.size and a.dtype.kind == "i" and int(a.min()) < 0:
                raise DataError(f"input {name!r}: negative token id {int(a.min())}")
        elif a.dtype.kind not in "fiub":  # complex, datetime, strings, bytes: never cast silently
            raise DataError(f"input {name!r}: expected real numbers, got dtype {a.dtype}")
        if a.ndim == 0:
            raise DataError(f"input {name!r}: expected an array of samples, got a scalar")
        if limit is not None and len(shape) >= 2 and shape[1] is None and a.ndim >= 2 and a.shape[1] > limit:
            raise DataError(f"input {name!r}: sequence length {a.shape[1]} exceeds the model's max_length {limit}")
        feeds[name] = np.ascontiguousarray(a, dtype)
    try:
        return sess.run(None, feeds)[0]
    except Exception as e:
        raise DataError(f"onnxruntime failed on the input: {e}") from None


def read_inputs(path: str | Path, mmap: bool = False) -> Any:
    """Model inputs from a file: .npy (memory-mapped with ``mmap``: rows are read as they are
    used), .npz (all arrays by name; a lone array or 'x' for single-input models) or .csv (every
    column is an input)."""
    from .data import load_npy, load_npz
    from .data.arrays import map_npy
    from .data.csvfile import read_table
    from .fileio import check_user_file

    p = Path(path)
    check_user_file(p, "input file")
    name = p.name.lower()
    suffix = ".csv" if name.endswith(".csv.gz") else p.suffix.lower()
    if suffix == ".npy":
        out = map_npy(p) if mmap else load_npy(p)
    elif suffix == ".npz":
        arrays = load_npz(p)
        out = next(iter(arrays.values())) if set(arrays) == {"x"} or len(arrays) == 1 else arrays
    elif suffix == ".csv":
        out = read_table(p)[0]  # every column is an input here
    else:
        raise DataError(f"{p}: unsupported input format {suffix!r} (use .npy, .npz or .csv)")
    for arr in (out.values() if isinstance(out, dict) else [out]):
        shape = getattr(arr, "shape", ())
        if 0 in shape:  # (a scalar is refused where the inputs are fitted to the model)
            raise DataError(f"{p}: no input values (an array of shape {tuple(shape)})")
    return out


RUN_ROWS = 4096  # samples per onnxruntime call in run_batches, and per task of run --ray


def run_batches(path: str | Path, inputs: Any, rows: int = RUN_ROWS, sess=None) -> np.ndarray:
    """:func:`run` over any number of samples, ``rows`` at a time: memory stays bounded for a
    memory-mapped .npy input, and ``nngraph run`` and ``nngraph run --ray`` cut the samples at the
    same rows, so their outputs are identical bit for bit."""
    sess = sess or session(path)
    arrays = inputs if isinstance(inputs, dict) else {"": inputs}
    if any(np.ndim(a) == 0 for a in arrays.values()):
        return run(path, inputs, sess)  # refused there with its message
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise DataError(f"the inputs have different numbers of samples ({', '.join(f'{k}: {len(a)}' for k, a in arrays.items())})")
    n = lengths.pop()
    out = None
    for lo in range(0, n, rows):
        part = {k: a[lo:lo + rows] for k, a in arrays.items()}
        y = run(path, part if isinstance(inputs, dict) else part[""], sess)
        if out is None:
            out = np.empty((n,) + y.shape[1:], y.dtype)
        out[lo:lo + len(y)] = y
    return out


def class_labels(path: str | Path, y: np.ndarray) -> np.ndarray:
    """Each row's predicted class as its label, from the model's label list (``nngraph.classes``
    in the metadata: string labels of a CSV, or a built-in dataset's class names)."""
    import json

    from .onnx_io.importer import read_model

    meta = {p.key: p.value for p in read_model(path).metadata_props}
    if "nngraph.classes" not in meta:
        raise DataError(f"{path}: the model has no class labels (nngraph.classes in its metadata: a CSV with "
                        "text labels in its target column stores them)")
    classes = json.loads(meta["nngraph.classes"])
    if y.ndim < 2 or y.shape[-1] != len(classes):
        raise DataError(f"{path}: {len(classes)} class labels but the output has shape {y.shape[1:]} per sample")
    return np.array(classes, dtype=str)[np.argmax(y, axis=-1)]


@dataclass
class VerifyReport:
    """Outcome of comparing onnxruntime with the Numba forward pass on the same inputs."""

    ok: bool
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    batches: list[int]
    reference_max_abs: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    against: str = "nngraph"  # what onnxruntime was compared with: nngraph's forward, or onnx.reference
    # one row per runtime (verify's ``runtimes``): name, version, batches, max_abs, max_rel, ok, error
    runtimes: list[dict[str, Any]] = field(default_factory=list)

    def runtime_table(self) -> str:
        """The runtimes' table: runtime, version, batches, max abs / rel error against the Numba
        forward pass (onnxruntime for a model without nngraph metadata), pass/fail."""
        base = "nngraph (Numba)" if self.against == "nngraph" else "onnxruntime"
        head = ("runtime", "version", "batches", "max abs", "max rel", "result")
        body = [(r["runtime"], r["version"], ",".join(map(str, r["batches"])) or "-",
                 "-" if r["error"] else f"{r['max_abs']:.3g}", "-" if r["error"] else f"{r['max_rel']:.3g}",
                 ("pass" if r["ok"] else "FAIL") + (f": {r['error']}" if r["error"] else "")) for r in self.runtimes]
        widths = [max(len(str(x[i])) for x in [head] + body) for i in range(5)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
        lines = [f"errors against {base}, tolerance |a-b| <= {self.atol:g}*max(1, max|b|) + {self.rtol:g}*|b|:",
                 fmt.format(*head)]
        lines += [fmt.format(*row) for row in body]
        return "\n".join(lines)

    def summary(self) -> str:
        lines = ["no nngraph metadata: onnxruntime compared with onnx.reference.ReferenceEvaluator"] \
            if self.against == "onnx.reference" else []
        if self.runtimes:
            lines.append(self.runtime_table())
        lines += [f"batch {r['batch']:>4}: max abs error {r['max_abs']:.3g}, max rel error {r['max_rel']:.3g}"
                  for r in self.rows]
        if self.reference_max_abs is not None:
            lines.append(f"onnx.reference evaluator vs onnxruntime: max abs error {self.reference_max_abs:.3g}")
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"{verdict}: max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g} "
                     f"(tolerance |a-b| <= {self.atol:g}*max(1, max|b|) + {self.rtol:g}*|b|)")
        return "\n".join(lines)


def within_tolerance(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> bool:
    """|got - want| <= atol * max(1, max|want|) + rtol * |want| everywhere. The absolute term follows
    the output's scale: float32 rounding differences between runtimes grow with the values a model
    computes, and a deep network's logits near 0 are as far off as its large ones (a three-block
    transformer LM: 2e-5 with logits up to ~20, where onnxruntime and onnx.reference differ by 3e-5)."""
    if got.shape != want.shape:
        return False
    w = want.astype(np.float64)
    scale = max(1.0, float(np.abs(w).max())) if w.size else 1.0
    return bool(np.all(np.abs(got.astype(np.float64) - w) <= atol * scale + rtol * np.abs(w)))


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max abs error, max rel error) of ``a`` against the reference ``b``."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if diff.size == 0:
        return 0.0, 0.0
    rel = diff / np.maximum(np.abs(b.astype(np.float64)), 1e-6)
    return float(diff.max()), float(rel.max())


def random_inputs(model, batch: int, rng: np.random.Generator, dtype=np.float32, scale: float = 1.0,
                  id_limit: int | None = None) -> dict[str, np.ndarray]:
    """Random inputs for a model: normal floats (times ``scale``); valid ids for integer inputs
    (below ``id_limit``, default the consuming layer's vocabulary size). Shared by ``verify``,
    ``gradcheck`` and the op tests."""
    feeds = {}
    for name in model.graph.inputs:
        t = model.graph.values[name]
        if t.dtype == "int64":
            high = id_limit or model.input_id_limit(name)
            feeds[name] = rng.integers(0, high, size=(batch,) + t.shape).astype(np.int64)
        else:
            feeds[name] = (scale * rng.standard_normal((batch,) + t.shape)).astype(dtype)
    return feeds


def verify(path: str | Path, batch_sizes: tuple[int, ...] = (1, 3, 64), seed: int = 0, atol: float = 1e-5,
           rtol: float = 1e-4, inputs: np.ndarray | dict[str, np.ndarray] | None = None,
           reference: bool = False, runtimes: tuple[str, ...] = ()) -> VerifyReport:
    """Run the model in onnxruntime and in nngraph's Numba forward pass on the same inputs
    (random ones at each batch size, or ``inputs``) and compare. ``reference`` also runs
    ``onnx.reference.ReferenceEvaluator`` on the first batch. ``runtimes`` (names from
    ``runtimes.RUNTIMES``: onnxruntime, reference, openvino, tract) each run every batch and are
    compared with the Numba forward pass too: the report's ``runtimes`` table."""
    from .model import Model
    from .onnx_io.importer import read_model

    from .quantize import META_KEY

    keys = {p.key for p in read_model(path).metadata_props}
    if "nngraph.spec" not in keys or META_KEY in keys:  # a foreign or an int8 model: no Numba twin
        return verify_runtimes(path, batch_sizes, seed, atol, rtol, inputs, runtimes)
    model = Model.load_onnx(path)
    sess = session(path)
    rng = np.random.default_rng(seed)
    if inputs is not None:
        from .data import fit_inputs

        feeds_list = [fit_inputs(inputs, model.input_specs())]
    else:
        feeds_list = [random_inputs(model, b, rng) for b in batch_sizes]
    rows, ref_err, wants = [], None, []
    ok = True
    for feeds in feeds_list:
        ours = model.predict(feeds)
        wants.append(ours)
        theirs = run(path, feeds, sess)
        if theirs.shape != ours.shape:
            raise ExportError(f"onnxruntime output shape {theirs.shape} differs from nngraph's {ours.shape}")
        max_abs, max_rel = compare(theirs, ours)
        within = within_tolerance(theirs, ours, atol, rtol)
        ok = ok and within
        rows.append({"batch": len(next(iter(feeds.values()))), "max_abs": max_abs, "max_rel": max_rel,
                     "ok": within})
        if reference and ref_err is None:
            from onnx.reference import ReferenceEvaluator

            ref_out = ReferenceEvaluator(str(path)).run(None, feeds)[0]
            ref_err = compare(ref_out, theirs)[0]
            ok = ok and within_tolerance(ref_out, theirs, atol, rtol)
    table = _runtime_rows(path, runtimes, feeds_list, wants, atol, rtol) if runtimes else []
    ok = ok and all(r["ok"] for r in table)
    return VerifyReport(ok, max(r["max_abs"] for r in rows), max(r["max_rel"] for r in rows), atol, rtol,
                        [r["batch"] for r in rows], ref_err, rows, runtimes=table)


def _runtime_rows(path, names, feeds_list, wants, atol, rtol) -> list[dict[str, Any]]:
    """One row per runtime: its outputs on every feed set against ``wants``. A runtime that
    cannot load or run the model is a failed row with the reason; one not installed is an error."""
    from .runtimes import known_issues, open_runtime

    known = known_issues(path)
    table = []
    for name in names:
        row = {"runtime": name, "version": "", "batches": [], "max_abs": 0.0, "max_rel": 0.0, "ok": True,
               "error": ""}
        try:
            runner = open_runtime(name, path)
            row["version"] = runner.version
            for feeds, want in zip(feeds_list, wants):
                got = np.asarray(runner.run(feeds))
                if got.shape != want.shape:
                    raise ExportError(f"output shape {got.shape}, expected {want.shape}")
                a, r = compare(got, want)
                row["batches"].append(len(next(iter(feeds.values()))))
                row["max_abs"], row["max_rel"] = max(row["max_abs"], a), max(row["max_rel"], r)
                row["ok"] = row["ok"] and within_tolerance(got, want, atol, rtol)
        except ExportError as e:
            row["ok"], row["error"] = False, str(e)
        if not row["ok"] and name in known:
            row["error"] = (row["error"] + "; " if row["error"] else "") + "known bug: " + known[name]
        table.append(row)
    return table


FREE_DIM = 8  # the length given to a dynamic axis other than the batch (e.g. time) in random inputs


def verify_runtimes(path: str | Path, batch_sizes: tuple[int, ...] = (1, 3, 64), seed: int = 0,
                    atol: float = 1e-5, rtol: float = 1e-4,
                    inputs: np.ndarray | dict[str, np.ndarray] | None = None,
                    runtimes: tuple[str, ...] = ()) -> VerifyReport:
    """Verify a model without nngraph metadata (any ONNX file): onnxruntime against
    ``onnx.reference.ReferenceEvaluator`` on the same inputs (random ones at each batch size, with
    ``FREE_DIM`` for other dynamic axes and ids 0/1 for integer inputs, or ``inputs``)."""
    from onnx.reference import ReferenceEvaluator

    sess = session(path)
    specs = input_specs(sess)
    if inputs is not None:
        given = inputs if isinstance(inputs, dict) else {specs[0][0]: inputs}
        feeds_list = [{n: np.ascontiguousarray(np.asarray(given[n]), dt) for n, _, dt in specs if n in given}]
    else:
        rng = np.random.default_rng(seed)
        feeds_list = []
        for b in batch_sizes:
            feeds = {}
            for name, shape, dt in specs:
                dims = tuple(b if i == 0 and d is None else (FREE_DIM if d is None else d) for i, d in enumerate(shape))
                feeds[name] = (rng.integers(0, 2, dims) if np.issubdtype(dt, np.integer)
                               else rng.standard_normal(dims)).astype(dt)
            feeds_list.append(feeds)
    from .runtimes import reference_evaluator

    ref = reference_evaluator(path)
    rows, ok, outs = [], True, []
    for feeds in feeds_list:
        theirs = run(path, feeds, sess)
        try:
            ref_out = np.asarray(ref.run(None, feeds)[0])
        except Exception as e:
            raise ExportError(f"{path}: onnx.reference failed ({type(e).__name__}: {e})") from None
        max_abs, max_rel = compare(theirs, ref_out)
        within = within_tolerance(theirs, ref_out, atol, rtol)
        ok = ok and within
        rows.append({"batch": len(next(iter(feeds.values()))), "max_abs": max_abs, "max_rel": max_rel, "ok": within})
        outs.append(theirs)
    table = _runtime_rows(path, runtimes, feeds_list, outs, atol, rtol) if runtimes else []
    ok = ok and all(r["ok"] for r in table)
    return VerifyReport(ok, max(r["max_abs"] for r in rows), max(r["max_rel"] for r in rows), atol, rtol,
                        [r["batch"] for r in rows], None, rows, against="onnx.reference", runtimes=table)
