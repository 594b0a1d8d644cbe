"""Scale-out on Ray: sweeps (Ray Tune) and batch inference (Ray Data), on a local Ray with 2 CPUs.

The search plan and the override paths are tested without Ray; everything else runs real Ray:
a 4-trial sweep on digits (leaderboard, best link, export of the best trial), a sweep whose driver
is SIGKILLed mid-way and resumed (no finished trial reruns), ASHA stopping trials on a designed
case, a sweep through --address on a two-node cluster on this machine, and run --ray against a
plain run, bit for bit.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nngraph
from nngraph.errors import NNGraphError, SpecError
from nngraph.scale.space import parse_param, parse_params, plan_trials
from nngraph.workflow import apply_overrides

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_mlp.json"
CLI = [sys.executable, "-m", "nngraph.cli"]


# ------------------------------------------------------------------ the plan, without Ray

def test_spaces_parse_and_draw_reproducibly():
    ps = parse_params(["optimizer.lr=loguniform:1e-4:1e-1", "layers[0].units=choice:64,128,256",
                       "train.batch_size=randint:8:33", "optimizer.beta1=uniform:0.8:0.95"])
    a, b = plan_trials(ps, 50, seed=3), plan_trials(ps, 50, seed=3)
    assert a == b and a != plan_trials(ps, 50, seed=4)
    lrs = [t["optimizer.lr"] for t in a]
    assert all(1e-4 <= v < 1e-1 for v in lrs)
    # log-uniform: about as many draws below 10^-2.5 as above
    assert 15 <= sum(v < 10 ** -2.5 for v in lrs) <= 35
    assert {t["layers[0].units"] for t in a} == {64, 128, 256}
    assert all(isinstance(t["train.batch_size"], int) and 8 <= t["train.batch_size"] < 33 for t in a)
    assert all(0.8 <= t["optimizer.beta1"] < 0.95 for t in a)


def test_grid_is_crossed_and_repeated_per_draw():
    ps = parse_params(["optimizer.lr=grid:0.1,0.01", "layers[0].units=grid:32,64", "train.seed=randint:0:1000"])
    plan = plan_trials(ps, 3, seed=0)
    assert len(plan) == 12
    points = [(t["optimizer.lr"], t["layers[0].units"]) for t in plan[:4]]
    assert points == [(0.1, 32), (0.1, 64), (0.01, 32), (0.01, 64)]
    assert [(t["optimizer.lr"], t["layers[0].units"]) for t in plan[4:8]] == points


@pytest.mark.parametrize("item, message", [
    ("optimizer.lr", "expected PATH=SPACE"),
    ("optimizer.lr=normal:0:1", "unknown space 'normal'"),
    ("optimizer.lr=loguniform:0:1", "bounds must be positive"),
    ("optimizer.lr=uniform:1:1", "must be below"),
    ("optimizer.lr=uniform:1", "needs two bounds"),
    ("optimizer.lr=uniform:x:1", "'x' is not a number"),
    ("optimizer.lr=uniform:0:inf", "not finite"),
    ("train.epochs=randint:1.5:4", "must be integers"),
    ("layers[0].units=choice:", "needs values"),
    ("layers[0].units=choice:1,,2", "needs values"),
    ("model.width=choice:1,2", "only train.*, optimizer.*, loss, data and layers[i].*"),
    ("layers.units=choice:1,2", "needs the layer and the field"),
])
def test_bad_params_name_the_item(item, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("*", r"\*").replace(".", r"\.")):
        parse_param(item)


def test_a_path_given_twice_is_refused():
    with pytest.raises(SpecError, match="given twice"):
        parse_params(["optimizer.lr=grid:0.1,0.2", "optimizer.lr=uniform:0:1"])


def test_override_paths_reach_layers_by_index_and_name():
    spec = nngraph.load_spec(SPEC)
    out = apply_overrides(spec, {"layers[0].units": 32, "layers[-2].units": 16, "layers[probs].activation": "softmax",
                                 "optimizer.lr": 0.01})
    layers = out.to_dict()["layers"]
    assert [lay["units"] for lay in layers] == [32, 16, 10]
    with pytest.raises(SpecError, match=r"layers\[5\]\.units: the spec has 3 layers"):
        apply_overrides(spec, {"layers[5].units": 1})
    with pytest.raises(SpecError, match="no layer named 'hidden'.*named layers: probs"):
        apply_overrides(spec, {"layers[hidden].units": 1})
    with pytest.raises(SpecError, match=r"layers\[0\]\.units: .*positive|layers\[0\]\.units"):
        apply_overrides(spec, {"layers[0].units": -3})


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from nngraph.scale import RayMissing

    with pytest.raises(RayMissing, match=r"nngraph sweep needs Ray.*pip install 'nngraph\[ray\]'"):
        nngraph.sweep(SPEC, sweep_dir=tmp_path / "s", params=["optimizer.lr=grid:0.1"])
    from nngraph.scale.batch import run_on_ray

    with pytest.raises(RayMissing, match=r"run --ray needs Ray"):
        run_on_ray(tmp_path / "m.onnx", tmp_path / "x.npy")


# ------------------------------------------------------------------ sweeps on a local Ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the in-process tests: nngraph.sweep uses a Ray that is already up."""
    from nngraph.scale import init_ray

    started = init_ray(None, 2)
    yield
    if started:
        ray.shutdown()


def _history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())["epochs"]


def test_four_trial_sweep_on_digits(local_ray, tmp_path):
    d = tmp_path / "sweep"
    board = nngraph.sweep(SPEC, sweep_dir=d, params=["optimizer.lr=loguniform:1e-4:1e-1",
                                                     "layers[0].units=choice:16,32"],
                          trials=4, metric="val_accuracy", mode="max", overrides={"train.epochs": 3}, seed=7,
                          log=lambda s: None, stream=open(os.devnull, "w"))
    plan = json.loads((d / "sweep.json").read_text())["plan"]
    assert plan == plan_trials(parse_params(["optimizer.lr=loguniform:1e-4:1e-1", "layers[0].units=choice:16,32"]),
                               4, 7)
    assert len(board.rows) == 4 and all(r["status"] == "finished" for r in board.rows)
    # each trial is an ordinary run directory with its values applied and every epoch recorded
    for r in board.rows:
        run = d / r["run_dir"]
        spec = json.loads((run / "spec.json").read_text())
        values = r["params"]
        assert spec["optimizer"]["lr"] == values["optimizer.lr"]
        dense = [lay for lay in spec["layers"] if lay["type"] == "dense"]
        assert dense[0]["units"] == values["layers[0].units"]
        assert spec["train"]["validation_split"] == 0.2  # val_accuracy needs held-out data
        hist = _history(run)
        assert [h["epoch"] for h in hist] == [1, 2, 3]
        assert r["best_metric"] == max(h["val_accuracy"] for h in hist)
        assert r["epochs"] == 3
    # ranked best first; the files agree with the returned leaderboard
    values = [r["best_metric"] for r in board.rows]
    assert values == sorted(values, reverse=True)
    rows = list(csv.DictReader(open(d / "leaderboard.csv")))
    assert [row["trial"] for row in rows] == [r["trial"] for r in board.rows]
    assert [float(row["best_val_accuracy"]) for row in rows] == values
    doc = json.loads((d / "leaderboard.json").read_text())
    assert doc["best"] == board.rows[0]["run_dir"] and doc["metric"] == "val_accuracy"
    assert (d / "best").is_symlink() and (d / "best").resolve() == (d / board.rows[0]["run_dir"]).resolve()
    # the best trial exports like any run
    out = tmp_path / "best.onnx"
    r = subprocess.run(CLI + ["export", str(d / "best"), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert nngraph.verify(out).ok
    # a finished sweep resumed has nothing left to run
    again = nngraph.sweep(resume=d, log=lambda s: None, stream=open(os.devnull, "w"))
    assert [r["trial"] for r in again.rows] == [r["trial"] for r in board.rows]


def test_failed_trials_are_recorded_and_the_sweep_goes_on(local_ray, tmp_path):
    d = tmp_path / "sweep"
    board = nngraph.sweep(SPEC, sweep_dir=d, params=["layers[0].units=grid:8,0", "optimizer.lr=grid:0.01,1e30"],
                          overrides={"train.epochs": 2}, metric="loss", log=lambda s: None,
                          stream=open(os.devnull, "w"))
    by = {(r["params"]["layers[0].units"], r["params"]["optimizer.lr"]): r for r in board.rows}
    assert by[(8, 0.01)]["status"] == "finished"
    assert by[(0, 0.01)]["status"] == "error" and "units" in by[(0, 0.01)]["error"]
    assert by[(8, 1e30)]["status"] == "error" and "non-finite" in by[(8, 1e30)]["error"]
    assert board.rows[0]["params"] == {"layers[0].units": 8, "optimizer.lr": 0.01}
    assert (d / "best").resolve() == (d / board.rows[0]["run_dir"]).resolve()


def test_asha_stops_poor_trials_early(local_ray, tmp_path):
    # one trial at a time, good learning rates first: the later, hopeless trials (lr 1e-6) fall
    # below the rung of the earlier ones and are stopped at their first milestones
    d = tmp_path / "sweep"
    board = nngraph.sweep(SPEC, sweep_dir=d, params=["optimizer.lr=grid:0.01,0.005,0.000001,0.0000005"],
                          overrides={"train.epochs": 8}, metric="val_accuracy", scheduler="asha",
                          max_concurrent=1, log=lambda s: None, stream=open(os.devnull, "w"))
    by = {r["params"]["optimizer.lr"]: r for r in board.rows}
    assert by[0.01]["status"] == "finished" and by[0.01]["epochs"] == 8
    stopped = [r for r in board.rows if r["status"] == "stopped"]
    assert stopped and all(r["epochs"] < 8 for r in stopped)
    assert {0.000001, 0.0000005} <= {r["params"]["optimizer.lr"] for r in stopped}
    assert max(r["best_metric"] for r in stopped) < by[0.01]["best_metric"]


def test_cli_sweep_errors_are_one_line(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = [
        (["sweep", str(SPEC), "--sweep-dir", str(tmp_path / "full"), "--param", "optimizer.lr=grid:0.1"],
         "already holds files"),
        (["sweep", str(SPEC), "--sweep-dir", str(tmp_path / "a"), "--param", "optimizer.lr=wide:1:2"],
         "unknown space 'wide'"),
        (["sweep", str(SPEC), "--sweep-dir", str(tmp_path / "b")], "give at least one PATH=SPACE"),
        (["sweep", "--resume", str(tmp_path / "nothing")], "no such sweep directory"),
        (["sweep", "--resume", str(tmp_path / "full")], "not a sweep directory"),
        (["sweep", str(SPEC), "--sweep-dir", str(tmp_path / "c"), "--param", "optimizer.lr=grid:0.1",
          "--metric", "val_f1", "--set", "train.epochs=1", "--num-cpus", "1"], "'val_f1' is not a history column"),
        (["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"), "--workers", "2"],
         "--address and --workers go with --ray"),
    ]
    for args, message in cases:
        r = subprocess.run(CLI + args, capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _record(d: Path, name: str) -> dict:
    try:
        return json.loads((d / "trials" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def test_sigkilled_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    d = tmp_path / "sweep"
    args = CLI + ["sweep", str(SPEC), "--sweep-dir", str(d), "--param", "optimizer.lr=grid:0.01,0.005,0.002",
                  "--set", "train.epochs=150", "--max-concurrent", "1", "--num-cpus", "2", "--metric", "loss", "-q"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        # kill once trial 0 has finished and trial 1 has checkpointed a few epochs
        _wait(lambda: _record(d, "trial_000").get("status") == "finished"
              and (d / "trials" / "trial_001" / "history.json").exists()
              and len(_history(d / "trials" / "trial_001")) >= 3, 240, "trial 1 to be under way")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        time.sleep(2)  # Ray's raylet and workers follow their driver; its two agents linger
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # (they share the driver's process group)
    done = d / "trials" / "trial_000"
    before = {f.name: f.stat().st_mtime_ns for f in done.iterdir()}
    rec0 = _record(d, "trial_000")
    killed_at = len(_history(d / "trials" / "trial_001"))
    r = subprocess.run(CLI + ["sweep", "--resume", str(d), "--num-cpus", "2"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "of 3 trials already ran" in r.stderr
    # the finished trial was not touched; the interrupted one continued from its checkpoint
    assert {f.name: f.stat().st_mtime_ns for f in done.iterdir()} == before
    assert _record(d, "trial_000")["pid"] == rec0["pid"]
    for name in ("trial_000", "trial_001", "trial_002"):
        assert _record(d, name)["status"] == "finished"
        assert [h["epoch"] for h in _history(d / "trials" / name)] == list(range(1, 151))
    run1 = json.loads((d / "trials" / "trial_001" / "run.json").read_text())
    assert run1["status"] == "completed" and killed_at < 150
    board = json.loads((d / "leaderboard.json").read_text())
    assert all(t["status"] == "finished" for t in board["trials"])
    # bit-exact: the interrupted trial ends with the weights of the same run never interrupted
    spec = nngraph.spec.Spec.from_json((d / "trials" / "trial_001" / "spec.json").read_text())
    nngraph.train(spec, run_dir=tmp_path / "ref", progress="none", log=lambda s: None)
    a = np.load(tmp_path / "ref" / "checkpoint.npz")
    b = np.load(d / "trials" / "trial_001" / "checkpoint.npz")
    assert np.array_equal(a["params"], b["params"])


# ------------------------------------------------------------------ batch inference on Ray Data

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A dense, a convolutional and a recurrent model (seeded initial weights, no training)."""
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("digits_mlp", "digits_cnn", "waves_gru"):
        path = d / f"{name}.onnx"
        nngraph.compile(ROOT / "specs" / f"{name}.json", seed=1).export_onnx(path)
        out[name] = path
    return out


@pytest.mark.parametrize("name, shape", [("digits_mlp", (1000, 64)), ("digits_cnn", (300, 1, 8, 8)),
                                         ("waves_gru", (200, 50, 1))])
def test_run_on_ray_equals_a_plain_run_bit_for_bit(local_ray, models, tmp_path, name, shape):
    from nngraph.runtime import read_inputs, run_batches
    from nngraph.scale.batch import run_on_ray

    x = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 4
    np.save(tmp_path / "x.npy", x)
    rows = 64  # many tasks, a short last one
    plain = run_batches(models[name], read_inputs(tmp_path / "x.npy", mmap=True), rows)
    on_ray = run_on_ray(models[name], tmp_path / "x.npy", rows=rows)
    assert on_ray.dtype == plain.dtype and on_ray.shape == plain.shape == (shape[0],) + plain.shape[1:]
    assert np.array_equal(on_ray, plain)
    # and a plain run cut at other rows gives the same values (to float32 rounding)
    np.testing.assert_allclose(nngraph.run(models[name], x), plain, rtol=1e-5, atol=1e-6)


def test_run_on_ray_reads_npz_and_csv(local_ray, models, tmp_path):
    from nngraph.runtime import read_inputs, run_batches
    from nngraph.scale.batch import run_on_ray

    x = np.random.default_rng(1).integers(0, 17, size=(150, 64)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header=",".join(f"p{i}" for i in range(64)), comments="",
               fmt="%g")
    for f in ("x.npz", "x.csv"):
        plain = run_batches(models["digits_mlp"], read_inputs(tmp_path / f), 40)
        assert np.array_equal(run_on_ray(models["digits_mlp"], tmp_path / f, rows=40), plain), f


def test_run_on_ray_errors_are_one_line(local_ray, models, tmp_path):
    from nngraph.errors import DataError
    from nngraph.scale.batch import run_on_ray

    np.save(tmp_path / "bad.npy", np.zeros((5, 63), np.float32))
    with pytest.raises(DataError, match=r"each sample has shape \(63,\), the model expects \(64,\)"):
        run_on_ray(models["digits_mlp"], tmp_path / "bad.npy")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    np.save(tmp_path / "x.npy", np.zeros((5, 64), np.float32))
    with pytest.raises(NNGraphError):
        run_on_ray(tmp_path / "junk.onnx", tmp_path / "x.npy")


def test_cli_run_ray_equals_run(models, tmp_path):
    """Through the command line, with more samples than one task (4,096) holds."""
    x = np.random.default_rng(2).normal(size=(9000, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for extra, out in (([], "plain.npy"), (["--ray", "--workers", "2"], "ray.npy")):
        r = subprocess.run(CLI + ["run", str(models["digits_mlp"]), "--input", str(tmp_path / "x.npy"), "-o",
                                  str(tmp_path / out), *extra], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines()[-1] == f"wrote {tmp_path / out} (9000 rows)"
    assert np.array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "ray.npy"))


# ------------------------------------------------------------------ a cluster by address

def test_sweep_and_run_on_a_two_node_cluster_by_address(models, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        d = tmp_path / "sweep"
        r = subprocess.run(CLI + ["sweep", str(SPEC), "--sweep-dir", str(d), "--param", "optimizer.lr=grid:0.01,0.005",
                                  "--set", "train.epochs=3", "--metric", "loss", "--address", cluster.address, "-q"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        recs = [_record(d, f"trial_00{i}") for i in range(2)]
        assert all(rec["status"] == "finished" for rec in recs)
        assert len({rec["node"] for rec in recs}) == 2  # one CPU per node: the trials ran on both
        assert "best: " in r.stdout and (d / "best").is_symlink()
        np.save(tmp_path / "x.npy", np.random.default_rng(3).normal(size=(5000, 64)).astype(np.float32))
        outs = []
        for extra in ([], ["--ray", "--address", cluster.address]):
            out = tmp_path / f"y{len(outs)}.npy"
            r = subprocess.run(CLI + ["run", str(models["digits_mlp"]), "--input", str(tmp_path / "x.npy"), "-o",
                                      str(out), *extra], capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
            outs.append(np.load(out))
        assert np.array_equal(*outs)
    finally:
        cluster.shutdown()


def test_live_table_redraws_in_place_on_a_terminal_and_prints_lines_otherwise():
    import io

    from nngraph.scale.sweep import LiveTable

    plan = [{"optimizer.lr": 0.01}, {"optimizer.lr": 0.001}]
    out = io.StringIO()
    t = LiveTable(["trial_000", "trial_001"], plan, ["optimizer.lr"], "val_accuracy", [5, 5], out, tty=True)
    t.update(0, status="running")
    t.update(0, epoch=3, value=0.5)
    t.update(1, status="running")
    text = out.getvalue()
    assert text.startswith("trial      optimizer.lr  epoch  val_accuracy  status\n")
    assert "\x1b[2F\x1b[J" in text  # the second drawing replaced the first (header + one row)
    last = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert last[1].split() == ["trial_000", "0.01", "3/5", "0.5", "running"]
    assert last[2].split() == ["trial_001", "0.001", "0/5", "-", "running"]
    out = io.StringIO()
    t = LiveTable(["trial_000"], plan[:1], ["optimizer.lr"], "loss", [5], out, tty=False)
    t.update(0, status="running")
    t.update(0, epoch=1, value=0.3)  # no status change: no line
    t.update(0, epoch=5, value=0.25, status="finished")
    assert out.getvalue().splitlines() == [
        "trial_000  optimizer.lr=0.01  epoch=0/5  loss=-  status=running",
        "trial_000  optimizer.lr=0.01  epoch=5/5  loss=0.25  status=finished"]
