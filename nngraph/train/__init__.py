"""Training: the loop (trainer), optimizers, schedules, callbacks, metrics, checkpoints, run
directories, progress reporting and plots. Public names for the Python API:

    from nngraph.train import Callback, LambdaCallback, EarlyStopping, open_run
"""
from __future__ import annotations

from .callbacks import Callback, EarlyStopping, LambdaCallback
from .rundir import open_run

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "open_run"]
