"""A cache of preprocessed numpy arrays: written atomically, verified on load, keyed by the sources."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable

import numpy as np


def default_cache_dir() -> str:
    return os.environ.get("VMA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vma_tf")


def file_fingerprint(path: str) -> tuple[str, int, int]:
    """(absolute path, size, mtime in ns) of a file or folder: changes when the source changes."""
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


def cache_path(cache_dir: str | None, name: str, key: str) -> str:
    return os.path.join(cache_dir or default_cache_dir(), f"{name}-{key[:16]}.npz")


def load_or_build(path: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Returns the arrays stored at `path`, or builds, stores and returns them.

    A file that cannot be read back whole (a crash during an earlier write, a disk
    error) is rebuilt rather than trusted.
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        pass
    arrays = build()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    return arrays
