"""Start-up latency: ``nngraph --help``, ``nngraph check specs/mnist_resnet.json`` (validation and
shapes load no Numba; target <= 0.5 s), and how long a new ``nngraph train`` process takes to reach
its first training step with the JIT cache in place (targets: <= 0.3 s and <= 1 s).

    python tools/bench_startup.py [--repeats 5]

The train measurement runs the real CLI entry point in a fresh interpreter; a wrapper around
Trainer.step prints the wall-clock time at which the first step has completed, compared with the time the process was
spawned. A first run fills the on-disk JIT cache and is not counted.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_mlp.json"

CHILD = r"""
import sys, time, os
import nngraph.train.trainer as T
_orig = T.Trainer.step
def step(self, *a, **k):
    out = _orig(self, *a, **k)  # the first step completes (its kernels loaded from the cache) ...
    print(f"FIRST_STEP {time.time():.6f}", file=sys.stderr, flush=True)
    os._exit(0)  # ... then stop: the rest of the run is not start-up
T.Trainer.step = step
from nngraph.cli import main
sys.argv = ["nngraph", "train", sys.argv[1], "--epochs", "1", "--quiet"]
main()
"""


def time_help() -> float:
    t0 = time.time()
    subprocess.run(["nngraph", "--help"], capture_output=True, check=True)
    return time.time() - t0


def time_check(spec: Path) -> float:
    t0 = time.time()
    subprocess.run(["nngraph", "check", str(spec)], capture_output=True, check=True)
    return time.time() - t0


def time_first_step() -> float:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, str(SPEC)], capture_output=True, text=True)
    for line in out.stderr.splitlines():
        if line.startswith("FIRST_STEP"):
            return float(line.split()[1]) - t0
    raise RuntimeError(out.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    time_first_step()  # fill the JIT cache
    helps = [time_help() for _ in range(args.repeats)]
    check_spec = ROOT / "specs" / "mnist_resnet.json"
    checks = [time_check(check_spec) for _ in range(args.repeats)]
    firsts = [time_first_step() for _ in range(args.repeats)]
    print(f"nngraph --help:                 median {statistics.median(helps):.3f} s  (min {min(helps):.3f})")
    print(f"nngraph check {check_spec.name}: median {statistics.median(checks):.3f} s  (min {min(checks):.3f})")
    print(f"nngraph train -> first step:    median {statistics.median(firsts):.3f} s  (min {min(firsts):.3f})")


if __name__ == "__main__":
    main()
