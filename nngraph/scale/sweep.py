"""Hyperparameter sweeps on Ray Tune: ``nngraph sweep`` and ``nngraph.sweep``.

The sweep directory:

    DIR/sweep.json           the sweep as planned: spec, fixed overrides, parameters, metric, mode,
                             scheduler, seed, and the full trial list (drawn once, see space.py)
    DIR/trials/trial_007/    an ordinary run directory (spec.json with the trial's values, run.json,
                             checkpoints, history)
    DIR/trials/trial_007.json  the trial's record: values, status, error, seconds
    DIR/leaderboard.csv|json every planned trial, ranked by its best value of the metric
    DIR/best                 a link to the best trial's run directory
    DIR/.tune/               Ray Tune's own bookkeeping (not needed to resume)

Ray Tune schedules the trials (resources, concurrency, ASHA's early stopping on the per-epoch
reports); the trial list, the trials' state and the leaderboard are nngraph's files. So a resume —
after Ctrl-C, a crash or a SIGKILL of the driver — reruns no trial that finished, stopped early or
failed, and continues an interrupted trial from its last checkpoint (``train --resume``, bit-exact).

Inside each trial Numba and BLAS use the trial's CPUs (Ray sets OMP's threads, not Numba's); the
driver compiles (or loads) every kernel the trials use before they start, since concurrent
``cache=True`` compilations of one kernel race on its cache files; the data is loaded once by the
driver and shared through Ray's object store (zero-copy numpy), not read again per trial or epoch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError, NNGraphError, SpecError
from ..fileio import atomic_write_text
from . import leaderboard as L
from .space import Param, parse_params, plan_trials

SWEEP_JSON = "sweep.json"
SCHEDULERS = ("fifo", "asha")


def _spec_tools():
    from ..spec import Spec
    from ..workflow import apply_overrides, load_data

    return Spec, apply_overrides, load_data


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _data_key(spec: Any) -> str:
    return json.dumps([spec.data_dict(), str(spec.base_dir)], sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------- trials

def _write_trial(d: Path, **fields: Any) -> None:
    """Update the trial's record (``trials/trial_007.json``) atomically."""
    path = L.record_path(d)
    rec = L.read_json(path) or {}
    rec.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rec, indent=1, default=str) + "\n")


def run_trial(config: dict[str, Any], setup: dict[str, Any] | None = None,
              datasets: dict[str, Any] | None = None) -> None:
    """One trial, in a Ray worker: train the spec with the trial's values into its run directory
    (or continue it there), reporting every epoch's history row to Ray Tune. An nngraph error
    (a spec the values make invalid, divergence ...) is recorded in its record and ends the trial
    normally: the sweep goes on."""
    import numba
    import ray
    from ray import tune

    from ..train.callbacks import Callback
    from ..workflow import train

    assert setup is not None
    numba.set_num_threads(max(1, min(setup["threads"], numba.config.NUMBA_NUM_THREADS)))
    i = int(config["trial"])
    plan = setup["plan"]
    d = Path(setup["sweep_dir"]) / "trials" / L.trial_name(i, len(plan))
    metric = setup["metric"]
    before = (L.read_json(L.record_path(d)) or {}).get("seconds") or 0.0
    t0 = time.monotonic()
    _write_trial(d, trial=d.name, params=plan[i], status="running", error=None, host=socket.gethostname(),
                 node=ray.get_runtime_context().get_node_id(), pid=os.getpid())

    class Report(Callback):
        def on_epoch_end(self, trainer: Any, record: Any) -> None:
            row = {k: float(v) for k, v in record.values().items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if metric not in row:
                raise DataError(f"the history has no column {metric!r} (columns: {', '.join(row)})")
            tune.report({**row, "trial": i, "trial_seconds": before + time.monotonic() - t0})

    Spec, apply_overrides, load_data = _spec_tools()
    try:
        spec = dataclasses.replace(Spec.from_dict(setup["spec"]),
                                   base_dir=Path(setup["base_dir"]) if setup["base_dir"] else None)
        spec = apply_overrides(spec, plan[i])
        ds = (datasets or {}).get(_data_key(spec))
        if ds is None:
            ds = load_data(spec)
        quiet = dict(progress="none", log=lambda s: None, callbacks=[Report()], dataset=ds)
        if (d / "run.json").exists():
            train(resume=d, **quiet)
        else:
            train(spec, run_dir=d, **quiet)
    except NNGraphError as e:
        _write_trial(d, status="error", error=_one_line(e), seconds=before + time.monotonic() - t0)
        return
    except Exception as e:  # a bug: recorded, and Tune marks the trial failed
        _write_trial(d, status="error", error=_one_line(f"{type(e).__name__}: {e}"),
                     seconds=before + time.monotonic() - t0)
        raise
    _write_trial(d, status="finished", seconds=before + time.monotonic() - t0)


# ---------------------------------------------------------------------------------- live table

class LiveTable:
    """The driver's view while trials run: one row per trial (parameters, epoch, metric, status).
    On a terminal the table is redrawn in place (at most 4 times a second); otherwise one line is
    printed per trial start and end."""

    def __init__(self, names: list[str], plan: list[dict[str, Any]], params: list[str], metric: str,
                 epochs: list[int], stream: Any, tty: bool | None = None):
        self.names, self.plan, self.params, self.metric, self.epochs = names, plan, params, metric, epochs
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.state: dict[int, dict[str, Any]] = {}
        self.lines = 0
        self.last = 0.0
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # Ray Tune pickles its callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k not in ("stream", "lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, stream=sys.stderr, lock=threading.Lock())

    def update(self, i: int, **fields: Any) -> None:
        with self.lock:
            st = self.state.setdefault(i, {"epoch": 0, "value": None, "status": "pending"})
            old = st["status"]
            st.update(fields)
            if self.tty:
                if time.monotonic() - self.last > 0.25 or st["status"] != old:
                    self.redraw()
            elif st["status"] != old:
                self._line(i)

    def _row(self, i: int) -> list[str]:
        st = self.state.get(i, {"epoch": 0, "value": None, "status": "pending"})
        v = st["value"]
        return [self.names[i], *(L._short(self.plan[i].get(p)) for p in self.params),
                f"{st['epoch']}/{self.epochs[i]}", "-" if v is None else f"{v:.5g}",
                st["status"] + (f": {st['error']}" if st.get("error") else "")]

    def _head(self) -> list[str]:
        return ["trial", *self.params, "epoch", self.metric, "status"]

    def _line(self, i: int) -> None:
        print("  ".join(f"{h}={c}" if k else c for k, (h, c) in enumerate(zip(self._head(), self._row(i)))),
              file=self.stream, flush=True)

    def redraw(self) -> None:
        shown = [i for i in range(len(self.names)) if i in self.state]
        text = L.format_table(self._head(), [self._row(i) for i in shown])
        if self.lines:
            self.stream.write(f"\x1b[{self.lines}F\x1b[J")
        self.stream.write(text + "\n")
        self.stream.flush()
        self.lines = text.count("\n") + 1
        self.last = time.monotonic()


def _tune_callback(table: LiveTable, sweep_dir: Path, on_done: Callable[[], None]) -> Any:
    from ray.tune.progress_reporter import TrialProgressCallback

    class Watch(TrialProgressCallback):  # replaces Tune's own printing of results: the table is ours
        def __init__(self) -> None:
            super().__init__()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._guarded(lambda: table.update(trial.config["trial"], status="running"))

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self._guarded(lambda: table.update(trial.config["trial"], epoch=int(result.get("epoch", 0)),
                                               value=result.get(table.metric)))

        def _ended(self, trial: Any, failed: bool) -> None:
            i = trial.config["trial"]
            d = sweep_dir / "trials" / table.names[i]
            rec = L.read_json(L.record_path(d)) or {}
            epoch = table.state.get(i, {}).get("epoch", 0)
            if rec.get("status") in ("finished", "error"):
                status, error = rec["status"], rec.get("error")
            elif failed:
                status, error = "error", _one_line(f"the trial's worker failed ({trial.error_file or 'no log'})")
            else:  # ended by the scheduler before its last epoch
                status, error = ("finished" if epoch >= table.epochs[i] else "stopped"), None
            if status != rec.get("status") or error != rec.get("error"):
                seconds = rec.get("seconds")
                if seconds is None and trial.last_result:  # stopped by the scheduler: its last report
                    seconds = trial.last_result.get("trial_seconds")
                _write_trial(d, trial=d.name, params=table.plan[i], status=status, error=error, seconds=seconds)
            table.update(i, status=status, error=error)
            on_done()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._guarded(self._ended, trial, False)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._guarded(self._ended, trial, True)

        def _guarded(self, fn: Callable, *args: Any) -> None:
            # an exception here would end Tune's whole run: the table and records are best effort,
            # the leaderboard is rebuilt from the trial directories at the end anyway
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001
                print(f"note: could not record a trial's end: {_one_line(e)}", file=table.stream)

    return Watch()


# ---------------------------------------------------------------------------------- the driver

def _load_sweep(sweep_dir: Path) -> dict[str, Any]:
    doc = L.read_json(sweep_dir / SWEEP_JSON)
    if doc is None:
        if not sweep_dir.exists():
            raise DataError(f"{sweep_dir}: no such sweep directory")
        raise DataError(f"{sweep_dir}: not a sweep directory (no readable {SWEEP_JSON})")
    need = ("spec", "params", "plan", "metric", "mode", "scheduler", "seed", "epochs")
    missing = [k for k in need if k not in doc]
    if missing or not isinstance(doc["plan"], list) or not isinstance(doc["params"], list):
        raise DataError(f"{sweep_dir / SWEEP_JSON}: damaged (missing or malformed: {', '.join(missing) or 'plan'})")
    return doc


def _kernel_key(d: Any) -> str:
    """A spec with its numbers blanked: specs that differ only in sizes, rates, seeds ... run the
    same compiled kernels (Numba specialises on types, not values)."""
    def blank(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: blank(x) for k, x in v.items()}
        if isinstance(v, list):
            return [blank(x) for x in v]
        return "#" if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    return json.dumps(blank(d), sort_keys=True)


def _warm(specs: list[Any], datasets: dict[str, Any], log: Callable[[str], None]) -> dict[str, list[str]]:
    """Compile (or load from the cache) every kernel the trials use, by a one-epoch fit of each
    distinct trial spec on a few rows, before any trial starts. Returns each spec's history
    columns (to check the metric). A spec that is invalid is skipped: its trial records the error."""
    from ..model import Model
    from ..workflow import with_preprocessing

    columns: dict[str, list[str]] = {}
    seen: set[str] = set()
    for spec in specs:
        key = _kernel_key(spec.to_dict())
        if key in seen:  # differs from one already warmed in numbers only: the same kernels
            continue
        seen.add(key)
        try:
            ds = datasets[_data_key(spec)]
            s = with_preprocessing(spec, ds)
            s = dataclasses.replace(s, train=s.train.replace(epochs=1, early_stopping=None))
            model = Model.compile(s)
            rows = min(len(ds.y), max(4 * s.train.batch_size, 64))
            x = {k: v[:rows] for k, v in ds.x.items()} if isinstance(ds.x, dict) else ds.x[:rows]
            hist = model.fit(x, ds.y[:rows], epochs=1)
            columns[key] = list(hist.rows()[-1].keys()) if hist.rows() else []
        except NNGraphError as e:
            log(f"note: a trial's spec fails ({_one_line(e)}); that trial will record the error")
    return columns


def sweep(spec: Any = None, *, sweep_dir: str | Path | None = None, params: list[str] | tuple[str, ...] = (),
          trials: int | None = None, metric: str | None = None, mode: str | None = None, scheduler: str = "fifo",
          grace_epochs: int = 1, cpus_per_trial: int = 1, max_concurrent: int | None = None, seed: int = 0,
          address: str | None = None, resume: str | Path | None = None, overrides: dict[str, Any] | None = None,
          data: str | None = None, num_cpus: int | None = None, log: Callable[[str], None] | None = None,
          stream: Any = None) -> L.Leaderboard:
    """Run a hyperparameter sweep of ``spec`` on Ray Tune; returns the leaderboard.

    ``params``: ``PATH=SPACE`` strings (see :mod:`nngraph.scale.space`); ``overrides``: fixed spec
    keys for every trial (as ``--set``); ``metric`` any history column (default: val_loss with a
    validation split, else loss) and ``mode`` min/max (default from the name); ``scheduler`` fifo
    or asha (stops poor trials at epochs grace_epochs, 2x, 4x ...); ``address`` a Ray cluster (else
    a local Ray with ``num_cpus``, default all). ``resume``: a sweep directory to continue (the
    plan is read from it; execution options may change). ``stream`` receives the live table
    (default stderr), ``log`` notes.
    """
    from .. import scale

    scale.require_ray("nngraph sweep")
    log = log or (lambda s: print(s, file=sys.stderr))
    stream = stream or sys.stderr
    Spec, apply_overrides, load_data = _spec_tools()
    note = None
    if resume is not None:
        if spec is not None or params or overrides or data:
            raise SpecError("", "--resume continues a sweep as planned; give only the sweep directory (and "
                                "optionally --address, --cpus-per-trial, --max-concurrent)")
        sweep_dir = Path(resume)
        doc = _load_sweep(sweep_dir)
        base = dataclasses.replace(Spec.from_dict(doc["spec"]), base_dir=Path(doc["base_dir"]) if doc.get("base_dir") else None)
        plist = [Param.from_json(p) for p in doc["params"]]
        plan, metric, mode = doc["plan"], doc["metric"], doc["mode"]
        scheduler, grace_epochs = doc["scheduler"], doc.get("grace_epochs", 1)
    else:
        if spec is None:
            raise SpecError("", "give a SPEC file (or --resume SWEEP_DIR)")
        if sweep_dir is None:
            raise SpecError("--sweep-dir", "give the folder the sweep writes (its trials and leaderboard)")
        sweep_dir = Path(sweep_dir)
        if sweep_dir.exists() and (not sweep_dir.is_dir() or any(sweep_dir.iterdir())):
            what = "a sweep" if (sweep_dir / SWEEP_JSON).exists() else "files"
            raise DataError(f"{sweep_dir}: already holds {what}; continue a sweep with --resume {sweep_dir}, "
                            "or choose an empty --sweep-dir")
        if scheduler not in SCHEDULERS:
            raise SpecError("--scheduler", f"unknown scheduler {scheduler!r} (use {' or '.join(SCHEDULERS)})")
        if not isinstance(spec, Spec):
            from ..spec import load_spec

            spec = load_spec(spec)
        if data is not None:  # as train's --data: a path relative to here, or a built-in name
            overrides = {**(overrides or {}), "data": str(Path(data).resolve()) if Path(data).exists() else data}
        base = apply_overrides(spec, overrides)
        plist = parse_params(list(params))
        if not plist:
            raise SpecError("--param", "give at least one PATH=SPACE to sweep, e.g. optimizer.lr=loguniform:1e-4:1e-1")
        if trials is None:
            trials = 1 if all(p.kind == "grid" for p in plist) else 8
        plan = plan_trials(plist, trials, seed)
        if metric is None:
            metric = "val_loss" if base.train.validation_split > 0 else "loss"
        if metric.startswith("val_") and base.train.validation_split <= 0:
            base = apply_overrides(base, {"train.validation_split": 0.2})
            note = (f"note: {metric} needs held-out data; every trial holds out 20% of the training data "
                    "(train.validation_split=0.2; set another value with --set)")
        if mode is None:
            from ..train.schedules import monitor_mode

            mode = monitor_mode(metric)
    if mode not in ("min", "max"):
        raise SpecError("--mode", f"must be min or max, got {mode!r}")
    if cpus_per_trial < 1:
        raise SpecError("--cpus-per-trial", "must be at least 1")

    # every trial's spec, checked now: an invalid combination is recorded as that trial's error
    trial_specs: list[Any] = []
    spec_errors: dict[int, str] = {}
    for i, values in enumerate(plan):
        try:
            trial_specs.append(apply_overrides(base, values))
        except NNGraphError as e:
            trial_specs.append(None)
            spec_errors[i] = _one_line(e)
    datasets: dict[str, Any] = {}
    for s in [base] + [s for s in trial_specs if s is not None]:
        key = _data_key(s)
        if key not in datasets:
            datasets[key] = load_data(s)
    if resume is None:
        columns = _warm([s for s in trial_specs if s is not None], datasets, log)
        cols = sorted({c for cs in columns.values() for c in cs})
        if columns and metric not in cols:
            raise SpecError("--metric", f"{metric!r} is not a history column of the trials (columns: {', '.join(cols)})")
        if note:
            log(note)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        doc = {"format": 1, "spec": base.to_dict(), "base_dir": str(base.base_dir) if base.base_dir else None,
               "params": [p.to_json() for p in plist], "trials": trials, "plan": plan, "metric": metric,
               "mode": mode, "scheduler": scheduler, "grace_epochs": grace_epochs, "seed": seed,
               "epochs": base.train.epochs, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:]}
        atomic_write_text(sweep_dir / SWEEP_JSON, json.dumps(doc, indent=1) + "\n")
    else:
        _warm([s for s in trial_specs if s is not None], datasets, log)

    names = [L.trial_name(i, len(plan)) for i in range(len(plan))]
    status = [L.trial_status(sweep_dir / "trials" / n) for n in names]
    todo = [i for i, s in enumerate(status) if s in ("pending", "running")]
    for i, error in spec_errors.items():
        if i in todo:  # recorded without starting Ray work for it
            _write_trial(sweep_dir / "trials" / names[i], trial=names[i], params=plan[i], status="error",
                         error=error, seconds=0.0)
            todo.remove(i)
    path_names = [p.path for p in plist]
    if resume is not None:
        done = len(plan) - len(todo)
        log(f"{sweep_dir}: {done} of {len(plan)} trials already ran; running {len(todo)}")
    if todo:
        _run_tune(sweep_dir, todo, plan, names, trial_specs, datasets, path_names, metric, mode, scheduler,
                  grace_epochs, cpus_per_trial, max_concurrent, address, num_cpus, stream, base)
    board = L.collect(sweep_dir, plan, metric, mode, path_names)
    L.write(sweep_dir, board)
    return board


def _run_tune(sweep_dir: Path, todo: list[int], plan: list[dict[str, Any]], names: list[str], trial_specs: list[Any],
              datasets: dict[str, Any], path_names: list[str], metric: str, mode: str, scheduler: str,
              grace_epochs: int, cpus_per_trial: int, max_concurrent: int | None, address: str | None,
              num_cpus: int | None, stream: Any, base: Any) -> None:
    import ray
    from ray import tune

    from .. import scale

    threads = str(cpus_per_trial)
    env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}
    if os.environ.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    started = scale.init_ray(address, num_cpus, env)
    try:
        # file-backed arrays (memory-mapped .npy rows) stay with the workers, who map the file
        shared = {k: v for k, v in datasets.items() if not _file_backed(v)}
        setup = {"sweep_dir": str(sweep_dir.resolve()), "plan": plan, "metric": metric, "threads": cpus_per_trial,
                 "spec": base.to_dict(), "base_dir": str(base.base_dir) if base.base_dir else None}
        fn = tune.with_parameters(run_trial, setup=setup, datasets=shared)
        epochs = [s.train.epochs if s is not None else 0 for s in trial_specs]
        table = LiveTable(names, plan, path_names, metric, epochs, stream)
        for i in range(len(plan)):
            if i not in todo:
                table.state[i] = {"epoch": "-", "value": None, "status": L.trial_status(sweep_dir / "trials" / names[i])}

        def refresh() -> None:  # the leaderboard is current after every trial
            L.write(sweep_dir, L.collect(sweep_dir, plan, metric, mode, path_names))

        sched = None
        if scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            sched = ASHAScheduler(time_attr="epoch", max_t=max(epochs), grace_period=max(1, grace_epochs),
                                  reduction_factor=2)
        tuner = tune.Tuner(
            tune.with_resources(fn, {"cpu": cpus_per_trial}),
            param_space={"trial": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=sched,
                                        max_concurrent_trials=max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name=time.strftime("run-%Y%m%d-%H%M%S"),
                                      storage_path=str((sweep_dir / ".tune").resolve()), verbose=0,
                                      callbacks=[_tune_callback(table, sweep_dir, refresh)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        import logging

        # a trial's own failure is in its record and the table; Tune would add a traceback
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        tuner.fit()
    finally:
        if started:
            ray.shutdown()


def _file_backed(ds: Any) -> bool:
    arrays = list(ds.x.values()) if isinstance(ds.x, dict) else [ds.x]
    return any(hasattr(a, "chunks") for a in arrays + [ds.y])
