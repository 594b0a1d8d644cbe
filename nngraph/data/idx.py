"""IDX files (MNIST, Fashion-MNIST, KMNIST ...): a folder of train-*/t10k-* images and labels.

The folder holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` and, optionally, the
``t10k-`` pair for the test set, each plain or gzip-compressed (``.gz``). Images become float32
pixels 0..255 as they are stored, with shape (N, rows, cols); ``fit_inputs`` then adds the
channel axis the spec's input asks for ((1, 28, 28) for MNIST). Labels become int64 class ids.
The scaling to [0, 1] (value / 255) is part of the model: the dataset asks for a ``normalize``
layer of mode "scale" on the input (``Dataset.input_layer``), so the exported model takes raw pixels.

IDX format (big-endian): two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, one uint32 per dimension, then the values in row-major order.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..fileio import check_user_file

_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_NAMES = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}
PIXEL_SCALE = 255.0


MAX_DIMS = 8  # images are 3-D (count, rows, cols); a few more for volumes, never hundreds
GZIP_MAX_RATIO = 1100  # deflate cannot compress better than ~1032:1


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (plain or .gz) as an array; a bad header or truncated data is a DataError.

    The header's claimed size is checked before the data is read: against the file's size for a
    plain file, and against what a gzip stream of this size can hold for a .gz (decompression then
    stops one byte past the claim, so a decompression bomb is never expanded)."""
    size = check_user_file(path, "IDX file")
    gz = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path}: not an IDX file (the first two bytes must be zero, got "
                                f"{head[:4].hex() or 'an empty file'})")
            kind, ndim = head[2], head[3]
            if kind not in _TYPES:
                raise DataError(f"{path}: unknown IDX element type 0x{kind:02x}")
            if not 1 <= ndim <= MAX_DIMS:
                raise DataError(f"{path}: {ndim} dimensions in the IDX header (expected 1 to {MAX_DIMS})")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({4 + len(raw_dims)} bytes for {ndim} dimensions)")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
            dtype = _TYPES[kind]
            want = math.prod(dims) * dtype.itemsize
            room = size * GZIP_MAX_RATIO if gz else size - 4 - 4 * ndim
            if want > room:
                held = f"a {size:,}-byte gzip file can hold at most {room:,}" if gz else f"the file holds {room:,}"
                raise DataError(f"{path}: truncated or corrupt: the header says {' x '.join(map(str, dims))} values "
                                f"({want:,} bytes), {held}")
            raw = f.read(want + 1)  # one byte more tells trailing data (or a bomb) from a good file
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({e}); the gzip stream is damaged or truncated") from None
    have = len(raw)
    if have != want:
        what = "truncated" if have < want else "has trailing bytes"
        raise DataError(f"{path}: {what}: the header says {' x '.join(map(str, dims))} values "
                        f"({want:,} bytes), the file holds " + (f"{have:,}" if have < want else "more"))
    return np.frombuffer(raw, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, split: str, what: str) -> Path | None:
    """The file of one split (``train``/``t10k``) and kind, plain or gzipped; dots or dashes."""
    stem = _NAMES[what]
    for name in (f"{split}-{stem}", f"{split}-{stem.replace('-idx', '.idx')}"):
        for suffix in (".gz", ""):
            p = folder / (name + suffix)
            if p.is_file():
                return p
    return None


def _split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(pixels as float32, labels, whether the pixels are uint8) of one split, or None when the folder has neither of its files."""
    images, labels = _find(folder, split, "images"), _find(folder, split, "labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        missing = f"{split}-{_NAMES['images' if images is None else 'labels']}[.gz]"
        raise DataError(f"{folder}: found {(images or labels).name} but not {missing}")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim < 2:
        raise DataError(f"{images}: expected images (count x rows x cols), got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{labels}: expected one label per image, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{folder}: {images.name} has {len(x):,} images but {labels.name} has "
                        f"{len(y):,} labels")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
        raise DataError(f"{labels}: labels must be whole class ids, got {bad!r} (float IDX labels are "
                        "never truncated)")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{labels}: negative label {int(y.min())}")
    return x.astype(np.float32), y.astype(np.int64), x.dtype == np.uint8


def is_idx_folder(folder: Path) -> bool:
    """Whether a folder holds IDX training files."""
    return _find(folder, "train", "images") is not None or _find(folder, "train", "labels") is not None


def load_idx_folder(folder: Path, options: dict[str, Any]):
    """A Dataset from a folder of IDX files (train required, t10k optional)."""
    from . import Dataset

    train = _split(folder, "train")
    if train is None:
        raise DataError(f"{folder}: no IDX training files (expected train-images-idx3-ubyte[.gz] and "
                        "train-labels-idx1-ubyte[.gz], and optionally the t10k- pair for testing)")
    test = _split(folder, "t10k")
    ds = Dataset(train[0], train[1], *(test[:2] if test is not None else (None, None)))
    if train[2]:  # the model scales: it takes raw 0..255 pixels (a normalize layer, mode "scale")
        ds.meta = {"source": str(folder), "preprocessing": "x = pixel / 255 inside the model (uint8 IDX "
                   "pixels 0..255 are its input)", "input_scale": 1 / PIXEL_SCALE}
        ds.input_layer = {"mode": "scale", "factor": 1 / PIXEL_SCALE}
    else:
        ds.meta = {"source": str(folder), "preprocessing": "none (IDX values as stored)", "input_scale": 1.0}
    return ds
