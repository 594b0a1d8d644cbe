"""Our own float32 matrix products: a 16-lane SIMD vector type for Numba (``vec``) and register-
blocked GEMM micro-kernels on it (``gemm``). Why: numpy's OpenBLAS runs AVX2 kernels on this
project's AVX-512 machines (125 GFLOP/s on one core); these reach ~190, and their summation order
does not depend on OpenBLAS's kernel choice or thread count, so results are the same bits in every
process."""

from ..jit_runtime import start_parallel_runtime

start_parallel_runtime()  # before any kernel that embeds the threaded GEMM loads from the cache
