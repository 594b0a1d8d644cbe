"""What progress reporting, the per-step NaN/Inf check and run-directory checkpointing cost per epoch.

    python tools/bench_train_overhead.py specs/mnist_lenet.json --data /work/shared/data/mnist
    python tools/bench_train_overhead.py specs/digits_mlp.json --epochs 20 --repeats 5

Variants, each a fresh model with the same seed (so the same arithmetic), alternated round by round
so machine noise hits all alike; the figure is wall time of ``Model.fit`` per epoch (validation,
callbacks and checkpoint writes included), median over rounds:

    bare        no callbacks, train.check_finite false
    finite      + the per-step gradient finite check (default on)
    full        + live progress bar (to /dev/null, redrawn ~10x/s) + run directory: history.csv/json,
                  checkpoint.npz and best.npz written (fsync'd) every epoch, as ``nngraph train --run-dir``

Each thread count runs in a fresh subprocess (BLAS and Numba read their thread counts at start-up).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(args: argparse.Namespace) -> dict:
    import dataclasses

    from nngraph.model import Model
    from nngraph.spec import load_spec
    from nngraph.train.progress import ProgressBar
    from nngraph.train.rundir import RunDirCallback, create_run
    from nngraph.workflow import load_data, with_preprocessing

    spec = load_spec(args.spec)
    ds = load_data(spec, args.data, Path(args.spec).resolve().parent)
    spec = with_preprocessing(spec, ds)  # IDX pixels: the model's own / 255
    if args.limit:
        ds.x, ds.y = ds.x[:args.limit], ds.y[:args.limit]
    sink = open(os.devnull, "w")
    times: dict[str, list[float]] = {"bare": [], "finite": [], "full": []}

    def run(variant: str, epochs: int) -> float:
        s = spec
        if variant == "bare":
            s = dataclasses.replace(spec, train=spec.train.replace(check_finite=False))
        model = Model.compile(s)
        cbs = []
        tmp = None
        if variant == "full":
            tmp = tempfile.mkdtemp(prefix="overhead-")
            run_dir = Path(tmp) / "run"
            create_run(run_dir, s.to_json(), {"status": "created"})
            cbs = [ProgressBar(epochs, len(ds.y), s.train.batch_size, stream=sink),
                   RunDirCallback(run_dir, "val_loss" if s.train.validation_split else "loss", epochs)]
        t0 = time.perf_counter()
        model.fit(ds.x, ds.y, epochs=epochs, callbacks=cbs)
        dt = (time.perf_counter() - t0) / epochs
        if tmp:
            import shutil

            shutil.rmtree(tmp)
        return dt

    for v in times:  # JIT warm-up (compilation, plans, caches)
        run(v, 1)
    for _ in range(args.repeats):
        for v in times:
            times[v].append(run(v, args.epochs))
    return {v: statistics.median(t) for v, t in times.items()} | {"all": times, "samples": int(len(ds.y)),
                                                                  **components(spec, sink)}


def components(spec, sink) -> dict:
    """Each added cost alone, timed in isolation (immune to the machine's noise): the finite check
    per step, one progress redraw, the epoch-end writes (history x2, best.npz, checkpoint.npz)."""
    import tempfile

    import numpy as np

    from nngraph.model import Model
    from nngraph.train.optimizers import sum_of_squares
    from nngraph.train.progress import ProgressBar
    from nngraph.train.rundir import RunDirCallback, create_run
    from nngraph.train.history import EpochRecord

    model = Model.compile(spec)
    tr = model.trainer()
    g = model.params.grad_flat
    g[...] = np.random.default_rng(0).normal(size=g.shape)
    sum_of_squares(g)
    t0 = time.perf_counter()
    for _ in range(2000):
        sum_of_squares(g)
    finite = (time.perf_counter() - t0) / 2000
    bar = ProgressBar(10, 60000, spec.train.batch_size, stream=sink)
    bar.on_epoch_begin(tr, 0)
    t0 = time.perf_counter()
    for i in range(2000):
        bar.on_progress(tr, 0, i + 1, 5000, 0.5, 0.9)
    redraw = (time.perf_counter() - t0) / 2000
    run_dir = Path(tempfile.mkdtemp(prefix="overhead-")) / "run"
    create_run(run_dir, spec.to_json(), {"status": "created"})
    cb = RunDirCallback(run_dir, "loss", 100)
    tr.callbacks = [cb]
    writes = []
    for e in range(1, 6):
        rec = EpochRecord(e, 1.0 / e, 0.9, None, None, 0.001, 1.0, 1.0, {}, float(e), "accuracy")
        tr.history.records.append(rec)
        tr.epoch = e
        t0 = time.perf_counter()
        cb.on_epoch_end(tr, rec)
        writes.append(time.perf_counter() - t0)
    return {"finite_step_s": finite, "redraw_s": redraw, "epoch_writes_s": statistics.median(writes),
            "params": int(model.params.flat.size), "batch_size": spec.train.batch_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--data", default=None)
    ap.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (each runs every variant)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training samples")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--full-samples", type=int, default=0, help="also scale the figure to an epoch of N samples")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    for threads in args.threads:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        bare = r["bare"]
        print(f"{Path(args.spec).stem}, {r['samples']} samples, {threads} thread(s), median of {args.repeats} "
              f"x {args.epochs} epoch(s):")
        for v in ("bare", "finite", "full"):
            print(f"  {v:<7} {r[v]:8.3f} s/epoch  {100 * (r[v] / bare - 1):+6.2f}%   "
                  f"(rounds: {', '.join(f'{t:.3f}' for t in r['all'][v])})")
        steps = -(-r["samples"] // r["batch_size"])
        added = steps * r["finite_step_s"] + 10 * bare * r["redraw_s"] + r["epoch_writes_s"]
        print(f"  components ({r['params']:,} params): finite check {1e6 * r['finite_step_s']:.1f} us/step, "
              f"progress redraw {1e6 * r['redraw_s']:.1f} us (<= 10/s), epoch-end writes "
              f"{1e3 * r['epoch_writes_s']:.1f} ms/epoch")
        print(f"  => {1e3 * added:.1f} ms added to a {bare:.2f} s epoch = {100 * added / bare:.3f}%")
        if args.full_samples:
            bare_full = bare * args.full_samples / r["samples"]
            steps_full = -(-args.full_samples // r["batch_size"])
            added_full = steps_full * r["finite_step_s"] + 10 * bare_full * r["redraw_s"] + r["epoch_writes_s"]
            print(f"  => scaled to a {args.full_samples:,}-sample epoch ({bare_full:.1f} s): "
                  f"{100 * added_full / bare_full:.3f}%")


if __name__ == "__main__":
    main()
