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

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Node, TensorType
from .activations import apply_reference
from .base import SEQUENCE, OpSpec, ParamDecl, same_attrs

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
ONNX_ACT = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}
STATE_INPUTS = {"RNN": 1, "LSTM": 2, "GRU": 1}  # how many initial-state inputs the op accepts


def dims(node: Node, in_type: TensorType) -> tuple[int, int, int, int, int]:
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
    T, I, H, G, nd = dims(node, types[0])
    init = f"uniform:{1.0 / math.sqrt(H)!r}"  # PyTorch's default for every recurrent weight and bias
    return [ParamDecl("W", (nd, G * H, I), init, I, H),
            ParamDecl("R", (nd, G * H, H), init, H, H),
            ParamDecl("B", (nd, 2 * G * H), init, H, H)]


# ---- reference (plain numpy, straight from the ONNX operator definitions) ---------------------

def _reference(node, xs, ps, ctx=None):
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
    T, I, H, G, nd = dims(node, in_types[0])
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
    if not states and b.explicit_states:  # zero states (nd, N, H) from x's batch size, for tract: it
        # aborts the process when it has to make them for a symbolic batch (tract 0.23,
        # onnx/src/ops/rec/common.rs). Not the default: the four nodes cost onnxruntime ~5 us of a
        # 52 us batch-1 call on a 32-unit RNN (sine_rnn; nothing measurable on a 256-unit GRU)
        dims_tm = b.fresh(f"{name}/x_shape")
        b.node("Shape", [x_tm], [dims_tm])
        batch = b.fresh(f"{name}/batch")
        b.node("Slice", [dims_tm, b.constant(f"{name}/one", np.array([1], np.int64)),
                         b.constant(f"{name}/two", np.array([2], np.int64))], [batch])
        shape = b.fresh(f"{name}/state_dims")
        b.node("Concat", [b.constant(f"{name}/directions", np.array([nd], np.int64)), batch,
                          b.constant(f"{name}/hidden", np.array([H], np.int64))], [shape], axis=0)
        zero = b.fresh(f"{name}/zero_state")
        b.node("Expand", [b.constant(f"{name}/zeros", np.zeros((1, 1, H), np.float32)), shape], [zero])
        states = [zero] * STATE_INPUTS[node.op]
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


def _spec(kind: str) -> OpSpec:
    return OpSpec(kind, _infer, _to_onnx, _reference, kernels="nngraph.ops.recurrent_kernels", params=_params,
                  layers={kind.lower(): same_attrs}, time_rule=SEQUENCE)


RNN_OP, LSTM_OP, GRU_OP = _spec("RNN"), _spec("LSTM"), _spec("GRU")
SPECS = [RNN_OP, LSTM_OP, GRU_OP]
