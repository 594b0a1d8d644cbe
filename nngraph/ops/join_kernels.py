"""Add and Concat's kernels (equations in join.py): numpy calls into the plan's buffers."""
from __future__ import annotations

import numpy as np

from .activations import RELU, check_activation
from .activations_kernels import relu_flat, relu_grad_flat
from .base import OpKernels
from .join import concat_slices


def _bind_add_forward(node, xs, ps, y, ws, ctx):
    relu = check_activation(node, ("identity", "relu")) == RELU  # a following relu layer, fused
    flat = y.reshape(-1)

    def run():
        np.add(xs[0], xs[1], out=y)
        for x in xs[2:]:
            np.add(y, x, out=y)
        if relu:
            relu_flat(flat)
    return run


def _bind_add_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    targets = [d for d in dxs if d is not None and d is not dy]  # one input may share dy (backend.program)
    relu = check_activation(node, ("identity", "relu")) == RELU
    g, yy = dy.reshape(-1), y.reshape(-1)

    def run():
        if relu:
            relu_grad_flat(g, yy)  # dy may be clobbered
        for d in targets:
            np.copyto(d, dy)
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
