"""Scalar activation math for the Numba kernels: one definition of each activation and of its
derivative, inlined where a kernel applies it (codes and the numpy references in activations.py).

    sigmoid     s(z) = 1 / (1 + e^-z)                     (two branches: exp never overflows)
    leaky_relu  y = z (z >= 0), alpha z (z < 0)          dy/dz = 1 (z > 0), alpha (z <= 0)
    elu         y = z (z > 0), alpha (e^z - 1) (z <= 0)  dy/dz = 1 (z > 0), alpha e^z (z <= 0)
    gelu        y = z Phi(z),  Phi(z) = (1 + erf(z / sqrt 2)) / 2
                dy/dz = Phi(z) + z phi(z),  phi(z) = e^(-z^2 / 2) / sqrt(2 pi)
    silu        y = z s(z)                               dy/dz = s(z) (1 + z (1 - s(z)))
    softplus    y = log(1 + e^z) = max(z, 0) + log1p(e^-|z|)     dy/dz = s(z)
The subgradients at 0 follow PyTorch (leaky_relu and elu take the left branch). The derivatives
of these five are functions of the pre-activation z (not of y): their kernels read the op's input.

The relu/sigmoid/tanh epilogues of dense and conv keep their own branch-free loops (their bits and
speed are pinned by the tests); they share ``sigmoid`` from here. The recurrent cells have their
own float32-vectorisable tanh/sigmoid (rnn_math.py). Every kernel that takes an activation code
checks at bind time that it handles it (activations.check_activation).
"""
from __future__ import annotations

import math

from numba import njit

from .activations import ELU, GELU, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(cache=True, inline="always")
def sigmoid(z):
    """1 / (1 + e^-z), with exp's argument never positive."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def gelu_cdf(z):
    """Phi(z), the standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z * _INV_SQRT2))


@njit(cache=True, inline="always")
def act(code, z, alpha):
    """y = act(z) for every element-wise activation code (softmax is not element-wise)."""
    if code == RELU:
        return z if z > 0 else 0.0
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return math.tanh(z)
    if code == LEAKY_RELU:
        return z if z >= 0 else alpha * z
    if code == ELU:
        return z if z > 0 else alpha * math.expm1(z)
    if code == GELU:
        return z * gelu_cdf(z)
    if code == SILU:
        return z * sigmoid(z)
    if code == SOFTPLUS:
        return max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return z  # identity


@njit(cache=True, inline="always")
def dact_dz(code, z, alpha):
    """dy/dz of ``act(code, z, alpha)``, written in terms of the pre-activation z."""
    if code == RELU:
        return 1.0 if z > 0 else 0.0
    if code == SIGMOID:
        s = sigmoid(z)
        return s * (1.0 - s)
    if code == TANH:
        t = math.tanh(z)
        return 1.0 - t * t
    if code == LEAKY_RELU:
        return 1.0 if z > 0 else alpha
    if code == ELU:
        return 1.0 if z > 0 else alpha * math.exp(z)
    if code == GELU:
        return gelu_cdf(z) + z * _INV_SQRT_2PI * math.exp(-0.5 * z * z)
    if code == SILU:
        s = sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if code == SOFTPLUS:
        return sigmoid(z)
    return 1.0  # identity

