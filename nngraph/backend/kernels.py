"""Op name -> OpKernels: the only path by which an op's kernels (and so Numba) are imported."""
from __future__ import annotations

import importlib
from functools import lru_cache

from ..jit_runtime import start_parallel_runtime
from ..ops.base import OpKernels
from ..ops.registry import get_op


@lru_cache(maxsize=None)
def kernels_for(op_name: str) -> OpKernels:
    """The bound-kernel factories of an op, importing the module its description names."""
    spec = get_op(op_name)
    start_parallel_runtime()  # see nngraph.jit_runtime: cached kernels may call the threading layer
    module = importlib.import_module(spec.kernels)
    try:
        return module.KERNELS[op_name]
    except (AttributeError, KeyError):
        raise KeyError(f"op {op_name!r}: {spec.kernels} registers no kernels for it") from None
