"""The scale-out command ``nngraph sweep`` (Ray Tune): a thin click wrapper over
:func:`nngraph.scale.sweep.sweep`, added to the main group by cli.py (``add_commands``; it takes
cli.py's helpers as arguments, so this module never imports cli.py, which may be ``__main__``)."""
from __future__ import annotations

from typing import Any, Callable

import click


def add_commands(main: click.Group, handles_errors: Callable, parse_set: Callable[[tuple[str, ...]], dict],
                 max_seed: int) -> None:
    """Define ``sweep`` on ``main``."""
    _parse_set = parse_set
    MAX_SEED = max_seed

    @main.command()
    @click.argument("spec", type=click.Path(dir_okay=False), required=False)
    @click.option("--sweep-dir", type=click.Path(file_okay=False), default=None,
                  help="Folder for the sweep: one run directory per trial, the leaderboard, a 'best' link.")
    @click.option("--resume", type=click.Path(file_okay=False), default=None,
                  help="Continue the sweep in this folder: finished, stopped and failed trials are not rerun.")
    @click.option("--param", "params", multiple=True, metavar="PATH=SPACE",
                  help="A swept spec key (the paths of --set) and its space: choice:a,b,c  uniform:lo:hi  "
                       "loguniform:lo:hi  randint:lo:hi  grid:a,b,c. Repeat for several.")
    @click.option("--trials", type=click.IntRange(min=1), default=None,
                  help="Random draws (per grid point with grid: spaces); default 8, or 1 with only grid: spaces.")
    @click.option("--metric", default=None, help="History column to rank by (default val_loss with a validation "
                                                 "split, else loss); val_* columns hold out 20% unless the spec splits.")
    @click.option("--mode", type=click.Choice(["min", "max"]), default=None,
                  help="Whether the metric is better low or high (default: max for accuracies, min otherwise).")
    @click.option("--scheduler", type=click.Choice(["fifo", "asha"]), default="fifo", show_default=True,
                  help="asha stops poor trials early (at --grace-epochs, then 2x, 4x ... epochs) on their per-epoch reports.")
    @click.option("--grace-epochs", type=click.IntRange(min=1), default=1, show_default=True,
                  help="With asha: epochs every trial runs before it may be stopped.")
    @click.option("--cpus-per-trial", type=click.IntRange(min=1), default=1, show_default=True,
                  help="CPUs (and Numba/BLAS threads) per trial.")
    @click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
                  help="At most this many trials at once (default: as many as the CPUs allow).")
    @click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
                  help="Seed of the search: the same command draws the same trials.")
    @click.option("--address", default=None,
                  help="A Ray cluster (ray://head:10001 or head:6379); default: a local Ray in this process.")
    @click.option("--num-cpus", type=click.IntRange(min=1), default=None,
                  help="CPUs of the local Ray (default: all).")
    @click.option("--data", "data", default=None, help="Data for every trial (a file, a folder or a built-in name).")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="A fixed spec key for every trial (as train's --set).")
    @click.option("-q", "--quiet", is_flag=True, help="No live table; print only the leaderboard.")
    @handles_errors
    def sweep(spec: str | None, sweep_dir: str | None, resume: str | None, params: tuple[str, ...], trials: int | None,
              metric: str | None, mode: str | None, scheduler: str, grace_epochs: int, cpus_per_trial: int,
              max_concurrent: int | None, seed: int, address: str | None, num_cpus: int | None, data: str | None,
              sets: tuple[str, ...], quiet: bool) -> None:
        """Try many variants of SPEC on Ray Tune and keep the best.

        Each trial is an ordinary run directory (SWEEP_DIR/trials/trial_NNN: history, checkpoints,
        `nngraph export` works on it). At the end: the leaderboard (also leaderboard.csv/.json) and
        SWEEP_DIR/best, a link to the best trial. Interrupted: `nngraph sweep --resume SWEEP_DIR`.
        """
        import io
        import sys
        from pathlib import Path

        from .scale.sweep import sweep as run_sweep

        stream = io.StringIO() if quiet else sys.stderr
        board = run_sweep(spec, sweep_dir=sweep_dir, params=params, trials=trials, metric=metric, mode=mode,
                          scheduler=scheduler, grace_epochs=grace_epochs, cpus_per_trial=cpus_per_trial,
                          max_concurrent=max_concurrent, seed=seed, address=address, resume=resume,
                          overrides=_parse_set(sets) if sets else None, data=data, num_cpus=num_cpus,
                          log=(lambda s: None) if quiet else (lambda s: click.echo(s, err=True)), stream=stream)
        click.echo(board.table())
        if board.best is not None:
            click.echo(f"best: {board.best} ({board.metric} {board.rows[0]['best_metric']:.5g}); "
                       f"export it: nngraph export {Path(resume or sweep_dir or '.') / 'best'} -o best.onnx")
        else:
            click.echo("no trial produced a value of the metric")
