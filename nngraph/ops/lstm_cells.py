"""The LSTM's per-step gate kernels (the time loops in rnn_steps.py call ``step`` / ``bstep``).

Two versions of each. The scalar loops (``lstm_step`` / ``lstm_bstep``) serve every dtype and
activation; but their cell loops touch nine arrays, more than LLVM will check for overlap at run
time, so in float32 they stayed scalar and took as long as the step's product. The vector versions
(``_step_vec`` / ``_bstep_vec``) do every load and store as an explicit masked vector op
(linalg.vec), LANES hidden units at a time, with the same equations and buffers, and tanh /
sigmoid as the same rational approximation as rnn_math's float32 path. ``step`` / ``bstep`` pick
the vector version for float32 with tanh cells (the common case).

The layer passes one buffer as xw, act and dxg (recurrent._gate_buffer): each kernel reads a unit's
four inputs before it writes that unit's four results, so the gates overwrite x W^T and their
gradients overwrite the gates; act(c) is recomputed from c rather than stored.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..linalg.vec import (LANES, data_ptr, vadd, vfma, vload_n, vmax, vmin, vmul, vsplat_value, vstore_n, vsub,
                          vdiv)
from .activations import TANH
from .rnn_math import _A1, _A3, _A5, _A7, _A9, _A11, _A13, _B0, _B2, _B4, _B6, _CLAMP, _HALF, JIT, _act, _dact, _sig

# rnn_math.JIT: no fast-math, explicitly (left unset, these kernels inherited lstm_forward's flags)
_J = dict(JIT, boundscheck=False)
_JS = JIT  # the scalar loops (as in rnn_steps.py)


@njit(**_JS)
def lstm_step(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y):
    B, H = hbuf.shape
    G = 4 * H
    og, oh = d * G, d * H
    b1, b2 = bias[d, :G], bias[d, G:]
    for b in range(B):
        xr, ar, rr = xw[b, t, og:og + G], act[b, t, og:og + G], rec[b]
        for j in range(3 * H):
            ar[j] = _sig(xr[j] + b1[j] + rr[j] + b2[j])
        for j in range(3 * H, G):
            ar[j] = _act(code, xr[j] + b1[j] + rr[j] + b2[j])
        i, o, f, g = ar[:H], ar[H:2 * H], ar[2 * H:3 * H], ar[3 * H:]
        hr, cr = hbuf[b], cbuf[b]
        pr, csr = hp[b, t, oh:oh + H], cs[b, t, oh:oh + H]
        for k in range(H):
            c = f[k] * cr[k] + i[k] * g[k]
            tc = _act(code, c)
            pr[k] = hr[k]
            csr[k] = c
            hr[k] = o[k] * tc
            cr[k] = c
        if seq:
            yr = y[b, t, oh:oh + H]
            for k in range(H):
                yr[k] = hr[k]


@njit(**_JS)
def lstm_bstep(dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg):
    """tp: the time step that ran before t in this direction (-1 at the first step). dxg may be
    act itself: each unit's four gates are read before its four gradients are written."""
    B, H = dhp.shape
    G = 4 * H
    og, oh = d * G, d * H
    for b in range(B):
        ar = act[b, t, og:og + G]
        i, o, f, g = ar[:H], ar[H:2 * H], ar[2 * H:3 * H], ar[3 * H:]
        xg = dxg[b, t, og:og + G]
        gi, go, gf, gg = xg[:H], xg[H:2 * H], xg[2 * H:3 * H], xg[3 * H:]
        csr, dr, dcr = cs[b, t, oh:oh + H], dhp[b], dcc[b]
        dyr = dy[b, t if seq else 0, oh:oh + H]
        if tp >= 0:
            cpr = cs[b, tp, oh:oh + H]
        elif use_c0:
            cpr = c0[b, oh:oh + H]
        else:
            cpr = dcr[:0]  # unused: the previous cell state is zero
        for k in range(H):
            ik, ok, fk, gk = i[k], o[k], f[k], g[k]
            dh = dr[k] + (dyr[k] if seq else 0.0)
            tc = _act(code, csr[k])  # act(c), recomputed: cheaper than storing it
            cprev = cpr[k] if (tp >= 0 or use_c0) else 0.0
            dc = dcr[k] + dh * ok * _dact(code, tc)
            gi[k] = dc * gk * ik * (1.0 - ik)
            go[k] = dh * tc * ok * (1.0 - ok)
            gf[k] = dc * cprev * fk * (1.0 - fk)
            gg[k] = dc * ik * _dact(code, gk)
            dcr[k] = dc * fk


@njit(inline="always", **_J)
def _c(x):
    return vsplat_value(np.float32(x))


@njit(inline="always", **_J)
def _vtanh(a):
    x = vmin(vmax(a, _c(-_CLAMP)), _c(_CLAMP))
    x2 = vmul(x, x)
    p = vfma(x2, _c(_A13), _c(_A11))
    p = vfma(x2, p, _c(_A9))
    p = vfma(x2, p, _c(_A7))
    p = vfma(x2, p, _c(_A5))
    p = vfma(x2, p, _c(_A3))
    p = vfma(x2, p, _c(_A1))
    q = vfma(x2, _c(_B6), _c(_B4))
    q = vfma(x2, q, _c(_B2))
    q = vfma(x2, q, _c(_B0))
    return vdiv(vmul(p, x), q)


@njit(inline="always", **_J)
def _vsig(a):
    return vfma(_c(_HALF), _vtanh(vmul(_c(_HALF), a)), _c(_HALF))


@njit(inline="always", **_J)
def _row(arr, b, t):
    """Offset (in floats) of arr[b, t, 0] for a 3-D array with unit-stride rows."""
    return b * (arr.strides[0] // 4) + t * (arr.strides[1] // 4)


@njit(inline="always", **_J)
def _preact(pxw, prec, pb, xo, ro, b1, b2, j, n):
    """x W^T + Wb + h R^T + Rb of gate units j .. j + n."""
    return vadd(vadd(vload_n(pxw, xo + j, n), vload_n(prec, ro + j, n)), vadd(vload_n(pb, b1 + j, n), vload_n(pb, b2 + j, n)))


@njit(**_J)
def _step_vec(xw, bias, rec, d, t, seq, hbuf, cbuf, hp, act, cs, y):
    B, H = hbuf.shape
    G = 4 * H
    og, oh = d * G, d * H
    pxw, pb, prec, pact = data_ptr(xw), data_ptr(bias), data_ptr(rec), data_ptr(act)
    ph, pc, php, pcs, py = data_ptr(hbuf), data_ptr(cbuf), data_ptr(hp), data_ptr(cs), data_ptr(y)
    b1 = d * (bias.strides[0] // 4)
    b2 = b1 + G
    for b in range(B):
        xo, ao = _row(xw, b, t) + og, _row(act, b, t) + og
        ro, so = b * (rec.strides[0] // 4), b * (hbuf.strides[0] // 4)
        co = b * (cbuf.strides[0] // 4)
        ho, yo = _row(hp, b, t) + oh, _row(y, b, t) + oh
        for k in range(0, H, LANES):
            n = H - k
            i = _vsig(_preact(pxw, prec, pb, xo, ro, b1, b2, k, n))
            o = _vsig(_preact(pxw, prec, pb, xo, ro, b1, b2, H + k, n))
            f = _vsig(_preact(pxw, prec, pb, xo, ro, b1, b2, 2 * H + k, n))
            g = _vtanh(_preact(pxw, prec, pb, xo, ro, b1, b2, 3 * H + k, n))
            vstore_n(pact, ao + k, i, n)
            vstore_n(pact, ao + H + k, o, n)
            vstore_n(pact, ao + 2 * H + k, f, n)
            vstore_n(pact, ao + 3 * H + k, g, n)
            hprev, cprev = vload_n(ph, so + k, n), vload_n(pc, co + k, n)
            c = vfma(f, cprev, vmul(i, g))
            tc = _vtanh(c)
            h = vmul(o, tc)
            vstore_n(php, ho + k, hprev, n)
            vstore_n(pcs, ho + k, c, n)
            vstore_n(ph, so + k, h, n)
            vstore_n(pc, co + k, c, n)
            if seq:
                vstore_n(py, yo + k, h, n)


def step(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y):
    """One forward LSTM step (see lstm_step); the vector version where it applies."""
    lstm_step(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y)


@overload(step, jit_options=_J)
def _step_jit(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y):
    if xw.dtype == types.float32:
        def impl(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y):
            if code == TANH:
                _step_vec(xw, bias, rec, d, t, seq, hbuf, cbuf, hp, act, cs, y)
            else:
                lstm_step(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y)
        return impl
    return lambda xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y: lstm_step(
        xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y)


@njit(**_J)
def _bstep_vec(dy, d, t, tp, seq, c0, use_c0, act, cs, dhp, dcc, dxg):
    B, H = dhp.shape
    G = 4 * H
    og, oh = d * G, d * H
    pdy, pact, pcs, pc0 = data_ptr(dy), data_ptr(act), data_ptr(cs), data_ptr(c0)
    pdh, pdc, pdx = data_ptr(dhp), data_ptr(dcc), data_ptr(dxg)
    one = _c(1.0)
    for b in range(B):
        ao, co, xo = _row(act, b, t) + og, _row(cs, b, t) + oh, _row(dxg, b, t) + og
        yo = _row(dy, b, t if seq else 0) + oh
        po = _row(cs, b, tp) + oh if tp >= 0 else b * (c0.strides[0] // 4) + oh
        so = b * (dhp.strides[0] // 4)
        do = b * (dcc.strides[0] // 4)
        for k in range(0, H, LANES):
            n = H - k
            i, o = vload_n(pact, ao + k, n), vload_n(pact, ao + H + k, n)
            f, g = vload_n(pact, ao + 2 * H + k, n), vload_n(pact, ao + 3 * H + k, n)
            tc = _vtanh(vload_n(pcs, co + k, n))  # tanh(c), recomputed: cheaper than storing it
            dh = vload_n(pdh, so + k, n)
            if seq:
                dh = vadd(dh, vload_n(pdy, yo + k, n))
            if tp >= 0:
                cprev = vload_n(pcs, po + k, n)
            elif use_c0:
                cprev = vload_n(pc0, po + k, n)
            else:
                cprev = vload_n(pcs, 0, 0)  # zeros: no previous cell state
            dc = vfma(vmul(dh, o), vsub(one, vmul(tc, tc)), vload_n(pdc, do + k, n))
            gi = vmul(vmul(dc, g), vmul(i, vsub(one, i)))
            go_ = vmul(vmul(dh, tc), vmul(o, vsub(one, o)))
            gf = vmul(vmul(dc, cprev), vmul(f, vsub(one, f)))
            gg = vmul(vmul(dc, i), vsub(one, vmul(g, g)))
            vstore_n(pdc, do + k, vmul(dc, f), n)
            vstore_n(pdx, xo + k, gi, n)
            vstore_n(pdx, xo + H + k, go_, n)
            vstore_n(pdx, xo + 2 * H + k, gf, n)
            vstore_n(pdx, xo + 3 * H + k, gg, n)


def bstep(dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg):
    """One backward LSTM step (see lstm_bstep); the vector version where it applies."""
    lstm_bstep(dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg)


@overload(bstep, jit_options=_J)
def _bstep_jit(dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg):
    if act.dtype == types.float32:
        def impl(dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg):
            if code == TANH:
                _bstep_vec(dy, d, t, tp, seq, c0, use_c0, act, cs, dhp, dcc, dxg)
            else:
                lstm_bstep(dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg)
        return impl
    return lambda dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg: lstm_bstep(
        dy, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg)
