"""The run-directory commands through click's runner: train --run-dir/--resume/--set, history
(table, csv, json, --plot), export (--best), evaluate; their error paths; progress output."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from nngraph.cli import main
from nngraph.train.progress import ProgressBar
from nngraph.workflow import train

SPEC = {
    "name": "tiny_cli",
    "inputs": {"pixels": {"shape": [64]}},
    "layers": [{"type": "dense", "units": 16, "activation": "relu"},
               {"type": "dense", "units": 10, "activation": "softmax"}],
    "loss": "cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 4, "batch_size": 32, "validation_split": 0.2,
              "schedule": {"type": "cosine", "warmup_epochs": 1}},
    "data": "digits",
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    spec = tmp / "tiny.json"
    spec.write_text(json.dumps(SPEC))
    r = invoke("train", str(spec), "--run-dir", str(tmp / "run"), "--set", "train.metrics=[\"top_k_accuracy\"]",
               "--progress", "lines")
    assert r.exit_code == 0, r.output
    assert "epoch 4/4" in r.stderr and "val_top_k_accuracy" in r.stderr
    return tmp / "run"


def test_run_directory_contents(run_dir: Path) -> None:
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["best.npz", "checkpoint.npz", "history.csv", "history.json", "run.json", "spec.json"]
    csv_lines = (run_dir / "history.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:5] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert csv_lines[0].endswith("lr,seconds,samples_per_s,elapsed") and len(csv_lines) == 5
    lrs = [float(l.split(",")[-4]) for l in csv_lines[1:]]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1) and lrs[3] < lrs[2] < 0.1
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["data_meta"]["source"] == "builtin:digits"
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["train"]["metrics"] == ["top_k_accuracy"]  # the spec as used, override applied


def test_history_formats(run_dir: Path) -> None:
    r = invoke("history", str(run_dir))
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert "completed" in lines[0] and lines[1].startswith("monitor: val_loss")
    assert len(lines) == 3 + 4 and sum(l.startswith("*") for l in lines) == 1
    r = invoke("history", str(run_dir), "--format", "json")
    rows = json.loads(r.output)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4] and "val_top_k_accuracy" in rows[0]
    r = invoke("history", str(run_dir), "--format", "csv")
    assert r.output == (run_dir / "history.csv").read_text()


def test_history_plot(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = invoke("history", str(run_dir), "--plot", str(tmp_path / "c.png"))
    assert r.exit_code == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_plot_without_matplotlib(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    line = error_line(invoke("history", str(run_dir), "--plot", str(tmp_path / "c.png")))
    assert "matplotlib" in line and "nngraph[plot]" in line
    assert not (tmp_path / "c.png").exists()


def test_export_best_and_latest(run_dir: Path, tmp_path: Path) -> None:
    hist = json.loads((run_dir / "history.json").read_text())
    r = invoke("export", str(run_dir), "-o", str(tmp_path / "best.onnx"), "--best")
    assert r.exit_code == 0 and f"epoch {hist['best_epoch']}" in r.output
    r = invoke("export", str(run_dir), "-o", str(tmp_path / "last.onnx"))
    assert r.exit_code == 0 and "epoch 4" in r.output
    assert invoke("verify", str(tmp_path / "best.onnx")).exit_code == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "best.onnx")).metadata_props}
    assert json.loads(meta["nngraph.checkpoint"])["epoch"] == hist["best_epoch"]


def test_evaluate_runs_onnxruntime(run_dir: Path, tmp_path: Path) -> None:
    invoke("export", str(run_dir), "-o", str(tmp_path / "m.onnx"))
    r = invoke("evaluate", str(tmp_path / "m.onnx"), "--data", "digits", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["split"] == "test" and res["samples"] == 450
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 450
    assert res["accuracy"] == pytest.approx(np.trace(cm) / 450)
    assert res["accuracy"] <= res["top_5_accuracy"] <= 1
    info = json.loads((run_dir / "run.json").read_text())
    assert res["loss"] == pytest.approx(info["test_metrics"]["loss"], abs=1e-5)
    r = invoke("evaluate", str(tmp_path / "m.onnx"), "--data", "digits")
    assert "confusion matrix" in r.output and "top_5_accuracy" in r.output


def test_error_paths(run_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC))
    assert "already exists" in error_line(invoke("train", str(spec), "--run-dir", str(run_dir)))
    assert "give only the run directory" in error_line(invoke("train", str(spec), "--resume", str(run_dir)))
    assert "give a SPEC" in error_line(invoke("train"))
    line = error_line(invoke("train", str(spec), "--set", "train.schedule={\"type\": \"cos\"}"))
    assert line.startswith('error: train.schedule.type: expected one of "constant"')
    line = error_line(invoke("train", str(spec), "--set", "train.early_stopping.patince=3"))
    assert line.startswith("error: train.early_stopping.patince: unknown key")
    line = error_line(invoke("train", str(spec), "--set", "train.monitor=val_acc"))
    assert line.startswith('error: train.monitor: expected one of "loss", "accuracy", "val_loss"')
    assert "no such run directory" in error_line(invoke("history", str(tmp_path / "nope")))
    assert "no such run directory" in error_line(invoke("train", "--resume", str(tmp_path / "nope")))
    assert not (tmp_path / "nope").exists()


def test_resume_of_finished_run_is_a_no_op(run_dir: Path) -> None:
    before = (run_dir / "checkpoint.npz").read_bytes()
    r = invoke("train", "--resume", str(run_dir), "-q")
    assert r.exit_code == 0
    from nngraph.train.checkpoint import load_checkpoint

    assert np.array_equal(load_checkpoint(run_dir / "checkpoint.npz")[0]["params"],
                          np.load(io.BytesIO(before))["params"])


def test_progress_bar_on_a_terminal_stream(tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC))
    out = io.StringIO()
    from nngraph.spec import load_spec

    s = load_spec(spec)
    bar = ProgressBar(2, 1078, 32, stream=out)
    train(s, epochs=2, progress="none", log=lambda _: None, callbacks=[bar])
    text = out.getvalue()
    assert text.count("\n") == 2  # one finished line per epoch; redraws use \r
    assert "\r" in text and "[" in text and "ETA" in text and "samples/s" in text
    assert text.splitlines()[-1].lstrip("\r").split()[0:2] == ["epoch", "2/2"]


def test_log_lines_without_a_terminal(tmp_path: Path) -> None:
    from nngraph.spec import load_spec
    from nngraph.train.progress import LogLines

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC))
    lines: list[str] = []
    train(load_spec(spec), epochs=2, progress="none", log=lambda _: None,
          callbacks=[LogLines(2, lines.append, every_s=0.0)])
    assert any(l.startswith("epoch 1/2  batch ") for l in lines)  # alive-lines inside an epoch
    assert [l.split("  ")[0] for l in lines if "samples/s" in l] == ["epoch 1/2", "epoch 2/2"]
    assert not any("\r" in l for l in lines)
