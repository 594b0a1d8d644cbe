"""Run directories under interruption: SIGKILL at random moments always leaves a loadable directory
(and a resume from it is exact), SIGINT/SIGTERM save at a step boundary and resume bit for bit,
early stopping ends on the best weights, divergence names the step and the layer."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nngraph.errors import TrainingDiverged, TrainingInterrupted
from nngraph.model import Model
from nngraph.spec import Spec
from nngraph.train.callbacks import Callback, LambdaCallback
from nngraph.train.checkpoint import load_checkpoint
from nngraph.train.progress import fmt
from nngraph.train.rundir import open_run
from nngraph.workflow import run_model, train

SPEC = {
    "name": "tiny",
    "inputs": {"pixels": {"shape": [64]}},
    "layers": [{"type": "dense", "units": 24, "activation": "relu", "name": "hidden"},
               {"type": "dense", "units": 10, "activation": "softmax", "name": "probs"}],
    "loss": "cross_entropy",
    "optimizer": {"type": "adamw", "lr": 0.01, "weight_decay": 0.05},
    "train": {"epochs": 12, "batch_size": 16, "seed": 5, "validation_split": 0.25, "clip_norm": 5.0,
              "metrics": ["top_k_accuracy"],
              "schedule": {"type": "reduce_on_plateau", "patience": 0, "factor": 0.7},
              "early_stopping": {"patience": 4}},
    "data": "digits",
}


def write_spec(tmp: Path, **train: object) -> Path:
    d = json.loads(json.dumps(SPEC))
    d["train"].update(train)
    p = tmp / "spec.json"
    p.write_text(json.dumps(d))
    return p


def quiet(_: str) -> None:
    pass


def final_params(run_dir: Path) -> np.ndarray:
    return load_checkpoint(run_dir / "checkpoint.npz")[0]["params"]


def history_without_time(run_dir: Path) -> list[dict]:
    drop = ("seconds", "samples_per_s", "elapsed")
    return [{k: v for k, v in r.items() if k not in drop} for r in open_run(run_dir).rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the spec."""
    tmp = tmp_path_factory.mktemp("ref")
    train(write_spec(tmp), run_dir=tmp / "run", log=quiet)
    return tmp / "run"


class StopAt(Callback):
    """Acts like a SIGINT arriving during the n-th progress report of an epoch."""

    wants_progress = True

    def __init__(self, epoch: int, nth: int):
        self.epoch, self.nth, self.calls = epoch, nth, 0

    def on_progress(self, trainer, epoch, batch, batches, loss, metric) -> None:
        if epoch == self.epoch:
            self.calls += 1
            if self.calls == self.nth:
                trainer.stop_signal = "SIGINT"


@pytest.mark.parametrize("epoch,nth", [(0, 1), (3, 2), (6, 1)])
def test_interrupt_mid_epoch_then_resume_is_bit_identical(tmp_path: Path, reference: Path, epoch: int,
                                                          nth: int) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as e:
        train(write_spec(tmp_path), run_dir=run, log=quiet, callbacks=[StopAt(epoch, nth)])
    assert e.value.exit_code == 130
    assert f"nngraph train --resume {run}" in str(e.value)
    meta = load_checkpoint(run / "checkpoint.npz")[1]
    assert (meta["epoch"], meta["batch"]) == (epoch, nth)  # saved at the step boundary, mid-epoch
    assert open_run(run).info["status"] == "interrupted"
    train(resume=run, log=quiet)
    assert np.array_equal(final_params(run), final_params(reference))
    assert history_without_time(run) == history_without_time(reference)
    assert open_run(run).info["status"] == "completed"


def test_resume_with_more_epochs_equals_longer_run(tmp_path: Path) -> None:
    long_run = tmp_path / "long"
    train(write_spec(tmp_path, early_stopping=None, epochs=6), run_dir=long_run, log=quiet)
    short = tmp_path / "short"
    train(write_spec(tmp_path, early_stopping=None, epochs=6), run_dir=short, log=quiet, epochs=3)
    train(resume=short, epochs=6, log=quiet)
    assert np.array_equal(final_params(short), final_params(long_run))
    assert json.loads((short / "spec.json").read_text())["train"]["epochs"] == 6


def test_early_stopping_restores_best_weights(tmp_path: Path) -> None:
    snapshots: dict[int, np.ndarray] = {}
    keep = LambdaCallback(on_epoch_end=lambda tr, rec: snapshots.__setitem__(rec.epoch, tr.program.params.flat.copy()))
    spec = write_spec(tmp_path, epochs=80, schedule=None, validation_split=0.6,
                      early_stopping={"patience": 3, "monitor": "val_loss"})
    lines: list[str] = []
    result = train(spec, run_dir=tmp_path / "run", log=lines.append, callbacks=[keep])
    val = [r.val_loss for r in result.history.records]
    best = int(np.argmin(val)) + 1
    assert len(val) == best + 3 < 80  # stopped `patience` epochs after the best one
    said = [l for l in lines if l.startswith("early stopping")]  # when, why, which weights
    assert said == [f"early stopping: stopped after epoch {best + 3}: val_loss did not improve for 3 epochs "
                    f"(best val_loss {fmt(val[best - 1])} at epoch {best}); restored the weights of epoch {best}"]
    final = result.model.params.flat
    assert np.array_equal(final, snapshots[best])
    assert not np.array_equal(final, snapshots[len(val)])
    best_ckpt = load_checkpoint(tmp_path / "run" / "best.npz")
    assert best_ckpt[1]["best_epoch"] == best and np.array_equal(best_ckpt[0]["params"], final)
    assert np.array_equal(final_params(tmp_path / "run"), final)  # the final checkpoint too
    model, meta = run_model(tmp_path / "run", best=True)
    assert meta["epoch"] == best and np.array_equal(model.params.flat, final)


def test_divergence_names_step_and_layer_and_keeps_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 64)).astype(np.float32)
    x[9] = np.float32(3e38)  # finite input, but the first layer's output overflows
    y = rng.integers(0, 10, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = write_spec(tmp_path, shuffle=False, batch_size=4, validation_split=0.0, early_stopping=None,
                      schedule=None, metrics=None)
    before = {}
    cb = LambdaCallback(on_diverged=lambda tr, err: before.__setitem__("p", tr.program.params.flat.copy()))
    with pytest.raises(TrainingDiverged) as e:
        train(spec, data=str(tmp_path / "d.npz"), run_dir=tmp_path / "run", log=quiet, callbacks=[cb])
    msg = str(e.value)
    assert "epoch 1, batch 3/10" in msg and "step 3" in msg and "layer 'hidden'" in msg, msg
    assert "last good checkpoint is kept" in msg
    assert np.all(np.isfinite(before["p"]))
    run = open_run(tmp_path / "run")
    assert run.info["status"] == "diverged"
    assert np.all(np.isfinite(run.checkpoint[0]["params"]))


def test_gradient_blame_is_the_first_layer_in_backpropagation() -> None:
    model = Model.compile(Spec.from_dict(SPEC))
    tr = model.trainer()
    model.params.grads["hidden.W" if "hidden.W" in model.params.grads else next(iter(model.params.grads))][0] = np.nan
    names = list(model.params.grads)
    model.params.grads[names[-1]].flat[0] = np.inf
    assert "'probs'" in tr._blame_gradient() and "Inf" in tr._blame_gradient()


# ---- real signals, real processes ------------------------------------------------------------------

def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nngraph.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, lines: int = 0, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and (lines == 0 or len(path.read_text().splitlines()) > lines):
            return
        time.sleep(0.01)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_then_resume_equals_uninterrupted(tmp_path: Path, reference: Path, sig: int, code: int) -> None:
    spec = write_spec(tmp_path)
    run = tmp_path / "run"
    proc = start(["train", str(spec), "--run-dir", str(run)], tmp_path)
    wait_for(run / "history.csv", proc, lines=2)  # mid-training: two epochs done
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived (machine very fast)")
    assert proc.returncode == code, err
    assert f"nngraph train --resume {run}" in err
    done = subprocess.run([sys.executable, "-m", "nngraph.cli", "train", "--resume", str(run), "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(final_params(run), final_params(reference))
    assert history_without_time(run) == history_without_time(reference)


def test_sigkill_at_random_moments_leaves_a_loadable_run(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, epochs=30, early_stopping=None)
    full = tmp_path / "full"
    proc = start(["train", str(spec), "--run-dir", str(full), "-q"], tmp_path)
    wait_for(full / "run.json", proc)
    t0 = time.monotonic()
    assert proc.wait(timeout=120) == 0
    duration = time.monotonic() - t0  # from the directory's appearance to the end of the run
    outcomes = []
    for seed in range(5):
        run = tmp_path / f"run{seed}"
        delay = np.random.default_rng(seed).uniform(0.0, 1.0) * duration
        proc = start(["train", str(spec), "--run-dir", str(run), "-q"], tmp_path)
        wait_for(run / "run.json", proc)
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=30)
        r = open_run(run)  # always loads (the directory appears complete or not at all)
        assert r.spec_json and r.info["data_sha256"]
        if r.checkpoint is not None:
            run_model(run)  # and the latest checkpoint builds a model
        outcomes.append((r.checkpoint[1]["epoch"], r.checkpoint[1]["batch"]) if r.checkpoint else "no ckpt")
        train(resume=run, log=quiet)  # and resuming from whatever was saved is exact
        assert np.array_equal(final_params(run), final_params(full)), (seed, outcomes)
        assert history_without_time(run) == history_without_time(full)
    print("SIGKILL outcomes (epoch, batch) of the surviving checkpoint:", outcomes)
    assert len({o for o in outcomes if isinstance(o, tuple)}) >= 2, outcomes


# ---- dropout and batch norm: masks keyed by (seed, step, layer, sample), running statistics in the
# checkpoint, so an interrupted run resumes to the uninterrupted run's bits -------------------------

def write_bn_dropout_spec(tmp: Path) -> Path:
    d = json.loads(json.dumps(SPEC))
    d["layers"] = [{"type": "dense", "units": 24, "use_bias": False, "name": "hidden"},
                   {"type": "batchnorm", "name": "bn"}, {"type": "relu"}, {"type": "dropout", "rate": 0.3},
                   {"type": "dense", "units": 10, "activation": "softmax", "name": "probs"}]
    d["train"].update(epochs=12, early_stopping=None)
    p = tmp / "spec.json"
    p.write_text(json.dumps(d))
    return p


def final_state(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    arrays = load_checkpoint(run_dir / "checkpoint.npz")[0]
    return arrays["params"], arrays["state"]


def test_sigint_mid_epoch_then_resume_is_bit_identical_with_dropout_and_batchnorm(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    train(write_bn_dropout_spec(ref), run_dir=ref / "run", log=quiet)
    ref_params, ref_state = final_state(ref / "run")
    assert np.any(ref_state != 0)  # the running statistics moved

    spec = write_bn_dropout_spec(tmp_path)
    run = tmp_path / "run"
    proc = start(["train", str(spec), "--run-dir", str(run)], tmp_path)
    wait_for(run / "history.csv", proc, lines=2)  # mid-training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived (machine very fast)")
    assert proc.returncode == 130, err
    done = subprocess.run([sys.executable, "-m", "nngraph.cli", "train", "--resume", str(run), "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    params, state = final_state(run)
    assert np.array_equal(params, ref_params) and np.array_equal(state, ref_state)
    assert history_without_time(run) == history_without_time(ref / "run")

    # in-process, at the first progress report of the third epoch (a mid-epoch step boundary)
    again = tmp_path / "again"
    with pytest.raises(TrainingInterrupted):
        train(spec, run_dir=again, log=quiet, callbacks=[StopAt(2, 1)])
    meta = load_checkpoint(again / "checkpoint.npz")[1]
    assert (meta["epoch"], meta["batch"]) == (2, 1)
    train(resume=again, log=quiet)
    params, state = final_state(again)
    assert np.array_equal(params, ref_params) and np.array_equal(state, ref_state)
