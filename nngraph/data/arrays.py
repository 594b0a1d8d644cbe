"""Arrays from user files: ``.npy`` (checked header, rows read on demand) and ``.npz`` (checked members).

A ``.npy`` header states a shape and a dtype; the claimed size is compared with the file's size
before anything is allocated, so a 240-byte file claiming terabytes is a one-line error, not a
MemoryError. Training inputs from ``.npy`` are not read into memory at all: :class:`NpyRows`
memory-maps the file (read-only) and the trainer gathers each batch's rows from the mapping
(``np.take``), so a dataset larger than the machine's memory trains: its pages are file-backed and
the kernel drops them under pressure. When the process's address space cannot hold the mapping
(``RLIMIT_AS`` below the file size), the rows of each batch are read with ``pread`` instead, one
read per run of consecutive rows: slower, but nothing needs the whole file in memory or mapped.
"""
from __future__ import annotations

import tokenize

import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DataError
from ..fileio import check_user_file

NUMERIC_KINDS = "fiub"
CHUNK_BYTES = 16 << 20
ZIP_MAX_RATIO = 1100  # deflate cannot compress better than ~1032:1  # how much a sequential pass (finite check, hash) reads at a time


def _header(path: Path, fp: Any, available: int) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) of the .npy stream ``fp`` (at its start) holding
    ``available`` bytes; a DataError when it is not a .npy stream or claims more data than it has."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = reader(fp)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, tokenize.TokenError, RecursionError,
            MemoryError) as e:  # numpy parses the header's dict literal: a corrupt one raises any of these
        raise DataError(f"{path}: not a .npy array ({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (dtype {dtype}), which nngraph never unpickles")
    if any(d < 0 for d in shape):
        raise DataError(f"{path}: negative dimension in shape {shape}")
    offset = fp.tell()
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > available - offset:
        raise DataError(f"{path}: truncated or corrupt: the header claims shape {shape} {dtype} "
                        f"({claimed:,} bytes), the file holds {max(0, available - offset):,} after the header")
    return tuple(int(d) for d in shape), bool(fortran), dtype, offset


def npy_info(path: str | Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a .npy file, checked against its size."""
    p = Path(path)
    size = check_user_file(p, ".npy file")
    try:
        with open(p, "rb") as f:
            return _header(p, f, size)
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from None


def load_npy(path: str | Path) -> np.ndarray:
    """A whole .npy file as an array (header checked first; never unpickles)."""
    p = Path(path)
    npy_info(p)
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{p}: not a readable .npy file ({e})") from None


def map_npy(path: str | Path) -> np.ndarray:
    """A .npy file memory-mapped read-only (header checked first; never unpickles): rows are read
    from disk as they are used."""
    p = Path(path)
    npy_info(p)
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{p}: not a readable .npy file ({e})") from None


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file by name. Each member must be a .npy array whose header fits the
    member's size; anything else (a text member, a non-zip file, no members) is a DataError."""
    p = Path(path)
    check_user_file(p, ".npz file")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable .npz file (not a zip archive: {e})") from None
    except NotImplementedError as e:  # zipfile: a version or feature it cannot extract
        raise DataError(f"{p}: not a readable .npz file ({e})") from None
    arrays: dict[str, np.ndarray] = {}
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if not infos:
            raise DataError(f"{p}: contains no arrays")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise DataError(f"{p}: member {info.filename!r} is not a .npy array")
            name = info.filename[:-4]
            stored = info.compress_type == zipfile.ZIP_STORED
            if info.file_size > (info.compress_size if stored else info.compress_size * ZIP_MAX_RATIO + 1024):
                # the zip directory's sizes are claims too: a bomb declares what it will expand to
                raise DataError(f"{p}: member {info.filename!r} claims {info.file_size:,} bytes, more than its "
                                f"{info.compress_size:,} compressed bytes can hold")
            try:
                with zf.open(info) as f:
                    _header(Path(f"{p}[{info.filename}]"), f, info.file_size)
                with zf.open(info) as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
            except DataError:
                raise
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as e:
                raise DataError(f"{p}: member {info.filename!r} is unreadable ({e})") from None
    return arrays


class NpyRows:
    """The rows of a C-ordered .npy file, gathered on demand (``take``) instead of loaded.

    Behaves enough like an array for the data path: ``len``, ``shape``, ``dtype``, ``ndim``,
    slicing along the first axis (a view of a row range), ``reshape`` of the per-row shape, and
    ``np.asarray`` (reads the rows). ``take(idx, out)`` fills ``out`` with rows ``idx`` from the
    file's memory map (or by positioned reads when it cannot be mapped), casting to ``out``'s dtype.
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: np.dtype, offset: int,
                 start: int = 0, stop: int | None = None):
        self.path, self.file_shape, self.dtype, self.offset = Path(path), tuple(shape), np.dtype(dtype), offset
        self.row_shape = tuple(shape[1:])
        self.start, self.stop = start, shape[0] if stop is None else stop
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        # the file's mapping, shared by every range and reshape of it: None untried, False impossible
        self._shared: dict[str, Any] = {"map": None}

    @classmethod
    def open(cls, path: str | Path) -> "NpyRows | np.ndarray":
        """Rows of a .npy file; a Fortran-ordered or 0-d file is read whole (rows are not contiguous)."""
        shape, fortran, dtype, offset = npy_info(path)
        if fortran or len(shape) == 0:
            return load_npy(path)
        return cls(path, shape, dtype, offset)

    # -- array-like surface ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.stop - self.start,) + self.row_shape

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return self.stop - self.start

    def _derive(self, row_shape: tuple[int, ...], start: int, stop: int) -> "NpyRows":
        r = NpyRows(self.path, (self.file_shape[0],) + row_shape, self.dtype, self.offset, start, stop)
        r._shared = self._shared
        return r

    def reshape(self, shape: tuple[int, ...]) -> "NpyRows":
        """Same rows, another per-row shape with the same number of values."""
        shape = tuple(shape)
        if shape[0] != len(self) or int(np.prod(shape[1:])) != int(np.prod(self.row_shape)):
            raise ValueError(f"cannot reshape rows of {self.shape} to {shape}")
        return self._derive(shape[1:], self.start, self.stop)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step != 1:
                return np.asarray(self)[key]
            return self._derive(self.row_shape, self.start + lo, self.start + max(lo, hi))
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            return self.take(np.array([i]))[0]
        return np.asarray(self)[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    # -- reading -----------------------------------------------------------------------------------
    def _mapping(self) -> np.ndarray | None:
        """The file's rows memory-mapped (read-only), or None when the process's address space
        cannot hold the mapping (RLIMIT_AS, a 32-bit process): then rows are read with pread."""
        shared = self._shared
        if shared["map"] is None:
            try:
                shared["map"] = np.memmap(self.path, self.dtype, "r", offset=self.offset,
                                          shape=(self.file_shape[0] * int(np.prod(self.row_shape)),))
            except (OSError, ValueError, MemoryError):
                shared["map"] = False
        if shared["map"] is False:
            return None
        return shared["map"].reshape((self.file_shape[0],) + self.row_shape)[self.start:self.stop]

    def _fileno(self) -> int:
        if self._fd is None:
            check_user_file(self.path, ".npy file")
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_shared": {"map": None}}

    def take(self, idx: np.ndarray, axis: int = 0, out: np.ndarray | None = None, mode: str = "raise") -> np.ndarray:
        """Rows ``idx`` (relative to this range) into ``out`` (allocated when None); ``np.take``
        calls this, so the trainer's gather works unchanged."""
        if axis != 0:
            return np.take(np.asarray(self), idx, axis=axis, out=out, mode=mode)
        idx = np.asarray(idx, np.int64)
        if out is None:
            out = np.empty((len(idx),) + self.row_shape, self.dtype)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        mapped = self._mapping()
        if mapped is not None:  # numpy's gather straight from the mapped file
            if out.dtype == self.dtype:
                return np.take(mapped, idx, axis=0, out=out)
            np.copyto(out, np.take(mapped, idx, axis=0), casting="unsafe")
            return out
        direct = out.dtype == self.dtype and out.flags.c_contiguous
        dest = out if direct else np.empty((len(idx),) + self.row_shape, self.dtype)
        flat = dest.reshape(len(idx), -1).view(np.uint8).reshape(len(idx), self.row_bytes) if self.row_bytes \
            else None
        fd = self._fileno()
        # runs of consecutive rows: one read each
        cuts = (np.flatnonzero(np.diff(idx) != 1) + 1).tolist() + [len(idx)]
        i = 0
        for j in (cuts if flat is not None else ()):
            pos = self.offset + (self.start + int(idx[i])) * self.row_bytes
            view = memoryview(flat[i:j]).cast("B")
            got = 0
            while got < len(view):
                n = os.preadv(fd, [view[got:]], pos + got)
                if n <= 0:
                    raise DataError(f"{self.path}: the file shrank while training read it")
                got += n
            i = j
        if not direct:
            np.copyto(out, dest.reshape(out.shape), casting="unsafe")
        return out

    def chunks(self, rows: int | None = None) -> Iterator[np.ndarray]:
        """The rows in order, a block at a time (for sequential passes: finiteness, hashing)."""
        rows = rows or max(1, CHUNK_BYTES // max(1, self.row_bytes))
        for lo in range(0, len(self), rows):
            yield self.take(np.arange(lo, min(len(self), lo + rows)))


def is_rows(a: Any) -> bool:
    """Whether ``a`` is a row source read on demand (:class:`NpyRows`)."""
    return isinstance(a, NpyRows)
