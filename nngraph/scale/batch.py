"""Batch inference on Ray Data: ``nngraph run MODEL --input FILE --ray``.

The samples are cut into tasks of ``runtime.RUN_ROWS`` rows — the same cuts a plain ``nngraph run``
makes — and Ray Data's ``map_batches`` hands them to a pool of actors, each holding one
onnxruntime session (opened once per worker, from the model's bytes in the object store, so the
workers need not see the model file). A .npy input is memory-mapped by each worker, which reads
only its rows; .npz and .csv inputs are read once by the driver and shared through the object
store. The outputs come back tagged with their row numbers and are put in input order, so the
result equals a plain run's bit for bit (tested).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..runtime import RUN_ROWS, read_inputs


class _Predictor:
    """A Ray Data actor: one onnxruntime session, reused for every task it gets."""

    def __init__(self, model: tuple, source: dict[str, Any], rows: int, threads: int):
        import onnxruntime as ort
        import ray

        # object refs arrive inside tuples: Ray resolves only top-level arguments, and an actor
        # whose top-level arguments live in the object store cannot be restarted
        model = ray.get(model[0])

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 4
        self.sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        self.rows = rows
        if "npy" in source:  # mapped here: the worker reads only the rows of its tasks
            self.inputs = np.load(source["npy"], mmap_mode="r", allow_pickle=False)
        else:
            self.inputs = ray.get(source["arrays"][0])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..runtime import run

        ids, outs = [], []
        for task in batch["id"]:
            lo = int(task) * self.rows
            part = ({k: a[lo:lo + self.rows] for k, a in self.inputs.items()} if isinstance(self.inputs, dict)
                    else self.inputs[lo:lo + self.rows])
            y = run("", part, self.sess)
            ids.append(np.arange(lo, lo + len(y), dtype=np.int64))
            outs.append(y)
        return {"row": np.concatenate(ids), "y": np.concatenate(outs)}


def run_on_ray(model: str | Path, input_path: str | Path, address: str | None = None, num_cpus: int | None = None,
               workers: int | None = None, threads: int = 1, rows: int = RUN_ROWS) -> np.ndarray:
    """The model's (first) output for every sample in ``input_path``, computed by Ray Data workers
    (``workers`` actors of ``threads`` onnxruntime threads each; default: one per CPU of the
    cluster). ``address``: a Ray cluster; default a local Ray (``num_cpus``)."""
    from . import init_ray, require_ray
    from ..runtime import run_batches, session

    require_ray("nngraph run --ray")
    path = Path(model)
    sess = session(path)  # the file is checked here, with the usual one-line errors
    inputs = read_inputs(input_path, mmap=True)
    arrays = inputs if isinstance(inputs, dict) else {"": inputs}
    if any(np.ndim(a) == 0 for a in arrays.values()) or len({len(a) for a in arrays.values()}) != 1:
        return run_batches(path, inputs, rows, sess)  # refused there, with the plain run's message
    n = len(next(iter(arrays.values())))
    # the first task's rows, checked here: a shape or dtype error is one line before Ray starts
    run_batches(path, {k: a[:1] for k, a in inputs.items()} if isinstance(inputs, dict) else inputs[:1], rows, sess)
    del sess  # the driver's session is not needed while Ray runs
    started = init_ray(address, num_cpus)
    import ray

    try:
        import logging

        ctx = ray.data.DataContext.get_current()
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # after ray.data set up its logging
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = True
        ctx.execution_options.verbose_progress = False
        if isinstance(inputs, np.memmap) or (isinstance(inputs, np.ndarray) and isinstance(inputs.base, np.memmap)):
            source: dict[str, Any] = {"npy": str(Path(input_path).resolve())}
        else:
            source = {"arrays": (ray.put(np.ascontiguousarray(inputs) if not isinstance(inputs, dict) else inputs),)}
        tasks = math.ceil(n / rows)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = max(1, min(tasks, workers or max(1, cpus // threads)))
        # the task ids as in-memory blocks: a read task would need a CPU the actors already hold
        ds = ray.data.from_items([{"id": t} for t in range(tasks)], override_num_blocks=tasks)
        out = ds.map_batches(_Predictor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=threads,
                             fn_constructor_kwargs={"model": (ray.put(path.read_bytes()),), "source": source,
                                                    "rows": rows, "threads": threads})
        result = None
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            y, idx = batch["y"], batch["row"]
            if result is None:
                result = np.empty((n,) + y.shape[1:], y.dtype)
            result[idx] = y
        if result is None:
            raise DataError(f"{input_path}: Ray Data returned no outputs")
        return result
    except DataError:
        raise
    except Exception as e:  # a worker's failure reaches the driver wrapped in Ray's exception types
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise DataError(f"batch inference on Ray failed: {lines[-1] if lines else type(e).__name__}") from None
    finally:
        if started:
            ray.shutdown()
