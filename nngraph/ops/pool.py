"""Pooling over NCHW: MaxPool, AveragePool, GlobalAveragePool.

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
The max backward recomputes the argmax from x instead of storing it: a pass over a small tensor is
cheaper than keeping an index buffer consistent across plans. Kernels in pool_kernels.py.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import OpSpec, same_attrs
from .conv import explicit_pads, out_sizes, pair


def geometry(node: Node, in_shape: tuple[int, ...]) -> dict:
    size = tuple(in_shape[1:])
    kernel = pair(node.attrs["size"], 2)
    stride = pair(node.attrs["stride"] if node.attrs.get("stride") is not None else kernel, 2)
    pads = explicit_pads(node.attrs.get("padding", "valid"), 2, size, kernel, stride, (1, 1), node.layer)
    for a in range(2):
        if pads[a] >= kernel[a] or pads[a + 2] >= kernel[a]:
            raise ShapeError(f"layer {node.layer}: padding {list(pads)} must be smaller than the window "
                             f"{kernel[0]}x{kernel[1]} on every side (a window of padding only has no value)")
    out = out_sizes(size, kernel, stride, (1, 1), pads, node.layer, "window")
    return dict(C=in_shape[0], H=size[0], W=size[1], kernel=kernel, stride=stride, pads=pads, out=out,
                args=(kernel[0], kernel[1], stride[0], stride[1], pads[0], pads[1]))


def _check_input(node: Node, t: TensorType, what: str) -> None:
    if t.dtype != "float32" or len(t.shape) != 3:
        raise ShapeError(f"layer {node.layer}: {what} expects float input (N, channels, height, width), got {t}")


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    _check_input(node, types[0], "maxpool2d" if node.op == "MaxPool" else "avgpool2d")
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
    x = xs[0]
    kh, kw, sh, sw, pt, pl = g["args"]
    oh, ow = g["out"]
    y = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    for a in range(oh):
        for c in range(ow):
            h0, w0 = a * sh - pt, c * sw - pl
            win = x[:, :, max(h0, 0):min(h0 + kh, g["H"]), max(w0, 0):min(w0 + kw, g["W"])]
            y[:, :, a, c] = win.max(axis=(2, 3)) if is_max else win.mean(axis=(2, 3))
    return y


MAXPOOL = OpSpec("MaxPool", _infer, _pool_to_onnx, _pool_reference, kernels="nngraph.ops.pool_kernels",
                 layers={"maxpool2d": same_attrs})
AVGPOOL = OpSpec("AveragePool", _infer, _pool_to_onnx, _pool_reference, kernels="nngraph.ops.pool_kernels",
                 layers={"avgpool2d": same_attrs})


# ---- GlobalAveragePool: (C, H, W) -> (C,) ------------------------------------------------------

def _infer_global(node: Node, types: list[TensorType]) -> TensorType:
    _check_input(node, types[0], "global_avgpool2d")
    return TensorType(types[0].shape[:1])


def _global_to_onnx(node, in_names, out_name, in_types, b):
    # ONNX keeps (N, C, 1, 1); the layer's output is (N, C), ready for a dense layer.
    pooled = b.fresh(f"{node.name}/pooled")
    b.node("GlobalAveragePool", in_names, [pooled])
    b.node("Flatten", [pooled], [out_name], axis=1)


GLOBAL_AVGPOOL = OpSpec("GlobalAveragePool", _infer_global, _global_to_onnx,
                        lambda node, xs, ps, ctx=None: xs[0].mean(axis=(2, 3)), kernels="nngraph.ops.pool_kernels",
                        layers={"global_avgpool2d": same_attrs})

SPECS = [MAXPOOL, AVGPOOL, GLOBAL_AVGPOOL]
