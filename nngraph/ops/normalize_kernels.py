"""Normalize's kernels (equations in normalize.py): two broadcasting numpy calls into the plan's
buffers, y = (x - shift) / divisor and dx = dy / divisor (the state is shaped to broadcast)."""
from __future__ import annotations

import numpy as np

from .base import OpKernels, noop


def _bind_forward(node, xs, ps, y, ws, ctx):
    x, (shift, divisor) = xs[0], ps

    def run():
        np.subtract(x, shift, out=y)
        np.divide(y, divisor, out=y)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    dx, divisor = dxs[0], ps[1]
    if dx is None:  # the usual case: a normalize reads a graph input, which needs no gradient
        return noop

    def run():
        np.divide(dy, divisor, out=dx)
    return run


KERNELS = {"Normalize": OpKernels(_bind_forward, _bind_backward)}
