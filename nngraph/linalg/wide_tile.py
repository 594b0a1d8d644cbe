"""The packed products' micro-kernel: 8 x 48 tiles (three vectors per row) on AVX-512.

``gemm.tile`` (8 x 32: 16 accumulators, two B vectors and one broadcast per row, 2 FMAs per
broadcast) runs from L1 at ~150 GFLOP/s on a 170 GFLOP/s Xeon; the same loop over three B vectors
(24 accumulators, 28 of 32 registers, 3 FMAs per broadcast: 11 loads per 24 FMAs instead of 10 per
16) runs at ~170, the register peak (measured one after the other in one process,
tools-style min of 3; the machine's own variation is +-15% between processes). Packed panels
(``linalg.packed``) are the only B layout wide enough to use it: their width ``panel_width(N)`` is
48 floats on AVX-512 when N >= 128 (below that a 16-column edge panel would cost more than the
wide tiles save), otherwise ``gemm.NR``.

The arithmetic is ``tile``'s: each C element is one FMA chain in k order, so the bits equal
``gemm``'s whatever the panel width. Edge panels of <= NR columns go to ``tile`` itself (it reads
B rows ``sbk`` = panel-width apart).
"""
from __future__ import annotations

from numba import njit

from .gemm import MR, NR, tile
from .vec import LANES, prefetch, vfma, vload, vload_n, vsplat, vstore_n, vzero

_J = dict(cache=True, error_model="numpy", boundscheck=False)

WIDE = 3 * LANES if LANES == 16 else NR  # AVX2's 16 registers hold no 3-vector tile
WIDE_MIN_N = 128


@njit(**_J)
def panel_width(n: int) -> int:
    """Columns per packed panel for a B of n columns (see the module docstring); Python or Numba."""
    return WIDE if n >= WIDE_MIN_N else NR


@njit(inline="always", **_J)
def _ld(pc, c, n, row, mr, acc):
    """C's current values of one tile row part (zeros past the edge or when not accumulating)."""
    return vload_n(pc, c, n if (acc and row < mr) else 0)


@njit(inline="always", **_J)
def _st(pc, c, v0, v1, v2, nr):
    vstore_n(pc, c, v0, nr)
    vstore_n(pc, c + LANES, v1, nr - LANES)
    vstore_n(pc, c + 2 * LANES, v2, nr - 2 * LANES)


@njit(**_J)
def _tile3(K, pa, r0, r1, r2, r3, r4, r5, r6, r7, sak, pb, b0, pc, c0, sci, mr, nr, acc):
    """C[c0 + i*sci + j] (+)= sum_k pa[r_i + k*sak] * pb[b0 + k*WIDE + j], i < mr <= 8, j < nr <= WIDE
    (AVX-512 only). Rows i >= mr must still be valid addresses (callers repeat the last row)."""
    m1, m2 = nr - LANES, nr - 2 * LANES
    if not acc:  # C's lines, written at the end, are fetched while the tile computes
        for i in range(mr):
            prefetch(pc, c0 + i * sci, True); prefetch(pc, c0 + i * sci + LANES, True)
            prefetch(pc, c0 + i * sci + 2 * LANES, True)
    c00 = _ld(pc, c0, nr, 0, mr, acc); c01 = _ld(pc, c0 + LANES, m1, 0, mr, acc); c02 = _ld(pc, c0 + 2 * LANES, m2, 0, mr, acc)
    c = c0 + sci
    c10 = _ld(pc, c, nr, 1, mr, acc); c11 = _ld(pc, c + LANES, m1, 1, mr, acc); c12 = _ld(pc, c + 2 * LANES, m2, 1, mr, acc)
    c = c0 + 2 * sci
    c20 = _ld(pc, c, nr, 2, mr, acc); c21 = _ld(pc, c + LANES, m1, 2, mr, acc); c22 = _ld(pc, c + 2 * LANES, m2, 2, mr, acc)
    c = c0 + 3 * sci
    c30 = _ld(pc, c, nr, 3, mr, acc); c31 = _ld(pc, c + LANES, m1, 3, mr, acc); c32 = _ld(pc, c + 2 * LANES, m2, 3, mr, acc)
    c = c0 + 4 * sci
    c40 = _ld(pc, c, nr, 4, mr, acc); c41 = _ld(pc, c + LANES, m1, 4, mr, acc); c42 = _ld(pc, c + 2 * LANES, m2, 4, mr, acc)
    c = c0 + 5 * sci
    c50 = _ld(pc, c, nr, 5, mr, acc); c51 = _ld(pc, c + LANES, m1, 5, mr, acc); c52 = _ld(pc, c + 2 * LANES, m2, 5, mr, acc)
    c = c0 + 6 * sci
    c60 = _ld(pc, c, nr, 6, mr, acc); c61 = _ld(pc, c + LANES, m1, 6, mr, acc); c62 = _ld(pc, c + 2 * LANES, m2, 6, mr, acc)
    c = c0 + 7 * sci
    c70 = _ld(pc, c, nr, 7, mr, acc); c71 = _ld(pc, c + LANES, m1, 7, mr, acc); c72 = _ld(pc, c + 2 * LANES, m2, 7, mr, acc)
    for k in range(K):
        rb = b0 + k * WIDE
        x0 = vload(pb, rb)  # nr > NR: the first two vectors are whole
        x1 = vload(pb, rb + LANES)
        x2 = vload_n(pb, rb + 2 * LANES, m2)  # an edge panel's padding is never read
        o = k * sak
        a = vsplat(pa, r0 + o); c00 = vfma(a, x0, c00); c01 = vfma(a, x1, c01); c02 = vfma(a, x2, c02)
        a = vsplat(pa, r1 + o); c10 = vfma(a, x0, c10); c11 = vfma(a, x1, c11); c12 = vfma(a, x2, c12)
        a = vsplat(pa, r2 + o); c20 = vfma(a, x0, c20); c21 = vfma(a, x1, c21); c22 = vfma(a, x2, c22)
        a = vsplat(pa, r3 + o); c30 = vfma(a, x0, c30); c31 = vfma(a, x1, c31); c32 = vfma(a, x2, c32)
        a = vsplat(pa, r4 + o); c40 = vfma(a, x0, c40); c41 = vfma(a, x1, c41); c42 = vfma(a, x2, c42)
        a = vsplat(pa, r5 + o); c50 = vfma(a, x0, c50); c51 = vfma(a, x1, c51); c52 = vfma(a, x2, c52)
        a = vsplat(pa, r6 + o); c60 = vfma(a, x0, c60); c61 = vfma(a, x1, c61); c62 = vfma(a, x2, c62)
        a = vsplat(pa, r7 + o); c70 = vfma(a, x0, c70); c71 = vfma(a, x1, c71); c72 = vfma(a, x2, c72)
    _st(pc, c0, c00, c01, c02, nr)
    if mr > 1:
        _st(pc, c0 + sci, c10, c11, c12, nr)
    if mr > 2:
        _st(pc, c0 + 2 * sci, c20, c21, c22, nr)
    if mr > 3:
        _st(pc, c0 + 3 * sci, c30, c31, c32, nr)
    if mr > 4:
        _st(pc, c0 + 4 * sci, c40, c41, c42, nr)
    if mr > 5:
        _st(pc, c0 + 5 * sci, c50, c51, c52, nr)
    if mr > 6:
        _st(pc, c0 + 6 * sci, c60, c61, c62, nr)
    if mr > 7:
        _st(pc, c0 + 7 * sci, c70, c71, c72, nr)


@njit(inline="always", **_J)
def panel_tile(K, pa, r0, r1, r2, r3, r4, r5, r6, r7, sak, pb, b0, pw, pc, c0, sci, mr, nr, acc):
    """One MR-row tile against a packed panel of width ``pw`` (``panel_width``), nr <= pw of its
    columns valid: the 3-vector kernel when the panel is wide and more than NR columns are used,
    ``gemm.tile`` otherwise."""
    if WIDE > NR and pw == WIDE and nr > NR:
        _tile3(K, pa, r0, r1, r2, r3, r4, r5, r6, r7, sak, pb, b0, pc, c0, sci, mr, nr, acc)
    else:
        tile(K, pa, r0, r1, r2, r3, r4, r5, r6, r7, sak, pb, b0, pw, None, pc, c0, sci, mr, nr, acc)
