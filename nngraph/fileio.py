"""Atomic file writes: write to a temporary file in the same folder, fsync, rename over the target.
A crash or kill at any moment leaves either the old file or the new one, never half of one.

Nothing of the user's is destroyed: the target must be a regular file (never a device node, a pipe
or a folder), :func:`refuse_overwrite` keeps an output off the command's own inputs, and a new file
gets the permissions of the user's umask (``mkstemp`` alone would make every model 0600). A
temporary of ours left behind by a SIGKILL (``.NAME.xxxxxxxx.tmp``) is removed by the next write of
NAME once it is older than this process.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterable

from .errors import DataError

# Temporaries older than this process (and than a minute, for a slow writer started just before
# us) cannot belong to a write still in progress in a process we could race with.
_STARTED = time.time()
_STALE_AFTER_S = 60.0


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_target(path: Path) -> int | None:
    """The mode to give the new file: an existing regular file keeps its own, a new file gets
    0o666 & ~umask. Refuses to replace anything that is not a regular file."""
    try:
        st = os.stat(path)
    except OSError:  # not there yet (or unreadable: the write itself will report it)
        return 0o666 & ~current_umask()
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "a device or pipe, not a regular file"
        raise DataError(f"{path}: is {what}; refusing to replace it (choose another output file)")
    return stat.S_IMODE(st.st_mode)


def clean_stale_temporaries(path: Path) -> list[Path]:
    """Remove ``.NAME.xxxxxxxx.tmp`` files beside ``path`` (exactly the names :func:`atomic_write_bytes`
    creates) that are older than this process and a minute: leftovers of a killed writer."""
    folder = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{8}\.tmp\Z")
    cutoff = min(_STARTED, time.time() - _STALE_AFTER_S)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not pattern.match(e.name):
            continue
        try:
            if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it: a reader or a kill
    sees the old file or the new one, never a mix); returns the path. ``durable`` also fsyncs the
    file and its folder, so the new file survives a power loss; files that can be rebuilt from a
    durable one (a run's history, from its checkpoint) skip those two fsyncs."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    mode = _check_target(path)
    clean_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return path
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), durable)


def refuse_overwrite(output: str | Path | None, protected: Iterable[tuple[str, str | Path | None]]) -> None:
    """Raise DataError if ``output`` is one of the command's own inputs (``(label, path)`` pairs: the
    spec, the data, a run's checkpoint ...), the same file by any name (symlinks, hard links), or a
    device node, pipe or folder. Checked before any work, so a long run never ends by destroying
    its own input."""
    if output is None:
        return
    out = Path(output)
    _check_target(out)
    if not out.exists():
        return
    for label, p in protected:
        if p is None:
            continue
        try:
            same = os.path.samefile(out, p)
        except OSError:
            continue
        if same:
            raise DataError(f"{out}: is the {label}; refusing to overwrite it (choose another output file)")


def check_user_file(path: str | Path, what: str = "file") -> int:
    """The size in bytes of a user-given input path, which must be an existing regular file.

    Every reader of user files calls this first: ``/dev/zero`` would be read until memory runs out
    and a FIFO would block forever, so anything but a regular file is refused (a DataError naming
    the path), before it is opened. Symbolic links to regular files are fine.
    """
    import stat

    from .errors import DataError

    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{p}: is a folder, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                else "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise DataError(f"{p}: is {kind}, not a regular file; give a regular {what}")
    return int(st.st_size)


def read_user_bytes(path: str | Path, what: str = "file", limit: int | None = None) -> bytes:
    """The contents of a user-given regular file (see :func:`check_user_file`); a DataError if it is
    larger than ``limit`` bytes or cannot be read."""
    from .errors import DataError

    size = check_user_file(path, what)
    if limit is not None and size > limit:
        raise DataError(f"{path}: {size:,} bytes, more than the {limit:,} a {what} may have")
    try:
        with open(path, "rb") as f:
            data = f.read(size + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > size:  # grew while we read it: still never more than the size we checked
        data = data[:size]
    return data


def gunzip_limited(path: str | Path, data: bytes, limit: int) -> bytes:
    """Decompress a gzip file's bytes, refusing (DataError) to produce more than ``limit`` bytes:
    a small ``.gz`` can expand to terabytes (a decompression bomb), so every caller derives the
    limit from what the file claims to hold."""
    import zlib

    from .errors import DataError

    d = zlib.decompressobj(wbits=31)  # gzip framing
    out = []
    total = 0
    rest = data
    try:
        while rest:
            chunk = d.decompress(rest, max(1, limit + 1 - total))
            out.append(chunk)
            total += len(chunk)
            if total > limit:
                raise DataError(f"{path}: the gzip stream decompresses to more than {limit:,} bytes "
                                "(what the file claims to hold); refusing a possible decompression bomb")
            if d.eof:
                rest = d.unused_data  # a concatenated gzip member
                if rest:
                    d = zlib.decompressobj(wbits=31)
                continue
            rest = d.unconsumed_tail
            if not rest and not chunk:
                break
        if not d.eof:
            raise DataError(f"{path}: the gzip stream is truncated")
    except zlib.error as e:
        raise DataError(f"{path}: not a valid gzip stream ({e})") from None
    return b"".join(out)


def gzip_claimed_size(path: str | Path, data: bytes) -> int:
    """The uncompressed size a gzip file's trailer records (ISIZE: the size modulo 2**32)."""
    from .errors import DataError

    if len(data) < 18 or data[:2] != b"\x1f\x8b":
        raise DataError(f"{path}: not a gzip file")
    return int.from_bytes(data[-4:], "little")
