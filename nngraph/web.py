"""`nngraph web MODEL.onnx -o DIR`: a static page that runs the model in the browser.

DIR gets ``index.html``, our one script ``app.js``, ``model.onnx`` and ``model.json`` (what the page
needs from the ONNX metadata, which onnxruntime-web cannot read: the page kind, the input's name,
shape and type, the class labels, the pixel range, the vocabulary). The runtime is
onnxruntime-web's WASM build (``ort.wasm.min.js`` and ``ort-wasm-simd-threaded.{mjs,wasm}``) of
version ORT_WEB_VERSION: copied into DIR/ort/ from ``runtime_dir`` (an installed
``onnxruntime-web/dist``: the page then works offline), or loaded from jsDelivr.

The page fits the model:
- an image classifier (an input of (1 or 3, H, W), or a flat input of a square number of pixels
  trained on images, with a pixel scale in the metadata): a canvas to draw on, reduced to H x W
  the way the training images were made (the drawing's bounding box fitted into the frame: the
  whole 8 x 8 frame for UCI digits, a 20 x 20 box centred by mass for MNIST's 28 x 28), in the
  training data's pixel units (the model normalizes them itself), and a bar chart of the classes;
- a character language model (int64 ids (batch, time), a vocabulary): prime, temperature and
  length, sampled with the stored vocabulary and the training context length;
- anything else with one input: a box for one sample's numbers (CSV), and the output.
No build step and no framework: ``python -m http.server -d DIR`` serves it. Opened as file:// (or
with the runtime files missing) the page says so instead of failing silently.
"""
from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DataError, ExportError

ORT_WEB_VERSION = "1.30.0"
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
_ELEM = {1: "float32", 7: "int64"}


def _dims(vi) -> list[Any]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _json_meta(meta: dict[str, str], key: str) -> Any:
    raw = meta.get(f"nngraph.{key}")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw


def describe_page(path: str | Path) -> dict[str, Any]:
    """What the page needs to know (written as model.json), from the ONNX file."""
    from .onnx_io.importer import read_model
    from .sample import _outputs_probabilities, _seq_len

    model = read_model(path)
    meta = {p.key: p.value for p in model.metadata_props}
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        raise DataError(f"{path}: the page takes one input; the model has {len(inputs)} "
                        f"({', '.join(vi.name for vi in inputs)})")
    vi = inputs[0]
    elem = _ELEM.get(vi.type.tensor_type.elem_type)
    if elem is None:
        raise DataError(f"{path}: input {vi.name!r} is neither float32 nor int64")
    dims = _dims(vi)
    info: dict[str, Any] = {"input": vi.name, "type": elem, "shape": dims, "output": model.graph.output[0].name,
                            "output_shape": _dims(model.graph.output[0]), "name": model.graph.name,
                            "probabilities": "nngraph.spec" in meta and _outputs_probabilities(meta),
                            "classes": _json_meta(meta, "classes"), "ort_web": ORT_WEB_VERSION}
    vocab = meta.get("nngraph.vocab")
    if vocab and elem == "int64" and len(dims) == 2:
        info.update(kind="charlm", vocab=vocab, context=dims[1] if isinstance(dims[1], int) else _seq_len(path, meta))
        return info
    scale = _json_meta(meta, "input_scale")
    image = _image_geometry(dims, meta)
    if image is not None and elem == "float32" and isinstance(scale, (int, float)) and scale > 0:
        source = str(meta.get("nngraph.source", ""))
        info.update(kind="image", image=image, pixel_max=round(1.0 / float(scale), 6),
                    fit=("mnist" if "mnist" in source.lower() or image["height"] == 28 else "box"))
        return info
    if elem != "float32" or any(not isinstance(d, int) for d in dims[1:]):
        raise DataError(f"{path}: the page's form takes one float32 input of a fixed shape per sample; "
                        f"{vi.name!r} is {elem} {dims}")
    info.update(kind="form", size=int(_prod(dims[1:])))
    return info


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _image_geometry(dims: list[Any], meta: dict[str, str]) -> dict[str, Any] | None:
    """(channels, height, width, layout) for an image input: (N, C, H, W) with C of 1 or 3, or a flat
    (N, H*W) input trained on a built-in image set (a square number of pixels)."""
    if len(dims) == 4 and dims[1] in (1, 3) and all(isinstance(d, int) for d in dims[2:]):
        return {"channels": dims[1], "height": dims[2], "width": dims[3], "layout": "nchw"}
    source = str(meta.get("nngraph.source", "")).lower()
    if len(dims) == 2 and isinstance(dims[1], int) and ("digits" in source or "mnist" in source):
        side = int(round(dims[1] ** 0.5))
        if side * side == dims[1]:
            return {"channels": 1, "height": side, "width": side, "layout": "flat"}
    return None


def _asset(name: str) -> str:
    return resources.files("nngraph").joinpath("web_assets", name).read_text(encoding="utf-8")


def build_site(model_path: str | Path, out_dir: str | Path, runtime_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the page for ``model_path`` into ``out_dir`` (created; existing files of ours are
    replaced, nothing else is touched); returns model.json's content."""
    from .fileio import atomic_write_bytes, atomic_write_text
    from .onnx_io.importer import check_model_file

    model_path = Path(model_path)
    check_model_file(model_path)
    info = describe_page(model_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    sources = []
    if runtime_dir is not None:
        rd = Path(runtime_dir)
        missing = [f for f in RUNTIME_FILES if not (rd / f).is_file()]
        if missing:
            raise DataError(f"{rd}: not an onnxruntime-web dist folder (missing {', '.join(missing)}; "
                            f"npm install onnxruntime-web@{ORT_WEB_VERSION}, then give node_modules/onnxruntime-web/dist)")
        sources = [rd / f for f in RUNTIME_FILES]
    out.mkdir(parents=True, exist_ok=True)
    if model_path.resolve() != (out / "model.onnx").resolve():
        atomic_write_bytes(out / "model.onnx", model_path.read_bytes())
    runtime = "ort/" if sources else CDN
    for src in sources:
        (out / "ort").mkdir(exist_ok=True)
        shutil.copyfile(src, out / "ort" / src.name)
    info["runtime"] = runtime
    atomic_write_text(out / "model.json", json.dumps(info, indent=1))
    html = _asset("index.html").replace("{{RUNTIME}}", runtime).replace("{{TITLE}}", _escape(info["name"]))
    atomic_write_text(out / "index.html", html)
    atomic_write_text(out / "app.js", _asset("app.js"))
    return info


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")

