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
