"""A process whose kernels come from Numba's on-disk cache trains the same bits as the process
that compiled them (what ``--resume`` promises: a resumed run, which loads its kernels from the
cache, continues an uninterrupted run, which compiled them, bit for bit).

The recurrent kernels used to break it: with fast-math flags, a step kernel (gru_bstep_r) called
from its time loop (gru_backward) existed as two differently optimised copies, its own library and
the one inlined into the caller's module, and the process that compiled them ran the first while a
process loading gru_backward from the cache ran the second (rnn_math.JIT). Conv nets (the sigmoid
and tanh epilogues, batch norm's passes) are checked the same way."""
from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import hashlib, json
import numpy as np
from nngraph.model import Model
from nngraph.ops import rnn_steps
from nngraph.spec import parse_spec
nets = {  # each kind once with its vector cells (tanh) and once with its scalar ones; lbr both ways
    "gru": [{"type": "gru", "units": 64, "return_sequences": True},
            {"type": "gru", "units": 32, "linear_before_reset": True, "bidirectional": True, "activation": "relu"}],
    "lstm": [{"type": "lstm", "units": 64, "return_sequences": True},
             {"type": "lstm", "units": 32, "bidirectional": True, "activation": "sigmoid"}],
    "rnn": [{"type": "rnn", "units": 64, "return_sequences": True}, {"type": "rnn", "units": 32, "activation": "relu"}],
}
shapes = {name: [12, 5] for name in nets}
# conv nets: sigmoid/tanh epilogues (stride 1 and 2), batch norm's vector passes with a fused relu,
# a residual add, dropout, pooling
nets["conv"] = [{"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "activation": "tanh"},
                {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2, "activation": "sigmoid"},
                {"type": "flatten"}]
nets["resnet"] = [{"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "use_bias": False, "name": "c1"},
                  {"type": "batchnorm"}, {"type": "relu", "name": "r1"},
                  {"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "use_bias": False},
                  {"type": "batchnorm", "name": "bn2"}, {"type": "add", "inputs": ["r1", "bn2"]},
                  {"type": "conv2d", "filters": 16, "kernel": 3, "stride": 2, "padding": "same"},
                  {"type": "batchnorm"}, {"type": "dropout", "rate": 0.3}, {"type": "global_avgpool2d"}]
shapes.update(conv=[2, 10, 10], resnet=[2, 10, 10])
out = {}
for name, layers in nets.items():
    model = Model.compile(parse_spec({"name": name, "inputs": {"x": {"shape": shapes[name]}},
                                      "layers": layers + [{"type": "dense", "units": 4, "activation": "softmax"}],
                                      "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01}}), seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, *shapes[name])).astype(np.float32)
    y = rng.integers(0, 4, 48)
    trainer = model.trainer()
    for step in range(4):
        trainer.step(model._feeds(x), model.targets(y), rng.permutation(48)[:32])
    out[name] = hashlib.sha256(model.params.flat.tobytes() + model.params.state_flat.tobytes()).hexdigest()
drivers = [getattr(rnn_steps, f"{k}_{d}") for k in ("gru", "lstm", "rnn") for d in ("forward", "backward")]
out["compiled"] = sum(sum(f.stats.cache_misses.values()) for f in drivers)
out["loaded"] = sum(sum(f.stats.cache_hits.values()) for f in drivers)
print(json.dumps(out))
"""


def test_cache_loaded_kernels_train_the_bits_of_freshly_compiled_ones(tmp_path):
    # one thread: the serial time loops (tests/test_thread_bits.py covers the thread split)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    runs = []
    for _ in range(2):  # an empty cache, then the cache the first process filled
        r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    fresh, cached = runs
    assert fresh.pop("compiled") == 6 and fresh.pop("loaded") == 0  # every time loop compiled...
    assert cached.pop("compiled") == 0 and cached.pop("loaded") == 6  # ...then every one loaded
    assert cached == fresh
