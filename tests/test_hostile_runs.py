"""Hostile run directories: damaged or crafted files give every verb (`history`, `export`, `train
--resume`) one `error: ...` line naming the file and what is wrong, exit 2, and leave run.json as it
was; `--resume` never silently restarts or rewrites spec.json."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nngraph.cli import main

SPEC = {
    "name": "tiny_runs",
    "inputs": {"pixels": {"shape": [64]}},
    "layers": [{"type": "dense", "units": 8, "activation": "relu"},
               {"type": "dense", "units": 10, "activation": "softmax"}],
    "loss": "cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.1},
    "train": {"epochs": 2, "batch_size": 64, "validation_split": 0.2},
    "data": "digits",
}


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("runs")
    (tmp / "spec.json").write_text(json.dumps(SPEC))
    r = invoke("train", tmp / "spec.json", "--run-dir", tmp / "run", "--progress", "none")
    assert r.exit_code == 0, r.output
    return tmp / "run"


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(base_run, d)
    return d


def _rewrite_checkpoint(path: Path, meta_change=None, arrays_change=None, drop_meta: bool = False) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta.json").tobytes())
    if meta_change:
        meta_change(meta)
    if arrays_change:
        arrays_change(arrays)
    if not drop_meta:
        arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _verbs(run: Path, tmp_path: Path) -> list[tuple[str, object]]:
    return [("history", invoke("history", run)),
            ("export", invoke("export", run, "-o", tmp_path / "m.onnx")),
            ("resume", invoke("train", "--resume", run, "--epochs", "3", "--progress", "none"))]


def _assert_all_verbs_refuse(run: Path, tmp_path: Path, file: str, words: str, verbs=("history", "export", "resume")):
    before = (run / "run.json").read_bytes()
    spec_before = (run / "spec.json").read_bytes()
    for verb, result in _verbs(run, tmp_path):
        if verb not in verbs:
            continue
        err = error_line(result)
        assert file in err and words in err, (verb, err)
        assert (run / "run.json").read_bytes() == before, verb  # run.json left consistent (untouched)
        assert (run / "spec.json").read_bytes() == spec_before, verb
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_metadata_missing_keys(run, tmp_path):
    _rewrite_checkpoint(run / "checkpoint.npz", lambda m: (m.pop("step"), m.pop("rng_state")))
    _assert_all_verbs_refuse(run, tmp_path, "checkpoint.npz", "missing step, rng_state")


@pytest.mark.parametrize("key", ["epoch", "batch", "step"])
def test_checkpoint_negative_counters(run, tmp_path, key):
    _rewrite_checkpoint(run / "checkpoint.npz", lambda m: m.__setitem__(key, -5))
    _assert_all_verbs_refuse(run, tmp_path, "checkpoint.npz", f"{key} must be an integer >= 0")


def test_checkpoint_parameters_of_the_wrong_size(run, tmp_path):
    _rewrite_checkpoint(run / "checkpoint.npz", arrays_change=lambda a: a.__setitem__("params", a["params"][:-16]))
    _assert_all_verbs_refuse(run, tmp_path, "checkpoint.npz", "'params' holds")


def test_checkpoint_layout_of_another_model(run, tmp_path):
    spec = json.loads((run / "spec.json").read_text())
    spec["layers"][0]["units"] = 9  # the spec no longer matches the checkpoint
    (run / "spec.json").write_text(json.dumps(spec))
    for verb in ("export", "resume"):
        err = error_line(dict(_verbs(run, tmp_path))[verb])
        assert "checkpoint.npz" in err and "does not match the run's spec.json" in err


def test_spec_json_not_utf8(run, tmp_path):
    (run / "spec.json").write_bytes(b'{"name": "\xff\xfe"}')
    _assert_all_verbs_refuse(run, tmp_path, "spec.json", "not UTF-8")


def test_spec_json_not_a_spec(run, tmp_path):
    (run / "spec.json").write_text('{"name": 3}')
    _assert_all_verbs_refuse(run, tmp_path, "spec.json", "not a valid spec", verbs=("export", "resume"))


def test_run_json_a_list(run, tmp_path):
    (run / "run.json").write_text("[1, 2, 3]\n")
    _assert_all_verbs_refuse(run, tmp_path, "run.json", "expected a JSON object, got list")


@pytest.mark.parametrize("junk", [[1, 2], [{"epoch": "one", "loss": 1.0}], [{"epoch": 1, "loss": "x"}],
                                  [{"epoch": 1, "loss": 0.5, "lr": [1]}], {"not": "a list"}])
def test_junk_history_rows(run, tmp_path, junk):
    doc = json.loads((run / "history.json").read_text())
    doc["epochs"] = junk
    (run / "history.json").write_text(json.dumps(doc))
    _assert_all_verbs_refuse(run, tmp_path, "history.json", "history", verbs=("history", "export", "resume"))


def test_junk_history_records_inside_the_checkpoint(run, tmp_path):
    _rewrite_checkpoint(run / "checkpoint.npz", lambda m: m["history"].__setitem__(0, {"epoch": 1, "loss": None}))
    _assert_all_verbs_refuse(run, tmp_path, "checkpoint.npz", "history row 1")


def test_best_npz_without_its_metadata(run, tmp_path):
    _rewrite_checkpoint(run / "best.npz", drop_meta=True)
    err = error_line(invoke("export", run, "-o", tmp_path / "m.onnx", "--best"))
    assert "best.npz" in err and "no params/meta.json" in err
    _rewrite_checkpoint(run / "checkpoint.npz")  # untouched latest checkpoint still exports
    assert invoke("export", run, "-o", tmp_path / "m.onnx").exit_code == 0


def test_best_npz_without_best_keys(run, tmp_path):
    _rewrite_checkpoint(run / "best.npz", lambda m: (m.pop("best"), m.pop("monitor")))
    err = error_line(invoke("export", run, "-o", tmp_path / "m.onnx", "--best"))
    assert "best.npz" in err and "not a best checkpoint" in err


def test_missing_checkpoint_does_not_restart_from_epoch_0(run, tmp_path):
    (run / "checkpoint.npz").unlink()
    before = (run / "run.json").read_bytes()
    err = error_line(invoke("train", "--resume", run, "--progress", "none"))
    assert "checkpoint.npz: missing" in err and "2 epochs recorded" in err
    assert (run / "run.json").read_bytes() == before and not (run / "checkpoint.npz").exists()


def test_resume_with_fewer_epochs_than_done_is_refused(run, tmp_path):
    spec_before, info_before = (run / "spec.json").read_bytes(), (run / "run.json").read_bytes()
    err = error_line(invoke("train", "--resume", run, "--epochs", "1", "--progress", "none"))
    assert "--epochs 1 is below the 2 epochs" in err
    assert (run / "spec.json").read_bytes() == spec_before and (run / "run.json").read_bytes() == info_before
    ok = invoke("train", "--resume", run, "--epochs", "2", "--progress", "none")  # equal: nothing to do
    assert ok.exit_code == 0, ok.output


def test_checkpoint_not_a_zip_or_with_a_lying_member(run, tmp_path):
    (run / "checkpoint.npz").write_bytes(b"garbage")
    _assert_all_verbs_refuse(run, tmp_path, "checkpoint.npz", "not a readable checkpoint")
