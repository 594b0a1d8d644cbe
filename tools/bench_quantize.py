"""float32 vs int8 exports side by side: file size, test accuracy, onnxruntime latency.

    python tools/bench_quantize.py                                  # digits_cnn, mnist_lenet, digits_mlp
    python tools/bench_quantize.py --only digits_mlp --epochs 10
    python tools/bench_quantize.py --mnist ../shared/data/mnist --threads 1

Each network is trained with its spec (``--epochs`` overrides), exported as float32 and as int8
(``quantize_model``: static QDQ, per-channel Conv/Gemm weights, calibrated on 256 seeded training
samples), and both files are evaluated on the test split with onnxruntime. Latency: one
onnxruntime session per file (``--threads`` intra-op threads), batch 1 and 64, the median of
``--repeats`` timed runs after warm-up, the two files alternated so machine noise hits both.
Targets (issue 13): int8 size <= 30% of float32, accuracy drop <= 0.5 points.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ("digits_cnn", "mnist_lenet", "digits_mlp")
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def _latency(sessions: dict[str, object], x: np.ndarray, repeats: int) -> dict[str, float]:
    name = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        for _ in range(3):
            s.run(None, {name[next(iter(name))]: x})
    for _ in range(repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {name[k]: x})
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def bench(net: str, epochs: int | None, mnist: Path, threads: int, repeats: int) -> dict:
    import onnxruntime as ort

    from nngraph.quantize import quantize_model
    from nngraph.workflow import train

    data = str(mnist) if net.startswith("mnist") else None
    with tempfile.TemporaryDirectory() as d:
        f32, i8 = Path(d) / "f32.onnx", Path(d) / "int8.onnx"
        result = train(str(ROOT / "specs" / f"{net}.json"), data=data, epochs=epochs, output=f32, progress="none",
                       log=lambda s: None)
        quantize_model(result.model, result.dataset.x, i8)
        ds = result.dataset
        feeds = result.model._feeds(ds.x_test)
        x_test = np.asarray(next(iter(feeds.values())), np.float32)
        y_test = np.asarray(ds.y_test)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                    for k, p in (("float32", f32), ("int8", i8))}
        row = {"net": net, "size_float32": f32.stat().st_size, "size_int8": i8.stat().st_size}
        for k, s in sessions.items():
            name = s.get_inputs()[0].name
            pred = np.concatenate([s.run(None, {name: x_test[i:i + 512]})[0] for i in range(0, len(x_test), 512)])
            row[f"acc_{k}"] = float(np.mean(pred.argmax(axis=1) == y_test))
        for b in (1, 64):
            lat = _latency(sessions, np.ascontiguousarray(x_test[:b]), repeats)
            row[f"ms_b{b}_float32"], row[f"ms_b{b}_int8"] = lat["float32"], lat["int8"]
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=NETWORKS, action="append")
    ap.add_argument("--epochs", type=int, default=None, help="override each spec's epochs")
    ap.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="the MNIST folder (IDX files)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    rows = []
    for net in args.only or NETWORKS:
        print(f"[{time.strftime('%H:%M:%S')}] {net}: training, exporting, measuring", file=sys.stderr, flush=True)
        rows.append(bench(net, args.epochs, args.mnist, args.threads, args.repeats))
    head = (f"{'network':<12} {'float32 KB':>10} {'int8 KB':>8} {'size':>6} {'acc f32':>8} {'acc int8':>8} "
            f"{'drop pts':>8} {'b1 f32 ms':>9} {'b1 int8':>8} {'b64 f32':>8} {'b64 int8':>8} {'b64 ratio':>9}")
    print(f"onnxruntime, {args.threads} thread(s); latency = median of {args.repeats}")
    print(head)
    for r in rows:
        print(f"{r['net']:<12} {r['size_float32'] / 1024:>10.1f} {r['size_int8'] / 1024:>8.1f} "
              f"{r['size_int8'] / r['size_float32']:>6.0%} {r['acc_float32']:>8.4f} {r['acc_int8']:>8.4f} "
              f"{(r['acc_float32'] - r['acc_int8']) * 100:>8.2f} {r['ms_b1_float32']:>9.3f} {r['ms_b1_int8']:>8.3f} "
              f"{r['ms_b64_float32']:>8.3f} {r['ms_b64_int8']:>8.3f} {r['ms_b64_int8'] / r['ms_b64_float32']:>8.2f}x")


if __name__ == "__main__":
    main()
