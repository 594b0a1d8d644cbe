"""Activation kernels: the fused epilogues (bias + activation over rows) that dense layers and the
stand-alone activation ops run, and the stand-alone ops' bindings. Equations in activations.py.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .act_math import sigmoid
from .activations import CODES, RELU, SIGMOID, SOFTMAX, TANH, apply_reference, softmax_axis
from .base import OpKernels, noop


# Epilogues run on one thread below this many elements (a parallel region costs ~10-20 us). It was
# 2^24 while the products ran on OpenBLAS, whose spinning workers fought a Numba pool woken right
# after (a batch-512 MLP step became 8x slower); the products are Numba's now. On 2 threads the
# bias epilogue of a 2048 x 512 output takes 0.155 -> 0.090 ms, its bias-gradient pass 0.136 ->
# 0.080 ms, 2048 x 128: 0.030 -> 0.018 ms (one thread: equal). The threaded bias gradient sums
# fixed row blocks (CHUNKS), so its bits depend on the size, never on the thread count.
PARALLEL_MIN = 1 << 18


CHUNKS = 8  # row blocks of the threaded kernels

# The activations the epilogue kernels below have a branch for (anything else is a bind-time error).
EPILOGUE_ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax")


@njit(cache=True)
def _epilogue_rows(z, b, use_bias, code, lo, hi):
    m, n = z.shape
    for i in range(lo, hi):
        row = z[i]
        if use_bias:
            for j in range(n):
                row[j] += b[j]
        if code == RELU:
            for j in range(n):
                if row[j] < 0:
                    row[j] = 0
        elif code == SIGMOID:
            for j in range(n):
                row[j] = sigmoid(row[j])
        elif code == TANH:
            for j in range(n):
                row[j] = math.tanh(row[j])
        elif code == SOFTMAX:
            mx = row[0]
            for j in range(1, n):
                if row[j] > mx:
                    mx = row[j]
            s = 0.0
            for j in range(n):
                e = math.exp(row[j] - mx)
                row[j] = e
                s += e
            inv = 1.0 / s
            for j in range(n):
                row[j] *= inv


@njit(cache=True)
def bias_act_serial(z, b, use_bias, code):
    """In place: z := act(z + b), row-wise over a 2-D array."""
    _epilogue_rows(z, b, use_bias, code, 0, z.shape[0])


@njit(cache=True, parallel=True)
def bias_act_parallel(z, b, use_bias, code):
    m = z.shape[0]
    chunks = CHUNKS
    step = (m + chunks - 1) // chunks
    for c in prange(chunks):
        _epilogue_rows(z, b, use_bias, code, c * step, min(m, (c + 1) * step))


@njit(cache=True)
def _act_grad_rows(dz, y, code, lo, hi):
    m, n = dz.shape
    for i in range(lo, hi):
        g = dz[i]
        r = y[i]
        if code == RELU:
            for j in range(n):
                if r[j] <= 0:
                    g[j] = 0
        elif code == SIGMOID:
            for j in range(n):
                g[j] *= r[j] * (1 - r[j])
        elif code == TANH:
            for j in range(n):
                g[j] *= 1 - r[j] * r[j]
        elif code == SOFTMAX:
            s = 0.0
            for j in range(n):
                s += g[j] * r[j]
            for j in range(n):
                g[j] = r[j] * (g[j] - s)


@njit(cache=True)
def act_grad_bias_serial(dz, y, code, db, use_bias, partial):
    """In place: dz := dy * act'(y); then db := column sums of dz (when use_bias).
    ``partial`` is scratch for the threaded twin (shape (CHUNKS, n)); unused here."""
    _act_grad_rows(dz, y, code, 0, dz.shape[0])
    if use_bias:
        m, n = dz.shape
        for j in range(n):
            db[j] = 0
        for i in range(m):
            for j in range(n):
                db[j] += dz[i, j]


@njit(cache=True, parallel=True)
def act_grad_bias_parallel(dz, y, code, db, use_bias, partial):
    m, n = dz.shape
    chunks = partial.shape[0]
    step = (m + chunks - 1) // chunks
    # Each chunk sums its own rows into partial[c] (no races), reduced afterwards.
    for c in prange(chunks):
        for j in range(n):
            partial[c, j] = 0
        lo, hi = c * step, min(m, (c + 1) * step)
        _act_grad_rows(dz, y, code, lo, hi)
        if use_bias:
            for i in range(lo, hi):
                for j in range(n):
                    partial[c, j] += dz[i, j]
    if use_bias:
        for j in range(n):
            s = 0.0
            for c in range(chunks):
                s += partial[c, j]
            db[j] = s


def epilogue_kernels(size: int):
    """(forward, backward) kernels to bind for an output of ``size`` elements: threaded above
    PARALLEL_MIN elements. Backward kernels take a ``partial`` scratch of shape (CHUNKS, n)."""
    if size >= PARALLEL_MIN:
        return bias_act_parallel, act_grad_bias_parallel
    return bias_act_serial, act_grad_bias_serial


def _as_rows(a: np.ndarray, kind: str) -> np.ndarray:
    """View a (batch, ...) buffer as 2-D rows: softmax normalises each row of the last axis;
    element-wise activations take one row per sample (an (N, 32, 28, 28) relu ran 28-element rows,
    a loop start every 28 values; a row per sample is the same arithmetic, element for element)."""
    if kind == "softmax":
        return a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)
    return a.reshape(a.shape[0], -1)


def _kernels(kind: str) -> OpKernels:
    code = CODES[kind]

    def bind_forward(node, xs, ps, y, ws, ctx):
        x = xs[0]
        if kind == "softmax" and softmax_axis(node, x.ndim - 1) != -1:
            ax = softmax_axis(node, x.ndim - 1)

            def run_axis():
                np.copyto(y, apply_reference("softmax", x, ax))
            return run_axis
        src, dst = _as_rows(x, kind), _as_rows(y, kind)
        empty = np.zeros(1, x.dtype)
        fwd, _ = epilogue_kernels(y.size)

        def run():
            np.copyto(dst, src)
            fwd(dst, empty, False, code)
        return run

    def bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
        dx = dxs[0]
        if dx is None:
            return noop
        if node.attrs.get("loss_fused"):
            def passthrough():  # the loss already returned the gradient w.r.t. this op's input
                np.copyto(dx, dy)
            return passthrough
        if kind == "softmax" and softmax_axis(node, y.ndim - 1) != -1:
            ax = softmax_axis(node, y.ndim - 1)

            def run_axis():
                np.copyto(dx, y * (dy - (dy * y).sum(axis=ax, keepdims=True)))
            return run_axis
        g, yy = _as_rows(dx, kind), _as_rows(y, kind)
        src = _as_rows(dy, kind)
        empty = np.zeros(1, y.dtype)
        partial = np.zeros((CHUNKS, g.shape[1]), y.dtype)
        _, bwd = epilogue_kernels(y.size)

        def run():
            np.copyto(g, src)
            bwd(g, yy, code, empty, False, partial)
        return run

    return OpKernels(bind_forward, bind_backward)


KERNELS = {kind.capitalize(): _kernels(kind) for kind in ("relu", "sigmoid", "tanh", "softmax", "identity")}


# ---- a relu fused into an op without its own epilogue (add) ----------------------------------------

@njit(cache=True)
def relu_flat(a):
    """In place: a := max(a, 0) over a contiguous 1-D view."""
    for i in range(a.shape[0]):
        if a[i] < 0:
            a[i] = 0


@njit(cache=True)
def relu_grad_flat(g, y):
    """In place: g := 0 where the relu's output y is 0 (the subgradient at 0 is 0, as the relu op)."""
    for i in range(g.shape[0]):
        if y[i] <= 0:
            g[i] = 0
