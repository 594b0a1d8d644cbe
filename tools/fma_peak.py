"""This machine's float32 multiply-add ceiling: vector FMAs on registers only, every thread busy.

    python tools/fma_peak.py            # GFLOP/s at 1 thread and at every thread Numba has

No kernel that reads or writes memory can beat this rate, so it bounds what any implementation of a
network (ours, PyTorch's) can reach on this machine: a training step of F FLOP per sample runs at
most fma_peak / F samples/s. tools/bench_train.py prints that bound against PyTorch as "ceiling".
"""
from __future__ import annotations

import time

import numba
import numpy as np
from numba import njit, prange

from nngraph.linalg.vec import LANES, vadd, vfma, vsplat_value, vsum, vzero

CHAINS = 16  # independent accumulators: more than FMA latency x FMA units, so the units never wait


@njit(cache=True)
def _spin(n: int, x: np.float32) -> float:
    """n rounds of CHAINS independent vector FMAs (c = a*c + x), summed so nothing is dropped."""
    a = vsplat_value(np.float32(0.5))
    b = vsplat_value(x)
    c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero(); c4 = vzero(); c5 = vzero(); c6 = vzero()
    c7 = vzero(); c8 = vzero(); c9 = vzero(); c10 = vzero(); c11 = vzero(); c12 = vzero(); c13 = vzero()
    c14 = vzero(); c15 = vzero()
    for _ in range(n):
        c0 = vfma(a, c0, b); c1 = vfma(a, c1, b); c2 = vfma(a, c2, b); c3 = vfma(a, c3, b)
        c4 = vfma(a, c4, b); c5 = vfma(a, c5, b); c6 = vfma(a, c6, b); c7 = vfma(a, c7, b)
        c8 = vfma(a, c8, b); c9 = vfma(a, c9, b); c10 = vfma(a, c10, b); c11 = vfma(a, c11, b)
        c12 = vfma(a, c12, b); c13 = vfma(a, c13, b); c14 = vfma(a, c14, b); c15 = vfma(a, c15, b)
    s = vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(c4, c5), vadd(c6, c7)))
    s = vadd(s, vadd(vadd(vadd(c8, c9), vadd(c10, c11)), vadd(vadd(c12, c13), vadd(c14, c15))))
    return vsum(s)


@njit(cache=True, parallel=True)
def _spin_threads(n: int, x: np.float32, threads: int) -> float:
    out = np.zeros(threads)
    for t in prange(threads):
        out[t] = _spin(n, x)
    return out.sum()


def fma_peak_gflops(threads: int | None = None, rounds: int = 20_000_000, reps: int = 3) -> float:
    """Best float32 GFLOP/s of register-only vector FMAs on ``threads`` threads (default: Numba's)."""
    threads = threads or numba.get_num_threads()
    x = np.float32(1e-3)
    _spin_threads(10, x, threads)  # compile / load outside the timing
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        total = _spin_threads(rounds, x, threads)
        best = min(best, time.perf_counter() - t0)
    if not np.isfinite(total):
        raise RuntimeError("the FMA chains overflowed")
    return threads * rounds * CHAINS * LANES * 2 / best / 1e9


if __name__ == "__main__":
    for n in sorted({1, numba.get_num_threads()}):
        print(f"{n} thread(s): {fma_peak_gflops(n):.1f} GFLOP/s float32 ({LANES}-lane vector FMAs, registers only)")
