"""The vector kernels as Numba compiles them for a CPU without AVX-512 (8 lanes, a 6 x 16 tile):
the same tests, in a subprocess whose Numba targets Haswell (AVX2) with its own JIT cache (kept in
the system's temp folder, so only the first run compiles)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HASWELL = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sse,+sse2,"
           "+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,-avx512f,-avx512bw,-avx512dq,-avx512vl")


def test_kernels_compiled_for_avx2_pass_the_same_checks():
    cache = Path(tempfile.gettempdir()) / "nngraph-numba-cache-avx2"
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL, NUMBA_CACHE_DIR=str(cache))
    lanes = subprocess.run([sys.executable, "-c", "from nngraph.linalg.vec import LANES; print(LANES)"],
                           env=env, capture_output=True, text=True, check=True)
    assert lanes.stdout.strip() == "8"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_linalg.py",
                          "tests/ops/test_conv_ops.py", "tests/ops/test_ops.py", "tests/ops/test_recurrent_ops.py",
                          "tests/ops/test_norm_act_ops.py", "tests/ops/test_attention_ops.py",
                          "-k", "float32 or linalg or gemm or threads or strided or matmul or ties or both_weight"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "[100%]" in run.stdout and run.stdout.count(".") > 100  # the tests ran (pytest -q prints no summary)
