"""Training-step speed over a grid of layer shapes: nngraph vs PyTorch's CPU build.

    python tools/bench_shapes.py                  # every family, 1 and 2 threads
    python tools/bench_shapes.py --only dense     # one family (dense, conv2d, conv1d, recurrent)
    python tools/bench_shapes.py --quick --rounds 1 --repeats 1     # a representative subset, fast

Each grid point is a small network built around one layer, trained a full step at a time (gather
the batch, forward, cross-entropy, backward, SGD update), in nngraph and as the identical PyTorch
module (tools/spec_torch.py builds it from the same spec dict):

- dense:     (inputs) -> dense(units, relu) -> dense(10);
             inputs {64, 784, 3072, 8192} x units {64, 512, 2048} x batch {16, 128, 1024}  (36 points)
- conv2d:    (C, S, S) -> conv2d(F, k, stride, padding, relu) -> maxpool2d 2 -> flatten -> dense(10);
             C->F {1->16, 3->32, 32->64, 64->128} x k {1, 3, 5} x stride {1, 2} x padding
             {valid, same} x S {28, 32, 64} x batch {32, 128}  (288 points)
- conv1d:    (C, L) -> conv1d(F, k, stride, "same", relu) -> maxpool1d 2 -> flatten -> dense(10);
             C->F {1->32, 16->64, 64->64} x k {3, 5} x stride {1, 2} x L {100, 400} x batch {32, 128}
             (48 points)
- recurrent: (T, 32) -> rnn/lstm/gru(H, last state; the GRU linear_before_reset, PyTorch's variant)
             -> dense(10); kind x H {32, 128, 512} x T {10, 100} x batch {8, 64, 256} x
             {uni, bi}directional  (108 points)

``--quick`` keeps 4 points per family (small, medium and large shapes; see QUICK).

Measurement: one process per (family, contender, thread count, round) measures all of that
family's points; the rounds alternate the contenders (tools/bench_train.py's child protocol:
``--child --side ...``, JSON on stdout, threads pinned through the environment). Per point: one
warm-up step, one probe step that sizes the repeat (enough steps for ~0.1 s, at least one), then
the best of ``--repeats`` repeats (a probe step of 0.5 s or more is the round's only timing);
the best over the rounds is reported. A point that nngraph or
PyTorch cannot build (or run) is reported with the reason, never dropped.

FLOP count: the multiply-adds of the step's products x 2 (forward; backward dW and, except for the
first layer, whose input gradient is not needed, the input gradient). ``%FMA`` = the achieved
FLOP rate / the register-only FMA peak at that thread count (tools/fma_peak.py, measured once per
thread count in its own process): where PyTorch is already near 100%, the target is that ceiling,
not a ratio. PyTorch is a benchmark peer only; nngraph never imports it.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: bench_train, spec_torch, fma_peak
from bench_train import (Bench, _data, _nngraph_runner, _torch_available,  # noqa: E402
                         _torch_runner, run_children)

FAMILIES = ("dense", "conv2d", "conv1d", "recurrent")
SGD = {"type": "sgd", "lr": 0.01}
CLASSES = 10
TARGET_SECONDS = 0.1     # one timed repeat lasts at least this long (or one step)
LONG_STEP = 0.5          # a probe step at least this long is the point's only timing in its round
QUICK = {
    "dense 64x64 b16", "dense 784x512 b128", "dense 3072x2048 b128", "dense 8192x512 b1024",
    "conv2d 1->16 k5 s1 same 28px b128", "conv2d 3->32 k3 s1 same 32px b128",
    "conv2d 32->64 k3 s2 valid 32px b32", "conv2d 64->128 k1 s1 valid 28px b32",
    "conv1d 1->32 k5 s1 L400 b32", "conv1d 16->64 k3 s1 L100 b128",
    "conv1d 64->64 k5 s2 L400 b32", "conv1d 16->64 k5 s2 L100 b32",
    "rnn h512 t10 b8", "lstm h128 t100 b64", "gru h128 t10 b256 bi", "lstm h32 t100 b8 bi",
}


@dataclass
class Point:
    """One grid point: a network (nngraph spec) around one layer shape at one batch size."""

    family: str
    label: str
    spec: dict[str, Any]
    input_shape: tuple[int, ...]
    batch: int
    flops: float                 # FLOP of one training step (the whole batch)

    def bench(self) -> Bench:
        from spec_torch import torch_module  # tools/, next to this script

        return Bench(self.label, self.spec, lambda: torch_module(self.spec), self.input_shape, CLASSES,
                     (self.batch,))


def _spec(name: str, shape: tuple[int, ...], layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "inputs": {"x": {"shape": list(shape)}},
            "layers": layers + [{"type": "dense", "units": CLASSES}], "loss": "cross_entropy", "optimizer": SGD}


def _head_macs(batch: int, features: int) -> int:
    """The final dense(10): forward, dW and the input gradient."""
    return 3 * batch * features * CLASSES


def dense_points() -> list[Point]:
    out = []
    for i, u, b in itertools.product((64, 784, 3072, 8192), (64, 512, 2048), (16, 128, 1024)):
        spec = _spec("shape_dense", (i,), [{"type": "dense", "units": u, "activation": "relu"}])
        macs = 2 * b * i * u + _head_macs(b, u)  # first layer: forward + dW only
        out.append(Point("dense", f"dense {i}x{u} b{b}", spec, (i,), b, 2.0 * macs))
    return out


def _conv_out(n: int, k: int, s: int, pad: str) -> int:
    return -(-n // s) if pad == "same" else (n - k) // s + 1


def conv2d_points() -> list[Point]:
    out = []
    for (c, f), k, s, pad, size, b in itertools.product(((1, 16), (3, 32), (32, 64), (64, 128)), (1, 3, 5),
                                                        (1, 2), ("valid", "same"), (28, 32, 64), (32, 128)):
        o = _conv_out(size, k, s, pad)
        layers = [{"type": "conv2d", "filters": f, "kernel": k, "stride": s, "padding": pad, "activation": "relu"},
                  {"type": "maxpool2d", "size": 2}, {"type": "flatten"}]
        macs = 2 * b * f * o * o * c * k * k + _head_macs(b, f * (o // 2) ** 2)
        out.append(Point("conv2d", f"conv2d {c}->{f} k{k} s{s} {pad} {size}px b{b}",
                         _spec("shape_conv2d", (c, size, size), layers), (c, size, size), b, 2.0 * macs))
    return out


def conv1d_points() -> list[Point]:
    out = []
    for (c, f), k, s, n, b in itertools.product(((1, 32), (16, 64), (64, 64)), (3, 5), (1, 2), (100, 400),
                                                (32, 128)):
        o = _conv_out(n, k, s, "same")
        layers = [{"type": "conv1d", "filters": f, "kernel": k, "stride": s, "padding": "same", "activation": "relu"},
                  {"type": "maxpool1d", "size": 2}, {"type": "flatten"}]
        macs = 2 * b * f * o * c * k + _head_macs(b, f * (o // 2))
        out.append(Point("conv1d", f"conv1d {c}->{f} k{k} s{s} L{n} b{b}",
                         _spec("shape_conv1d", (c, n), layers), (c, n), b, 2.0 * macs))
    return out


def recurrent_points(features: int = 32) -> list[Point]:
    out = []
    for kind, h, t, b, bi in itertools.product(("rnn", "lstm", "gru"), (32, 128, 512), (10, 100), (8, 64, 256),
                                               (False, True)):
        layer: dict[str, Any] = {"type": kind, "units": h, "bidirectional": bi}
        if kind == "gru":
            layer["linear_before_reset"] = True
        gates, nd = {"rnn": 1, "lstm": 4, "gru": 3}[kind], 2 if bi else 1
        # per direction and time step: forward x W^T + h R^T; backward dW, dR, dh_prev = da R
        # (no dx: the layer reads the network's input)
        macs = b * t * nd * gates * h * (2 * features + 3 * h) + _head_macs(b, nd * h)
        out.append(Point("recurrent", f"{kind} h{h} t{t} b{b}" + (" bi" if bi else ""),
                         _spec(f"shape_{kind}", (t, features), [layer]), (t, features), b, 2.0 * macs))
    return out


def points(family: str | None = None, match: str | None = None, quick: bool = False) -> list[Point]:
    """The grid (one family or all), filtered by a label substring and by ``quick``."""
    builders = {"dense": dense_points, "conv2d": conv2d_points, "conv1d": conv1d_points,
                "recurrent": recurrent_points}
    pts = [p for fam in ([family] if family else FAMILIES) for p in builders[fam]()]
    return [p for p in pts if (not match or match in p.label) and (not quick or p.label in QUICK)]


# ---- child: one contender, one thread count, all points of one family ---------------------------

def measure_point(point: Point, side: str, repeats: int) -> list[float]:
    """Seconds per step: warm-up step, probe step, then ``repeats`` timings of enough steps for
    TARGET_SECONDS (a probe that alone lasts that long is the first timing, and the only one when
    it lasts LONG_STEP: the big points would otherwise dominate the grid's run time)."""
    bench = point.bench()
    floats = point.batch * math.prod(point.input_shape)
    x, y = _data(bench, point.batch, 8 if floats < 4_000_000 else 2)  # big points: little spare data
    run = (_nngraph_runner if side == "nngraph" else _torch_runner)(bench, point.batch, x, y)
    run(1)  # JIT cache load, first-touch allocations, BLAS buffers
    probe = run(1)
    if probe >= LONG_STEP:  # one step this long is a stable timing; repeating it only costs time
        return [probe]
    if probe >= TARGET_SECONDS:
        return [probe] + [run(1) for _ in range(repeats - 1)]
    steps = max(1, min(2000, math.ceil(TARGET_SECONDS / probe)))
    return [run(steps) / steps for _ in range(repeats)]


def child(args) -> None:
    """Measure every selected point for one side; JSON to stdout (times and per-point errors)."""
    out: dict[str, Any] = {"side": args.side, "threads": args.threads, "times": {}, "errors": {}}
    if args.side == "fma":
        from fma_peak import fma_peak_gflops  # tools/, next to this script

        out["fma_peak_gflops"] = fma_peak_gflops(args.threads)
        print(json.dumps(out))
        return
    if args.side == "torch":
        import torch

        torch.set_num_threads(args.threads)
        out["torch"] = torch.__version__
    for p in points(args.only, args.match, args.quick):
        try:
            out["times"][p.label] = measure_point(p, args.side, args.repeats)
        except Exception as e:  # noqa: BLE001 - a point that cannot be built is reported, not fatal
            out["errors"][p.label] = f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]
        if p.flops > 1e10:  # free a big point's buffers now; on every point it cost 0.05-0.2 s each
            gc.collect()
    print(json.dumps(out))


# ---- parent: alternate the children, combine, report ------------------------------------------

def combine(parts: list[dict[str, Any]], pts: list[Point], threads: int, peak: float) -> list[dict[str, Any]]:
    """Best time per side over the rounds -> one row per point (errors kept with their reason)."""
    times: dict[tuple[str, str], list[float]] = {}
    errors: dict[tuple[str, str], str] = {}
    for part in parts:
        for label, ts in part["times"].items():
            times.setdefault((part["side"], label), []).extend(ts)
        for label, msg in part["errors"].items():
            errors[(part["side"], label)] = msg
    rows = []
    for p in pts:
        row: dict[str, Any] = {"family": p.family, "point": p.label, "threads": threads, "batch": p.batch,
                               "gflop_per_step": p.flops / 1e9, "fma_peak_gflops": peak}
        for side in ("nngraph", "torch"):
            if (side, p.label) in times:
                best = min(times[(side, p.label)])
                row[side] = p.batch / best
                row[f"{side}_fma"] = p.flops / best / 1e9 / peak
            elif (side, p.label) in errors:
                row[f"{side}_error"] = errors[(side, p.label)]
        if "nngraph" in row and "torch" in row:
            row["ratio"] = row["nngraph"] / row["torch"]
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]], title: str) -> list[str]:
    """Min, median, the points below 1.0x and those where PyTorch reaches >= 90% of the FMA peak."""
    ratios = [r for r in rows if "ratio" in r]
    lines = [f"{title}: {len(rows)} points"]
    if ratios:
        vals = [r["ratio"] for r in ratios]
        lo = min(ratios, key=lambda r: r["ratio"])
        below = [r for r in ratios if r["ratio"] < 1.0]
        lines.append(f"  ratio min {lo['ratio']:.2f}x ({lo['point']}, {lo['threads']}t), "
                     f"median {statistics.median(vals):.2f}x; below 1.0x: {len(below)}")
        lines += [f"    {r['ratio']:.2f}x  {r['point']} ({r['threads']}t)"
                  for r in sorted(below, key=lambda r: r["ratio"])]
    near = [r for r in rows if r.get("torch_fma", 0) >= 0.9]
    lines.append(f"  PyTorch >= 90% of the FMA peak: {len(near)}")
    lines += [f"    {r['point']} ({r['threads']}t): PyTorch {r['torch_fma']:.0%}, ours {r.get('nngraph_fma', 0):.0%}"
              for r in near]
    failed = [r for r in rows if "nngraph_error" in r or "torch_error" in r]
    for r in failed:
        for side in ("nngraph", "torch"):
            if f"{side}_error" in r:
                lines.append(f"  not measured ({side}): {r['point']} ({r['threads']}t): {r[f'{side}_error']}")
    return lines


def _cells(r: dict[str, Any]) -> list[str]:
    def sps(side: str) -> str:
        return f"{r[side]:,.0f}" if side in r else ("error" if f"{side}_error" in r else "-")
    return [r["family"], r["point"], str(r["threads"]), sps("nngraph"), sps("torch"),
            f"{r['ratio']:.2f}x" if "ratio" in r else "-",
            f"{r['nngraph_fma']:.0%}" if "nngraph_fma" in r else "-",
            f"{r['torch_fma']:.0%}" if "torch_fma" in r else "-"]


HEADER = ["family", "point", "threads", "nngraph/s", "torch/s", "ratio", "ours %FMA", "torch %FMA"]


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as an aligned text table, or as a Markdown table."""
    cells = [_cells(r) for r in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---|" * 2 + "---:|" * 6]
                         + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(x) for x in col) for col in zip(HEADER, *cells)]
    fmt = lambda c: "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths)))  # noqa: E731
    return "\n".join([fmt(HEADER)] + [fmt(c) for c in cells])


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=FAMILIES, help="one family")
    ap.add_argument("--match", help="only points whose label contains this text (e.g. 'b128', 'lstm h512')")
    ap.add_argument("--threads", type=int, action="append", help="thread counts, repeatable (default: 1 and 2)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of one process per contender")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per point within a round")
    ap.add_argument("--no-torch", action="store_true", help="nngraph only")
    ap.add_argument("--quick", action="store_true", help="4 representative points per family")
    ap.add_argument("--json", help="also write every row to this JSON file")
    ap.add_argument("--markdown", action="store_true", help="print the summary and table as Markdown")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", default="nngraph", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.threads = args.threads[0]
        child(args)
        return
    if args.rounds < 1 or args.repeats < 1:
        ap.error("--rounds and --repeats must be at least 1")
    sides = ["nngraph"] + ([] if args.no_torch or not _torch_available() else ["torch"])
    families = [f for f in ([args.only] if args.only else FAMILIES) if points(f, args.match, args.quick)]
    if not families:
        ap.error("no grid point matches")
    filters = ((["--match", args.match] if args.match else []) + (["--quick"] if args.quick else [])
               + ["--repeats", str(args.repeats)])
    t0, rows = time.perf_counter(), []
    for threads in args.threads or [1, 2]:
        peak = run_children(__file__, ["fma"], threads, 1, [])[0]["fma_peak_gflops"]
        _progress(f"FMA peak at {threads} thread(s): {peak:.1f} GFLOP/s")
        for fam in families:
            parts = run_children(__file__, sides, threads, args.rounds, ["--only", fam] + filters,
                                 lambda m, fam=fam: _progress(f"{fam}: {m}"))
            rows += combine(parts, points(fam, args.match, args.quick), threads, peak)
    _progress(f"done in {time.perf_counter() - t0:.0f} s")
    lines = []
    for threads in sorted({r["threads"] for r in rows}):
        lines += summary([r for r in rows if r["threads"] == threads], f"{threads} thread(s)")
    lines += summary(rows, "overall")
    peaks = ", ".join(f"{t} thread(s) {p:.1f}" for t, p in sorted({(r["threads"], r["fma_peak_gflops"]) for r in rows}))
    head = f"FMA peak GFLOP/s: {peaks}; ratio = nngraph / PyTorch samples/s (best of each)"
    if args.markdown:
        print(head + "\n\n```\n" + "\n".join(lines) + "\n```\n\n" + table(rows, markdown=True))
    else:
        print(head + "\n" + "\n".join(lines) + "\n\n" + table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
