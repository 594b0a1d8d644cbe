"""Model: a compiled spec with its weights — fit, predict, evaluate, export, verify."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .backend.params import ParamStore, initial_params
from .backend.program import Program
from .data import fit_inputs
from .errors import DataError
from .ir import Graph, mark_loss_fused, output_activation
from .lowering import lower
from .ops.losses import LossDef, get_loss
from .ops.normalize import fit_normalizers, fitted_nodes
from .spec import Spec
from .train.callbacks import Callback, EarlyStopping
from .train.schedules import Schedule, make_schedule
from .train.history import EpochRecord, History

if TYPE_CHECKING:  # the trainer and optimizers import Numba: only training loads them
    from .train.trainer import Trainer

ArrayOrFeeds = np.ndarray | dict[str, np.ndarray]


class Model:
    """A network ready to train and run: spec, typed IR graph, and parameters.

    >>> model = Model.compile(spec)          # seeded initial weights
    >>> history = model.fit(x, y)            # hyperparameters from spec.train unless overridden
    >>> model.predict(x[:5]); model.export_onnx("m.onnx")
    """

    def __init__(self, spec: Spec, graph: Graph, params: ParamStore, metadata: dict[str, Any] | None = None):
        self.spec = spec
        self.graph = graph
        self.params = params
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._infer_program: Program | None = None
        self._trainer: "Trainer | None" = None
        # Whether the normalize layers hold their statistics (computed by the first fit, or loaded
        # with the weights); a later fit, a fine-tune or a resumed run never recomputes them.
        self.normalizers_fitted = not fitted_nodes(graph)
        self.early_stopping: EarlyStopping | None = None  # the last fit's (see EarlyStopping.describe)

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def compile(cls, spec: Spec, seed: int | None = None, dtype: Any = np.float32) -> "Model":
        """Lower the spec to IR (inferring every shape) and draw seeded initial weights."""
        graph = lower(spec)
        seed = spec.train.seed if seed is None else seed
        return cls(spec, graph, initial_params(graph, seed, dtype))

    @classmethod
    def load_onnx(cls, path: str | Path, dtype: Any = np.float32, weights: bool = True) -> "Model":
        """Rebuild a model from an ONNX file nngraph exported (spec from metadata, weights from
        initializers; ``weights=False``: the spec and metadata only, e.g. of an int8 export, whose
        initializers are not the float32 parameters)."""
        from .onnx_io.importer import import_model, metadata_json

        imp = import_model(path)
        folded = metadata_json(imp.metadata, "folded_batchnorm")
        if folded:  # exported with --fold-batchnorm: the same fold, then the file's weights
            from .onnx_io.fold import fold_graph

            graph = fold_graph(lower(imp.spec), list(folded))
            model = cls(imp.spec, graph, initial_params(graph, imp.spec.train.seed, dtype))
        else:
            model = cls.compile(imp.spec, dtype=dtype)
        if weights:
            model.load_weights(imp.params, source=str(path))
        for key in imp.metadata:
            if key.startswith("nngraph.") and key not in ("nngraph.spec", "nngraph.version"):
                model.metadata[key[len("nngraph."):]] = metadata_json(imp.metadata, key[len("nngraph."):])
        return model

    def load_weights(self, arrays: dict[str, np.ndarray], source: str = "") -> None:
        """Copy in parameter values (e.g. from another model of the same architecture)."""
        from .errors import ShapeError

        given = {k: v for k, v in arrays.items() if k in self.params.values}
        try:
            self.params.load(given, strict=True)
        except ShapeError as e:
            raise ShapeError(f"{source + ': ' if source else ''}weights do not fit this spec: {e}") from None
        if all(p in given for n in fitted_nodes(self.graph) for p in n.params):
            self.normalizers_fitted = True

    def astype(self, dtype: Any) -> "Model":
        """A copy computing in another float type (float64 is what the gradient checks use)."""
        other = Model(self.spec, self.graph, self.params.astype(dtype), self.metadata)
        other.normalizers_fitted = self.normalizers_fitted
        return other

    # ---- inputs ---------------------------------------------------------------------------------
    def input_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {n: (self.graph.values[n].shape, self.graph.values[n].dtype) for n in self.graph.inputs}

    def input_id_limit(self, name: str) -> int:
        """For an integer input: how many distinct ids its consumer accepts (vocabulary size)."""
        for node in self.graph.consumers(name):
            for key in ("vocab_size", "input_dim"):
                if key in node.attrs:
                    return int(node.attrs[key])
        return 2

    def _feeds(self, x: ArrayOrFeeds) -> dict[str, np.ndarray]:
        return fit_inputs(x, self.input_specs(), self.params.dtype)

    # ---- inference ------------------------------------------------------------------------------
    def predict(self, x: ArrayOrFeeds, batch_size: int = 256) -> np.ndarray:
        """The network's output for a batch of samples (Numba forward pass)."""
        if self._infer_program is None:
            self._infer_program = Program(self.graph, self.params, seed=self.spec.train.resolved()["seed"])
        return self.to_target_units(self._infer_program.forward(self._feeds(x), batch_size))

    def to_target_units(self, y: np.ndarray) -> np.ndarray:
        """Outputs of a network trained on standardised targets (``target_normalization`` in the
        metadata, set by series data) in target units, y * std + mean, as the export computes them."""
        target = self.metadata.get("target_normalization")
        if not target:
            return y
        y = y * np.asarray(target["std"], y.dtype)
        return y + np.asarray(target["mean"], y.dtype)

    # ---- training -------------------------------------------------------------------------------
    @property
    def loss(self) -> LossDef:
        return get_loss(self.spec.loss)

    def _loss_fused(self) -> bool:
        return self.loss.fuses_with is not None and output_activation(self.graph) == self.loss.fuses_with

    def trainer(self) -> "Trainer":
        """The trainer (built once: plans, optimizer state and step count persist across fits)."""
        if self._trainer is None:
            from .train.optimizers import make_optimizer
            from .train.trainer import Trainer

            loss = self.loss
            graph = mark_loss_fused(self.graph, loss.fuses_with)
            program = Program(graph, self.params, seed=self.spec.train.resolved()["seed"])
            opt = self.spec.optimizer
            optimizer = make_optimizer(opt.type, opt.resolved(), self.params.flat,
                                                  self.params.grad_flat)
            self._trainer = Trainer(program, loss, self._loss_fused(), optimizer, self.spec.train.clip_norm,
                                    self.spec.train.check_finite)
        return self._trainer

    def training_setup(self, epochs: int, has_validation: bool) -> tuple[str, Schedule, list[Callback]]:
        """From the spec's train section: the monitored history column (checked against the columns
        this run will have), the learning-rate schedule and the early-stopping callback (if any)."""
        from .errors import SpecError
        from .spec.fields import resolved_nested
        from .spec.tables import TRAIN

        cfg = self.spec.train.resolved()
        metric = self.loss.metric
        columns = ["loss"] + ([metric] if metric else [])
        if has_validation:
            columns += ["val_loss"] + ([f"val_{metric}"] if metric else [])
            columns += [f"val_{m}" for m in (cfg["metrics"] or ())]
        monitor = cfg["monitor"] or ("val_loss" if has_validation else "loss")

        def check(name: str, path: str) -> str:
            if name not in columns:
                hint = "" if has_validation else " (val_* columns need train.validation_split > 0)"
                raise SpecError(path, "expected one of " + ", ".join(f'"{c}"' for c in columns)
                                + f", got \"{name}\"{hint}")
            return name

        check(monitor, "train.monitor")
        sched_cfg = resolved_nested(TRAIN["schedule"], cfg["schedule"])
        if sched_cfg is not None and sched_cfg.get("monitor"):
            check(sched_cfg["monitor"], "train.schedule.monitor")
        schedule = make_schedule(sched_cfg, self.spec.optimizer.resolved()["lr"], epochs, monitor)
        callbacks: list[Callback] = []
        es = resolved_nested(TRAIN["early_stopping"], cfg["early_stopping"])
        if es is not None:
            callbacks.append(EarlyStopping(check(es["monitor"] or monitor, "train.early_stopping.monitor"),
                                           es["patience"], es["min_delta"], es["restore_best"]))
        return monitor, schedule, callbacks

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Targets checked against the output shape and converted for the loss kernels."""
        t = self.loss.prepare_targets(np.asarray(y), self.graph.values[self.graph.output].shape)
        if t.dtype.kind == "f":
            t = np.ascontiguousarray(t, self.params.dtype)
            if not np.all(np.isfinite(t)):
                raise DataError("targets contain NaN or Inf")
        return t

    def fit(self, x: ArrayOrFeeds, y: np.ndarray, *, epochs: int | None = None, batch_size: int | None = None,
            shuffle: bool | None = None, seed: int | None = None, validation_split: float | None = None,
            validation_data: tuple[ArrayOrFeeds, np.ndarray] | None = None,
            on_epoch: Callable[[EpochRecord], None] | None = None, callbacks: list[Callback] | tuple = (),
            resume: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None) -> History:
        """Train on arrays. Hyperparameters default to the spec's ``train`` section (schedule,
        early stopping, extra validation metrics included); ``callbacks`` run after the spec's own.

        ``validation_split`` holds out the last fraction of the samples (before shuffling), so the
        split is the same on every run and every machine. ``resume`` is a checkpoint
        (``Trainer.checkpoint()`` or :func:`nngraph.train.checkpoint.load_checkpoint`) to continue
        from exactly."""
        cfg = self.spec.train.resolved()
        epochs = cfg["epochs"] if epochs is None else epochs
        batch_size = cfg["batch_size"] if batch_size is None else batch_size
        shuffle = cfg["shuffle"] if shuffle is None else shuffle
        seed = cfg["seed"] if seed is None else seed
        split = cfg["validation_split"] if validation_split is None else validation_split
        feeds, t = self._feeds(x), self.targets(y)
        n = len(t)
        if any(len(v) != n for v in feeds.values()):
            raise DataError(f"inputs have {[len(v) for v in feeds.values()]} samples but targets have {n}")
        val = None
        if validation_data is not None:
            val = (self._feeds(validation_data[0]), self.targets(validation_data[1]))
        elif split > 0:
            cut = n - int(round(n * split))
            if cut < 1 or cut == n:
                raise DataError(f"validation_split {split} leaves {cut} of {n} samples for training")
            val = ({k: v[cut:] for k, v in feeds.items()}, t[cut:])
            feeds, t = {k: v[:cut] for k, v in feeds.items()}, t[:cut]
        if resume is None and not self.normalizers_fitted:  # statistics of the training split only
            fit_normalizers(self.graph, self.params.values, feeds)
        self.normalizers_fitted = True  # computed now, or restored with a resumed checkpoint
        # Overflow inside BLAS would print numpy warnings; divergence is detected and reported
        # by the trainer itself (a non-finite loss stops the run with one clear message).
        trainer = self.trainer()
        trainer.target_std = (self.metadata.get("target_normalization") or {}).get("std")
        monitor, schedule, own = self.training_setup(epochs, val is not None)
        trainer.monitor = monitor
        self.early_stopping = next((c for c in own if isinstance(c, EarlyStopping)), None)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return trainer.fit(feeds, t, epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed,
                               validation=val, on_epoch=on_epoch, callbacks=own + list(callbacks),
                               schedule=schedule, extras=tuple(cfg["metrics"] or ()), top_k=cfg["top_k"],
                               resume=resume)

    def evaluate(self, x: ArrayOrFeeds, y: np.ndarray) -> dict[str, float]:
        """Mean loss and, for classifiers, accuracy on a dataset."""
        loss, metric = self.trainer().evaluate(self._feeds(x), self.targets(y))
        out = {"loss": loss}
        if metric is not None:
            out[self.loss.metric] = metric
        return out

    # ---- export ---------------------------------------------------------------------------------
    def to_onnx(self, opset: int | None = None, fold_batchnorm: bool = False):
        """The ONNX ModelProto. ``fold_batchnorm`` folds each batch norm that follows a Conv or a
        Gemm into its weights (see ``onnx_io.fold``), records the folded layers in the metadata
        (``nngraph.folded_batchnorm``) and checks the folded model against the unfolded one in
        onnxruntime (ExportError beyond 1e-4 relative)."""
        from .onnx_io.export import DEFAULT_OPSET, build_model

        opset = DEFAULT_OPSET if opset is None else opset
        params = self.params.as_dict(copy=False)
        unfolded = build_model(self.spec, self.graph, params, opset, self.metadata)
        if not fold_batchnorm:
            return unfolded
        from .onnx_io.fold import check_folded, fold_batchnorm as fold, folded_names
        from .runtime import random_inputs

        graph, folded_params = fold(self.graph, params)
        names = list(self.metadata.get("folded_batchnorm") or []) + folded_names(self.graph, graph)
        meta = {**self.metadata, **({"folded_batchnorm": names} if names else {})}
        folded = build_model(self.spec, graph, folded_params, opset, meta)
        feeds = random_inputs(self, 16, np.random.default_rng(0))
        check_folded(unfolded, folded, feeds)
        return folded

    def batchnorm_fold_counts(self) -> tuple[int, int]:
        """(batch norms ``fold_batchnorm`` folds, batch norms in the graph)."""
        from .onnx_io.fold import BN, foldable

        return len(foldable(self.graph)), sum(n.op == BN for n in self.graph.nodes)

    def export_onnx(self, path: str | Path, opset: int | None = None, fold_batchnorm: bool = False) -> Path:
        """Write the model as ONNX (atomically; identical weights give a byte-identical file)."""
        from .onnx_io.export import save_model

        return save_model(self.to_onnx(opset, fold_batchnorm), path)
