"""Each optimizer and schedule against a hand-written numpy reference (and torch.optim when it is
importable): a few steps of a tiny problem, float64, every hyperparameter that changes the formula."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nngraph.train.optimizers import OPTIMIZERS, clip_by_global_norm, sum_of_squares
from nngraph.train.schedules import make_schedule

STEPS = 6


def grads_for(step: int, p: np.ndarray) -> np.ndarray:
    """A gradient that depends on the parameters (like a real one) and varies per step."""
    rng = np.random.default_rng(step)
    return 0.5 * p + rng.normal(size=p.shape)


def reference(kind: str, h: dict, p0: np.ndarray) -> np.ndarray:
    """The update rules written out step by step (PyTorch's documented algorithms)."""
    p = p0.copy()
    m = np.zeros_like(p); v = np.zeros_like(p); b = np.zeros_like(p); a = np.zeros_like(p)
    for t in range(1, STEPS + 1):
        g = grads_for(t, p)
        wd = h.get("weight_decay", 0.0 if kind != "adamw" else 0.01)
        if kind == "sgd":
            g = g + wd * p
            mu = h.get("momentum", 0.0)
            if mu:
                b = g.copy() if t == 1 else mu * b + g  # torch: buf = clone(d_p) on the first step
                g = g + mu * b if h.get("nesterov") else b
            p = p - h["lr"] * g
        elif kind in ("adam", "adamw"):
            b1, b2, eps = h.get("beta1", 0.9), h.get("beta2", 0.999), h.get("eps", 1e-8)
            if kind == "adamw":
                p = p * (1 - h["lr"] * wd)
            else:
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            # torch divides sqrt(v) by sqrt(1-b2^t) before adding eps: same as sqrt(vhat) + eps
            p = p - h["lr"] * mhat / (np.sqrt(vhat) + eps)
        elif kind == "rmsprop":
            alpha, eps, mu = h.get("alpha", 0.99), h.get("eps", 1e-8), h.get("momentum", 0.0)
            g = g + wd * p
            v = alpha * v + (1 - alpha) * g * g
            if h.get("centered"):
                a = alpha * a + (1 - alpha) * g
                d = np.sqrt(v - a * a) + eps
            else:
                d = np.sqrt(v) + eps
            if mu:
                b = mu * b + g / d
                p = p - h["lr"] * b
            else:
                p = p - h["lr"] * g / d
    return p


CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.02, "weight_decay": 0.3}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.02}),
]


def run_ours(kind: str, h: dict, p0: np.ndarray) -> np.ndarray:
    p = p0.copy()
    g = np.zeros_like(p)
    opt = OPTIMIZERS[kind](p, g, **h)
    for t in range(1, STEPS + 1):
        g[...] = grads_for(t, p)
        opt.step()
    assert opt.t == STEPS
    return p


@pytest.mark.parametrize("kind,h", CASES, ids=[f"{k}-{'-'.join(h)}" for k, h in CASES])
def test_optimizer_matches_reference(kind: str, h: dict) -> None:
    p0 = np.random.default_rng(42).normal(size=37)
    ours = run_ours(kind, h, p0)
    ref = reference(kind, h, p0)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-13)
    assert not np.allclose(ours, p0)


TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


@pytest.mark.parametrize("kind,h", CASES, ids=[f"{k}-{'-'.join(h)}" for k, h in CASES])
def test_optimizer_matches_torch(kind: str, h: dict) -> None:
    torch = pytest.importorskip("torch")
    p0 = np.random.default_rng(7).normal(size=23)
    kw = dict(h)
    if "beta1" in kw or "beta2" in kw:
        kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = getattr(torch.optim, TORCH_NAMES[kind])([param], **kw)
    for t in range(1, STEPS + 1):
        param.grad = torch.tensor(grads_for(t, param.detach().numpy().copy()))
        opt.step()
    np.testing.assert_allclose(run_ours(kind, h, p0), param.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_state_round_trip_continues_identically() -> None:
    """Saving state()/t mid-run and loading it into a fresh optimizer gives the same trajectory."""
    p0 = np.random.default_rng(1).normal(size=19)
    for kind, h in CASES:
        a = p0.copy(); ga = np.zeros_like(a); oa = OPTIMIZERS[kind](a, ga, **h)
        for t in range(1, 4):
            ga[...] = grads_for(t, a); oa.step()
        b = a.copy(); gb = np.zeros_like(b); ob = OPTIMIZERS[kind](b, gb, **h)
        ob.load_state({k: v.copy() for k, v in oa.state().items()}, oa.t)
        for t in range(4, 7):
            ga[...] = grads_for(t, a); oa.step()
            gb[...] = grads_for(t, b); ob.step()
        assert np.array_equal(a, b), kind


def test_clip_and_finite_check() -> None:
    g = np.array([3.0, 4.0])
    assert clip_by_global_norm(g, 1.0) == 5.0
    np.testing.assert_allclose(g, [0.6, 0.8])
    assert sum_of_squares(np.array([1.0, 2.0], np.float32)) == 5.0
    for bad in (np.nan, np.inf):
        x = np.ones(1000, np.float32)
        x[517] = bad
        assert not math.isfinite(sum_of_squares(x))


# ---- schedules ------------------------------------------------------------------------------------

SCHEDULE_CASES = [
    ({"type": "constant"}, [0.1] * 6),
    ({"type": "step", "step_size": 2, "gamma": 0.5}, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
    ({"type": "exponential", "gamma": 0.9}, [0.1 * 0.9 ** e for e in range(6)]),
    ({"type": "cosine", "epochs": 6, "min_lr": 0.0, "warmup_epochs": 0},
     [0.05 * (1 + math.cos(math.pi * e / 6)) for e in range(6)]),
    # warm-up 2: 0.1*1/3, 0.1*2/3, then cosine over the remaining 4 epochs down to min_lr 0.01
    ({"type": "cosine", "epochs": 6, "min_lr": 0.01, "warmup_epochs": 2},
     [0.1 / 3, 0.2 / 3] + [0.01 + 0.09 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]),
]


@pytest.mark.parametrize("cfg,want", SCHEDULE_CASES, ids=[c["type"] + str(i) for i, (c, _) in enumerate(SCHEDULE_CASES)])
def test_schedule_values(cfg: dict, want: list[float]) -> None:
    s = make_schedule(cfg, 0.1, 6, "loss")
    np.testing.assert_allclose([s.lr_at(e) for e in range(6)], want, rtol=1e-12)


def plateau_reference(losses: list[float], lr: float, factor: float, patience: int, min_delta: float,
                      cooldown: int, min_lr: float) -> list[float]:
    best, bad, cool, out = math.inf, 0, 0, []
    for x in losses:
        out.append(lr)  # the lr used during this epoch
        if x < best - min_delta:
            best, bad = x, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > patience:
            lr, cool, bad = max(min_lr, lr * factor), cooldown, 0
    out.append(lr)
    return out


LOSSES = [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.49, 0.495, 0.7]


@pytest.mark.parametrize("patience,cooldown,min_delta", [(1, 0, 0.0), (2, 1, 0.0), (0, 0, 0.02), (1, 2, 0.05)])
def test_reduce_on_plateau(patience: int, cooldown: int, min_delta: float) -> None:
    cfg = {"type": "reduce_on_plateau", "monitor": "val_loss", "factor": 0.5, "patience": patience,
           "min_delta": min_delta, "cooldown": cooldown, "min_lr": 0.02}
    s = make_schedule(cfg, 0.1, 100, "loss")
    got = []
    for e, x in enumerate(LOSSES):
        got.append(s.lr_at(e))
        s.observe({"val_loss": x}, e)
    got.append(s.lr_at(len(LOSSES)))
    want = plateau_reference(LOSSES, 0.1, 0.5, patience, min_delta, cooldown, 0.02)
    assert got == pytest.approx(want, rel=1e-12)
    assert min(got) < 0.1  # the case does reduce


def test_schedules_match_torch() -> None:
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    pairs = [
        ({"type": "step", "step_size": 3, "gamma": 0.3}, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3)),
        ({"type": "exponential", "gamma": 0.8}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8)),
        ({"type": "cosine", "epochs": 7, "min_lr": 0.001, "warmup_epochs": 0},
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, eta_min=0.001)),
    ]
    for cfg, make in pairs:
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make(opt)
        theirs = []
        for _ in range(7):
            theirs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        ours = make_schedule(cfg, 0.1, 7, "loss")
        np.testing.assert_allclose([ours.lr_at(e) for e in range(7)], theirs, rtol=1e-9, err_msg=cfg["type"])
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.02,
                                                       threshold_mode="abs", cooldown=1, min_lr=0.02)
    ours = make_schedule({"type": "reduce_on_plateau", "monitor": "val_loss", "factor": 0.5, "patience": 1,
                          "min_delta": 0.02, "cooldown": 1, "min_lr": 0.02}, 0.1, 100, "loss")
    for e, x in enumerate(LOSSES):
        assert ours.lr_at(e) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        sched.step(x)
        ours.observe({"val_loss": x}, e)


OPTIMIZER_VARIANTS = [("sgd", {}), ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
                      ("adam", {}), ("adamw", {}), ("rmsprop", {"momentum": 0.5, "centered": True}),
                      ("rmsprop", {})]


@pytest.mark.parametrize("kind,hyper", OPTIMIZER_VARIANTS, ids=str)
def test_large_buffers_update_in_fixed_chunks_with_the_serial_bits(kind, hyper) -> None:
    """From PARALLEL_MIN parameters the updates run in CHUNKS pieces over the threads: element for
    element the same float32 arithmetic as the serial loop over a smaller buffer."""
    from nngraph.train.optimizers import PARALLEL_MIN

    n = PARALLEL_MIN + 1001  # chunks of unequal length
    rng = np.random.default_rng(2)
    p_big = rng.standard_normal(n).astype(np.float32)
    g_big = rng.standard_normal(n).astype(np.float32)
    start = p_big.copy()
    big = OPTIMIZERS[kind](p_big, g_big, **hyper)
    cut = 1000  # the serial kernel on the first 1000 entries (below PARALLEL_MIN)
    p_small, g_small = p_big[:cut].copy(), g_big[:cut].copy()
    small = OPTIMIZERS[kind](p_small, g_small, **hyper)
    for _ in range(3):
        big.step()
        small.step()
    assert np.array_equal(p_big[:cut], p_small)
    changed = (p_big != start).reshape(-1)[:n - n % 16].reshape(16, -1).mean(axis=1)
    assert changed.min() > 0.9, changed  # every chunk was updated


def test_large_finite_check_sums_chunks_and_sees_every_entry() -> None:
    from nngraph.train.optimizers import PARALLEL_MIN

    x = np.full(PARALLEL_MIN * 3 + 7, 0.5, np.float32)
    assert sum_of_squares(x) == 0.25 * x.size
    for at in (0, x.size // 2, x.size - 1):
        y = x.copy()
        y[at] = np.inf
        assert not math.isfinite(sum_of_squares(y))
