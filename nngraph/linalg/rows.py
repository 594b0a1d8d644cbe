"""Element-wise passes over short rows of flat buffers (a conv's output rows, a padded image's
interior), on masked vectors (linalg.vec) in float32.

Why: LLVM vectorises a loop only when it runs at least one full vector, so rows of 14 or 28
floats (LeNet's planes) ran scalar; one masked vector op per LANES elements covers any length. Every
function takes flat arrays with (start, row stride) per side, ``rows`` rows of ``n`` elements:
    src[s0 + r * ss + i]  ->  dst[d0 + r * ds + i]      r < rows, i < n
float64 (the gradient checks) runs plain loops with the same meaning. Callable from Numba code.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types, uint64
from numba.extending import overload

from .vec import (LANES, data_ptr, transpose_block, vadd, veven, vfma, vhmax, vinterleave_hi, vinterleave_lo, vload,
                  vload_n, vmax, vsplat_value, vstore_n, vsum, vwhere_positive, vzero)

_J = dict(cache=True, error_model="numpy", boundscheck=False)


def copy_rows(src, s0, ss, dst, d0, ds, rows, n):
    """dst rows = src rows."""
    for r in range(rows):
        dst[d0 + r * ds:d0 + r * ds + n] = src[s0 + r * ss:s0 + r * ss + n]


def bias_relu_rows(src, s0, ss, dst, d0, ds, rows, n, bias, relu):
    """dst = src + bias, then max(., 0) when ``relu``."""
    for r in range(rows):
        v = src[s0 + r * ss:s0 + r * ss + n] + bias
        dst[d0 + r * ds:d0 + r * ds + n] = np.maximum(v, 0) if relu else v


def relu_grad_rows(g, gs0, gss, y, ys0, yss, dst, d0, ds, rows, n, relu):
    """dst = g where y > 0 else 0 (just g without ``relu``), rows of g and y alike; returns sum(dst)."""
    total = 0.0
    for r in range(rows):
        v = g[gs0 + r * gss:gs0 + r * gss + n]
        if relu:
            v = np.where(y[ys0 + r * yss:ys0 + r * yss + n] > 0, v, 0)
        dst[d0 + r * ds:d0 + r * ds + n] = v
        total += v.sum()
    return total


def _is_f32(*arrays) -> bool:
    return all(isinstance(a, types.Array) and a.dtype == types.float32 for a in arrays)


@overload(copy_rows, jit_options=_J)
def _copy_rows_jit(src, s0, ss, dst, d0, ds, rows, n):
    if _is_f32(src, dst):
        def impl(src, s0, ss, dst, d0, ds, rows, n):
            ps, pd = data_ptr(src), data_ptr(dst)
            for r in range(rows):
                a, b = s0 + r * ss, d0 + r * ds
                for i in range(0, n, LANES):
                    vstore_n(pd, b + i, vload_n(ps, a + i, n - i), n - i)
        return impl

    def loops(src, s0, ss, dst, d0, ds, rows, n):
        for r in range(rows):
            for i in range(n):
                dst[d0 + r * ds + i] = src[s0 + r * ss + i]
    return loops


@overload(bias_relu_rows, jit_options=_J)
def _bias_relu_rows_jit(src, s0, ss, dst, d0, ds, rows, n, bias, relu):
    if _is_f32(src, dst):
        def impl(src, s0, ss, dst, d0, ds, rows, n, bias, relu):
            ps, pd = data_ptr(src), data_ptr(dst)
            b, zero = vsplat_value(np.float32(bias)), vzero()
            for r in range(rows):
                a, c = s0 + r * ss, d0 + r * ds
                for i in range(0, n, LANES):
                    v = vadd(vload_n(ps, a + i, n - i), b)
                    if relu:
                        v = vmax(v, zero)
                    vstore_n(pd, c + i, v, n - i)
        return impl

    def loops(src, s0, ss, dst, d0, ds, rows, n, bias, relu):
        for r in range(rows):
            for i in range(n):
                v = src[s0 + r * ss + i] + bias
                dst[d0 + r * ds + i] = max(v, 0) if relu else v
    return loops


@overload(relu_grad_rows, jit_options=_J)
def _relu_grad_rows_jit(g, gs0, gss, y, ys0, yss, dst, d0, ds, rows, n, relu):
    if _is_f32(g, y, dst):
        def impl(g, gs0, gss, y, ys0, yss, dst, d0, ds, rows, n, relu):
            pg, py, pd = data_ptr(g), data_ptr(y), data_ptr(dst)
            acc = vzero()
            for r in range(rows):
                a, b, c = gs0 + r * gss, ys0 + r * yss, d0 + r * ds
                for i in range(0, n, LANES):
                    v = vload_n(pg, a + i, n - i)
                    if relu:
                        v = vwhere_positive(vload_n(py, b + i, n - i), v)
                    vstore_n(pd, c + i, v, n - i)
                    acc = vadd(acc, v)
            return vsum(acc)
        return impl

    def loops(g, gs0, gss, y, ys0, yss, dst, d0, ds, rows, n, relu):
        total = dst.dtype.type(0)
        for r in range(rows):
            for i in range(n):
                v = g[gs0 + r * gss + i]
                if relu and not y[ys0 + r * yss + i] > 0:
                    v = 0.0
                dst[d0 + r * ds + i] = v
                total += v
        return total
    return loops


def transpose_rows(src, s0, ss, dst, d0, ds, rows, cols):
    """dst[d0 + j*ds + i] = src[s0 + i*ss + j] for i < rows, j < cols: a (rows x cols) matrix whose
    rows start ss apart, written transposed with rows ds apart."""
    for i in range(rows):
        for j in range(cols):
            dst[d0 + j * ds + i] = src[s0 + i * ss + j]


@overload(transpose_rows, jit_options=_J)
def _transpose_rows_jit(src, s0, ss, dst, d0, ds, rows, cols):
    if _is_f32(src, dst):
        def impl(src, s0, ss, dst, d0, ds, rows, cols):
            ps, pd = data_ptr(src), data_ptr(dst)
            for i in range(0, rows, LANES):  # LANES x LANES blocks, transposed in registers
                for j in range(0, cols, LANES):
                    transpose_block(ps, s0 + i * ss + j, ss, pd, d0 + j * ds + i, ds,
                                    min(LANES, rows - i), min(LANES, cols - j))
        return impl

    def loops(src, s0, ss, dst, d0, ds, rows, cols):
        for i in range(rows):
            for j in range(cols):
                dst[d0 + j * ds + i] = src[s0 + i * ss + j]
    return loops


# ---- reductions along one row: attention's softmax (max, sum) and its backward (a dot product) ----
# float32 on vectors, summed in float32 lanes and reduced by a fixed tree (the same bits on every
# thread); float64 in four scalar chains, the sums in float64. Per 64 x 64 attention block the
# scalar float32 max and float64 sums took 0.46 of the forward pass's 2.5 ms.

def row_max(src, s0, n):
    """max(src[s0 : s0 + n]), n >= 1."""
    return src[s0:s0 + n].max()


def row_sum(src, s0, n):
    """sum(src[s0 : s0 + n])."""
    return src[s0:s0 + n].sum()


def row_dot(a, a0, b, b0, n):
    """sum over j < n of a[a0 + j] * b[b0 + j]."""
    return float(np.dot(a[a0:a0 + n], b[b0:b0 + n]))


@overload(row_max, jit_options=_J)
def _row_max_jit(src, s0, n):
    if _is_f32(src):
        def impl(src, s0, n):
            if n < LANES:
                m = src[s0]
                for j in range(1, n):
                    m = max(m, src[s0 + j])
                return m
            ps = data_ptr(src)
            acc = vload(ps, s0)
            for j in range(LANES, n - LANES + 1, LANES):
                acc = vmax(acc, vload(ps, s0 + j))
            if n % LANES:  # the last LANES elements again: max does not mind the overlap
                acc = vmax(acc, vload(ps, s0 + n - LANES))
            return vhmax(acc)
        return impl

    def chains(src, s0, n):
        q = n - n % 4
        m0 = m1 = m2 = m3 = src[s0]
        for j in range(0, q, 4):
            m0 = max(m0, src[s0 + j])
            m1 = max(m1, src[s0 + j + 1])
            m2 = max(m2, src[s0 + j + 2])
            m3 = max(m3, src[s0 + j + 3])
        for j in range(q, n):
            m0 = max(m0, src[s0 + j])
        return max(max(m0, m1), max(m2, m3))
    return chains


@overload(row_sum, jit_options=_J)
def _row_sum_jit(src, s0, n):
    if _is_f32(src):
        def impl(src, s0, n):
            ps = data_ptr(src)
            acc = vzero()
            for j in range(0, n, LANES):
                acc = vadd(acc, vload_n(ps, s0 + j, n - j))
            return vsum(acc)
        return impl

    def chains(src, s0, n):
        q = n - n % 4
        t0 = t1 = t2 = t3 = 0.0
        for j in range(0, q, 4):
            t0 += src[s0 + j]
            t1 += src[s0 + j + 1]
            t2 += src[s0 + j + 2]
            t3 += src[s0 + j + 3]
        for j in range(q, n):
            t0 += src[s0 + j]
        return (t0 + t1) + (t2 + t3)
    return chains


@overload(row_dot, jit_options=_J)
def _row_dot_jit(a, a0, b, b0, n):
    if _is_f32(a, b):
        def impl(a, a0, b, b0, n):
            pa, pb = data_ptr(a), data_ptr(b)
            acc = vzero()
            for j in range(0, n, LANES):
                acc = vfma(vload_n(pa, a0 + j, n - j), vload_n(pb, b0 + j, n - j), acc)
            return vsum(acc)
        return impl

    def chains(a, a0, b, b0, n):
        q = n - n % 4
        t0 = t1 = t2 = t3 = 0.0
        for j in range(0, q, 4):
            t0 += a[a0 + j] * b[b0 + j]
            t1 += a[a0 + j + 1] * b[b0 + j + 1]
            t2 += a[a0 + j + 2] * b[b0 + j + 2]
            t3 += a[a0 + j + 3] * b[b0 + j + 3]
        for j in range(q, n):
            t0 += a[a0 + j] * b[b0 + j]
        return (t0 + t1) + (t2 + t3)
    return chains


# ---- every second element: a stride-2 conv's unfolding (im2col) and its adjoint (col2im) ---------
# Masked vectors whatever the row length (a 3x3 stride-2 conv's output rows are 15 or 16 long):
# two masked loads and one even-lane shuffle per LANES outputs. Unfolding 64 samples, scalar vs
# this (best of 30, one thread): 32x32x32 3x3 s2 same 3.26 -> 2.18 ms, 3x64x64 5x5 s2 2.48 -> 1.61,
# 64x32x32 3x3 s2 valid 6.61 -> 4.67.

def take_every(src, s0, step, dst, d0, n):
    """dst[d0 + b] = src[s0 + b * step] for b < n (flat arrays; every index named is in bounds)."""
    for b in range(n):
        dst[d0 + b] = src[s0 + b * step]


def add_every(src, s0, dst, d0, step, n):
    """dst[d0 + b * step] += src[s0 + b] for b < n."""
    for b in range(n):
        dst[d0 + b * step] += src[s0 + b]


@overload(take_every, jit_options=_J, inline="always")
def _take_every_jit(src, s0, step, dst, d0, n):
    if _is_f32(src, dst):
        def impl(src, s0, step, dst, d0, n):
            s, d, st, nu = uint64(s0), uint64(d0), uint64(step), uint64(max(n, 0))
            ps, pd = data_ptr(src), data_ptr(dst)
            if step == 2:  # LANES outputs from 2 LANES - 1 inputs: two masked loads, one shuffle
                for b in range(uint64(0), nu, uint64(LANES)):
                    r = min(nu - b, uint64(LANES))
                    at, need = s + uint64(2) * b, int(2 * r - 1)
                    v = veven(vload_n(ps, at, min(need, LANES)), vload_n(ps, at + uint64(LANES), need - LANES))
                    vstore_n(pd, d + b, v, r)
            elif step == 1:
                for b in range(uint64(0), nu, uint64(LANES)):
                    r = min(nu - b, uint64(LANES))
                    vstore_n(pd, d + b, vload_n(ps, s + b, r), r)
            else:
                for i in range(nu):
                    dst[d + i] = src[s + i * st]
        return impl

    def loops(src, s0, step, dst, d0, n):
        for b in range(n):
            dst[d0 + b] = src[s0 + b * step]
    return loops


@overload(add_every, jit_options=_J, inline="always")
def _add_every_jit(src, s0, dst, d0, step, n):
    if _is_f32(src, dst):
        def impl(src, s0, dst, d0, step, n):
            s, d, st, nu = uint64(s0), uint64(d0), uint64(step), uint64(max(n, 0))
            if step == 2:  # v0 0 v1 0 ... added over 2 LANES - 1 outputs: the odd ones between gain +0
                ps, pd = data_ptr(src), data_ptr(dst)
                zero = vzero()
                for b in range(uint64(0), nu, uint64(LANES)):
                    r = min(nu - b, uint64(LANES))
                    v = vload_n(ps, s + b, r)
                    at, need = d + uint64(2) * b, int(2 * r - 1)
                    lo_n, hi_n = min(need, LANES), need - LANES
                    vstore_n(pd, at, vadd(vload_n(pd, at, lo_n), vinterleave_lo(v, zero)), lo_n)
                    if hi_n > 0:
                        hi = vadd(vload_n(pd, at + uint64(LANES), hi_n), vinterleave_hi(v, zero))
                        vstore_n(pd, at + uint64(LANES), hi, hi_n)
            else:
                for i in range(nu):
                    dst[d + i * st] += src[s + i]
        return impl

    def loops(src, s0, dst, d0, step, n):
        for b in range(n):
            dst[d0 + b * step] += src[s0 + b]
    return loops


@njit(**_J)
def _take_rows_kernel(src, idx, out) -> bool:
    n = src.shape[0]
    for i in range(idx.shape[0]):
        if idx[i] < 0 or idx[i] >= n:
            return False
    width = src.shape[1]
    for i in range(idx.shape[0]):
        s, d = src[idx[i]], out[i]
        for j in range(width):
            d[j] = s[j]
    return True


def take_rows(src: np.ndarray, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.take(src, idx, axis=0, out=out)``, faster for in-memory arrays: a batch's rows copied by
    one compiled loop. Why: numpy's take with ``out=`` copies element by element, 3x slower than a
    row copy (1024 rows of 8192 floats: 17 ms against 5.6 ms, Xeon AVX-512, 1 thread). Anything
    else (a file-backed array, a dtype change, a negative or out-of-range index) goes to np.take."""
    if (type(src) is np.ndarray and src.dtype == out.dtype and src.size and out.size
            and src.flags.c_contiguous and out.flags.c_contiguous and idx.dtype == np.int64 and idx.ndim == 1
            and out.shape == (len(idx),) + src.shape[1:]
            and _take_rows_kernel(src.reshape(len(src), -1), idx, out.reshape(len(out), -1))):
        return out
    return np.take(src, idx, axis=0, out=out)
