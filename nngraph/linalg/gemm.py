"""Register-blocked float32 GEMM on the vectors of ``vec``.

The micro-kernel ``tile`` computes an MR x NR block of C over the whole K extent (NR = two vectors
of a B row): with AVX-512, 8 x 32 (16 vector accumulators, two B vectors, one broadcast A element:
19 of 32 registers); with AVX2, 6 x 16 (12 + 2 + 1 of 16). Nothing is packed: A element (i, k) is
read at ``rows[i] + k * sak`` (any row order: a strided matrix, a transposed one, or the rows of a
convolution's receptive field) and B row k, NR consecutive floats, at ``boff[k] + b0`` (a table: the shifted input rows of a
convolution) or ``b0 + k * sbk`` (a plain matrix). Edge tiles mask lanes and skip rows, never
touching memory outside the valid block. Each C element is one FMA chain in k order, so results do
not depend on tiling or thread count.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .gemm_nt import gemm_nt, gemm_nt_threaded
from .vec import LANES, data_ptr, vfma, vload, vload_n, vsplat, vstore_n, vzero

MR, NR = (8 if LANES == 16 else 6), 2 * LANES
_J = dict(cache=True, error_model="numpy", boundscheck=False)


@njit(inline="always", **_J)
def _load_row(pc, c, n, row, mr):
    """C's current values of one tile row (zeros for rows past the edge, which are never read)."""
    return vload_n(pc, c, n if row < mr else 0)


@njit(inline="always", **_J)
def _store_row(pc, c, lo, hi, nr):
    vstore_n(pc, c, lo, nr)
    vstore_n(pc, c + LANES, hi, nr - LANES)


@njit(**_J)
def tile(K, pa, r0, r1, r2, r3, r4, r5, r6, r7, sak, pb, b0, sbk, boff, pc, c0, sci, mr, nr, accumulate):
    """C[c0 + i*sci + j] (+)= sum_k A(i, k) B(k, j) for i < mr (<= MR), j < nr (<= NR).

    A(i, k) = pa[r_i + k*sak]; B(k, j) = pb[boff[k] + b0 + j] if boff is not None else pb[b0 + k*sbk + j].
    Rows i >= mr must still be valid addresses (callers repeat the last row); with MR = 6, r6 and
    r7 are ignored (the "MR > 6" tests are compile-time constants: LLVM drops those rows)."""
    hi_n = nr - LANES
    whole = nr >= NR
    if accumulate:  # continue each element's FMA chain from C's value
        c00 = _load_row(pc, c0, nr, 0, mr); c01 = _load_row(pc, c0 + LANES, hi_n, 0, mr)
        c10 = _load_row(pc, c0 + sci, nr, 1, mr); c11 = _load_row(pc, c0 + sci + LANES, hi_n, 1, mr)
        c20 = _load_row(pc, c0 + 2 * sci, nr, 2, mr); c21 = _load_row(pc, c0 + 2 * sci + LANES, hi_n, 2, mr)
        c30 = _load_row(pc, c0 + 3 * sci, nr, 3, mr); c31 = _load_row(pc, c0 + 3 * sci + LANES, hi_n, 3, mr)
        c40 = _load_row(pc, c0 + 4 * sci, nr, 4, mr); c41 = _load_row(pc, c0 + 4 * sci + LANES, hi_n, 4, mr)
        c50 = _load_row(pc, c0 + 5 * sci, nr, 5, mr); c51 = _load_row(pc, c0 + 5 * sci + LANES, hi_n, 5, mr)
        c60 = _load_row(pc, c0 + 6 * sci, nr, 6, mr); c61 = _load_row(pc, c0 + 6 * sci + LANES, hi_n, 6, mr)
        c70 = _load_row(pc, c0 + 7 * sci, nr, 7, mr); c71 = _load_row(pc, c0 + 7 * sci + LANES, hi_n, 7, mr)
    else:
        c00 = vzero(); c01 = vzero(); c10 = vzero(); c11 = vzero()
        c20 = vzero(); c21 = vzero(); c30 = vzero(); c31 = vzero()
        c40 = vzero(); c41 = vzero(); c50 = vzero(); c51 = vzero()
        c60 = vzero(); c61 = vzero(); c70 = vzero(); c71 = vzero()
    for k in range(K):
        rb = (boff[k] + b0) if boff is not None else (b0 + k * sbk)
        if whole:  # unmasked: AVX2's masked loads are slow (AVX-512 masks cost nothing)
            x0 = vload(pb, rb)
            x1 = vload(pb, rb + LANES)
        else:
            x0 = vload_n(pb, rb, nr)
            x1 = vload_n(pb, rb + LANES, hi_n)
        o = k * sak
        a = vsplat(pa, r0 + o); c00 = vfma(a, x0, c00); c01 = vfma(a, x1, c01)
        a = vsplat(pa, r1 + o); c10 = vfma(a, x0, c10); c11 = vfma(a, x1, c11)
        a = vsplat(pa, r2 + o); c20 = vfma(a, x0, c20); c21 = vfma(a, x1, c21)
        a = vsplat(pa, r3 + o); c30 = vfma(a, x0, c30); c31 = vfma(a, x1, c31)
        a = vsplat(pa, r4 + o); c40 = vfma(a, x0, c40); c41 = vfma(a, x1, c41)
        a = vsplat(pa, r5 + o); c50 = vfma(a, x0, c50); c51 = vfma(a, x1, c51)
        if MR > 6:
            a = vsplat(pa, r6 + o); c60 = vfma(a, x0, c60); c61 = vfma(a, x1, c61)
            a = vsplat(pa, r7 + o); c70 = vfma(a, x0, c70); c71 = vfma(a, x1, c71)
    _store_row(pc, c0, c00, c01, nr)
    if mr > 1:
        _store_row(pc, c0 + sci, c10, c11, nr)
    if mr > 2:
        _store_row(pc, c0 + 2 * sci, c20, c21, nr)
    if mr > 3:
        _store_row(pc, c0 + 3 * sci, c30, c31, nr)
    if mr > 4:
        _store_row(pc, c0 + 4 * sci, c40, c41, nr)
    if mr > 5:
        _store_row(pc, c0 + 5 * sci, c50, c51, nr)
    if MR > 6 and mr > 6:
        _store_row(pc, c0 + 6 * sci, c60, c61, nr)
    if MR > 7 and mr > 7:
        _store_row(pc, c0 + 7 * sci, c70, c71, nr)


# ``tile`` inlined into gemm's own tile loop (the same code, so the same bits). Called once per
# 8 x 32 tile it cost ~8% on attention's 64 x 32 x 64 products, whose tiles run only 32-64 k steps
# (the forward pair's two products, one thread, interleaved A/B: 69 -> 76 and 61 -> 65 GFLOP/s).
_tile_inline = njit(inline="always", **_J)(tile.py_func)


@njit(inline="always", **_J)
def _row(a0, sai, i0, i, M):
    """Offset of A's row i0 + i, repeating the last row past the edge."""
    return a0 + min(i0 + i, M - 1) * sai


@njit(inline="always", **_J)
def _gemm_tile(t, nj, A, B, C, k0, kc, accumulate):
    """Tile t (row-major over (M/8) x (N/32) tiles) of C (+)= A[:, k0:k0+kc] @ B[k0:k0+kc]."""
    M = A.shape[0]
    N = B.shape[1]
    i0 = (t // nj) * MR
    j0 = (t % nj) * NR
    sai, sak = A.strides[0] // 4, A.strides[1] // 4
    sbk, sci = B.strides[0] // 4, C.strides[0] // 4
    a0 = k0 * sak
    _tile_inline(kc, data_ptr(A), _row(a0, sai, i0, 0, M), _row(a0, sai, i0, 1, M), _row(a0, sai, i0, 2, M),
         _row(a0, sai, i0, 3, M), _row(a0, sai, i0, 4, M), _row(a0, sai, i0, 5, M),
         _row(a0, sai, i0, 6, M), _row(a0, sai, i0, 7, M), sak,
         data_ptr(B), k0 * sbk + j0, sbk, None,
         data_ptr(C), i0 * sci + j0, sci, min(MR, M - i0), min(NR, N - j0), accumulate)


# K is cut into blocks of KC: one block of B (KC x N) and of A's rows stay in the L2 cache while
# every tile that reads them runs (products like dR = DA^T H over 3,200 rows otherwise re-read A
# from memory for each tile: 2.5x slower).
KC = 256


@njit(inline="always", **_J)
def _degenerate(M, K, N, C, accumulate):
    """Handle an empty product (C = 0 when K == 0 and not accumulating); True if there was one."""
    if M == 0 or N == 0:
        return True
    if K == 0:
        if not accumulate:
            C[:, :] = 0.0
        return True
    return False


@njit(**_J)
def gemm(A, B, C, accumulate=False):
    """C = A @ B (or C += A @ B) for float32 2-D arrays; B's and C's rows must be unit-stride
    (A may have any strides, e.g. a transposed view). One thread."""
    M, K = A.shape
    N = B.shape[1]
    if _degenerate(M, K, N, C, accumulate):
        return
    nj = (N + NR - 1) // NR
    for k0 in range(0, K, KC):
        for t in range(((M + MR - 1) // MR) * nj):
            _gemm_tile(t, nj, A, B, C, k0, min(KC, K - k0), accumulate or k0 > 0)


@njit(parallel=True, **_J)
def gemm_threaded(A, B, C, accumulate=False):
    """``gemm`` with the tiles shared over Numba's threads (same results, bit for bit)."""
    M, K = A.shape
    N = B.shape[1]
    if _degenerate(M, K, N, C, accumulate):
        return
    nj = (N + NR - 1) // NR
    for k0 in range(0, K, KC):
        acc = accumulate or k0 > 0
        kc = min(KC, K - k0)
        for t in prange(((M + MR - 1) // MR) * nj):
            _gemm_tile(t, nj, A, B, C, k0, kc, acc)


@njit(**_J)
def _matmul_loops(A, B, C, accumulate):
    """Plain loops for what the vector kernels do not take (float64 — the gradient checks — or rows
    that are not unit-stride)."""
    M, K = A.shape
    N = B.shape[1]
    for i in range(M):
        for j in range(N):
            s = C[i, j] if accumulate else C.dtype.type(0)
            for k in range(K):
                s += A[i, k] * B[k, j]
            C[i, j] = s


def matmul_into(A, B, C, accumulate=False, threaded=False):
    """C = A @ B (C += A @ B with ``accumulate``), callable from Python and from Numba code.

    float32 with unit-stride rows of B and C runs the vector kernels (``threaded``: over Numba's
    threads); anything else (float64, other strides) runs plain loops."""
    if A.dtype == np.float32 and B.strides[1] == 4 and C.strides[1] == 4:
        (gemm_threaded if threaded else gemm)(A, B, C, accumulate)
    else:
        _matmul_loops(A, B, C, accumulate)


@overload(matmul_into, jit_options=_J)
def _matmul_into_jit(A, B, C, accumulate=False, threaded=False):
    if A.dtype == types.float32 and B.dtype == types.float32 and C.dtype == types.float32:
        def impl(A, B, C, accumulate=False, threaded=False):
            if (B.shape[1] > 1 and B.strides[1] != 4) or (C.shape[1] > 1 and C.strides[1] != 4):
                _matmul_loops(A, B, C, accumulate)
            elif threaded:
                gemm_threaded(A, B, C, accumulate)
            else:
                gemm(A, B, C, accumulate)
        return impl

    def impl_loops(A, B, C, accumulate=False, threaded=False):
        _matmul_loops(A, B, C, accumulate)
    return impl_loops


# ---- products over offset tables (the convolutions' shifted rows) -------------------------------

@njit(**_J)
def _tables_loops(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate):
    for i in range(M):
        for j in range(N):
            s = C[c0 + i * sci + j] if accumulate else C.dtype.type(0)
            for k in range(K):
                s += A[arow[i] + k * sak] * B[brow[k] + b0 + j]
            C[c0 + i * sci + j] = s


@njit(**_J)
def _tables_vector(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate):
    nj = (N + NR - 1) // NR
    pa, pb, pc = data_ptr(A), data_ptr(B), data_ptr(C)
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        acc = accumulate or k0 > 0
        ka = k0 * sak
        bk = brow[k0:]
        for t in range(((M + MR - 1) // MR) * nj):
            i0 = (t // nj) * MR
            j0 = (t % nj) * NR
            m = M - 1
            tile(kc, pa, arow[min(i0, m)] + ka, arow[min(i0 + 1, m)] + ka, arow[min(i0 + 2, m)] + ka,
                 arow[min(i0 + 3, m)] + ka, arow[min(i0 + 4, m)] + ka, arow[min(i0 + 5, m)] + ka,
                 arow[min(i0 + 6, m)] + ka, arow[min(i0 + 7, m)] + ka, sak,
                 pb, b0 + j0, 0, bk, pc, c0 + i0 * sci + j0, sci, min(MR, M - i0), min(NR, N - j0), acc)


def gemm_tables(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate=False):
    """C[c0 + i*sci + j] (+)= sum_k A[arow[i] + k*sak] * B[brow[k] + b0 + j] over flat 1-D arrays,
    for i < M, j < N, k < K: a product whose rows live anywhere in a buffer (a convolution's
    shifted input rows, a zero-padded gradient). float32 runs the vector kernels, float64 loops;
    callable from Numba code. Every address the formula names must be inside its array."""
    if A.dtype == np.float32:
        _tables_vector(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate)
    else:
        _tables_loops(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate)


@overload(gemm_tables, jit_options=_J)
def _gemm_tables_jit(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate=False):
    if A.dtype == types.float32 and B.dtype == types.float32 and C.dtype == types.float32:
        def impl(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate=False):
            if M > 0 and N > 0 and K > 0:
                _tables_vector(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate)
            elif M > 0 and N > 0:
                _tables_loops(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate)
        return impl

    def impl_loops(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate=False):
        _tables_loops(K, A, arow, sak, B, brow, b0, C, c0, sci, M, N, accumulate)
    return impl_loops


# ---- Python-level entry points: the layers' products, threaded when it pays ----------------------

# Products from this many multiply-adds on share their tiles over Numba's threads (starting a
# parallel region costs a few microseconds; below this it is not paid back).
THREADED_MIN = 1 << 19


def threads_pay(m: int, k: int, n: int) -> bool:
    """Whether an (m x k) @ (k x n) product runs on Numba's threads."""
    return numba.get_num_threads() > 1 and m * k * n >= THREADED_MIN


def _vector_ready(*arrays: np.ndarray) -> bool:
    return all(x.dtype == np.float32 for x in arrays) and all(x.shape[1] <= 1 or x.strides[1] == 4 for x in arrays[1:])


# Products from this many multiply-adds with at least one full tile of rows run on packed panels
# (linalg.packed): below it the packing is not paid back, above it B's long or transposed rows
# cost 2-3x (x W^T for 128 x 3072 x 512: 38 GFLOP/s in place, 89 packed).
PACKED_MIN = 1 << 18


def _packed_pays(m: int, k: int, n: int) -> bool:
    return m >= MR and m * k * n >= PACKED_MIN


def _packed(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
    from .packed import gemm_packed, gemm_packed_threaded, panel_buffer

    kernel = gemm_packed_threaded if threads_pay(a.shape[0], a.shape[1], b.shape[1]) else gemm_packed
    kernel(a, b, out, panel_buffer(a.shape[0], a.shape[1], b.shape[1]), accumulate)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool = False) -> None:
    """out (+)= a @ b (2-D) on the vector kernels; numpy for float64 (the gradient checks)."""
    if _vector_ready(a, b, out):
        if _packed_pays(a.shape[0], a.shape[1], b.shape[1]):
            _packed(a, b, out, accumulate)
            return
        kernel = gemm_threaded if threads_pay(a.shape[0], a.shape[1], b.shape[1]) else gemm
        kernel(a, b, out, accumulate)
    elif accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)


# Below this K the dot-product kernel's per-element reductions outweigh its FMAs: callers with
# shorter rows (a layer with few inputs) should pack b^T and use ``matmul`` (see dense.py).
NT_MIN_K = 64


def matmul_nt(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b.T (2-D; b stored row-major, e.g. a Gemm weight (units, in)) without transposing b."""
    if a.dtype == b.dtype == out.dtype == np.float32 and out.strides[1] == 4 and \
            _packed_pays(a.shape[0], a.shape[1], b.shape[0]):
        _packed(a, b.T, out, False)  # b's rows become panels by register transposes
    # (with AVX2's 16 registers the dot-product tile spills; OpenBLAS's own kernels do better there)
    elif LANES == 16 and _vector_ready(a, b, out) and (a.shape[1] <= 1 or a.strides[1] == 4):
        kernel = gemm_nt_threaded if threads_pay(a.shape[0], a.shape[1], b.shape[0]) else gemm_nt
        kernel(a, b, out, False)
    else:
        np.matmul(a, b.T, out=out)
