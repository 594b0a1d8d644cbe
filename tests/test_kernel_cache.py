"""The kernel-cache guard: Numba's cached kernels are dropped whenever ANY source file changes
(Numba itself only checks the file that defines each kernel; a stale callee crashed a checkout)."""
from __future__ import annotations

import os
from pathlib import Path

from numba.core.caching import UserProvidedCacheLocator

from nngraph import kernel_cache
from nngraph.kernel_cache import STAMP_NAME, drop_stale, numba_index_folder


def _package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "sub" / "b.py").write_text("y = 2\n")
    return root


def _indexes(root: Path) -> list[Path]:
    out = []
    for folder in (root / "__pycache__", root / "sub" / "__pycache__"):
        folder.mkdir(exist_ok=True)
        index = folder / "mod.kernel-3.py311.nbi"
        index.write_bytes(b"index")
        out.append(index)
    return out


def test_indexes_survive_until_any_source_changes(tmp_path):
    root = _package(tmp_path)
    marker = root / "__pycache__" / STAMP_NAME
    folders = numba_index_folder(None)
    indexes = _indexes(root)
    assert drop_stale(root, marker, folders)           # no stamp yet: a cache of unknown age goes
    assert not any(p.exists() for p in indexes)
    indexes = _indexes(root)
    assert not drop_stale(root, marker, folders)       # nothing changed: the cache stays
    assert all(p.exists() for p in indexes)
    (root / "sub" / "b.py").write_text("y = 3  # a callee changed\n")
    assert drop_stale(root, marker, folders)
    assert not any(p.exists() for p in indexes)     # the caller's index in the other folder too
    assert marker.read_text() == kernel_cache.source_stamp(root)


def test_a_touched_file_counts_as_a_change(tmp_path):
    root = _package(tmp_path)
    marker = tmp_path / "stamp"
    folders = numba_index_folder(None)
    drop_stale(root, marker, folders)
    st = (root / "a.py").stat()
    os.utime(root / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert drop_stale(root, marker, folders)


def test_custom_cache_dir_folders_are_named_as_numba_names_them(tmp_path):
    root = _package(tmp_path)
    custom = tmp_path / "cache"
    folder = numba_index_folder(str(custom))
    for py in (root / "a.py", root / "sub" / "b.py"):
        subpath = UserProvidedCacheLocator.get_suitable_cache_subpath(str(py))
        assert folder(py.parent) == custom / subpath


def test_the_package_import_keeps_a_current_stamp(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    kernel_cache.guard()
    stamps = list(tmp_path.glob(f"{STAMP_NAME}-*"))
    root = Path(kernel_cache.__file__).parent
    assert len(stamps) == 1 and stamps[0].read_text() == kernel_cache.source_stamp(root)
