"""Conv: 1-D and 2-D convolution (NCHW / NCL), y = act(conv(x, W) + b), bias and activation fused.

Layout: W is (F, C/g, kh, kw) (ONNX Conv, PyTorch Conv2d), a 1-D conv is a 2-D conv with kh = 1
and W (F, C/g, k). With K = (C/g) kh kw, P = OH OW positions and N samples, im2col lays the patches
out as col (g K, N P): row k = (c, i, j), column n P + (oh OW + ow), so every layer is ONE large
GEMM per group (BLAS, threaded) instead of N small ones:
    forward    zT[f, nP+p] = sum_k W[f, k] col[k, nP+p]            zT = W col        (F, N P)
               y[n, f, p]  = act(zT[f, nP+p] + b[f])               (transpose fused in the epilogue)
Backward, with dz = dy * act'(y) (written in terms of y, see activations.py):
               dzT[f, nP+p] = dz[n, f, p]       db[f] = sum_{n,p} dz[n, f, p]
               dW = dzT col^T                   (F, K)     one GEMM, col read transposed in place
               dcol = W^T dzT                   (K, N P)   written over col (no longer needed)
               dx[n, c, h, w] = sum of dcol[(c, i, j), nP+p] over the (i, j, p) that read x[n, c, h, w]
                                (col2im, the adjoint of im2col; padding positions drop out)
Groups split rows of col and of W: group gi uses W[gi F/g : (gi+1) F/g] and col rows
[gi K, (gi+1) K), a batched matmul over g.
Padding "same" is ONNX SAME_UPPER / Keras / PyTorch: OH = ceil(H / stride), total pad
max((OH-1) s + d (k-1) + 1 - H, 0), the odd unit at the end; it is exported as explicit pads.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, njit, prange

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .activations import CHUNKS, CODES, ONNX_OP, RELU, SIGMOID, TANH, apply_reference
from .base import OpDef, ParamDecl
from .dense import default_initializer

# Threaded kernels only from this many elements of col (measured, see tools/bench_train.py).
THREADED_MIN = 1 << 20


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


def _workspace(node: Node, types: list[TensorType], batch: int) -> dict[str, tuple[int, ...]]:
    g = geometry(node, types[0].shape)
    k = g["C"] * g["kh"] * g["kw"]
    cols = batch * g["OH"] * g["OW"]
    return {"col": (k, cols), "zt": (node.attrs["filters"], cols)}


# ---- kernels ----------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _valid_range(n_out, stride, offset, size):
    """[lo, hi) of output positions o with 0 <= o * stride + offset < size."""
    lo = 0
    while lo < n_out and lo * stride + offset < 0:
        lo += 1
    hi = n_out
    while hi > lo and (hi - 1) * stride + offset >= size:
        hi -= 1
    return lo, hi


# Each kernel is a body over a block of samples (or filters) plus a serial and a threaded driver:
# the threaded one splits the block range across Numba's threads, each block writing disjoint
# memory (no races). Which driver runs is chosen at bind time by size (see ``threaded``).

@njit(cache=True)
def _im2col_rows(x, col, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, lo, hi):
    n_, c_, h_, w_ = x.shape
    npos = oh * ow
    for n in range(lo, hi):
        base = n * npos
        for c in range(c_):
            for i in range(kh):
                a_lo, a_hi = _valid_range(oh, sh, i * dh - pt, h_)
                for j in range(kw):
                    row = col[(c * kh + i) * kw + j]
                    off = j * dw - pl
                    b_lo, b_hi = _valid_range(ow, sw, off, w_)
                    for a in range(oh):
                        o = base + a * ow
                        if a < a_lo or a >= a_hi or b_lo >= b_hi:
                            for b in range(ow):
                                row[o + b] = 0
                            continue
                        xr = x[n, c, a * sh - pt + i * dh]
                        for b in range(b_lo):
                            row[o + b] = 0
                        if sw == 1:  # the common case: a contiguous run the compiler vectorises
                            for b in range(b_lo, b_hi):
                                row[o + b] = xr[b + off]
                        else:
                            for b in range(b_lo, b_hi):
                                row[o + b] = xr[b * sw + off]
                        for b in range(b_hi, ow):
                            row[o + b] = 0


@njit(cache=True)
def _col2im_rows(dcol, dx, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, lo, hi):
    n_, c_, h_, w_ = dx.shape
    npos = oh * ow
    for n in range(lo, hi):
        base = n * npos
        for c in range(c_):
            for h in range(h_):
                for w in range(w_):
                    dx[n, c, h, w] = 0
            for i in range(kh):
                a_lo, a_hi = _valid_range(oh, sh, i * dh - pt, h_)
                for j in range(kw):
                    row = dcol[(c * kh + i) * kw + j]
                    off = j * dw - pl
                    b_lo, b_hi = _valid_range(ow, sw, off, w_)
                    for a in range(a_lo, a_hi):
                        xr = dx[n, c, a * sh - pt + i * dh]
                        o = base + a * ow
                        for b in range(b_lo, b_hi):
                            xr[b * sw + off] += row[o + b]


@njit(cache=True)
def _bias_act_rows(zt, y, b, use_bias, code, lo, hi):
    n_, f_, npos = y.shape
    for n in range(lo, hi):
        for f in range(f_):
            src = zt[f, n * npos:(n + 1) * npos]
            dst = y[n, f]
            bias = b[f] if use_bias else 0
            if code == RELU:
                for p in range(npos):
                    v = src[p] + bias
                    dst[p] = v if v > 0 else 0
            elif code == SIGMOID:
                for p in range(npos):
                    v = src[p] + bias
                    dst[p] = 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
            elif code == TANH:
                for p in range(npos):
                    dst[p] = math.tanh(src[p] + bias)
            else:
                for p in range(npos):
                    dst[p] = src[p] + bias


@njit(cache=True)
def _act_grad_filters(dy, y, code, dzt, db, use_bias, lo, hi):
    n_, f_, npos = y.shape
    for f in range(lo, hi):
        s = 0.0
        for n in range(n_):
            g = dy[n, f]
            r = y[n, f]
            dst = dzt[f, n * npos:(n + 1) * npos]
            if code == RELU:
                for p in range(npos):
                    v = g[p] if r[p] > 0 else 0
                    dst[p] = v
                    s += v
            elif code == SIGMOID:
                for p in range(npos):
                    v = g[p] * r[p] * (1 - r[p])
                    dst[p] = v
                    s += v
            elif code == TANH:
                for p in range(npos):
                    v = g[p] * (1 - r[p] * r[p])
                    dst[p] = v
                    s += v
            else:
                for p in range(npos):
                    dst[p] = g[p]
                    s += g[p]
        if use_bias:
            db[f] = s


@njit(cache=True)
def im2col(x, col, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    """col[(c, i, j), n P + a OW + b] = x[n, c, a sh - pt + i dh, b sw - pl + j dw] (0 outside)."""
    _im2col_rows(x, col, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, 0, x.shape[0])


@njit(cache=True, parallel=True)
def im2col_threaded(x, col, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    n, k = x.shape[0], CHUNKS
    for c in prange(k):
        _im2col_rows(x, col, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, c * n // k, (c + 1) * n // k)


@njit(cache=True)
def col2im(dcol, dx, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    """The adjoint of im2col: dx[n, c, h, w] = sum of the dcol entries im2col copied x[n, c, h, w] to."""
    _col2im_rows(dcol, dx, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, 0, dx.shape[0])


@njit(cache=True, parallel=True)
def col2im_threaded(dcol, dx, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow):
    n, k = dx.shape[0], CHUNKS
    for c in prange(k):  # samples are disjoint in dx: no races
        _col2im_rows(dcol, dx, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, c * n // k, (c + 1) * n // k)


@njit(cache=True)
def bias_act_transpose(zt, y, b, use_bias, code):
    """y[n, f, p] = act(zT[f, n P + p] + b[f]): the GEMM's (F, N P) result into NCHW."""
    _bias_act_rows(zt, y, b, use_bias, code, 0, y.shape[0])


@njit(cache=True, parallel=True)
def bias_act_transpose_threaded(zt, y, b, use_bias, code):
    n, k = y.shape[0], CHUNKS
    for c in prange(k):
        _bias_act_rows(zt, y, b, use_bias, code, c * n // k, (c + 1) * n // k)


@njit(cache=True)
def act_grad_transpose(dy, y, code, dzt, db, use_bias):
    """dzT[f, n P + p] = dy[n, f, p] act'(y[n, f, p]); db[f] = its sum over n and p."""
    _act_grad_filters(dy, y, code, dzt, db, use_bias, 0, y.shape[1])


@njit(cache=True, parallel=True)
def act_grad_transpose_threaded(dy, y, code, dzt, db, use_bias):
    f = y.shape[1]
    for c in prange(f):  # one filter per iteration: each db[f] has a single writer
        _act_grad_filters(dy, y, code, dzt, db, use_bias, c, c + 1)


# Products below this many multiply-adds run in serial Numba loops instead of BLAS: OpenBLAS splits
# even small products over its threads, and on a loaded 2-core machine the hand-off to a
# descheduled worker costs milliseconds for a product that takes microseconds on one thread.
SMALL_GEMM = 1 << 21


@njit(cache=True, fastmath=True)
def gemm_nn(a, b, out):
    """out = a @ b, row-major a (m, k), b (k, n): rows of b streamed (axpy), vectorised."""
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        o = out[i]
        o[:] = 0
        for p in range(k):
            aip = a[i, p]
            r = b[p]
            for j in range(n):
                o[j] += aip * r[j]


@njit(cache=True, fastmath=True)
def gemm_nt(a, b, out):
    """out = a @ b^T for row-major a (m, q) and b (n, q): dot products of contiguous rows."""
    m, q = a.shape
    n = b.shape[0]
    for i in range(m):
        ra = a[i]
        for j in range(n):
            rb = b[j]
            s = 0.0
            for t in range(q):
                s += ra[t] * rb[t]
            out[i, j] = s


@njit(cache=True, fastmath=True)
def gemm_tn(a, b, out):
    """out = a^T @ b for row-major a (q, m) and b (q, n)."""
    q, m = a.shape
    n = b.shape[1]
    out[:] = 0
    for t in range(q):
        rb = b[t]
        for i in range(m):
            ati = a[t, i]
            o = out[i]
            for j in range(n):
                o[j] += ati * rb[j]


def grouped_products(w, col, zt, dw):
    """(forward, weight-gradient, input-gradient) closures for the three products of a conv, per
    group: zt = w col, dw = zt col^T, col = w^T zt. BLAS for big products, Numba loops for small."""
    groups, f, k = w.shape
    npos = col.shape[2]
    small = f * k * npos < SMALL_GEMM
    if groups == 1 and not small:
        w2, c2, z2, d2 = w[0], col[0], zt[0], dw[0]
        c2t, w2t = c2.T, w2.T  # transposed views: BLAS reads them with its trans flag, no copy

        def fwd():
            np.matmul(w2, c2, out=z2)

        def dweight():
            np.matmul(z2, c2t, out=d2)

        def dinput():
            np.matmul(w2t, z2, out=c2)
        return fwd, dweight, dinput
    if not small:
        col_t, w_t = col.transpose(0, 2, 1), w.transpose(0, 2, 1)

        def fwd_g():
            np.matmul(w, col, out=zt)

        def dweight_g():
            np.matmul(zt, col_t, out=dw)

        def dinput_g():
            np.matmul(w_t, zt, out=col)
        return fwd_g, dweight_g, dinput_g
    parts = [(w[g], col[g], zt[g], dw[g]) for g in range(groups)]

    def fwd_s():
        for wg, cg, zg, _ in parts:
            gemm_nn(wg, cg, zg)

    def dweight_s():
        for _, cg, zg, dg in parts:
            gemm_nt(zg, cg, dg)

    def dinput_s():
        for wg, cg, zg, _ in parts:
            gemm_tn(wg, zg, cg)
    return fwd_s, dweight_s, dinput_s


def threaded(work: int) -> bool:
    """Whether a conv kernel touching ``work`` elements runs on Numba's threads. Below the
    threshold, waking the pool (and competing with OpenBLAS's spinning workers right after a GEMM)
    costs more than it saves; see activations.PARALLEL_MIN."""
    return config.NUMBA_NUM_THREADS > 1 and work >= THREADED_MIN


# ---- binding ----------------------------------------------------------------------------------

def _views(node, xs, ps, y, ws):
    g = geometry(node, xs[0].shape[1:])
    n = xs[0].shape[0]
    x4 = xs[0].reshape(n, g["C"], g["H"], g["W"])
    y3 = y.reshape(n, node.attrs["filters"], g["OH"] * g["OW"])
    groups, f = node.attrs["groups"], node.attrs["filters"]
    col, zt = ws["col"], ws["zt"]
    w = ps[0].reshape(groups, f // groups, -1)
    return g, x4, y3, w, col.reshape(groups, -1, col.shape[1]), zt.reshape(groups, f // groups, zt.shape[1])


def _geom_args(g):
    return (g["kh"], g["kw"], g["sh"], g["sw"], g["dh"], g["dw"], g["pt"], g["pl"], g["OH"], g["OW"])


def _bind_forward(node, xs, ps, y, ws):
    g, x4, y3, w, col, zt = _views(node, xs, ps, y, ws)
    args = _geom_args(g)
    use_bias = node.attrs.get("use_bias", True)
    b = ps[1] if use_bias else np.zeros(1, y.dtype)
    code = CODES[node.attrs.get("activation", "identity")]
    product, _, _ = grouped_products(w, col, zt, w)
    par = threaded(ws["col"].size)
    unfold = im2col_threaded if par else im2col
    epilogue = bias_act_transpose_threaded if par else bias_act_transpose

    def run():
        unfold(x4, ws["col"], *args)
        product()
        epilogue(ws["zt"], y3, b, use_bias, code)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws):
    g, x4, y3, w, col, zt = _views(node, xs, ps, y, ws)
    args = _geom_args(g)
    n = xs[0].shape[0]
    dy3 = dy.reshape(y3.shape)
    use_bias = node.attrs.get("use_bias", True)
    db = dps[1] if use_bias else np.zeros(1, y.dtype)
    dw = dps[0].reshape(w.shape)
    code = CODES[node.attrs.get("activation", "identity")]
    dx4 = dxs[0].reshape(n, g["C"], g["H"], g["W"]) if dxs[0] is not None else None
    _, dweight, dinput = grouped_products(w, col, zt, dw)
    par = threaded(ws["col"].size)
    act_grad = act_grad_transpose_threaded if par else act_grad_transpose
    fold = col2im_threaded if par else col2im

    def run():
        act_grad(dy3, y3, code, ws["zt"], db, use_bias)   # zt now holds dzT
        dweight()
        if dx4 is not None:
            dinput()                                      # dcol over col (no longer needed)
            fold(ws["col"], dx4, *args)
    return run


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
