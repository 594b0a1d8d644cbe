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
(conv_kernels.py). Both work sample by sample in cache, one block of samples per thread.
Padding "same" is ONNX SAME_UPPER / Keras / PyTorch: OH = ceil(H / stride), total pad
max((OH-1) s + d (k-1) + 1 - H, 0), the odd unit at the end; it is exported as explicit pads.
"""
from __future__ import annotations

import numpy as np
from numba import config

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from ..linalg.gemm import NR
from . import conv_kernels as K
from . import conv_shift as S
from .activations import CODES, ONNX_OP, apply_reference
from .base import OpDef, ParamDecl
from .dense import default_initializer

# A conv call runs on several threads from this many multiply-adds (~60 us of one core with the
# vector kernels). Lower costs more than it saves: a parallel region waits for its slowest thread,
# and on a loaded machine a descheduled one stalls it for a time slice.
THREADED_MIN = 1 << 23

# Below this many filters per group the stride-1 weight gradient uses dot products (see _bind_backward):
# three quarters of the tile kernel's width (32 columns with AVX-512, 16 with AVX2).
NT_FILTERS = 3 * NR // 4


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


def _shift_dims(g: dict) -> tuple[int, int, int]:
    """(Hp, Wp, flat length with slack) of the padded sample of the stride-1 path (conv_shift.py)."""
    hp = g["H"] + g["pt"] + (g["pads"][2] if len(g["pads"]) == 4 else 0)
    wp = g["W"] + g["pl"] + g["pads"][-1]
    return hp, wp, g["C"] * hp * wp + (g["kw"] - 1) * g["dw"]


def _shift_rows(g: dict) -> tuple[int, int]:
    """(front, L) of the stride-1 path's per-filter rows: dz on the wide grid sits after ``front``
    zeros (the largest tap shift), so the dx product reads every shifted row in bounds; L = front +
    Hp Wp."""
    hp, wp, _ = _shift_dims(g)
    front = (g["kh"] - 1) * g["dh"] * wp + (g["kw"] - 1) * g["dw"]
    return front, front + hp * wp


def _shift_tables(node: Node, g: dict) -> dict[str, np.ndarray]:
    """Row-offset tables of the stride-1 products (see conv_shift.py)."""
    hp, wp, _ = _shift_dims(g)
    front, length = _shift_rows(g)
    groups, f = node.attrs["groups"], node.attrs["filters"]
    cg, fg = g["C"] // groups, f // groups
    offs = S.offsets(cg, g["kh"], g["kw"], g["dh"], g["dw"], hp, wp)
    offs = np.concatenate([offs + gi * cg * hp * wp for gi in range(groups)])
    taps = g["kh"] * g["kw"]
    fi, ii, jj = np.meshgrid(np.arange(f), np.arange(g["kh"]), np.arange(g["kw"]), indexing="ij")
    xoffs = (fi * length + front - ii * g["dh"] * wp - jj * g["dw"]).reshape(-1).astype(np.int64)
    return dict(offs=offs, arow=np.arange(f, dtype=np.int64) * cg * taps,
                dzrow=np.arange(f, dtype=np.int64) * length + front,
                qrow=np.arange(g["OH"] * wp, dtype=np.int64) * f,
                xrow=np.arange(g["C"], dtype=np.int64) * fg * taps, xoffs=xoffs, front=front)


def _workspace(node: Node, types: list[TensorType], batch: int) -> dict[str, tuple[int, ...]]:
    g = geometry(node, types[0].shape)
    f, groups = node.attrs["filters"], node.attrs["groups"]
    k = g["C"] * g["kh"] * g["kw"]
    t = blocks(batch)
    ws = {"dws": (t, f, k // groups), "dbs": (t, f)}        # per-thread partial dW, db
    if g["sh"] == g["sw"] == 1:
        hp, wp, flat = _shift_dims(g)
        front, length = _shift_rows(g)
        ws.update(xps=(batch, flat), dxps=(t, flat), zws=(t, f * length), dzts=(t, g["OH"] * wp * f),
                  wperm=(f * k // groups,))
    else:
        ws["cols"] = (t, k, g["OH"] * g["OW"])                # one sample's patches per thread
    return ws


def thread_count() -> int:
    """Numba's thread count (a function, so tests can pretend to have more threads)."""
    return config.NUMBA_NUM_THREADS


# Samples are cut into this many blocks (fewer for small batches), each with its own buffers and
# partial dW/db, summed in block order; threads take whole blocks. The split does not depend on the
# thread count, so neither do the results (1 and 2 threads train the same bits).
SAMPLE_BLOCKS = 8


def blocks(batch: int) -> int:
    """Blocks of samples a conv call works in (see SAMPLE_BLOCKS)."""
    return max(1, min(SAMPLE_BLOCKS, batch))


def threaded(node: Node, g: dict, batch: int) -> bool:
    """Whether a conv call shares its blocks over threads: not below THREADED_MIN multiply-adds,
    where waking the pool costs more than it saves."""
    macs = batch * node.attrs["filters"] * g["C"] // node.attrs["groups"] * g["kh"] * g["kw"] * g["OH"] * g["OW"]
    return thread_count() > 1 and macs >= THREADED_MIN


# ---- binding (kernels in conv_kernels.py) -----------------------------------------------------

def _setup(node, xs, ps, y):
    g = geometry(node, xs[0].shape[1:])
    n, f = xs[0].shape[0], node.attrs["filters"]
    x4 = xs[0].reshape(n, g["C"], g["H"], g["W"])
    y3 = y.reshape(n, f, g["OH"] * g["OW"])
    w2 = ps[0].reshape(f, -1)
    geo = (g["kh"], g["kw"], g["sh"], g["sw"], g["dh"], g["dw"], g["pt"], g["pl"], g["OH"], g["OW"])
    use_bias = node.attrs.get("use_bias", True)
    return g, x4, y3, w2, geo, use_bias


def _bind_forward(node, xs, ps, y, ws):
    g, x4, y3, w2, geo, use_bias = _setup(node, xs, ps, y)
    b = ps[1] if use_bias else np.zeros(node.attrs["filters"], y.dtype)  # kernels always add b
    code = CODES[node.attrs.get("activation", "identity")]
    groups = node.attrs["groups"]
    if "cols" in ws:  # strided: unfold each sample, then a register-blocked product
        cols = ws["cols"]
        kernel = K.forward_threaded if threaded(node, g, xs[0].shape[0]) else K.forward

        def run():
            kernel(x4, w2, b, use_bias, code, y3, cols, groups, geo)
        return run
    hp, wp, _ = _shift_dims(g)
    tab = _shift_tables(node, g)
    xps, zws = ws["xps"], ws["zws"]
    shifted = S.forward_threaded if threaded(node, g, xs[0].shape[0]) else S.forward
    args = (tab["offs"], tab["arow"], groups, g["pt"], g["pl"], hp, wp, g["OW"])
    w_flat = w2.reshape(-1)

    def run_shifted():
        shifted(x4, w_flat, b, use_bias, code, y3, xps, zws, *args)
    return run_shifted


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws):
    g, x4, y3, w2, geo, use_bias = _setup(node, xs, ps, y)
    dy3 = dy.reshape(y3.shape)
    db = dps[1] if use_bias else np.zeros(1, y.dtype)
    dw2 = dps[0].reshape(w2.shape)
    code = CODES[node.attrs.get("activation", "identity")]
    want_dx = dxs[0] is not None  # the first layer skips dx: a third of its work
    dx4 = dxs[0].reshape(x4.shape) if want_dx else np.zeros((1, 1, 1, 1), y.dtype)
    dws, groups = ws["dws"], node.attrs["groups"]
    dbs = ws["dbs"][:, :db.shape[0]]
    if "cols" in ws:
        cols = ws["cols"]
        kernel = K.backward_threaded if threaded(node, g, xs[0].shape[0]) else K.backward

        def run():
            kernel(x4, w2, y3, dy3, code, cols, dws, dbs, use_bias, dx4, want_dx, groups, geo, dw2, db)
        return run
    hp, wp, _ = _shift_dims(g)
    tab = _shift_tables(node, g)
    shifted = S.backward_threaded if threaded(node, g, xs[0].shape[0]) else S.backward
    wperm = ws["wperm"]
    f, cg = node.attrs["filters"], g["C"] // groups
    # W with each input channel's taps as one row: wperm[c, (f, i, j)] = W[f, c, i, j] (per group)
    w_by_channel = ps[0].reshape(groups, f // groups, cg, g["kh"] * g["kw"]).transpose(0, 2, 1, 3)
    wperm4 = wperm.reshape(w_by_channel.shape)
    dwts = dws.reshape(dws.shape[0], -1)
    # dW by dot products (no transposed dz) when a group has few filters: the tile kernel's 32
    # columns would be mostly empty (LeNet's first conv: 16 filters, 2x faster)
    nt = f // groups < NT_FILTERS
    args = (tab["offs"], tab["qrow"], wperm, tab["xrow"], tab["xoffs"], groups, tab["front"], g["pt"], g["pl"],
            hp, wp, g["OW"], nt, tab["dzrow"], dw2, db)

    def run_shifted():
        if want_dx:
            np.copyto(wperm4, w_by_channel)
        shifted(x4, y3, dy3, code, ws["xps"], ws["zws"], ws["dzts"], ws["dxps"], dwts, dbs, use_bias, dx4, want_dx,
                *args)
    return run_shifted


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


def _reference(node, xs, ps):
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


CONV = OpDef("Conv", _infer, _bind_forward, _bind_backward, _to_onnx, _reference, params=_params,
             workspace=_workspace)
OPS = [CONV]
