"""nngraph: describe a neural network declaratively, train it on a CPU with hand-derived Numba
kernels, ship it as a verified ONNX model.

    import nngraph
    spec = nngraph.load_spec("specs/xor.json")
    model = nngraph.compile(spec)
    model.fit(x, y)
    model.export_onnx("xor.onnx")
    nngraph.verify("xor.onnx")

Heavy modules (numpy, numba, onnx) are imported on first use, so ``nngraph --help`` stays fast.
"""
from __future__ import annotations

import os
import sys
from typing import Any

__version__ = "0.1.0"

# After a threaded GEMM, OpenBLAS's worker threads spin for 2^28 cycles (~0.1 s) before sleeping; a
# Numba thread pool woken meanwhile fights them for the cores (measured on 2 cores: LeNet training
# 1,600 -> 3,800 samples/s with a 2^20-cycle spin, when its products still ran on OpenBLAS). float32
# training steps no longer call OpenBLAS (nngraph.linalg), but float64 checks and the user's own numpy
# code around nngraph do. It only changes scheduling, never results.
# OpenBLAS reads it once, when numpy loads it: so it is set here, before numpy is imported (always
# the case for the `nngraph` command); a value already in the environment is kept.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

from .kernel_cache import guard as _guard_kernel_cache  # noqa: E402  (before any kernel loads)

_guard_kernel_cache()

_LAZY = {
    "load_spec": ("nngraph.spec", "load_spec"),
    "Spec": ("nngraph.spec", "Spec"),
    "spec": ("nngraph.spec", None),
    "Model": ("nngraph.model", "Model"),
    "verify": ("nngraph.runtime", "verify"),
    "run": ("nngraph.runtime", "run"),
    "train": ("nngraph.workflow", "train"),
    "load_data": ("nngraph.workflow", "load_data"),
    "with_preprocessing": ("nngraph.workflow", "with_preprocessing"),
    "gradcheck": ("nngraph.gradcheck", "gradcheck"),
    "quantize_model": ("nngraph.quantize", "quantize_model"),
    "quantize_run": ("nngraph.quantize", "quantize_run"),
    "build_site": ("nngraph.web", "build_site"),
    "sweep": ("nngraph.scale.sweep", "sweep"),
    "run_on_ray": ("nngraph.scale.batch", "run_on_ray"),
    "run_batches": ("nngraph.runtime", "run_batches"),
    "Callback": ("nngraph.train.callbacks", "Callback"),
    "LambdaCallback": ("nngraph.train.callbacks", "LambdaCallback"),
    "EarlyStopping": ("nngraph.train.callbacks", "EarlyStopping"),
    "open_run": ("nngraph.train.rundir", "open_run"),
    "NNGraphError": ("nngraph.errors", "NNGraphError"),
    "SpecError": ("nngraph.errors", "SpecError"),
    "ShapeError": ("nngraph.errors", "ShapeError"),
    "DataError": ("nngraph.errors", "DataError"),
    "ExportError": ("nngraph.errors", "ExportError"),
}


def compile(spec: Any, seed: int | None = None, dtype: Any = None):  # noqa: A001 - the verb users expect
    """Lower a Spec (or a spec file path) to IR and draw seeded initial weights: a ready Model."""
    import numpy as np

    from .model import Model
    from .spec import Spec, load_spec

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return Model.compile(spec, seed=seed, dtype=np.float32 if dtype is None else dtype)


def load(path: Any):
    """Load an nngraph-exported ONNX file as a Model (to predict, fine-tune or re-export)."""
    from .model import Model

    return Model.load_onnx(path)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'nngraph' has no attribute {name!r}")


__all__ = ["__version__", "compile", "load", *_LAZY]
