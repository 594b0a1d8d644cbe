"""An nngraph spec as the identical PyTorch module, for the benchmarks' PyTorch side.

    from spec_torch import torch_module
    net = torch_module(spec_dict)        # torch.nn.Module; forward(x) -> logits (softmax left to the loss)

Covers the layer types the benchmark networks use (dense, conv1d/2d, batchnorm, dropout, activations,
pooling (maxpool1d/2d, valid), flatten, add, concat, rnn/lstm/gru, layernorm, embedding, attention,
transformer_block, sequence_pool, learned positional_embedding) over a DAG given by the layers' ``inputs``. A final softmax (as a layer
or a dense activation) is left out: PyTorch's CrossEntropyLoss takes logits, as nngraph's fused loss
does. The conventions match nngraph's: batch norm momentum/epsilon as PyTorch's, "same" padding with
the odd unit at the end (applied as an explicit F.pad when it is asymmetric). PyTorch is a benchmark
peer only; nngraph never imports this module.
"""
from __future__ import annotations

from typing import Any


def _pair(v: Any, rank: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * rank


def torch_module(spec: dict[str, Any]):
    """The spec's network as a torch.nn.Module (weights left at PyTorch's defaults)."""
    import torch.nn as nn

    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU,
            "softplus": nn.Softplus, "identity": nn.Identity}
    (in_name, in_body), = spec["inputs"].items()
    shapes = {in_name: tuple(in_body["shape"])}
    mods: list[tuple[str, tuple[str, ...], Any]] = []
    prev = in_name
    layers = spec["layers"]
    for i, layer in enumerate(layers):
        t = layer["type"]
        name = layer.get("name", f"{t}_{i}")
        inputs = tuple(layer.get("inputs", [prev]))
        shape = shapes[inputs[0]]
        last = i == len(layers) - 1
        if t == "dense":
            m = [nn.Linear(shape[-1], layer["units"], bias=layer.get("use_bias", True))]
            act = layer.get("activation", "identity")
            if act not in ("identity", "softmax"):
                m.append(acts[act]())
            mod, out = nn.Sequential(*m), shape[:-1] + (layer["units"],)
        elif t in ("conv2d", "conv1d"):
            rank = 2 if t == "conv2d" else 1
            k, s = _pair(layer["kernel"], rank), _pair(layer.get("stride", 1), rank)
            size = shape[1:]
            pad = layer.get("padding", "valid")
            if pad == "same":
                outs = [-(-n // st) for n, st in zip(size, s)]
                totals = [max((o - 1) * st + kk - n, 0) for o, st, kk, n in zip(outs, s, k, size)]
                before = [tt // 2 for tt in totals]
                after = [tt - b for tt, b in zip(totals, before)]
            else:
                before = after = [0] * rank if pad == "valid" else list(_pair(pad, rank))
                outs = [(n + b + a - kk) // st + 1 for n, b, a, kk, st in zip(size, before, after, k, s)]
            conv_cls = nn.Conv2d if rank == 2 else nn.Conv1d
            sym = before == after
            conv = conv_cls(shape[0], layer["filters"], k, s, padding=tuple(before) if sym else 0,
                            bias=layer.get("use_bias", True), groups=layer.get("groups", 1))
            m = [conv] if sym else [_Pad([p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]), conv]
            act = layer.get("activation", "identity")
            if act != "identity":
                m.append(acts[act]())
            mod, out = nn.Sequential(*m), (layer["filters"], *outs)
        elif t == "batchnorm":
            cls = nn.BatchNorm1d if len(shape) in (1, 2) else nn.BatchNorm2d
            mod, out = cls(shape[0], eps=layer.get("epsilon", 1e-5), momentum=layer.get("momentum", 0.1)), shape
        elif t == "dropout":
            mod, out = nn.Dropout(layer["rate"]), shape
        elif t in acts:
            mod, out = acts[t](), shape
        elif t == "softmax":
            mod, out = (nn.Identity() if last else nn.Softmax(dim=layer.get("axis", -1))), shape
        elif t == "maxpool2d":
            size = layer["size"]
            mod = nn.MaxPool2d(size, layer.get("stride") or size)
            st = layer.get("stride") or size
            out = (shape[0], (shape[1] - size) // st + 1, (shape[2] - size) // st + 1)
        elif t == "maxpool1d":
            size = layer["size"]
            st = layer.get("stride") or size
            if layer.get("padding", "valid") != "valid":
                raise ValueError("spec_torch: maxpool1d padding other than 'valid' is not covered")
            mod, out = nn.MaxPool1d(size, st), (shape[0], (shape[1] - size) // st + 1)
        elif t in ("rnn", "lstm", "gru"):
            mod = _recurrent(layer, shape)
            nd = 2 if layer.get("bidirectional", False) else 1
            units = nd * layer["units"]
            out = (shape[0], units) if layer.get("return_sequences", False) else (units,)
        elif t == "global_avgpool2d":
            mod, out = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), shape[:1]
        elif t == "flatten":
            n = 1
            for d in shape:
                n *= d
            mod, out = nn.Flatten(), (n,)
        elif t == "add":
            mod, out = _Add(), shape
        elif t == "layernorm":
            mod, out = nn.LayerNorm(shape[-1], eps=layer.get("epsilon", 1e-5)), shape
        elif t == "embedding":
            mod, out = nn.Embedding(layer["vocab_size"], layer["dim"]), shape + (layer["dim"],)
        elif t == "transformer_block":
            mod, out = _block(layer, shape), shape
        elif t == "attention":
            mod, out = _attention(layer, shape), shape
        elif t == "sequence_pool":
            mod, out = _SequencePool(layer.get("mode", "mean")), shape[1:]
        elif t == "positional_embedding":
            if layer.get("kind", "learned") != "learned":
                raise ValueError("spec_torch: only learned positional embeddings are covered")
            mod, out = _Positions(layer["max_length"], shape[-1]), shape
        else:
            raise ValueError(f"spec_torch: layer type {t!r} is not covered")
        mods.append((name, inputs, mod))
        shapes[name] = out
        prev = name

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(m for _, _, m in mods)
            self.wiring = [(name, inputs) for name, inputs, _ in mods]

        def forward(self, x):
            vals = {in_name: x}
            for (name, inputs), m in zip(self.wiring, self.layers):
                args = [vals[v] for v in inputs]
                vals[name] = m(*args)
            return vals[prev]

    return Net()


def _recurrent(layer: dict[str, Any], shape: tuple[int, ...]):
    """nn.RNN/LSTM/GRU (batch_first) wrapped to return what nngraph's layer returns: the whole
    sequence with ``return_sequences``, else the last state of each direction concatenated (the
    backward direction's state after reading t = 0, i.e. PyTorch's h_n, like ONNX Y_h)."""
    import torch.nn as nn

    t, act = layer["type"], layer.get("activation", "tanh")
    if layer.get("inputs") and len(layer["inputs"]) > 1:
        raise ValueError("spec_torch: recurrent initial states are not covered")
    kw = dict(batch_first=True, bidirectional=layer.get("bidirectional", False))
    if t == "rnn":
        if act not in ("tanh", "relu"):
            raise ValueError(f"spec_torch: rnn activation {act!r} has no PyTorch equivalent")
        rnn = nn.RNN(shape[-1], layer["units"], nonlinearity=act, **kw)
    else:
        if act != "tanh":
            raise ValueError(f"spec_torch: {t} activation {act!r} has no PyTorch equivalent")
        if t == "gru" and not layer.get("linear_before_reset", False):
            raise ValueError("spec_torch: PyTorch's GRU is linear_before_reset: true only")
        rnn = (nn.LSTM if t == "lstm" else nn.GRU)(shape[-1], layer["units"], **kw)
    seq = layer.get("return_sequences", False)

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            out, h = self.rnn(x)
            if seq:
                return out
            h = h[0] if isinstance(h, tuple) else h          # LSTM: (h_n, c_n)
            return h.transpose(0, 1).reshape(x.shape[0], -1)  # (directions, N, H) -> (N, directions*H)
    return Recurrent()


def _causal_mask(t: int):
    import torch

    return torch.nn.Transformer.generate_square_subsequent_mask(t)


def _block(layer: dict[str, Any], shape: tuple[int, ...]):
    """nngraph's transformer_block as nn.TransformerEncoderLayer (batch_first; norm_first for "pre")."""
    import torch.nn as nn

    act = layer.get("activation", "gelu")
    enc = nn.TransformerEncoderLayer(shape[-1], layer["heads"], layer["ff_units"], layer.get("dropout", 0.1),
                                     activation={"gelu": "gelu", "relu": "relu"}[act], batch_first=True,
                                     norm_first=layer.get("norm", "pre") == "pre",
                                     layer_norm_eps=layer.get("epsilon", 1e-5))
    causal = layer.get("causal", False)
    mask = _causal_mask(shape[0]) if causal else None

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = enc

        def forward(self, x):
            return self.enc(x, src_mask=mask, is_causal=causal)
    return Block()


def _attention(layer: dict[str, Any], shape: tuple[int, ...]):
    import torch.nn as nn

    mha = nn.MultiheadAttention(shape[-1], layer["heads"], dropout=layer.get("dropout", 0.0),
                                bias=layer.get("use_bias", True), batch_first=True)
    causal = layer.get("causal", False)
    mask = _causal_mask(shape[0]) if causal else None

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, attn_mask=mask, is_causal=causal, need_weights=False)[0]
    return Attention()


def _SequencePool(mode: str):
    import torch.nn as nn

    class SequencePool(nn.Module):
        def forward(self, x):
            if mode == "mean":
                return x.mean(dim=1)
            if mode == "max":
                return x.max(dim=1).values
            return x[:, 0] if mode == "first" else x[:, -1]
    return SequencePool()


def _Positions(max_length: int, features: int):
    import torch
    import torch.nn as nn

    class Positions(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.randn(max_length, features) * 0.02)

        def forward(self, x):
            return x + self.table[:x.shape[1]]
    return Positions()


def _pad_cls():
    import torch.nn as nn
    import torch.nn.functional as F

    class Pad(nn.Module):
        def __init__(self, pads):
            super().__init__()
            self.pads = pads

        def forward(self, x):
            return F.pad(x, self.pads)
    return Pad


def _Pad(pads):
    return _pad_cls()(pads)


def _Add():
    import torch.nn as nn

    class Add(nn.Module):
        def forward(self, *xs):
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out
    return Add()


def without_layers(spec: dict[str, Any], types: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``spec`` without the layers of the given types (e.g. dropout, batchnorm): a later
    layer that read a removed one reads what the removed layer read. The benchmarks' ablations."""
    first_input = next(iter(spec["inputs"]))
    source: dict[str, str] = {}
    kept, prev = [], first_input
    for i, layer in enumerate(spec["layers"]):
        name = layer.get("name", f"{layer['type']}_{i}")
        inputs = [source.get(v, v) for v in layer.get("inputs", [prev])]
        if layer["type"] in types:
            source[name] = inputs[0]
        else:
            new = {**layer, "name": name}
            if "inputs" in layer or len(inputs) != 1 or inputs[0] != (kept[-1]["name"] if kept else first_input):
                new["inputs"] = inputs
            kept.append(new)
        prev = source.get(name, name)
    return {**spec, "layers": kept}
