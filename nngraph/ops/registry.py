"""The explicit list of every op. No discovery magic: an op exists when it is listed here."""
from __future__ import annotations

from . import activations, conv, dense, embedding, join, pool, recurrent, shape
from .base import OpDef

_MODULES = [dense, activations, join, conv, pool, shape, recurrent, embedding]

OPS: dict[str, OpDef] = {op.name: op for m in _MODULES for op in m.OPS}


def get_op(name: str) -> OpDef:
    """The OpDef for an IR op name; an unknown name lists the known ones."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r} (known: {', '.join(sorted(OPS))})") from None
