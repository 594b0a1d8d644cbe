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

from .rnn_kernels import FM, _act, _dact, _sig

_J = dict(cache=True, fastmath=FM, error_model="numpy")


# ---- forward epilogues ----------------------------------------------------------------------------

@njit(**_J)
def rnn_step(xw, bias, rec, d, t, code, seq, hbuf, hp, act, y):
    B, H = hbuf.shape
    oh = d * H
    for b in range(B):
        for k in range(H):
            hp[b, t, oh + k] = hbuf[b, k]
            h = _act(code, xw[b, t, oh + k] + bias[d, k] + rec[b, k] + bias[d, H + k])
            act[b, t, oh + k] = h
            hbuf[b, k] = h
            if seq:
                y[b, t, oh + k] = h


@njit(**_J)
def lstm_step(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, ca, y):
    B, H = hbuf.shape
    G = 4 * H
    og, oh = d * G, d * H
    for b in range(B):
        for j in range(3 * H):
            act[b, t, og + j] = _sig(xw[b, t, og + j] + bias[d, j] + rec[b, j] + bias[d, G + j])
        for j in range(3 * H, G):
            act[b, t, og + j] = _act(code, xw[b, t, og + j] + bias[d, j] + rec[b, j] + bias[d, G + j])
        for k in range(H):
            c = act[b, t, og + 2 * H + k] * cbuf[b, k] + act[b, t, og + k] * act[b, t, og + 3 * H + k]
            tc = _act(code, c)
            h = act[b, t, og + H + k] * tc
            hp[b, t, oh + k] = hbuf[b, k]
            cs[b, t, oh + k] = c
            ca[b, t, oh + k] = tc
            hbuf[b, k] = h
            cbuf[b, k] = c
            if seq:
                y[b, t, oh + k] = h


@njit(**_J)
def gru_gates(xw, bias, rec_zr, d, t, lbr, rec_h, hbuf, rhbuf, hp, act, aux):
    """z and r; with lbr also aux = h_prev R_h^T + Rb_h (rec_h holds the product), else
    aux = rhbuf = r * h_prev (the input of the h gate's product)."""
    B, H = hbuf.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        for j in range(2 * H):
            act[b, t, og + j] = _sig(xw[b, t, og + j] + bias[d, j] + rec_zr[b, j] + bias[d, G + j])
        for k in range(H):
            hp[b, t, oh + k] = hbuf[b, k]
            if lbr:
                aux[b, t, oh + k] = rec_h[b, k] + bias[d, G + 2 * H + k]
            else:
                rh = act[b, t, og + H + k] * hbuf[b, k]
                aux[b, t, oh + k] = rh
                rhbuf[b, k] = rh


@njit(**_J)
def gru_state(xw, bias, rec_h, d, t, code, seq, lbr, hbuf, act, aux, y):
    B, H = hbuf.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        for k in range(H):
            xn = xw[b, t, og + 2 * H + k] + bias[d, 2 * H + k]
            if lbr:
                a = xn + act[b, t, og + H + k] * aux[b, t, oh + k]
            else:
                a = xn + rec_h[b, k] + bias[d, G + 2 * H + k]
            n = _act(code, a)
            act[b, t, og + 2 * H + k] = n
            z = act[b, t, og + k]
            h = (1.0 - z) * n + z * hbuf[b, k]
            hbuf[b, k] = h
            if seq:
                y[b, t, oh + k] = h


# ---- backward epilogues ---------------------------------------------------------------------------

@njit(**_J)
def rnn_bstep(dy, d, t, code, seq, dhp, act, gs, dxg):
    B, H = dhp.shape
    oh = d * H
    for b in range(B):
        for k in range(H):
            dh = dhp[b, k] + (dy[b, t, oh + k] if seq else 0.0)
            da = dh * _dact(code, act[b, t, oh + k])
            gs[b, k] = da
            dxg[b, t, oh + k] = da


@njit(**_J)
def lstm_bstep(dy, d, t, tp, code, seq, c0, use_c0, act, cs, ca, dhp, dcc, gs, dxg):
    """tp: the time step that ran before t in this direction (-1 at the first step)."""
    B, H = dhp.shape
    G = 4 * H
    og, oh = d * G, d * H
    for b in range(B):
        for k in range(H):
            dh = dhp[b, k] + (dy[b, t, oh + k] if seq else 0.0)
            i = act[b, t, og + k]
            o = act[b, t, og + H + k]
            f = act[b, t, og + 2 * H + k]
            g = act[b, t, og + 3 * H + k]
            tc = ca[b, t, oh + k]
            if tp >= 0:
                cprev = cs[b, tp, oh + k]
            else:
                cprev = c0[b, oh + k] if use_c0 else 0.0
            dc = dcc[b, k] + dh * o * _dact(code, tc)
            gs[b, k] = dc * g * i * (1.0 - i)
            gs[b, H + k] = dh * tc * o * (1.0 - o)
            gs[b, 2 * H + k] = dc * cprev * f * (1.0 - f)
            gs[b, 3 * H + k] = dc * i * _dact(code, g)
            dcc[b, k] = dc * f
        for j in range(G):
            dxg[b, t, og + j] = gs[b, j]


@njit(**_J)
def gru_bstep_lbr(dy, d, t, code, seq, hp, act, aux, dhp, dhz, gs, dxg, drg):
    B, H = dhp.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        for k in range(H):
            dh = dhp[b, k] + dhz[b, k] + (dy[b, t, oh + k] if seq else 0.0)
            z = act[b, t, og + k]
            r = act[b, t, og + H + k]
            n = act[b, t, og + 2 * H + k]
            an = dh * (1.0 - z) * _dact(code, n)
            az = dh * (hp[b, t, oh + k] - n) * z * (1.0 - z)
            ar = an * aux[b, t, oh + k] * r * (1.0 - r)
            gs[b, k] = az
            gs[b, H + k] = ar
            gs[b, 2 * H + k] = an * r
            dxg[b, t, og + k] = az
            dxg[b, t, og + H + k] = ar
            dxg[b, t, og + 2 * H + k] = an
            dhz[b, k] = dh * z
        for j in range(G):
            drg[b, t, og + j] = gs[b, j]


@njit(**_J)
def gru_bstep_n(dy, d, t, code, seq, hp, act, dhp, dhz, dhc, gs_zr, gs_n, dxg, drg):
    """lbr=0, part 1: the z and h gates (the r gate needs R_h^T dn first)."""
    B, H = dhp.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        for k in range(H):
            dh = dhp[b, k] + dhz[b, k] + (dy[b, t, oh + k] if seq else 0.0)
            dhc[b, k] = dh
            z = act[b, t, og + k]
            n = act[b, t, og + 2 * H + k]
            an = dh * (1.0 - z) * _dact(code, n)
            az = dh * (hp[b, t, oh + k] - n) * z * (1.0 - z)
            gs_zr[b, k] = az
            gs_n[b, k] = an
            dxg[b, t, og + k] = az
            drg[b, t, og + k] = az
            dxg[b, t, og + 2 * H + k] = an
            drg[b, t, og + 2 * H + k] = an


@njit(**_J)
def gru_bstep_r(d, t, hp, act, drh, dhc, dhz, gs_zr, dxg, drg):
    """lbr=0, part 2: drh = dn R_h (BLAS) is known; the r gate and the direct h_prev terms."""
    B, H = drh.shape
    G = 3 * H
    og, oh = d * G, d * H
    for b in range(B):
        for k in range(H):
            r = act[b, t, og + H + k]
            ar = drh[b, k] * hp[b, t, oh + k] * r * (1.0 - r)
            gs_zr[b, H + k] = ar
            dxg[b, t, og + H + k] = ar
            drg[b, t, og + H + k] = ar
            dhz[b, k] = dhc[b, k] * act[b, t, og + k] + drh[b, k] * r


# ---- drivers: the time loop ----------------------------------------------------------------------

def _order(d: int, T: int) -> range:
    return range(T - 1, -1, -1) if d == 1 else range(T)


def forward(kind: str, ws: dict, bias, R, h0, c0, code: int, seq: bool, lbr: bool, y3) -> None:
    """The forward time loop of one layer (all directions); fills the same buffers as the kernels."""
    nd, GH, H = R.shape
    T = ws["xw"].shape[1]
    hbuf, xw, hp, act = ws["hbuf"], ws["xw"], ws["hp"], ws["act"]
    rec_views = (ws["rec"][:, :2 * H], ws["rec"][:, 2 * H:])
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
                    rec_zr, rec_h = rec_views
                else:
                    np.matmul(hbuf, rd[:2 * H].T, out=ws["rec_zr"])
                    rec_zr, rec_h = ws["rec_zr"], ws["rec_h"]
                gru_gates(xw, bias, rec_zr, d, t, lbr, rec_h, hbuf, ws["rhbuf"], hp, act, ws["aux"])
                if not lbr:
                    np.matmul(ws["rhbuf"], rd[2 * H:].T, out=rec_h)
                gru_state(xw, bias, rec_h, d, t, code, seq, lbr, hbuf, act, ws["aux"], y3)
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
