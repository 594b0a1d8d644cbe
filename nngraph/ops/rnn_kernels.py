"""Numba kernels of the recurrent cells (RNN, LSTM, GRU): the whole time loop inside one call.

Work split: the batch rows can be cut into chunks, one per thread (``prange``; see PARALLEL). A row's
recurrence is independent of every other row, so a thread runs all time steps of its rows without
ever waiting for another thread — no barrier per step, no shared accumulator. Each step does
  1. the recurrent product  rec[b, :] = R h_prev[b]   (``_matvec``: four rows at a time, so each
     weight row loaded from cache feeds four dot products),
  2. the fused gate epilogue (input projection + biases + recurrent term -> activations -> state).
The input projection x W^T of all time steps is ONE BLAS GEMM done before the kernel; the weight
gradients dW, dR and dx are big BLAS GEMMs after the backward kernel (see recurrent.py), so the
kernels only carry what is genuinely sequential.

Layouts (the caller's buffers; d = direction, t = time, G = gates, H = hidden):
  xw   (B, T, nd*G*H)  x W^T for every step (biases are added here, in the epilogue)
  hp   (B, T, nd*H)    h_prev used at time t by direction d (for dR and the GRU backward)
  act  (B, T, nd*G*H)  gate activations after the nonlinearity
  dxg  (B, T, nd*G*H)  dL/d(pre-activation) w.r.t. the x W^T + Wb term
  drg  (B, T, nd*G*H)  dL/d(pre-activation) w.r.t. the h R^T + Rb term (differs only for GRU
                       with linear_before_reset, where the h gate's recurrent term is scaled by r)
Direction 1 runs backwards in time (t = T-1 ... 0); its "last" state is the one at t = 0.
Scratch buffers hbuf/rec/gs/... are (B, ·) and C-contiguous so the dot products vectorise.
"""
from __future__ import annotations

from numba import njit, prange

from .rnn_math import FM, _act, _dact, _sig  # noqa: F401  (_act/_dact/_sig: scalar math of the cells)

# Batch-chunk threading (prange below) is switched off: on this 2-core, shared machine a parallel
# region right after an OpenBLAS GEMM waits for BLAS's spinning workers, and one descheduled thread
# stalls the whole step at the region's barrier (measured: RNN backward 0.2 ms serial, 12 ms
# threaded under load). With PARALLEL = False each prange is a plain loop over one chunk; the
# threads go to BLAS for the big all-time-step GEMMs.
PARALLEL = False


@njit(cache=True, fastmath=FM, error_model="numpy")
def _matvec(m, src, dst, lo, hi, r0, r1, c0, c1):
    """dst[b, r] = sum_{c0<=c<c1} m[r, c] * src[b, c]  for rows b in [lo, hi), r in [r0, r1)."""
    b = lo
    while b + 4 <= hi:
        for r in range(r0, r1):
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for c in range(c0, c1):
                w = m[r, c]
                s0 += w * src[b, c]
                s1 += w * src[b + 1, c]
                s2 += w * src[b + 2, c]
                s3 += w * src[b + 3, c]
            dst[b, r] = s0
            dst[b + 1, r] = s1
            dst[b + 2, r] = s2
            dst[b + 3, r] = s3
        b += 4
    while b < hi:
        for r in range(r0, r1):
            s = 0.0
            for c in range(c0, c1):
                s += m[r, c] * src[b, c]
            dst[b, r] = s
        b += 1


@njit(cache=True, inline="always")
def _time(d, s, T):
    return T - 1 - s if d == 1 else s


# ---- simple RNN: h = f(x W^T + Wb + h_prev R^T + Rb) ------------------------------------------

@njit(cache=True, parallel=PARALLEL, fastmath=FM, error_model="numpy")
def rnn_forward(xw, bias, R, h0, use_h0, code, seq, hbuf, rec, hp, act, y, step):
    B, T = xw.shape[0], xw.shape[1]
    nd, H = R.shape[0], R.shape[2]
    nchunks = (B + step - 1) // step
    for ch in prange(nchunks):
        lo, hi = ch * step, min(B, (ch + 1) * step)
        for d in range(nd):
            oh = d * H
            for b in range(lo, hi):
                for k in range(H):
                    hbuf[b, k] = h0[b, oh + k] if use_h0 else 0.0
            for s in range(T):
                t = _time(d, s, T)
                _matvec(R[d], hbuf, rec, lo, hi, 0, H, 0, H)
                for b in range(lo, hi):
                    for k in range(H):
                        hp[b, t, oh + k] = hbuf[b, k]
                        h = _act(code, xw[b, t, oh + k] + bias[d, k] + rec[b, k] + bias[d, H + k])
                        act[b, t, oh + k] = h
                        hbuf[b, k] = h
                        if seq:
                            y[b, t, oh + k] = h
            if not seq:
                for b in range(lo, hi):
                    for k in range(H):
                        y[b, 0, oh + k] = hbuf[b, k]


@njit(cache=True, parallel=PARALLEL, fastmath=FM, error_model="numpy")
def rnn_backward(dy, RT, code, seq, act, dxg, gs, dhc, dhp, dh0, want_dh0, step):
    """dy is (B, T, nd*H) with seq, else (B, 1, nd*H). Writes dxg (= drg) and dh0."""
    B, T = act.shape[0], act.shape[1]
    nd, H = RT.shape[0], RT.shape[1]
    nchunks = (B + step - 1) // step
    for ch in prange(nchunks):
        lo, hi = ch * step, min(B, (ch + 1) * step)
        for d in range(nd):
            oh = d * H
            for b in range(lo, hi):
                for k in range(H):
                    dhc[b, k] = 0.0 if seq else dy[b, 0, oh + k]
            for s in range(T - 1, -1, -1):
                t = _time(d, s, T)
                for b in range(lo, hi):
                    for k in range(H):
                        dh = dhc[b, k] + (dy[b, t, oh + k] if seq else 0.0)
                        da = dh * _dact(code, act[b, t, oh + k])
                        gs[b, k] = da
                        dxg[b, t, oh + k] = da
                _matvec(RT[d], gs, dhp, lo, hi, 0, H, 0, H)
                for b in range(lo, hi):
                    for k in range(H):
                        dhc[b, k] = dhp[b, k]
            if want_dh0:
                for b in range(lo, hi):
                    for k in range(H):
                        dh0[b, oh + k] = dhc[b, k]


# ---- LSTM (ONNX gate order i, o, f, c) ----------------------------------------------------------
#   i = σ(a_i)  o = σ(a_o)  f = σ(a_f)  g = act(a_c)   c = f c_prev + i g   h = o act(c)

@njit(cache=True, parallel=PARALLEL, fastmath=FM, error_model="numpy")
def lstm_forward(xw, bias, R, h0, c0, use_h0, use_c0, code, seq, hbuf, cbuf, rec, hp, act, cs, ca, y,
                 step):
    B, T = xw.shape[0], xw.shape[1]
    nd, H = R.shape[0], R.shape[2]
    G = 4 * H
    nchunks = (B + step - 1) // step
    for ch in prange(nchunks):
        lo, hi = ch * step, min(B, (ch + 1) * step)
        for d in range(nd):
            og, oh = d * G, d * H
            for b in range(lo, hi):
                for k in range(H):
                    hbuf[b, k] = h0[b, oh + k] if use_h0 else 0.0
                    cbuf[b, k] = c0[b, oh + k] if use_c0 else 0.0
            for s in range(T):
                t = _time(d, s, T)
                _matvec(R[d], hbuf, rec, lo, hi, 0, G, 0, H)
                for b in range(lo, hi):
                    for j in range(3 * H):
                        act[b, t, og + j] = _sig(xw[b, t, og + j] + bias[d, j] + rec[b, j] + bias[d, G + j])
                    for j in range(3 * H, G):
                        act[b, t, og + j] = _act(code, xw[b, t, og + j] + bias[d, j] + rec[b, j] + bias[d, G + j])
                    for k in range(H):
                        i = act[b, t, og + k]
                        o = act[b, t, og + H + k]
                        f = act[b, t, og + 2 * H + k]
                        g = act[b, t, og + 3 * H + k]
                        c = f * cbuf[b, k] + i * g
                        tc = _act(code, c)
                        h = o * tc
                        hp[b, t, oh + k] = hbuf[b, k]
                        cs[b, t, oh + k] = c
                        ca[b, t, oh + k] = tc
                        hbuf[b, k] = h
                        cbuf[b, k] = c
                        if seq:
                            y[b, t, oh + k] = h
            if not seq:
                for b in range(lo, hi):
                    for k in range(H):
                        y[b, 0, oh + k] = hbuf[b, k]


@njit(cache=True, parallel=PARALLEL, fastmath=FM, error_model="numpy")
def lstm_backward(dy, RT, c0, use_c0, code, seq, act, cs, ca, dxg, gs, dhc, dcc, dhp, dh0, dc0, want_d0,
                  step):
    B, T = act.shape[0], act.shape[1]
    nd, H = RT.shape[0], RT.shape[1]
    G = 4 * H
    nchunks = (B + step - 1) // step
    for ch in prange(nchunks):
        lo, hi = ch * step, min(B, (ch + 1) * step)
        for d in range(nd):
            og, oh = d * G, d * H
            for b in range(lo, hi):
                for k in range(H):
                    dhc[b, k] = 0.0 if seq else dy[b, 0, oh + k]
                    dcc[b, k] = 0.0
            for s in range(T - 1, -1, -1):
                t = _time(d, s, T)
                tp = t + 1 if d == 1 else t - 1  # the time step that ran before this one
                for b in range(lo, hi):
                    for k in range(H):
                        dh = dhc[b, k] + (dy[b, t, oh + k] if seq else 0.0)
                        i = act[b, t, og + k]
                        o = act[b, t, og + H + k]
                        f = act[b, t, og + 2 * H + k]
                        g = act[b, t, og + 3 * H + k]
                        tc = ca[b, t, oh + k]
                        if s > 0:
                            cprev = cs[b, tp, oh + k]
                        else:
                            cprev = c0[b, oh + k] if use_c0 else 0.0
                        dc = dcc[b, k] + dh * o * _dact(code, tc)
                        ai = dc * g * i * (1.0 - i)
                        ao = dh * tc * o * (1.0 - o)
                        af = dc * cprev * f * (1.0 - f)
                        ag = dc * i * _dact(code, g)
                        dcc[b, k] = dc * f
                        gs[b, k] = ai
                        gs[b, H + k] = ao
                        gs[b, 2 * H + k] = af
                        gs[b, 3 * H + k] = ag
                    for j in range(G):
                        dxg[b, t, og + j] = gs[b, j]
                _matvec(RT[d], gs, dhp, lo, hi, 0, H, 0, G)
                for b in range(lo, hi):
                    for k in range(H):
                        dhc[b, k] = dhp[b, k]
            if want_d0:
                for b in range(lo, hi):
                    for k in range(H):
                        dh0[b, oh + k] = dhc[b, k]
                        dc0[b, oh + k] = dcc[b, k]


# ---- GRU (ONNX gate order z, r, h) -------------------------------------------------------------
#   z = σ(a_z)  r = σ(a_r)
#   lbr=0: n = act(x W_h^T + Wb_h + (r ⊙ h_prev) R_h^T + Rb_h)      aux = r ⊙ h_prev
#   lbr=1: n = act(x W_h^T + Wb_h + r ⊙ (h_prev R_h^T + Rb_h))      aux = h_prev R_h^T + Rb_h
#   h = (1 - z) n + z h_prev

@njit(cache=True, parallel=PARALLEL, fastmath=FM, error_model="numpy")
def gru_forward(xw, bias, R, h0, use_h0, code, seq, lbr, hbuf, rhbuf, rec, hp, act, aux, y, step):
    B, T = xw.shape[0], xw.shape[1]
    nd, H = R.shape[0], R.shape[2]
    G = 3 * H
    nchunks = (B + step - 1) // step
    for ch in prange(nchunks):
        lo, hi = ch * step, min(B, (ch + 1) * step)
        for d in range(nd):
            og, oh = d * G, d * H
            for b in range(lo, hi):
                for k in range(H):
                    hbuf[b, k] = h0[b, oh + k] if use_h0 else 0.0
            for s in range(T):
                t = _time(d, s, T)
                _matvec(R[d], hbuf, rec, lo, hi, 0, G if lbr else 2 * H, 0, H)
                for b in range(lo, hi):
                    for j in range(2 * H):
                        a = xw[b, t, og + j] + bias[d, j] + rec[b, j] + bias[d, G + j]
                        act[b, t, og + j] = _sig(a)
                    for k in range(H):
                        hp[b, t, oh + k] = hbuf[b, k]
                        if lbr:
                            aux[b, t, oh + k] = rec[b, 2 * H + k] + bias[d, G + 2 * H + k]
                        else:
                            rh = act[b, t, og + H + k] * hbuf[b, k]
                            aux[b, t, oh + k] = rh
                            rhbuf[b, k] = rh
                if not lbr:
                    _matvec(R[d], rhbuf, rec, lo, hi, 2 * H, G, 0, H)
                for b in range(lo, hi):
                    for k in range(H):
                        xn = xw[b, t, og + 2 * H + k] + bias[d, 2 * H + k]
                        if lbr:
                            a = xn + act[b, t, og + H + k] * aux[b, t, oh + k]
                        else:
                            a = xn + rec[b, 2 * H + k] + bias[d, G + 2 * H + k]
                        n = _act(code, a)
                        act[b, t, og + 2 * H + k] = n
                        z = act[b, t, og + k]
                        h = (1.0 - z) * n + z * hbuf[b, k]
                        hbuf[b, k] = h
                        if seq:
                            y[b, t, oh + k] = h
            if not seq:
                for b in range(lo, hi):
                    for k in range(H):
                        y[b, 0, oh + k] = hbuf[b, k]


@njit(cache=True, parallel=PARALLEL, fastmath=FM, error_model="numpy")
def gru_backward(dy, RT, code, seq, lbr, hp, act, aux, dxg, drg, gs, dhc, dhp, drh, dh0, want_dh0, step):
    B, T = act.shape[0], act.shape[1]
    nd, H = RT.shape[0], RT.shape[1]
    G = 3 * H
    nchunks = (B + step - 1) // step
    for ch in prange(nchunks):
        lo, hi = ch * step, min(B, (ch + 1) * step)
        for d in range(nd):
            og, oh = d * G, d * H
            for b in range(lo, hi):
                for k in range(H):
                    dhc[b, k] = 0.0 if seq else dy[b, 0, oh + k]
            for s in range(T - 1, -1, -1):
                t = _time(d, s, T)
                # pass 1: the h gate (and, with lbr, everything: r does not feed the product)
                for b in range(lo, hi):
                    for k in range(H):
                        dh = dhc[b, k] + (dy[b, t, oh + k] if seq else 0.0)
                        dhc[b, k] = dh
                        z = act[b, t, og + k]
                        r = act[b, t, og + H + k]
                        n = act[b, t, og + 2 * H + k]
                        h_prev = hp[b, t, oh + k]
                        an = dh * (1.0 - z) * _dact(code, n)
                        az = dh * (h_prev - n) * z * (1.0 - z)
                        dxg[b, t, og + k] = az
                        dxg[b, t, og + 2 * H + k] = an
                        gs[b, k] = az
                        if lbr:
                            ar = an * aux[b, t, oh + k] * r * (1.0 - r)
                            gs[b, H + k] = ar
                            gs[b, 2 * H + k] = an * r
                            dxg[b, t, og + H + k] = ar
                        else:
                            gs[b, 2 * H + k] = an
                    for j in range(G):
                        drg[b, t, og + j] = gs[b, j]
                if lbr:
                    _matvec(RT[d], gs, dhp, lo, hi, 0, H, 0, G)
                    for b in range(lo, hi):
                        for k in range(H):
                            dhc[b, k] = dhc[b, k] * act[b, t, og + k] + dhp[b, k]
                    continue
                # lbr=0: d(r ⊙ h_prev) = R_h^T dn first, then dr, then the z/r rows of R
                _matvec(RT[d], gs, drh, lo, hi, 0, H, 2 * H, G)
                for b in range(lo, hi):
                    for k in range(H):
                        r = act[b, t, og + H + k]
                        ar = drh[b, k] * hp[b, t, oh + k] * r * (1.0 - r)
                        gs[b, H + k] = ar
                        dxg[b, t, og + H + k] = ar
                        drg[b, t, og + H + k] = ar
                        dhc[b, k] = dhc[b, k] * act[b, t, og + k] + drh[b, k] * r
                _matvec(RT[d], gs, dhp, lo, hi, 0, H, 0, 2 * H)
                for b in range(lo, hi):
                    for k in range(H):
                        dhc[b, k] += dhp[b, k]
            if want_dh0:
                for b in range(lo, hi):
                    for k in range(H):
                        dh0[b, oh + k] = dhc[b, k]


@njit(cache=True)
def copy_transpose(r, rt):
    """rt[d] = r[d]^T (the backward kernels read R^T row by row)."""
    nd, g, h = r.shape
    for d in range(nd):
        for k in range(h):
            for j in range(g):
                rt[d, k, j] = r[d, j, k]


@njit(cache=True, fastmath=FM, error_model="numpy")
def small_matmul(a, b, out):
    """out = a @ b for small products (see recurrent.matmul): one thread, no BLAS hand-off."""
    m, k = a.shape
    n = b.shape[1]
    out[:] = 0
    for i in range(m):
        for p in range(k):
            aip = a[i, p]
            for j in range(n):
                out[i, j] += aip * b[p, j]
