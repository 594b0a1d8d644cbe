"""RNN, LSTM, GRU: recurrent layers trained by backpropagation through time, exported as the
native ONNX RNN/LSTM/GRU operators.

Parameters are stored in ONNX layout and gate order from the start, so export is a re-wrap:
    W (nd, G*H, I)   R (nd, G*H, H)   B (nd, 2*G*H) = [Wb, Rb]
with G = 1 (RNN), 4 (LSTM, gates i, o, f, c), 3 (GRU, gates z, r, h); nd = 2 when bidirectional
(direction 1 reads the sequence backwards). Input x is (batch, time, features); the output is the
whole sequence (batch, time, nd*H) with ``return_sequences``, else the last state (batch, nd*H)
(for the backward direction the state after reading t = 0, like ONNX Y_h). Optional inputs 2 and
3 are initial states h0 (and c0 for LSTM), (batch, nd*H), directions concatenated like the output.

Forward (per direction; a_* are pre-activations, "act" the layer's activation, σ the sigmoid):
    RNN   h = act(a),  a = x W^T + Wb + h_prev R^T + Rb
    LSTM  i, o, f = σ(a_i), σ(a_o), σ(a_f);  g = act(a_c);  c = f c_prev + i g;  h = o act(c)
    GRU   z, r = σ(a_z), σ(a_r);  n = act(x W_h^T + Wb_h + (r h_prev) R_h^T + Rb_h)
          (linear_before_reset: n = act(x W_h^T + Wb_h + r (h_prev R_h^T + Rb_h)));  h = (1-z) n + z h_prev

Backward through time (dh = dL/dh_t from the output at t plus the carry from step t+1):
    RNN   da = dh act'(h);                             dh_prev = da R
    LSTM  dc = dc_next + dh o act'(c);  da_o = dh act(c) σ'(o);  da_i = dc g σ'(i);
          da_f = dc c_prev σ'(f);  da_c = dc i act'(g);  dc_prev = dc f;  dh_prev = da R
    GRU   da_n = dh (1-z) act'(n);  da_z = dh (h_prev - n) σ'(z)
          lbr=0: d(r h_prev) = da_n R_h;  da_r = d(r h_prev) h_prev σ'(r)
                 dh_prev = dh z + d(r h_prev) r + [da_z, da_r] R_zr
          lbr=1: the recurrent term of the h gate gets da_n r;  da_r = da_n (h_prev R_h^T + Rb_h) σ'(r)
                 dh_prev = dh z + [da_z, da_r, da_n r] R
  (σ' and act' are written in terms of the activation's output, e.g. σ'(i) = i (1 - i).)
Then, over all time steps at once (one GEMM each, rows = batch x time):
    dW = DA_x^T X   dWb = sum DA_x   dR = DA_h^T H_prev (GRU lbr=0: h rows use r h_prev)
    dRb = sum DA_h   dx = DA_x W
where DA_x / DA_h are the pre-activation gradients of the x W^T and h R^T terms (equal except for
the GRU h gate with linear_before_reset).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from ..linalg.gemm import NR, NT_MIN_K, matmul, matmul_nt
from . import rnn_steps as S
from .activations import CODES, apply_reference
from .base import OpDef, ParamDecl

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
ONNX_ACT = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}
STATE_INPUTS = {"RNN": 1, "LSTM": 2, "GRU": 1}  # how many initial-state inputs the op accepts


def _dims(node: Node, in_type: TensorType) -> tuple[int, int, int, int, int]:
    """(T, I, H, G, nd) of a recurrent node."""
    T, I = in_type.shape
    return T, I, node.attrs["units"], GATES[node.op], 2 if node.attrs.get("bidirectional") else 1


def _infer(node: Node, types: list[TensorType]) -> TensorType:
    x = types[0]
    kind = node.op.lower()
    if x.dtype != "float32" or len(x.shape) != 2:
        raise ShapeError(f"layer {node.layer}: {kind} expects a float sequence (time, features), got {x}"
                         + (" of token ids (add an embedding layer first)" if x.dtype == "int64" else ""))
    H = node.attrs["units"]
    nd = 2 if node.attrs.get("bidirectional") else 1
    extra = types[1:]
    if len(extra) > STATE_INPUTS[node.op]:
        raise ShapeError(f"layer {node.layer}: {kind} takes at most {STATE_INPUTS[node.op]} initial-state "
                         f"input(s), got {len(extra)}")
    for t in extra:
        if t.shape != (nd * H,) or t.dtype != "float32":
            raise ShapeError(f"layer {node.layer}: an initial state must have shape (N, {nd * H}) "
                             f"(directions x units), got {t}")
    if node.attrs.get("return_sequences"):
        return TensorType((x.shape[0], nd * H))
    return TensorType((nd * H,))


def _params(node: Node, types: list[TensorType]) -> list[ParamDecl]:
    T, I, H, G, nd = _dims(node, types[0])
    init = f"uniform:{1.0 / math.sqrt(H)!r}"  # PyTorch's default for every recurrent weight and bias
    return [ParamDecl("W", (nd, G * H, I), init, I, H),
            ParamDecl("R", (nd, G * H, H), init, H, H),
            ParamDecl("B", (nd, 2 * G * H), init, H, H)]


def _workspace(node: Node, types: list[TensorType], batch: int) -> dict[str, tuple[int, ...]]:
    T, I, H, G, nd = _dims(node, types[0])
    ws = {"xw": (batch, T, nd * G * H), "hp": (batch, T, nd * H), "hbuf": (batch, H), "rec": (batch, G * H),
          "dhp": (batch, H), "rt": (nd, H, G * H)}
    if node.op != "LSTM":  # the LSTM keeps its gates and their gradients in xw itself (see _gate_buffer)
        ws.update(act=(batch, T, nd * G * H), dxg=(batch, T, nd * G * H), gs=(batch, G * H))
    if I < NT_MIN_K:
        ws["wt"] = (I, nd * G * H)
    if I < NR:
        ws["dwt"] = (I, nd * G * H)
    if node.op == "LSTM":
        ws.update(cbuf=(batch, H), dcc=(batch, H), cs=(batch, T, nd * H))
    if node.op == "GRU":
        ws.update(drg=(batch, T, nd * G * H), aux=(batch, T, nd * H), rhbuf=(batch, H), drh=(batch, H), dhc=(batch, H),
                  rec_zr=(batch, 2 * H), rec_h=(batch, H), dhz=(batch, H), gs_zr=(batch, 2 * H), gs_n=(batch, H))
    return ws


# A layer call splits its batch over Numba's threads from this many multiply-adds per time step
# (below it, starting the parallel region costs more than the split saves).
CHUNKED_MIN = 1 << 17


def chunks(batch: int, gates_h: int, hidden: int) -> int:
    """How many blocks of batch rows (one per thread) a recurrent layer call runs; 1 = serial."""
    threads = numba.get_num_threads()
    if threads == 1 or batch * gates_h * hidden < CHUNKED_MIN:
        return 1
    return max(1, min(threads, batch // 8))


def _gate_buffer(node: Node, ws, name: str) -> np.ndarray:
    """The (B, T, nd*G*H) buffer that holds ``name`` ("act": gate activations, "dxg": their
    pre-activation gradients). The LSTM writes both over its input projection xw, in place: each
    value is read once, by the very loop that overwrites it (the forward reads x W^T and stores the
    gate; the backward reads the gate and stores its gradient), and a training step at batch 64
    streams 13 MB less through the caches (forward loop 3.1 -> 2.3 ms, backward 2.6 -> 2.0)."""
    return ws["xw"] if node.op == "LSTM" else ws[name]


def _views(node: Node, xs, y):
    """(x as rows, y as 3-D, seq flag, h0, c0 or dummies, use flags)."""
    seq = bool(node.attrs.get("return_sequences"))
    y3 = y if seq else y.reshape(y.shape[0], 1, y.shape[1])
    dummy = np.zeros((1, 1), y.dtype)
    h0 = xs[1] if len(xs) > 1 else dummy
    c0 = xs[2] if len(xs) > 2 else dummy
    return seq, y3, h0, c0, len(xs) > 1, len(xs) > 2


def _bind_forward(node, xs, ps, y, ws):
    x = xs[0]
    B, T, I = x.shape
    W, R, bias = ps
    nd, GH, H = R.shape
    x2, xw2 = x.reshape(B * T, I), ws["xw"].reshape(B * T, nd * GH)
    w2, rt, wt = W.reshape(nd * GH, I), ws["rt"], ws.get("wt")
    seq, y3, h0, c0, use_h0, use_c0 = _views(node, xs, y)
    code = CODES[node.attrs.get("activation", "tanh")]
    kind = node.op
    lbr = bool(node.attrs.get("linear_before_reset"))
    parts = chunks(B, GH, H)

    def run():
        # each R[d]^T with unit-stride rows for the per-step products (K = H is too short for the
        # dot-product kernel's reductions to pay), once per call
        np.copyto(rt, R.transpose(0, 2, 1))
        if wt is None:
            matmul_nt(x2, w2, xw2)  # one GEMM projects every time step of both directions
        else:                       # (few input features: W^T packed, the tile kernel)
            np.copyto(wt, w2.T)
            matmul(x2, wt, xw2)
        if kind == "RNN":
            args = (ws["xw"], bias, rt, h0, use_h0, code, seq, ws["hbuf"], ws["rec"], ws["hp"], ws["act"], y3)
            S.rnn_forward_chunks(*args, parts) if parts > 1 else S.rnn_forward(*args)
        elif kind == "LSTM":
            args = (ws["xw"], bias, rt, h0, c0, use_h0, use_c0, code, seq, ws["hbuf"], ws["cbuf"], ws["rec"],
                    ws["hp"], _gate_buffer(node, ws, "act"), ws["cs"], y3)
            S.lstm_forward_chunks(*args, parts) if parts > 1 else S.lstm_forward(*args)
        else:
            args = (ws["xw"], bias, rt, h0, use_h0, code, seq, lbr, ws["hbuf"], ws["rhbuf"], ws["rec"],
                    ws["rec_zr"], ws["rec_h"], ws["hp"], ws["act"], ws["aux"], y3)
            S.gru_forward_chunks(*args, parts) if parts > 1 else S.gru_forward(*args)
    return run


def _bind_backward(node, xs, ps, y, dy, dxs, dps, ws):
    x = xs[0]
    B, T, I = x.shape
    W, R, bias = ps
    dW, dR, dB = dps
    nd, GH, H = R.shape
    rows = B * T
    seq, dy3, h0, c0, use_h0, use_c0 = _views(node, xs, dy)
    code = CODES[node.attrs.get("activation", "tanh")]
    kind = node.op
    lbr = bool(node.attrs.get("linear_before_reset"))
    dxg = _gate_buffer(node, ws, "dxg")
    act = _gate_buffer(node, ws, "act")
    drg = ws["drg"] if kind == "GRU" else dxg
    x2, dx2, dr2 = x.reshape(rows, I), dxg.reshape(rows, nd * GH), drg.reshape(rows, nd * GH)
    hp2 = ws["hp"].reshape(rows, nd * H)
    aux2 = ws["aux"].reshape(rows, nd * H) if kind == "GRU" else None
    w2, dw2 = W.reshape(nd * GH, I), dW.reshape(nd * GH, I)
    dwt = ws.get("dwt")
    dx_rows = dxs[0].reshape(rows, I) if dxs[0] is not None else None
    want0 = any(d is not None for d in dxs[1:])
    # initial-state gradients land in the caller's buffers, or in scratch nobody reads
    dh0 = dxs[1] if len(dxs) > 1 and dxs[1] is not None else np.zeros((B, nd * H), y.dtype)
    dc0 = dxs[2] if len(dxs) > 2 and dxs[2] is not None else np.zeros((B, nd * H), y.dtype)
    parts = chunks(B, GH, H)

    def run():
        if kind == "RNN":
            args = (R, code, seq, dy3, ws["dhp"], act, ws["gs"], dxg, dh0, want0)
            S.rnn_backward_chunks(*args, parts) if parts > 1 else S.rnn_backward(*args)
        elif kind == "LSTM":
            args = (R, c0, use_c0, code, seq, dy3, ws["dhp"], ws["dcc"], act, ws["cs"], dxg, dh0, dc0, want0)
            S.lstm_backward_chunks(*args, parts) if parts > 1 else S.lstm_backward(*args)
        else:
            args = (R, code, seq, lbr, dy3, ws["dhp"], ws["dhz"], ws["dhc"], ws["drh"], ws["hp"], act, ws["aux"],
                    ws["gs"], ws["gs_zr"], ws["gs_n"], dxg, drg, dh0, want0)
            S.gru_backward_chunks(*args, parts) if parts > 1 else S.gru_backward(*args)
        weight_grads()

    def weight_grads():
        # the weight gradients: one GEMM over all rows (batch x time) and both directions
        if dwt is None:
            matmul(dx2.T, x2, dw2)
        else:  # fewer input features than the kernel's tile width: dW's rows would leave the tile
            matmul(x2.T, dx2, dwt)  # part empty, dW^T's fill it (same sums, same bits); transpose
            np.copyto(dw2, dwt.T)
        for d in range(nd):
            g = slice(d * GH, (d + 1) * GH)
            h = slice(d * H, (d + 1) * H)
            np.sum(dx2[:, g], axis=0, out=dB[d, :GH])
            if kind == "GRU":
                np.sum(dr2[:, g], axis=0, out=dB[d, GH:])
            else:  # the recurrent bias gets the same gradient as the input bias
                dB[d, GH:] = dB[d, :GH]
            if kind == "GRU" and not lbr:  # the h gate's recurrent product reads r ⊙ h_prev
                matmul(dr2[:, d * GH:d * GH + 2 * H].T, hp2[:, h], dR[d, :2 * H])
                matmul(dr2[:, d * GH + 2 * H:(d + 1) * GH].T, aux2[:, h], dR[d, 2 * H:])
            else:
                matmul(dr2[:, g].T, hp2[:, h], dR[d])
        if dx_rows is not None:
            matmul(dx2, w2, dx_rows)
    return run


# ---- reference (plain numpy, straight from the ONNX operator definitions) ---------------------

def _reference(node, xs, ps):
    x = xs[0]
    W, R, bias = ps
    nd, GH, H = R.shape
    B, T, _ = x.shape
    act = node.attrs.get("activation", "tanh")
    f = (lambda a: apply_reference(act, a))
    sig = (lambda a: apply_reference("sigmoid", a))
    outs, lasts = [], []
    for d in range(nd):
        Wb, Rb = bias[d, :GH], bias[d, GH:]
        h = xs[1][:, d * H:(d + 1) * H] if len(xs) > 1 else np.zeros((B, H), x.dtype)
        c = xs[2][:, d * H:(d + 1) * H] if len(xs) > 2 else np.zeros((B, H), x.dtype)
        seq = np.zeros((B, T, H), x.dtype)
        for t in (range(T - 1, -1, -1) if d == 1 else range(T)):
            xw = x[:, t] @ W[d].T + Wb
            if node.op == "RNN":
                h = f(xw + h @ R[d].T + Rb)
            elif node.op == "LSTM":
                a = xw + h @ R[d].T + Rb
                i, o, fg, g = sig(a[:, :H]), sig(a[:, H:2 * H]), sig(a[:, 2 * H:3 * H]), f(a[:, 3 * H:])
                c = fg * c + i * g
                h = o * f(c)
            else:
                Rz, Rr, Rh = R[d, :H], R[d, H:2 * H], R[d, 2 * H:]
                z = sig(xw[:, :H] + h @ Rz.T + Rb[:H])
                r = sig(xw[:, H:2 * H] + h @ Rr.T + Rb[H:2 * H])
                if node.attrs.get("linear_before_reset"):
                    n = f(xw[:, 2 * H:] + r * (h @ Rh.T + Rb[2 * H:]))
                else:
                    n = f(xw[:, 2 * H:] + (r * h) @ Rh.T + Rb[2 * H:])
                h = (1 - z) * n + z * h
            seq[:, t] = h
        outs.append(seq)
        lasts.append(h)
    if node.attrs.get("return_sequences"):
        return np.concatenate(outs, axis=-1)
    return np.concatenate(lasts, axis=-1)


# ---- ONNX: layout 0 (time-major) with Transposes around it; direction axis squeezed away -------

def _to_onnx(node, in_names, out_name, in_types, b):
    T, I, H, G, nd = _dims(node, in_types[0])
    name = node.name
    x_tm = b.fresh(f"{name}/x_time_major")
    b.node("Transpose", [in_names[0]], [x_tm], perm=[1, 0, 2])
    W, R, bias = node.params
    states = []
    for k, src in enumerate(in_names[1:]):  # (N, nd*H) -> (nd, N, H)
        shaped = b.fresh(f"{name}/state{k}_3d")
        b.node("Reshape", [src, b.constant(f"{name}/state_shape", np.array([0, nd, H], np.int64))], [shaped])
        tm = b.fresh(f"{name}/initial_state{k}")
        b.node("Transpose", [shaped], [tm], perm=[1, 0, 2])
        states.append(tm)
    act = ONNX_ACT[node.attrs.get("activation", "tanh")]
    acts = {"RNN": [act], "LSTM": ["Sigmoid", act, act], "GRU": ["Sigmoid", act]}[node.op] * nd
    attrs = dict(hidden_size=H, direction="bidirectional" if nd == 2 else "forward", activations=acts, layout=0)
    if node.op == "GRU":
        attrs["linear_before_reset"] = int(bool(node.attrs.get("linear_before_reset")))
    inputs = [x_tm, W, R, bias] + (["", *states] if states else [])  # "" = sequence_lens (full length)
    seq = bool(node.attrs.get("return_sequences"))
    full = b.fresh(f"{name}/Y") if seq else ""
    last = "" if seq else b.fresh(f"{name}/Y_h")
    b.node(node.op, inputs, [full, last] if last else [full], **attrs)
    if seq:  # Y: (T, nd, N, H) -> (N, T, nd*H)
        if nd == 1:
            sq = b.fresh(f"{name}/Y_squeezed")
            b.node("Squeeze", [full, b.constant(f"{name}/axis1", np.array([1], np.int64))], [sq])
            b.node("Transpose", [sq], [out_name], perm=[1, 0, 2])
        else:
            tr = b.fresh(f"{name}/Y_batch_major")
            b.node("Transpose", [full], [tr], perm=[2, 0, 1, 3])
            b.node("Reshape", [tr, b.constant(f"{name}/shape_ntf", np.array([0, 0, -1], np.int64))], [out_name])
    else:     # Y_h: (nd, N, H) -> (N, nd*H)
        if nd == 1:
            b.node("Squeeze", [last, b.constant(f"{name}/axis0", np.array([0], np.int64))], [out_name])
        else:
            tr = b.fresh(f"{name}/Y_h_batch_major")
            b.node("Transpose", [last], [tr], perm=[1, 0, 2])
            b.node("Reshape", [tr, b.constant(f"{name}/shape_nf", np.array([0, -1], np.int64))], [out_name])


def _make(kind: str) -> OpDef:
    return OpDef(kind, _infer, _bind_forward, _bind_backward, _to_onnx, _reference, params=_params,
                 workspace=_workspace)


RNN_OP, LSTM_OP, GRU_OP = _make("RNN"), _make("LSTM"), _make("GRU")
OPS = [RNN_OP, LSTM_OP, GRU_OP]
