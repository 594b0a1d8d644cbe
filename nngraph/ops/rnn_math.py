"""Scalar math shared by the recurrent kernels (rnn_steps.py): the activations
and their derivatives, exact in float64 and vectorisable in float32, and the compiler flags."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .activations import RELU, SIGMOID, TANH

# Reassociation lets LLVM vectorise the dot-product reductions; nothing here depends on NaN/Inf
# semantics (the trainer checks the loss for NaN/Inf after the forward pass). error_model="numpy"
# drops Python's zero-division check, whose branch would keep every loop with a "/" scalar.
FM = {"reassoc", "contract"}

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
    p = ((((((_A13 * x2 + _A11) * x2 + _A9) * x2 + _A7) * x2 + _A5) * x2 + _A3) * x2 + _A1) * x
    q = ((_B6 * x2 + _B4) * x2 + _B2) * x2 + _B0
    return p / q


@overload(_tanh, inline="always")
def _tanh_impl(a):
    if isinstance(a, types.Float) and a.bitwidth == 32:
        return lambda a: _tanh32(a)
    return lambda a: math.tanh(a)


@overload(_sig, inline="always")
def _sig_impl(a):
    if isinstance(a, types.Float) and a.bitwidth == 32:
        return lambda a: _HALF + _HALF * _tanh32(_HALF * a)
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
