"""Start Numba's parallel runtime before any cached kernel is loaded.

Why (a reproducible segfault, numba 0.68): a kernel compiled in a process where one of its callees
was *loaded from the on-disk cache* is cached without the note that it needs the parallel runtime.
Numba records that note (``reload_init``) on each compiled function and, for callers compiled
afresh, copies it from their callees' libraries — but a library rebuilt from the cache comes back
with the note missing. So: process 1 trains a GRU (caching ``matmul_into``, whose code includes the
threaded GEMM), process 2 runs a stride-2 conv (compiling its forward kernel against the cached
``matmul_into``, and caching it), and process 3 loads that conv kernel, whose machine code calls
the threading layer's functions (``numba_parallel_for``, ``get_num_threads``): nobody started the
layer, the symbols resolve to address 0, and the first call jumps there (SIGSEGV, rip = 0).

Starting the threading layer first registers those symbols with the JIT, so every cached kernel
resolves them whatever the history of the cache. ``numba.get_num_threads()`` is the public call
that does it (it launches the pool if needed); it costs a few milliseconds once per process, and
every training process starts the pool anyway. Called by ``nngraph.backend.kernels`` (every op
binding) and ``nngraph.linalg`` (every kernel that can embed the threaded GEMM).
"""
from __future__ import annotations

_started = False


def start_parallel_runtime() -> None:
    """Launch Numba's threading layer once (idempotent)."""
    global _started
    if not _started:
        import numba

        numba.get_num_threads()
        _started = True
