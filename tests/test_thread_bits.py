"""Training gives the same bits whatever the thread count: every kernel's work split is fixed
(conv sample blocks, recurrent batch chunks, GEMM tiles, batch norm channels, dropout's per-element
hash, positional-table rows, sequence-pool samples, attention's (sample, head) pairs), only their assignment
to threads varies."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import hashlib, numpy as np
from nngraph.model import Model
from nngraph.spec import parse_spec
nets = {
    "cnn": ({"shape": [1, 12, 12]}, [{"type": "conv2d", "filters": 32, "kernel": 5, "padding": "same", "activation": "relu"},
                                     {"type": "maxpool2d", "size": 2}, {"type": "conv2d", "filters": 8, "kernel": 3},
                                     {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]),
    "gru": ({"shape": [20, 6]}, [{"type": "gru", "units": 64}, {"type": "dense", "units": 10, "activation": "softmax"}]),
    "resnet": ({"shape": [2, 12, 12]}, [
        {"type": "conv2d", "filters": 16, "kernel": 3, "padding": "same", "use_bias": False, "name": "c1"},
        {"type": "batchnorm", "name": "bn1"}, {"type": "relu", "name": "r1"},
        {"type": "conv2d", "filters": 16, "kernel": 3, "padding": "same", "name": "c2"},
        {"type": "batchnorm", "name": "bn2"}, {"type": "add", "inputs": ["r1", "bn2"]},
        {"type": "dropout", "rate": 0.3}, {"type": "global_maxpool2d"},
        {"type": "dense", "units": 10, "activation": "softmax"}]),
    "seq": ({"shape": [16, 24]}, [
        {"type": "conv1d", "filters": 32, "kernel": 3, "padding": "same", "activation": "relu"},
        {"type": "batchnorm"}, {"type": "maxpool1d", "size": 2}, {"type": "dropout", "rate": 0.5},
        {"type": "global_avgpool1d"}, {"type": "dense", "units": 10, "activation": "softmax"}]),
    "transformer": ({"shape": [12, 6]}, [
        {"type": "dense", "units": 16, "activation": "tanh"}, {"type": "positional_embedding", "max_length": 24},
        {"type": "positional_embedding", "kind": "sinusoidal"},
        {"type": "transformer_block", "heads": 4, "ff_units": 32, "causal": True, "dropout": 0.2},
        {"type": "transformer_block", "heads": 2, "ff_units": 32, "norm": "post", "dropout": 0.1},
        {"type": "sequence_pool", "mode": "max"}, {"type": "dense", "units": 10, "activation": "softmax"}]),
}
digest = hashlib.sha256()
for name, (inp, layers) in nets.items():
    model = Model.compile(parse_spec({"name": name, "inputs": {"x": inp}, "layers": layers, "loss": "cross_entropy",
                                      "optimizer": {"type": "adam", "lr": 0.01}}), seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96,) + tuple(inp["shape"])).astype(np.float32)
    y = rng.integers(0, 10, 96)
    trainer = model.trainer()
    for step in range(3):
        trainer.step(model._feeds(x), model.targets(y), rng.permutation(96)[:64])
    digest.update(model.params.flat.tobytes())
    digest.update(model.params.state_flat.tobytes())
print(digest.hexdigest())
"""


def _digest(threads: int) -> str:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    # the thresholds below which kernels stay serial are lowered, so 2 threads really split the work
    code = ("import nngraph.ops.conv_bind as c, nngraph.ops.recurrent_kernels as r, nngraph.linalg.gemm as g\n"
            "import nngraph.ops.batchnorm_kernels as b, nngraph.ops.dropout_kernels as d, nngraph.ops.pool_kernels as p\n"
            "c.THREADED_MIN = 0; r.CHUNKED_MIN = 0; g.THREADED_MIN = 0; b.THREADED_MIN = 0; d.THREADED_MIN = 0\n"
            "p.THREADED_MIN = 0\nimport nngraph.ops.attention_kernels as a, nngraph.ops.layernorm_kernels as l\n"
            "import nngraph.ops.pointwise_kernels as pw\na.THREADED_MIN = 0; l.THREADED_MIN = 0; pw.PARALLEL_MIN = 0\n" + SCRIPT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_one_and_two_threads_train_the_same_bits():
    assert _digest(1) == _digest(2)
