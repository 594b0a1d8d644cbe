"""C = A B^T on the vectors of ``vec``: dot products along unit-stride rows of both operands.

For y = x W^T with W stored (out, in) (ONNX Gemm transB=1) and a conv's weight gradient (rows of
dz against shifted input rows), with no transposed copy of B. Each C element is one FMA chain in k
order plus a fixed-order lane reduction, so results do not depend on tiling or thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .vec import LANES, data_ptr, vfma, vload, vload_n, vsum, vzero

_J = dict(cache=True, error_model="numpy", boundscheck=False)

# A 4 x 4 block of C (4 x 3 with AVX2's 16 registers) keeps one vector accumulator per element over
# LANES-wide slices of k and reduces each to one number at the end; the reduction costs ~8
# instructions per element, small against K/LANES FMAs when K >= 128 (see gemm.NT_MIN_K).

MR_NT, NR_NT = 4, (4 if LANES == 16 else 3)


@njit(inline="always", **_J)
def _put(pc, c, v, accumulate):
    if accumulate:
        pc[c] += v
    else:
        pc[c] = v


@njit(**_J)
def tile_nt(K, pa, a0, a1, a2, a3, pb, b0, b1, b2, b3, pc, c0, sci, mr, nr, accumulate):
    """C[c0 + i*sci + j] (+)= sum_k pa[a_i + k] * pb[b_j + k] for i < mr (<= 4), j < nr (<= NR_NT).
    Rows past mr / nr must still be valid addresses (callers repeat the last row); with NR_NT = 3,
    b3 is ignored."""
    s00 = vzero(); s01 = vzero(); s02 = vzero(); s03 = vzero()
    s10 = vzero(); s11 = vzero(); s12 = vzero(); s13 = vzero()
    s20 = vzero(); s21 = vzero(); s22 = vzero(); s23 = vzero()
    s30 = vzero(); s31 = vzero(); s32 = vzero(); s33 = vzero()
    full = K - K % LANES
    for k in range(0, K, LANES):
        # whole slices load unmasked; only the tail slice needs a mask
        n = LANES if k < full else K - k
        x0 = vload_n(pb, b0 + k, n) if k >= full else vload(pb, b0 + k)
        x1 = vload_n(pb, b1 + k, n) if k >= full else vload(pb, b1 + k)
        x2 = vload_n(pb, b2 + k, n) if k >= full else vload(pb, b2 + k)
        x3 = x2
        if NR_NT > 3:
            x3 = vload_n(pb, b3 + k, n) if k >= full else vload(pb, b3 + k)
        a = vload_n(pa, a0 + k, n) if k >= full else vload(pa, a0 + k)
        s00 = vfma(a, x0, s00); s01 = vfma(a, x1, s01); s02 = vfma(a, x2, s02)
        if NR_NT > 3:
            s03 = vfma(a, x3, s03)
        a = vload_n(pa, a1 + k, n) if k >= full else vload(pa, a1 + k)
        s10 = vfma(a, x0, s10); s11 = vfma(a, x1, s11); s12 = vfma(a, x2, s12)
        if NR_NT > 3:
            s13 = vfma(a, x3, s13)
        a = vload_n(pa, a2 + k, n) if k >= full else vload(pa, a2 + k)
        s20 = vfma(a, x0, s20); s21 = vfma(a, x1, s21); s22 = vfma(a, x2, s22)
        if NR_NT > 3:
            s23 = vfma(a, x3, s23)
        a = vload_n(pa, a3 + k, n) if k >= full else vload(pa, a3 + k)
        s30 = vfma(a, x0, s30); s31 = vfma(a, x1, s31); s32 = vfma(a, x2, s32)
        if NR_NT > 3:
            s33 = vfma(a, x3, s33)
    _put_row(pc, c0, vsum(s00), vsum(s01), vsum(s02), vsum(s03), nr, accumulate)
    if mr > 1:
        _put_row(pc, c0 + sci, vsum(s10), vsum(s11), vsum(s12), vsum(s13), nr, accumulate)
    if mr > 2:
        _put_row(pc, c0 + 2 * sci, vsum(s20), vsum(s21), vsum(s22), vsum(s23), nr, accumulate)
    if mr > 3:
        _put_row(pc, c0 + 3 * sci, vsum(s30), vsum(s31), vsum(s32), vsum(s33), nr, accumulate)


@njit(inline="always", **_J)
def _put_row(pc, c, v0, v1, v2, v3, nr, accumulate):
    _put(pc, c, v0, accumulate)
    if nr > 1:
        _put(pc, c + 1, v1, accumulate)
    if nr > 2:
        _put(pc, c + 2, v2, accumulate)
    if NR_NT > 3 and nr > 3:
        _put(pc, c + 3, v3, accumulate)


@njit(inline="always", **_J)
def _nt_tile(t, nj, A, B, C, accumulate):
    M, K = A.shape
    N = B.shape[0]
    i0 = (t // nj) * MR_NT
    j0 = (t % nj) * NR_NT
    sa, sb = A.strides[0] // 4, B.strides[0] // 4
    m, n = M - 1, N - 1
    tile_nt(K, data_ptr(A), min(i0, m) * sa, min(i0 + 1, m) * sa, min(i0 + 2, m) * sa, min(i0 + 3, m) * sa,
            data_ptr(B), min(j0, n) * sb, min(j0 + 1, n) * sb, min(j0 + 2, n) * sb, min(j0 + 3, n) * sb,
            data_ptr(C), i0 * (C.strides[0] // 4) + j0, C.strides[0] // 4, min(MR_NT, M - i0),
            min(NR_NT, N - j0), accumulate)


@njit(**_J)
def gemm_nt(A, B, C, accumulate=False):
    """C = A @ B.T (or +=) for float32 2-D arrays whose rows are all unit-stride. One thread."""
    M, N = A.shape[0], B.shape[0]
    nj = (N + NR_NT - 1) // NR_NT
    for t in range(((M + MR_NT - 1) // MR_NT) * nj):
        _nt_tile(t, nj, A, B, C, accumulate)


@njit(parallel=True, **_J)
def gemm_nt_threaded(A, B, C, accumulate=False):
    """``gemm_nt`` with the tiles shared over Numba's threads (same bits)."""
    M, N = A.shape[0], B.shape[0]
    nj = (N + NR_NT - 1) // NR_NT
    for t in prange(((M + MR_NT - 1) // MR_NT) * nj):
        _nt_tile(t, nj, A, B, C, accumulate)


@njit(**_J)
def _nt_tables_loops(K, A, arow, B, brow, C, c0, sci, M, N, accumulate):
    for i in range(M):
        for j in range(N):
            s = C[c0 + i * sci + j] if accumulate else C.dtype.type(0)
            for k in range(K):
                s += A[arow[i] + k] * B[brow[j] + k]
            C[c0 + i * sci + j] = s


@njit(**_J)
def _nt_tables_vector(K, A, arow, B, brow, C, c0, sci, M, N, accumulate):
    nj = (N + NR_NT - 1) // NR_NT
    pa, pb, pc = data_ptr(A), data_ptr(B), data_ptr(C)
    m, n = M - 1, N - 1
    for t in range(((M + MR_NT - 1) // MR_NT) * nj):
        i0 = (t // nj) * MR_NT
        j0 = (t % nj) * NR_NT
        tile_nt(K, pa, arow[min(i0, m)], arow[min(i0 + 1, m)], arow[min(i0 + 2, m)], arow[min(i0 + 3, m)],
                pb, brow[min(j0, n)], brow[min(j0 + 1, n)], brow[min(j0 + 2, n)], brow[min(j0 + 3, n)],
                pc, c0 + i0 * sci + j0, sci, min(MR_NT, M - i0), min(NR_NT, N - j0), accumulate)


def gemm_nt_tables(K, A, arow, B, brow, C, c0, sci, M, N, accumulate=False):
    """C[c0 + i*sci + j] (+)= sum_k A[arow[i] + k] * B[brow[j] + k] over flat 1-D arrays (i < M,
    j < N, k < K): dot products of rows that live anywhere in their buffers (a conv's weight
    gradient: rows of dz against shifted input rows). float32 vector kernels, float64 loops."""
    if A.dtype == np.float32:
        _nt_tables_vector(K, A, arow, B, brow, C, c0, sci, M, N, accumulate)
    else:
        _nt_tables_loops(K, A, arow, B, brow, C, c0, sci, M, N, accumulate)


@overload(gemm_nt_tables, jit_options=_J)
def _gemm_nt_tables_jit(K, A, arow, B, brow, C, c0, sci, M, N, accumulate=False):
    if A.dtype == types.float32 and B.dtype == types.float32 and C.dtype == types.float32:
        def impl(K, A, arow, B, brow, C, c0, sci, M, N, accumulate=False):
            if M > 0 and N > 0:
                _nt_tables_vector(K, A, arow, B, brow, C, c0, sci, M, N, accumulate)
        return impl

    def impl_loops(K, A, arow, B, brow, C, c0, sci, M, N, accumulate=False):
        _nt_tables_loops(K, A, arow, B, brow, C, c0, sci, M, N, accumulate)
    return impl_loops


@njit(**_J)
def _nt_loops(A, B, C, accumulate):
    for i in range(A.shape[0]):
        for j in range(B.shape[0]):
            s = C[i, j] if accumulate else C.dtype.type(0)
            for k in range(A.shape[1]):
                s += A[i, k] * B[j, k]
            C[i, j] = s


def matmul_nt_into(A, B, C, accumulate=False):
    """C (+)= A @ B.T for 2-D arrays, callable from Numba code: the dot-product kernel for float32
    with unit-stride rows, plain loops otherwise (float64: the gradient checks)."""
    if A.dtype == np.float32 and all(x.shape[1] <= 1 or x.strides[1] == 4 for x in (A, B, C)):
        gemm_nt(A, B, C, accumulate)
    else:
        _nt_loops(A, B, C, accumulate)


@overload(matmul_nt_into, jit_options=_J)
def _matmul_nt_into_jit(A, B, C, accumulate=False):
    if A.dtype == types.float32 and B.dtype == types.float32 and C.dtype == types.float32:
        def impl(A, B, C, accumulate=False):
            if ((A.shape[1] <= 1 or A.strides[1] == 4) and (B.shape[1] <= 1 or B.strides[1] == 4)
                    and (C.shape[1] <= 1 or C.strides[1] == 4)):
                gemm_nt(A, B, C, accumulate)
            else:
                _nt_loops(A, B, C, accumulate)
        return impl
    return lambda A, B, C, accumulate=False: _nt_loops(A, B, C, accumulate)
