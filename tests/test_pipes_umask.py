"""Issue 11, process-level behaviour through real subprocesses: a closed stdout or stderr never
stops a command (a training run finishes and writes its model; the exit code is the one it would
have had, and nothing is printed about the pipe); files are created with the user's umask; results
go to stdout, progress to stderr, and ``-q`` leaves only the results."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "specs" / "xor.json"
DIGITS = ROOT / "specs" / "digits_mlp.json"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1"}


def xor_spec(tmp_path: Path) -> Path:
    d = json.loads(XOR.read_text())
    d["data"] = str(ROOT / "specs" / "xor.csv")
    p = tmp_path / "xor.json"
    p.write_text(json.dumps(d))
    return p


def run_cli(*args, umask: int | None = None, **kw) -> subprocess.CompletedProcess:
    def pre() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, "-m", "nngraph.cli", *map(str, args)], env=ENV, preexec_fn=pre,
                          timeout=600, **kw)


def closed_pipe() -> int:
    """The write end of a pipe whose reader is already gone: every write gets EPIPE (what ``| head -1``
    does once it has its line), independent of timing."""
    r, w = os.pipe()
    os.close(r)
    return w


def test_check_into_a_closed_pipe_is_not_an_error(tmp_path):
    w = closed_pipe()
    try:
        r = run_cli("check", DIGITS, stdout=w, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # not "error: Broken pipe", not "Exception ignored ... BrokenPipeError"


def test_check_piped_into_head_prints_its_first_line_and_exits_0(tmp_path):
    p = subprocess.Popen(f"{sys.executable} -m nngraph.cli check {DIGITS} 2>{tmp_path / 'err'} | head -1; "
                         "echo rc=${PIPESTATUS[0]}", shell=True, executable="/bin/bash", env=ENV,
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=300)
    assert out.splitlines()[0].startswith("digits_mlp: valid")
    assert out.splitlines()[-1] == "rc=0"
    assert (tmp_path / "err").read_text() == ""


def test_training_survives_closed_stdout_and_stderr_and_writes_its_model(tmp_path):
    spec = xor_spec(tmp_path)
    out = tmp_path / "xor.onnx"
    run = tmp_path / "run"
    w = closed_pipe()
    try:  # `nngraph train ... 2>&1 | head` with a reader that is gone from the start
        r = run_cli("train", spec, "-o", out, "--run-dir", run, "--epochs", "30", "--progress", "lines",
                    stdout=w, stderr=w)
    finally:
        os.close(w)
    assert r.returncode == 0
    assert out.exists() and (run / "checkpoint.npz").exists()
    v = run_cli("verify", out, capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_files_are_created_with_the_users_umask(tmp_path, mask):
    spec = xor_spec(tmp_path)
    model, run = tmp_path / "m.onnx", tmp_path / "run"
    assert run_cli("compile", spec, "-o", model, umask=mask, capture_output=True).returncode == 0
    r = run_cli("train", spec, "--run-dir", run, "--epochs", "2", "-q", "-o", tmp_path / "t.onnx",
                umask=mask, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    want = 0o666 & ~mask
    files = [model, tmp_path / "t.onnx"] + [p for p in run.iterdir() if p.is_file()]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(want) for p in files}
    assert oct(stat.S_IMODE(run.stat().st_mode)) == oct(0o777 & ~mask)


def test_plot_is_created_with_the_users_umask(tmp_path):
    pytest.importorskip("matplotlib")
    spec = xor_spec(tmp_path)
    run = tmp_path / "run"
    assert run_cli("train", spec, "--run-dir", run, "--epochs", "2", "-q", capture_output=True).returncode == 0
    png = tmp_path / "c.png"
    r = run_cli("history", run, "--plot", png, umask=0o022, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(png.stat().st_mode) == 0o644


def test_replacing_a_file_keeps_its_mode(tmp_path):
    spec = xor_spec(tmp_path)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"old")
    model.chmod(0o640)
    assert run_cli("compile", spec, "-o", model, umask=0o022, capture_output=True).returncode == 0
    assert stat.S_IMODE(model.stat().st_mode) == 0o640 and model.read_bytes() != b"old"


def test_a_killed_writes_temporary_is_removed_by_the_next_write(tmp_path):
    spec = xor_spec(tmp_path)
    model = tmp_path / "m.onnx"
    stale = tmp_path / ".m.onnx.k1ll3d_x.tmp"
    stale.write_bytes(b"half a model")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert run_cli("compile", spec, "-o", model, capture_output=True).returncode == 0
    assert model.exists() and not stale.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_results_on_stdout_progress_on_stderr_and_quiet_prints_only_results(tmp_path):
    out = tmp_path / "d.onnx"
    r = run_cli("train", DIGITS, "-o", out, "--epochs", "1", "--progress", "lines", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "epoch 1/1" in r.stderr and "test:" not in r.stderr
    assert r.stdout.splitlines() == [l for l in r.stdout.splitlines() if l.startswith(("test: ", "wrote "))]
    assert any(l.startswith("test: loss") for l in r.stdout.splitlines()) and f"wrote {out}" in r.stdout
    q = run_cli("train", DIGITS, "-o", out, "--epochs", "1", "-q", capture_output=True, text=True)
    assert q.returncode == 0 and q.stderr == "", q.stderr
    assert q.stdout == r.stdout  # same seed, same data: the same result lines
