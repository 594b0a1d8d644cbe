"""BatchNormalization's kernels (equations in batchnorm.py).

Every tensor is viewed as (N, C, S) (S = the product of the spatial axes, 1 for (N, F)). Channels
are independent: each channel's sums run in a fixed order (four interleaved float64 partial sums,
see ``_sum``), and the threaded drivers give each channel to one thread (``prange`` over channels),
so the bits do not depend on the thread count. (N, F) runs along rows instead (see below), with the
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


@njit(cache=True, inline="always")
def _sum(x, c):
    """sum of x[:, c, :]: four interleaved float64 partial sums over each sample's positions
    (a position's remainder mod 4 picks the sum, the tail past a multiple of 4 goes to the first),
    combined as (a0 + a1) + (a2 + a3) — a fixed order, four times shorter dependency chains."""
    n_, _, s_ = x.shape
    a0 = a1 = a2 = a3 = 0.0
    for n in range(n_):
        s = 0
        while s + 4 <= s_:
            a0 += x[n, c, s]
            a1 += x[n, c, s + 1]
            a2 += x[n, c, s + 2]
            a3 += x[n, c, s + 3]
            s += 4
        while s < s_:
            a0 += x[n, c, s]
            s += 1
    return (a0 + a1) + (a2 + a3)


@njit(cache=True, inline="always")
def _sum_sq(x, c, mu):
    """sum of (x[:, c, :] - mu)^2, in the order of ``_sum``."""
    n_, _, s_ = x.shape
    a0 = a1 = a2 = a3 = 0.0
    for n in range(n_):
        s = 0
        while s + 4 <= s_:
            d0 = x[n, c, s] - mu
            d1 = x[n, c, s + 1] - mu
            d2 = x[n, c, s + 2] - mu
            d3 = x[n, c, s + 3] - mu
            a0 += d0 * d0
            a1 += d1 * d1
            a2 += d2 * d2
            a3 += d3 * d3
            s += 4
        while s < s_:
            d = x[n, c, s] - mu
            a0 += d * d
            s += 1
    return (a0 + a1) + (a2 + a3)


@njit(cache=True, inline="always")
def _sums_dy(x, dy, c, mu, inv):
    """(sum dy, sum dy xhat) over channel c, in the order of ``_sum``."""
    n_, _, s_ = x.shape
    b0 = b1 = b2 = b3 = 0.0
    g0 = g1 = g2 = g3 = 0.0
    for n in range(n_):
        s = 0
        while s + 4 <= s_:
            e0, e1, e2, e3 = dy[n, c, s] * 1.0, dy[n, c, s + 1] * 1.0, dy[n, c, s + 2] * 1.0, dy[n, c, s + 3] * 1.0
            b0 += e0
            b1 += e1
            b2 += e2
            b3 += e3
            g0 += e0 * ((x[n, c, s] - mu) * inv)
            g1 += e1 * ((x[n, c, s + 1] - mu) * inv)
            g2 += e2 * ((x[n, c, s + 2] - mu) * inv)
            g3 += e3 * ((x[n, c, s + 3] - mu) * inv)
            s += 4
        while s < s_:
            e = dy[n, c, s] * 1.0
            b0 += e
            g0 += e * ((x[n, c, s] - mu) * inv)
            s += 1
    return (b0 + b1) + (b2 + b3), (g0 + g1) + (g2 + g3)


@njit(cache=True, inline="always")
def _relu_channel(y, c):
    n_, _, s_ = y.shape
    for n in range(n_):
        for s in range(s_):
            if y[n, c, s] < 0:
                y[n, c, s] = 0


@njit(cache=True, inline="always")
def _relu_grad_channel(y, dy, c):
    """dy := 0 where the fused ReLU's output is 0 (its subgradient at 0 taken as 0, as the relu op)."""
    n_, _, s_ = y.shape
    for n in range(n_):
        for s in range(s_):
            if y[n, c, s] <= 0:
                dy[n, c, s] = 0


@njit(cache=True)
def _train_channel(x, y, scale, bias, rmean, rvar, mean_ws, inv_ws, c, eps, momentum, relu):
    """Batch statistics of channel c, its output (through a ReLU with ``relu``: a following relu
    layer fused by the IR pass), saved statistics and running-statistics update."""
    n_, _, s_ = x.shape
    m = n_ * s_
    mu = _sum(x, c) / m
    var = _sum_sq(x, c, mu) / m
    inv = 1.0 / np.sqrt(var + eps)
    g, b = scale[c], bias[c]
    for n in range(n_):
        for s in range(s_):
            y[n, c, s] = (x[n, c, s] - mu) * inv * g + b
    if relu:
        _relu_channel(y, c)
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
    mu = rmean[c] * 1.0
    inv = 1.0 / np.sqrt(rvar[c] + eps)
    g, b = scale[c], bias[c]
    for n in range(n_):
        for s in range(s_):
            y[n, c, s] = (x[n, c, s] - mu) * inv * g + b
    if relu:
        _relu_channel(y, c)


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
    """dbeta = sum dy, dgamma = sum dy xhat, dx = gamma s / m (m dy - dbeta - xhat dgamma); with a
    fused ReLU, dy is first masked where its output is 0 (dy may be clobbered)."""
    if relu:
        _relu_grad_channel(y, dy, c)
    n_, _, s_ = x.shape
    m = n_ * s_
    mu = mean_ws[c] * 1.0
    inv = inv_ws[c] * 1.0
    db, dg = _sums_dy(x, dy, c, mu, inv)
    dscale[c] = dg
    dbias[c] = db
    if want_dx:
        k = scale[c] * inv / m
        for n in range(n_):
            for s in range(s_):
                xh = (x[n, c, s] - mu) * inv
                dx[n, c, s] = k * (m * dy[n, c, s] - db - xh * dg)


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
    bwd = backward_threaded if threaded(x3.size) else backward

    def run():
        bwd(x3, y3, dy3, dx3, scale, dscale, dbias, mean_ws, inv_ws, want_dx, relu)
    return run


KERNELS = {"BatchNormalization": OpKernels(_bind_forward, _bind_backward, _workspace)}
