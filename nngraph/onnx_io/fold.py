"""Fold inference-mode batch normalisation into the Conv or Gemm before it (``--fold-batchnorm``).

In inference a BatchNormalization is an affine map per channel c,
    y = gamma (z - mu) / sqrt(var + eps) + beta = k z + (beta - k mu),   k = gamma / sqrt(var + eps),
and z = W x + b of a Conv or Gemm is linear in each output channel, so
    W'[c, ...] = k[c] W[c, ...]        b'[c] = (b[c] - mu[c]) k[c] + beta[c]
(b = 0 when the layer has no bias: one is created) computes the same y with one op fewer.
A BatchNormalization folds when its input comes from a Conv, or a Gemm on (N, F), with the identity
activation, that feeds nothing else and is not the graph output; every other BatchNormalization
stays a node. Values are computed in float64, then cast to the parameters' dtype.

The folded graph is an ordinary IR graph (the producer takes over the normalisation's output name
and, if it had none, a bias ``<producer>.b``), so the backend can run it: ``Model.load_onnx``
rebuilds it from the spec and the folded layer names in the metadata (``nngraph.folded_batchnorm``).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Node, ParamInfo

BN = "BatchNormalization"


def foldable(graph: Graph, names: list[str] | None = None) -> list[tuple[Node, Node]]:
    """(producer, batch norm) pairs that fold (restricted to the batch-norm node ``names`` if given)."""
    pairs = []
    for bn in graph.nodes:
        if bn.op != BN or (names is not None and bn.name not in names):
            continue
        src = graph.producer(bn.inputs[0])
        if src is None or src.op not in ("Conv", "Gemm") or src.attrs.get("activation", "identity") != "identity":
            continue
        if src.op == "Gemm" and len(graph.values[src.output].shape) != 1:
            continue  # a Gemm on a sequence: the normalised channel axis is not its units axis
        if src.output == graph.output or len(graph.consumers(src.output)) != 1:
            continue
        pairs.append((src, bn))
    return pairs


def _bias_name(graph: Graph, src: Node) -> str:
    name, i = f"{src.name}.b", 1
    while name in graph.params or name in graph.values:
        i += 1
        name = f"{src.name}.b_{i}"
    return name


def fold_graph(graph: Graph, names: list[str] | None = None) -> Graph:
    """The graph with the foldable batch norms (``names``, or all) folded; no values involved."""
    return _fold(graph, None, names)[0]


def fold_batchnorm(graph: Graph, params: dict[str, np.ndarray], names: list[str] | None = None
                   ) -> tuple[Graph, dict[str, np.ndarray]]:
    """(folded graph, its parameter values). Pure: ``graph`` and ``params`` are not modified."""
    g, p = _fold(graph, params, names)
    assert p is not None
    return g, p


def folded_names(before: Graph, after: Graph) -> list[str]:
    """The batch-norm nodes of ``before`` that ``after`` no longer has."""
    kept = {n.name for n in after.nodes}
    return [n.name for n in before.nodes if n.op == BN and n.name not in kept]


def _fold(graph: Graph, params: dict[str, np.ndarray] | None, names: list[str] | None
          ) -> tuple[Graph, dict[str, np.ndarray] | None]:
    nodes = list(graph.nodes)
    values = dict(graph.values)
    infos = dict(graph.params)
    out = dict(params) if params is not None else None
    for src, bn in foldable(graph, names):
        has_bias = src.attrs.get("use_bias", True)
        w_name = src.params[0]
        b_name = src.params[1] if has_bias else _bias_name(graph, src)
        if not has_bias:
            w = infos[w_name]
            new_infos = {}
            for k, v in infos.items():  # the new bias right after its weight
                new_infos[k] = v
                if k == w_name:
                    new_infos[b_name] = ParamInfo(b_name, (w.shape[0],), "zeros", w.fan_in, w.fan_out)
            infos = new_infos
        if out is not None:
            scale, beta, mean, var = (np.asarray(out[p], np.float64) for p in bn.params)
            k = scale / np.sqrt(var + float(bn.attrs["epsilon"]))
            w = np.asarray(out[w_name])
            b = np.asarray(out[b_name], np.float64) if has_bias else np.zeros(w.shape[0])
            out[w_name] = (w.astype(np.float64) * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
            out[b_name] = ((b - mean) * k + beta).astype(w.dtype)
            for p in bn.params:
                del out[p]
        for p in bn.params:
            del infos[p]
        del values[src.output]
        # a relu fused into the batch norm moves to the folded layer's epilogue
        folded = replace(src, output=bn.output, params=(w_name, b_name),
                         attrs={**src.attrs, "use_bias": True, "activation": bn.attrs.get("activation", "identity")})
        nodes[nodes.index(src)] = folded
        nodes.remove(bn)
    return replace(graph, nodes=tuple(nodes), values=values, params=infos), out


def check_folded(unfolded, folded, feeds: dict[str, np.ndarray], rtol: float = 1e-4) -> float:
    """Run both ModelProtos in onnxruntime on ``feeds``; the largest difference relative to the
    unfolded output's scale. Raises ExportError when it exceeds ``rtol``."""
    import onnxruntime as ort

    from ..errors import ExportError

    outs = []
    for m in (unfolded, folded):
        ort.set_default_logger_severity(4)  # no onnxruntime log lines on stderr (see runtime.session)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, feeds)[0].astype(np.float64))
    scale = max(float(np.abs(outs[0]).max()), 1e-12)
    err = float(np.abs(outs[1] - outs[0]).max()) / scale
    if not err <= rtol:
        raise ExportError(f"the batch-norm-folded model differs from the unfolded one in onnxruntime by "
                          f"{err:.3g} (relative to the output's scale; tolerance {rtol:g})")
    return err
