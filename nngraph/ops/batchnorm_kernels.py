"""BatchNormalization's kernels (equations in batchnorm.py).

Every tensor is viewed as (N, C, S) (S = the product of the spatial axes, 1 for (N, F)). Channels
are independent: each channel's sums run in an order fixed by the code (explicit vector lanes, see
``_stats32``), and the threaded drivers give each channel to one thread (``prange`` over
channels), so the bits do not depend on the thread count. (N, F) runs along rows instead (see below), with the
same bits. The training forward keeps each channel's mean and 1/sqrt(var + eps) in the workspace
for the backward, which recomputes xhat from them (no xhat buffer).
"""
from __future__ import annotations

import numpy as np
from numba import config, njit, prange

from ..ir.graph import Node, TensorType
from ..linalg.vec import (LANES, data_ptr, vadd, vfma, vkeep_n, vload_n, vmax, vstore_n, vsub, vsplat_value,
                          vsum, vwhere_positive, vzero)
from .activations import RELU, check_activation
from .base import OpKernels, RunContext

THREADED_MIN = 1 << 16  # input values below which one thread is faster than waking the pool


def threaded(elements: int) -> bool:
    return config.NUMBA_NUM_THREADS > 1 and elements >= THREADED_MIN


# No fast-math anywhere: with "reassoc"/"contract" LLVM may compile a callee differently inside
# each caller (and the JIT runs whichever copy it loaded first), so a process that compiled the
# kernels and one that loaded them from the cache trained different bits (rnn_math.py has the
# story). float32 runs explicit SIMD vectors (linalg/vec.py: the lanes' order is in the code);
# float64 (the gradient checks) plain loops.
# Measured on the mnist_resnet shapes, one thread: 2.1 ns/element forward and 3.4 backward with
# scalar float64 partial sums and float64 element arithmetic; 0.5 and 0.8 with the vector passes.
CHUNK = 256  # positions summed in float32 lanes before the float64 running sums (a multiple of LANES)


# ---- float32: vector passes over one channel's rows -------------------------------------------
# Rows of channel c are x[n, c, :], at base + n * stride (base = c S, stride = C S) in the flat data.

@njit(cache=True)
def _stats32(xp, base, stride, n_, s_, k):
    """(sum (x - k), sum (x - k)^2) over channel c (k: one of its values, so the one-pass variance
    does not cancel): float32 lanes within chunks of a row, float64 across chunks and rows."""
    kv = vsplat_value(k)
    a = 0.0
    b = 0.0
    for n in range(n_):
        row = base + n * stride
        for s0 in range(0, s_, CHUNK):
            e = min(s_, s0 + CHUNK)
            acc_a = vzero()
            acc_b = vzero()
            for s in range(s0, e, LANES):
                d = vkeep_n(vsub(vload_n(xp, row + s, e - s), kv), e - s)
                acc_a = vadd(acc_a, d)
                acc_b = vfma(d, d, acc_b)
            a += vsum(acc_a)
            b += vsum(acc_b)
    return a, b


@njit(cache=True)
def _normalize32(xp, yp, base, stride, n_, s_, mu, scale, shift, relu):
    """y = (x - mu) * scale + shift over channel c (one rounding: a fused multiply-add), max(., 0)
    with ``relu``."""
    muv, av, bv, zero = vsplat_value(mu), vsplat_value(scale), vsplat_value(shift), vzero()
    for n in range(n_):
        row = base + n * stride
        for s in range(0, s_, LANES):
            v = vfma(vsub(vload_n(xp, row + s, s_ - s), muv), av, bv)
            if relu:
                v = vmax(v, zero)
            vstore_n(yp, row + s, v, s_ - s)


@njit(cache=True)
def _grad_sums32(xp, gp, base, stride, n_, s_, mu, a, b, relu):
    """(sum e, sum e (x - mu)) over channel c, e = dy masked where a fused ReLU's output is 0 (its
    subgradient at 0 taken as 0, as the relu op); summed as ``_stats32`` (masked lanes load e = 0).
    The mask is the forward's own test, recomputed from x with the same operations and float32
    coefficients (so the same bits): y is not read (one array fewer in each pass: the mnist_resnet
    step's batch-norm backward kernels 4.75 -> 3.72 ms on one thread, measured under load)."""
    muv, av, bv, zero = vsplat_value(mu), vsplat_value(a), vsplat_value(b), vzero()
    acc = 0.0
    acc2 = 0.0
    for n in range(n_):
        row = base + n * stride
        for s0 in range(0, s_, CHUNK):
            e_ = min(s_, s0 + CHUNK)
            acc_a = vzero()
            acc_b = vzero()
            for s in range(s0, e_, LANES):
                e = vload_n(gp, row + s, e_ - s)
                d = vsub(vload_n(xp, row + s, e_ - s), muv)
                if relu:
                    e = vwhere_positive(vfma(d, av, bv), e)
                acc_a = vadd(acc_a, e)
                acc_b = vfma(e, d, acc_b)
            acc += vsum(acc_a)
            acc2 += vsum(acc_b)
    return acc, acc2


@njit(cache=True)
def _input_grad32(xp, gp, dp, base, stride, n_, s_, mu, a, b, k1, k2, k3, relu):
    """dx = k1 e + k2 (x - mu) + k3 over channel c, e as in ``_grad_sums32``."""
    muv, av, bv = vsplat_value(mu), vsplat_value(a), vsplat_value(b)
    k1v, k2v, k3v = vsplat_value(k1), vsplat_value(k2), vsplat_value(k3)
    for n in range(n_):
        row = base + n * stride
        for s in range(0, s_, LANES):
            m = s_ - s
            e = vload_n(gp, row + s, m)
            d = vsub(vload_n(xp, row + s, m), muv)
            if relu:
                e = vwhere_positive(vfma(d, av, bv), e)
            vstore_n(dp, row + s, vfma(k1v, e, vfma(k2v, d, k3v)), m)


@njit(cache=True)
def _train_channel32(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, a_ws, c, eps, momentum, relu):
    n_, c_, s_ = x.shape
    m = n_ * s_
    base, stride = c * s_, c_ * s_
    xp = data_ptr(x)
    k = x[0, c, 0]
    a, b = _stats32(xp, base, stride, n_, s_, k)
    mu = k + a / m
    var = max(b / m - (a / m) * (a / m), 0.0)
    inv = 1.0 / np.sqrt(var + eps)
    mu32 = np.float32(mu)
    a32 = np.float32(scale[c] * inv)
    _normalize32(xp, data_ptr(y), base, stride, n_, s_, mu32, a32, bias[c], relu)
    mean_ws[c] = mu32
    a_ws[c] = a32  # the backward recomputes the relu mask with it
    inv_ws[c] = inv
    unbiased = var * m / (m - 1) if m > 1 else var
    rmean[c] = (1.0 - momentum) * rmean[c] + momentum * mu
    rvar[c] = (1.0 - momentum) * rvar[c] + momentum * unbiased


@njit(cache=True)
def _infer_channel32(x, y, scale, bias, rmean, rvar, c, eps, relu):
    n_, c_, s_ = x.shape
    _normalize32(data_ptr(x), data_ptr(y), c * s_, c_ * s_, n_, s_, rmean[c],
                 np.float32(scale[c] / np.sqrt(rvar[c] + eps)), bias[c], relu)


@njit(cache=True)
def _backward_channel32(x, dy, dx, scale, bias, dscale, dbias, mean_ws, inv_ws, a_ws, c, want_dx, relu):
    """As ``_backward_channel``, with the vector passes (y is not needed: see ``_grad_sums32``)."""
    n_, c_, s_ = x.shape
    m = n_ * s_
    base, stride = c * s_, c_ * s_
    xp, gp = data_ptr(x), data_ptr(dy)
    mu, a, b = mean_ws[c], a_ws[c], bias[c]
    inv = inv_ws[c] * 1.0
    db, sx = _grad_sums32(xp, gp, base, stride, n_, s_, mu, a, b, relu)
    dg = sx * inv
    dscale[c] = dg
    dbias[c] = db
    if want_dx:
        gs = scale[c] * inv
        _input_grad32(xp, gp, data_ptr(dx), base, stride, n_, s_, mu, a, b, np.float32(gs),
                      np.float32(-gs * inv * dg / m), np.float32(-gs * db / m), relu)


# float32 drivers (bound when the plan is float32)
@njit(cache=True)
def train_forward32(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, a_ws, eps, momentum, relu):
    for c in range(x.shape[1]):
        _train_channel32(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, a_ws, c, eps, momentum, relu)


@njit(cache=True, parallel=True)
def train_forward32_threaded(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, a_ws, eps, momentum, relu):
    for c in prange(x.shape[1]):  # channels are disjoint: no races, the same bits at any thread count
        _train_channel32(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, a_ws, c, eps, momentum, relu)


@njit(cache=True)
def infer_forward32(x, y, scale, bias, rmean, rvar, eps, relu):
    for c in range(x.shape[1]):
        _infer_channel32(x, y, scale, bias, rmean, rvar, c, eps, relu)


@njit(cache=True, parallel=True)
def infer_forward32_threaded(x, y, scale, bias, rmean, rvar, eps, relu):
    for c in prange(x.shape[1]):
        _infer_channel32(x, y, scale, bias, rmean, rvar, c, eps, relu)


@njit(cache=True)
def backward32(x, dy, dx, scale, bias, dscale, dbias, mean_ws, inv_ws, a_ws, want_dx, relu):
    for c in range(x.shape[1]):
        _backward_channel32(x, dy, dx, scale, bias, dscale, dbias, mean_ws, inv_ws, a_ws, c, want_dx, relu)


@njit(cache=True, parallel=True)
def backward32_threaded(x, dy, dx, scale, bias, dscale, dbias, mean_ws, inv_ws, a_ws, want_dx, relu):
    for c in prange(x.shape[1]):
        _backward_channel32(x, dy, dx, scale, bias, dscale, dbias, mean_ws, inv_ws, a_ws, c, want_dx, relu)


# ---- float64 (the gradient checks): plain loops, the same equations -------------------------------

@njit(cache=True)
def _train_channel(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, c, eps, momentum, relu):
    """Batch statistics of channel c, its output (through a ReLU with ``relu``: a following relu
    layer fused by the IR pass), saved statistics and running-statistics update."""
    n_, _, s_ = x.shape
    m = n_ * s_
    mu = 0.0
    for n in range(n_):
        for s in range(s_):
            mu += x[n, c, s]
    mu /= m
    var = 0.0
    for n in range(n_):
        for s in range(s_):
            var += (x[n, c, s] - mu) ** 2
    var /= m
    inv = 1.0 / np.sqrt(var + eps)
    g, b = scale[c], bias[c]
    for n in range(n_):
        for s in range(s_):
            v = (x[n, c, s] - mu) * inv * g + b
            y[n, c, s] = max(v, 0.0) if relu else v
    mean_ws[c] = mu
    inv_ws[c] = inv
    unbiased = var * m / (m - 1) if m > 1 else var
    rmean[c] = (1.0 - momentum) * rmean[c] + momentum * mu
    rvar[c] = (1.0 - momentum) * rvar[c] + momentum * unbiased


@njit(cache=True)
def train_forward(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, eps, momentum, relu):
    for c in range(x.shape[1]):
        _train_channel(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, c, eps, momentum, relu)


@njit(cache=True, parallel=True)
def train_forward_threaded(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, eps, momentum, relu):
    for c in prange(x.shape[1]):  # channels are disjoint: no races, the same bits at any thread count
        _train_channel(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, c, eps, momentum, relu)


@njit(cache=True)
def _infer_channel(x, y, scale, bias, rmean, rvar, c, eps, relu):
    n_, _, s_ = x.shape
    mu = rmean[c]
    inv = 1.0 / np.sqrt(rvar[c] + eps)
    g, b = scale[c], bias[c]
    for n in range(n_):
        for s in range(s_):
            v = (x[n, c, s] - mu) * inv * g + b
            y[n, c, s] = max(v, 0.0) if relu else v


@njit(cache=True)
def infer_forward(x, y, scale, bias, rmean, rvar, eps, relu):
    for c in range(x.shape[1]):
        _infer_channel(x, y, scale, bias, rmean, rvar, c, eps, relu)


@njit(cache=True, parallel=True)
def infer_forward_threaded(x, y, scale, bias, rmean, rvar, eps, relu):
    for c in prange(x.shape[1]):
        _infer_channel(x, y, scale, bias, rmean, rvar, c, eps, relu)


@njit(cache=True)
def _backward_channel(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, c, want_dx, relu):
    """dbeta = sum e, dgamma = sum e xhat, dx = gamma s / m (m e - dbeta - xhat dgamma)
    = k1 e + k2 (x - mean) + k3 with k1 = gamma s, k2 = -gamma s^2 dgamma / m, k3 = -gamma s dbeta / m
    (s = 1/sqrt(var + eps); e = dy, masked where a fused ReLU's output is 0)."""
    n_, _, s_ = x.shape
    m = n_ * s_
    mu, inv = mean_ws[c], inv_ws[c]
    db = 0.0
    sx = 0.0
    for n in range(n_):
        for s in range(s_):
            e = dy[n, c, s] if (not relu or y[n, c, s] > 0) else 0.0
            db += e
            sx += e * (x[n, c, s] - mu)
    dg = sx * inv
    dscale[c] = dg
    dbias[c] = db
    if want_dx:
        gs = scale[c] * inv
        k1, k2, k3 = gs, -gs * inv * dg / m, -gs * db / m
        for n in range(n_):
            for s in range(s_):
                e = dy[n, c, s] if (not relu or y[n, c, s] > 0) else 0.0
                dx[n, c, s] = k1 * e + k2 * (x[n, c, s] - mu) + k3


@njit(cache=True)
def backward(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, want_dx, relu):
    for c in range(x.shape[1]):
        _backward_channel(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, c, want_dx, relu)


@njit(cache=True, parallel=True)
def backward_threaded(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, want_dx, relu):
    for c in prange(x.shape[1]):
        _backward_channel(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, c, want_dx, relu)


# ---- (N, F): features along rows ----------------------------------------------------------------
# With one value per channel and sample, a channel's values are a strided column; these passes run
# along rows instead (contiguous, vectorised), with float64 accumulators per feature. Each
# feature's sums still run over n = 0 .. N-1 in order: the same bits as the per-channel loops.
ROW_BLOCK = 256  # features per thread task


@njit(cache=True)
def _train_rows(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, mu, aux, lo, hi, eps, momentum, relu):
    n_ = x.shape[0]
    for f in range(lo, hi):
        mu[f] = 0.0
        aux[f] = 0.0
    for n in range(n_):
        for f in range(lo, hi):
            mu[f] += x[n, f]
    for f in range(lo, hi):
        mu[f] = mu[f] / n_
    for n in range(n_):
        for f in range(lo, hi):
            d = x[n, f] - mu[f]
            aux[f] += d * d
    for f in range(lo, hi):
        var = aux[f] / n_
        inv = 1.0 / np.sqrt(var + eps)
        aux[f] = inv
        mean_ws[f] = mu[f]
        inv_ws[f] = inv
        unbiased = var * n_ / (n_ - 1) if n_ > 1 else var
        rmean[f] = (1.0 - momentum) * rmean[f] + momentum * mu[f]
        rvar[f] = (1.0 - momentum) * rvar[f] + momentum * unbiased
    for n in range(n_):
        for f in range(lo, hi):
            y[n, f] = (x[n, f] - mu[f]) * aux[f] * scale[f] + bias[f]
            if relu and y[n, f] < 0:
                y[n, f] = 0


@njit(cache=True)
def train_rows(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, mu, aux, eps, momentum, relu):
    _train_rows(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, mu, aux, 0, x.shape[1], eps, momentum, relu)


@njit(cache=True, parallel=True)
def train_rows_threaded(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, mu, aux, eps, momentum, relu):
    f_ = x.shape[1]
    for b in prange((f_ + ROW_BLOCK - 1) // ROW_BLOCK):  # disjoint feature blocks
        _train_rows(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, mu, aux, b * ROW_BLOCK,
                    min(f_, (b + 1) * ROW_BLOCK), eps, momentum, relu)


@njit(cache=True)
def infer_rows(x, y, scale, bias, rmean, rvar, inv, eps, relu):
    """Inference on (N, F) along rows (per feature the same arithmetic as ``_infer_channel``)."""
    n_, f_ = x.shape
    for f in range(f_):
        inv[f] = 1.0 / np.sqrt(rvar[f] + eps)
    for n in range(n_):
        for f in range(f_):
            y[n, f] = (x[n, f] - rmean[f] * 1.0) * inv[f] * scale[f] + bias[f]
            if relu and y[n, f] < 0:
                y[n, f] = 0


@njit(cache=True)
def _backward_rows(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, db, dg, lo, hi, want_dx, relu):
    n_ = x.shape[0]
    for f in range(lo, hi):
        db[f] = 0.0
        dg[f] = 0.0
    if relu:
        for n in range(n_):
            for f in range(lo, hi):
                if y[n, f] <= 0:
                    dy[n, f] = 0
    for n in range(n_):
        for f in range(lo, hi):
            d = dy[n, f] * 1.0
            db[f] += d
            dg[f] += d * ((x[n, f] - mean_ws[f] * 1.0) * (inv_ws[f] * 1.0))
    for f in range(lo, hi):
        dscale[f] = dg[f]
        dbias[f] = db[f]
    if want_dx:
        for n in range(n_):
            for f in range(lo, hi):
                mu, inv = mean_ws[f] * 1.0, inv_ws[f] * 1.0
                xh = (x[n, f] - mu) * inv
                dx[n, f] = scale[f] * inv / n_ * (n_ * dy[n, f] - db[f] - xh * dg[f])


@njit(cache=True)
def backward_rows(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, db, dg, want_dx, relu):
    _backward_rows(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, db, dg, 0, x.shape[1], want_dx, relu)


@njit(cache=True, parallel=True)
def backward_rows_threaded(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, db, dg, want_dx, relu):
    f_ = x.shape[1]
    for b in prange((f_ + ROW_BLOCK - 1) // ROW_BLOCK):
        _backward_rows(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, db, dg, b * ROW_BLOCK,
                       min(f_, (b + 1) * ROW_BLOCK), want_dx, relu)


# ---- binding ----------------------------------------------------------------------------------

def _workspace(node: Node, types: list[TensorType], batch: int) -> dict[str, tuple[int, ...]]:
    """The training forward's per-channel mean and 1/sqrt(var + eps), read by the backward."""
    c = types[0].shape[0]
    return {"mean": (c,), "inv_std": (c,), "scale_inv": (c,)}  # scale_inv: float32 passes' relu mask


def _fused_relu(node: Node) -> bool:
    """Whether a following relu was fused into this batch norm (ops' ``fuses``, ir.passes)."""
    return check_activation(node, ("identity", "relu")) == RELU


def _ncs(a: np.ndarray) -> np.ndarray:
    """(N, C, spatial...) as an (N, C, S) view (S = 1 for (N, F))."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _bind_forward(node: Node, xs, ps, y, ws, ctx: RunContext):
    x3, y3 = _ncs(xs[0]), _ncs(y)
    scale, bias, rmean, rvar = ps
    eps = float(node.attrs["epsilon"])
    relu = _fused_relu(node)
    if not ctx.training and xs[0].ndim == 2:
        x2, inv = xs[0], np.zeros(xs[0].shape[1])

        def run_inference_rows():
            infer_rows(x2, y, scale, bias, rmean, rvar, inv, eps, relu)
        return run_inference_rows
    if not ctx.training:
        f32 = y.dtype == np.float32
        fwd = ((infer_forward32_threaded if f32 else infer_forward_threaded) if threaded(x3.size)
               else (infer_forward32 if f32 else infer_forward))

        def run_inference():
            fwd(x3, y3, scale, bias, rmean, rvar, eps, relu)
        return run_inference

    momentum = float(node.attrs["momentum"])
    mean_ws, inv_ws = ws["mean"], ws["inv_std"]
    if xs[0].ndim == 2:  # (N, F): row passes with float64 accumulators
        x2, y2 = xs[0], y
        mu, aux = np.zeros(x2.shape[1]), np.zeros(x2.shape[1])
        rows = train_rows_threaded if threaded(x2.size) else train_rows

        def run_rows():
            rows(x2, y2, scale, bias, rmean, rvar, mean_ws, inv_ws, mu, aux, eps, momentum, relu)
        return run_rows
    if y.dtype == np.float32:
        train32 = train_forward32_threaded if threaded(x3.size) else train_forward32
        a_ws = ws["scale_inv"]

        def run_training32():
            train32(x3, y3, scale, bias, rmean, rvar, mean_ws, inv_ws, a_ws, eps, momentum, relu)
        return run_training32
    train = train_forward_threaded if threaded(x3.size) else train_forward

    def run_training():
        train(x3, y3, scale, bias, rmean, rvar, mean_ws, inv_ws, eps, momentum, relu)
    return run_training


def _bind_backward(node: Node, xs, ps, y, dy, dxs, dps, ws, ctx: RunContext):
    x3, y3, dy3 = _ncs(xs[0]), _ncs(y), _ncs(dy)
    relu = _fused_relu(node)
    want_dx = dxs[0] is not None
    dx3 = _ncs(dxs[0]) if want_dx else np.zeros((1, 1, 1), y.dtype)
    scale = ps[0]
    dscale, dbias = dps[0], dps[1]
    mean_ws, inv_ws = ws["mean"], ws["inv_std"]
    if xs[0].ndim == 2:
        dx2 = dx3.reshape(dx3.shape[0], dx3.shape[1])
        db, dg = np.zeros(x3.shape[1]), np.zeros(x3.shape[1])
        rows = backward_rows_threaded if threaded(x3.size) else backward_rows
        x2, dy2 = xs[0], dy

        def run_rows():
            rows(x2, y, dy2, dx2, scale, dscale, dbias, mean_ws, inv_ws, db, dg, want_dx, relu)
        return run_rows
    if y.dtype == np.float32:
        bwd32 = backward32_threaded if threaded(x3.size) else backward32
        bias, a_ws = ps[1], ws["scale_inv"]

        def run32():
            bwd32(x3, dy3, dx3, scale, bias, dscale, dbias, mean_ws, inv_ws, a_ws, want_dx, relu)
        return run32
    bwd = backward_threaded if threaded(x3.size) else backward

    def run():
        bwd(x3, y3, dy3, dx3, scale, dscale, dbias, mean_ws, inv_ws, want_dx, relu)
    return run


KERNELS = {"BatchNormalization": OpKernels(_bind_forward, _bind_backward, _workspace)}
