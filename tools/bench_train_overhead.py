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
    from nngraph.workflow import load_data

    spec = load_spec(args.spec)
    ds = load_data(spec, args.data, Path(args.spec).resolve().parent)
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
    return {v: statistics.median(t) for v, t in times.items()} | {"all": times, "samples": int(len(ds.y))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--data", default=None)
    ap.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (each runs every variant)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training samples")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
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


if __name__ == "__main__":
    main()
