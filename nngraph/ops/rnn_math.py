"""Scalar math shared by the recurrent kernels (rnn_steps.py): the activations
and their derivatives, exact in float64 and vectorisable in float32, and the compiler flags."""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .activations import RELU, SIGMOID, TANH

# The recurrent kernels' compiler flags. No fast-math: the kernels must compute the same bits
# wherever LLVM compiles them, and with "reassoc"/"contract" they did not. Numba links a callee's
# optimised IR into each caller's module and optimises it again; there the Reassociate pass may swap
# an fadd's operands, and the backend then fuses the OTHER product into the FMA (gru_bstep_r's
# dhc*z + drh*r: fma(dhc, z, drh*r) in its own library, fma(drh, r, dhc*z) in gru_backward's). The
# JIT resolves the call to whichever copy it loaded first: the callee's own library in a process
# that compiled the kernels, the caller's when that came from the on-disk cache, so a resumed run
# trained other bits than an uninterrupted one. Without the flags every optimisation keeps IEEE
# results. "fastmath=False" is spelled out because a kernel that leaves it unset inherits its
# caller's flags (numba's CPUTargetOptions: inherit_if_not_set("fastmath")), i.e. those of
# whichever caller compiled it first (the LSTM's vector cells ran with lstm_forward's reassoc).
# The elementwise loops vectorise without fast-math (no reductions here: the products are linalg's
# GEMM); the fused multiply-adds that pay (the tanh polynomial) are spelled out with ``_fma``.
# error_model="numpy" drops Python's zero-division check, whose branch would keep every loop with
# a "/" scalar.
JIT = dict(cache=True, fastmath=False, error_model="numpy")


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma: the same bits in every context, and the loop
    vectoriser widens it). All three arguments of one float type."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    t, name = (ir.FloatType(), "llvm.fma.f32") if a.bitwidth == 32 else (ir.DoubleType(), "llvm.fma.f64")

    def codegen(context, builder, sig, args):
        return builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t] * 3), name), args)
    return a(a, b, c), codegen


# The activations ``_act``/``_dact`` have a branch for (any other code would run as identity:
# recurrent_kernels.py rejects it at bind time instead).
CELL_ACTIVATIONS = ("tanh", "relu", "sigmoid")


# ---- tanh and sigmoid: exact in float64, a vectorisable rational approximation in float32 ------
# Without SVML, math.tanh/exp are scalar libm calls (~10 ns each): the LSTM epilogue alone has
# 5 of them per hidden unit per step, which made the gates cost more than the matrix products.
# In float32 we use Eigen's rational tanh (|error| < 3e-7, clamped at |x| = 7.9, where
# tanh rounds to +-1 in float32) and sigmoid(x) = (1 + tanh(x/2)) / 2: only multiplies, adds, a
# division and min/max, which LLVM turns into SIMD code. float64 (the gradient checks) stays exact.

_A1, _A3, _A5 = np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04), np.float32(1.48572235717979e-05)
_A7, _A9 = np.float32(5.12229709037114e-08), np.float32(-8.60467152213735e-11)
_A11, _A13 = np.float32(2.00018790482477e-13), np.float32(-2.76076847742355e-16)
_B0, _B2 = np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03)
_B4, _B6 = np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06)
_CLAMP = np.float32(7.90531110763549805)
_HALF = np.float32(0.5)


def _tanh(a):
    return math.tanh(a)


def _sig(a):
    return 1.0 / (1.0 + math.exp(-a))


@njit(cache=True, inline="always", error_model="numpy")
def _tanh32(a):
    x = min(max(a, -_CLAMP), _CLAMP)
    x2 = x * x
    # Horner with fused steps, exactly as lstm_cells._vtanh (the vector version): the same bits
    p = _fma(_fma(_fma(_fma(_fma(_fma(_A13, x2, _A11), x2, _A9), x2, _A7), x2, _A5), x2, _A3), x2, _A1) * x
    q = _fma(_fma(_fma(_B6, x2, _B4), x2, _B2), x2, _B0)
    return p / q


@overload(_tanh, inline="always")
def _tanh_impl(a):
    if isinstance(a, types.Float) and a.bitwidth == 32:
        return lambda a: _tanh32(a)
    return lambda a: math.tanh(a)


@overload(_sig, inline="always")
def _sig_impl(a):
    if isinstance(a, types.Float) and a.bitwidth == 32:
        return lambda a: _fma(_HALF, _tanh32(_HALF * a), _HALF)  # as lstm_cells._vsig
    # exp(-a) overflows to inf for a < -709: 1 / inf = 0, the right limit (no NaN)
    return lambda a: 1.0 / (1.0 + math.exp(-a))


@njit(cache=True, inline="always")
def _act(code, a):
    if code == TANH:
        return _tanh(a)
    if code == SIGMOID:
        return _sig(a)
    if code == RELU:
        return max(a, 0)
    return a


@njit(cache=True, inline="always")
def _dact(code, y):
    """Derivative of the activation, written in terms of its output y."""
    if code == TANH:
        return 1.0 - y * y
    if code == SIGMOID:
        return y * (1.0 - y)
    if code == RELU:
        return 1.0 if y > 0 else 0.0
    return 1.0
