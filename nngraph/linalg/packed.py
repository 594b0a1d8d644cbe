"""C (+)= A @ B for large products: B packed into contiguous panels, A read in place.

``gemm.tile`` reads B row k of a tile at ``b0 + k * sbk``. When B's rows are long (a 3072-wide
input, a 2048-unit weight) the KC rows of one tile are KC cache lines 12 KB apart: they fall in a
few L1 sets and evict each other, and a transposed B (``x @ W.T`` with W stored (out, in)) has no
unit-stride rows at all. Measured at one thread (AVX-512, 174 GFLOP/s register peak): x W^T for
128 x 3072 x 512 ran at 38 GFLOP/s, dW = dz^T x at 38, against OpenBLAS's 91 and 105; packed (and
aligned) 90 and 121, OpenBLAS 95 and 99 in the same run.

Here each KC x NC block of B is first copied into panels of pw columns, each panel KC x pw
contiguous (``Bp[p*kc*pw + k*pw + j]``; a transposed B is packed by 16 x 16 register transposes;
pw = ``wide_tile.panel_width(N)``: 48 on AVX-512 for its 8 x 48 tiles, else gemm's NR),
so a tile's B rows are consecutive. The tiles then go row by row: one MR x KC slice of A stays in L1
while it meets every panel of the block (kept in L2), and C is written a row band at a time (going
down a column of panels instead touched a new 4 KB page per C row: dW with K = 16 ran at 12 GFLOP/s).
A row-major A needs no packing (the tile broadcasts one element per row); a transposed A (dz^T),
whose k steps are a row of dz apart, is copied into MR-row panels first.
The buffers must be 64-byte aligned (``panel_buffer``; see backend.aligned).

The arithmetic is ``gemm.tile``'s: each C element is one FMA chain in k order (KC blocks continue
the chain from C), so results are bit-identical to ``gemm`` and independent of blocking and of the
thread count (threads share whole tiles, never a k range).
"""
from __future__ import annotations

import numpy as np
from numba import config, get_thread_id, njit, prange, types
from numba.extending import overload

from ..backend.aligned import aligned_zeros
from .gemm import MR, _degenerate, matmul_into
from .vec import LANES, data_ptr, transpose_block, vhigh_halves, vload, vload_n, vlow_halves, vstore_n
from .wide_tile import WIDE, panel_tile, panel_width

_J = dict(cache=True, error_model="numpy", boundscheck=False)

KC = 256    # k extent of a block: a tile's MR x KC slice of A (8 KB) stays in L1 across the panels
NC = 576    # most columns of B per packed block: 12 panels of 48 (576 KB) stay in the 1.25 MB L2
KB = 16     # rows of a transposed A copied per pass (_pack_a_rows)
GROUP = 4   # panels per threaded task (128-192 columns): 3-4 tasks for a 512-wide C
PW_MAX = WIDE  # the widest panel (wide_tile.panel_width)


@njit(inline="always", **_J)
def _block_panels(panels, pw):
    """Panels per packed block: the fewest blocks of at most NC columns, balanced. Each block
    re-reads all of A; whole NC-column blocks left a 512-wide B as 480 + 32 columns, a second
    pass over A for one narrow panel (x W^T for 2048 x 128 x 512 at one thread: 89 -> 109 GFLOP/s)."""
    blocks = -(-panels // (NC // pw))
    return -(-panels // blocks)


def pack_size(m: int) -> int:
    """Floats of the panel buffer ``gemm_packed`` needs for an A of m rows."""
    return KC * NC + KC * (m + MR)


@njit(inline="always", **_J)
def _pack_panel(pb, sbk, sbj, k0, kc, j, w, pp, base, pw):
    """Bp[base + k*pw + c] = B[k0 + k, j + c] for k < kc, c < w (<= pw); B(k, j) = pb[k*sbk + j*sbj]."""
    if sbj == 1:  # row-major B: one pw-wide row slice per k
        for k in range(kc):  # masks of w - h lanes: none past w, all from LANES on
            src, dst = (k0 + k) * sbk + j, base + k * pw
            vstore_n(pp, dst, vload_n(pb, src, w), w)
            vstore_n(pp, dst + LANES, vload_n(pb, src + LANES, w - LANES), w - LANES)
            if pw > 2 * LANES:
                vstore_n(pp, dst + 2 * LANES, vload_n(pb, src + 2 * LANES, w - 2 * LANES), w - 2 * LANES)
    elif sbk == 1:  # transposed B (W^T): B's columns are W's rows, transposed 16 x 16 at a time
        for h in range(0, min(w, pw), LANES):
            for kk in range(0, kc, LANES):
                transpose_block(pb, (j + h) * sbj + k0 + kk, sbj, pp, base + kk * pw + h, pw,
                                min(LANES, w - h), min(LANES, kc - kk))
    else:
        for k in range(kc):
            for c in range(w):
                pp[base + k * pw + c] = pb[(k0 + k) * sbk + (j + c) * sbj]


@njit(inline="always", **_J)
def _pack_a_rows(pa, sai, sak, k_lo, k_hi, M, pq, stride, k_off):
    """Ap[q*stride + (k - k_off)*MR + r] = A[q*MR + r, k] for k_lo <= k < k_hi and every row: a
    transposed A (dz^T), whose tile rows sit side by side, in MR-row panels of one k per MR floats.
    In place its k steps are a row of dz apart: KC lines 2 KB apart share two L1 sets and evict each
    other (dW ran at 61 GFLOP/s, 87 packed). The copy reads KB of dz's rows at a time (along them:
    down dz's columns each line was a demand miss at a 2 KB stride, 25-35% slower on 2 threads) and
    writes each panel's KB x MR floats in one run. On AVX-512 one vector holds two panels' rows, so
    rows k and k + 1 become one whole vector per panel (vlow_halves / vhigh_halves) instead of
    masked half-vector stores one k at a time, each to a different panel 8 KB away: dW = dz^T x for
    384 x 2048 x 128 at 112 -> 128 GFLOP/s on one thread, 193 -> 209 on two (interleaved A/B)."""
    pairs = M // (2 * MR) * (2 * MR) if (sai == 1 and LANES == 2 * MR) else 0
    for kb in range(k_lo, k_hi, KB):
        ke = min(k_hi, kb + KB)
        for i in range(0, pairs, 2 * MR):  # panels i // MR and i // MR + 1 from whole vectors
            dst = (i // MR) * stride + (kb - k_off) * MR
            k = kb
            while k + 1 < ke:
                a, b = vload(pa, k * sak + i), vload(pa, (k + 1) * sak + i)
                vstore_n(pq, dst, vlow_halves(a, b), LANES)
                vstore_n(pq, dst + stride, vhigh_halves(a, b), LANES)
                dst += 2 * MR
                k += 2
            if k < ke:
                a = vload(pa, k * sak + i)
                vstore_n(pq, dst, a, MR)
                vstore_n(pq, dst + stride, vhigh_halves(a, a), MR)
        for i in range(pairs, M, MR):
            h = min(MR, M - i)
            dst = (i // MR) * stride + (kb - k_off) * MR
            for k in range(kb, ke):
                src = k * sak
                if sai == 1:
                    vstore_n(pq, dst, vload_n(pa, src + i, h), h)
                else:
                    for r in range(h):
                        pq[dst + r] = pa[src + (i + r) * sai]
                dst += MR


@njit(inline="always", **_J)
def _row_tiles(M, pa, sai, sak, a0, packed_a, pc, sci, pp, pw, bbase, kc, j0, nc, i, p0, p1, acc, apan=0, aoff=0):
    """Tiles of A's MR rows from i against panels p0..p1 (pw columns each) of the packed block
    (columns j0 + p*pw...).
    A(i, k) is pa[a0 + i*sai + k*sak], or, with ``packed_a``, row i of its MR-row panel, the panel
    of rows i.. starting at (i // MR) * apan + aoff (apan 0: kc * MR, one k-block's panels)."""
    last = M - 1
    mr = min(MR, M - i)
    r = (i // MR) * (apan if apan > 0 else kc * MR) + aoff
    for p in range(p0, p1):
        j = j0 + p * pw
        nr = min(pw, j0 + nc - j)
        b0 = bbase + p * kc * pw
        if packed_a:  # panel i // MR: kc x MR, rows past M never stored (tile skips them)
            panel_tile(kc, pa, r, r + 1, r + 2, r + 3, r + 4, r + 5, r + 6, r + 7, MR,
                       pp, b0, pw, pc, i * sci + j, sci, mr, nr, acc)
        else:
            panel_tile(kc, pa, a0 + min(i, last) * sai, a0 + min(i + 1, last) * sai, a0 + min(i + 2, last) * sai,
                       a0 + min(i + 3, last) * sai, a0 + min(i + 4, last) * sai, a0 + min(i + 5, last) * sai,
                       a0 + min(i + 6, last) * sai, a0 + min(i + 7, last) * sai, sak,
                       pp, b0, pw, pc, i * sci + j, sci, mr, nr, acc)


@njit(**_J)
def gemm_packed(A, B, C, Bp, accumulate=False):
    """C = A @ B (or +=) for float32 2-D arrays of any strides (C's rows unit-stride), with a
    panel buffer ``Bp`` of at least ``pack_size(M)`` floats. One thread."""
    M, K = A.shape
    N = B.shape[1]
    if _degenerate(M, K, N, C, accumulate):
        return
    pa, pb, pc, pp = data_ptr(A), data_ptr(B), data_ptr(C), data_ptr(Bp)
    sai, sak = A.strides[0] // 4, A.strides[1] // 4
    sbk, sbj = B.strides[0] // 4, B.strides[1] // 4
    sci = C.strides[0] // 4
    packed_a = sak != 1
    pw = panel_width(N)
    ncb = _block_panels(-(-N // pw), pw) * pw  # columns per block: whole panels
    pq = data_ptr(Bp[KC * NC:])  # A's panels after B's
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        acc = accumulate or k0 > 0
        if packed_a:
            _pack_a_rows(pa, sai, sak, k0, k0 + kc, M, pq, kc * MR, k0)
        for j0 in range(0, N, ncb):
            nc = min(ncb, N - j0)
            panels = (nc + pw - 1) // pw
            for p in range(panels):
                _pack_panel(pb, sbk, sbj, k0, kc, j0 + p * pw, min(pw, nc - p * pw), pp, p * kc * pw, pw)
            for i in range(0, M, MR):
                _row_tiles(M, pq if packed_a else pa, sai, sak, k0 * sak, packed_a, pc, sci, pp, pw, 0, kc, j0,
                           nc, i, 0, panels, acc)


@njit(parallel=True, **_J)
def gemm_packed_threaded(A, B, C, Bp, accumulate=False):
    """``gemm_packed`` in one parallel region (same bits: every C element is still one FMA chain in
    k order). A transposed A is packed whole first; then each task takes a band of rows and GROUP
    panels of columns through every k-block on its own, packing those panels into its thread's
    part of ``Bp`` (``threaded_pack_size``). The first version shared each k-block's packing and
    tiles between the threads: two barriers per k-block, 24-96 per product, each a wait for the
    slower core of a shared machine (128 x 3072 x 512 on 2 threads: dW 109 -> 166 GFLOP/s).
    When SHARED_BANDS or more row bands would each pack the same panels, all of B is packed once
    instead (threads share the panels), then the tasks only compute (see SHARED_BANDS)."""
    M, K = A.shape
    N = B.shape[1]
    if _degenerate(M, K, N, C, accumulate):
        return
    pa, pb, pc, pp = data_ptr(A), data_ptr(B), data_ptr(C), data_ptr(Bp)
    sai, sak = A.strides[0] // 4, A.strides[1] // 4
    sbk, sbj = B.strides[0] // 4, B.strides[1] // 4
    sci = C.strides[0] // 4
    packed_a = sak != 1
    pw = panel_width(N)
    band, bands, groups = _task_grid(M, N)
    shared = bands >= SHARED_BANDS
    width = GROUP * pw
    n_p = (N + pw - 1) // pw
    pq = data_ptr(Bp[MAX_THREADS * KC * GROUP * PW_MAX:])  # A's panels (all of K) after the threads' B panels
    if packed_a:  # panel q: K x MR, k-block k0 at q * K * MR + k0 * MR; threads take k ranges
        chunk = max(MR, -(-K // (4 * MAX_THREADS)))
        for c in prange((K + chunk - 1) // chunk):
            _pack_a_rows(pa, sai, sak, c * chunk, min(K, (c + 1) * chunk), M, pq, K * MR, 0)
    pall = data_ptr(Bp[MAX_THREADS * KC * GROUP * PW_MAX + (M + MR) * K:])  # after A's panels
    if shared:  # every KC-block's panels once, as pack_all lays them out
        kblocks = (K + KC - 1) // KC
        for u in prange(kblocks * n_p):
            k0, p = (u // n_p) * KC, u % n_p
            _pack_panel(pb, sbk, sbj, k0, min(KC, K - k0), p * pw, min(pw, N - p * pw), pall,
                        k0 * n_p * pw + p * min(KC, K - k0) * pw, pw)
    for t in prange(bands * groups):
        g = t % groups
        r0 = (t // groups) * band * MR
        r1 = min(M, r0 + band * MR)
        j0 = g * width
        nc = min(width, N - j0)
        panels = (nc + pw - 1) // pw
        base = get_thread_id() * KC * GROUP * PW_MAX  # the thread's own panels: arithmetic never depends on it
        for k0 in range(0, K, KC):
            kc = min(KC, K - k0)
            acc = accumulate or k0 > 0
            if shared:
                for i in range(r0, r1, MR):
                    _row_tiles(M, pq if packed_a else pa, sai, sak, k0 * sak, packed_a, pc, sci, pall, pw,
                               k0 * n_p * pw, kc, 0, N, i, g * GROUP, g * GROUP + panels, acc, K * MR, k0 * MR)
                continue
            for p in range(panels):
                _pack_panel(pb, sbk, sbj, k0, kc, j0 + p * pw, min(pw, nc - p * pw), pp, base + p * kc * pw, pw)
            for i in range(r0, r1, MR):
                _row_tiles(M, pq if packed_a else pa, sai, sak, k0 * sak, packed_a, pc, sci, pp, pw, base, kc, j0,
                           nc, i, 0, panels, acc, K * MR, k0 * MR)


# Tasks of the threaded product: row bands of 8-32 tiles (64-256 rows), cut so there are >= 8
# tasks when C allows it (a 64-column C still gives 2 threads work). Each task packs its own panels,
# so bands below 8 tiles would pack B more often than they multiply it (128 x 8192 x 64 with 2-tile
# bands: 134 -> 97 GFLOP/s).
MIN_BAND, MAX_BAND = 8, 32
MAX_THREADS = config.NUMBA_NUM_THREADS  # the pool's size: get_thread_id() is below it


# With this many row bands or more, B's panels are packed once and shared instead of once per band:
# a 1024-row x W^T with W 64 x 8192 packed all of W^T in each of its 8 bands. Interleaved A/B on 2
# threads: that product 179 -> 213 GFLOP/s; 6-8 bands (a transformer's 2048-row products) +1-7%;
# 4 bands mixed (-3% .. +2%), so they keep packing per task, as do fewer.
SHARED_BANDS = 6


@njit(**_J)
def _task_grid(M, N):
    """(row tiles per task, row bands, column groups) of the threaded product (see MIN_BAND)."""
    groups = -(-N // (GROUP * panel_width(N)))
    rows = -(-M // MR)
    want = max(1, -(-8 // groups))  # bands wanted
    band = max(min(rows, MIN_BAND), min(MAX_BAND, -(-rows // want)))
    return band, -(-rows // band), groups


def threaded_pack_size(m: int, k: int, n: int) -> int:
    """Floats of the buffer ``gemm_packed_threaded`` needs for (m x k) @ (k x n)."""
    shared = prepacked_size(k, n) if _task_grid(m, n)[1] >= SHARED_BANDS else 0
    return MAX_THREADS * KC * GROUP * PW_MAX + (m + MR) * k + shared


# ---- B packed once, used for many products (a recurrent layer's R over every time step) ----------

def prepacked_size(k: int, n: int) -> int:
    """Floats of ``pack_all``'s output for a (k x n) B."""
    pw = panel_width(n)
    return k * ((n + pw - 1) // pw) * pw


@njit(**_J)
def pack_all(B, Bp):
    """Every KC-row block of B (any strides) as panels of pw = panel_width(N) columns: block k0's
    panel p at Bp[k0 * NP * pw + p * kc * pw] (NP = panels across N), for ``gemm_prepacked``."""
    K, N = B.shape
    pw = panel_width(N)
    n_p = (N + pw - 1) // pw
    pb, pp = data_ptr(B), data_ptr(Bp)
    sbk, sbj = B.strides[0] // 4, B.strides[1] // 4
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        for p in range(n_p):
            _pack_panel(pb, sbk, sbj, k0, kc, p * pw, min(pw, N - p * pw), pp, k0 * n_p * pw + p * kc * pw, pw)


@njit(**_J)
def gemm_prepacked(A, Bp, N, C, accumulate=False):
    """C (+)= A @ B with B (K x N, K = A's columns) given as ``pack_all`` left it; A any strides,
    C's rows unit-stride. One thread (callers split rows: a recurrent layer's batch chunks).
    The same FMA chains as ``gemm``, so the same bits."""
    M, K = A.shape
    if _degenerate(M, K, N, C, accumulate):
        return
    pw = panel_width(N)
    n_p = (N + pw - 1) // pw
    step = _block_panels(n_p, pw)  # panels per pass: <= NC columns stay in L2 while the row tiles pass
    pa, pc, pp = data_ptr(A), data_ptr(C), data_ptr(Bp)
    sai, sak = A.strides[0] // 4, A.strides[1] // 4
    sci = C.strides[0] // 4
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        acc = accumulate or k0 > 0
        for p0 in range(0, n_p, step):
            for i in range(0, M, MR):
                _row_tiles(M, pa, sai, sak, k0 * sak, False, pc, sci, pp, pw, k0 * n_p * pw, kc, 0, N, i, p0,
                           min(n_p, p0 + step), acc)


def matmul_packed(a, b, bp, c):
    """c = a @ b from Numba code: float32 reads b from ``bp`` (what ``pack_all(b, bp)`` wrote),
    float64 (the gradient checks) runs plain loops on b itself."""
    matmul_into(a, b, c)


@overload(matmul_packed, jit_options=_J)
def _matmul_packed_jit(a, b, bp, c):
    if all(isinstance(x, types.Array) and x.dtype == types.float32 for x in (a, b, bp, c)):
        def impl(a, b, bp, c):
            gemm_prepacked(a, bp, c.shape[1], c, False)
        return impl

    def loops(a, b, bp, c):
        matmul_into(a, b, c, False, False)
    return loops


def matmul_panels(a, b, c, buf, accumulate=False):
    """c (+)= a @ b from Numba code, any strides: float32 on ``gemm_packed`` with the panel buffer
    ``buf`` (``pack_size(0)`` floats will do when a's rows are unit-stride); float64 plain loops."""
    matmul_into(a, b, c, accumulate)


@overload(matmul_panels, jit_options=_J)
def _matmul_panels_jit(a, b, c, buf, accumulate=False):
    if all(isinstance(x, types.Array) and x.dtype == types.float32 for x in (a, b, c, buf)):
        def impl(a, b, c, buf, accumulate=False):
            gemm_packed(a, b, c, buf, accumulate)
        return impl

    def loops(a, b, c, buf, accumulate=False):
        matmul_into(a, b, c, accumulate, False)
    return loops


_buffer = np.empty(0, np.float32)


def panel_buffer(m: int, k: int = 0, n: int = 0) -> np.ndarray:
    """The process's panel buffer, grown for an (m x k) @ (k x n) product on either kernel (the
    products run one at a time); 64-byte aligned, so no panel row straddles two cache lines (see
    backend.aligned)."""
    global _buffer
    need = max(pack_size(m), threaded_pack_size(m, k, n))
    if _buffer.size < need:
        _buffer = aligned_zeros(need)
    return _buffer
