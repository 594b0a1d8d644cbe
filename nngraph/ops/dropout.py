"""Dropout: inverted dropout with counter-based, reproducible randomness.

Training mode, for sample i of the pass and element j of that sample (flattened, row-major):

    u_ij  = uniform(seed, step, layer, first + i, j)  in [0, 1)
    keep  = [u_ij >= rate]
    y_ij  = x_ij * m_ij,      m_ij = keep / (1 - rate)         (m_ij is 0 or s = 1 / (1 - rate))
    dx_ij = dy_ij * m_ij                                         (the same mask: y is linear in x)

``step`` = ``ctx.counters[0]`` (the optimizer step), ``first`` = ``ctx.counters[1]`` (the pass's
first sample within the batch), ``layer`` = crc32 of the node name (stable across processes, unlike
``hash()``). The uniform is a pure function of those five integers, so the mask does not depend on
micro-batching, the thread count, resume or the float type. Inference mode (and ``rate == 0``):
y = x, dx = dy. The ONNX export has no node for it (the builder aliases the output to the input).

The hash (shared bit-for-bit by the Numba kernels in dropout_kernels.py and ``uniforms`` below),
in uint64 arithmetic modulo 2^64, with the splitmix64 finaliser

    mix(z)    = z3 where z1 = (z ^ z >> 30) * 0xBF58476D1CE4E5B9, z2 = (z1 ^ z1 >> 27) * 0x94D049BB133111EB,
                z3 = z2 ^ z2 >> 31
    absorb(h, v) = mix((h ^ v) + G),  G = 0x9E3779B97F4A7C15
    key_i     = absorb(absorb(absorb(absorb(0, seed), step), layer), first + i)
    u_ij      = (mix(key_i + (j + 1) G) >> 11) * 2^-53         (the splitmix64 stream of key_i)
"""
from __future__ import annotations

import zlib

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .base import PER_STEP, OpSpec, same_attrs

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
U64 = (1 << 64) - 1


def layer_key(node: Node) -> int:
    """A per-layer integer that is the same in every process: crc32 of the node name."""
    return zlib.crc32(node.name.encode("utf-8"))


def as_u64(v: int) -> int:
    """An integer (seed, step, sample; possibly negative) as its uint64 bit pattern."""
    return int(v) & U64


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def _absorb(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _mix((h ^ v) + np.uint64(GOLDEN))


def uniforms(seed: int, step: int, layer: int, first: int, n: int, f: int) -> np.ndarray:
    """float64 (n, f): u_ij for samples first .. first+n-1 and elements 0 .. f-1 (plain numpy)."""
    with np.errstate(over="ignore"):
        h = np.zeros(n, np.uint64)
        h = _absorb(h, np.full(n, as_u64(seed), np.uint64))
        h = _absorb(h, np.full(n, as_u64(step), np.uint64))
        h = _absorb(h, np.full(n, as_u64(layer), np.uint64))
        h = _absorb(h, (np.arange(n, dtype=np.uint64) + np.uint64(as_u64(first))))
        j = np.arange(1, f + 1, dtype=np.uint64) * np.uint64(GOLDEN)
        z = _mix(h[:, None] + j[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def keep_mask(seed: int, step: int, layer: int, first: int, n: int, f: int, rate: float) -> np.ndarray:
    """bool (n, f): which elements survive (u >= rate)."""
    return uniforms(seed, step, layer, first, n, f) >= rate


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    rate = node.attrs["rate"]
    if not 0 <= rate < 1:  # validation rejects it first; a hand-built IR may not have been validated
        raise ShapeError(f"layer {node.layer}: dropout rate must be in [0, 1), got {rate}")
    return types[0]


def _to_onnx(node, in_names, out_name, in_types, b) -> None:
    b.alias(out_name, in_names[0])  # inference graphs only: no node at all


def _reference(node: Node, xs: list[np.ndarray], ps: list[np.ndarray], ctx=None) -> np.ndarray:
    x = xs[0]
    rate = float(node.attrs["rate"])
    if ctx is None or not ctx.training or rate == 0.0:
        return x.copy()
    n = x.shape[0]
    keep = keep_mask(ctx.seed, int(ctx.counters[0]), layer_key(node), int(ctx.counters[1]), n,
                     x.size // max(n, 1), rate)
    m = np.where(keep, x.dtype.type(1.0 / (1.0 - rate)), x.dtype.type(0)).astype(x.dtype)
    return x * m.reshape(x.shape)


DROPOUT = OpSpec("Dropout", _infer, _to_onnx, _reference, kernels="nngraph.ops.dropout_kernels",
                 layers={"dropout": same_attrs}, time_rule=PER_STEP, per_sample=True)
SPECS = [DROPOUT]
