"""Keep Numba's on-disk kernel cache consistent with the package's sources.

Numba keys each cached kernel by the source file that defines it (its mtime and size) and nothing
else. A kernel that calls into another module — every op calls nngraph.linalg — embeds the callee's
machine code, so after that other module changes, the stale kernel still loads: wrong argument
layouts, out-of-range reads, segfaults (seen in a development checkout after a pull). So the package
keeps one stamp over ALL its sources; when the stamp changes, every cached index is dropped and each
kernel compiles afresh once. Cheap: one stat per source file at import.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

STAMP_NAME = "nngraph-kernels.stamp"


def _sources(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def source_stamp(root: Path, files: list[Path] | None = None) -> str:
    """A digest of every .py file's path, size and modification time under ``root`` (``files``:
    that list, when the caller already has it)."""
    h = hashlib.sha1()
    for path in _sources(root) if files is None else files:
        st = path.stat()
        h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def drop_stale(root: Path, marker: Path, index_folder: Callable[[Path], Path]) -> bool:
    """Unless the stamp stored in ``marker`` matches ``root``'s sources, delete Numba's cache
    indexes (*.nbi) of every source folder (``index_folder`` maps a source folder to the folder
    Numba keeps its indexes in) and store the current stamp. Returns True if it dropped them (also
    when no stamp was stored: a cache of unknown age)."""
    files = _sources(root)  # one walk serves the stamp and, when stale, the folders
    stamp = source_stamp(root, files)
    try:
        if marker.read_text() == stamp:
            return False
    except OSError:
        pass
    for folder in sorted({p.parent for p in files}):
        for index in index_folder(folder).glob("*.nbi"):
            index.unlink(missing_ok=True)  # an index gone = a cache miss: Numba recompiles and rewrites it
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
    tmp.write_text(stamp)
    os.replace(tmp, marker)
    return True


def numba_index_folder(custom: str | None) -> Callable[[Path], Path]:
    """Where Numba keeps the indexes of kernels defined in a source folder: its ``__pycache__``, or
    with NUMBA_CACHE_DIR a folder named as Numba names it
    (numba.core.caching.UserProvidedCacheLocator: "<folder>_<sha1 of its absolute path>")."""
    if custom:
        return lambda f: Path(custom) / f"{f.name}_{hashlib.sha1(str(f).encode()).hexdigest()}"
    return lambda f: f / "__pycache__"


def guard() -> None:
    """``drop_stale`` for the cache Numba will use. Never fails the import (a read-only install only
    changes by reinstalling, which gives every file a new stamp anyway)."""
    root = Path(os.path.abspath(os.path.dirname(__file__)))
    custom = os.environ.get("NUMBA_CACHE_DIR")
    key = hashlib.sha1(str(root).encode()).hexdigest()[:12]  # checkouts may share NUMBA_CACHE_DIR
    marker = Path(custom) / f"{STAMP_NAME}-{key}" if custom else root / "__pycache__" / STAMP_NAME
    try:
        if custom or os.access(root, os.W_OK):
            drop_stale(root, marker, numba_index_folder(custom))
    except OSError:
        pass
