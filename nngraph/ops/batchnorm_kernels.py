"""BatchNormalization's kernels (equations in batchnorm.py).

Every tensor is viewed as (N, C, S) (S = the product of the spatial axes, 1 for (N, F)). Channels
are independent: each channel's sums run in an order fixed by the compiled loop (see
``_shifted_sums``), and the threaded drivers give each channel to one thread (``prange`` over
channels), so the bits do not depend on the thread count. (N, F) runs along rows instead (see below), with the
same bits. The training forward keeps each channel's mean and 1/sqrt(var + eps) in the workspace
for the backward, which recomputes xhat from them (no xhat buffer).
"""
from __future__ import annotations

import numpy as np
from numba import config, njit, prange

from ..ir.graph import Node, TensorType
from .activations import RELU, check_activation
from .base import OpKernels, RunContext

THREADED_MIN = 1 << 16  # input values below which one thread is faster than waking the pool


def threaded(elements: int) -> bool:
    return config.NUMBA_NUM_THREADS > 1 and elements >= THREADED_MIN


# Reductions may reassociate (LLVM vectorises them: 8 float32 lanes); the lanes' order is fixed by
# the compiled loop and the length, never by the thread count or the data's address. Measured on
# the mnist_resnet shapes, one thread: 2.1 ns/element forward and 3.4 backward with scalar float64
# partial sums and float64 element arithmetic, 0.5 and 0.8 with these passes.
_FM = {"reassoc", "contract"}
CHUNK = 256  # positions summed in x.dtype before the float64 running sum: short float32 partial sums


@njit(cache=True, fastmath=_FM)
def _segment_sums(xs, k):
    """(sum (xs - k), sum (xs - k)^2) of one contiguous segment, in xs's dtype (vectorised)."""
    ra = xs[0] * np.float32(0)  # xs's dtype (an int literal would promote to float64)
    rb = ra
    for s in range(xs.shape[0]):
        d = xs[s] - k
        ra += d
        rb += d * d
    return ra, rb


@njit(cache=True, fastmath=_FM)
def _shifted_sums(x, c, k):
    """(sum (x - k), sum (x - k)^2) over channel c (k: one of its values, so the one-pass variance
    does not cancel): each sample's positions in x's dtype (in chunks of CHUNK when longer), float64
    across samples and chunks. (Chunks are slices: a loop over a computed sub-range of the row was
    not vectorised, 2.5 vs 0.24 ns/element.)"""
    n_, _, s_ = x.shape
    a = 0.0
    b = 0.0
    for n in range(n_):
        row = x[n, c]
        if s_ <= CHUNK:
            ra, rb = _segment_sums(row, k)
            a += ra
            b += rb
        else:
            for s0 in range(0, s_, CHUNK):
                ra, rb = _segment_sums(row[s0:s0 + CHUNK], k)
                a += ra
                b += rb
    return a, b


@njit(cache=True, fastmath=_FM)
def _normalize_channel(x, y, coef, c, relu):
    """y = (x - mean) * a + b (coef[c] = mean, a, b in x's dtype), through a ReLU with ``relu``."""
    n_, _, s_ = x.shape
    mu, a, b = coef[c, 0], coef[c, 1], coef[c, 2]
    zero = mu * np.float32(0)
    for n in range(n_):
        xr = x[n, c]
        yr = y[n, c]
        if relu:
            for s in range(s_):
                v = (xr[s] - mu) * a + b
                yr[s] = v if v > zero else zero
        else:
            for s in range(s_):
                yr[s] = (xr[s] - mu) * a + b


@njit(cache=True, fastmath=_FM)
def _train_channel(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, coef, c, eps, momentum, relu):
    """Batch statistics of channel c, its output (through a ReLU with ``relu``: a following relu
    layer fused by the IR pass), saved statistics and running-statistics update."""
    n_, _, s_ = x.shape
    m = n_ * s_
    k = x[0, c, 0]
    a, b = _shifted_sums(x, c, k)
    mu = k + a / m
    var = max(b / m - (a / m) * (a / m), 0.0)
    inv = 1.0 / np.sqrt(var + eps)
    coef[c, 0] = mu
    coef[c, 1] = scale[c] * inv
    coef[c, 2] = bias[c]
    _normalize_channel(x, y, coef, c, relu)
    mean_ws[c] = mu
    inv_ws[c] = inv
    unbiased = var * m / (m - 1) if m > 1 else var
    rmean[c] = (1.0 - momentum) * rmean[c] + momentum * mu
    rvar[c] = (1.0 - momentum) * rvar[c] + momentum * unbiased


@njit(cache=True)
def train_forward(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, coef, eps, momentum, relu):
    for c in range(x.shape[1]):
        _train_channel(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, coef, c, eps, momentum, relu)


@njit(cache=True, parallel=True)
def train_forward_threaded(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, coef, eps, momentum, relu):
    for c in prange(x.shape[1]):  # channels are disjoint: no races, the same bits at any thread count
        _train_channel(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, coef, c, eps, momentum, relu)


@njit(cache=True)
def _infer_channel(x, y, scale, bias, rmean, rvar, coef, c, eps, relu):
    coef[c, 0] = rmean[c]
    coef[c, 1] = scale[c] / np.sqrt(rvar[c] + eps)
    coef[c, 2] = bias[c]
    _normalize_channel(x, y, coef, c, relu)


@njit(cache=True)
def infer_forward(x, y, scale, bias, rmean, rvar, coef, eps, relu):
    for c in range(x.shape[1]):
        _infer_channel(x, y, scale, bias, rmean, rvar, coef, c, eps, relu)


@njit(cache=True, parallel=True)
def infer_forward_threaded(x, y, scale, bias, rmean, rvar, coef, eps, relu):
    for c in prange(x.shape[1]):
        _infer_channel(x, y, scale, bias, rmean, rvar, coef, c, eps, relu)


@njit(cache=True, fastmath=_FM)
def _segment_grad_sums(xs, ys, gs, mu, relu):
    """(sum e, sum e (xs - mu)) of one segment, e = gs masked where ys <= 0 with ``relu``."""
    zero = mu * np.float32(0)
    ra = zero
    rb = zero
    if relu:
        for s in range(xs.shape[0]):
            e = gs[s] if ys[s] > zero else zero
            ra += e
            rb += e * (xs[s] - mu)
    else:
        for s in range(xs.shape[0]):
            e = gs[s]
            ra += e
            rb += e * (xs[s] - mu)
    return ra, rb


@njit(cache=True, fastmath=_FM)
def _grad_sums(x, y, dy, c, mu, relu):
    """(sum e, sum e (x - mu)) over channel c, e = dy masked where a fused ReLU's output is 0 (its
    subgradient at 0 taken as 0, as the relu op); summed as ``_shifted_sums``."""
    n_, _, s_ = x.shape
    a = 0.0
    b = 0.0
    for n in range(n_):
        xr, yr, gr = x[n, c], y[n, c], dy[n, c]
        if s_ <= CHUNK:
            ra, rb = _segment_grad_sums(xr, yr, gr, mu, relu)
            a += ra
            b += rb
        else:
            for s0 in range(0, s_, CHUNK):
                e = s0 + CHUNK
                ra, rb = _segment_grad_sums(xr[s0:e], yr[s0:e], gr[s0:e], mu, relu)
                a += ra
                b += rb
    return a, b


@njit(cache=True, fastmath=_FM)
def _input_grad_channel(x, y, dy, dx, coef, c, relu):
    """dx = k1 e + k2 (x - mean) + k3 (coef[c] = mean, k1, k2, k3), e as in ``_grad_sums``."""
    n_, _, s_ = x.shape
    mu, k1, k2, k3 = coef[c, 0], coef[c, 1], coef[c, 2], coef[c, 3]
    zero = mu * np.float32(0)
    for n in range(n_):
        xr, yr, gr, dr = x[n, c], y[n, c], dy[n, c], dx[n, c]
        if relu:
            for s in range(s_):
                e = gr[s] if yr[s] > zero else zero
                dr[s] = k1 * e + k2 * (xr[s] - mu) + k3
        else:
            for s in range(s_):
                dr[s] = k1 * gr[s] + k2 * (xr[s] - mu) + k3


@njit(cache=True)
def _backward_channel(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, coef, c, want_dx, relu):
    """dbeta = sum e, dgamma = sum e xhat, dx = gamma s / m (m e - dbeta - xhat dgamma)
    = k1 e + k2 (x - mean) + k3 with k1 = gamma s, k2 = -gamma s^2 dgamma / m, k3 = -gamma s dbeta / m
    (s = 1/sqrt(var + eps); e = dy, masked by a fused ReLU)."""
    n_, _, s_ = x.shape
    m = n_ * s_
    mu = mean_ws[c]
    inv = inv_ws[c] * 1.0
    db, sx = _grad_sums(x, y, dy, c, mu, relu)
    dg = sx * inv
    dscale[c] = dg
    dbias[c] = db
    if want_dx:
        gs = scale[c] * inv
        coef[c, 0] = mu
        coef[c, 1] = gs
        coef[c, 2] = -gs * inv * dg / m
        coef[c, 3] = -gs * db / m
        _input_grad_channel(x, y, dy, dx, coef, c, relu)


@njit(cache=True)
def backward(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, coef, want_dx, relu):
    for c in range(x.shape[1]):
        _backward_channel(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, coef, c, want_dx, relu)


@njit(cache=True, parallel=True)
def backward_threaded(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, coef, want_dx, relu):
    for c in prange(x.shape[1]):
        _backward_channel(x, y, dy, dx, scale, dscale, dbias, mean_ws, inv_ws, coef, c, want_dx, relu)


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
    return {"mean": (c,), "inv_std": (c,)}


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
        fwd = infer_forward_threaded if threaded(x3.size) else infer_forward
        coef = np.zeros((x3.shape[1], 3), y.dtype)

        def run_inference():
            fwd(x3, y3, scale, bias, rmean, rvar, coef, eps, relu)
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
    train = train_forward_threaded if threaded(x3.size) else train_forward
    coef = np.zeros((x3.shape[1], 3), y.dtype)

    def run_training():
        train(x3, y3, scale, bias, rmean, rvar, mean_ws, inv_ws, coef, eps, momentum, relu)
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
    bwd = backward_threaded if threaded(x3.size) else backward
    coef = np.zeros((x3.shape[1], 4), y.dtype)

    def run():
        bwd(x3, y3, dy3, dx3, scale, dscale, dbias, mean_ws, inv_ws, coef, want_dx, relu)
    return run


KERNELS = {"BatchNormalization": OpKernels(_bind_forward, _bind_backward, _workspace)}
