"""Data loading at the size users have: nngraph's CSV and .npy paths beside numpy's.

    python tools/bench_data.py                 # 1,000,000 rows x 50 columns (a ~480 MB CSV)
    python tools/bench_data.py --rows 100000   # smaller

Generates a CSV (and the same table as .npy) in a temporary folder, then runs each reader in its
own process and prints its wall time and peak memory (VmHWM, the process's own peak resident
size: ``ru_maxrss`` would carry over the parent's peak across exec on Linux; the resident size of the
interpreter with numpy and nngraph.data imported is measured first, "base", the difference "added";
"anon MB" is the anonymous resident memory at the end: pages of a mapped file are resident while
used but belong to the page cache, which the kernel reclaims, so they are not in it):

- ``numpy.loadtxt`` float32                 — numpy's C reader, the reference
- nngraph ``load_source`` + ``fit_inputs``  — what ``nngraph train`` does with a .csv before training
- ``numpy.load``                            — a .npy read into memory
- ``numpy.load(mmap_mode="r")`` + one pass  — the whole file mapped
- nngraph ``.npy`` + ``fit_inputs`` + one epoch of batch gathers (4096 rows, shuffled) — rows read
  from the file on demand (``data.arrays.NpyRows``)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

READERS = {
    "numpy.loadtxt (float32)": """
import numpy as np
x = np.loadtxt(CSV, delimiter=",", dtype=np.float32, skiprows=1)
rows = len(x)""",
    "nngraph load_source (.csv)": """
from nngraph.data import fit_inputs, load_source
ds = load_source(CSV)
x = fit_inputs(ds.x, {"x": ((COLS - 1,), "float32")})["x"]
rows = len(x)""",
    "numpy.load (.npy)": """
import numpy as np
x = np.load(NPY)
rows = len(x)""",
    "numpy.load mmap + one pass": """
import numpy as np
x = np.load(NPY, mmap_mode="r")
s = 0.0
for lo in range(0, len(x), 65536):
    s += float(x[lo:lo + 65536].sum())
rows = len(x)""",
    "nngraph .npy rows + one epoch": """
import numpy as np
from nngraph.data import fit_inputs, load_source
ds = load_source(NPY, {"y": NPY_Y})
x = fit_inputs(ds.x, {"x": ((COLS,), "float32")})["x"]
order = np.random.default_rng(0).permutation(len(x))
buf = np.empty((4096, COLS), np.float32)
for lo in range(0, len(x) - 4095, 4096):
    np.take(x, order[lo:lo + 4096], axis=0, out=buf)
rows = len(x)""",
}

RUNNER = """
import json, resource, sys, time
import numpy as np
import nngraph.data  # imported for every reader, so "base" is the same interpreter
CSV, NPY, NPY_Y, COLS = {csv!r}, {npy!r}, {npy_y!r}, {cols}
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024  # resident now
t0 = time.perf_counter()
{body}
seconds = time.perf_counter() - t0
status = {{l.split(":")[0]: l.split()[1] for l in open("/proc/self/status") if l.split()[1:]}}
peak, anon = int(status["VmHWM"]), int(status.get("RssAnon", 0))
print(json.dumps({{"seconds": seconds, "base_kb": base, "peak_kb": peak, "anon_kb": anon, "rows": rows}}))
"""


def make_files(folder: Path, rows: int, cols: int) -> tuple[Path, Path, Path]:
    """A CSV with a header (features, then the target column last) and the features as .npy."""
    csv, npy, npy_y = folder / "table.csv", folder / "x.npy", folder / "y.npy"
    x = np.lib.format.open_memmap(npy, "w+", np.float32, (rows, cols))
    header = ",".join([f"f{j}" for j in range(cols - 1)] + ["y"])
    with open(csv, "w") as f:
        f.write(header + "\n")
        for lo in range(0, rows, 50_000):
            block = np.random.default_rng(lo).standard_normal((min(50_000, rows - lo), cols)).astype(np.float32)
            x[lo:lo + len(block)] = block
            np.savetxt(f, block, fmt="%.6f", delimiter=",")
    x.flush()
    del x
    np.save(npy_y, np.zeros(rows, np.float32))
    return csv, npy, npy_y


def measure(body: str, csv: Path, npy: Path, npy_y: Path, cols: int) -> dict:
    code = RUNNER.format(csv=str(csv), npy=str(npy), npy_y=str(npy_y), cols=cols, body=body.strip())
    env = {"PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--dir", default=None,
                    help="Keep the generated files in this folder and reuse them on the next run "
                         "(default: a temporary folder, removed afterwards).")
    ap.add_argument("--repeat", type=int, default=1, help="Rounds (readers alternate); the best time counts.")
    args = ap.parse_args()
    with (contextlib.nullcontext(args.dir) if args.dir else tempfile.TemporaryDirectory()) as tmp:
        t0 = time.perf_counter()
        folder = Path(tmp) / f"{args.rows}x{args.cols}"
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / "done").exists():
            csv, npy, npy_y = folder / "table.csv", folder / "x.npy", folder / "y.npy"
        else:
            csv, npy, npy_y = make_files(folder, args.rows, args.cols)
            (folder / "done").write_text("")
        print(f"{args.rows:,} rows x {args.cols} columns: CSV {csv.stat().st_size / 1e6:.0f} MB, .npy "
              f"{npy.stat().st_size / 1e6:.0f} MB (float32 array {args.rows * args.cols * 4 / 1e6:.0f} MB); "
              f"generated in {time.perf_counter() - t0:.0f} s")
        print(f"{'reader':<32} {'seconds':>8} {'peak MB':>8} {'base MB':>8} {'added MB':>9} {'anon MB':>8}")
        results: dict[str, dict] = {}
        for _ in range(args.repeat):
            for name, body in READERS.items():
                r = measure(body, csv, npy, npy_y, args.cols)
                assert r["rows"] == args.rows, r
                if name not in results or r["seconds"] < results[name]["seconds"]:
                    results[name] = r
        for name, r in results.items():
            print(f"{name:<32} {r['seconds']:8.2f} {r['peak_kb'] / 1024:8.0f} {r['base_kb'] / 1024:8.0f} "
                  f"{(r['peak_kb'] - r['base_kb']) / 1024:9.0f} {r['anon_kb'] / 1024:8.0f}")


if __name__ == "__main__":
    main()
