"""Conv: 1-D and 2-D convolution (NCHW / NCL), y = act(conv(x, W) + b), bias and activation fused.

Layout: W is (F, C/g, kh, kw) (ONNX Conv, PyTorch Conv2d); a 1-D conv is a 2-D conv with height 1
and W (F, C/g, k). Tap k = (c, i, j) of W's flattened rows reads, for output position (a, b),
x[c, a sh - pt + i dh, b sw - pl + j dw] (zero in the padding). Per sample, with X the (K, P)
matrix of those reads (K = (C/g) kh kw taps, P = OH OW positions):
    forward    z = W X + b            y = act(z)
Backward, with dz = dy * act'(y) (written in terms of y, see activations.py):
    db = sum over positions and samples of dz
    dW = sum over samples of dz X^T
    dX = W^T dz, and dx = the adjoint of the gather: every X entry's gradient is added back to
         the x element it was read from (padding entries are dropped)
Groups split the channels and filters into g independent convs (W rows [gi F/g, (gi+1) F/g) see
channels [gi C/g, (gi+1) C/g)).

Kernels (measured choices, see tools/bench_train.py): stride 1 computes W X without building X
(conv_shift.py: products over shifted rows of the padded sample); strided convs unfold X per sample
(conv_kernels.py). Both work sample by sample in cache, one block of samples per thread; the
bindings (workspaces, thread split) are in conv_bind.py.
Padding "same" is ONNX SAME_UPPER / Keras / PyTorch: OH = ceil(H / stride), total pad
max((OH-1) s + d (k-1) + 1 - H, 0), the odd unit at the end; it is exported as explicit pads.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .activations import ONNX_OP, apply_reference
from .base import OpSpec, ParamDecl
from .dense import default_initializer


# ---- geometry ---------------------------------------------------------------------------------

def pair(v, rank: int) -> tuple[int, ...]:
    """An int or a sequence as a ``rank``-tuple."""
    if isinstance(v, (list, tuple)):
        return tuple(int(a) for a in v)
    return (int(v),) * rank


def explicit_pads(padding, rank: int, size: tuple[int, ...], kernel: tuple[int, ...],
                  stride: tuple[int, ...], dilation: tuple[int, ...], layer: str) -> tuple[int, ...]:
    """Pads in ONNX order (begins..., ends...) for a padding spec: "valid", "same", an int (every
    side), one int per spatial axis (both sides) or begins then ends (2 x rank ints)."""
    if padding == "valid":
        return (0,) * (2 * rank)
    if padding == "same":
        begins, ends = [], []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            out = -(-n // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
            begins.append(total // 2)
            ends.append(total - total // 2)
        return tuple(begins + ends)
    if isinstance(padding, int):
        return (padding,) * (2 * rank)
    p = tuple(padding)
    if len(p) == rank:
        return p + p
    if len(p) == 2 * rank:
        return p
    raise ShapeError(f"layer {layer}: padding {list(p)} must have {rank} (per axis) or {2 * rank} "
                     f"(begins then ends) numbers for a {rank}-D layer")


def out_sizes(size, kernel, stride, dilation, pads, layer: str, what: str) -> tuple[int, ...]:
    """Output spatial sizes (floor mode); a window larger than its padded input is a ShapeError."""
    rank = len(size)
    out = []
    for a in range(rank):
        padded = size[a] + pads[a] + pads[a + rank]
        span = dilation[a] * (kernel[a] - 1) + 1
        if span > padded:
            raise ShapeError(f"layer {layer}: {what} {'x'.join(map(str, kernel))}"
                             + (f" (dilation {'x'.join(map(str, dilation))}, span {span})" if span != kernel[a] else "")
                             + f" is larger than its padded input {'x'.join(str(size[b] + pads[b] + pads[b + rank]) for b in range(rank))}"
                             f" (input {'x'.join(map(str, size))})")
        out.append((padded - span) // stride[a] + 1)
    return tuple(out)


def geometry(node: Node, in_shape: tuple[int, ...]) -> dict:
    """Everything the kernels need, as a 2-D problem (a 1-D conv has height 1)."""
    a = node.attrs
    rank = a["rank"]
    size = tuple(in_shape[1:])
    kernel, stride, dilation = pair(a["kernel"], rank), pair(a["stride"], rank), pair(a["dilation"], rank)
    for name, v in (("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        if len(v) != rank:
            raise ShapeError(f"layer {node.layer}: {name} {list(v)} must have {rank} numbers for a {rank}-D conv")
    pads = explicit_pads(a["padding"], rank, size, kernel, stride, dilation, node.layer)
    out = out_sizes(size, kernel, stride, dilation, pads, node.layer, "kernel")
    g = dict(C=in_shape[0], size=size, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out)
    if rank == 1:
        g2 = dict(H=1, W=size[0], kh=1, kw=kernel[0], sh=1, sw=stride[0], dh=1, dw=dilation[0],
                  pt=0, pl=pads[0], OH=1, OW=out[0])
    else:
        g2 = dict(H=size[0], W=size[1], kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1],
                  dh=dilation[0], dw=dilation[1], pt=pads[0], pl=pads[1], OH=out[0], OW=out[1])
    g.update(g2)
    return g


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    rank = node.attrs["rank"]
    if t.dtype != "float32" or len(t.shape) != rank + 1:
        want = "(N, channels, length)" if rank == 1 else "(N, channels, height, width)"
        raise ShapeError(f"layer {node.layer}: conv{rank}d expects float input {want}, got {t}"
                         + (f" of {t.dtype}" if t.dtype != "float32" else ""))
    groups, filters = node.attrs["groups"], node.attrs["filters"]
    if t.shape[0] % groups or filters % groups:
        raise ShapeError(f"layer {node.layer}: groups {groups} must divide both the input channels "
                         f"({t.shape[0]}) and the filters ({filters})")
    g = geometry(node, t.shape)
    return TensorType((filters,) + g["out"])


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    a = node.attrs
    c, rank = types[0].shape[0], a["rank"]
    kernel = pair(a["kernel"], rank)
    f, groups = a["filters"], a["groups"]
    area = int(np.prod(kernel))
    fan_in, fan_out = c // groups * area, f // groups * area
    init = a.get("initializer") or default_initializer(a.get("activation", "identity"))
    decls = [ParamDecl("W", (f, c // groups) + kernel, init, fan_in, fan_out)]
    if a.get("use_bias", True):
        decls.append(ParamDecl("b", (f,), "zeros", fan_in, fan_out))
    return decls


# ---- export and reference ---------------------------------------------------------------------

def _to_onnx(node, in_names, out_name, in_types, b):
    g = geometry(node, in_types[0].shape)
    act = node.attrs.get("activation", "identity")
    use_bias = node.attrs.get("use_bias", True)
    lin = out_name if act == "identity" else b.fresh(f"{node.name}/conv")
    b.node("Conv", [in_names[0]] + list(node.params[:2 if use_bias else 1]), [lin],
           kernel_shape=list(g["kernel"]), strides=list(g["stride"]), dilations=list(g["dilation"]),
           pads=list(g["pads"]), group=node.attrs["groups"])
    if act != "identity":
        b.node(ONNX_OP[act], [lin], [out_name])


def _reference(node, xs, ps, ctx=None):
    """Direct convolution in numpy: a sum over kernel taps of strided slices of the padded input."""
    g = geometry(node, xs[0].shape[1:])
    n = xs[0].shape[0]
    x = xs[0].reshape(n, g["C"], g["H"], g["W"])
    groups, f = node.attrs["groups"], node.attrs["filters"]
    w = ps[0].reshape(f, g["C"] // groups, g["kh"], g["kw"])
    pb = g["pads"][2:] if node.attrs["rank"] == 2 else (0, g["pads"][1])
    xp = np.pad(x, ((0, 0), (0, 0), (g["pt"], pb[0]), (g["pl"], pb[1])))
    oh, ow = g["OH"], g["OW"]
    y = np.zeros((n, f, oh, ow), x.dtype)
    cg, fg = g["C"] // groups, f // groups
    for gi in range(groups):
        xg = xp[:, gi * cg:(gi + 1) * cg]
        wg = w[gi * fg:(gi + 1) * fg]
        for i in range(g["kh"]):
            for j in range(g["kw"]):
                h0, w0 = i * g["dh"], j * g["dw"]
                patch = xg[:, :, h0:h0 + g["sh"] * (oh - 1) + 1:g["sh"], w0:w0 + g["sw"] * (ow - 1) + 1:g["sw"]]
                y[:, gi * fg:(gi + 1) * fg] += np.einsum("nchw,fc->nfhw", patch, wg[:, :, i, j])
    if node.attrs.get("use_bias", True):
        y += ps[1][None, :, None, None]
    y = apply_reference(node.attrs.get("activation", "identity"), y)
    return y.reshape((n, f) + g["out"])


CONV = OpSpec("Conv", _infer, _to_onnx, _reference, kernels="nngraph.ops.conv_bind", params=_params,
              layers={"conv2d": lambda attrs: {**attrs, "rank": 2}, "conv1d": lambda attrs: {**attrs, "rank": 1}},
              fuses=frozenset({"relu", "sigmoid", "tanh"}))
SPECS = [CONV]
