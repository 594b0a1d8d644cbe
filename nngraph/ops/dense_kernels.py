"""Gemm's kernels: x W^T on the vector GEMM kernels, bias and activation fused (see dense.py)."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Node, TensorType
from ..linalg.gemm import NT_MIN_K, matmul, matmul_nt
from .activations import IDENTITY, check_activation
from .activations_kernels import CHUNKS, EPILOGUE_ACTIVATIONS, epilogue_kernels
from .base import OpKernels


def _workspace(node: Node, types: list[TensorType], batch: int) -> dict[str, tuple[int, ...]]:
    """W^T, packed per forward call, for layers with few inputs (see linalg.gemm.NT_MIN_K)."""
    fan_in = types[0].shape[-1]
    return {"wt": (fan_in, node.attrs["units"])} if fan_in < NT_MIN_K else {}


def _bind_forward(node, xs, ps, y, ws, ctx):
    units = node.attrs["units"]
    x2 = xs[0].reshape(-1, xs[0].shape[-1])
    y2 = y.reshape(-1, units)
    w = ps[0]
    wt = ws.get("wt")
    use_bias = node.attrs.get("use_bias", True)
    b = ps[1] if use_bias else np.zeros(1, y.dtype)
    code = check_activation(node, EPILOGUE_ACTIVATIONS)
    epilogue, _ = epilogue_kernels(y.size)

    def run():
        if wt is None:
            matmul_nt(x2, w, y2)  # x W^T straight from W's rows: no transposed copy
        else:
            np.copyto(wt, w.T)
            matmul(x2, wt, y2)
        epilogue(y2, b, use_bias, code)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws, ctx):
    units = node.attrs["units"]
    x2 = xs[0].reshape(-1, xs[0].shape[-1])
    y2 = y.reshape(-1, units)
    dz = dy.reshape(-1, units)
    dz_t = dz.T
    w = ps[0]
    dw = dps[0]
    use_bias = node.attrs.get("use_bias", True)
    db = dps[1] if use_bias else np.zeros(1, y.dtype)
    code = check_activation(node, EPILOGUE_ACTIVATIONS)
    if node.attrs.get("loss_fused"):
        code = IDENTITY
    partial = np.zeros((CHUNKS, units), y.dtype)
    _, act_grad = epilogue_kernels(y.size)
    dx2 = dxs[0].reshape(-1, x2.shape[1]) if dxs[0] is not None else None

    if dx2 is None:  # first layer: skipping dx saves a third of its work
        def run():
            act_grad(dz, y2, code, db, use_bias, partial)
            matmul(dz_t, x2, dw)
        return run

    def run_dx():
        act_grad(dz, y2, code, db, use_bias, partial)
        matmul(dz_t, x2, dw)
        matmul(dz, w, dx2)
    return run_dx


KERNELS = {"Gemm": OpKernels(_bind_forward, _bind_backward, _workspace)}
