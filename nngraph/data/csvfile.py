"""CSV files: numeric tables read by numpy's C reader, with an exact rule for the header row.

Header rule: the first non-blank row is a header when NONE of its cells parses as a number, a
data row when ALL of them do; a first row that mixes the two (``1,2,x,4``) is an error naming the
row and the columns, because taking it silently as a header (or as data) would drop or garble a
sample. Every other row must be all numbers.

Speed and memory: the table is parsed by ``numpy.loadtxt`` straight into float32 (numpy's C
reader), so a file loads about as fast as ``numpy.loadtxt`` itself with one float32 array in
memory; the slow Python ``csv`` pass runs only on failure, to name the line and column.

``.csv.gz`` is decompressed, never read as text: the output is limited to the size recorded in
the gzip trailer, so a decompression bomb is an error rather than an exhausted machine.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from ..errors import DataError
from ..fileio import check_user_file, gunzip_limited, gzip_claimed_size, read_user_bytes

FIELD_LIMIT = csv.field_size_limit()  # the csv module's own limit (131,072 characters)
GZIP_MAX_RATIO = 1100  # deflate cannot compress better than ~1032:1


def _is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _gunzip(path: Path) -> bytes:
    raw = read_user_bytes(path, "gzip-compressed CSV file")
    claimed = gzip_claimed_size(path, raw)
    # ISIZE is the size modulo 2**32: a larger file records a wrapped value, so allow the wraps
    # that deflate's best ratio makes possible for this many compressed bytes.
    limit = claimed
    while limit + (1 << 32) <= len(raw) * GZIP_MAX_RATIO:
        limit += 1 << 32
    return gunzip_limited(path, raw, limit)


def _text_stream(path: Path) -> IO[str]:
    """The file as text (decompressed when .gz); a DataError if it is not a regular file."""
    check_user_file(path, "CSV file")
    if _is_gzip(path):
        return io.TextIOWrapper(io.BytesIO(_gunzip(path)), encoding="utf-8-sig", newline="")
    try:
        return open(path, newline="", encoding="utf-8-sig")  # a BOM is not part of the first cell
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _rows(path: Path, f: IO[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of the non-blank rows; one-line DataErrors for undecodable text and
    fields longer than the csv module's limit."""
    reader = csv.reader(f)
    try:
        for r in reader:
            if r and any(c.strip() for c in r):
                yield reader.line_num, r
    except csv.Error as e:
        limit = "field larger than field limit" in str(e)
        raise DataError(f"{path}: line {reader.line_num}: " + (
            f"a field is longer than {FIELD_LIMIT:,} characters" if limit else f"not valid CSV ({e})")) from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def read_csv_rows(path: Path) -> list[list[str]]:
    """The non-blank rows of a CSV file (plain or .gz) as lists of cells; a DataError if it
    cannot be read."""
    with _text_stream(Path(path)) as f:
        return [r for _, r in _rows(Path(path), f)]


def _number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def classify_first_row(path: Path, line: int, cells: list[str]) -> bool:
    """True when the first row is a header (no numeric cell), False when it is data (all numeric);
    a DataError naming the columns when it mixes both."""
    numeric = [_number(c) for c in cells]
    if all(numeric):
        return False
    if not any(numeric):
        return True
    text = [f"column {j + 1} {c.strip()!r}" for j, (c, n) in enumerate(zip(cells, numeric)) if not n][:3]
    nums = [f"column {j + 1} {c.strip()!r}" for j, (c, n) in enumerate(zip(cells, numeric)) if n][:3]
    raise DataError(f"{path}: line {line} mixes text ({', '.join(text)}) and numbers ({', '.join(nums)}): "
                    "a header row must have no numeric cell and a data row only numbers")


def read_table(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """A numeric CSV as (float32 values (rows, columns), header or None); see the module docstring."""
    path = Path(path)
    with _text_stream(path) as f:
        first = next(_rows(path, f), None)
        if first is None:
            raise DataError(f"{path}: the file is empty")
        line, cells = first
        header = [c.strip() for c in cells] if classify_first_row(path, line, cells) else None
        f.seek(0)
        # A plain file goes to numpy by its path: numpy's reader opening it itself ran 1.0 s for a
        # 1M x 50 CSV where our text stream took 1.3 s (tools/bench_data.py); a .gz is already text.
        src, encoding = (f, None) if _is_gzip(path) else (str(path), "utf-8-sig")
        try:
            values = np.loadtxt(src, delimiter=",", dtype=np.float32, comments=None, skiprows=line if header
                                else line - 1, ndmin=2, quotechar='"', encoding=encoding)
        except (ValueError, UnicodeDecodeError):
            values = None
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
        if values is None or (header is not None and values.shape[1] not in (0, len(header))):
            f.seek(0)
            _explain(path, f, header)  # raises with the line and column
            raise DataError(f"{path}: not a numeric CSV table")
    if values.size == 0 and values.shape[0] == 0:
        values = values.reshape(0, len(header) if header else len(cells))
    return values, header


def _explain(path: Path, f: IO[str], header: list[str] | None) -> None:
    """Find the first bad row or cell (the slow way, only after numpy's reader refused)."""
    width = None
    rows = _rows(path, f)
    if header is not None:
        next(rows)
        width = len(header)
    with np.errstate(over="ignore"):
        for line, r in rows:
            if width is None:
                width = len(r)
            if len(r) != width:
                raise DataError(f"{path}: line {line} has {len(r)} columns, expected {width}")
            for j, c in enumerate(r):
                if not _number(c):
                    raise DataError(f"{path}: line {line}, column {j + 1}: not a number: {c[:40]!r}"
                                    + ("..." if len(c) > 40 else ""))
