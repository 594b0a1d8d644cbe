"""Recurrent cells, per-step mode: BLAS for each step's recurrent product, a fused Numba epilogue
for the gates. Same equations and buffers as rnn_kernels.py (read its docstring first).

Why two modes: for a wide layer (e.g. 64 x 128 x 512 multiply-adds per LSTM step) OpenBLAS's
tuned GEMM runs about twice as fast as the hand-written dot products in rnn_kernels._matvec, which
pays more than the ~10 us of Python per step it costs. For small layers (and the unit tests) the
whole time loop inside one Numba call wins. ``recurrent.py`` picks the mode per layer and batch size.

Per step (direction d, time t), forward:
    rec = h_prev @ R[d]^T                 (BLAS, into a preallocated buffer)
    epilogue(xw[:, t], bias, rec) -> gates, state, outputs
and backward (dhp holds dL/dh_prev from the later step, already multiplied through R):
    epilogue(dhp + dy[:, t] (+ the GRU's direct z-path term dhz)) -> gate gradients gs, dxg, drg
    dhp = gs @ R[d]                       (BLAS)
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .rnn_math import FM, _act, _dact, _sig

_J = dict(cache=True, fastmath=FM, error_model="numpy")


# ---- forward epilogues ----------------------------------------------------------------------------
# Inner loops index row views (x[b, t, off:off + n]) with the bare loop counter: an index like
# og + j, whose sign Numba cannot prove, gets a negative-index wraparound branch that keeps LLVM
# from vectorising the loop (measured 5x slower).

@njit(**_J)
def rnn_step(xw, bias, rec, d, t, code, seq, hbuf, hp, act, y):
    B, H = hbuf.shape
    oh = d * H
    b1, b2 = bias[d, :H], bias[d, H:]
    for b in range(B):
        xr, ar, hr, rr = xw[b, t, oh:oh + H], act[b, t, oh:oh + H], hbuf[b], rec[b]
        pr, yr = hp[b, t, oh:oh + H], y[b, t if seq else 0, oh:oh + H]
        for k in range(H):
            pr[k] = hr[k]
            h = _act(code, xr[k] + b1[k] + rr[k] + b2[k])
            ar[k] = h
            hr[k] = h
        if seq:
            for k in range(H):
                yr[k] = hr[k]


@njit(**_J)
def lstm_step(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, ca, y):
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
        pr, csr, car = hp[b, t, oh:oh + H], cs[b, t, oh:oh + H], ca[b, t, oh:oh + H]
        for k in range(H):
            c = f[k] * cr[k] + i[k] * g[k]
            tc = _act(code, c)
            pr[k] = hr[k]
            csr[k] = c
            car[k] = tc
            hr[k] = o[k] * tc
            cr[k] = c
        if seq:
            yr = y[b, t, oh:oh + H]
            for k in range(H):
                yr[k] = hr[k]


@njit(**_J)
def gru_gates(xw, bias, rec_zr, d, t, lbr, rec_h, hoff, hbuf, rhbuf, hp, act, aux):
    """z and r; with lbr also aux = h_prev R_h^T + Rb_h (rec_h holds the product), else
    aux = rhbuf = r * h_prev (the input of the h gate's product). The h part of rec_h starts at
    column hoff (with lbr one C-contiguous product holds all three gates: rows stay vectorisable)."""
    B, H = hbuf.shape
    G = 3 * H
    og, oh = d * G, d * H
    b1, b2, rbh = bias[d, :G], bias[d, G:2 * G], bias[d, G + 2 * H:]
    for b in range(B):
        xr, ar, rr = xw[b, t, og:og + G], act[b, t, og:og + G], rec_zr[b]
        for j in range(2 * H):
            ar[j] = _sig(xr[j] + b1[j] + rr[j] + b2[j])
        r = ar[H:2 * H]
        hr, pr, xa = hbuf[b], hp[b, t, oh:oh + H], aux[b, t, oh:oh + H]
        if lbr:
            rh = rec_h[b, hoff:hoff + H]
            for k in range(H):
                pr[k] = hr[k]
                xa[k] = rh[k] + rbh[k]
        else:
            rhr = rhbuf[b]
            for k in range(H):
                pr[k] = hr[k]
                v = r[k] * hr[k]
                xa[k] = v
                rhr[k] = v


@njit(**_J)
def gru_state(xw, bias, rec_h, hoff, d, t, code, seq, lbr, hbuf, act, aux, y):
    B, H = hbuf.shape
    G = 3 * H
    og, oh = d * G, d * H
    bxh, brh = bias[d, 2 * H:G], bias[d, G + 2 * H:]
    for b in range(B):
        xn, ar, rh = xw[b, t, og + 2 * H:og + G], act[b, t, og:og + G], rec_h[b, hoff:hoff + H]
        z, r, n = ar[:H], ar[H:2 * H], ar[2 * H:]
        hr, xa = hbuf[b], aux[b, t, oh:oh + H]
        for k in range(H):
            if lbr:
                a = xn[k] + bxh[k] + r[k] * xa[k]
            else:
                a = xn[k] + bxh[k] + rh[k] + brh[k]
            nk = _act(code, a)
            n[k] = nk
            hr[k] = (1.0 - z[k]) * nk + z[k] * hr[k]
        if seq:
            yr = y[b, t, oh:oh + H]
            for k in range(H):
                yr[k] = hr[k]


# ---- backward epilogues ---------------------------------------------------------------------------

@njit(**_J)
def rnn_bstep(dy, d, t, code, seq, dhp, act, gs, dxg):
    B, H = dhp.shape
    oh = d * H
    for b in range(B):
        dr, ar, gr, xg = dhp[b], act[b, t, oh:oh + H], gs[b], dxg[b, t, oh:oh + H]
        dyr = dy[b, t if seq else 0, oh:oh + H]
        for k in range(H):
            dh = dr[k] + (dyr[k] if seq else 0.0)
            da = dh * _dact(code, ar[k])
            gr[k] = da
            xg[k] = da


@njit(**_J)
def lstm_bstep(dy, d, t, tp, code, seq, c0, use_c0, act, cs, ca, dhp, dcc, gs, dxg):
    """tp: the time step that ran before t in this direction (-1 at the first step)."""
    B, H = dhp.shape
    G = 4 * H
    og, oh = d * G, d * H
    for b in range(B):
        ar = act[b, t, og:og + G]
        i, o, f, g = ar[:H], ar[H:2 * H], ar[2 * H:3 * H], ar[3 * H:]
        car, dr, dcr, gr = ca[b, t, oh:oh + H], dhp[b], dcc[b], gs[b]
        gi, go, gf, gg = gr[:H], gr[H:2 * H], gr[2 * H:3 * H], gr[3 * H:]
        dyr = dy[b, t if seq else 0, oh:oh + H]
        if tp >= 0:
            cpr = cs[b, tp, oh:oh + H]
        elif use_c0:
            cpr = c0[b, oh:oh + H]
        else:
            cpr = dcr[:0]  # unused: the previous cell state is zero
        for k in range(H):
            dh = dr[k] + (dyr[k] if seq else 0.0)
            tc = car[k]
            cprev = cpr[k] if (tp >= 0 or use_c0) else 0.0
            dc = dcr[k] + dh * o[k] * _dact(code, tc)
            gi[k] = dc * g[k] * i[k] * (1.0 - i[k])
            go[k] = dh * tc * o[k] * (1.0 - o[k])
            gf[k] = dc * cprev * f[k] * (1.0 - f[k])
            gg[k] = dc * i[k] * _dact(code, g[k])
            dcr[k] = dc * f[k]
        xg = dxg[b, t, og:og + G]
        for j in range(G):
            xg[j] = gr[j]


@njit(**_J)
def gru_bstep_lbr(dy, d, t, code, seq, hp, act, aux, dhp, dhz, gs, dxg, drg):
    B, H = dhp.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        ar = act[b, t, og:og + G]
        z, r, n = ar[:H], ar[H:2 * H], ar[2 * H:]
        pr, xa, dr, dzr, gr = hp[b, t, oh:oh + H], aux[b, t, oh:oh + H], dhp[b], dhz[b], gs[b]
        xg, rg = dxg[b, t, og:og + G], drg[b, t, og:og + G]
        gz, gr_, gn = gr[:H], gr[H:2 * H], gr[2 * H:]
        xz, xr_, xn = xg[:H], xg[H:2 * H], xg[2 * H:]
        dyr = dy[b, t if seq else 0, oh:oh + H]
        for k in range(H):
            dh = dr[k] + dzr[k] + (dyr[k] if seq else 0.0)
            an = dh * (1.0 - z[k]) * _dact(code, n[k])
            az = dh * (pr[k] - n[k]) * z[k] * (1.0 - z[k])
            a_r = an * xa[k] * r[k] * (1.0 - r[k])
            gz[k] = az
            gr_[k] = a_r
            gn[k] = an * r[k]
            xz[k] = az
            xr_[k] = a_r
            xn[k] = an
            dzr[k] = dh * z[k]
        for j in range(G):
            rg[j] = gr[j]


@njit(**_J)
def gru_bstep_n(dy, d, t, code, seq, hp, act, dhp, dhz, dhc, gs_zr, gs_n, dxg, drg):
    """lbr=0, part 1: the z and h gates (the r gate needs R_h^T dn first)."""
    B, H = dhp.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        ar = act[b, t, og:og + G]
        z, n = ar[:H], ar[2 * H:]
        pr, dr, dzr, dcr = hp[b, t, oh:oh + H], dhp[b], dhz[b], dhc[b]
        gz, gn = gs_zr[b], gs_n[b]
        xg, rg = dxg[b, t, og:og + G], drg[b, t, og:og + G]
        xgn, rgn = xg[2 * H:], rg[2 * H:]
        dyr = dy[b, t if seq else 0, oh:oh + H]
        for k in range(H):
            dh = dr[k] + dzr[k] + (dyr[k] if seq else 0.0)
            dcr[k] = dh
            an = dh * (1.0 - z[k]) * _dact(code, n[k])
            az = dh * (pr[k] - n[k]) * z[k] * (1.0 - z[k])
            gz[k] = az
            gn[k] = an
            xg[k] = az
            rg[k] = az
            xgn[k] = an
            rgn[k] = an


@njit(**_J)
def gru_bstep_r(d, t, hp, act, drh, dhc, dhz, gs_zr, dxg, drg):
    """lbr=0, part 2: drh = dn R_h (BLAS) is known; the r gate and the direct h_prev terms."""
    B, H = drh.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        ar = act[b, t, og:og + G]
        z, r = ar[:H], ar[H:2 * H]
        pr, dd, dcr, dzr = hp[b, t, oh:oh + H], drh[b], dhc[b], dhz[b]
        gz = gs_zr[b, H:]
        xg, rg = dxg[b, t, og + H:og + 2 * H], drg[b, t, og + H:og + 2 * H]
        for k in range(H):
            a_r = dd[k] * pr[k] * r[k] * (1.0 - r[k])
            gz[k] = a_r
            xg[k] = a_r
            rg[k] = a_r
            dzr[k] = dcr[k] * z[k] + dd[k] * r[k]


# ---- drivers: the time loop ----------------------------------------------------------------------

def _order(d: int, T: int) -> range:
    return range(T - 1, -1, -1) if d == 1 else range(T)


def forward(kind: str, ws: dict, bias, R, h0, c0, code: int, seq: bool, lbr: bool, y3) -> None:
    """The forward time loop of one layer (all directions); fills the same buffers as the kernels."""
    nd, GH, H = R.shape
    T = ws["xw"].shape[1]
    hbuf, xw, hp, act = ws["hbuf"], ws["xw"], ws["hp"], ws["act"]
    for d in range(nd):
        rd = R[d]
        if h0 is not None:
            np.copyto(hbuf, h0[:, d * H:(d + 1) * H])
        else:
            hbuf.fill(0)
        if kind == "LSTM":
            if c0 is not None:
                np.copyto(ws["cbuf"], c0[:, d * H:(d + 1) * H])
            else:
                ws["cbuf"].fill(0)
        for t in _order(d, T):
            if kind == "RNN":
                np.matmul(hbuf, rd.T, out=ws["rec"])
                rnn_step(xw, bias, ws["rec"], d, t, code, seq, hbuf, hp, act, y3)
            elif kind == "LSTM":
                np.matmul(hbuf, rd.T, out=ws["rec"])
                lstm_step(xw, bias, ws["rec"], d, t, code, seq, hbuf, ws["cbuf"], hp, act, ws["cs"], ws["ca"], y3)
            else:
                if lbr:  # one product for all three gates
                    np.matmul(hbuf, rd.T, out=ws["rec"])
                    rec_zr, rec_h, hoff = ws["rec"], ws["rec"], 2 * H
                else:
                    np.matmul(hbuf, rd[:2 * H].T, out=ws["rec_zr"])
                    rec_zr, rec_h, hoff = ws["rec_zr"], ws["rec_h"], 0
                gru_gates(xw, bias, rec_zr, d, t, lbr, rec_h, hoff, hbuf, ws["rhbuf"], hp, act, ws["aux"])
                if not lbr:
                    np.matmul(ws["rhbuf"], rd[2 * H:].T, out=rec_h)
                gru_state(xw, bias, rec_h, hoff, d, t, code, seq, lbr, hbuf, act, ws["aux"], y3)
        if not seq:
            np.copyto(y3[:, 0, d * H:(d + 1) * H], hbuf)


def backward(kind: str, ws: dict, R, c0, code: int, seq: bool, lbr: bool, dy3, dh0, dc0) -> None:
    """The backward time loop (all directions): fills dxg/drg and the initial-state gradients."""
    nd, GH, H = R.shape
    T = ws["xw"].shape[1]
    dhp, act, hp, dxg = ws["dhp"], ws["act"], ws["hp"], ws["dxg"]
    dummy = np.zeros((1, 1), dhp.dtype)
    for d in range(nd):
        rd = R[d]
        if seq:
            dhp.fill(0)
        else:
            np.copyto(dhp, dy3[:, 0, d * H:(d + 1) * H])
        if kind == "LSTM":
            ws["dcc"].fill(0)
        if kind == "GRU":
            ws["dhz"].fill(0)
        order = list(_order(d, T))[::-1]  # reverse of the forward order
        for s, t in enumerate(order):
            if kind == "RNN":
                rnn_bstep(dy3, d, t, code, seq, dhp, act, ws["gs"], dxg)
                np.matmul(ws["gs"], rd, out=dhp)
            elif kind == "LSTM":
                tp = order[s + 1] if s + 1 < T else -1
                lstm_bstep(dy3, d, t, tp, code, seq, c0 if c0 is not None else dummy, c0 is not None, act,
                           ws["cs"], ws["ca"], dhp, ws["dcc"], ws["gs"], dxg)
                np.matmul(ws["gs"], rd, out=dhp)
            elif lbr:
                gru_bstep_lbr(dy3, d, t, code, seq, hp, act, ws["aux"], dhp, ws["dhz"], ws["gs"], dxg, ws["drg"])
                np.matmul(ws["gs"], rd, out=dhp)
            else:
                gru_bstep_n(dy3, d, t, code, seq, hp, act, dhp, ws["dhz"], ws["dhc"], ws["gs_zr"], ws["gs_n"], dxg,
                            ws["drg"])
                np.matmul(ws["gs_n"], rd[2 * H:], out=ws["drh"])
                gru_bstep_r(d, t, hp, act, ws["drh"], ws["dhc"], ws["dhz"], ws["gs_zr"], dxg, ws["drg"])
                np.matmul(ws["gs_zr"], rd[:2 * H], out=dhp)
        if dh0 is not None:
            g = dh0[:, d * H:(d + 1) * H]
            np.copyto(g, dhp)
            if kind == "GRU":
                g += ws["dhz"]
        if dc0 is not None and kind == "LSTM":
            np.copyto(dc0[:, d * H:(d + 1) * H], ws["dcc"])
