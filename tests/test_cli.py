"""The CLI through click's runner and as a real subprocess, including every error path:
one line on stderr naming the problem, exit code 2 (1 for a failed check), no traceback,
nothing half-written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from nngraph.cli import main

ROOT = Path(__file__).resolve().parents[1]
XOR = str(ROOT / "specs" / "xor.json")
DIGITS = str(ROOT / "specs" / "digits_mlp.json")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(result, code: int = 2, after_progress: bool = False) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    if after_progress:  # progress lines may precede; the error is the one last line
        lines = lines[-1:] if not any(l.startswith("error: ") for l in lines[:-1]) else lines
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def xor_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "xor.onnx"
    assert invoke("train", XOR, "-o", str(out), "--epochs", "300").exit_code == 0
    return out


def write_spec(tmp_path: Path, **changes) -> str:
    d = json.loads(Path(XOR).read_text())
    d["data"] = str(ROOT / "specs" / "xor.csv")
    d.update(changes)
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(d))
    return str(p)


# ---- happy paths ----------------------------------------------------------------------------

def test_check_prints_the_ir_table():
    r = invoke("check", DIGITS)
    assert r.exit_code == 0
    assert "Gemm+relu" in r.output and "(N, 128)" in r.output
    assert "total parameters: 17,226" in r.output


def test_train_prints_progress_and_test_accuracy(tmp_path):
    out = tmp_path / "d.onnx"
    r = invoke("train", DIGITS, "-o", str(out), "--epochs", "3")
    assert r.exit_code == 0
    # progress on stderr, results (test metrics, the file written) on stdout
    assert "epoch 1/3" in r.stderr and "test: loss" in r.stdout and "accuracy" in r.stdout
    assert f"wrote {out}" in r.stdout
    assert out.exists()


def test_verify_inspect_run(xor_model, tmp_path):
    r = invoke("verify", str(xor_model))
    assert r.exit_code == 0 and "OK" in r.output and "batch   64" in r.output
    r = invoke("inspect", str(xor_model))
    assert r.exit_code == 0
    assert "x: float [batch, 2]" in r.output and "ai.onnx 17" in r.output and "IR version: 8" in r.output
    assert "Gemm x2" in r.output and "nngraph.spec" in r.output
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    (tmp_path / "x.csv").write_text("a,b\n0,0\n0,1\n1,0\n1,1\n")
    outs = {}
    for src in ("x.npy", "x.npz", "x.csv"):
        for dst in ("y.npy", "y.csv", "y.json"):
            r = invoke("run", str(xor_model), "--input", str(tmp_path / src), "-o", str(tmp_path / dst))
            assert r.exit_code == 0, r.output
        outs[src] = np.load(tmp_path / "y.npy")
        np.testing.assert_allclose(np.loadtxt(tmp_path / "y.csv", delimiter=",").reshape(-1, 1), outs[src],
                                   rtol=1e-6)
        np.testing.assert_allclose(np.array(json.loads((tmp_path / "y.json").read_text())), outs[src])
    assert outs["x.npy"].shape == (4, 1)
    np.testing.assert_array_equal(outs["x.npy"], outs["x.csv"])
    r = invoke("run", str(xor_model), "--input", str(tmp_path / "x.npy"))
    assert np.array(json.loads(r.output)).shape == (4, 1)


def test_compile_is_byte_identical_and_opset_selectable(tmp_path):
    for name in ("a", "b"):
        assert invoke("compile", XOR, "-o", str(tmp_path / f"{name}.onnx")).exit_code == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    for opset in (13, 21):
        assert invoke("compile", XOR, "-o", str(tmp_path / f"o{opset}.onnx"), "--opset", str(opset)).exit_code == 0
        m = onnx.load(str(tmp_path / f"o{opset}.onnx"))
        assert m.opset_import[0].version == opset
        assert invoke("verify", str(tmp_path / f"o{opset}.onnx")).exit_code == 0


def test_fine_tune_with_init(xor_model, tmp_path):
    r = invoke("train", XOR, "--init", str(xor_model), "--epochs", "2", "-o", str(tmp_path / "ft.onnx"))
    assert r.exit_code == 0 and "initial weights from" in r.stderr


# ---- error paths ----------------------------------------------------------------------------

def test_bad_spec_names_the_field(tmp_path):
    bad = write_spec(tmp_path, layers=[{"type": "dense", "units": 4}, {"type": "dense", "units": 0}])
    line = one_error_line(invoke("check", bad))
    assert line == "error: layers[1].units: expected an integer >= 1, got 0"
    line = one_error_line(invoke("train", bad, "-o", str(tmp_path / "x.onnx")))
    assert "layers[1].units" in line
    assert not (tmp_path / "x.onnx").exists()


def test_missing_spec_file(tmp_path):
    assert "spec file not found" in one_error_line(invoke("check", str(tmp_path / "no.json")))


def test_missing_data_file(tmp_path):
    line = one_error_line(invoke("train", XOR, "--data", str(tmp_path / "none.csv")))
    assert "none.csv" in line and "no such file" in line


def test_corrupt_data_files(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert "not a readable .npz" in one_error_line(invoke("train", XOR, "--data", str(tmp_path / "bad.npz")))
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    assert "missing array 'x'" in one_error_line(invoke("train", XOR, "--data", str(tmp_path / "nox.npz")))
    (tmp_path / "bad.csv").write_text("a,b,y\n0,1,1\n1,zz,0\n")
    line = one_error_line(invoke("train", XOR, "--data", str(tmp_path / "bad.csv")))
    assert "line 3, column 2: not a number: 'zz'" in line
    (tmp_path / "ragged.csv").write_text("0,1,1\n1,0\n")
    assert "line 2 has 2 columns, expected 3" in one_error_line(invoke("train", XOR, "--data",
                                                                       str(tmp_path / "ragged.csv")))


def test_data_shape_mismatch(tmp_path):
    np.savez(tmp_path / "wide.npz", x=np.zeros((4, 3), np.float32), y=np.zeros(4))
    line = one_error_line(invoke("train", XOR, "--data", str(tmp_path / "wide.npz")))
    assert "each sample has shape (3,), the model expects (2,)" in line
    np.savez(tmp_path / "ragged.npz", x=np.zeros((4, 2), np.float32), y=np.zeros(5))
    assert "x has 4 samples but y has 5" in one_error_line(invoke("train", XOR, "--data",
                                                                  str(tmp_path / "ragged.npz")))


def test_run_with_wrong_input_shape(xor_model, tmp_path):
    np.save(tmp_path / "x3.npy", np.zeros((2, 3), np.float32))
    line = one_error_line(invoke("run", str(xor_model), "--input", str(tmp_path / "x3.npy")))
    assert "the model expects (2,)" in line


def test_unsupported_formats(xor_model, tmp_path):
    (tmp_path / "x.txt").write_text("1 2")
    assert "unsupported input format" in one_error_line(invoke("run", str(xor_model), "--input",
                                                               str(tmp_path / "x.txt")))
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    assert "unsupported output format" in one_error_line(invoke("run", str(xor_model), "--input",
                                                                str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.xls")))


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    assert "not a readable ONNX model" in one_error_line(invoke("inspect", str(tmp_path / "junk.onnx")))
    assert "junk.onnx" in one_error_line(invoke("verify", str(tmp_path / "junk.onnx")))
    assert "file not found" in one_error_line(invoke("verify", str(tmp_path / "none.onnx")))


def test_unsupported_opset(tmp_path):
    line = one_error_line(invoke("compile", XOR, "-o", str(tmp_path / "x.onnx"), "--opset", "7"))
    assert "opset 7 is not supported" in line
    assert not (tmp_path / "x.onnx").exists()


def test_verify_fails_with_exit_1_on_a_tampered_model(xor_model, tmp_path):
    m = onnx.load(str(xor_model))
    w = onnx.numpy_helper.to_array(m.graph.initializer[0]).copy()
    # The embedded spec rebuilds the Numba model from the same initializers, so tamper with the
    # graph instead: swap the first activation for a different one.
    for node in m.graph.node:
        if node.op_type == "Sigmoid":
            node.op_type = "Tanh"
            break
    del w
    onnx.save(m, str(tmp_path / "tampered.onnx"))
    r = invoke("verify", str(tmp_path / "tampered.onnx"))
    assert r.exit_code == 1
    assert "FAILED" in r.output and "disagree beyond tolerance" in r.stderr


def test_divergence_stops_with_a_clear_message(tmp_path):
    spec = write_spec(tmp_path, optimizer={"type": "sgd", "lr": 1e30}, loss="mse",
                      layers=[{"type": "dense", "units": 4}, {"type": "dense", "units": 1}])
    out = tmp_path / "never.onnx"
    r = invoke("train", spec, "-o", str(out))
    line = one_error_line(r, code=1, after_progress=True)
    assert "diverged" in line and "step" in line
    assert not out.exists()


# ---- as a real process --------------------------------------------------------------------------

def _run(*args: str):
    return subprocess.run([sys.executable, "-m", "nngraph.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_subprocess_end_to_end(tmp_path):
    out = tmp_path / "xor.onnx"
    r = _run("train", XOR, "-o", str(out), "--epochs", "100", "--quiet")
    assert r.returncode == 0, r.stderr
    r = _run("verify", str(out))
    assert r.returncode == 0 and "OK" in r.stdout


def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    bad = write_spec(tmp_path, loss="hinge")
    r = _run("check", bad)
    assert r.returncode == 2
    assert r.stderr.strip() == 'error: loss: expected one of mse, cross_entropy, binary_cross_entropy, got "hinge"'


def test_help_lists_the_commands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("check", "compile", "train", "verify", "run", "inspect"):
        assert cmd in r.stdout
