"""Describing, exporting and sampling a model loads no Numba: `check`, `compile`, `inspect`, `export`
and `sample` read only op descriptions (nngraph.ops.registry) and run in processes where importing
numba is made to fail."""
import json
import subprocess
import sys
from pathlib import Path

from nngraph.workflow import train

ROOT = Path(__file__).resolve().parents[1]

# Runs one CLI command in-process with numba made unimportable, and reports its exit code.
CHILD = r"""
import sys

class NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ImportError(f"{name} imported by a command that must not load it")
        return None

sys.meta_path.insert(0, NoNumba())
from nngraph.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit as e:
    sys.exit(e.code)
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=120)


def test_check_compile_inspect_export_and_sample_load_no_numba(tmp_path):
    # a run directory and a character LM, trained in this (Numba-using) process
    corpus = "".join("to be or not to be.\n" if i % 2 else "ROMEO: art thou?\n" for i in range(40))
    (tmp_path / "c.txt").write_text(corpus)
    vocab = sorted(set(corpus))
    spec = {"name": "lm", "inputs": {"ids": {"shape": [12], "dtype": "int64"}},
            "layers": [{"type": "embedding", "vocab_size": len(vocab), "dim": 4},
                       {"type": "gru", "units": 8, "return_sequences": True},
                       {"type": "dense", "units": len(vocab)}],
            "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
            "train": {"epochs": 1, "batch_size": 16},
            "data": {"train": "c.txt", "seq_len": 12, "stride": 6, "split": 0.1}}
    (tmp_path / "lm.json").write_text(json.dumps(spec))
    train(tmp_path / "lm.json", output=tmp_path / "lm.onnx", run_dir=tmp_path / "run", log=lambda *a, **k: None)

    for spec_file in ROOT.glob("specs/*.json"):
        r = _run("check", str(spec_file))
        assert r.returncode == 0, (spec_file.name, r.stderr)
    r = _run("compile", str(ROOT / "specs" / "digits_cnn.json"), "-o", str(tmp_path / "init.onnx"))
    assert r.returncode == 0, r.stderr
    r = _run("inspect", str(tmp_path / "init.onnx"))
    assert r.returncode == 0 and "Conv" in r.stdout, r.stderr
    r = _run("export", str(tmp_path / "run"), "-o", str(tmp_path / "again.onnx"))
    assert r.returncode == 0 and (tmp_path / "again.onnx").exists(), r.stderr
    r = _run("sample", str(tmp_path / "lm.onnx"), "--prime", "RO", "--length", "20", "--seed", "1")
    assert r.returncode == 0 and r.stdout.startswith("RO"), r.stderr


def test_the_guard_itself_fails_a_command_that_needs_numba(tmp_path):
    """`verify` runs the Numba forward pass: with numba unimportable it must fail (the guard works)."""
    r = _run("compile", str(ROOT / "specs" / "xor.json"), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 0, r.stderr
    r = _run("verify", str(tmp_path / "x.onnx"))
    assert r.returncode != 0
