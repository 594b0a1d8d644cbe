"""The end-to-end jobs behind ``nngraph train/history/export``: spec + data -> trained Model -> ONNX,
with an optional run directory (checkpoints, exact resume, history) and graceful SIGINT/SIGTERM."""
from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .data import Dataset, load_source
from .errors import DataError, SpecError, TrainingDiverged, TrainingInterrupted
from .fileio import refuse_overwrite
from .model import Model
from .spec import Spec, load_spec
from .train import rundir as R
from .train.callbacks import Callback
from .train.checkpoint import load_checkpoint, weights
from .train.progress import LogLines, ProgressBar, fmt, format_record
from .train.history import History

if TYPE_CHECKING:  # imports Numba: loaded only when training
    from .train.trainer import Trainer

__all__ = ["train", "load_data", "apply_overrides", "run_model", "TrainResult", "format_record",
           "with_preprocessing"]


def load_data(spec: Spec, source: str | None = None, base_dir: Path | None = None,
              targets: str | None = None) -> Dataset:
    """The dataset a spec trains on: ``source`` (a CLI --data) overrides the spec's ``data``.
    Relative paths resolve against ``base_dir``, by default the folder of the spec's file (when it
    was read with ``load_spec``)."""
    base_dir = spec.base_dir if base_dir is None else base_dir
    options = spec.data_dict() or {}
    if source is not None:
        # --data replaces the files; how to read them (target, windowing, seq_len ...) still applies
        options = {"train": source, **{k: v for k, v in options.items() if k not in ("train", "y", "test", "y_test")}}
    if targets is not None:
        options["y"] = targets
    if not options.get("train"):
        raise DataError(f"spec {spec.name!r} names no data; give --data (a file, a folder or a built-in "
                        "name such as digits)")
    return load_source(options["train"], options, base_dir)


def with_preprocessing(spec: Spec, ds: Dataset) -> Spec:
    """The spec with the preprocessing its data asks for as a ``normalize`` layer on the input
    (``Dataset.input_layer``: IDX pixels / 255, series or ``"normalize": true`` tabular
    standardisation), so the model takes the raw values of the user's files. Unchanged when there
    is nothing to add or the spec already normalises that input itself (its own normalize layer,
    or a resumed run's spec.json). The existing layers keep their names (the defaults are written
    out, since ``<type>_<index>`` would shift) and a layer that named the input reads the new one."""
    if not ds.input_layer or len(spec.inputs) != 1 or spec.inputs[0][1].dtype != "float32":
        return spec
    inp = spec.inputs[0][0]
    names = spec.layer_names()
    for i, layer in enumerate(spec.layers):
        reads = layer.inputs if layer.inputs is not None else ((inp,) if i == 0 else ())
        if layer.type == "normalize" and inp in reads:
            return spec
    new_name, k = f"{inp}_normalize", 1
    while new_name in names or new_name in spec.input_map:
        k += 1
        new_name = f"{inp}_normalize_{k}"
    d = spec.to_dict()
    layers = []
    for name, layer in zip(names, d["layers"]):
        layer["name"] = name
        if "inputs" in layer:
            layer["inputs"] = [new_name if v == inp else v for v in layer["inputs"]]
        layers.append(layer)
    d["layers"] = [{"type": "normalize", "name": new_name, **ds.input_layer}] + layers
    return dataclasses.replace(Spec.from_dict(d), base_dir=spec.base_dir)


@dataclass
class TrainResult:
    model: Model
    history: History
    test: dict[str, float] | None
    dataset: Dataset
    output: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None


_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\]]+\])*)$")


def override_path(key: str) -> list[str | int]:
    """A dotted override key as its steps: ``layers[0].units`` -> ["layers", 0, "units"];
    ``layers[hidden].units`` addresses the layer named "hidden". Roots: train, optimizer, loss,
    data, layers."""
    steps: list[str | int] = []
    for seg in key.split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise SpecError(key, f"not a spec path (expected e.g. optimizer.lr or layers[0].units; bad part {seg!r})")
        steps.append(m.group(1))
        for idx in re.findall(r"\[([^\]]+)\]", m.group(2)):
            steps.append(int(idx) if re.fullmatch(r"-?[0-9]+", idx) else idx)
    root = steps[0]
    if root not in ("train", "optimizer", "loss", "data", "layers") or (root == "loss" and len(steps) > 1):
        raise SpecError(key, "only train.*, optimizer.*, loss, data and layers[i].* can be overridden")
    if root == "layers" and (len(steps) < 3 or not isinstance(steps[1], (int, str)) or steps[1] == ""):
        raise SpecError(key, "a layer key needs the layer and the field: layers[0].units or layers[name].units")
    return steps


def _layer_index(layers: list, ref: str | int, key: str) -> int:
    if isinstance(ref, int):
        if not -len(layers) <= ref < len(layers):
            raise SpecError(key, f"the spec has {len(layers)} layers (layers[0] ... layers[{len(layers) - 1}])")
        return ref % len(layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, dict) and layer.get("name") == ref:
            return i
    names = [lay.get("name") for lay in layers if isinstance(lay, dict) and lay.get("name")]
    raise SpecError(key, f"no layer named {ref!r}" + (f" (named layers: {', '.join(names)})" if names else
                                                       " (no layer has a name; use its index)"))


def set_path(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (see :func:`override_path`) in a spec dictionary; intermediate tables are
    created, a layer or list item must exist."""
    steps = override_path(key)
    node: Any = d
    if steps[0] == "layers":
        if not isinstance(d.get("layers"), list):
            raise SpecError(key, "the spec has no layers list")
        node = d["layers"][_layer_index(d["layers"], steps[1], key)]
        steps = steps[2:]
    for step in steps[:-1]:
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                raise SpecError(key, f"index [{step}] is out of range")
            node = node[step]
        else:
            if not isinstance(node.get(step), (dict, list)):
                node[step] = {}
            node = node[step]
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise SpecError(key, f"index [{last}] is out of range")
    elif not isinstance(node, dict):
        raise SpecError(key, "does not name a field of an object")
    node[last] = value


def apply_overrides(spec: Spec, overrides: dict[str, Any] | None) -> Spec:
    """The spec with dotted keys set (``train.batch_size``, ``optimizer.lr``,
    ``train.early_stopping.patience``, ``layers[0].units``, ``layers[hidden].dropout`` ...),
    re-validated: errors carry the JSON path."""
    if not overrides:
        return spec
    d = spec.to_dict()
    for key, value in overrides.items():
        set_path(d, key, value)
    return dataclasses.replace(Spec.from_dict(d), base_dir=spec.base_dir)


@contextlib.contextmanager
def graceful_signals(trainer: "Trainer") -> Iterator[None]:
    """SIGINT/SIGTERM ask the trainer to stop at the next step boundary (it saves and raises
    TrainingInterrupted); a second signal abandons the current step (KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt
        trainer.stop_signal = signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        trainer.stop_signal = None


def _abs_path(p: str | None) -> str | None:
    return str(Path(p).resolve()) if p is not None and Path(p).exists() else p


def train(spec: Spec | str | Path | None = None, *, data: str | None = None, targets: str | None = None,
          output: str | Path | None = None, init: str | Path | None = None, epochs: int | None = None,
          opset: int | None = None, log: Callable[[str], None] | None = None, run_dir: str | Path | None = None,
          resume: str | Path | None = None, overrides: dict[str, Any] | None = None, progress: str = "lines",
          callbacks: list[Callback] | tuple = (), fold_batchnorm: bool = False,
          report: Callable[[str], None] | None = None, explicit_states: bool = False,
          dataset: Dataset | None = None) -> TrainResult:
    """Train a spec on its data (or ``data``), report test metrics, optionally write ONNX.

    ``init`` starts from the weights of an nngraph-exported ONNX model of the same architecture.
    ``run_dir`` records the run (spec, data source, checkpoints, history, best checkpoint);
    ``resume`` continues a run directory exactly where its last checkpoint left it (``epochs`` may
    extend it). ``overrides`` sets dotted spec keys. ``progress``: "bar", "lines" or "none".
    ``fold_batchnorm`` folds batch norms into the Conv/Gemm before them in the written model;
    ``explicit_states`` gives recurrent layers explicit zero initial states (for tract).
    ``log`` receives progress and diagnostics, ``report`` the results (test metrics, the file
    written; default: ``log``). ``output`` may not be one of the run's inputs (checked first).
    ``dataset``: the data, already loaded by :func:`load_data` for this spec (a sweep loads it once
    for all its trials); a resumed run still checks it against the run's data digest.
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    report = report or log
    ckpt = None
    if resume is not None:
        if spec is not None or init is not None or data is not None or targets is not None or overrides:
            raise SpecError("", "--resume continues a run as recorded; give only the run directory "
                            "(and optionally --epochs, -o, --opset)")
        run = R.open_run(resume)
        run_path = run.path
        spec = R.run_spec(run)
        info = run.info
        base_dir = Path(info["base_dir"]) if info.get("base_dir") else None
        data, targets = info.get("data"), info.get("targets")
        ckpt = run.checkpoint
        if ckpt is None:
            # only a run killed before its first save (status "created", no epoch) may start over
            if run.rows or info.get("status") not in (None, "created"):
                raise DataError(f"{run_path / R.CHECKPOINT}: missing, so the run cannot continue where it "
                                f"stopped (status {info.get('status')!r}, {len(run.rows)} epochs recorded)")
            log(f"{run_path}: no checkpoint yet; starting from epoch 1")
        if ckpt is not None and ckpt[1].get("finished") and epochs is None:
            epochs = ckpt[1]["epoch"]  # a finished run (maybe stopped early) stays finished
            log(f"{run_path}: the run is already finished ({epochs} epochs); give --epochs to extend it")
        done = ckpt[1]["epoch"] if ckpt is not None else 0
        if epochs is not None and epochs < done:  # refused before spec.json is touched
            raise DataError(f"{run_path}: --epochs {epochs} is below the {done} epochs the run has done; "
                            f"give --epochs {done} or more (or export a checkpoint of an earlier epoch)")
        if epochs is not None and epochs != spec.train.epochs:
            spec = dataclasses.replace(spec, train=spec.train.replace(epochs=epochs))
            R.atomic_write_text(run_path / R.SPEC, spec.to_json())
    else:
        if spec is None:
            raise SpecError("", "give a SPEC file (or --resume RUN_DIR)")
        base_dir, spec_file = None, None
        if not isinstance(spec, Spec):
            spec_file = str(Path(spec).resolve())
            base_dir = Path(spec).resolve().parent
            spec = load_spec(spec)
        spec = apply_overrides(spec, overrides)
        base_dir = base_dir or spec.base_dir  # a Spec read by load_spec knows its folder
        run_path = Path(run_dir) if run_dir is not None else None
        if epochs is not None and run_path is not None:  # spec.json records the spec as used
            spec = dataclasses.replace(spec, train=spec.train.replace(epochs=epochs))
    refuse_overwrite(output, _inputs_of_run(spec, spec_file if resume is None else None, data, targets,
                                            base_dir, init, run_path))
    ds = dataset if dataset is not None else load_data(spec, data, base_dir, targets)
    spec = with_preprocessing(spec, ds)
    model = Model.compile(spec)
    if ckpt is not None:
        _check_fits(model, ckpt[1], run_path / R.CHECKPOINT)
    if init is not None:
        src = Model.load_onnx(init)
        if src.metadata.get("folded_batchnorm"):
            raise DataError(f"{init}: its batch norms are folded into the layers before them (exported with "
                            "--fold-batchnorm); fine-tune from an export without --fold-batchnorm")
        model.load_weights(src.params.as_dict(copy=False), source=str(init))
        log(f"initial weights from {init}")
    n_epochs = spec.train.epochs if epochs is None else epochs
    if run_path is not None:
        digest = R.data_sha256(ds.x, ds.y)
        if resume is None:
            R.create_run(run_path, spec.to_json(), {
                "format": 1, "status": "created", "spec_file": spec_file,
                "data": _abs_path(data), "targets": _abs_path(targets),
                "base_dir": str(base_dir) if base_dir else None, "data_sha256": digest,
                "samples": int(len(ds.y)), "data_meta": ds.meta, "init": _abs_path(str(init)) if init else None,
                "argv": sys.argv[1:]})
        elif info.get("data_sha256") != digest:
            raise DataError(f"{run_path}: the training data changed since the run started (SHA-256 "
                            f"{digest[:12]}... vs {str(info.get('data_sha256'))[:12]}...); an exact resume "
                            "needs the same data")
    cbs: list[Callback] = []
    if progress == "bar":
        cbs.append(ProgressBar(n_epochs, len(ds.y), spec.train.batch_size))
    elif progress == "lines":
        cbs.append(LogLines(n_epochs, log))
    trainer = model.trainer()
    if run_path is not None:
        # before the caller's callbacks: when theirs see an epoch end, its files are on disk (a
        # sweep's trial may be stopped by its scheduler right in that callback)
        has_val = spec.train.validation_split > 0
        monitor = model.training_setup(n_epochs, has_val)[0]
        cbs.append(R.RunDirCallback(run_path, monitor, n_epochs, spec.train.checkpoint_every))
        if ckpt is not None:
            e, b = ckpt[1]["epoch"], ckpt[1]["batch"]
            log(f"resuming {run_path} at epoch {e + 1}" + (f", batch {b + 1}" if b else "")
                + f" (step {ckpt[1]['step']})")
    cbs += list(callbacks)
    # the data's metadata (target normalization, labels, windowing) before the fit: the history's
    # losses in target units need it, and the export carries it
    model.metadata.update({k: v for k, v in ds.meta.items()})
    where = f"{run_path / R.CHECKPOINT}" if run_path is not None else None
    try:
        with graceful_signals(trainer) if run_path is not None else contextlib.nullcontext():
            history = model.fit(ds.x, ds.y, epochs=n_epochs, callbacks=cbs, resume=ckpt)
    except TrainingInterrupted as e:
        raise TrainingInterrupted(f"{e}; saved {where}; continue with: nngraph train --resume {run_path}",
                                  e.exit_code) from None
    except TrainingDiverged as e:
        if where is None:
            raise
        raise TrainingDiverged(f"{e}; the last good checkpoint is kept: {where} (epoch "
                               f"{_saved_epoch(run_path)})") from None
    except KeyboardInterrupt:
        if where is None:
            raise
        raise TrainingInterrupted(f"abandoned the current step on a second signal; the last complete "
                                  f"checkpoint is kept: {where} (epoch {_saved_epoch(run_path)}); continue "
                                  f"with: nngraph train --resume {run_path}", 130) from None
    if model.early_stopping is not None and model.early_stopping.describe():
        log(model.early_stopping.describe())
    test = None
    if ds.x_test is not None:
        test = model.evaluate(ds.x_test, ds.y_test)
        test.update(model.trainer().in_target_units(test))  # standardised targets: also in their units
        report("test: " + "  ".join(f"{k} {fmt(v)}" for k, v in test.items()))
    if test is not None:
        model.metadata["test_metrics"] = {k: round(v, 6) for k, v in test.items()}
        if run_path is not None:
            R.update_run_info(run_path, test_metrics=model.metadata["test_metrics"])
    if explicit_states:  # recurrent layers' zero initial states in the file (for tract)
        model.metadata["explicit_states"] = True
    written = model.export_onnx(output, opset, fold_batchnorm) if output is not None else None
    if written is not None and fold_batchnorm:
        log(fold_message(model))
    if written is not None:
        report(f"wrote {written}")
    return TrainResult(model, history, test, ds, written, run_dir=run_path)


def _inputs_of_run(spec: Spec, spec_file: str | None, data: str | None, targets: str | None,
                   base_dir: Path | None, init: Any, run_path: Path | None) -> list[tuple[str, Any]]:
    """Every file a training run reads or keeps, labelled, for :func:`refuse_overwrite`."""
    out: list[tuple[str, Any]] = [("input spec", spec_file), ("--targets file", targets), ("--init model", init)]
    sources = [data] + list((spec.data_dict() or {}).get(k) for k in ("train", "y", "test", "y_test"))
    for src in sources:
        if not isinstance(src, str) or not src:
            continue
        for p in (Path(src), (base_dir / src) if base_dir is not None else None):
            if p is None or not p.exists():
                continue
            files = sorted(p.iterdir()) if p.is_dir() else [p]
            out += [("data file", f) for f in files if f.is_file()]
    if run_path is not None and Path(run_path).is_dir():
        out += [(f"run directory's {f.name}", f) for f in sorted(Path(run_path).iterdir()) if f.is_file()]
    return out


def fold_message(model: Model) -> str:
    """What ``--fold-batchnorm`` did, in one line."""
    folded, total = model.batchnorm_fold_counts()
    if total == 0:
        return "fold-batchnorm: the model has no batchnorm layer"
    kept = f"; {total - folded} kept as BatchNormalization" if folded < total else ""
    return (f"folded {folded} of {total} batchnorm layers into the conv/dense before them{kept} "
            "(checked against the unfolded model in onnxruntime)")


def _check_fits(model: Model, meta: dict[str, Any], path: Path) -> None:
    """A checkpoint's parameter layout is this model's (DataError naming the file otherwise)."""
    from .train.checkpoint import layout, state_layout

    for key, want in (("layout", layout(model.params)), ("state_layout", state_layout(model.params))):
        if key in meta and (meta[key] or []) != want:
            raise DataError(f"{path}: its {key} does not match the run's spec.json (the checkpoint holds "
                            f"{len(meta[key] or [])} arrays, the spec's model {len(want)})")


def _saved_epoch(path: Path) -> Any:
    try:
        return load_checkpoint(path / R.CHECKPOINT)[1]["epoch"]
    except DataError:
        return "none"


def run_model(path: str | Path, best: bool = False) -> tuple[Model, dict[str, Any]]:
    """The model of a run directory with the weights of its latest (or best) checkpoint, and that
    checkpoint's metadata. Dataset metadata and test metrics recorded by the run are attached."""
    run = R.open_run(path)
    if run.checkpoint is None and not best:
        raise DataError(f"{run.path}: no checkpoint yet")
    if best and not (run.path / R.BEST).exists():
        raise DataError(f"{run.path / R.BEST}: missing (no epoch has finished yet); export the latest "
                        "checkpoint without --best")
    arrays, meta = run.best() if best else run.checkpoint
    model = Model.compile(R.run_spec(run))
    source = run.path / (R.BEST if best and (run.path / R.BEST).exists() else R.CHECKPOINT)
    _check_fits(model, meta, source)
    if "layout" not in meta:
        raise DataError(f"{source}: checkpoint metadata is missing layout")
    model.load_weights(weights(arrays, meta), source=str(run.path / (R.BEST if best else R.CHECKPOINT)))
    model.metadata.update(run.info.get("data_meta") or {})
    if run.info.get("test_metrics") and not best:
        model.metadata["test_metrics"] = run.info["test_metrics"]
    model.metadata["checkpoint"] = {"epoch": meta["epoch"], "step": meta["step"],
                                    **({"best": meta["best"], "monitor": meta["monitor"]} if best else {})}
    return model, meta
