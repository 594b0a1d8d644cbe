"""onnxruntime latency of nngraph's recurrent export vs PyTorch's torch.onnx export of the same net.

    python tools/bench_rnn_export.py                 # rnn, lstm, gru; batch 1; 1 and 2 ORT threads
    python tools/bench_rnn_export.py --only lstm --runs 2000

For each network (input 16, hidden 128, sequence 50, last state -> dense 10) it builds the nngraph
model, copies its weights into the identical PyTorch module (mapping the gate orders: ONNX i,o,f,c
vs PyTorch i,f,g,o for LSTM; ONNX z,r,h vs PyTorch r,z,n for GRU, whose PyTorch form is
linear_before_reset=1), exports both, checks that the two ONNX files compute the same outputs, lists
their node types, and times batch-1 inference in onnxruntime, alternating the two sessions so
machine noise hits both alike. Reported: median and best latency in microseconds.
PyTorch is a benchmark peer only; nngraph never imports it.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

T, I, H, CLASSES = 50, 16, 128, 10


def nngraph_model(kind: str):
    from nngraph.model import Model
    from nngraph.spec import parse_spec

    layer = {"type": kind, "units": H, **({"linear_before_reset": True} if kind == "gru" else {})}
    spec = parse_spec({"name": f"{kind}_last", "inputs": {"x": {"shape": [T, I]}},
                       "layers": [layer, {"type": "dense", "units": CLASSES}]})
    return Model.compile(spec)


def _onnx_to_torch_gates(kind: str, a: np.ndarray) -> np.ndarray:
    """Reorder the gate blocks (axis 0) from ONNX order to PyTorch order."""
    if kind == "lstm":   # ONNX i, o, f, c -> PyTorch i, f, g(=c), o
        i, o, f, c = np.split(a, 4)
        return np.concatenate([i, f, c, o])
    if kind == "gru":    # ONNX z, r, h -> PyTorch r, z, n(=h)
        z, r, h = np.split(a, 3)
        return np.concatenate([r, z, h])
    return a


def torch_model(kind: str, model):
    import torch
    import torch.nn as nn

    class LastState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(nn, kind.upper())(I, H, batch_first=True)
            self.fc = nn.Linear(H, CLASSES)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    net = LastState().eval()
    p = model.params.values
    rname, dname = model.graph.nodes[0].name, model.graph.nodes[1].name
    W, R, B = p[f"{rname}.W"][0], p[f"{rname}.R"][0], p[f"{rname}.B"][0]
    g = W.shape[0]
    with torch.no_grad():
        net.rnn.weight_ih_l0.copy_(torch.from_numpy(_onnx_to_torch_gates(kind, W)))
        net.rnn.weight_hh_l0.copy_(torch.from_numpy(_onnx_to_torch_gates(kind, R)))
        net.rnn.bias_ih_l0.copy_(torch.from_numpy(_onnx_to_torch_gates(kind, B[:g])))
        net.rnn.bias_hh_l0.copy_(torch.from_numpy(_onnx_to_torch_gates(kind, B[g:])))
        net.fc.weight.copy_(torch.from_numpy(p[f"{dname}.W"]))
        net.fc.bias.copy_(torch.from_numpy(p[f"{dname}.b"]))
    return net


def export_torch(net, path: Path) -> str:
    import torch

    x = torch.randn(1, T, I)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript exporter: the one that writes native RNN/LSTM/GRU nodes
            torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                              dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}}, dynamo=False)
            return "torch.onnx.export(dynamo=False)"
        except TypeError:
            torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                              dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}})
            return "torch.onnx.export"


def ops_of(path: Path) -> str:
    import onnx

    counts = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return f"{sum(counts.values())} nodes: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


def latency(paths: dict[str, Path], threads: int, runs: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    import onnxruntime as ort

    sessions = {}
    for label, path in paths.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sessions[label] = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal((1, T, I)).astype(np.float32)
    feeds = {label: {s.get_inputs()[0].name: x} for label, s in sessions.items()}
    for label, s in sessions.items():  # warm-up
        for _ in range(50):
            s.run(None, feeds[label])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for label, s in sessions.items():  # alternate
            t0 = time.perf_counter()
            s.run(None, feeds[label])
            times[label].append(time.perf_counter() - t0)
    return {k: (statistics.median(v) * 1e6, min(v) * 1e6) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("rnn", "lstm", "gru"))
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--threads", type=int, action="append", help="onnxruntime intra-op threads (default 1, 2)")
    args = ap.parse_args()
    import onnxruntime as ort
    import torch

    print(f"onnxruntime {ort.__version__}, PyTorch {torch.__version__}; batch 1, sequence {T}, input {I}, "
          f"hidden {H}, last state -> dense {CLASSES}; {args.runs} alternating runs")
    tmp = Path(tempfile.mkdtemp())
    for kind in ([args.only] if args.only else ["rnn", "lstm", "gru"]):
        model = nngraph_model(kind)
        ours = tmp / f"{kind}_nngraph.onnx"
        model.export_onnx(ours)
        theirs = tmp / f"{kind}_torch.onnx"
        how = export_torch(torch_model(kind, model), theirs)
        import onnxruntime as ort2

        x = np.random.default_rng(1).standard_normal((3, T + 7, I)).astype(np.float32)
        a = ort2.InferenceSession(str(ours), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        b = ort2.InferenceSession(str(theirs), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        print(f"\n{kind}: same outputs (batch 3, sequence {T + 7}): max abs difference {np.abs(a - b).max():.2e}")
        print(f"  nngraph  {ops_of(ours)}")
        print(f"  PyTorch  {ops_of(theirs)}   ({how})")
        for threads in args.threads or [1, 2]:
            res = latency({"nngraph": ours, "torch": theirs}, threads, args.runs)
            (om, ob), (tm, tb) = res["nngraph"], res["torch"]
            print(f"  ORT threads {threads}: nngraph median {om:7.1f} us (best {ob:6.1f})   "
                  f"PyTorch export median {tm:7.1f} us (best {tb:6.1f})   ratio {tm / om:.2f}x")


if __name__ == "__main__":
    main()
