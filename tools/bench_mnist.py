"""MNIST with the LeNet-style spec: test accuracy after the spec's 2 epochs, and wall time.

    python tools/bench_mnist.py                               # /work/shared/data/mnist, specs/mnist_lenet.json
    python tools/bench_mnist.py --data path/to/mnist --out lenet.onnx --threads 1

Trains exactly what ``nngraph train specs/mnist_lenet.json --data <folder>`` trains (same workflow
call), prints one line per epoch, the test accuracy, the wall time of training (epochs only) and of
the whole run (loading, training, evaluation, export), then verifies the exported model in
onnxruntime. Thread counts are fixed before NumPy/Numba load (``--threads``), so runs compare.
This is a benchmark, not a unit test: it needs the full MNIST files and a minute or more.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data/mnist", help="folder of MNIST IDX files")
    ap.add_argument("--spec", default=str(ROOT / "specs" / "mnist_lenet.json"))
    ap.add_argument("--out", default=None, help="where to write the ONNX model (default: a temp file)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS and Numba threads (default: as set)")
    ap.add_argument("--target", type=float, default=0.988, help="accuracy to report as reached or not")
    args = ap.parse_args()
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    from nngraph.runtime import verify
    from nngraph.workflow import train

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "mnist_lenet.onnx"
    t0 = time.perf_counter()
    result = train(args.spec, data=args.data, output=out, log=lambda s: print(s, flush=True))
    total = time.perf_counter() - t0
    fit = sum(r.seconds for r in result.history.records)
    acc = result.test["accuracy"]
    rep = verify(out)
    threads = os.environ.get("NUMBA_NUM_THREADS", "default")
    print(f"mnist_lenet: test accuracy {acc:.4f} after {len(result.history.records)} epochs "
          f"({'>=' if acc >= args.target else 'BELOW'} {args.target}); training {fit:.1f} s, whole run "
          f"{total:.1f} s (threads: {threads}); onnxruntime verify {'ok' if rep.ok else 'FAILED'} "
          f"(max abs diff {rep.max_abs:.2e})")
    sys.exit(0 if acc >= args.target and rep.ok else 1)


if __name__ == "__main__":
    main()
