"""Optimizers: in-place updates over the flat parameter buffer (one kernel call per step).

    sgd       p -= lr g
    momentum  v = mu v + g;  p -= lr v                    (PyTorch's formulation, dampening 0)
    nesterov  v = mu v + g;  p -= lr (g + mu v)
    adam      m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
              p -= (lr / (1-b1^t)) m / (sqrt(v) / sqrt(1-b2^t) + eps)   (PyTorch's formulation)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

PARALLEL_MIN = 1 << 18


@njit(cache=True)
def sgd_kernel(p, g, lr):
    for i in range(p.shape[0]):
        p[i] -= lr * g[i]


@njit(cache=True)
def momentum_kernel(p, g, v, lr, mu, nesterov):
    for i in range(p.shape[0]):
        vi = mu * v[i] + g[i]
        v[i] = vi
        if nesterov:
            p[i] -= lr * (g[i] + mu * vi)
        else:
            p[i] -= lr * vi


@njit(cache=True)
def _adam_range(p, g, m, v, step_size, b1, b2, inv_sqrt_bc2, eps, lo, hi):
    for i in range(lo, hi):
        gi = g[i]
        mi = b1 * m[i] + (1 - b1) * gi
        vi = b2 * v[i] + (1 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


@njit(cache=True)
def adam_serial(p, g, m, v, step_size, b1, b2, inv_sqrt_bc2, eps):
    _adam_range(p, g, m, v, step_size, b1, b2, inv_sqrt_bc2, eps, 0, p.shape[0])


@njit(cache=True, parallel=True)
def adam_parallel(p, g, m, v, step_size, b1, b2, inv_sqrt_bc2, eps):
    n = p.shape[0]
    chunks = 16
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _adam_range(p, g, m, v, step_size, b1, b2, inv_sqrt_bc2, eps, c * step, min(n, (c + 1) * step))


@njit(cache=True)
def clip_by_global_norm(g, max_norm):
    """Scale g in place so that its L2 norm is at most max_norm; returns the norm before clipping."""
    s = 0.0
    for i in range(g.shape[0]):
        s += g[i] * g[i]
    norm = math.sqrt(s)
    if norm > max_norm:
        scale = max_norm / norm
        for i in range(g.shape[0]):
            g[i] *= scale
    return norm


class Optimizer:
    """Base: holds the flat parameter/gradient buffers and the per-parameter state arrays."""

    def __init__(self, params: np.ndarray, grads: np.ndarray, **hyper: Any):
        self.p, self.g = params, grads
        self.hyper = hyper
        self.t = 0  # completed steps

    @property
    def lr(self) -> float:
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper["lr"] = value

    def step(self) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint (besides ``t``)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray], t: int) -> None:
        for k, v in state.items():
            getattr(self, k)[...] = v
        self.t = t


class SGD(Optimizer):
    def __init__(self, params, grads, lr=0.01, momentum=0.0, nesterov=False):
        super().__init__(params, grads, lr=lr, momentum=momentum, nesterov=nesterov)
        self.velocity = np.zeros_like(params) if momentum > 0 else None

    def step(self) -> None:
        h = self.hyper
        if self.velocity is None:
            sgd_kernel(self.p, self.g, h["lr"])
        else:
            momentum_kernel(self.p, self.g, self.velocity, h["lr"], h["momentum"], h["nesterov"])
        self.t += 1

    def state(self):
        return {} if self.velocity is None else {"velocity": self.velocity}


class Adam(Optimizer):
    def __init__(self, params, grads, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, grads, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self._kernel = adam_parallel if params.size >= PARALLEL_MIN else adam_serial

    def step(self) -> None:
        h = self.hyper
        self.t += 1
        bc1 = 1 - h["beta1"] ** self.t
        bc2 = 1 - h["beta2"] ** self.t
        self._kernel(self.p, self.g, self.m, self.v, h["lr"] / bc1, h["beta1"], h["beta2"],
                     1.0 / math.sqrt(bc2), h["eps"])

    def state(self):
        return {"m": self.m, "v": self.v}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(kind: str, hyper: dict[str, Any], params: np.ndarray, grads: np.ndarray) -> Optimizer:
    """Build an optimizer from a spec's ``optimizer`` section (resolved)."""
    return OPTIMIZERS[kind](params, grads, **hyper)
