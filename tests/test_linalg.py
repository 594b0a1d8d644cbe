"""The vector GEMM kernels (nngraph.linalg): exact shapes, edges, layouts, accumulation, threads."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from nngraph.linalg.gemm import KC, MR, NR, gemm, gemm_threaded, matmul_into

SHAPES = [(1, 1, 1), (7, 3, 5), (MR, 32, NR), (MR + 1, 33, NR + 1), (17, 100, 70), (64, 128, 512),
          (5, KC + 3, 40), (3, 0, 4), (0, 4, 3), (2, 2 * KC + 1, 17)]


def _operands(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32),
            rng.standard_normal((m, n)).astype(np.float32))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gemm_matches_float64_product(shape):
    a, b, c = _operands(*shape)
    want = a.astype(np.float64) @ b
    out = c.copy()
    gemm(a, b, out)
    np.testing.assert_allclose(out, want, atol=1e-4 * max(1, shape[1]) ** 0.5, rtol=0)
    acc = c.copy()
    gemm(a, b, acc, True)
    np.testing.assert_allclose(acc, c + want, atol=1e-4 * max(1, shape[1]) ** 0.5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_threads_give_the_same_bits(shape):
    a, b, c = _operands(*shape, seed=1)
    one, two = c.copy(), c.copy()
    gemm(a, b, one, True)
    gemm_threaded(a, b, two, True)
    assert np.array_equal(one, two)


def test_strided_a_and_views_of_b_and_c():
    """A may be any view (transposed, sliced); B and C rows unit-stride but not contiguous blocks;
    nothing outside C's block is written."""
    rng = np.random.default_rng(2)
    big_a = rng.standard_normal((70, 90)).astype(np.float32)
    a = big_a[5:60:3, 2:80].T          # (78, 19), non-unit strides both ways
    big_b = rng.standard_normal((40, 50)).astype(np.float32)
    b = big_b[3:22, 7:44]              # (19, 37), row stride 50
    big_c = rng.standard_normal((100, 60)).astype(np.float32)
    before = big_c.copy()
    c = big_c[10:88, 5:42]
    gemm(a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, atol=2e-5)
    mask = np.ones_like(big_c, bool)
    mask[10:88, 5:42] = False
    assert np.array_equal(big_c[mask], before[mask])


def test_matmul_into_from_python_and_numba_both_dtypes():
    @njit
    def jitted(a, b, c):
        matmul_into(a, b, c, True, False)

    for dtype in (np.float32, np.float64):
        a, b, c = (x.astype(dtype) for x in _operands(9, 13, 21, seed=3))
        want = c.astype(np.float64) + a.astype(np.float64) @ b
        for f in (lambda *args: matmul_into(*args, accumulate=True), jitted):
            out = c.copy()
            f(a, b, out)
            np.testing.assert_allclose(out, want, atol=1e-5 if dtype == np.float32 else 1e-12)
        # a B matrix whose rows are not unit-stride takes the plain loops, same result
        out = c.copy()
        matmul_into(a, np.asfortranarray(b), out, True)
        np.testing.assert_allclose(out, want, atol=1e-5 if dtype == np.float32 else 1e-12)


def test_products_over_offset_tables():
    """gemm_tables / gemm_nt_tables: rows anywhere in flat buffers; float32 vector kernels vs the
    float64 loops on the same addresses (edges in M and N, K over several blocks)."""
    from nngraph.linalg.gemm import gemm_tables
    from nngraph.linalg.gemm_nt import gemm_nt_tables

    rng = np.random.default_rng(4)
    M, K, N = 11, 2 * KC + 44, 45
    a, b = rng.standard_normal(5000), rng.standard_normal(20000)
    arow = rng.integers(0, 1000, M).astype(np.int64)
    brow = rng.integers(0, 19000 - N, K).astype(np.int64)
    c = rng.standard_normal(M * (N + 7))
    want = c.copy()
    gemm_tables(K, a, arow, 3, b, brow, 5, want, 2, N + 7, M, N - 5, True)            # float64: loops
    got = c.astype(np.float32)
    gemm_tables(K, a.astype(np.float32), arow, 3, b.astype(np.float32), brow, 5, got, 2, N + 7, M, N - 5, True)
    np.testing.assert_allclose(got, want, atol=3e-4)
    nt_rows = rng.integers(0, 19000 - K, N).astype(np.int64)
    want = c.copy()
    gemm_nt_tables(K, a, arow, b, nt_rows, want, 0, N + 7, M, N, False)
    got = c.astype(np.float32)
    gemm_nt_tables(K, a.astype(np.float32), arow, b.astype(np.float32), nt_rows, got, 0, N + 7, M, N, False)
    np.testing.assert_allclose(got, want, atol=3e-4)


# the packed path: B blocks of KC x NC in panels; shapes crossing every block edge
PACKED_SHAPES = [(1, 1, 1), (MR, 16, 3), (MR + 3, 33, NR + 5), (37, 300, 70), (130, 2 * 256 + 3, 1100),
                 (9, 256, 33), (300, 17, 496), (20, 40, 512), (13, 7, 600), (390, 300, 60), (1100, 20, 130)]


@pytest.mark.parametrize("shape", PACKED_SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["nn", "tn", "nt", "tt"])
def test_packed_gemm_same_bits_as_gemm_and_over_threads(shape, layout):
    """gemm_packed (B packed into panels, a transposed A packed too) computes each element as the
    same FMA chain as gemm: bit-identical to it, to the threaded version, and to float64 within
    rounding; accumulating continues the chain; nothing outside C's block is written."""
    from nngraph.linalg.packed import (KC as PKC, NC, SHARED_BANDS, _task_grid, gemm_packed, gemm_packed_threaded,
                                       panel_buffer)

    assert (PKC, NC) == (256, 576)  # the shapes above cross these block edges (1100, 600: two column blocks)
    assert _task_grid(390, 60)[1] >= SHARED_BANDS and _task_grid(1100, 130)[1] >= SHARED_BANDS  # shared B (AVX2 too)
    m, k, n = shape
    rng = np.random.default_rng(5)
    a = rng.standard_normal((k, m) if layout[0] == "t" else (m, k)).astype(np.float32)
    a = a.T if layout[0] == "t" else a
    b = rng.standard_normal((n, k) if layout[1] == "t" else (k, n)).astype(np.float32)
    b = b.T if layout[1] == "t" else b
    big_c = rng.standard_normal((m + 2, n + 9)).astype(np.float32)
    before = big_c.copy()
    c = big_c[1:m + 1, 4:n + 4]
    buf = panel_buffer(m, k, n)
    gemm_packed(a, b, c, buf)
    plain = np.zeros((m, n), np.float32)
    gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), plain)
    assert np.array_equal(c, plain)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, atol=1e-4 * k ** 0.5, rtol=0)
    mask = np.ones_like(big_c, bool)
    mask[1:m + 1, 4:n + 4] = False
    assert np.array_equal(big_c[mask], before[mask])
    two = np.empty_like(plain)
    gemm_packed_threaded(a, b, two, buf)
    assert np.array_equal(two, plain)
    acc1, acc2 = plain.copy(), plain.copy()
    gemm_packed(a, b, acc1, buf, True)
    gemm_packed_threaded(a, b, acc2, buf, True)
    gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), plain, True)
    assert np.array_equal(acc1, plain) and np.array_equal(acc2, plain)


def test_dense_products_take_the_packed_path_and_match_numpy():
    """matmul / matmul_nt route large products to the packed kernels (x W^T, dz^T x, dz W)."""
    from nngraph.linalg import gemm as g

    rng = np.random.default_rng(6)
    x = rng.standard_normal((128, 700)).astype(np.float32)
    w = rng.standard_normal((300, 700)).astype(np.float32)
    dz = rng.standard_normal((128, 300)).astype(np.float32)
    assert g._packed_pays(128, 700, 300)
    y, dw, dx = np.empty((128, 300), np.float32), np.empty((300, 700), np.float32), np.empty((128, 700), np.float32)
    g.matmul_nt(x, w, y)
    g.matmul(dz.T, x, dw)
    g.matmul(dz, w, dx)
    for got, want in ((y, x.astype(np.float64) @ w.T), (dw, dz.T.astype(np.float64) @ x), (dx, dz.astype(np.float64) @ w)):
        np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_every_nth_element_gather_and_scatter_add(step):
    """rows.take_every / add_every (a strided conv's im2col / col2im rows): float32 masked vectors
    equal float64 loops and plain numpy at every length around the vector width, and touch nothing
    outside the elements they name."""
    from nngraph.linalg.rows import add_every, take_every

    @njit
    def take(src, s0, st, dst, d0, n):
        take_every(src, s0, st, dst, d0, n)

    @njit
    def add(src, s0, dst, d0, st, n):
        add_every(src, s0, dst, d0, st, n)

    rng = np.random.default_rng(7)
    for n in (0, 1, 7, 15, 16, 17, 31, 32, 33, 70):
        src = rng.standard_normal(3 + step * n + 1).astype(np.float32)
        dst = rng.standard_normal(n + 9).astype(np.float32)
        want = dst.copy()
        want[5:5 + n] = src[3:3 + step * n:step]
        got = dst.copy()
        take(src, 3, step, got, 5, n)
        assert np.array_equal(got, want)
        got64 = dst.astype(np.float64)
        take(src.astype(np.float64), 3, step, got64, 5, n)
        assert np.array_equal(got64, want.astype(np.float64))
        big = rng.standard_normal(2 + step * n + 1).astype(np.float32)
        want = big.copy()
        want[2:2 + step * n:step] += src[3:3 + n]
        got = big.copy()
        add(src, 3, got, 2, step, n)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 512, 2048), (5, 300, 70), (MR + 1, 2 * 256 + 7, NR + 3)], ids=str)
def test_prepacked_b_serves_many_products_with_gemms_bits(shape):
    """pack_all + gemm_prepacked (a recurrent layer packs R once per pass): gemm's bits, for a
    row-major B and for a column slice of a wider one, accumulating or not."""
    from nngraph.backend.aligned import aligned_zeros
    from nngraph.linalg.packed import gemm_prepacked, pack_all, prepacked_size

    m, k, n = shape
    rng = np.random.default_rng(8)
    wide = rng.standard_normal((k, n + 5)).astype(np.float32)
    for b in (np.ascontiguousarray(wide[:, :n]), wide[:, 5:]):
        bp = aligned_zeros(prepacked_size(k, n))
        pack_all(b, bp)
        for accumulate in (False, True):
            a = rng.standard_normal((m, k)).astype(np.float32)
            c0 = rng.standard_normal((m, n)).astype(np.float32)
            got, want = c0.copy(), c0.copy()
            gemm_prepacked(a, bp, n, got, accumulate)
            gemm(a, np.ascontiguousarray(b), want, accumulate)
            assert np.array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_take_rows_equals_np_take_and_keeps_its_errors(dtype):
    from nngraph.linalg.rows import take_rows

    rng = np.random.default_rng(3)
    src = (rng.standard_normal((37, 5, 3)) * 50).astype(dtype)
    idx = rng.permutation(37)[:11]
    out = np.empty((11, 5, 3), dtype)
    assert take_rows(src, idx, out) is out
    np.testing.assert_array_equal(out, np.take(src, idx, axis=0))
    ids = rng.integers(0, 9, 37)  # 1-D targets
    t = np.empty(11, ids.dtype)
    np.testing.assert_array_equal(take_rows(ids, idx, t), ids[idx])
    neg = idx - 37  # negative indices: np.take's wrap-around, through the fallback
    np.testing.assert_array_equal(take_rows(src, neg, out), np.take(src, idx, axis=0))
    with pytest.raises(IndexError):
        take_rows(src, np.array([0, 37]), np.empty((2, 5, 3), dtype))
    strided = src[::2]  # not contiguous: np.take
    np.testing.assert_array_equal(take_rows(strided, idx % 19, out), np.take(strided, idx % 19, axis=0))
