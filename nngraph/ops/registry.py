"""The explicit list of every op description. No discovery magic: an op exists when it is listed
here. Importing this module loads no Numba (kernels are found through ``nngraph.backend.kernels``)."""
from __future__ import annotations

from typing import Callable

from . import (activations, attention, batchnorm, conv, dense, dropout, embedding, global_pool, join, layernorm, normalize,
               pointwise, pool, positional, recurrent, sequence_pool, shape, transformer)
from .base import OpSpec
from .expansion import SubLayer

_MODULES = [dense, activations, pointwise, join, layernorm, conv, pool, global_pool, shape, recurrent, embedding, dropout,
            batchnorm, normalize, sequence_pool, positional, attention]

# Layer types that lower to several primitive layers (see expansion.py).
EXPANSIONS: dict[str, Callable[..., list[SubLayer]]] = {**attention.EXPANSIONS, **transformer.EXPANSIONS}

SPECS: dict[str, OpSpec] = {op.name: op for m in _MODULES for op in m.SPECS}


def get_op(name: str) -> OpSpec:
    """The OpSpec for an IR op name; an unknown name lists the known ones."""
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r} (known: {', '.join(sorted(SPECS))})") from None


def layer_op(layer_type: str) -> OpSpec:
    """The op a spec layer type lowers to."""
    for op in SPECS.values():
        if layer_type in op.layers:
            return op
    raise KeyError(f"no op lowers layer type {layer_type!r}")
