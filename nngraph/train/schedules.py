"""Learning-rate schedules, applied once at the start of each epoch (never inside the step loop).

With base learning rate ``lr0`` and the 0-based epoch ``e``:

    constant           lr0
    step               lr0 * gamma ** (e // step_size)                      (PyTorch StepLR)
    exponential        lr0 * gamma ** e                                     (PyTorch ExponentialLR)
    cosine             warm-up, e < W:  lr0 * (e + 1) / (W + 1)
                       then, with E = epochs - W, k = e - W:
                       min_lr + (lr0 - min_lr) * (1 + cos(pi * min(k, E) / E)) / 2
                                                                            (PyTorch CosineAnnealingLR)
    reduce_on_plateau  lr *= factor after ``patience`` epochs without an improvement of at least
                       ``min_delta`` in the monitored value, then ``cooldown`` epochs of rest; lr >= min_lr

Every schedule's state is a small JSON dict, so checkpoints restore it exactly.
"""
from __future__ import annotations

import math
from typing import Any


def better(mode: str, value: float, best: float | None, min_delta: float) -> bool:
    """Is ``value`` an improvement over ``best`` by at least ``min_delta`` (mode 'min' or 'max')?"""
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def monitor_mode(name: str) -> str:
    """'min' for losses and errors, 'max' for accuracies."""
    return "max" if "accuracy" in name else "min"


class Schedule:
    """Base: ``lr_at(epoch)`` before each epoch; ``observe(record)`` after it (plateau needs it)."""

    def __init__(self, base_lr: float, **cfg: Any):
        self.base_lr = base_lr
        self.cfg = cfg

    def lr_at(self, epoch: int) -> float:
        return self.base_lr

    def observe(self, values: dict[str, Any], epoch: int) -> None:
        """Called with the finished epoch's history row."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class Step(Schedule):
    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.cfg["gamma"] ** (epoch // self.cfg["step_size"])


class Exponential(Schedule):
    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.cfg["gamma"] ** epoch


class Cosine(Schedule):
    def lr_at(self, epoch: int) -> float:
        w, lo = self.cfg["warmup_epochs"], self.cfg["min_lr"]
        if epoch < w:
            return self.base_lr * (epoch + 1) / (w + 1)
        span = max(1, self.cfg["epochs"] - w)
        k = min(epoch - w, span)
        return lo + (self.base_lr - lo) * (1 + math.cos(math.pi * k / span)) / 2


class ReduceOnPlateau(Schedule):
    def __init__(self, base_lr: float, **cfg: Any):
        super().__init__(base_lr, **cfg)
        self.lr = base_lr
        self.best: float | None = None
        self.wait = 0
        self.cooldown_left = 0

    def lr_at(self, epoch: int) -> float:
        return self.lr

    def observe(self, values: dict[str, Any], epoch: int) -> None:
        name = self.cfg["monitor"]
        value = values.get(name)
        if value is None:
            return
        # PyTorch ReduceLROnPlateau with threshold_mode="abs" (threshold = min_delta).
        if better(monitor_mode(name), value, self.best, self.cfg["min_delta"]):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.wait > self.cfg["patience"]:
            self.lr = max(self.cfg["min_lr"], self.lr * self.cfg["factor"])
            self.wait, self.cooldown_left = 0, self.cfg["cooldown"]

    def state(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best, "wait": self.wait, "cooldown_left": self.cooldown_left}

    def load_state(self, state: dict[str, Any]) -> None:
        self.lr, self.best = state["lr"], state["best"]
        self.wait, self.cooldown_left = state["wait"], state["cooldown_left"]


SCHEDULES = {"constant": Schedule, "step": Step, "exponential": Exponential, "cosine": Cosine,
             "reduce_on_plateau": ReduceOnPlateau}


def make_schedule(cfg: dict[str, Any] | None, base_lr: float, epochs: int, monitor: str) -> Schedule:
    """A schedule from the resolved ``train.schedule`` section (None: constant)."""
    if cfg is None:
        return Schedule(base_lr)
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind == "cosine" and cfg.get("epochs") is None:
        cfg["epochs"] = epochs
    if kind == "reduce_on_plateau" and cfg.get("monitor") is None:
        cfg["monitor"] = monitor
    return SCHEDULES[kind](base_lr, **cfg)
