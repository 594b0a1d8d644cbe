"""Conv's bindings: workspaces, the thread split and the closures over the stride-1 (conv_shift.py)
and strided (conv_kernels.py) kernels. Equations and geometry in conv.py."""
from __future__ import annotations

import numpy as np
from numba import config

from ..ir.graph import Node, TensorType
from ..linalg.gemm import NR
from ..linalg.packed import pack_size
from . import conv_kernels as K
from . import conv_shift as S
from .activations import check_activation
from .base import OpKernels
from .conv import geometry


# A conv call runs on several threads from this many multiply-adds (~60 us of one core with the
# vector kernels). Lower costs more than it saves: a parallel region waits for its slowest thread,
# and on a loaded machine a descheduled one stalls it for a time slice.
THREADED_MIN = 1 << 23


# Below this many filters per group the stride-1 weight gradient uses dot products (see _bind_backward):
# three quarters of the tile kernel's width (32 columns with AVX-512, 16 with AVX2).
NT_FILTERS = 3 * NR // 4


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
        p = g["OH"] * g["OW"]
        q = row_floats(p * sub_block(batch, p))
        ws["cols"] = (t, k, q)                                # a few samples' patches per thread
        ws["zs"] = (t, f, q)                                  # their outputs / output gradients
        ws["pks"] = (t, pack_size(0) if k // groups >= K.PACKED_K else 1)  # panels of col / col^T
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


# The strided path unfolds this many output positions at a time (whole samples; at least one): the
# products' column count. 392 columns (8 samples of 7x7) ran dW 2.8x faster than 49 (see conv_kernels).
COLUMNS = 512


def sub_block(batch: int, positions: int) -> int:
    """Samples the strided path unfolds together: a block's samples in equal sub-blocks of at most
    COLUMNS positions (at least one sample). 4 samples of 13 x 13 outputs ran as 3 + 1 (products
    of 507 and 169 columns); as 2 + 2 every product has 338."""
    per_block = -(-batch // blocks(batch))
    fit = max(1, COLUMNS // max(1, positions))
    parts = -(-per_block // fit)
    return -(-per_block // parts)


def row_floats(q: int) -> int:
    """The strided path's buffer rows: q floats rounded up to whole 64-byte lines, so every row of
    col and z starts aligned (the dot-product dW kernel's vector loads along 507-float rows split
    cache lines: 57 GFLOP/s vs 106 at 512)."""
    return -(-q // 16) * 16


def threaded(node: Node, g: dict, batch: int) -> bool:
    """Whether a conv call shares its blocks over threads: not below THREADED_MIN multiply-adds,
    where waking the pool costs more than it saves."""
    macs = batch * node.attrs["filters"] * g["C"] // node.attrs["groups"] * g["kh"] * g["kw"] * g["OH"] * g["OW"]
    return thread_count() > 1 and macs >= THREADED_MIN


def _setup(node, xs, ps, y):
    g = geometry(node, xs[0].shape[1:])
    n, f = xs[0].shape[0], node.attrs["filters"]
    x4 = xs[0].reshape(n, g["C"], g["H"], g["W"])
    y3 = y.reshape(n, f, g["OH"] * g["OW"])
    w2 = ps[0].reshape(f, -1)
    geo = (g["kh"], g["kw"], g["sh"], g["sw"], g["dh"], g["dw"], g["pt"], g["pl"], g["OH"], g["OW"],
           sub_block(n, g["OH"] * g["OW"]))
    use_bias = node.attrs.get("use_bias", True)
    return g, x4, y3, w2, geo, use_bias


def _bind_forward(node, xs, ps, y, ws, ctx):
    g, x4, y3, w2, geo, use_bias = _setup(node, xs, ps, y)
    b = ps[1] if use_bias else np.zeros(node.attrs["filters"], y.dtype)  # kernels always add b
    code = check_activation(node, K.ACTIVATIONS)
    groups = node.attrs["groups"]
    if "cols" in ws:  # strided: unfold each sample, then a register-blocked product
        cols = ws["cols"]
        kernel = K.forward_threaded if threaded(node, g, xs[0].shape[0]) else K.forward
        zs, pks = ws["zs"], ws["pks"]

        def run():
            kernel(x4, w2, b, code, y3, cols, zs, pks, groups, geo)
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


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    g, x4, y3, w2, geo, use_bias = _setup(node, xs, ps, y)
    dy3 = dy.reshape(y3.shape)
    db = dps[1] if use_bias else np.zeros(1, y.dtype)
    dw2 = dps[0].reshape(w2.shape)
    code = check_activation(node, K.ACTIVATIONS)
    want_dx = dxs[0] is not None  # the first layer skips dx: a third of its work
    dx4 = dxs[0].reshape(x4.shape) if want_dx else np.zeros((1, 1, 1, 1), y.dtype)
    dws, groups = ws["dws"], node.attrs["groups"]
    dbs = ws["dbs"][:, :db.shape[0]]
    if "cols" in ws:
        cols = ws["cols"]
        kernel = K.backward_threaded if threaded(node, g, xs[0].shape[0]) else K.backward
        zs = ws["zs"]

        def run():
            kernel(x4, w2, y3, dy3, code, cols, zs, ws["pks"], dws, dbs, use_bias, dx4, want_dx, groups, geo, dw2, db)
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


KERNELS = {"Conv": OpKernels(_bind_forward, _bind_backward, _workspace)}
