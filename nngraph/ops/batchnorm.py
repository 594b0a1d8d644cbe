"""BatchNormalization: per-channel normalisation with batch statistics (PyTorch's conventions).

The channel axis is the first axis after the batch: a feature of (N, F), a channel of (N, C, L) and
(N, C, H, W). Each channel c is normalised over its m = N * spatial values (every sample, every
position). Parameters: ``scale`` gamma (init 1), ``bias`` beta (init 0); non-trainable state
``running_mean`` (init 0) and ``running_var`` (init 1).

Training mode (batch statistics; the running statistics are updated in place, as a side effect
that never changes the output):
    mu    = (1/m) sum x                      var = (1/m) sum (x - mu)^2      (biased)
    s     = 1 / sqrt(var + eps)              xhat = (x - mu) s
    y     = gamma xhat + beta
    running_mean <- (1 - momentum) running_mean + momentum mu
    running_var  <- (1 - momentum) running_var  + momentum var m / (m - 1)    (unbiased;
                                                   with m = 1 the biased value, 0, is used)
Inference mode (running statistics):
    y = gamma (x - running_mean) / sqrt(running_var + eps) + beta

Backward (training mode), with dy the output gradient, all sums over the channel's m values:
    dbeta  = sum dy
    dgamma = sum dy xhat
    dx     = gamma s / m * (m dy - dbeta - xhat dgamma)
(the last line follows from d mu/dx = 1/m and d var/dx = 2 (x - mu)/m: the two terms that mu and
var contribute are -dbeta/m and -xhat dgamma/m, scaled by gamma s). The running statistics have no
gradient. An op that couples the batch (``per_sample = False``): the trainer never splits a batch.
Exported as ONNX BatchNormalization in inference form; ``onnx_io/fold.py`` folds it into a preceding
Conv or Gemm. A relu layer right after it is fused (``fuses``): the forward clamps its output,
the backward first zeroes dy where that output is 0 — one pass less than a separate relu node,
exported as BatchNormalization then Relu. Kernels in batchnorm_kernels.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .activations import apply_reference
from .base import FIXED, OpSpec, ParamDecl, RunContext, same_attrs

ROLES = ("scale", "bias", "running_mean", "running_var")


def channels(t: TensorType) -> int:
    """Number of normalised channels: the first axis of a sample."""
    return t.shape[0]


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    t = types[0]
    if t.dtype != "float32" or len(t.shape) < 1:
        raise ShapeError(f"layer {node.layer}: batchnorm expects float input (N, features), (N, channels, "
                         f"length) or (N, channels, height, width), got {t}"
                         + (f" of {t.dtype} (token ids need an embedding layer first)" if t.dtype != "float32"
                            else ""))
    return t


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    c = channels(types[0])
    return [ParamDecl("scale", (c,), "ones", c, c),
            ParamDecl("bias", (c,), "zeros", c, c),
            ParamDecl("running_mean", (c,), "zeros", c, c, trainable=False),
            ParamDecl("running_var", (c,), "ones", c, c, trainable=False)]


def _to_onnx(node: Node, in_names: list[str], out_name: str, in_types: list[TensorType], b: Any) -> None:
    """Inference form: X, scale, B, input_mean, input_var (no training_mode). Note: onnx.reference's
    BatchNormalization-9 (the version opset 13 selects) misreads the default momentum as a training
    request (onnx/onnx PR #8442); onnxruntime, and onnx.reference from opset 14, compute this form."""
    relu = node.attrs.get("activation", "identity") == "relu"  # a following relu layer, fused
    out = b.fresh(f"{node.name}/normalized") if relu else out_name
    b.node("BatchNormalization", [in_names[0], *node.params], [out], epsilon=float(node.attrs["epsilon"]))
    if relu:
        b.node("Relu", [out], [out_name])


def _broadcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast over (N, C, spatial...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _reference(node: Node, xs: list[np.ndarray], ps: list[np.ndarray], ctx: RunContext | None = None) -> np.ndarray:
    """Plain numpy, both modes; never touches the state (the kernels update it)."""
    x = xs[0]
    scale, bias, rmean, rvar = (_broadcast(p, x.ndim) for p in ps)
    eps = node.attrs["epsilon"]
    if ctx is not None and ctx.training:
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    else:
        mean, var = rmean, rvar
    y = ((x - mean) / np.sqrt(var + eps) * scale + bias).astype(x.dtype)
    return apply_reference(node.attrs.get("activation", "identity"), y)


def reference_running_stats(node: Node, x: np.ndarray, rmean: np.ndarray, rvar: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The running statistics after one training-mode pass over ``x`` (the tests' oracle)."""
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    var = ((x - _broadcast(mean, x.ndim)) ** 2).mean(axis=axes)
    mom = node.attrs["momentum"]
    unbiased = var * m / (m - 1) if m > 1 else var
    return (1 - mom) * rmean + mom * mean, (1 - mom) * rvar + mom * unbiased


BATCHNORM = OpSpec("BatchNormalization", _infer, _to_onnx, _reference, kernels="nngraph.ops.batchnorm_kernels",
                   params=_params, layers={"batchnorm": same_attrs}, time_rule=FIXED, per_sample=False,
                   fuses=frozenset({"relu"}))
SPECS = [BATCHNORM]
