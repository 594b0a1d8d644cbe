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

STAMP_NAME = "nngraph-kernels.stamp"


def source_stamp(root: Path) -> str:
    """A digest of every .py file's path, size and modification time under ``root``."""
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def drop_stale(root: Path, index_dirs: list[Path], marker: Path) -> bool:
    """Delete Numba's cache indexes (*.nbi) in ``index_dirs`` unless the stamp stored in ``marker``
    matches ``root``'s sources; then store the current stamp. Returns True if it dropped them (also
    when no stamp was stored: a cache of unknown age)."""
    stamp = source_stamp(root)
    try:
        if marker.read_text() == stamp:
            return False
    except OSError:
        pass
    for folder in index_dirs:
        for index in folder.glob("*.nbi"):
            index.unlink(missing_ok=True)  # an index gone = a cache miss: Numba recompiles and rewrites it
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
    tmp.write_text(stamp)
    os.replace(tmp, marker)
    return True


def _numba_cache_dirs(root: Path, custom: str | None) -> list[Path]:
    """Where Numba keeps the indexes of the kernels defined under ``root``: each source folder's
    ``__pycache__``, or with NUMBA_CACHE_DIR one folder per source folder named as Numba names it
    (numba.core.caching.UserProvidedCacheLocator: "<folder>_<sha1 of its absolute path>")."""
    folders = sorted({p.parent for p in root.rglob("*.py")})
    if custom:
        return [Path(custom) / f"{f.name}_{hashlib.sha1(str(f).encode()).hexdigest()}" for f in folders]
    return [f / "__pycache__" for f in folders]


def guard() -> None:
    """``drop_stale`` for the cache Numba will use. Never fails the import (a read-only install only
    changes by reinstalling, which gives every file a new stamp anyway)."""
    root = Path(os.path.abspath(os.path.dirname(__file__)))
    custom = os.environ.get("NUMBA_CACHE_DIR")
    key = hashlib.sha1(str(root).encode()).hexdigest()[:12]  # checkouts may share NUMBA_CACHE_DIR
    marker = Path(custom) / f"{STAMP_NAME}-{key}" if custom else root / "__pycache__" / STAMP_NAME
    try:
        if custom or os.access(root, os.W_OK):
            drop_stale(root, _numba_cache_dirs(root, custom), marker)
    except OSError:
        pass
