"""Pooling over NCHW and NCL: MaxPool, AveragePool, GlobalAveragePool.

A 1-D pool (node attribute ``rank: 1``, layers maxpool1d / avgpool1d / global_avgpool1d) is the
2-D pool of (N, C, 1, L) with window (1, k), stride (1, s) and pads (0, begin, 0, end): the kernels
see that view; ONNX gets 1-D kernel_shape / strides / pads. GlobalMaxPool is in global_pool.py.

Windows of size (kh, kw) at stride (sh, sw) over the input padded by (top, left, bottom, right);
output sizes use floor mode; stride defaults to the window size. Padding positions never win a max
and never count in an average (ONNX count_include_pad=0, Keras "same"), so every window must hold
at least one real element: each pad must be smaller than the window.
    max:     y = max over the window W(o) of x                dx[h, w] = sum over o with
                                                                argmax W(o) = (h, w) of dy[o]
             (the first maximal element in row-major order takes the gradient, as PyTorch does)
    average: y = (1 / |W(o)|) sum over W(o) of x              dx[h, w] = sum over o with (h, w) in W(o)
             |W(o)| = number of real (non-pad) elements        of dy[o] / |W(o)|
    global:  y[n, c] = mean over (h, w) of x[n, c, h, w]     dx = dy / (H W)
             (1-D: y[n, c] = mean over l of x[n, c, l], dx = dy / L)
The max backward recomputes the argmax from x instead of storing it: a pass over a small tensor is
cheaper than keeping an index buffer consistent across plans. Kernels in pool_kernels.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import OpSpec, same_attrs
from .conv import explicit_pads, out_sizes, pair


def rank1(attrs: dict[str, Any]) -> dict[str, Any]:
    """The lowering of a 1-D pooling layer: its attributes and ``rank: 1``."""
    return {**attrs, "rank": 1}


def rank_of(node: Node) -> int:
    """Spatial rank: 2 (NCHW) unless the layer lowered with ``rank: 1`` (NCL)."""
    return node.attrs.get("rank", 2)


def geometry(node: Node, in_shape: tuple[int, ...]) -> dict:
    """Window geometry of one sample (C, *spatial); ``args`` and ``out2`` are always the 2-D
    problem the kernels solve (kh, kw, sh, sw, pad top, pad left) and its (OH, OW)."""
    rank = rank_of(node)
    size = tuple(in_shape[1:])
    kernel = pair(node.attrs["size"], rank)
    stride = pair(node.attrs["stride"] if node.attrs.get("stride") is not None else kernel, rank)
    for name, v in (("size", kernel), ("stride", stride)):
        if len(v) != rank:
            raise ShapeError(f"layer {node.layer}: {name} {list(v)} must have {rank} numbers for a {rank}-D pool")
    pads = explicit_pads(node.attrs.get("padding", "valid"), rank, size, kernel, stride, (1,) * rank, node.layer)
    for a in range(rank):
        if pads[a] >= kernel[a] or pads[a + rank] >= kernel[a]:
            raise ShapeError(f"layer {node.layer}: padding {list(pads)} must be smaller than the window "
                             f"{'x'.join(map(str, kernel))} on every side (a window of padding only has no value)")
    out = out_sizes(size, kernel, stride, (1,) * rank, pads, node.layer, "window")
    if rank == 1:
        args, hw, out2 = (1, kernel[0], 1, stride[0], 0, pads[0]), (1, size[0]), (1, out[0])
    else:
        args, hw, out2 = (kernel[0], kernel[1], stride[0], stride[1], pads[0], pads[1]), size, out
    return dict(C=in_shape[0], H=hw[0], W=hw[1], kernel=kernel, stride=stride, pads=pads, out=out,
                out2=out2, args=args)


def as_planes(a: np.ndarray) -> np.ndarray:
    """(N, C, L) as the (N, C, 1, L) view the 2-D kernels take (never a copy: kernels write through
    it); (N, C, H, W) unchanged."""
    if a.ndim != 3:
        return a
    v = a.view()
    v.shape = a.shape[:2] + (1, a.shape[2])  # raises rather than copy
    return v


def _check_input(node: Node, t: TensorType, what: str) -> None:
    rank = rank_of(node)
    if t.dtype != "float32" or len(t.shape) != rank + 1:
        want = "(N, channels, length)" if rank == 1 else "(N, channels, height, width)"
        raise ShapeError(f"layer {node.layer}: {what}{rank}d expects float input {want}, got {t}"
                         + (f" of {t.dtype}" if t.dtype != "float32" else ""))


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    _check_input(node, types[0], "maxpool" if node.op == "MaxPool" else "avgpool")
    g = geometry(node, types[0].shape)
    return TensorType((g["C"],) + g["out"])


# ---- MaxPool / AveragePool --------------------------------------------------------------------

def _pool_to_onnx(node, in_names, out_name, in_types, b):
    g = geometry(node, in_types[0].shape)
    attrs = dict(kernel_shape=list(g["kernel"]), strides=list(g["stride"]), pads=list(g["pads"]))
    if node.op == "AveragePool":
        attrs["count_include_pad"] = 0
    b.node(node.op, in_names, [out_name], **attrs)


def _pool_reference(node, xs, ps, ctx=None):
    is_max = node.op == "MaxPool"
    g = geometry(node, xs[0].shape[1:])
    x = as_planes(xs[0])
    kh, kw, sh, sw, pt, pl = g["args"]
    oh, ow = g["out2"]
    y = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    for a in range(oh):
        for c in range(ow):
            h0, w0 = a * sh - pt, c * sw - pl
            win = x[:, :, max(h0, 0):min(h0 + kh, g["H"]), max(w0, 0):min(w0 + kw, g["W"])]
            y[:, :, a, c] = win.max(axis=(2, 3)) if is_max else win.mean(axis=(2, 3))
    return y.reshape(xs[0].shape[:2] + g["out"])


MAXPOOL = OpSpec("MaxPool", _infer, _pool_to_onnx, _pool_reference, kernels="nngraph.ops.pool_kernels",
                 layers={"maxpool2d": same_attrs, "maxpool1d": rank1})
AVGPOOL = OpSpec("AveragePool", _infer, _pool_to_onnx, _pool_reference, kernels="nngraph.ops.pool_kernels",
                 layers={"avgpool2d": same_attrs, "avgpool1d": rank1})


# ---- GlobalAveragePool: (C, H, W) -> (C,), (C, L) -> (C,) ----------------------------------------

def _infer_global(node: Node, types: list[TensorType]) -> TensorType:
    _check_input(node, types[0], "global_avgpool")
    return TensorType(types[0].shape[:1])


def _global_to_onnx(node, in_names, out_name, in_types, b):
    # ONNX keeps (N, C, 1, 1); the layer's output is (N, C), ready for a dense layer.
    pooled = b.fresh(f"{node.name}/pooled")
    b.node("GlobalAveragePool", in_names, [pooled])
    b.node("Flatten", [pooled], [out_name], axis=1)


GLOBAL_AVGPOOL = OpSpec("GlobalAveragePool", _infer_global, _global_to_onnx,
                        lambda node, xs, ps, ctx=None: xs[0].mean(axis=tuple(range(2, xs[0].ndim))),
                        kernels="nngraph.ops.pool_kernels",
                        layers={"global_avgpool2d": same_attrs, "global_avgpool1d": rank1})

SPECS = [MAXPOOL, AVGPOOL, GLOBAL_AVGPOOL]
