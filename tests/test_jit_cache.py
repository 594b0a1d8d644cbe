"""The on-disk JIT cache works: a second process training the same network compiles nothing, it
loads every kernel it uses (threaded ones included) from the cache."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from numba.core.registry import CPUDispatcher
import nngraph
from nngraph.workflow import train
train(sys.argv[1], epochs=1, log=lambda s: None)
stats = {}
for name, mod in list(sys.modules.items()):
    if not name.startswith("nngraph."):
        continue
    for attr, obj in vars(mod).items():
        if isinstance(obj, CPUDispatcher) and sum(obj.stats.cache_hits.values()) + sum(obj.stats.cache_misses.values()):
            stats[f"{name}.{attr}"] = [sum(obj.stats.cache_hits.values()), sum(obj.stats.cache_misses.values())]
print(json.dumps(stats))
"""


@pytest.mark.parametrize("spec, kernels", [
    ("digits_mlp.json", ("nngraph.ops.activations_kernels.bias_act_serial", "nngraph.ops.loss_kernels.ce_probs_ids",
                         "nngraph.train.optimizers.adam_serial")),
    # a parallel=True kernel (the evaluation batches are large enough to thread)
    ("digits_cnn.json", ("nngraph.ops.conv_shift.forward_threaded", "nngraph.ops.pool_kernels.maxpool_backward")),
])
def test_second_process_loads_every_kernel_from_the_cache(spec, kernels, tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "specs" / spec)], capture_output=True,
                           text=True, env=env)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first and all(misses > 0 for _, misses in first.values())  # a cold cache compiles
    # Helpers inlined into their callers compile in the first process only; everything the second
    # process calls directly comes from the cache.
    assert second and set(second) <= set(first)
    assert all(misses == 0 and hits > 0 for hits, misses in second.values()), second
    for kernel in kernels:
        assert kernel in second


# A GRU trained in one process caches matmul_into; a stride-2 conv run in the next compiles its
# forward kernel against that cached callee; the third process loads the conv kernel from the
# cache. With numba 0.68 that kernel lost its note that it needs the parallel runtime (the callee's
# library came back from the cache without it) and its calls into the threading layer jumped to
# address 0: SIGSEGV in the third process. nngraph.jit_runtime starts the runtime first.
GRU_THEN_CONV = [
    {"name": "g", "inputs": {"x": {"shape": [6, 3]}}, "layers": [{"type": "gru", "units": 8},
                                                             {"type": "dense", "units": 2}], "loss": "mse"},
    {"name": "s2", "inputs": {"x": {"shape": [1, 9, 9]}},
     "layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same"},
                {"type": "flatten"}, {"type": "dense", "units": 3}], "loss": "mse"},
]
TRAIN_ONE_EPOCH = r"""
import json, sys
import numpy as np
import nngraph
from nngraph.spec import parse_spec
spec = parse_spec(json.loads(sys.argv[1]))
model = nngraph.compile(spec)
shape = tuple(spec.inputs[0][1].shape)
rng = np.random.default_rng(0)
x = rng.random((8,) + shape, dtype=np.float32)
model.fit(x, rng.random((8,) + model.graph.values[model.graph.output].shape, dtype=np.float32), epochs=1,
          batch_size=4)
"""


def test_kernels_compiled_against_cached_callees_load_in_later_processes(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    gru, conv = (json.dumps(s) for s in GRU_THEN_CONV)
    for spec in (gru, conv, conv, conv):  # fresh processes, one shared cache
        r = subprocess.run([sys.executable, "-c", TRAIN_ONE_EPOCH, spec], capture_output=True, text=True, env=env)
        assert r.returncode == 0, f"exit {r.returncode} (negative: killed by signal {-r.returncode}): {r.stderr[-2000:]}"
