"""MNIST with dropout and batch norm: specs/mnist_convnet.json and specs/mnist_resnet.json trained by
nngraph and, with the same schedule, by the identical PyTorch network; both test accuracies and
training times side by side.

    python tools/bench_mnist_nets.py                         # both networks, 2 threads
    python tools/bench_mnist_nets.py --only resnet --threads 1 --epochs 1

Each side runs in its own process with the same thread count: nngraph through the same workflow call
as ``nngraph train SPEC --data FOLDER``; PyTorch (tools/spec_torch.py builds the network from the
spec) with the same data (pixels / 255, the spec's validation split held out as the last rows),
optimizer (Adam, the spec's lr), batch size, epochs, per-epoch cosine schedule and shuffling each
epoch. Targets (issue 10): mnist_resnet >= 99.3% test accuracy within 3 epochs, mnist_convnet
>= 99.0%, neither more than 0.2 points below PyTorch. A benchmark, not a unit test (minutes).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETS = {"convnet": ROOT / "specs" / "mnist_convnet.json", "resnet": ROOT / "specs" / "mnist_resnet.json"}
TARGETS = {"convnet": 0.990, "resnet": 0.993}


def run_nngraph(spec_path: Path, data: str, epochs: int | None) -> dict:
    from nngraph.workflow import train

    t0 = time.perf_counter()
    res = train(spec_path, data=data, epochs=epochs, log=lambda s: print(s, file=sys.stderr, flush=True))
    fit = sum(r.seconds for r in res.history.records)
    return {"accuracy": res.test["accuracy"], "train_seconds": fit, "total_seconds": time.perf_counter() - t0,
            "epochs": len(res.history.records)}


def run_torch(spec_path: Path, data: str, epochs: int | None, threads: int) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from spec_torch import torch_module

    from nngraph.data import load_source

    torch.set_num_threads(threads)
    spec = json.loads(spec_path.read_text())
    tr, opt_cfg = spec["train"], spec["optimizer"]
    epochs = epochs or tr["epochs"]
    ds = load_source(data)
    scale = np.float32((ds.input_layer or {}).get("factor", 1.0))  # nngraph scales inside the model
    x = np.asarray(ds.x, np.float32).reshape(-1, 1, 28, 28) * scale
    y = np.asarray(ds.y, np.int64)
    xt = torch.from_numpy(np.asarray(ds.x_test, np.float32).reshape(-1, 1, 28, 28) * scale)
    yt = torch.from_numpy(np.asarray(ds.y_test, np.int64))
    cut = len(y) - int(round(len(y) * tr.get("validation_split", 0.0)))
    x, y = torch.from_numpy(x[:cut]), torch.from_numpy(y[:cut])
    torch.manual_seed(tr.get("seed", 0))
    net = torch_module(spec)
    opt = torch.optim.Adam(net.parameters(), lr=opt_cfg["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = tr["batch_size"]
    cosine = (tr.get("schedule") or {}).get("type") == "cosine"
    t0 = time.perf_counter()
    for e in range(epochs):
        if cosine:  # nngraph's per-epoch cosine (min_lr 0, no warm-up)
            for g in opt.param_groups:
                g["lr"] = opt_cfg["lr"] * (1 + math.cos(math.pi * e / epochs)) / 2
        net.train()
        perm = torch.randperm(len(y))
        for s in range(0, len(y), batch):
            idx = perm[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
        print(f"torch epoch {e + 1}: loss {loss.item():.4f}", file=sys.stderr, flush=True)
    fit = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(xt[s:s + 1000]).argmax(1) for s in range(0, len(yt), 1000)])
    return {"accuracy": float((pred == yt).float().mean()), "train_seconds": fit, "epochs": epochs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--only", choices=sorted(NETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="override the specs' epochs")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--net", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = run_nngraph(NETS[args.net], args.data, args.epochs) if args.child == "nngraph" else \
            run_torch(NETS[args.net], args.data, args.epochs, args.threads)
        print(json.dumps(fn))
        return
    env = dict(os.environ, **{v: str(args.threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")})
    sides = ["nngraph"] + ([] if args.no_torch else ["torch"])
    ok = True
    for net in ([args.only] if args.only else sorted(NETS)):
        res = {}
        for side in sides:
            cmd = [sys.executable, __file__, "--child", side, "--net", net, "--data", args.data,
                   "--threads", str(args.threads)] + (["--epochs", str(args.epochs)] if args.epochs else [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                sys.exit(out.returncode)
            res[side] = json.loads(out.stdout.strip().splitlines()[-1])
        ours = res["nngraph"]
        line = (f"mnist_{net} ({args.threads} threads, {ours['epochs']} epochs): nngraph test accuracy "
                f"{ours['accuracy']:.2%} in {ours['train_seconds']:.1f} s of training")
        if "torch" in res:
            theirs = res["torch"]
            gap = (ours["accuracy"] - theirs["accuracy"]) * 100
            line += (f"; PyTorch {theirs['accuracy']:.2%} in {theirs['train_seconds']:.1f} s "
                     f"(accuracy {gap:+.2f} points, time ratio {theirs['train_seconds'] / ours['train_seconds']:.2f}x)")
            ok &= gap >= -0.2
        target = TARGETS[net]
        ok &= ours["accuracy"] >= target
        print(line + f"; target {target:.1%}: {'met' if ours['accuracy'] >= target else 'NOT met'}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
