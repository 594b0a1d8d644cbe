"""The ``nngraph`` command: a thin click layer over the Python API.

Each command parses its arguments, calls one API function and turns the package's exceptions into
a one-line message on stderr: exit 0 on success, 1 on a failed check, 2 on bad input. Heavy
modules are imported inside the commands so ``nngraph --help`` stays fast.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import click

# Bounds of options that size work: a seed is an int64 (numpy and the dropout hash take it), and
# verify's random batches are held in memory at once (10**9 rows of a 64-feature input is 256 GB).
MAX_SEED = 2**63 - 1
MAX_VERIFY_BATCH = 65_536


def _one_line(message: str) -> str:
    """One printable line: newlines (onnxruntime's messages carry some) folded, a lone surrogate
    escaped instead of raising UnicodeEncodeError on the way to stderr."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


class _PipeSafe:
    """A text stream whose writes after the reader went away (EPIPE: ``nngraph check s.json | head
    -1``, ``nngraph train ... 2>&1 | head``) are dropped instead of raised. A closed pipe is not an
    error of the user's input: the command still does all its work — a training run finishes and
    writes its model — and exits with the code it would have had. The file descriptor is pointed at
    /dev/null so the interpreter's final flush cannot complain either."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.broken = False

    def _closed(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise
                self._closed()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise
                self._closed()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def _cli_boundary() -> Iterator[None]:
    """What every command runs inside: pipe-safe stdout/stderr, and no warnings on stderr (numpy's
    RuntimeWarnings, library deprecations): a command's stderr is its progress and at most one
    ``error:`` line. Restored afterwards, so the Python API and click's test runner are unaffected."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _PipeSafe(sys.stdout), _PipeSafe(sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stdout, sys.stderr = saved


class _Main(click.Group):
    """The ``nngraph`` group: click's usage errors (a bad option value, a missing argument) become
    one ``error:`` line and exit 2, like every other bad input, instead of click's three-line
    usage block."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        with _cli_boundary():
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.exceptions.NoArgsIsHelpError as e:  # bare `nngraph`: the help, as click prints it
                e.show()
                sys.exit(e.exit_code)
            except click.ClickException as e:
                hint = ""
                ctx = getattr(e, "ctx", None)
                if isinstance(e, click.UsageError) and ctx is not None:
                    hint = f" (see '{ctx.command_path} --help')"
                _fail(e.format_message() + hint, e.exit_code)
            except click.Abort:
                _fail("aborted", 1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def handles_errors(fn: Callable) -> Callable:
    """Map nngraph's exceptions (and I/O errors) to one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import NNGraphError

        try:
            return fn(*args, **kwargs)
        except NNGraphError as e:
            _fail(str(e), e.exit_code)
        except MemoryError:
            _fail("out of memory (the model, the data or a batch does not fit in this machine's memory)", 2)
        except OSError as e:
            _fail(f"{e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", 2)
        except KeyboardInterrupt:
            _fail("interrupted; nothing partial was written", 130)

    return wrapper


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nngraph", prog_name="nngraph")
def main() -> None:
    """nngraph: spec -> IR -> Numba training -> verified ONNX."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@handles_errors
def check(spec: str) -> None:
    """Validate SPEC and print its IR: each node, op, output shape, parameter count, total."""
    from .lowering import lower
    from .spec import load_spec

    from .ir.memory import estimate_memory

    s = load_spec(spec)
    graph = lower(s)  # shape and memory errors before the spec is called valid
    click.echo(f"{s.name}: valid (loss {s.loss}, optimizer {s.optimizer.type})")
    click.echo(graph.table())
    click.echo(estimate_memory(graph).summary(s.train.batch_size))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None,
              help="Override train.seed for the initial weights.")
@handles_errors
def compile(spec: str, output: str | None, opset: int | None, seed: int | None) -> None:  # noqa: A001
    """Compile SPEC to IR and (with -o) to ONNX with seeded initial weights, without training."""
    from .model import Model
    from .spec import load_spec

    from .fileio import refuse_overwrite

    refuse_overwrite(output, [("input spec", spec)])
    model = Model.compile(load_spec(spec), seed=seed)
    click.echo(model.graph.table())
    if output:
        model.export_onnx(output, opset)
        click.echo(f"wrote {output}")


def _parse_set(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs; VALUE is JSON when it parses (5, 0.1, true, {"type": "cosine"}), else a string."""
    from .errors import SpecError

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
        except RecursionError:
            raise SpecError(key, "--set value nested too deep") from None
        except ValueError:  # an integer literal beyond sys.get_int_max_str_digits()
            raise SpecError(key, f"--set value has an integer of more than {sys.get_int_max_str_digits()} "
                            "digits") from None
    return out


def _quantize_options(f):
    """--quantize, --calibration-samples, --dynamic-recurrent (export and train)."""
    f = click.option("--dynamic-recurrent", is_flag=True,
                     help="With --quantize: also quantize LSTM weights dynamically (onnxruntime's contrib "
                          "DynamicQuantizeLSTM: the file then runs on onnxruntime only).")(f)
    f = click.option("--calibration-samples", type=click.IntRange(min=1), default=256, show_default=True,
                     help="With --quantize: training samples (a fixed, seeded choice) the int8 ranges come from.")(f)
    return click.option("--quantize", type=click.Choice(["int8"]), default=None,
                        help="Write an int8 model: onnxruntime static quantization, QDQ format, per-channel "
                             "Conv/Gemm/MatMul weights, calibrated on the training data.")(f)


def _states_option(f):
    """--explicit-states (export and train)."""
    return click.option("--explicit-states", is_flag=True,
                        help="Recurrent layers get explicit zero initial states: tract (0.23) aborts on the "
                             "default file when the batch size is symbolic; costs onnxruntime ~5 us a call.")(f)


def _check_quantize_flags(quantize: str | None, dynamic_recurrent: bool) -> None:
    if dynamic_recurrent and not quantize:
        raise click.UsageError("--dynamic-recurrent needs --quantize int8")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False), required=False)
@click.option("--data", "data", default=None, help="Data: a file (.npz/.npy/.csv), a folder, or a built-in name.")
@click.option("--targets", default=None, type=click.Path(dir_okay=False), help="Targets .npy for a .npy --data file.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="ONNX file to write after training.")
@click.option("--epochs", type=click.IntRange(1, 2**31 - 1), default=None,
              help="Override train.epochs (with --resume: extend the run).")
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="Start from the weights of an nngraph-exported ONNX model (fine-tuning).")
@click.option("--opset", type=int, default=None, help="ONNX opset of the written model (default 17).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final result.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Record the run here: spec, data source, checkpoints, history, best checkpoint.")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this directory exactly where it stopped (no SPEC needed).")
@click.option("--batch-size", type=click.IntRange(1, 2**31 - 1), default=None, help="Override train.batch_size.")
@click.option("--lr", type=float, default=None, help="Override optimizer.lr.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Override train.seed.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a spec key: train.*, optimizer.*, loss, data, layers[i].* (or layers[name].*), e.g. "
                   "--set train.early_stopping.patience=5 --set layers[0].units=256.")
@click.option("--progress", type=click.Choice(["auto", "bar", "lines", "none"]), default="auto", show_default=True,
              help="auto: a live bar on a terminal, one line per epoch otherwise.")
@click.option("--fold-batchnorm", is_flag=True,
              help="Fold each batchnorm that follows a conv or dense layer into its weights (checked in onnxruntime).")
@_quantize_options
@_states_option
@handles_errors
def train(spec: str | None, data: str | None, targets: str | None, output: str | None, epochs: int | None,
          init: str | None, opset: int | None, quiet: bool, run_dir: str | None, resume: str | None,
          batch_size: int | None, lr: float | None, seed: int | None, sets: tuple[str, ...], progress: str,
          fold_batchnorm: bool, quantize: str | None, calibration_samples: int, dynamic_recurrent: bool,
          explicit_states: bool) -> None:
    """Train SPEC on its data, print progress and test metrics, write ONNX with -o.

    With --run-dir DIR the run is checkpointed every epoch; Ctrl-C (or SIGTERM) saves at the current
    step and `nngraph train --resume DIR` continues it, bit-identical to an uninterrupted run.
    With --quantize int8 the int8 model is written beside the float32 one (OUT.int8.onnx).
    """
    from .workflow import train as run_training

    _check_quantize_flags(quantize, dynamic_recurrent)
    int8_path = None
    if quantize:
        if not output:
            raise click.UsageError("--quantize needs -o (the int8 model is written beside the float32 one)")
        out = Path(output)
        int8_path = out.with_name((out.name[:-5] if out.name.endswith(".onnx") else out.name) + ".int8.onnx")
        from .fileio import refuse_overwrite

        refuse_overwrite(int8_path, [("float32 model", output), ("input spec", spec), ("data file", data),
                                     ("--targets file", targets), ("--init model", init)])

    overrides = _parse_set(sets)
    for key, value in (("train.batch_size", batch_size), ("optimizer.lr", lr), ("train.seed", seed)):
        if value is not None:
            overrides[key] = value
    if quiet:
        progress = "none"
    elif progress == "auto":
        progress = "bar" if sys.stderr.isatty() else "lines"
    # progress and diagnostics on stderr, results (test metrics, the file written) on stdout; both
    # pipe-safe (see _PipeSafe): a reader that goes away never stops the run or loses its model
    log = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    result = run_training(spec, data=data, targets=targets, output=output, init=init, epochs=epochs,
                          opset=opset, log=log, run_dir=run_dir, resume=resume, overrides=overrides,
                          progress=progress, fold_batchnorm=fold_batchnorm, report=click.echo,
                          explicit_states=explicit_states)
    if int8_path is not None:
        from .quantize import describe_result, quantize_model

        info = quantize_model(result.model, result.dataset.x, int8_path, samples=calibration_samples,
                              dynamic_recurrent=dynamic_recurrent, opset=opset, fold_batchnorm=fold_batchnorm)
        click.echo(describe_result(int8_path, info))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write loss/metric curves to a PNG.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@handles_errors
def history(run_dir: str, plot: str | None, fmt: str) -> None:
    """Show the epochs of a run directory (and plot them with --plot, needs matplotlib)."""
    from .train.plot import format_table, plot_history
    from .train.rundir import history_csv, open_run

    from .fileio import refuse_overwrite

    refuse_overwrite(plot, _run_files(run_dir))
    run = open_run(run_dir)
    if fmt == "csv":
        click.echo(history_csv(run.rows), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(run.rows, indent=1))
    else:
        click.echo(format_table(run))
    if plot:
        plot_history(run, plot)
        click.echo(f"wrote {plot}", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--best", is_flag=True, help="Export the best checkpoint (by the run's monitor) instead of the latest.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option("--fold-batchnorm", is_flag=True,
              help="Fold each batchnorm that follows a conv or dense layer into its weights (checked in onnxruntime).")
@_quantize_options
@_states_option
@handles_errors
def export(run_dir: str, output: str, best: bool, opset: int | None, fold_batchnorm: bool, quantize: str | None,
           calibration_samples: int, dynamic_recurrent: bool, explicit_states: bool) -> None:
    """Export a run directory's latest (or best) checkpoint as ONNX (int8 with --quantize)."""
    from .train.progress import fmt
    from .workflow import fold_message, run_model

    from .fileio import refuse_overwrite

    refuse_overwrite(output, _run_files(run_dir))
    _check_quantize_flags(quantize, dynamic_recurrent)
    model, meta = run_model(run_dir, best=best)
    if explicit_states:
        model.metadata["explicit_states"] = True
    if quantize:
        from .quantize import describe_result, quantize_run

        info = quantize_run(run_dir, output, best=best, samples=calibration_samples,
                            dynamic_recurrent=dynamic_recurrent, opset=opset, fold_batchnorm=fold_batchnorm,
                            explicit_states=explicit_states)
        click.echo(describe_result(output, info))
        return
    model.export_onnx(output, opset, fold_batchnorm)
    if fold_batchnorm:
        click.echo(fold_message(model), err=True)
    what = f"best checkpoint (epoch {meta['epoch']}, {meta['monitor']} {fmt(meta['best'])})" if best else \
        f"checkpoint of epoch {meta['epoch']}" + (f", batch {meta['batch']}" if meta.get("batch") else "")
    click.echo(f"wrote {output} from the {what}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data", required=True, help="Data: a file (.npz/.npy/.csv), a folder, or a built-in name.")
@click.option("--targets", default=None, type=click.Path(dir_okay=False), help="Targets .npy for a .npy --data file.")
@click.option("--split", type=click.Choice(["auto", "test", "train"]), default="auto", show_default=True,
              help="auto: the test part if the data has one, else all of it.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--loss", type=click.Choice(["mse", "cross_entropy", "binary_cross_entropy"]), default=None,
              help="Loss to report (default: the spec's; for a model without nngraph metadata, from --task or "
                   "the output: one value per sample mse, else cross_entropy).")
@click.option("--task", type=click.Choice(["regression", "classification", "binary"]), default=None,
              help="For a model without nngraph metadata: regression (mse), classification (cross_entropy), "
                   "binary (binary_cross_entropy).")
@handles_errors
def evaluate(model: str, data: str, targets: str | None, split: str, top_k: int, as_json: bool,
             loss: str | None, task: str | None) -> None:
    """Run MODEL (ONNX, nngraph's or any other) in onnxruntime on a dataset: loss, accuracy, top-k,
    MSE/MAE, confusion matrix. A series CSV is windowed the way the model was trained."""
    from .train.evaluate import evaluate_onnx
    from .train.metrics import format_confusion
    from .train.progress import fmt

    res = evaluate_onnx(model, data, targets=targets, split=split, top_k=top_k, loss=loss, task=task)
    if as_json:
        click.echo(json.dumps(res, indent=1))
        return
    click.echo(f"{res['samples']} samples ({res['split']}), loss {res['loss_function']}")
    for k, v in res.items():
        if isinstance(v, float):
            click.echo(f"{k:<16} {fmt(v)}")
    if "confusion_matrix" in res:
        click.echo("confusion matrix (rows: true class, columns: predicted):")
        click.echo(format_confusion(res["confusion_matrix"]))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--batch", "batches", type=click.IntRange(1, MAX_VERIFY_BATCH), multiple=True,
              help="Batch sizes to test (default 1, 3, 64).")
@click.option("--input", "input_path", type=click.Path(dir_okay=False), default=None,
              help="Compare on these inputs (.npy/.npz/.csv) instead of random ones.")
@click.option("--atol", type=float, default=1e-5, show_default=True)
@click.option("--rtol", type=float, default=1e-4, show_default=True)
@click.option("--reference", is_flag=True, help="Also check onnx.reference.ReferenceEvaluator.")
@click.option("--runtime", "runtime_list", default="onnxruntime,reference", show_default=True,
              help="Runtimes to run the model in, comma-separated: onnxruntime, reference, openvino, tract "
                   "(the last two: pip install 'nngraph[runtimes]'). Each is compared with the Numba forward pass.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@handles_errors
def verify(model: str, batches: tuple[int, ...], input_path: str | None, atol: float, rtol: float,
           reference: bool, runtime_list: str, seed: int) -> None:
    """Run MODEL in onnxruntime and in the Numba forward pass on the same inputs; exit 0 if they agree.
    With --runtime, every runtime listed runs every batch too: one table of their errors against the
    Numba forward pass. A model without nngraph metadata (any ONNX file) is compared with
    onnx.reference and the runtimes with onnxruntime instead."""
    from .errors import VerificationFailed
    from .runtime import verify as run_verify
    from .runtimes import parse_runtimes

    runtimes = parse_runtimes(runtime_list)
    inputs = _read_inputs(input_path) if input_path else None
    report = run_verify(model, tuple(batches) or (1, 3, 64), seed=seed, atol=atol, rtol=rtol, inputs=inputs,
                        reference=reference, runtimes=runtimes)
    click.echo(report.summary())
    if not report.ok:
        base = "nngraph" if report.against == "nngraph" else "onnxruntime"
        off = [r["runtime"] for r in report.runtimes if not r["ok"] and not r["error"]]
        broke = [r["runtime"] for r in report.runtimes if not r["ok"] and r["error"]]
        parts = ([f"{', '.join(off)} and {base} disagree beyond tolerance"] if off else []) + \
            ([f"{', '.join(broke)} failed to run the model"] if broke else [])
        raise VerificationFailed(f"{model}: " + ("; ".join(parts) or "onnxruntime and nngraph disagree beyond tolerance"))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the page into (created).")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=None,
              help="An installed onnxruntime-web dist folder (npm install onnxruntime-web): its runtime files are "
                   "copied next to the page, which then works offline; without it the page loads them from jsDelivr.")
@handles_errors
def web(model: str, out_dir: str, runtime_dir: str | None) -> None:
    """Write a static web page that runs MODEL in the browser with onnxruntime-web: a drawing canvas
    for an image classifier, text sampling for a character LM, a form for anything else."""
    from .web import ORT_WEB_VERSION, build_site

    info = build_site(model, out_dir, runtime_dir)
    kind = {"image": "image classifier: draw, see the class probabilities", "charlm": "character LM: sample text",
            "form": "one sample in, the output out"}[info["kind"]]
    where = "copied into the folder (works offline)" if runtime_dir else f"loaded from jsDelivr (onnxruntime-web {ORT_WEB_VERSION})"
    click.echo(f"wrote {out_dir}/ ({kind}; runtime {where}); serve it: python -m http.server -d {out_dir}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="Inputs: .npy, .npz (one array per model input, or x) or .csv.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write outputs to .npy, .csv or .json (default: print as JSON).")
@click.option("--labels", is_flag=True,
              help="Print each sample's predicted class label (from the model's label list) instead of the outputs.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Run on Ray Data workers (one onnxruntime session each); the same output as without --ray.")
@click.option("--address", default=None, help="With --ray: a Ray cluster (default: a local Ray in this process).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --ray: inference actors (default: one per CPU of the cluster).")
@handles_errors
def run(model: str, input_path: str, output: str | None, labels: bool, use_ray: bool, address: str | None,
        workers: int | None) -> None:
    """Inference in onnxruntime on the inputs in a file (.npy files are memory-mapped and run
    4,096 samples at a time); --ray spreads the samples over Ray Data workers."""
    from .fileio import refuse_overwrite
    from .runtime import class_labels, run_batches

    if (address or workers) and not use_ray:
        raise click.UsageError("--address and --workers go with --ray")
    refuse_overwrite(output, [("model", model), ("input file", input_path)])
    if use_ray:
        from .scale.batch import run_on_ray

        y = run_on_ray(model, input_path, address=address, workers=workers)
    else:
        y = run_batches(model, _read_inputs(input_path, mmap=True))
    if labels:
        y = class_labels(model, y)
    if output is None:
        click.echo(json.dumps(y.tolist()))
        return
    _write_outputs(Path(output), y)
    click.echo(f"wrote {output} ({y.shape[0]} rows)", err=True)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@handles_errors
def inspect(model: str) -> None:
    """Show MODEL's inputs/outputs (with dynamic axes), ops, opset, IR version and metadata."""
    from .inspect import describe

    click.echo(describe(model))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--prime", default="", help="Text to start from (every character must be in the model's vocabulary).")
@click.option("--length", type=click.IntRange(min=0), default=300, show_default=True,
              help="Characters to generate.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Below 1: safer, more repetitive text; above 1: more surprising.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Seed for reproducible samples.")
@handles_errors
def sample(model: str, prime: str, length: int, temperature: float, seed: int | None) -> None:
    """Generate text with MODEL, a character language model, run by onnxruntime."""
    from .sample import sample as run_sample

    click.echo(run_sample(model, prime=prime, length=length, temperature=temperature, seed=seed))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--batch", type=click.IntRange(1, MAX_VERIFY_BATCH), default=3, show_default=True)
@click.option("--tol", type=float, default=1e-6, show_default=True)
@handles_errors
def gradcheck(spec: str, seed: int, batch: int, tol: float) -> None:
    """Check SPEC's hand-derived gradients of its loss against float64 finite differences."""
    from .errors import VerificationFailed
    from .gradcheck import gradcheck as run_gradcheck
    from .spec import load_spec

    report = run_gradcheck(load_spec(spec), seed=seed, batch=batch, tol=tol)
    click.echo(report.summary())
    if not report.ok:
        raise VerificationFailed(f"{spec}: a gradient disagrees with finite differences")


def _run_files(run_dir: str) -> list[tuple[str, Path]]:
    """The files of a run directory, labelled, for refuse_overwrite (a run that lost its
    checkpoint.npz could no longer resume)."""
    d = Path(run_dir)
    return [(f"run directory's {f.name}", f) for f in sorted(d.iterdir()) if f.is_file()] if d.is_dir() else []


def _read_inputs(path: str, mmap: bool = False):
    from .runtime import read_inputs

    return read_inputs(path, mmap)


def _write_outputs(path: Path, y) -> None:
    import io

    import numpy as np

    from .errors import DataError
    from .fileio import atomic_write_bytes, atomic_write_text

    suffix = path.suffix.lower()
    if suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, y)
        atomic_write_bytes(path, buf.getvalue())
    elif suffix == ".csv":
        buf2 = io.StringIO()
        np.savetxt(buf2, y.reshape(len(y), -1), delimiter=",", fmt="%s" if y.dtype.kind == "U" else "%.9g")
        atomic_write_text(path, buf2.getvalue())
    elif suffix == ".json":
        atomic_write_text(path, json.dumps(y.tolist()) + "\n")
    else:
        raise DataError(f"{path}: unsupported output format {suffix!r} (use .npy, .csv or .json)")


from .cli_scale import add_commands  # noqa: E402

add_commands(main, handles_errors, _parse_set, MAX_SEED)

if __name__ == "__main__":
    main(prog_name="nngraph")
