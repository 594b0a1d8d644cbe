"""Parameters in one flat buffer, non-trainable state in a second.

Every trainable parameter is a view into one contiguous array (and every gradient a view into a
twin), so an optimizer update, a gradient norm or a checkpoint is one operation over one array,
whatever the number of layers. Non-trainable state (batch norm's running statistics) lives in its
own flat buffer ``state_flat``: it is checkpointed, exported and loaded like a parameter but has no
gradient, so no optimizer, weight decay, clipping or gradient check ever touches it. Offsets are
aligned to 16 elements (64 bytes) from 64-byte aligned buffers, for SIMD loads.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .aligned import aligned_zeros, aligned_zeros_like
from ..ir import Graph, ParamInfo

ALIGN = 16


class ParamStore:
    """Named parameter and gradient views over two flat buffers."""

    def __init__(self, all_infos: dict[str, ParamInfo], dtype: np.dtype = np.float32):
        self.dtype = np.dtype(dtype)
        self.all_infos = dict(all_infos)
        self.infos = {k: v for k, v in self.all_infos.items() if v.trainable}        # buffer order
        self.state_infos = {k: v for k, v in self.all_infos.items() if not v.trainable}
        self.flat, views = _pack(self.infos, self.dtype)
        self.grad_flat = aligned_zeros_like(self.flat)
        self.state_flat, state_views = _pack(self.state_infos, self.dtype)
        self.values: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for name in self.all_infos:  # declaration order, whichever buffer holds the array
            if name in views:
                o, info = views[name]
                self.values[name] = self.flat[o:o + info.size].reshape(info.shape)
                self.grads[name] = self.grad_flat[o:o + info.size].reshape(info.shape)
            else:
                o, info = state_views[name]
                self.values[name] = self.state_flat[o:o + info.size].reshape(info.shape)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def load(self, arrays: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy values in (shapes must match exactly); with ``strict`` every parameter must be given."""
        for name, arr in arrays.items():
            if name not in self.values:
                if strict:
                    raise ShapeError(f"unknown parameter {name!r} (known: {', '.join(self.values)})")
                continue
            if tuple(arr.shape) != self.values[name].shape:
                raise ShapeError(f"parameter {name}: expected shape {self.values[name].shape}, "
                                 f"got {tuple(arr.shape)}")
            self.values[name][...] = arr
        if strict:
            missing = [n for n in self.values if n not in arrays]
            if missing:
                raise ShapeError(f"missing parameters: {', '.join(missing)}")

    def as_dict(self, copy: bool = True) -> dict[str, np.ndarray]:
        return {k: (v.copy() if copy else v) for k, v in self.values.items()}

    def astype(self, dtype) -> "ParamStore":
        other = ParamStore(self.all_infos, dtype)
        other.flat[...] = self.flat
        other.state_flat[...] = self.state_flat
        return other


def _pack(infos: dict[str, ParamInfo], dtype: np.dtype) -> tuple[np.ndarray, dict[str, tuple[int, ParamInfo]]]:
    """One zeroed flat buffer for ``infos`` and each entry's (aligned offset, info)."""
    offsets, total = {}, 0
    for name, info in infos.items():
        offsets[name] = (total, info)
        total += -(-info.size // ALIGN) * ALIGN
    return aligned_zeros(max(total, ALIGN), dtype), offsets


def initial_params(graph: Graph, seed: int, dtype=np.float32) -> ParamStore:
    """Seeded initial weights. Each parameter draws from its own generator seeded by (seed, index),
    so the same seed gives bit-identical weights on every machine. A normalize layer's state
    (preprocessing: constants or statistics of the data) takes no index, so putting one in front
    of a network (as ``with_preprocessing`` does for IDX pixels or series) leaves the network's
    initial weights, and so its training, exactly as they were."""
    store = ParamStore(graph.params, dtype)
    preprocessing = {p for n in graph.nodes if n.op == "Normalize" for p in n.params}
    index = 0
    for name, info in graph.params.items():
        if name in preprocessing:
            store.values[name][...] = draw(info, np.random.default_rng(seed))  # constant inits: no draw
            continue
        rng = np.random.default_rng([seed, index])
        store.values[name][...] = draw(info, rng)
        index += 1
    return store


def draw(info: ParamInfo, rng: np.random.Generator) -> np.ndarray:
    """One parameter's initial values (computed in float64, then cast)."""
    shape, fi, fo = info.shape, info.fan_in, info.fan_out
    if info.init == "zeros":
        return np.zeros(shape)
    if info.init == "ones":
        return np.ones(shape)
    if info.init == "glorot_uniform":
        limit = np.sqrt(6.0 / (fi + fo))
        return rng.uniform(-limit, limit, shape)
    if info.init == "glorot_normal":
        return rng.normal(0.0, np.sqrt(2.0 / (fi + fo)), shape)
    if info.init == "he_uniform":
        limit = np.sqrt(6.0 / fi)
        return rng.uniform(-limit, limit, shape)
    if info.init == "he_normal":
        return rng.normal(0.0, np.sqrt(2.0 / fi), shape)
    if info.init == "orthogonal":
        return _orthogonal(shape, rng)
    if info.init.startswith("const:"):  # const:<value>, e.g. a fixed normalize factor
        return np.full(shape, float(info.init.split(":", 1)[1]))
    if info.init.startswith("uniform:"):  # uniform:<limit>, e.g. PyTorch's recurrent default
        limit = float(info.init.split(":", 1)[1])
        return rng.uniform(-limit, limit, shape)
    if info.init.startswith("normal:"):  # normal:<std>, e.g. GPT-2's 0.02 for position tables
        return rng.normal(0.0, float(info.init.split(":", 1)[1]), shape)
    if info.init == "sinusoidal":  # a fixed (positions, features) table: no draw
        return sinusoidal_table(*shape)
    raise ValueError(f"unknown initializer {info.init!r}")


def sinusoidal_table(length: int, features: int) -> np.ndarray:
    """Vaswani et al.'s position table (float64): for t < length and i < features / 2,
        P[t, 2i] = sin(t / 10000^(2i / F))        P[t, 2i + 1] = cos(t / 10000^(2i / F))
    (an odd F ends with a sine column)."""
    t = np.arange(length, dtype=np.float64)[:, None]
    rate = 10000.0 ** (-np.arange(0, features, 2, dtype=np.float64) / features)
    out = np.empty((length, features))
    out[:, 0::2] = np.sin(t * rate)
    out[:, 1::2] = np.cos(t * rate[:features // 2])
    return out


def _orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Orthogonal rows/columns over the last axis (each leading block separately)."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    cols = shape[-1]
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return q[:rows, :cols].reshape(shape)
