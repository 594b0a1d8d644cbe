"""Callbacks: user code at the training loop's events, and early stopping.

Events, in order (``trainer`` is the running :class:`~nngraph.train.trainer.Trainer`):

    on_train_begin(trainer)
    on_epoch_begin(trainer, epoch)                 epoch is 0-based; trainer.optimizer.lr is set
    on_progress(trainer, epoch, batch, batches, loss, metric)
                                                   at most ~10 times a second, only if some callback
                                                   sets ``wants_progress``; loss/metric: epoch so far
    on_epoch_end(trainer, record)                  after validation; set trainer.stop_training to stop
    on_interrupt(trainer, signal_name)             SIGINT/SIGTERM: the step finished, state is consistent
    on_diverged(trainer, error)                    NaN/Inf found; weights are those before the bad step
    on_train_end(trainer)                          normal end (all epochs, or stop_training)

A callback with state that must survive a resume returns it from ``state()`` (JSON values) and
``arrays()`` (numpy arrays), and takes it back in ``load_state``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .schedules import better, monitor_mode

if TYPE_CHECKING:
    from .history import EpochRecord
    from .trainer import Trainer


class Callback:
    """Base class: every event is a no-op."""

    key = ""  # name under which state() is checkpointed ("" : stateless)
    wants_progress = False

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_progress(self, trainer: "Trainer", epoch: int, batch: int, batches: int, loss: float,
                    metric: float | None) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", record: "EpochRecord") -> None: ...
    def on_interrupt(self, trainer: "Trainer", signal_name: str) -> None: ...
    def on_diverged(self, trainer: "Trainer", error: Exception) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        pass


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda tr, rec: ...)``."""

    def __init__(self, **events: Any):
        for name, fn in events.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise TypeError(f"unknown callback event {name!r}")
            setattr(self, name, fn)
        self.wants_progress = "on_progress" in events


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; with
    ``restore_best`` the trainer ends with the weights of the best epoch (kept as a copy of the
    flat parameter buffer, and checkpointed with the run so a resume keeps them)."""

    key = "early_stopping"

    def __init__(self, monitor: str, patience: int = 10, min_delta: float = 0.0, restore_best: bool = True):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.restore_best = restore_best
        self.mode = monitor_mode(monitor)
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: np.ndarray | None = None

    def on_epoch_end(self, trainer: "Trainer", record: "EpochRecord") -> None:
        value = record.values().get(self.monitor)
        if value is None:
            return
        if better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, record.epoch, 0
            if self.restore_best:  # parameters and state (running statistics) of the best epoch
                params = trainer.program.params
                if self.best_weights is None:
                    self.best_weights = np.concatenate([params.flat, params.state_flat])
                else:
                    self.best_weights[...] = np.concatenate([params.flat, params.state_flat])
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = record.epoch
            trainer.stop_training = True

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.restore_best and self.best_weights is not None:  # stopped early or not, like Keras 3
            params = trainer.program.params
            params.flat[...] = self.best_weights[:params.flat.size]
            if self.best_weights.size > params.flat.size:  # runs saved before state existed hold params only
                params.state_flat[...] = self.best_weights[params.flat.size:]

    def describe(self) -> str | None:
        """What early stopping did, in one line (None when it neither stopped nor restored):
        when it stopped, why, and which epoch's weights the run ends with."""
        from .progress import fmt

        best = f"best {self.monitor} {fmt(self.best)} at epoch {self.best_epoch}" if self.best is not None else ""
        restored = (f"restored the weights of epoch {self.best_epoch}" if self.restore_best and
                    self.best_weights is not None else "kept the last epoch's weights (restore_best is false)")
        if self.stopped_epoch is not None:
            delta = f" by more than {self.min_delta:g}" if self.min_delta else ""
            return (f"early stopping: stopped after epoch {self.stopped_epoch}: {self.monitor} did not improve"
                    f"{delta} for {self.patience} epoch{'s' if self.patience != 1 else ''} ({best}); {restored}")
        if self.restore_best and self.best_weights is not None:
            return f"early stopping: did not trigger; {restored} ({best})"
        return None

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.best_weights is None else {"best_weights": self.best_weights}

    def load_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.stopped_epoch = state.get("stopped_epoch")
        if "best_weights" in arrays:
            self.best_weights = np.array(arrays["best_weights"])
