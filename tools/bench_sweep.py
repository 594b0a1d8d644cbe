"""A sweep through Ray Tune against the same trials run one after another in one process.

    python tools/bench_sweep.py                     # 8 trials of specs/digits_mlp.json, its 40 epochs
    python tools/bench_sweep.py --epochs 400        # longer trials: the start-up cost amortised
    python tools/bench_sweep.py --rounds 3          # median of 3 alternated rounds

The 8 trials: the plan of ``--param optimizer.lr=loguniform:1e-3:1e-2 --param
layers[0].units=choice:64,128 --trials 8 --seed 0`` (the same values in every variant), metric
val_accuracy, FIFO (no early stopping: every variant does the same work). Each variant is a fresh
process, alternated round by round, timed from the process's start to its end (imports, data
loading, kernel loading, Ray's start and shutdown all included):

    sequential   nngraph.train of each trial's spec into a run directory, one after another, in one
                 process with Numba's default threads (the machine's cores)
    sequential-1t  the same with one Numba thread (what each Ray trial gets with 1 CPU)
    ray-1cpu     nngraph sweep on a local Ray with 1 CPU (one trial at a time, 1 thread)
    ray-2cpu     nngraph sweep on a local Ray with 2 CPUs (two trials at a time, 1 thread each)
    ray-startup  ray.init + ray.shutdown alone: Ray's fixed cost

Target (issue 14): ray-2cpu <= 0.6x sequential.
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

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_mlp.json"
PARAMS = ["optimizer.lr=loguniform:1e-3:1e-2", "layers[0].units=choice:64,128"]
VARIANTS = ("sequential", "sequential-1t", "ray-1cpu", "ray-2cpu", "ray-startup")


def child(variant: str, epochs: int, trials: int, out: Path) -> None:
    t0 = time.perf_counter()
    import nngraph

    fixed = {"train.epochs": epochs, "train.validation_split": 0.2, **json.loads(os.environ.get("BENCH_SWEEP_SET", "{}"))}
    if variant.startswith("sequential"):
        from nngraph.scale.space import parse_params, plan_trials
        from nngraph.workflow import apply_overrides

        spec = apply_overrides(nngraph.load_spec(SPEC), fixed)
        for i, values in enumerate(plan_trials(parse_params(PARAMS), trials, 0)):
            nngraph.train(apply_overrides(spec, values), run_dir=out / f"trial_{i:03d}", progress="none",
                          log=lambda s: None)
    elif variant == "ray-startup":
        import ray

        from nngraph.scale import init_ray

        init_ray(None, 2)
        ray.shutdown()
    else:
        cpus = 1 if variant == "ray-1cpu" else 2
        nngraph.sweep(SPEC, sweep_dir=out / "sweep", params=PARAMS, trials=trials, metric="val_accuracy",
                      mode="max", overrides=fixed, num_cpus=cpus, cpus_per_trial=1, seed=0,
                      log=lambda s: None, stream=open(os.devnull, "w"))
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def run_variant(variant: str, epochs: int, trials: int) -> float:
    env = dict(os.environ, **({"NUMBA_NUM_THREADS": "1"} if variant == "sequential-1t" else {}))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--child", variant, "--epochs", str(epochs),
                            "--trials", str(trials), "--out", tmp], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{r.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--child", choices=VARIANTS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.epochs, args.trials, args.out)
        return
    run_variant("sequential", 1, 1)  # a warm kernel cache for every variant
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for k in range(args.rounds):
        order = VARIANTS if k % 2 == 0 else tuple(reversed(VARIANTS))
        for v in order:
            times[v].append(run_variant(v, args.epochs, args.trials))
    seq = statistics.median(times["sequential"])
    print(f"{args.trials} trials of digits_mlp, {args.epochs} epochs each, {os.cpu_count()} cores; "
          f"median wall seconds of {args.rounds} round(s), whole process")
    print(f"{'variant':<14} {'seconds':>8} {'vs sequential':>14}")
    for v in VARIANTS:
        t = statistics.median(times[v])
        print(f"{v:<14} {t:8.1f} {t / seq:13.2f}x")
    # the best a 2-CPU sweep could do: Ray's start-up, then the trials two at a time at the speed
    # of one thread with no cost of their own
    ideal = statistics.median(times["ray-startup"]) + statistics.median(times["sequential-1t"]) / 2
    print(f"ceiling on 2 CPUs (start-up + sequential-1t / 2): {ideal:.1f} s = {ideal / seq:.2f}x sequential")
    ratio = statistics.median(times["ray-2cpu"]) / seq
    print(f"target ray-2cpu <= 0.60x sequential: {'met' if ratio <= 0.6 else 'not met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
