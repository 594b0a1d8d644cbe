"""Add and Concat's kernels (equations in join.py): numpy calls into the plan's buffers, and
threaded element-wise add and copy for large ones (also the backend's fan-in sums)."""
from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit, prange

from ..linalg.vec import LANES, data_ptr, vadd, vload_n, vstore_n
from .activations import RELU, check_activation
from .activations_kernels import PARALLEL_MIN, relu_flat, relu_grad_flat
from .base import OpKernels
from .join import concat_slices

# Element-wise adds and copies of at least PARALLEL_MIN elements (the epilogues' threshold) run on
# the thread pool. numpy's are single-threaded: a transformer step's residual adds, their gradient
# copies and the fan-in sums (1 MB each at batch 32) took ~0.25 ms apiece, ~2 ms of a 40 ms step on
# two threads. Elements are independent, so the bits are numpy's at any thread count.
_BLOCK = 1 << 14  # elements per task


@njit(cache=True, parallel=True, error_model="numpy")
def _add_threaded(a, b, out):
    # vector intrinsics: a plain ``out[i] = a[i] + b[i]`` loop did not vectorise here (out may
    # alias a or b) and ran 2.5x slower than numpy's add on one thread
    n = out.shape[0]
    pa, pb, po = data_ptr(a), data_ptr(b), data_ptr(out)
    for c in prange((n + _BLOCK - 1) // _BLOCK):
        hi = min(n, (c + 1) * _BLOCK)
        for i in range(c * _BLOCK, hi, LANES):
            vstore_n(po, i, vadd(vload_n(pa, i, hi - i), vload_n(pb, i, hi - i)), hi - i)


@njit(cache=True, parallel=True, error_model="numpy")
def _copy_threaded(src, dst):
    n = dst.shape[0]
    ps, pd = data_ptr(src), data_ptr(dst)
    for c in prange((n + _BLOCK - 1) // _BLOCK):
        hi = min(n, (c + 1) * _BLOCK)
        for i in range(c * _BLOCK, hi, LANES):
            vstore_n(pd, i, vload_n(ps, i, hi - i), hi - i)


def _threaded(*arrays: np.ndarray) -> bool:
    """Whether the threaded float32 kernels take these (same-shape) arrays."""
    return (arrays[0].size >= PARALLEL_MIN
            and all(v.dtype == np.float32 and v.flags.c_contiguous for v in arrays))


def adder(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], None]:
    """A call computing out = a + b (arrays of one shape; out may be a or b): threaded for
    float32 from PARALLEL_MIN contiguous elements, else numpy."""
    if _threaded(a, b, out):
        fa, fb, fo = a.reshape(-1), b.reshape(-1), out.reshape(-1)
        return lambda: _add_threaded(fa, fb, fo)
    return lambda: np.add(a, b, out=out)


def copier(src: np.ndarray, dst: np.ndarray) -> Callable[[], None]:
    """A call copying src into dst (one shape): threaded like ``adder``."""
    if _threaded(src, dst):
        fs, fd = src.reshape(-1), dst.reshape(-1)
        return lambda: _copy_threaded(fs, fd)
    return lambda: np.copyto(dst, src)


def _bind_add_forward(node, xs, ps, y, ws, ctx):
    relu = check_activation(node, ("identity", "relu")) == RELU  # a following relu layer, fused
    flat = y.reshape(-1)
    adds = [adder(xs[0], xs[1], y)] + [adder(y, x, y) for x in xs[2:]]

    def run():
        for add in adds:
            add()
        if relu:
            relu_flat(flat)
    return run


def _bind_add_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    targets = [d for d in dxs if d is not None and d is not dy]  # one input may share dy (backend.program)
    relu = check_activation(node, ("identity", "relu")) == RELU
    g, yy = dy.reshape(-1), y.reshape(-1)
    copies = [copier(dy, d) for d in targets]

    def run():
        if relu:
            relu_grad_flat(g, yy)  # dy may be clobbered
        for copy in copies:
            copy()
    return run


def _bind_concat_forward(node, xs, ps, y, ws, ctx):
    a, _ = concat_slices(node, xs)

    def run():
        np.concatenate(xs, axis=a, out=y)
    return run


def _bind_concat_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    _, idx = concat_slices(node, xs)
    pairs = [(d, dy[i]) for d, i in zip(dxs, idx) if d is not None]

    def run():
        for d, src in pairs:
            np.copyto(d, src)
    return run


KERNELS = {"Add": OpKernels(_bind_add_forward, _bind_add_backward),
           "Concat": OpKernels(_bind_concat_forward, _bind_concat_backward)}
