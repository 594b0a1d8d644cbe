"""Training: the loop (trainer), optimizers, schedules, callbacks, metrics, checkpoints, run
directories, progress reporting and plots. Public names for the Python API:

    from nngraph.train import Callback, LambdaCallback, EarlyStopping, open_run

``nngraph.train(...)`` is the training function (:func:`nngraph.workflow.train`), but importing any
``nngraph.train.*`` module makes Python bind this package to the attribute ``nngraph.train``. So the
package is callable too, forwarding to the function: ``nngraph.train(spec, ...)`` works whichever of
the two the name holds, and ``import nngraph.train.callbacks as cb`` keeps working.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from .callbacks import Callback, EarlyStopping, LambdaCallback
from .rundir import open_run

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "open_run"]


class _CallablePackage(types.ModuleType):
    """This package's module type: calling it calls :func:`nngraph.workflow.train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ..workflow import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
