"""Scalar activation math for the Numba kernels: one definition of each activation and of its
derivative, inlined where a kernel applies it (codes and the numpy references in activations.py).

    sigmoid     s(z) = 1 / (1 + e^-z)                     (two branches: exp never overflows)
    leaky_relu  y = z (z >= 0), alpha z (z < 0)          dy/dz = 1 (z > 0), alpha (z <= 0)
    elu         y = z (z > 0), alpha (e^z - 1) (z <= 0)  dy/dz = 1 (z > 0), alpha e^z (z <= 0)
    gelu        y = z Phi(z),  Phi(z) = (1 + erf(z / sqrt 2)) / 2
                dy/dz = Phi(z) + z phi(z),  phi(z) = e^(-z^2 / 2) / sqrt(2 pi)
                (float32: a vectorisable erf and exp, below)
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

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ..linalg.vec import LANES, VEC, VEC_SUFFIX, fvec, vec_intrinsic_fn
from .activations import ELU, GELU, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH
from .rnn_math import _fma

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# ---- GELU and exp(-t): exact in float64, vectorisable in float32 ----------------------------------
# Without SVML, math.erf and math.exp are scalar libm calls: GELU over a 32 x 64 x 512 transformer
# feed-forward output took 7.3 ms forward and 13.4 ms backward (~7-13 ns per element), more than
# the block's matrix products. In float32 we use Eigen's rational erf (clamped at |x| = 4, where erf
# rounds to +-1 in float32; |error| < 4.2e-7 measured against math.erf) and exp(-t) by range
# reduction to a polynomial and the exponent bits (exp_neg32): only multiplies, adds, min/max,
# integer conversions and a division, which LLVM turns into SIMD code. float64 (the gradient checks
# and the numpy references) stays exact.

_E1, _E3, _E5 = np.float32(-1.60960333262415e-02), np.float32(-2.95459980854025e-03), np.float32(-7.34990630326855e-04)
_E7, _E9 = np.float32(-5.69250639462346e-05), np.float32(-2.10102402082508e-06)
_E11, _E13 = np.float32(2.77068142495902e-08), np.float32(-2.72614225801306e-10)
_F0, _F2 = np.float32(-1.42647390514189e-02), np.float32(-7.37332916720468e-03)
_F4, _F6 = np.float32(-1.68282697438203e-03), np.float32(-2.13374055278905e-04)
_F8 = np.float32(-1.45660718464996e-05)
_FOUR = np.float32(4.0)
_H32 = np.float32(0.5)
_ONE32 = np.float32(1.0)
_INV_SQRT2_32 = np.float32(_INV_SQRT2)
_INV_SQRT_2PI_32 = np.float32(_INV_SQRT_2PI)
_T_MAX = np.float32(87.0)
_LOG2E = np.float32(1.0 / math.log(2.0))
_MINUS_LN2_HI = np.float32(-0.693145751953125)        # ln2's leading bits: k * this is exact
_MINUS_LN2_LO = np.float32(-1.428606765330187e-06)    # ln2 - hi
_C3, _C4, _C5 = np.float32(1.0 / 6), np.float32(1.0 / 24), np.float32(1.0 / 120)
_C6, _C7 = np.float32(1.0 / 720), np.float32(1.0 / 5040)


@njit(cache=True, inline="always", error_model="numpy")
def _erf32(a):
    x = min(max(a, -_FOUR), _FOUR)
    x2 = x * x
    p = _fma(_fma(_fma(_fma(_fma(_fma(_E13, x2, _E11), x2, _E9), x2, _E7), x2, _E5), x2, _E3), x2, _E1) * x
    q = _fma(_fma(_fma(_fma(_F8, x2, _F6), x2, _F4), x2, _F2), x2, _F0)
    return p / q


@intrinsic
def _pow2_neg(typingctx, k):
    """2^-k as float32 for an integer 0 <= k <= 126, built from its exponent bits (vectorisable)."""
    if not isinstance(k, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        e = builder.sub(ir.Constant(i32, 127), builder.trunc(args[0], i32) if k.bitwidth > 32 else
                        builder.sext(args[0], i32) if k.bitwidth < 32 else args[0])
        return builder.bitcast(builder.shl(e, ir.Constant(i32, 23)), ir.FloatType())
    return types.float32(k), codegen


@njit(cache=True, inline="always", error_model="numpy")
def exp_neg32(t):
    """e^-t for float32 t >= 0: t = k ln2 + r with k = round(t / ln2), |r| <= ln2 / 2 (ln2 in two
    parts, Cody-Waite), e^-r by its degree-7 Taylor polynomial (relative error < 1e-8 on that range),
    times 2^-k from the exponent bits. t is clamped at 87 (e^-87 ~ 1.6e-38, the float32 normal range's
    end; e^-t below that is 0 next to anything it is added to)."""
    x = min(t, _T_MAX)
    k = np.int32(x * _LOG2E + _H32)
    kf = np.float32(k)
    r = _fma(kf, _MINUS_LN2_LO, _fma(kf, _MINUS_LN2_HI, x))  # r = x - k ln2
    u = -r
    p = _fma(_fma(_fma(_fma(_fma(_fma(_fma(_C7, u, _C6), u, _C5), u, _C4), u, _C3), u, _H32), u, _ONE32), u, _ONE32)
    return p * _pow2_neg(k)


# ---- e^-t on a whole float32 vector ------------------------------------------------------------------

@intrinsic
def vexp_neg(typingctx, v):
    """``exp_neg32`` lane by lane on a float32 vector (linalg.vec): the same operations in the same
    order, so the same bits as the scalar function. Loops whose trip count is short or not a multiple
    of the vector width (a causal softmax row of i + 1 elements) stay scalar when LLVM vectorises
    the scalar form; here the caller masks the tail."""
    if v is not fvec:
        return None

    def codegen(context, builder, sig, args):
        ivec = ir.VectorType(ir.IntType(32), LANES)
        fma_fn = vec_intrinsic_fn(builder, f"llvm.fma.{VEC_SUFFIX}", VEC, [VEC] * 3)

        def c(x):
            return ir.Constant(VEC, [float(np.float32(x))] * LANES)

        def fma(a, b, d):
            return builder.call(fma_fn, [a, b, d])

        t = args[0]
        x = builder.select(builder.fcmp_ordered("<", t, c(_T_MAX)), t, c(_T_MAX))
        k = builder.fptosi(builder.fadd(builder.fmul(x, c(_LOG2E)), c(_H32)), ivec)
        kf = builder.sitofp(k, VEC)
        u = builder.fsub(c(-0.0), fma(kf, c(_MINUS_LN2_LO), fma(kf, c(_MINUS_LN2_HI), x)))
        p = c(_C7)
        for coef in (_C6, _C5, _C4, _C3, _H32, _ONE32, _ONE32):
            p = fma(p, u, c(coef))
        bits = builder.shl(builder.sub(ir.Constant(ivec, [127] * LANES), k), ir.Constant(ivec, [23] * LANES))
        return builder.fmul(p, builder.bitcast(bits, VEC))
    return fvec(fvec), codegen


def exp_neg(t):
    """e^-t for t >= 0: exact in float64, ``exp_neg32`` in float32."""
    return math.exp(-t)


@overload(exp_neg, inline="always")
def _exp_neg_impl(t):
    if isinstance(t, types.Float) and t.bitwidth == 32:
        return lambda t: exp_neg32(t)
    return lambda t: math.exp(-t)


def gelu(z):
    """z Phi(z)."""
    return z * gelu_cdf(z)


def dgelu(z):
    """Phi(z) + z phi(z)."""
    return gelu_cdf(z) + z * _INV_SQRT_2PI * math.exp(-0.5 * z * z)


@overload(gelu, inline="always")
def _gelu_impl(z):
    if isinstance(z, types.Float) and z.bitwidth == 32:
        return lambda z: z * _fma(_H32, _erf32(z * _INV_SQRT2_32), _H32)
    return lambda z: z * (0.5 * (1.0 + math.erf(z * _INV_SQRT2)))


@overload(dgelu, inline="always")
def _dgelu_impl(z):
    if isinstance(z, types.Float) and z.bitwidth == 32:
        return lambda z: (_fma(_H32, _erf32(z * _INV_SQRT2_32), _H32)
                          + z * _INV_SQRT_2PI_32 * exp_neg32(_H32 * z * z))
    return lambda z: 0.5 * (1.0 + math.erf(z * _INV_SQRT2)) + z * _INV_SQRT_2PI * math.exp(-0.5 * z * z)


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
        return gelu(z)
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
        return dgelu(z)
    if code == SILU:
        s = sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if code == SOFTPLUS:
        return sigmoid(z)
    return 1.0  # identity

