"""Data sources: built-in datasets, .npz, .npy pairs and .csv — each a loader returning a Dataset.

Every failure is a DataError naming the file and what is wrong with it. Arrays are fitted to the
spec's input shape (``fit_inputs``): a flat (N, 64) array feeds a (1, 8, 8) input, and vice versa.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from ..fileio import check_user_file
from .arrays import NpyRows, is_rows, load_npy, load_npz
from .csvfile import read_csv_rows, read_table  # noqa: F401  (read_csv_rows: re-exported)

HERE = Path(__file__).parent


@dataclass
class Dataset:
    """Training (and optionally test) arrays, plus metadata recorded in the exported model."""

    x: np.ndarray | dict[str, np.ndarray]
    y: np.ndarray
    x_test: np.ndarray | dict[str, np.ndarray] | None = None
    y_test: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Preprocessing the model itself must do: the attributes of a ``normalize`` layer that
    # ``nngraph.workflow.with_preprocessing`` puts on the (single) input, e.g. {"mode": "scale",
    # "factor": 1/255} for IDX pixels, so the exported model takes the raw values of the files.
    input_layer: dict[str, Any] | None = None


# ---- built-in: the UCI handwritten digits -------------------------------------------------------

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 1998  # fixed forever: the published accuracies refer to this split


def load_digits() -> Dataset:
    """The UCI optical-recognition digits (1,797 8x8 images, pixels 0..16 scaled to [0, 1]) with a
    fixed stratified split: 25% of each class (rounded) is the test set.
    Source: E. Alpaydin, C. Kaynak (1998), UCI Machine Learning Repository, CC BY 4.0."""
    with gzip.open(HERE / "digits.csv.gz", "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x, y = raw[:, :64] / np.float32(16.0), raw[:, 64].astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.permutation(idx)[: int(round(len(idx) * DIGITS_TEST_FRACTION))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test],
                   meta={"source": "builtin:digits", "preprocessing": "x = pixel / 16 (pixels 0..16)",
                         "input_scale": 1 / 16.0})


def _builtin_sequences(name: str) -> Callable[[], Dataset]:
    def load() -> Dataset:
        from . import sequences  # generated series: "sine" (regression), "waves" (classification)

        return getattr(sequences, f"load_{name}")()
    return load


BUILTINS: dict[str, Callable[[], Dataset]] = {"digits": load_digits, "sine": _builtin_sequences("sine"),
                                              "waves": _builtin_sequences("waves")}


# ---- files --------------------------------------------------------------------------------------

def _load_npz(path: Path, options: dict[str, Any]) -> Dataset:
    arrays = load_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found: {', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test must be given together")
    _check_pair(path, arrays["x"], arrays["y"], "x", "y")
    if "x_test" in arrays:
        _check_pair(path, arrays["x_test"], arrays["y_test"], "x_test", "y_test")
    return Dataset(arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"),
                   meta={"source": str(path)})


def _load_npy_pair(path: Path, options: dict[str, Any]) -> Dataset:
    y_path = options.get("y")
    if not y_path:
        raise DataError(f"{path}: a .npy training file needs its targets too (data.y in the spec, "
                        "or --targets on the command line)")
    # the inputs stay in the file: training reads each batch's rows from it (see arrays.NpyRows)
    x, y = NpyRows.open(path), load_npy(Path(y_path))
    _check_pair(path, x, y, "x", "y")
    return Dataset(x, y, meta={"source": f"{path} + {y_path}"})


def read_csv(path: Path, target: Any = None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """A numeric CSV (optional header row; see ``csvfile``) as (float32 features, target column,
    header). The features are a view of the parsed table when the target is the last column.
    A target column of text (class labels) is returned as a str array (``class_ids`` maps it)."""
    try:
        values, header = read_table(path)
    except DataError:
        labelled = _read_labelled(path, target)
        if labelled is None:
            raise
        return labelled
    width = values.shape[1]
    col = width - 1
    if target is not None:
        if isinstance(target, int) and not isinstance(target, bool):
            col = target if target >= 0 else width + target
        elif header and target in header:
            col = header.index(target)
        else:
            raise DataError(f"{path}: no target column {target!r}" + (f" (columns: {', '.join(header)})"
                                                                       if header else ""))
        if not 0 <= col < width:
            raise DataError(f"{path}: target column {target} is out of range (the file has {width} columns)")
    if width < 1:
        raise DataError(f"{path}: no columns")
    y = values[:, col].astype(np.float64)
    return _drop_column(values, col), y, header


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _read_labelled(path: Path, target: Any) -> tuple[np.ndarray, np.ndarray, list[str] | None] | None:
    """The slow path for a CSV numpy's reader refused: (features, str labels, header) when every
    cell of the target column is text and every other cell a number (after an optional header
    row), else None (the
    caller re-raises the reader's error, which names the bad cell). The first row is a header
    when every cell of it is text."""
    rows = read_csv_rows(path)
    if not rows:
        return None
    header = None
    if not any(_is_number(c) for c in rows[0]):  # csvfile's rule: a header is a row of text only
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    width = len(header) if header else len(rows[0]) if rows else 0
    col = width - 1
    if isinstance(target, int) and not isinstance(target, bool):
        col = target if target >= 0 else width + target
    elif target is not None:
        if not header or target not in header:
            return None
        col = header.index(target)
    if not rows or not 0 <= col < width or any(len(r) != width for r in rows):
        return None
    if any(not _is_number(c) for r in rows for j, c in enumerate(r) if j != col):
        return None
    if any(_is_number(r[col]) for r in rows):  # labels are text, all of them; else the reader's error stands
        return None
    x = np.array([[float(c) for j, c in enumerate(r) if j != col] for r in rows], np.float32).reshape(len(rows), -1)
    return x, np.array([r[col].strip() for r in rows], dtype=str), header


def class_ids(path: Path, labels: np.ndarray, classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """String class labels as int64 ids into ``classes`` (by default the sorted distinct labels);
    a label outside a given list is a DataError."""
    classes = sorted(set(labels.tolist())) if classes is None else [str(c) for c in classes]
    index = {c: i for i, c in enumerate(classes)}
    try:
        return np.array([index[v] for v in labels.tolist()], np.int64), classes
    except KeyError as e:
        raise DataError(f"{path}: class label {e.args[0]!r} is not one of the model's classes "
                        f"({', '.join(classes)})") from None


def _drop_column(values: np.ndarray, col: int) -> np.ndarray:
    """``np.delete(values, col, axis=1)`` made contiguous inside ``values``' own buffer, a block of
    rows at a time (each block's destination lies before its source), so a big table never
    exists twice in memory. ``values`` is overwritten."""
    n, w = values.shape
    flat = values.reshape(-1)
    step = max(1, (8 << 20) // max(1, values.itemsize * w))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        flat[lo * (w - 1):hi * (w - 1)] = np.delete(values[lo:hi], col, axis=1).reshape(-1)
    return flat[:n * (w - 1)].reshape(n, w - 1)


def _load_csv(path: Path, options: dict[str, Any]) -> Dataset:
    if options.get("window") is not None:  # a time series, windowed into sequences
        from .sequences import load_series_csv

        return load_series_csv(path, options)
    x, y, _ = read_csv(path, options.get("target"))
    ds = Dataset(x, y, meta={"source": str(path)})
    classes = options.get("classes")
    if y.dtype.kind == "U":  # string labels: class ids, the label list travels with the model
        ds.y, classes = class_ids(path, y, classes)
        ds.meta["classes"] = classes
    if options.get("normalize") is True:  # tabular: standardise the inputs inside the model
        ds.input_layer = {"mode": "standard"}
    test = options.get("test")
    if test:
        ds.x_test, ds.y_test, _ = read_csv(Path(test), options.get("target"))
        if ds.y_test.dtype.kind == "U":
            if classes is None:
                raise DataError(f"{test}: class labels are text but the training targets are numbers")
            ds.y_test, _ = class_ids(Path(test), ds.y_test, classes)
    return ds


def _check_pair(path: Path, x: np.ndarray, y: np.ndarray, xn: str, yn: str) -> None:
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise DataError(f"{path}: {xn} has {len(x) if x.ndim else 0} samples but {yn} has "
                        f"{len(y) if y.ndim else 0}")
    if x.dtype.kind not in "fiub":
        raise DataError(f"{path}: {xn} must be numeric, got dtype {x.dtype}")


# Loaders by what a path is. Later sources (IDX folders, text corpora, windowed series) add entries.
FILE_LOADERS: dict[str, Callable[[Path, dict[str, Any]], Dataset]] = {
    ".npz": _load_npz,
    ".npy": _load_npy_pair,
    ".csv": _load_csv,
}


def _load_dir(path: Path, options: dict[str, Any]) -> Dataset:
    from .idx import load_idx_folder  # IDX folders (MNIST style: train-*/t10k-* *-idx3-ubyte[.gz])

    return load_idx_folder(path, options)


FILE_LOADERS["<dir>"] = _load_dir


def _load_text(path: Path, options: dict[str, Any]) -> Dataset:
    from .sequences import load_text  # a character corpus (data.seq_len)

    return load_text(path, options)


FILE_LOADERS[".txt"] = _load_text


def load_source(source: str, options: dict[str, Any] | None = None, base_dir: Path | None = None) -> Dataset:
    """Load a built-in dataset by name, or a file by path (relative paths resolve against base_dir)."""
    options = dict(options or {})
    if source in BUILTINS:
        return BUILTINS[source]()
    path = Path(source)
    if base_dir is not None and not path.is_absolute() and not path.exists():
        path = base_dir / path
    for key in ("y", "test", "y_test"):
        if options.get(key) and base_dir is not None and not Path(options[key]).is_absolute() \
                and not Path(options[key]).exists():
            options[key] = str(base_dir / options[key])
    if not path.exists():
        raise DataError(f"{source}: no such file or folder, and not a built-in dataset "
                        f"(built-in: {', '.join(BUILTINS)})")
    if not path.is_dir():
        check_user_file(path, "data file")  # never /dev/zero, a FIFO, a socket ...
    kind = "<dir>" if path.is_dir() else path.suffix.lower()
    if path.name.endswith(".csv.gz"):
        kind = ".csv"
    loader = FILE_LOADERS.get(kind)
    if loader is None:
        raise DataError(f"{path}: unsupported data format {kind!r} (supported: "
                        f"{', '.join(k for k in FILE_LOADERS)}, or a built-in name)")
    ds = loader(path, options)
    ds.meta["source"] = source  # as the user wrote it: the exported file must not depend on cwd
    if options.get("y_test") and options.get("test") and kind == ".npy":
        ds.x_test, ds.y_test = load_npy(Path(options["test"])), load_npy(Path(options["y_test"]))
        _check_pair(Path(options["test"]), ds.x_test, ds.y_test, "x_test", "y_test")
    return ds


def fit_inputs(x: np.ndarray | dict[str, np.ndarray], inputs: dict[str, tuple[tuple[int, ...], str]],
               dtype=np.float32) -> dict[str, np.ndarray]:
    """Arrays shaped and typed for the model's inputs ({name: (shape, dtype)}).

    A single array feeds a single-input model; the per-sample shape may differ from the spec's as
    long as the number of values agrees (so (N, 64) feeds (1, 8, 8) and (N, 28, 28) feeds (1, 28, 28)).
    """
    if not isinstance(x, dict):
        if len(inputs) != 1:
            raise DataError(f"the model has {len(inputs)} inputs ({', '.join(inputs)}); pass a dict of arrays")
        x = {next(iter(inputs)): x}
    out = {}
    for name, (shape, kind) in inputs.items():
        if name not in x:
            raise DataError(f"missing input array {name!r} (given: {', '.join(x)})")
        a = x[name] if is_rows(x[name]) else np.asarray(x[name])
        if a.ndim == 0:
            raise DataError(f"input {name!r}: expected an array of samples, got a scalar")
        want = int(np.prod(shape))
        got = int(np.prod(a.shape[1:]))
        if tuple(a.shape[1:]) != tuple(shape):
            if got != want:
                raise DataError(f"input {name!r}: each sample has shape {tuple(a.shape[1:])}, "
                                f"the model expects {tuple(shape)}")
            a = a.reshape((len(a),) + tuple(shape))
        if kind == "int64":
            if a.dtype.kind not in "iu":
                raise DataError(f"input {name!r}: expected integer token ids, got dtype {a.dtype}")
            a = a if is_rows(a) else np.ascontiguousarray(a, np.int64)
            if _any_below(a, 0):
                raise DataError(f"input {name!r}: negative token ids")
            out[name] = a
        else:
            if a.dtype.kind not in "fiub":
                raise DataError(f"input {name!r}: expected real numbers, got dtype {a.dtype}")
            if not is_rows(a):
                a = np.ascontiguousarray(a, dtype)  # no copy when the dtype and layout already fit
            if not _all_finite(a):
                raise DataError(f"input {name!r}: contains NaN or Inf")
            out[name] = a
    return out


def _blocks(a: Any) -> Any:
    """``a`` a block of rows at a time (rows read from a file are never all in memory)."""
    if is_rows(a):
        yield from a.chunks()
    else:
        step = max(1, (16 << 20) // max(1, a[:1].nbytes))
        for lo in range(0, len(a), step):
            yield a[lo:lo + step]


def _all_finite(a: Any) -> bool:
    """Whether every value is finite, checked in blocks (no full-size boolean temporary)."""
    if a.dtype.kind != "f":
        return True
    return all(bool(np.isfinite(b).all()) for b in _blocks(a))


def _any_below(a: Any, low: int) -> bool:
    return any(b.size and int(b.min()) < low for b in _blocks(a))
