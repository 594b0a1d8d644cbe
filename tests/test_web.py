"""`nngraph web`: the page for an MLP and a CNN digit classifier, a character LM and a plain model,
served over http on 127.0.0.1 and run by headless Chromium with onnxruntime-web; the page's own
inference on fixed inputs (and on a drawn digit, through the page's preprocessing) equals Python
onnxruntime's within 1e-5. The folder's contents, file:// and the errors. See tests/browser.py for
where Chromium and onnxruntime-web come from."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nngraph.runtime import run as ort_run
from nngraph.web import ORT_WEB_VERSION, RUNTIME_FILES, build_site

from . import browser
from .test_cli import invoke, one_error_line

ROOT = Path(__file__).resolve().parents[1]
# a "1": one vertical stroke with a short flag, in the 280 x 280 pad's coordinates
ONE = [[[150, 40], [150, 240]], [[110, 70], [150, 40]]]


@pytest.fixture(scope="module")
def runtime_dir() -> Path:
    reason = browser.missing_reason()
    if reason:
        if os.environ.get("NNGRAPH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {reason}")
        pytest.skip(reason)
    return browser.ort_web_dir()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("web")
    out = {}
    for name in ("digits_mlp", "digits_cnn"):
        out[name] = d / f"{name}.onnx"
        assert invoke("train", str(ROOT / "specs" / f"{name}.json"), "--epochs", "2", "-q", "-o",
                      str(out[name])).exit_code == 0
    corpus = "".join("ROMEO: wherefore art thou?\n" if i % 2 else "to be or not to be.\n" for i in range(60))
    (d / "c.txt").write_text(corpus)
    vocab = sorted(set(corpus))
    spec = {"name": "lm", "inputs": {"ids": {"shape": [16], "dtype": "int64"}},
            "layers": [{"type": "embedding", "vocab_size": len(vocab), "dim": 8},
                       {"type": "gru", "units": 16, "return_sequences": True},
                       {"type": "dense", "units": len(vocab)}],
            "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
            "train": {"epochs": 2, "batch_size": 16}, "data": {"train": "c.txt", "seq_len": 16, "stride": 8}}
    (d / "lm.json").write_text(json.dumps(spec))
    out["charlm"] = d / "lm.onnx"
    assert invoke("train", str(d / "lm.json"), "-q", "-o", str(out["charlm"])).exit_code == 0
    out["xor"] = d / "xor.onnx"
    assert invoke("train", str(ROOT / "specs" / "xor.json"), "--epochs", "50", "-q", "-o", str(out["xor"])).exit_code == 0
    return out


def _site(tmp_path: Path, model: Path, runtime: Path, selftest: dict) -> Path:
    site = tmp_path / "site"
    info = build_site(model, site, runtime)
    (site / "selftest.json").write_text(json.dumps(selftest))
    return site


def _check_cases(model: Path, cases: list[dict], got: list[dict]) -> None:
    assert len(got) == len(cases)
    for case, out in zip(cases, got):
        x = np.array(case["values"], np.int64 if isinstance(case["values"][0], int) and "lm" in model.name
                     else np.float32).reshape(case["shape"])
        want = ort_run(model, x)
        assert out["dims"] == list(want.shape)
        np.testing.assert_allclose(np.array(out["data"]).reshape(want.shape), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digit_pages_classify_fixed_inputs_and_a_drawn_digit_like_onnxruntime(name, models, runtime_dir, tmp_path):
    model = models[name]
    shape = [3, 64] if name == "digits_mlp" else [3, 1, 8, 8]
    rng = np.random.default_rng(0)
    cases = [{"values": (rng.integers(0, 17, 192)).astype(float).tolist(), "shape": shape}]
    site = _site(tmp_path, model, runtime_dir, {"cases": cases, "strokes": ONE})
    meta = json.loads((site / "model.json").read_text())
    assert meta["kind"] == "image" and meta["pixel_max"] == 16.0 and meta["image"]["height"] == 8
    assert meta["image"]["layout"] == ("flat" if name == "digits_mlp" else "nchw")
    result = browser.run_page(site)
    assert result["ok"], result
    assert result["version"] == ORT_WEB_VERSION
    _check_cases(model, cases, result["cases"])
    drawn = np.array(result["drawn"]["values"], np.float32)  # the page's own preprocessing of the strokes
    assert drawn.shape == (64,) and 0 <= drawn.min() and drawn.max() <= 16 and drawn.max() > 8
    col = drawn.reshape(8, 8).sum(axis=0)
    assert col.argmax() in (3, 4)  # a vertical stroke, centred by the bounding-box fit
    want = ort_run(model, drawn.reshape([1] + shape[1:]))
    np.testing.assert_allclose(np.array(result["drawn"]["output"]).reshape(want.shape), want, atol=1e-5, rtol=0)


def test_charlm_page_runs_the_model_and_samples_from_the_vocabulary(models, runtime_dir, tmp_path):
    model = models["charlm"]
    vocab = json.loads(json.dumps(sorted(set("".join("ROMEO: wherefore art thou?\nto be or not to be.\n")))))
    rng = np.random.default_rng(1)
    cases = [{"values": rng.integers(0, len(vocab), 16).tolist(), "shape": [1, 16]},
             {"values": rng.integers(0, len(vocab), 32).tolist(), "shape": [2, 16]}]
    site = _site(tmp_path, model, runtime_dir, {"cases": cases, "prime": "ROMEO:", "length": 40, "temperature": 0.5,
                                                "seed": 7})
    meta = json.loads((site / "model.json").read_text())
    assert meta["kind"] == "charlm" and meta["context"] == 16 and set(meta["vocab"]) == set(vocab)
    result = browser.run_page(site)
    assert result["ok"], result
    for case, out in zip(cases, result["cases"]):
        want = ort_run(model, np.array(case["values"], np.int64).reshape(case["shape"]))
        np.testing.assert_allclose(np.array(out["data"]).reshape(want.shape), want, atol=1e-5, rtol=0)
    text = result["text"]
    assert text.startswith("ROMEO:") and len(text) == 46 and set(text) <= set(vocab)


def test_other_models_get_a_form(models, runtime_dir, tmp_path):
    model = models["xor"]
    cases = [{"values": [0.0, 1.0, 1.0, 1.0], "shape": [2, 2]}]
    site = _site(tmp_path, model, runtime_dir, {"cases": cases})
    assert json.loads((site / "model.json").read_text())["kind"] == "form"
    result = browser.run_page(site)
    assert result["ok"], result
    _check_cases(model, cases, result["cases"])


def test_the_folder_holds_the_page_the_model_and_the_pinned_runtime(models, runtime_dir, tmp_path):
    r = invoke("web", str(models["digits_cnn"]), "-o", str(tmp_path / "s"), "--runtime-dir", str(runtime_dir))
    assert r.exit_code == 0 and "python -m http.server -d" in r.output
    names = sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert names == sorted(["app.js", "index.html", "model.json", "model.onnx"] + [f"ort/{f}" for f in RUNTIME_FILES])
    assert (tmp_path / "s" / "model.onnx").read_bytes() == models["digits_cnn"].read_bytes()
    assert '<script src="ort/ort.wasm.min.js">' in (tmp_path / "s" / "index.html").read_text()
    cdn = tmp_path / "cdn"
    assert invoke("web", str(models["digits_cnn"]), "-o", str(cdn)).exit_code == 0
    html = (cdn / "index.html").read_text()
    assert f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/ort.wasm.min.js" in html
    assert not (cdn / "ort").exists()


def test_opened_as_a_file_the_page_says_to_serve_it(models, runtime_dir, tmp_path):
    site = tmp_path / "s"
    build_site(models["digits_cnn"], site, runtime_dir)
    dom = subprocess.run([browser.chromium(), *browser.FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--dump-dom", "--virtual-time-budget=3000", (site / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120, start_new_session=True).stdout
    assert "opened as a file" in dom and "python -m http.server" in dom


def test_a_screenshot_of_the_digit_page_with_a_drawn_digit(models, runtime_dir, tmp_path):
    """The picture for the closing note: the pad with the drawn 1, the 8 x 8 input the model sees,
    the bars of the ten classes."""
    site = _site(tmp_path, models["digits_cnn"], runtime_dir, {"strokes": ONE})
    png = browser.screenshot(site, tmp_path / "digit_page.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    keep = os.environ.get("NNGRAPH_SCREENSHOT_DIR")
    if keep:
        (Path(keep) / "digit_page.png").write_bytes(png.read_bytes())


@pytest.mark.parametrize("case", ["two_inputs", "bad_runtime_dir", "folder_is_a_file"])
def test_web_errors_are_one_line(case, models, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    model, args = models["xor"], []
    if case == "two_inputs":
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2])
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
        g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
        model = tmp_path / "two.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
        needle = "one input; the model has 2"
    elif case == "bad_runtime_dir":
        args, needle = ["--runtime-dir", str(tmp_path)], "not an onnxruntime-web dist folder"
    else:
        (tmp_path / "f").write_text("x")
        needle = "is a file"
    out = tmp_path / "f" if case == "folder_is_a_file" else tmp_path / "site"
    assert needle in one_error_line(invoke("web", str(model), "-o", str(out), *args))


def test_mnist_sized_pages_fit_the_drawing_into_a_20px_box_centred_by_mass(runtime_dir, tmp_path):
    """A 28 x 28 input is drawn the way MNIST's digits were made: the bounding box scaled into
    20 x 20 and the centre of mass moved to the middle; pixels 0..255 (the model's input_scale)."""
    from nngraph.model import Model
    from nngraph.spec import parse_spec

    model = Model.compile(parse_spec({"name": "m28", "inputs": {"x": {"shape": [1, 28, 28]}},
                                      "layers": [{"type": "flatten"}, {"type": "dense", "units": 10,
                                                                       "activation": "softmax"}],
                                      "loss": "cross_entropy"}))
    model.metadata["input_scale"] = 1 / 255
    model.metadata["source"] = "mnist"
    path = tmp_path / "m28.onnx"
    model.export_onnx(path)
    site = _site(tmp_path, path, runtime_dir, {"strokes": [[[60, 30], [220, 250]]]})  # a long diagonal
    assert json.loads((site / "model.json").read_text())["fit"] == "mnist"
    result = browser.run_page(site)
    assert result["ok"], result
    img = np.array(result["drawn"]["values"]).reshape(28, 28)
    assert img.max() > 200 and img.max() <= 255
    rows, cols = np.nonzero(img > 10)
    assert rows.max() - rows.min() <= 21 and cols.max() - cols.min() <= 21  # inside ~20 x 20 (+ antialiasing)
    m = img.sum()
    cy, cx = (img.sum(axis=1) @ np.arange(28)) / m, (img.sum(axis=0) @ np.arange(28)) / m
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1
    want = ort_run(path, img.astype(np.float32).reshape(1, 1, 28, 28))
    np.testing.assert_allclose(np.array(result["drawn"]["output"]).reshape(want.shape), want, atol=1e-5, rtol=0)
