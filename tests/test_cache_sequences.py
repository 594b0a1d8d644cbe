"""No process of ours dies by a signal we did not send, whatever the history of the kernel cache:
fresh processes over ONE fresh NUMBA_CACHE_DIR train every shipped spec for an epoch (on generated
data of its input shape), then one network per op family, and the whole sequence runs twice — the
first pass compiles and caches, the second loads every kernel from the cache, each process after a
history of other processes' entries (the pattern that segfaulted: see nngraph/jit_runtime.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAIN = r"""
import json, sys
import numpy as np
from nngraph.model import Model
from nngraph.runtime import random_inputs
from nngraph.spec import parse_spec
d = json.loads(sys.argv[1])
d.pop("data", None)
d["train"] = {**d.get("train", {}), "epochs": 1, "batch_size": 8, "validation_split": 0.25}
d["train"].pop("early_stopping", None)
model = Model.compile(parse_spec(d))
rng = np.random.default_rng(0)
feeds = random_inputs(model, 16, rng)
out = model.graph.values[model.graph.output].shape
if d.get("loss") == "cross_entropy":
    y = rng.integers(0, out[-1], size=(16,) + out[:-1])
elif d.get("loss") == "binary_cross_entropy":
    y = (rng.random((16,) + out) > 0.5).astype(np.float32)
else:
    y = rng.standard_normal((16,) + out).astype(np.float32)
model.fit(feeds, y)
model.predict(feeds)
"""

FAMILIES = [
    {"name": "seq1d", "inputs": {"x": {"shape": [4, 12]}}, "loss": "cross_entropy",
     "layers": [{"type": "conv1d", "filters": 8, "kernel": 3, "stride": 2, "padding": "same", "activation": "gelu"},
                {"type": "batchnorm"}, {"type": "maxpool1d", "size": 2}, {"type": "avgpool1d", "size": 1},
                {"type": "dropout", "rate": 0.2}, {"type": "global_avgpool1d"},
                {"type": "dense", "units": 6, "activation": "silu"}, {"type": "layernorm"},
                {"type": "dense", "units": 3, "activation": "softmax"}]},
    {"name": "image", "inputs": {"x": {"shape": [3, 12, 12]}}, "loss": "binary_cross_entropy",
     "layers": [{"type": "normalize", "mode": "scale", "factor": 0.5},
                {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2, "padding": "same", "name": "c1"},
                {"type": "batchnorm"}, {"type": "leaky_relu", "name": "a"},
                {"type": "conv2d", "filters": 8, "kernel": 1, "activation": "elu", "name": "c2"},
                {"type": "add", "inputs": ["a", "c2"]}, {"type": "relu"}, {"type": "avgpool2d", "size": 2},
                {"type": "global_maxpool2d"}, {"type": "dense", "units": 2, "activation": "sigmoid"}]},
    {"name": "tokens", "inputs": {"ids": {"shape": [7], "dtype": "int64"}}, "loss": "cross_entropy",
     "layers": [{"type": "embedding", "vocab_size": 11, "dim": 6},
                {"type": "lstm", "units": 8, "return_sequences": True, "bidirectional": True},
                {"type": "rnn", "units": 5, "return_sequences": True}, {"type": "dropout", "rate": 0.1},
                {"type": "gru", "units": 4}, {"type": "softplus"}, {"type": "dense", "units": 11}]},
]


def test_fresh_processes_over_one_cache_never_die_by_a_signal(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    jobs = [(p.name, p.read_text()) for p in sorted(ROOT.glob("specs/*.json"))]
    jobs += [(f["name"], json.dumps(f)) for f in FAMILIES]
    for round_ in (1, 2):
        for name, text in jobs:
            r = subprocess.run([sys.executable, "-c", TRAIN, text], capture_output=True, text=True, env=env,
                               timeout=600)
            assert r.returncode == 0, (f"round {round_}, {name}: exit {r.returncode}"
                                       + (f" (killed by signal {-r.returncode})" if r.returncode < 0 else "")
                                       + f"\n{r.stderr[-3000:]}")
