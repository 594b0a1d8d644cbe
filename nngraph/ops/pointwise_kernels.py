"""Kernels of the element-wise activation ops (LeakyRelu, Elu, Gelu, Silu, Softplus); equations
in pointwise.py, scalar math in act_math.py.

Elements are independent, so the threaded twins (fixed blocks, above PARALLEL_MIN elements) give
the same bits as the serial kernels at any thread count.
"""
from __future__ import annotations

import numpy as np
from numba import config, njit, prange

from .act_math import act, dact_dz, dgelu, gelu
from .activations import CODES, GELU
from .activations_kernels import CHUNKS
from .base import OpKernels, noop
from .pointwise import KIND, alpha_of

# Threaded from this many elements. The vectorised float32 GELU runs at ~0.5 ns per element
# (act_math), so 2^18 elements are ~0.13 ms of work against a parallel region's ~20 us; a
# transformer's feed-forward output (32 x 64 x 512) took 2.6 ms backward on one thread of two.
PARALLEL_MIN = 1 << 18


# error_model="numpy" (on every kernel here: a callee compiled inside a caller takes the caller's
# flags): no zero-division check, whose branch keeps a loop with a "/" from vectorising
@njit(cache=True, error_model="numpy")
def _forward_range(x, y, code, alpha, lo, hi):
    if code == GELU:  # a loop of its own: branch-free, so the float32 one vectorises (act_math)
        for i in range(lo, hi):
            y[i] = gelu(x[i])
        return
    for i in range(lo, hi):
        y[i] = act(code, x[i], alpha)


@njit(cache=True, error_model="numpy")
def _backward_range(x, dy, dx, code, alpha, lo, hi):
    if code == GELU:
        for i in range(lo, hi):
            dx[i] = dy[i] * dgelu(x[i])
        return
    for i in range(lo, hi):
        dx[i] = dy[i] * dact_dz(code, x[i], alpha)


@njit(cache=True, error_model="numpy")
def forward_serial(x, y, code, alpha):
    """y = act(x), element-wise over flat arrays."""
    _forward_range(x, y, code, alpha, 0, x.shape[0])


@njit(cache=True, parallel=True, error_model="numpy")
def forward_parallel(x, y, code, alpha):
    # Each block runs the serial kernel on its slices: called as _forward_range(..., lo, hi) from
    # the prange body the GELU loop did not vectorise (2.2 ms for 2^20 elements on two threads,
    # 0.5 ms serial; 0.26 ms this way).
    n = x.shape[0]
    step = (n + CHUNKS - 1) // CHUNKS
    for c in prange(CHUNKS):
        lo, hi = min(n, c * step), min(n, (c + 1) * step)
        forward_serial(x[lo:hi], y[lo:hi], code, alpha)


@njit(cache=True, error_model="numpy")
def backward_serial(x, dy, dx, code, alpha):
    """dx = dy * act'(x), element-wise over flat arrays."""
    _backward_range(x, dy, dx, code, alpha, 0, x.shape[0])


@njit(cache=True, parallel=True, error_model="numpy")
def backward_parallel(x, dy, dx, code, alpha):
    n = x.shape[0]
    step = (n + CHUNKS - 1) // CHUNKS
    for c in prange(CHUNKS):
        lo, hi = min(n, c * step), min(n, (c + 1) * step)
        backward_serial(x[lo:hi], dy[lo:hi], dx[lo:hi], code, alpha)


def _threaded(size: int) -> bool:
    return config.NUMBA_NUM_THREADS > 1 and size >= PARALLEL_MIN


def _code_alpha(node, dtype) -> tuple[int, np.floating]:
    kind = KIND[node.op]
    code = CODES[kind]
    alpha = alpha_of(node)
    return code, dtype.type(0.0 if alpha is None else alpha)


def _bind_forward(node, xs, ps, y, ws, ctx):
    code, alpha = _code_alpha(node, y.dtype)
    x1, y1 = xs[0].reshape(-1), y.reshape(-1)
    kernel = forward_parallel if _threaded(y.size) else forward_serial

    def run():
        kernel(x1, y1, code, alpha)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    if dxs[0] is None:
        return noop
    code, alpha = _code_alpha(node, y.dtype)
    x1, dy1, dx1 = xs[0].reshape(-1), dy.reshape(-1), dxs[0].reshape(-1)
    kernel = backward_parallel if _threaded(y.size) else backward_serial

    def run():
        kernel(x1, dy1, dx1, code, alpha)
    return run


KERNELS = {op: OpKernels(_bind_forward, _bind_backward) for op in KIND}
