"""The ONNX runtimes an export is verified on: onnxruntime, onnx.reference, OpenVINO and tract.

Each is opened the same way, ``open_runtime(name, path)``, and gives a :class:`Runner`: its name,
the installed version and ``run(feeds) -> first output``. OpenVINO and tract come with the
``runtimes`` extra (``pip install 'nngraph[runtimes]'``); without it, asking for them is a one-line
error that names the extra.

Runtime-specific settings, and why:
- OpenVINO compiles for its CPU plugin with the f32 inference-precision hint: on CPUs with bf16
  support the plugin otherwise runs float32 models in bf16 (errors up to 4e-2).
- tract runs in a child process by default (``isolated``): a panic inside tract's Rust code aborts
  the whole process (SIGABRT, e.g. an LSTM without initial states on a symbolic batch), which
  Python cannot catch; a child turns that into an error message. Its inputs get concrete shapes
  (one optimized plan per batch size).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ExportError, NNGraphError

RUNTIMES = ("onnxruntime", "reference", "openvino", "tract")
EXTRA = "pip install 'nngraph[runtimes]'"


class RuntimeMissing(NNGraphError):
    """A runtime that is not installed (exit 2)."""


@dataclass
class Runner:
    """One runtime with one model loaded."""

    name: str
    version: str
    run: Callable[[dict[str, np.ndarray]], np.ndarray]


def parse_runtimes(text: str) -> tuple[str, ...]:
    """``"onnxruntime,openvino"`` -> ("onnxruntime", "openvino"); an unknown name is an error."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise NNGraphError(f"--runtime: no runtime named (choose from {', '.join(RUNTIMES)})")
    for n in names:
        if n not in RUNTIMES:
            raise NNGraphError(f"--runtime: unknown runtime {n!r} (choose from {', '.join(RUNTIMES)})")
    return names


def open_runtime(name: str, path: str | Path, isolated: bool = True) -> Runner:
    """Load the model at ``path`` into runtime ``name`` (one of RUNTIMES)."""
    opener = {"onnxruntime": _onnxruntime, "reference": _reference, "openvino": _openvino, "tract": _tract}
    if name not in opener:
        raise NNGraphError(f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)})")
    if name == "tract":
        return _tract(path, isolated)
    return opener[name](path)


# Runtime bugs we know of and cannot work around in the export (README, "Deployment"): runtime ->
# (what, since which version was checked) for a predicate over the graph's nodes.
_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _custom_recurrent_activation(node) -> bool:
    if node.op_type not in _DEFAULT_ACTIVATIONS:
        return False
    acts = next((list(a.strings) for a in node.attribute if a.name == "activations"), [])
    per_direction = len(_DEFAULT_ACTIVATIONS[node.op_type])
    return any(a.decode() != d for a, d in zip(acts, _DEFAULT_ACTIVATIONS[node.op_type] * (len(acts) // per_direction)))


def known_issues(path: str | Path) -> dict[str, str]:
    """Runtimes known to compute this model wrongly, with the reason (checked versions named)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    out = {}
    if any(_custom_recurrent_activation(n) for n in graph.node):
        out["tract"] = ("tract (0.23.9) ignores the activations attribute of RNN/LSTM/GRU and computes the "
                        "default Tanh/Sigmoid ones")
    return out


def _missing(name: str, module: str) -> RuntimeMissing:
    return RuntimeMissing(f"runtime {name!r} needs the Python package {module!r}, which is not installed: {EXTRA}")


def _onnxruntime(path: str | Path) -> Runner:
    import onnxruntime as ort

    from .runtime import session

    sess = session(path)
    return Runner("onnxruntime", ort.__version__, lambda feeds: sess.run(None, feeds)[0])


def reference_evaluator(path: str | Path):
    """``onnx.reference.ReferenceEvaluator`` for the model; ExportError if it cannot load it.

    onnx 1.23's evaluator has DequantizeLinear from opset 19 only, and fails on the opset-17 int8
    exports ("No implementation for operator 'DequantizeLinear' ... version 17"); opset 19's
    semantics for int8/uint8, per tensor and per axis, are opset 13's, so that class serves."""
    from onnx.reference import ReferenceEvaluator

    new_ops = []
    try:
        from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_25

        class DequantizeLinear(DequantizeLinear_25):  # the class name is the operator's
            op_domain = ""
        new_ops = [DequantizeLinear]
    except ImportError:  # another onnx version: its own classes
        pass
    try:
        return ReferenceEvaluator(str(path), new_ops=new_ops or None)
    except Exception as e:  # the reference evaluator lacks some ops (and contrib domains)
        raise ExportError(f"{path}: onnx.reference cannot load the model ({type(e).__name__}: {e})") from None


def _reference(path: str | Path) -> Runner:
    import onnx

    ref = reference_evaluator(path)

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return np.asarray(ref.run(None, feeds)[0])
        except Exception as e:
            raise ExportError(f"onnx.reference failed ({_first_line(e)})") from None
    return Runner("reference", f"onnx {onnx.__version__}", run)


def _openvino(path: str | Path) -> Runner:
    try:
        import openvino as ov
        import openvino.properties.hint as hints
    except ImportError:
        raise _missing("openvino", "openvino") from None
    core = ov.Core()
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {hints.inference_precision: ov.Type.f32})
    except Exception as e:
        raise ExportError(f"{path}: OpenVINO cannot compile the model ({_first_line(e)})") from None
    out = compiled.output(0)

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.array(compiled(feeds)[out])  # a copy: the request's buffer is reused
    return Runner("openvino", ov.__version__.split("-")[0], run)


def _tract_module():
    try:
        import tract
    except ImportError:
        raise _missing("tract", "tract") from None
    if not hasattr(tract.onnx(), "load"):  # the API before 0.23 (model_for_path ...)
        raise RuntimeMissing(f"runtime 'tract' needs tract >= 0.23 (installed: {tract.version()}): {EXTRA}")
    return tract


def tract_run(path: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The model's first output in tract (in this process), the inputs' shapes made concrete.

    A file whose graph carries value_info (e.g. an int8 export: the quantizer runs shape inference)
    names the batch symbolically there, which tract refuses to unify with a concrete input shape
    ("Impossible to unify Sym(batch) with Val(2)"): tract reads a copy without it. Keeping the
    symbolic input facts instead panics (aborts) inside tract for some recurrent graphs."""
    import onnx

    tract = _tract_module()
    proto = onnx.load(str(path))
    with tempfile.TemporaryDirectory(prefix="nngraph-tract-") as d:
        src = str(path)
        if len(proto.graph.value_info):
            del proto.graph.value_info[:]
            src = os.path.join(d, "model.onnx")
            onnx.save(proto, src)
        model = tract.onnx().load(src)
        names = [model.input_name(i) for i in range(model.input_count())]
        args = [np.ascontiguousarray(feeds[n]) for n in names]
        for i, a in enumerate(args):
            kind = {"float32": "f32", "int64": "i64", "float64": "f64"}[str(a.dtype)]
            model.set_input_fact(i, ",".join(str(dim) for dim in a.shape) + f",{kind}")
        runnable = model.into_model().into_runnable()
    return runnable.run(args)[0].to_numpy()


def _tract(path: str | Path, isolated: bool) -> Runner:
    tract = _tract_module()
    version = tract.version()
    if not isolated:
        return Runner("tract", version, lambda feeds: tract_run(str(path), feeds))

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="nngraph-tract-") as d:
            src, dst = os.path.join(d, "in.npz"), os.path.join(d, "out.npy")
            np.savez(src, **feeds)
            r = subprocess.run([sys.executable, "-m", "nngraph.runtimes", str(path), src, dst],
                               capture_output=True, text=True)
            if r.returncode != 0:
                lines = [ln.strip() for ln in r.stderr.strip().splitlines() if ln.strip()] or ["no message"]
                # a panic names its cause on a "panicked at" line; a TractError's message follows
                # "TractError: " (its Rust backtrace after it is noise)
                why = next((ln for ln in lines if "panicked" in ln), None) or \
                    next((ln.split("TractError: ", 1)[1] for ln in lines if "TractError: " in ln), lines[-1])
                raise ExportError(f"tract failed on {Path(path).name} (exit {r.returncode}): {why.strip()[:300]}")
            return np.load(dst, allow_pickle=False)
    return Runner("tract", version, run)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _child(argv: list[str]) -> int:
    """``python -m nngraph.runtimes MODEL IN.npz OUT.npy``: tract's output for the inputs."""
    path, src, dst = argv
    with np.load(src, allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    np.save(dst, tract_run(path, feeds), allow_pickle=False)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
