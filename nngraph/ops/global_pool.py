"""GlobalMaxPool: the maximum of each (sample, channel) plane, (N, C, H, W) -> (N, C).

    forward   y[n, c] = max over (h, w) of x[n, c, h, w]
    backward  dx[n, c, h, w] = dy[n, c] if (h, w) = argmax of x[n, c] else 0
The argmax is the FIRST maximal element in row-major order (as MaxPool's kernels and PyTorch's
adaptive max pooling route it), so at ties exactly one element takes the gradient. The backward
recomputes it from x. ONNX: GlobalMaxPool (keeps (N, C, 1, 1)) then Flatten(axis=1).
Kernels in global_pool_kernels.py.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import OpSpec, same_attrs


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "float32" or len(t.shape) != 3:
        raise ShapeError(f"layer {node.layer}: global_maxpool2d expects float input (N, channels, height, width), "
                         f"got {t}" + (f" of {t.dtype}" if t.dtype != "float32" else ""))
    return TensorType(t.shape[:1])


def _to_onnx(node, in_names, out_name, in_types, b) -> None:
    pooled = b.fresh(f"{node.name}/pooled")
    b.node("GlobalMaxPool", in_names, [pooled])
    b.node("Flatten", [pooled], [out_name], axis=1)


def _reference(node, xs, ps, ctx=None) -> np.ndarray:
    return xs[0].max(axis=tuple(range(2, xs[0].ndim)))


GLOBAL_MAXPOOL = OpSpec("GlobalMaxPool", _infer, _to_onnx, _reference, kernels="nngraph.ops.global_pool_kernels",
                        layers={"global_maxpool2d": same_attrs})
SPECS = [GLOBAL_MAXPOOL]
