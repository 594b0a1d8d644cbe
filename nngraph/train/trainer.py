"""The training loop: mini-batches, fused loss, backward, optimizer step, metrics, history.

The epoch loop stays in Python; every step is a fixed sequence of bound Numba calls with no
allocation (batches are gathered into preallocated buffers by ``linalg.rows.take_rows``). Per step
the loop does nothing else but a finite check of the gradient (one pass, or the clipping norm), a
signal-flag test and a counter test for progress reports; schedules, validation, callbacks and
checkpoints run between epochs.

Exact resume: the whole state of a run is the flat parameter buffer, the optimizer's arrays and
step count, the shuffling generator's state *at the start of the current epoch*, the epoch and
batch counters, the epoch's running sums, the schedule's and callbacks' state and the history
(:meth:`Trainer.checkpoint`). A SIGINT/SIGTERM lets the current step finish and checkpoints at
that step boundary; resuming redraws the same permutation from the saved generator state, skips the
finished batches and continues, so the final weights equal an uninterrupted run's bit for bit.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from ..backend.program import Program
from ..errors import DataError, TrainingDiverged, TrainingInterrupted
from ..linalg.rows import take_rows
from ..ops.losses import LossDef
from .callbacks import Callback
from .history import EpochRecord, History
from .metrics import RunningMetric, count_correct
from .optimizers import Optimizer, clip_by_global_norm, sum_of_squares
from .schedules import Schedule


Feeds = dict[str, np.ndarray]


# A step over a batch whose activations and gradients outgrow this many bytes runs as equal
# micro-batches (forward, loss, backward each; gradients summed with each part's share of the batch
# mean), so every layer's buffers stay in cache between its forward and backward: LeNet at batch
# 256 (200 KB a sample) ran 9-20% slower per sample than at 64. Only networks whose ops are all
# per-sample split (batch norm's statistics are over the whole batch it is given, so a network with
# it never does): the gradient is then the batch's, only the float summation order differs, and a
# dropout mask is keyed by the sample's index in the whole batch, so it is the same too. Never below
# MICRO_BATCH_MIN samples, so of the bundled specs only mnist_convnet (batch 128) may split.
# Each extra part rewrites every weight gradient and adds it into the sum, so a network whose
# gradients outweigh SPLIT_GRADIENTS_MAX never splits: a 8192-2048-10 MLP (67 MB of weights) at
# batch 1024 ran as 13 parts in 1,046 ms a step, 2x PyTorch's time; 3072-512-512-10 at 1024: 4
# parts 108-118 ms, one pass 104-107.
ACTIVATION_BUDGET = 8 << 20
MICRO_BATCH_MIN = 64
SPLIT_GRADIENTS_MAX = 2 << 20


class Trainer:
    """Runs mini-batch training of a Program with a loss and an optimizer; holds the run's state
    (counters, generator, history, schedule, callbacks) so it can be checkpointed and resumed."""

    def __init__(self, program: Program, loss: LossDef, fused: bool, optimizer: Optimizer,
                 clip_norm: float | None = None, check_finite: bool = True):
        self.program = program
        self.clip_norm = clip_norm
        self.check_finite = check_finite
        self.loss = loss
        self.fused = fused
        self.optimizer = optimizer
        self._targets: dict[int, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}
        self._micro = self.micro_batch()
        self.callbacks: list[Callback] = []
        self.schedule = Schedule(optimizer.lr)
        self.stop_training = False  # set by callbacks (early stopping)
        self.stop_signal: str | None = None  # set asynchronously by a signal handler
        # std of targets the data loader standardised (series): the history also gives the
        # regression losses in the user's units (mse × std², mae × std)
        self.target_std: float | None = None
        self.reset(0)

    def reset(self, seed: int) -> None:
        """Start a new run: counters at zero, shuffling generator seeded, empty history."""
        self.rng = np.random.default_rng(seed)
        self.epoch_rng_state: dict[str, Any] = self.rng.bit_generator.state
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches of the current epoch (non-zero only after an interrupt)
        self.partial = (0.0, 0, 0, 0.0)  # loss sum, correct, counted, seconds of the current epoch
        self.elapsed = 0.0
        self.history = History(self.loss.metric)
        self.stop_training = False

    def _buffer(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A scratch array kept between steps (reallocated only when the shape or dtype changes)."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._scratch[name] = np.empty(shape, dtype)
        return buf

    def _target_buffer(self, y: np.ndarray, batch: int) -> np.ndarray:
        buf = self._targets.get(batch)
        if buf is None or buf.dtype != y.dtype:
            buf = np.empty((batch,) + y.shape[1:], y.dtype)
            self._targets[batch] = buf
        return buf

    def _gather(self, x: Feeds, y: np.ndarray, idx: np.ndarray, training: bool = False):
        """The plan for this batch size and mode, its inputs filled with rows ``idx``; and the
        targets buffer."""
        plan = self.program.plan(len(idx), training)
        for name, buf in plan.inputs.items():
            take_rows(x[name], idx, buf)
        t = self._target_buffer(y, len(idx))
        take_rows(y, idx, t)
        return plan, t

    def micro_batch(self) -> int:
        """The most samples one forward/backward pass takes (see ACTIVATION_BUDGET)."""
        if not self.program.per_sample:
            return 1 << 62  # an op with batch statistics: always the whole batch in one pass
        if self.program.params.grad_flat.nbytes > SPLIT_GRADIENTS_MAX:
            return 1 << 62  # rewriting the gradients per part costs more than the cache saves
        return max(MICRO_BATCH_MIN, ACTIVATION_BUDGET // max(1, self.program.activation_bytes_per_sample()))

    def _pass(self, x: Feeds, y: np.ndarray, idx: np.ndarray, share: float, first: int = 0):
        """Forward, loss and backward on rows ``idx`` (the batch's samples from ``first`` on), the
        loss gradient scaled by ``share``."""
        self.program.counters[0] = self.optimizer.t  # the step this pass belongs to (0-based)
        self.program.counters[1] = first
        plan, t = self._gather(x, y, idx, training=True)
        out = plan.forward()
        value = self.loss.compute(out, t, plan.output_grad, self.fused)
        if not math.isfinite(value):
            raise TrainingDiverged(f"the loss became {value} at step {self.optimizer.t + 1}; first "
                                   f"non-finite output: {self._blame_forward(plan)}")
        if share != 1.0:
            plan.output_grad *= share
        plan.backward()
        return value, out, t

    def step(self, x: Feeds, y: np.ndarray, idx: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """One training step on rows ``idx``: returns (loss, outputs, targets) of the batch.
        Raises TrainingDiverged (parameters untouched) if the loss or the gradient is not finite."""
        n = len(idx)
        g = self.program.params.grad_flat
        if n <= self._micro:
            value, out, t = self._pass(x, y, idx, 1.0)
        else:
            parts = -(-n // self._micro)
            cuts = [n * i // parts for i in range(parts + 1)]
            acc = self._buffer("grad_sum", g.shape, g.dtype)
            out = t = None
            value = 0.0
            for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
                share = (hi - lo) / n
                v, o, tp = self._pass(x, y, idx[lo:hi], share, lo)
                if out is None:
                    out = self._buffer("outputs", (n,) + o.shape[1:], o.dtype)
                    t = self._buffer("targets", (n,) + tp.shape[1:], tp.dtype)
                out[lo:hi], t[lo:hi] = o, tp
                value += v * share
                if i == 0:
                    np.copyto(acc, g)
                else:
                    acc += g
            np.copyto(g, acc)
        if self.clip_norm is not None:
            norm = clip_by_global_norm(g, self.clip_norm)
        elif self.check_finite:
            norm = sum_of_squares(g)
        else:
            norm = 0.0
        if not math.isfinite(norm):
            raise TrainingDiverged(f"the gradient became non-finite at step {self.optimizer.t + 1}; first in "
                                   f"backpropagation: {self._blame_gradient()}")
        self.optimizer.step()
        return value, out, t

    def _blame_forward(self, plan) -> str:
        for node in self.program.graph.nodes:
            if not np.all(np.isfinite(plan.values[node.output])):
                return f"layer {node.layer or node.name!r}"
        return "the loss itself"

    def _blame_gradient(self) -> str:
        grads = self.program.params.grads
        for node in reversed(self.program.graph.nodes):  # backward order: the first to blow up
            for p in node.params:
                bad = ~np.isfinite(grads[p])
                if bad.any():
                    kind = "NaN" if np.isnan(grads[p]).any() else "Inf"
                    return f"layer {node.layer or node.name!r} ({kind} in the gradient of {p})"
        norms = {p: float(np.linalg.norm(grads[p].astype(np.float64))) for n in self.program.graph.nodes
                 for p in n.params}
        worst = max(norms, key=norms.get) if norms else "?"
        owner = next((n.layer or n.name for n in self.program.graph.nodes if worst in n.params), "?")
        return f"the global norm overflowed; the largest gradient is in layer {owner!r} ({worst})"

    def in_target_units(self, values: dict[str, Any]) -> dict[str, float]:
        """``<name>_target_units`` for each regression loss or metric in ``values`` (loss, val_loss,
        val_mse, val_mae ...) when the targets were standardised: squared errors × std², absolute
        errors × std. Empty otherwise (classification, or targets in their own units already)."""
        std = self.target_std
        if not std or self.loss.name not in ("mse", "mae"):
            return {}
        out: dict[str, float] = {}
        for k, v in values.items():
            if v is None or k.endswith("_target_units"):
                continue
            base = k[4:] if k.startswith("val_") else k
            kind = self.loss.name if base == "loss" else base
            if kind in ("mse", "mae"):
                out[f"{k}_target_units"] = float(v) * (std * std if kind == "mse" else std)
        return out

    def evaluate(self, x: Feeds, y: np.ndarray, batch_size: int = 512) -> tuple[float, float | None]:
        """Mean loss and metric over a dataset (no parameter change)."""
        r = self.evaluate_metrics(x, y, batch_size)
        return r["loss"], r.get("metric")

    def evaluate_metrics(self, x: Feeds, y: np.ndarray, batch_size: int = 512, extras: tuple[str, ...] = (),
                         top_k: int = 5) -> dict[str, float | None]:
        """Mean loss, the loss's metric (key 'metric') and the named extra metrics over a dataset."""
        n = len(y)
        total, correct, count = 0.0, 0, 0
        running = [RunningMetric(name, top_k) for name in extras]
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            plan, t = self._gather(x, y, idx)
            out = plan.forward()
            total += self.loss.compute(out, t, plan.output_grad, self.fused) * len(idx)
            c, m = count_correct(self.loss, out, t, self.fused)
            correct, count = correct + c, count + m
            for r in running:
                r.update(out, t)
        res: dict[str, float | None] = {"loss": total / max(n, 1), "metric": correct / count if count else None}
        res.update({r.name: r.value() for r in running})
        return res

    # ---- the loop -------------------------------------------------------------------------------
    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def fit(self, x: Feeds, y: np.ndarray, *, epochs: int, batch_size: int, shuffle: bool, seed: int,
            validation: tuple[Feeds, np.ndarray] | None = None,
            on_epoch: Callable[[EpochRecord], None] | None = None, callbacks: list[Callback] | tuple = (),
            schedule: Schedule | None = None, extras: tuple[str, ...] = (), top_k: int = 5,
            resume: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None) -> History:
        """Train until ``epochs`` epochs are complete (counting those of a resumed run) or a callback
        sets ``stop_training``. ``on_epoch`` is called with each finished epoch's record.

        ``resume`` is a checkpoint from :meth:`checkpoint`; without it the run starts afresh with
        generator ``seed``. Raises TrainingInterrupted after ``on_interrupt`` if a signal handler set
        ``stop_signal``, TrainingDiverged after ``on_diverged`` on NaN/Inf."""
        n = len(y)
        if n == 0:
            raise DataError("no training samples")
        self.callbacks = list(callbacks)
        self.schedule = schedule if schedule is not None else Schedule(self.optimizer.lr)
        if resume is None:
            self.reset(seed)
        else:
            self.load_checkpoint(*resume)
        self.stop_training = False
        self._emit("on_train_begin")
        while self.epoch < epochs and not self.stop_training:
            rec = self._epoch(x, y, n, batch_size, shuffle, validation, extras, top_k)
            if on_epoch is not None:
                on_epoch(rec)
            self._emit("on_epoch_end", rec)
        self._emit("on_train_end")
        return self.history

    def _epoch(self, x: Feeds, y: np.ndarray, n: int, batch_size: int, shuffle: bool,
               validation: tuple[Feeds, np.ndarray] | None, extras: tuple[str, ...], top_k: int) -> EpochRecord:
        e = self.epoch
        self.optimizer.lr = self.schedule.lr_at(e)
        self.epoch_rng_state = self.rng.bit_generator.state
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        if self.batch == 0:
            self.partial = (0.0, 0, 0, 0.0)
        self._emit("on_epoch_begin", e)
        total, correct, count, before = self.partial
        nb = -(-n // batch_size)
        reporters = [cb for cb in self.callbacks if cb.wants_progress]
        next_tick, stride, last_t, last_b = (self.batch + 1 if reporters else -1), 1, 0.0, self.batch
        metric = self.loss.metric
        t0 = time.perf_counter() - before
        b = self.batch
        try:
            for b in range(self.batch, nb):
                idx = order[b * batch_size:(b + 1) * batch_size]
                value, out, t = self.step(x, y, idx)
                total += value * len(idx)
                if metric:
                    c, m = count_correct(self.loss, out, t, self.fused)
                    correct, count = correct + c, count + m
                if b + 1 == next_tick:  # progress: adapt the stride to ~10 reports a second
                    now = time.perf_counter()
                    done = min(n, (b + 1) * batch_size)
                    for cb in reporters:
                        cb.on_progress(self, e, b + 1, nb, total / done, correct / count if count else None)
                    if now > last_t and last_t > 0:
                        stride = max(1, int(0.1 * (b + 1 - last_b) / (now - last_t)))
                    last_t, last_b, next_tick = now, b + 1, b + 1 + stride
                if self.stop_signal is not None:
                    self._interrupted(b + 1, nb, (total, correct, count, time.perf_counter() - t0))
        except TrainingDiverged as err:
            err.args = (f"training diverged in epoch {e + 1}, batch {b + 1}/{nb}: {err.args[0]}; the "
                        "weights are those before this step (lower the learning rate, set train.clip_norm, "
                        "or check the data)",)
            self._emit("on_diverged", err)
            raise
        seconds = time.perf_counter() - t0
        val: dict[str, float | None] = {}
        if validation is not None and len(validation[1]):
            val = self.evaluate_metrics(*validation, extras=extras, top_k=top_k)
        self.elapsed += seconds  # the whole epoch, including time before an interrupt
        self.epoch, self.batch = e + 1, 0
        rec = EpochRecord(e + 1, total / n, (correct / count if count else None), val.get("loss"),
                          val.get("metric"), self.optimizer.lr, seconds, n / seconds if seconds > 0 else 0.0,
                          {f"val_{k}": val.get(k) for k in extras if val}, self.elapsed, metric)
        rec.extras.update(self.in_target_units(rec.values()))
        self.history.records.append(rec)
        self.schedule.observe(rec.values(), e)
        return rec

    def _interrupted(self, batch: int, batches: int, partial: tuple[float, int, int, float]) -> None:
        """Record the step-boundary state, let callbacks save it, raise TrainingInterrupted."""
        self.batch, self.partial = batch, partial
        sig = self.stop_signal or "SIGINT"
        self._emit("on_interrupt", sig)
        raise TrainingInterrupted(f"interrupted by {sig} in epoch {self.epoch + 1}, after batch "
                                  f"{batch}/{batches} (step {self.optimizer.t})",
                                  143 if sig == "SIGTERM" else 130)

    # ---- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The run's complete state: arrays (params, optimizer, callbacks) and JSON metadata."""
        arrays = {"params": self.program.params.flat, "state": self.program.params.state_flat}
        arrays.update({f"optimizer.{k}": v for k, v in self.optimizer.state().items()})
        meta: dict[str, Any] = {
            "epoch": self.epoch, "batch": self.batch, "step": self.optimizer.t, "lr": self.optimizer.lr,
            "rng_state": self.epoch_rng_state if self.batch else self.rng.bit_generator.state,
            "partial": list(self.partial), "elapsed": self.elapsed, "schedule": self.schedule.state(),
            "history": self.history.as_dicts(), "callbacks": {},
        }
        for cb in self.callbacks:
            if cb.key:
                meta["callbacks"][cb.key] = cb.state()
                arrays.update({f"{cb.key}.{k}": v for k, v in cb.arrays().items()})
        return arrays, meta

    def load_checkpoint(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore a state from :meth:`checkpoint` (callbacks must already be set)."""
        flat = self.program.params.flat
        if arrays["params"].shape != flat.shape or arrays["params"].dtype != flat.dtype:
            raise DataError(f"checkpoint parameters have shape {arrays['params'].shape} "
                            f"{arrays['params'].dtype}, this model {flat.shape} {flat.dtype}")
        flat[...] = arrays["params"]
        state = self.program.params.state_flat
        if "state" in arrays:
            if arrays["state"].shape != state.shape or arrays["state"].dtype != state.dtype:
                raise DataError(f"checkpoint state has shape {arrays['state'].shape} {arrays['state'].dtype}, "
                                f"this model {state.shape} {state.dtype}")
            state[...] = arrays["state"]
        elif self.program.params.state_infos:
            raise DataError("checkpoint has no state arrays (running statistics) but this model needs them")
        try:
            self.optimizer.load_state({k[len("optimizer."):]: v for k, v in arrays.items()
                                       if k.startswith("optimizer.")}, meta["step"])
        except ValueError as e:
            raise DataError(f"checkpoint does not fit this optimizer: {e}") from None
        self.optimizer.lr = meta["lr"]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = meta["rng_state"]
        self.epoch_rng_state = meta["rng_state"]
        self.epoch, self.batch = meta["epoch"], meta["batch"]
        total, correct, count, seconds = meta["partial"]
        self.partial = (total, int(correct), int(count), seconds)
        self.elapsed = meta["elapsed"]
        self.schedule.load_state(meta["schedule"])
        self.history = History(self.loss.metric, [EpochRecord.from_dict(d) for d in meta["history"]])
        for cb in self.callbacks:
            if cb.key and cb.key in meta["callbacks"]:
                prefix = cb.key + "."
                cb.load_state(meta["callbacks"][cb.key],
                              {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
