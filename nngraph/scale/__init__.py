"""Scale-out on Ray: hyperparameter sweeps (Ray Tune) and batch inference (Ray Data).

Ray is an optional extra (``pip install 'nngraph[ray]'``); without it these entry points fail
with one line naming the extra, and nothing else in nngraph imports Ray.
"""
from __future__ import annotations

from typing import Any

from ..errors import NNGraphError


class RayMissing(NNGraphError):
    """Ray is not installed."""


def require_ray(what: str) -> Any:
    """The ``ray`` module, or RayMissing naming the extra."""
    try:
        import ray
    except ImportError:
        raise RayMissing(f"{what} needs Ray, which is not installed: pip install 'nngraph[ray]'") from None
    return ray


def init_ray(address: str | None, num_cpus: int | None, env: dict[str, str] | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray in this process (``num_cpus``:
    the CPUs it may use; default all). Returns True if this call started or connected Ray (the
    caller then shuts it down); a Ray already initialised by the user's code is used as it is."""
    import logging
    import os

    ray = require_ray("this command")
    if ray.is_initialized():
        return False
    # Ray Tune's new console output ignores verbose=0; the live table is ours
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # Tune's CSV/JSON/TensorBoard copies
    kwargs: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True,
                                  runtime_env={"env_vars": env} if env else None)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except Exception as e:  # ConnectionError, a bad address, a version mismatch ...
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise NNGraphError(f"cannot start {where}: {e}") from None
    return True
