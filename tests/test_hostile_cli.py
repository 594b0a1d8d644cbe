"""Issue 11, hostile input through the CLI and the API: every reproducer is one ``error:`` line on
stderr and exit 2 (no traceback) at ``check`` time, not a RecursionError, ValueError, MemoryError,
UnicodeEncodeError or Numba typing error later; and the output of a command never destroys one of
its own inputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nngraph.cli import main

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "specs" / "xor.json"
DIGITS = ROOT / "specs" / "digits_mlp.json"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def xor_dict(**changes) -> dict:
    d = json.loads(XOR.read_text())
    d["data"] = str(ROOT / "specs" / "xor.csv")
    d.update(changes)
    return d


def write(tmp_path: Path, d, name: str = "spec.json") -> Path:
    p = tmp_path / name
    p.write_text(d if isinstance(d, str) else json.dumps(d))
    return p


def check_error(tmp_path: Path, d, name: str = "spec.json") -> str:
    return one_error_line(invoke("check", write(tmp_path, d, name)))


# ---- JSON itself ------------------------------------------------------------------------------

def test_json_nested_thousands_deep_is_one_line(tmp_path):
    assert "nested too deep" in check_error(tmp_path, "[" * 100_000 + "]" * 100_000)
    # deep inside a valid spec, where the parser succeeds but printing or checking would recurse
    text = json.dumps(xor_dict())[:-1] + ', "x": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"
    assert "nested too deep" in check_error(tmp_path, text)
    line = check_error(tmp_path, xor_dict(data={"target": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}))
    assert "nested more than 32 levels" in line


def test_integer_literal_of_more_than_4300_digits_is_one_line(tmp_path):
    text = XOR.read_text().replace('"units": 4', '"units": ' + "9" * 5000)
    assert "integer literal has more than" in check_error(tmp_path, text)


def test_lone_surrogate_in_a_name_is_one_line(tmp_path):
    d = xor_dict()
    d["layers"][0]["name"] = "\ud800"
    line = check_error(tmp_path, json.dumps(d))  # json.dumps writes it as the escape \ud800
    assert line.startswith("error: layers[0].name: contains a lone surrogate") and "\\ud800" in line
    d = xor_dict(inputs={"x\udfff": {"shape": [2]}})
    assert "lone surrogate" in check_error(tmp_path, json.dumps(d))


def test_a_list_where_a_schedule_is_expected(tmp_path):
    line = check_error(tmp_path, xor_dict(train={"schedule": ["step"]}))
    assert line.startswith("error: train.schedule: expected an object")
    line = check_error(tmp_path, xor_dict(train={"schedule": {"type": ["step"]}}))  # was a TypeError
    assert line.startswith("error: train.schedule.type: expected one of")


# ---- sizes that pass the field checks but cannot run --------------------------------------------

def test_units_or_stride_beyond_int_range_are_rejected(tmp_path):
    d = xor_dict()
    d["layers"][0]["units"] = 2**63
    assert "too large: at most 2147483647" in check_error(tmp_path, d)
    cnn = json.loads((ROOT / "specs" / "digits_cnn.json").read_text())
    cnn["layers"][0]["stride"] = 2**63
    assert "layers[0].stride" in check_error(tmp_path, cnn)
    cnn["layers"][0]["stride"] = [1, 2**63]
    assert "layers[0].stride" in check_error(tmp_path, cnn)


def test_parameters_beyond_onnx_2gb_are_rejected_at_check_naming_the_layer_and_bytes(tmp_path):
    d = json.loads(DIGITS.read_text())
    d["layers"][0]["units"] = 10**7  # 64 x 10**7 weights: 2.4 GB, once an EncodeError at export
    line = check_error(tmp_path, d)
    assert line.startswith("error: layer dense_0: its parameters take 2.4 GB (2,600,000,000 bytes)")
    assert "2 GB an ONNX model can hold" in line


def test_activations_beyond_physical_memory_are_rejected_naming_the_layer(tmp_path):
    d = xor_dict(inputs={"x": {"shape": [64, 4096, 4096]}}, loss="mse",
                 layers=[{"type": "relu"}], train={"batch_size": 32})
    line = check_error(tmp_path, d)
    assert line.startswith("error: layer relu_0: needs ") and "batch size 32" in line
    assert "more than this machine's" in line


def test_check_memory_with_a_given_budget_and_the_estimate_line(tmp_path):
    from nngraph.errors import ShapeError
    from nngraph.ir.memory import check_memory, estimate_memory
    from nngraph.lowering import lower
    from nngraph.spec import load_spec

    graph = lower(load_spec(DIGITS))
    est = estimate_memory(graph)
    assert est.param_bytes == 17_226 * 4
    with pytest.raises(ShapeError, match=r"layer dense_0: needs .* more than this machine's 1,000 bytes"):
        check_memory(graph, 32, available=1000)
    r = invoke("check", DIGITS)
    assert r.exit_code == 0 and "memory: parameters 67.3 KB" in r.stdout


def test_number_fields_resolve_to_floats_and_huge_lr_trains(tmp_path):
    from nngraph.spec import parse_spec

    spec = parse_spec(xor_dict(optimizer={"type": "sgd", "lr": 2**63, "momentum": 0}))
    lr = spec.optimizer.resolved()["lr"]
    assert isinstance(lr, float) and lr == 2.0**63
    assert spec.optimizer.to_dict()["lr"] == 2**63  # the spec keeps what the user wrote
    line = check_error(tmp_path, xor_dict(optimizer={"type": "sgd", "lr": 10**400}))
    assert line.startswith("error: optimizer.lr: expected a number > 0")
    r = invoke("train", write(tmp_path, xor_dict(optimizer={"type": "sgd", "lr": 2**63, "momentum": 0.5})),
               "--epochs", "1", "-q")
    assert r.exit_code in (0, 1), r.output  # trains (or diverges, exit 1), never a Numba typing error
    assert "Traceback" not in r.output and "Typing" not in r.output


@pytest.mark.parametrize("key", ["beta1", "beta2"])
@pytest.mark.parametrize("opt", ["adam", "adamw"])
def test_adam_betas_must_be_below_one(tmp_path, key, opt):
    line = check_error(tmp_path, xor_dict(optimizer={"type": opt, key: 1.0}))
    assert line == f"error: optimizer.{key}: expected a number >= 0 and < 1, got 1.0"


def test_set_with_hostile_values_is_one_line(tmp_path):
    spec = write(tmp_path, xor_dict())
    cases = {
        "optimizer.beta1=1.0": "optimizer.beta1: expected a number >= 0 and < 1",
        "train.schedule=[\"step\"]": "train.schedule: expected an object",
        "train.batch_size=9223372036854775808": "too large",
        "train.seed=-1": "train.seed: expected an integer >= 0",
        'train.monitor="\\ud800"': "lone surrogate",
        "optimizer.lr=" + "9" * 5000: "integer of more than",
        "train.schedule=" + "[" * 5000 + "]" * 5000: "nested too deep",
    }
    for item, want in cases.items():
        line = one_error_line(invoke("train", spec, "--set", "optimizer.type=adam", "--set", item, "-q"))
        assert want in line, (item, line)


def test_seed_and_verify_batch_are_bounded_one_line(tmp_path):
    spec = write(tmp_path, xor_dict())
    for args in (("train", spec, "--seed", "-1"), ("train", spec, "--seed", str(2**64)),
                 ("compile", spec, "--seed", "-1"), ("gradcheck", spec, "--seed", "-5"),
                 ("verify", tmp_path / "m.onnx", "--batch", str(10**9)), ("train", spec, "--epochs", "0"),
                 ("train", spec, "--no-such-option")):
        line = one_error_line(invoke(*args))
        assert "--help" in line, line


# ---- wrong successes -----------------------------------------------------------------------------

@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_spec_version_must_be_the_integer_1(tmp_path, version):
    line = check_error(tmp_path, xor_dict(spec_version=version))
    assert line.startswith("error: spec_version: expected 1, got ")


def test_layer_named_like_a_parameter_fails_at_check_in_both_directions(tmp_path):
    d = xor_dict()
    d["layers"][1]["name"] = "dense_0.b"  # after the layer whose parameter it names
    assert check_error(tmp_path, d) == ('error: layers[1].name: the name "dense_0.b" is reserved for a '
                                        'parameter of "dense_0"; choose another name')
    d = xor_dict()
    d["layers"][0]["name"] = "dense_1.W"  # before it
    assert check_error(tmp_path, d).startswith('error: layers[0].name: the name "dense_1.W" is reserved')
    d = xor_dict(inputs={"dense_0.W": {"shape": [2]}})  # an input
    assert check_error(tmp_path, d).startswith('error: inputs["dense_0.W"]: the name "dense_0.W" is reserved')
    d = xor_dict()
    d["layers"][0]["activation"] = "gelu"
    d["layers"][1]["name"] = "dense_0/linear"  # the internal value of an unfused activation
    assert "reserved for an internal value" in check_error(tmp_path, d)
    d = xor_dict()
    d["layers"][1]["name"] = "dense_0x.b"  # merely similar: fine
    assert invoke("check", write(tmp_path, d)).exit_code == 0


def test_python_builder_specs_get_the_same_checks():
    from nngraph.errors import SpecError
    from nngraph.spec import parse_spec

    with pytest.raises(SpecError, match="reserved for a parameter"):
        parse_spec(xor_dict(layers=[{"type": "dense", "units": 4}, {"type": "relu", "name": "dense_0.W"}]))
    with pytest.raises(SpecError, match="lone surrogate"):
        parse_spec(xor_dict(name="a\ud800"))


def test_cross_entropy_on_an_image_shaped_output_fails_at_check_with_a_flatten_hint(tmp_path):
    d = json.loads((ROOT / "specs" / "digits_cnn.json").read_text())
    d["layers"] = [{"type": "conv2d", "filters": 64, "kernel": 3, "padding": "same"},
                   {"type": "maxpool2d", "size": [4, 1]},
                   {"type": "dense", "units": 10, "activation": "softmax"}]
    line = check_error(tmp_path, d)
    assert line.startswith("error: layer dense_2: loss cross_entropy expects scores of shape (N, classes)")
    assert "(N, 64, 2, 10)" in line and "flatten" in line
    d["layers"].insert(2, {"type": "flatten"})
    assert invoke("check", write(tmp_path, d)).exit_code == 0


# ---- one line on stderr: no warnings, no onnxruntime log ------------------------------------------

@pytest.fixture(scope="module")
def xor_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "xor.onnx"
    assert invoke("compile", XOR, "-o", out).exit_code == 0
    return out


def test_numpy_runtime_warnings_never_reach_stderr(tmp_path, xor_model):
    x = tmp_path / "big.npy"
    np.save(x, np.full((2, 2), 1e300))  # float64 -> float32: "overflow encountered in cast"
    # a real process: pytest's own warning capture would hide the warning from click's runner
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)
    r = subprocess.run([sys.executable, "-m", "nngraph.cli", "run", str(xor_model), "--input", str(x)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_onnxruntime_log_lines_never_reach_stderr(tmp_path, xor_model):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(xor_model))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused_w"))
    path = tmp_path / "unused.onnx"
    onnx.save(m, str(path))
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 2), np.float32))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "nngraph.cli", "run", str(path), "--input", str(x)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr


# ---- nothing of the user's is destroyed --------------------------------------------------------

def test_output_onto_the_input_spec_or_data_is_refused(tmp_path):
    spec = write(tmp_path, xor_dict())
    before = spec.read_text()
    assert "is the input spec; refusing" in one_error_line(invoke("compile", spec, "-o", spec))
    assert "is the input spec; refusing" in one_error_line(invoke("train", spec, "-o", spec))
    link = tmp_path / "link.onnx"
    link.symlink_to(spec)
    assert "is the input spec" in one_error_line(invoke("train", spec, "-o", link))
    assert spec.read_text() == before
    csv = tmp_path / "xor.csv"
    csv.write_text((ROOT / "specs" / "xor.csv").read_text())
    line = one_error_line(invoke("train", spec, "--data", csv, "-o", csv))
    assert "is the data file; refusing" in line
    spec2 = write(tmp_path, xor_dict(data="xor.csv"), "rel.json")  # relative to the spec
    assert "is the data file" in one_error_line(invoke("train", spec2, "-o", csv))
    assert csv.read_text() == (ROOT / "specs" / "xor.csv").read_text()


def test_output_onto_a_device_node_is_refused(tmp_path):
    # a FIFO stands in for a device node: the same "not a regular file" path, and a regression can
    # only replace a file in tmp_path (never run this against the machine's /dev/null: the old code
    # turned it into a regular file)
    spec = write(tmp_path, xor_dict())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    line = one_error_line(invoke("compile", spec, "-o", fifo))
    assert "not a regular file; refusing" in line
    assert fifo.is_fifo()
    assert "is a directory" in one_error_line(invoke("compile", spec, "-o", tmp_path))  # click's check


def test_output_onto_a_runs_own_checkpoint_is_refused(tmp_path):
    spec = write(tmp_path, xor_dict())
    run = tmp_path / "run"
    assert invoke("train", spec, "--run-dir", run, "--epochs", "2", "-q").exit_code == 0
    ckpt = run / "checkpoint.npz"
    before = ckpt.read_bytes()
    assert "is the run directory's checkpoint.npz" in one_error_line(invoke("export", run, "-o", ckpt))
    line = one_error_line(invoke("train", "--resume", run, "--epochs", "3", "-o", ckpt))
    assert "checkpoint.npz; refusing" in line
    assert ckpt.read_bytes() == before
    assert invoke("train", "--resume", run, "--epochs", "3", "-q").exit_code == 0  # still resumes


def test_run_output_onto_its_input_is_refused(tmp_path, xor_model):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 2), np.float32))
    assert "is the input file" in one_error_line(invoke("run", xor_model, "--input", x, "-o", x))


def test_stale_temporaries_of_ours_are_cleaned_on_the_next_write(tmp_path):
    from nngraph.fileio import atomic_write_bytes

    target = tmp_path / "m.onnx"
    stale = tmp_path / ".m.onnx.ab_cd123.tmp"  # what a SIGKILL during -o leaves
    fresh = tmp_path / ".m.onnx.zzzzzzzz.tmp"  # maybe a concurrent writer: kept
    other = tmp_path / ".m.onnx.notours.tmp"  # not a name mkstemp gives us: kept
    foreign = tmp_path / ".n.onnx.ab_cd123.tmp"  # another target's: kept
    for p in (stale, fresh, other, foreign):
        p.write_bytes(b"half")
    old = time.time() - 3600
    for p in (stale, other, foreign):
        os.utime(p, (old, old))
    atomic_write_bytes(target, b"model")
    assert target.read_bytes() == b"model"
    assert not stale.exists() and fresh.exists() and other.exists() and foreign.exists()


# ---- Python API --------------------------------------------------------------------------------

def test_nngraph_train_is_callable_after_importing_the_train_package(tmp_path):
    code = f"""
import nngraph
f = nngraph.train
import nngraph.train.callbacks as cb
from nngraph.train import rundir
assert cb.Callback is nngraph.Callback and callable(nngraph.train)
res = nngraph.train({str(XOR)!r}, data={str(ROOT / "specs" / "xor.csv")!r}, epochs=1, progress="none",
                    log=lambda s: None)
assert res.model is not None
import nngraph.workflow
assert nngraph.workflow.train is f
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_bare_command_still_shows_the_help_and_memory_errors_are_one_line(monkeypatch, tmp_path):
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 2 and "Usage:" in r.output and "error:" not in r.output

    def boom(path):
        raise MemoryError

    monkeypatch.setattr("nngraph.spec.load_spec", boom)
    assert "out of memory" in one_error_line(invoke("check", XOR))
