"""Training throughput of nngraph vs PyTorch's CPU build, measured in the same run.

    python tools/bench_train.py                  # every bench, 1 and 2 threads
    python tools/bench_train.py --only mlp --threads 2 --rounds 5

For each network and batch size it times full training steps (gather the batch, forward, loss,
backward, SGD update) and prints samples/s for nngraph and, when ``torch`` is importable, for the
identical network in PyTorch; the ratio is nngraph / PyTorch (best time of each). Every contender
runs in its own process, and the processes alternate over several rounds, so machine noise hits all
alike and neither side's idle BLAS/OpenMP threads can steal the other's cores (they did when both
ran in one process). It also prints the fraction of the float32 GEMM bound reached:
``gemm bound`` = time of the step's own matrix products alone (same shapes, on nngraph's GEMM
kernels, as im2col products for the convs) / step time, and ``of peak`` = the step's GEMM FLOP
rate / those kernels' rate on a large square product. Above 100% means the step beats its own
products run one by one (the convs' shifted-row products skip im2col's copies). ``ceiling`` is the
ratio no implementation could exceed here: samples/s if the step's products ran at the machine's
register-only FMA rate (tools/fma_peak.py) and nothing else took time, over PyTorch's samples/s.

Thread counts are fixed per process (BLAS and Numba read them at start-up).
PyTorch is a benchmark peer only; nngraph never imports it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: spec_torch, fma_peak
import nngraph  # noqa: F401,E402  (before numpy, as in the `nngraph` command: it tunes OpenBLAS's threads)
import numpy as np  # noqa: E402


@dataclass
class Bench:
    """One network to benchmark: the nngraph spec, the identical PyTorch module, the data shape."""

    label: str
    spec: dict[str, Any]                         # nngraph spec (inputs, layers, loss); optimizer = SGD
    torch_model: Callable[[], Any]               # () -> torch.nn.Module with the same architecture
    input_shape: tuple[int, ...]                 # one sample
    classes: int                                 # cross-entropy classes
    batch_sizes: tuple[int, ...]
    gemm_shapes: Callable[[int], list[tuple[int, int, int, bool, bool]]] | None = None
    input_dtype: str = "float32"
    torch_input: Callable[[np.ndarray], Any] | None = None  # converts the numpy batch for torch
    steps: int = 0                               # timed steps per repeat (0: auto from batch size)
    extra: dict[str, Any] = field(default_factory=dict)


def _mlp_spec() -> dict[str, Any]:
    return {"name": "bench_mlp", "inputs": {"x": {"shape": [784]}},
            "layers": [{"type": "dense", "units": 256, "activation": "relu"},
                       {"type": "dense", "units": 128, "activation": "relu"},
                       {"type": "dense", "units": 10}],
            "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.01}}


def _mlp_torch():
    import torch.nn as nn

    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def _mlp_gemms(batch: int) -> list[tuple[int, int, int, bool, bool]]:
    """(m, k, n, transpose_a, transpose_b) of every matrix product in one training step."""
    dims = [784, 256, 128, 10]
    out = []
    for i in range(3):
        fi, fo = dims[i], dims[i + 1]
        out.append((batch, fi, fo, False, True))       # forward   y = x W^T
        out.append((fo, batch, fi, True, False))       # backward  dW = dz^T x
        if i > 0:
            out.append((batch, fo, fi, False, False))  # backward  dx = dz W (not for the input)
    return out


def _recurrent_spec(kind: str) -> dict[str, Any]:
    """Input 16, hidden 128, sequence 50, last state -> dense 10, cross-entropy. The GRU uses
    linear_before_reset, the variant PyTorch (and cuDNN) implement, so the networks are identical."""
    layer: dict[str, Any] = {"type": kind, "units": 128}
    if kind == "gru":
        layer["linear_before_reset"] = True
    return {"name": f"bench_{kind}", "inputs": {"x": {"shape": [50, 16]}},
            "layers": [layer, {"type": "dense", "units": 10}],
            "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.01}}


def _recurrent_torch(kind: str) -> Callable[[], Any]:
    def make():
        import torch.nn as nn

        class LastState(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = getattr(nn, kind)(16, 128, batch_first=True)
                self.fc = nn.Linear(128, 10)

            def forward(self, x):
                out, _ = self.rnn(x)
                return self.fc(out[:, -1])
        return LastState()
    return make


def _lenet_spec() -> dict[str, Any]:
    """The specs/mnist_lenet.json network (conv 5x5 x16 same -> pool -> conv 5x5 x32 same -> pool ->
    dense 128 -> 10), trained with SGD like every bench."""
    conv = {"type": "conv2d", "kernel": 5, "padding": "same", "activation": "relu"}
    return {"name": "bench_lenet", "inputs": {"x": {"shape": [1, 28, 28]}},
            "layers": [{**conv, "filters": 16}, {"type": "maxpool2d", "size": 2},
                       {**conv, "filters": 32}, {"type": "maxpool2d", "size": 2},
                       {"type": "flatten"}, {"type": "dense", "units": 128, "activation": "relu"},
                       {"type": "dense", "units": 10}],
            "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.01}}


def _lenet_gemms(batch: int) -> list[tuple[int, int, int, bool, bool]]:
    """The step's products in the im2col formulation, each as one whole-batch GEMM: conv
    forward W (F, K) @ col (K, N P), dW = dz col^T, dcol = W^T dz (not for the first layer);
    then the two dense layers as in _mlp_gemms."""
    out = []
    for f, k, p, first in ((16, 25, 784, True), (32, 400, 196, False)):
        out.append((f, k, batch * p, False, False))
        out.append((f, batch * p, k, False, True))
        if not first:
            out.append((k, f, batch * p, True, False))
    for fi, fo in ((1568, 128), (128, 10)):
        out += [(batch, fi, fo, False, True), (fo, batch, fi, True, False), (batch, fo, fi, False, False)]
    return out


def _lenet_torch():
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10))


def _recurrent_gemms(gates: int) -> Callable[[int], list[tuple[int, int, int, bool, bool]]]:
    """The matrix products of one BPTT training step (T=50, I=16, H=128, dense 10)."""
    def shapes(batch: int) -> list[tuple[int, int, int, bool, bool]]:
        t, i, h, g = 50, 16, 128, gates * 128
        per_step = [(batch, h, g, False, True), (batch, g, h, False, False)] * t  # h R^T, dg R
        return per_step + [(batch * t, i, g, False, True),   # input projection, all steps at once
                           (g, batch * t, i, True, False),   # dW
                           (g, batch * t, h, True, False),   # dR
                           (batch, h, 10, False, True), (10, batch, h, True, False), (batch, 10, h, False, False)]
    return shapes


def _spec_file_bench(label: str, file: str, batch: int, drop: tuple[str, ...] = (), steps: int = 8) -> Bench:
    """A bench from a shipped spec (trained with SGD like every bench); ``drop`` removes layer types
    (the same network without dropout / batch norm, to measure what they cost)."""
    from spec_torch import torch_module, without_layers  # tools/, next to this script

    spec = json.loads((Path(__file__).resolve().parents[1] / "specs" / file).read_text())
    spec = without_layers({**spec, "optimizer": {"type": "sgd", "lr": 0.01}}, drop)
    spec.pop("data", None)
    shape = tuple(next(iter(spec["inputs"].values()))["shape"])
    return Bench(label, spec, lambda: torch_module(spec), shape, 10, (batch,), steps=steps)


def _transformer_spec() -> dict[str, Any]:
    """Sequence classification: 64 steps of 128 features -> 2 pre-norm blocks (4 heads, ff 512, GELU,
    no dropout) -> mean over time -> dense 10."""
    block = {"type": "transformer_block", "heads": 4, "ff_units": 512, "dropout": 0.0}
    return {"name": "bench_transformer", "inputs": {"x": {"shape": [64, 128]}},
            "layers": [block, dict(block), {"type": "sequence_pool", "mode": "mean"}, {"type": "dense", "units": 10}],
            "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.01}}


def _transformer_gemms(batch: int) -> list[tuple[int, int, int, bool, bool]]:
    """The dense layers' products of one training step, per block: forward x W^T, dW = dz^T x, dx = dz W
    for the Q/K/V, output and two feed-forward layers. Attention's own products (per sample and head,
    64 x 32 x 64) run inside its kernel and are left out, as is the classifier (0.01% of the FLOPs)."""
    r, f = batch * 64, 128
    out = []
    for _ in range(2):
        for fi, fo in ((f, 3 * f), (f, f), (f, 512), (512, f)):
            out += [(r, fi, fo, False, True), (fo, r, fi, True, False), (r, fo, fi, False, False)]
    return out


def _transformer_bench(label: str, causal: bool) -> Bench:
    from spec_torch import torch_module  # tools/, next to this script

    spec = _transformer_spec()
    for layer in spec["layers"][:2]:
        layer["causal"] = causal
    return Bench(label, spec, lambda: torch_module(spec), (64, 128), 10, (32,), _transformer_gemms, steps=10)


BENCHES: list[Bench] = [
    Bench("mlp 784-256-128-10", _mlp_spec(), _mlp_torch, (784,), 10, (32, 128, 512), _mlp_gemms),
    Bench("rnn 16-128 x50 -> 10", _recurrent_spec("rnn"), _recurrent_torch("RNN"), (50, 16), 10, (64,),
          _recurrent_gemms(1), steps=40),
    Bench("lstm 16-128 x50 -> 10", _recurrent_spec("lstm"), _recurrent_torch("LSTM"), (50, 16), 10, (64,),
          _recurrent_gemms(4), steps=20),
    Bench("gru 16-128 x50 -> 10", _recurrent_spec("gru"), _recurrent_torch("GRU"), (50, 16), 10, (64,),
          _recurrent_gemms(3), steps=20),
    Bench("lenet mnist 1x28x28", _lenet_spec(), _lenet_torch, (1, 28, 28), 10, (64, 256), _lenet_gemms,
          steps=12),
    _spec_file_bench("mnist_convnet", "mnist_convnet.json", 128),
    _spec_file_bench("mnist_convnet -dropout", "mnist_convnet.json", 128, ("dropout",)),
    _spec_file_bench("mnist_resnet", "mnist_resnet.json", 64),
    _spec_file_bench("mnist_resnet -batchnorm", "mnist_resnet.json", 64, ("batchnorm",)),
    _transformer_bench("transformer 2x(4h 128) x64", causal=False),
    _transformer_bench("transformer causal 2x(4h 128) x64", causal=True),
]


# ---- measurement -----------------------------------------------------------------------------

def _steps_for(batch: int) -> int:
    return max(20, min(400, 40_000 // batch))


def _nngraph_runner(bench: Bench, batch: int, x: np.ndarray, y: np.ndarray):
    from nngraph.model import Model
    from nngraph.spec import parse_spec

    model = Model.compile(parse_spec(bench.spec))
    trainer = model.trainer()
    feeds = model._feeds(x)
    t = model.targets(y)
    n = len(y)

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for s in range(steps):
            start = (s * batch) % (n - batch + 1)
            trainer.step(feeds, t, np.arange(start, start + batch))
        return time.perf_counter() - t0
    return run


def _torch_runner(bench: Bench, batch: int, x: np.ndarray, y: np.ndarray):
    import torch

    model = bench.torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt = bench.torch_input(x) if bench.torch_input else torch.from_numpy(x)
    yt = torch.from_numpy(y)
    xbuf, ybuf = xt[:batch].clone(), yt[:batch].clone()
    n = len(y)

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for s in range(steps):
            start = (s * batch) % (n - batch + 1)
            # the batch's rows copied into one buffer, as nngraph's step gathers them into its plan's
            # (a shuffled epoch's work); a slice would be a free view (dense 8192 -> 64 at batch 1024:
            # ~5 ms of a ~24 ms step)
            idx = torch.arange(start, start + batch)
            xb = torch.index_select(xt, 0, idx, out=xbuf)
            yb = torch.index_select(yt, 0, idx, out=ybuf)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0
    return run


def _gemm_runner(shapes: list[tuple[int, int, int, bool, bool]]):
    """The step's products alone, on the kernels nngraph trains with (nngraph.linalg: A^T as a
    strided view, B^T by the dot-product kernel), threaded as the layers thread them."""
    from nngraph.linalg.gemm import matmul, matmul_nt

    rng = np.random.default_rng(0)
    ops = []
    for m, k, n, ta, tb in shapes:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        ops.append((matmul_nt if tb else matmul, a.T if ta else a, b, out))
    for f, a, b, out in ops:  # compile outside the timing
        f(a, b, out)

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            for f, a, b, out in ops:
                f(a, b, out)
        return time.perf_counter() - t0
    return run


def peak_sgemm_gflops(size: int = 512, reps: int = 5) -> float:
    """The float32 GEMM rate of nngraph's kernels on a 512-square product (best of a few; larger squares
    spill the L2 cache without packing, which the layers' products never need)."""
    from nngraph.linalg.gemm import matmul

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    out = np.empty_like(a)
    matmul(a, b, out)
    best = min(_timed(lambda: matmul(a, b, out)) for _ in range(reps))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _data(bench: Bench, batch: int, batches: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs and class targets: ``batches`` batches' worth of samples."""
    rng = np.random.default_rng(0)
    n = batch * batches
    if bench.input_dtype == "int64":
        x = rng.integers(0, bench.extra.get("vocab", 2), size=(n,) + bench.input_shape).astype(np.int64)
    else:
        x = rng.random((n,) + bench.input_shape, dtype=np.float32)
    return x, rng.integers(0, bench.classes, size=n).astype(np.int64)


def measure_side(bench: Bench, batch: int, side: str, repeats: int) -> list[float] | None:
    """Seconds per step of one contender ('nngraph', 'torch' or 'gemm'), ``repeats`` timings."""
    x, y = _data(bench, batch)
    if side == "nngraph":
        run = _nngraph_runner(bench, batch, x, y)
    elif side == "torch":
        run = _torch_runner(bench, batch, x, y)
    elif bench.gemm_shapes is not None:
        run = _gemm_runner(bench.gemm_shapes(batch))
    else:
        return None
    steps = bench.steps or _steps_for(batch)
    run(max(3, steps // 10))  # warm-up: JIT cache load, BLAS buffers, allocator
    return [run(steps) / steps for _ in range(repeats)]


def selected(only: str | None) -> list[Bench]:
    return [b for b in BENCHES if not only or only.lower() in b.label.lower()]


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def child(args) -> None:
    """One contender in a subprocess whose thread counts are fixed by the environment."""
    out: dict[str, Any] = {"threads": args.threads, "side": args.side, "times": {}}
    if args.side == "torch":
        import torch

        torch.set_num_threads(args.threads)
        out["torch"] = torch.__version__
    if args.side == "gemm":
        from fma_peak import fma_peak_gflops  # tools/, next to this script

        out["peak_gflops"] = peak_sgemm_gflops()
        out["fma_peak_gflops"] = fma_peak_gflops(args.threads)
    for bench in selected(args.only):
        for batch in bench.batch_sizes:
            t = measure_side(bench, batch, args.side, args.repeats)
            if t is not None:
                out["times"][f"{bench.label}|{batch}"] = t
    print(json.dumps(out))


def combine(parts: list[dict[str, Any]], only: str | None) -> dict[str, Any]:
    """Best time per contender over every round -> the report's rows."""
    times: dict[tuple[str, str], list[float]] = {}
    for part in parts:
        for key, ts in part["times"].items():
            times.setdefault((part["side"], key), []).extend(ts)
    fma_peak = max(p.get("fma_peak_gflops", 0.0) for p in parts)
    rows = []
    for bench in selected(only):
        for batch in bench.batch_sizes:
            key = f"{bench.label}|{batch}"
            best = {side: min(times[(side, key)]) for side in ("nngraph", "torch", "gemm") if (side, key) in times}
            row: dict[str, Any] = {"bench": bench.label, "batch": batch, "nngraph": batch / best["nngraph"],
                                   "nngraph_median": batch / statistics.median(times[("nngraph", key)])}
            if "torch" in best:
                row["torch"] = batch / best["torch"]
                row["ratio"] = best["torch"] / best["nngraph"]
            if "gemm" in best:
                flops = sum(2 * m * k * n for m, k, n, _, _ in bench.gemm_shapes(batch))
                row["gemm_bound"] = best["gemm"] / best["nngraph"]
                row["step_gflops"] = flops / best["nngraph"] / 1e9
                if "torch" in best and fma_peak:  # the products' time at the FMA rate vs PyTorch's step
                    row["ceiling"] = best["torch"] / (flops / (fma_peak * 1e9))
            rows.append(row)
    first = parts[0]
    return {"threads": first["threads"], "rows": rows,
            "peak_gflops": max(p.get("peak_gflops", 0.0) for p in parts),
            "fma_peak_gflops": fma_peak,
            "torch": next((p["torch"] for p in parts if "torch" in p), None)}


def report(res: dict[str, Any]) -> str:
    lines = [f"threads {res['threads']}  (nngraph GEMM kernels: peak float32 {res['peak_gflops']:.1f} GFLOP/s; "
             f"register-only FMA {res['fma_peak_gflops']:.1f} GFLOP/s; "
             f"PyTorch {res['torch'] or 'not installed'})",
             f"{'network':<28}{'batch':>6}{'nngraph/s':>12}{'torch/s':>12}{'ratio':>8}{'gemm bound':>12}{'of peak':>9}{'ceiling':>9}"]
    for r in res["rows"]:
        torch_s = f"{r['torch']:>12,.0f}" if "torch" in r else f"{'-':>12}"
        ratio = f"{r['ratio']:>7.2f}x" if "ratio" in r else f"{'-':>8}"
        bound = f"{r['gemm_bound']:>11.0%}" if "gemm_bound" in r else f"{'-':>12}"
        peak = f"{r['step_gflops'] / res['peak_gflops']:>8.0%}" if "step_gflops" in r else f"{'-':>9}"
        ceiling = f"{r['ceiling']:>8.2f}x" if "ceiling" in r else f"{'-':>9}"
        lines.append(f"{r['bench']:<28}{r['batch']:>6}{r['nngraph']:>12,.0f}{torch_s}{ratio} {bound}{peak}{ceiling}")
    by_label = {r["bench"]: r for r in res["rows"]}
    for r in res["rows"]:  # ablations "<net> -<layer type>": what those layers cost in the full step
        if " -" in r["bench"] and r["bench"].split(" -")[0] in by_label:
            full, bare = by_label[r["bench"].split(" -")[0]], r
            cost = 1 - full["nngraph"] / bare["nngraph"]
            lines.append(f"  {r['bench'].split(' -')[1]} costs {cost:.1%} of the {full['bench']} step "
                         f"({full['nngraph']:,.0f} vs {bare['nngraph']:,.0f} samples/s without it)")
    return "\n".join(lines)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child process pinned to ``threads`` threads (BLAS, OpenMP, Numba)."""
    return dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))


def run_children(script: str, sides: list[str], threads: int, rounds: int, extra: list[str],
                 progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run ``script --child --side SIDE --threads N *extra`` once per side in each of ``rounds``
    rounds, the sides alternating (so machine noise hits all contenders alike), each in a fresh
    process pinned to ``threads``; returns each child's JSON (its last stdout line). A failing
    child's stderr is passed on and this process exits with its code. ``progress`` gets a line
    per child before it starts."""
    parts = []
    for r in range(rounds):
        for side in sides:
            if progress:
                progress(f"round {r + 1}/{rounds}: {side}, {threads} thread(s)")
            cmd = [sys.executable, script, "--child", "--side", side, "--threads", str(threads)] + extra
            out = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True)
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                sys.exit(out.returncode)
            parts.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, action="append", help="thread counts (default: 1 and 2)")
    ap.add_argument("--only", help="run benches whose label contains this text (e.g. mlp, lenet, lstm)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of one process per contender")
    ap.add_argument("--repeats", type=int, default=2, help="timings per contender within a round")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", default="nngraph", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.threads = args.threads[0]
        child(args)
        return
    sides = ["nngraph", "gemm"] + ([] if args.no_torch or not _torch_available() else ["torch"])
    results = []
    for threads in args.threads or [1, 2]:
        extra = ["--repeats", str(args.repeats)] + (["--only", args.only] if args.only else [])
        parts = run_children(__file__, sides, threads, args.rounds, extra)
        res = combine(parts, args.only)
        results.append(res)
        print(report(res), flush=True)
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
