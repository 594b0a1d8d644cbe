"""Recurrent cells (RNN, LSTM, GRU): the time loops, compiled, and their fused per-step epilogues.

Each step of direction d at time t does
  1. the recurrent product  rec = h_prev R[d]^T  with the vector GEMM kernels (linalg.packed: R[d]^T
     packed into panels once per call, read by every step), its batch rows split over threads,
  2. the fused gate epilogue: input projection + biases + recurrent term -> activations -> state.
Backward runs the steps in reverse: the epilogue turns dL/dh (the carry dhp plus the output's own
gradient) into the gate gradients gs, then dhp = gs R[d]. The input projection x W^T of all time
steps is ONE GEMM before the loop and the weight gradients dW, dR and dx are big GEMMs after it
(recurrent.py), so the loops only carry what is genuinely sequential.

Layouts (the caller's buffers; d = direction, t = time, G = gates, H = hidden):
  xw   (B, T, nd*G*H)  x W^T for every step (biases are added here, in the epilogue)
  hp   (B, T, nd*H)    h_prev used at time t by direction d (for dR and the GRU backward)
  act  (B, T, nd*G*H)  gate activations after the nonlinearity
  dxg  (B, T, nd*G*H)  dL/d(pre-activation) w.r.t. the x W^T + Wb term
  drg  (B, T, nd*G*H)  dL/d(pre-activation) w.r.t. the h R^T + Rb term (differs only for GRU
                       with linear_before_reset, where the h gate's recurrent term is scaled by r)
The LSTM passes xw itself as act and dxg (each step overwrites what it has just read), and keeps
  cs   (B, T, nd*H)    the cell state c at time t (act(c) is recomputed by the backward)
Direction 1 runs backwards in time (t = T-1 ... 0); its "last" state is the one at t = 0.
float64 (the gradient checks) takes the same loops with plain-loop products.
"""
from __future__ import annotations

from numba import njit, prange

from ..linalg.gemm import MR
from ..linalg.packed import matmul_packed
from .lstm_cells import bstep as lstm_cell_bstep
from .lstm_cells import step as lstm_cell_step
from .rnn_math import JIT as _J  # no fast-math: the same bits compiled afresh or loaded from the cache
from .rnn_math import _act, _dact, _sig


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
    """lbr=0, part 2: drh = dn R_h (the product) is known; the r gate and the direct h_prev terms."""
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


# ---- drivers: the time loops, compiled (no Python per step) ---------------------------------------
# float32 products read their B matrix from pk[2d] (and pk[2d + 1], a GRU's second product):
# R[d]^T (forward) or R[d] (backward) packed into contiguous panels once per layer call
# (linalg.packed.pack_all). In place, the rows of R[d]^T for 512 hidden units are 8 KB apart and
# share one L1 set: h_prev R^T for 64 x 512 x 2048 took 2.4 ms a step, packed 1.35 ms. float64
# (the gradient checks) reads rt = R[d]^T (forward) and R[d] (backward) themselves.

@njit(inline="always", **_J)
def _time(d, s, T):
    """The time index of step s in direction d (direction 1 reads the sequence backwards)."""
    return T - 1 - s if d == 1 else s


@njit(**_J)
def _init_state(buf, init, use_init, d):
    H = buf.shape[1]
    if use_init:
        buf[:, :] = init[:, d * H:(d + 1) * H]
    else:
        buf[:, :] = 0.0


@njit(**_J)
def rnn_forward(xw, bias, rt, pk, h0, use_h0, code, seq, hbuf, rec, hp, act, y3):
    nd, H = rt.shape[0], rt.shape[1]
    T = xw.shape[1]
    for d in range(nd):
        _init_state(hbuf, h0, use_h0, d)
        for s in range(T):
            t = _time(d, s, T)
            matmul_packed(hbuf, rt[d], pk[2 * d], rec)
            rnn_step(xw, bias, rec, d, t, code, seq, hbuf, hp, act, y3)
        if not seq:
            y3[:, 0, d * H:(d + 1) * H] = hbuf


@njit(**_J)
def lstm_forward(xw, bias, rt, pk, h0, c0, use_h0, use_c0, code, seq, hbuf, cbuf, rec, hp, act, cs, y3):
    nd, H = rt.shape[0], rt.shape[1]
    T = xw.shape[1]
    for d in range(nd):
        _init_state(hbuf, h0, use_h0, d)
        _init_state(cbuf, c0, use_c0, d)
        for s in range(T):
            t = _time(d, s, T)
            matmul_packed(hbuf, rt[d], pk[2 * d], rec)
            lstm_cell_step(xw, bias, rec, d, t, code, seq, hbuf, cbuf, hp, act, cs, y3)
        if not seq:
            y3[:, 0, d * H:(d + 1) * H] = hbuf


@njit(**_J)
def gru_forward(xw, bias, rt, pk, h0, use_h0, code, seq, lbr, hbuf, rhbuf, rec, rec_zr, rec_h, hp, act, aux, y3):
    nd, H = rt.shape[0], rt.shape[1]
    T = xw.shape[1]
    for d in range(nd):
        _init_state(hbuf, h0, use_h0, d)
        for s in range(T):
            t = _time(d, s, T)
            if lbr:  # one product for all three gates
                matmul_packed(hbuf, rt[d], pk[2 * d], rec)
                gru_gates(xw, bias, rec, d, t, lbr, rec, 2 * H, hbuf, rhbuf, hp, act, aux)
                gru_state(xw, bias, rec, 2 * H, d, t, code, seq, lbr, hbuf, act, aux, y3)
            else:
                matmul_packed(hbuf, rt[d][:, :2 * H], pk[2 * d], rec_zr)
                gru_gates(xw, bias, rec_zr, d, t, lbr, rec_h, 0, hbuf, rhbuf, hp, act, aux)
                matmul_packed(rhbuf, rt[d][:, 2 * H:], pk[2 * d + 1], rec_h)
                gru_state(xw, bias, rec_h, 0, d, t, code, seq, lbr, hbuf, act, aux, y3)
        if not seq:
            y3[:, 0, d * H:(d + 1) * H] = hbuf


@njit(**_J)
def _init_carry(dhp, dy3, seq, d):
    H = dhp.shape[1]
    if seq:
        dhp[:, :] = 0.0
    else:
        dhp[:, :] = dy3[:, 0, d * H:(d + 1) * H]


@njit(**_J)
def rnn_backward(R, pk, code, seq, dy3, dhp, act, gs, dxg, dh0, want_d0):
    nd, H = R.shape[0], R.shape[2]
    T = act.shape[1]
    for d in range(nd):
        _init_carry(dhp, dy3, seq, d)
        for s in range(T):  # reverse of the forward order
            t = _time(d, T - 1 - s, T)
            rnn_bstep(dy3, d, t, code, seq, dhp, act, gs, dxg)
            matmul_packed(gs, R[d], pk[2 * d], dhp)
        if want_d0:
            dh0[:, d * H:(d + 1) * H] = dhp


@njit(**_J)
def lstm_backward(R, pk, c0, use_c0, code, seq, dy3, dhp, dcc, act, cs, dxg, dh0, dc0, want_d0):
    nd, GH, H = R.shape
    T = act.shape[1]
    for d in range(nd):
        _init_carry(dhp, dy3, seq, d)
        dcc[:, :] = 0.0
        for s in range(T):
            t = _time(d, T - 1 - s, T)
            tp = _time(d, T - 2 - s, T) if s < T - 1 else -1  # the step that ran before t
            lstm_cell_bstep(dy3, d, t, tp, code, seq, c0, use_c0, act, cs, dhp, dcc, dxg)
            matmul_packed(dxg[:, t, d * GH:(d + 1) * GH], R[d], pk[2 * d], dhp)  # the gate gradients in place
        if want_d0:
            dh0[:, d * H:(d + 1) * H] = dhp
            dc0[:, d * H:(d + 1) * H] = dcc


@njit(**_J)
def gru_backward(R, pk, code, seq, lbr, dy3, dhp, dhz, dhc, drh, hp, act, aux, gs, gs_zr, gs_n, dxg, drg, dh0,
                 want_d0):
    nd, H = R.shape[0], R.shape[2]
    T = act.shape[1]
    for d in range(nd):
        _init_carry(dhp, dy3, seq, d)
        dhz[:, :] = 0.0
        for s in range(T):
            t = _time(d, T - 1 - s, T)
            if lbr:
                gru_bstep_lbr(dy3, d, t, code, seq, hp, act, aux, dhp, dhz, gs, dxg, drg)
                matmul_packed(gs, R[d], pk[2 * d], dhp)
            else:
                gru_bstep_n(dy3, d, t, code, seq, hp, act, dhp, dhz, dhc, gs_zr, gs_n, dxg, drg)
                matmul_packed(gs_n, R[d][2 * H:], pk[2 * d + 1], drh)
                gru_bstep_r(d, t, hp, act, drh, dhc, dhz, gs_zr, dxg, drg)
                matmul_packed(gs_zr, R[d][:2 * H], pk[2 * d], dhp)
        if want_d0:
            dh0[:, d * H:(d + 1) * H] = dhp + dhz


# ---- batch chunks on threads ---------------------------------------------------------------------
# A row's recurrence never reads another row, so each thread runs the WHOLE time loop for its block
# of batch rows (its own slices of every buffer): one parallel region per layer call, no barrier per
# step. Each row's arithmetic is the same whatever the split, so results are the same bits.

@njit(**_J)
def _rows(c, chunks, B):
    """Rows [lo, hi) of chunk c: blocks of whole MR-row GEMM tiles."""
    per = -(-B // chunks)
    per = -(-per // MR) * MR
    lo = min(c * per, B)
    return lo, min(lo + per, B)


@njit(parallel=True, **_J)
def rnn_forward_chunks(xw, bias, rt, pk, h0, use_h0, code, seq, hbuf, rec, hp, act, y3, chunks):
    for c in prange(chunks):
        lo, hi = _rows(c, chunks, hbuf.shape[0])
        rnn_forward(xw[lo:hi], bias, rt, pk, h0[lo:hi], use_h0, code, seq, hbuf[lo:hi], rec[lo:hi], hp[lo:hi],
                    act[lo:hi], y3[lo:hi])


@njit(parallel=True, **_J)
def lstm_forward_chunks(xw, bias, rt, pk, h0, c0, use_h0, use_c0, code, seq, hbuf, cbuf, rec, hp, act, cs, y3, chunks):
    for c in prange(chunks):
        lo, hi = _rows(c, chunks, hbuf.shape[0])
        lstm_forward(xw[lo:hi], bias, rt, pk, h0[lo:hi], c0[lo:hi], use_h0, use_c0, code, seq, hbuf[lo:hi],
                     cbuf[lo:hi], rec[lo:hi], hp[lo:hi], act[lo:hi], cs[lo:hi], y3[lo:hi])


@njit(parallel=True, **_J)
def gru_forward_chunks(xw, bias, rt, pk, h0, use_h0, code, seq, lbr, hbuf, rhbuf, rec, rec_zr, rec_h, hp, act, aux, y3,
                       chunks):
    for c in prange(chunks):
        lo, hi = _rows(c, chunks, hbuf.shape[0])
        gru_forward(xw[lo:hi], bias, rt, pk, h0[lo:hi], use_h0, code, seq, lbr, hbuf[lo:hi], rhbuf[lo:hi], rec[lo:hi],
                    rec_zr[lo:hi], rec_h[lo:hi], hp[lo:hi], act[lo:hi], aux[lo:hi], y3[lo:hi])


@njit(parallel=True, **_J)
def rnn_backward_chunks(R, pk, code, seq, dy3, dhp, act, gs, dxg, dh0, want_d0, chunks):
    for c in prange(chunks):
        lo, hi = _rows(c, chunks, dhp.shape[0])
        rnn_backward(R, pk, code, seq, dy3[lo:hi], dhp[lo:hi], act[lo:hi], gs[lo:hi], dxg[lo:hi], dh0[lo:hi], want_d0)


@njit(parallel=True, **_J)
def lstm_backward_chunks(R, pk, c0, use_c0, code, seq, dy3, dhp, dcc, act, cs, dxg, dh0, dc0, want_d0, chunks):
    for c in prange(chunks):
        lo, hi = _rows(c, chunks, dhp.shape[0])
        lstm_backward(R, pk, c0[lo:hi], use_c0, code, seq, dy3[lo:hi], dhp[lo:hi], dcc[lo:hi], act[lo:hi], cs[lo:hi],
                      dxg[lo:hi], dh0[lo:hi], dc0[lo:hi], want_d0)


@njit(parallel=True, **_J)
def gru_backward_chunks(R, pk, code, seq, lbr, dy3, dhp, dhz, dhc, drh, hp, act, aux, gs, gs_zr, gs_n, dxg, drg, dh0,
                        want_d0, chunks):
    for c in prange(chunks):
        lo, hi = _rows(c, chunks, dhp.shape[0])
        gru_backward(R, pk, code, seq, lbr, dy3[lo:hi], dhp[lo:hi], dhz[lo:hi], dhc[lo:hi], drh[lo:hi], hp[lo:hi],
                     act[lo:hi], aux[lo:hi], gs[lo:hi], gs_zr[lo:hi], gs_n[lo:hi], dxg[lo:hi], drg[lo:hi],
                     dh0[lo:hi], want_d0)
