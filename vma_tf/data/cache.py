"""A cache of preprocessed numpy arrays: written atomically, verified on load, keyed by the sources."""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Callable

import numpy as np

from vma_tf import files
from vma_tf.errors import StorageError

logger = logging.getLogger(__name__)
_STALE_AFTER_SEC = 3600.0  # a cache write takes seconds; an older temporary is a killed writer's


def default_cache_dir() -> str:
    return os.environ.get("VMA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vma_tf")


def file_fingerprint(path: str) -> tuple[str, int, int | str]:
    """Changes when the source changes. A file: (absolute path, size, mtime in ns). A folder: (absolute
    path, its file count, a hash of every file's relative path, size and mtime), since editing a file
    inside it changes neither the folder's own size nor its mtime."""
    if not os.path.isdir(path):
        stat = os.stat(path)
        return os.path.abspath(path), stat.st_size, stat.st_mtime_ns
    digest, count = hashlib.sha256(), 0
    for root, folders, names in os.walk(path):
        folders.sort()
        for name in sorted(names):
            stat = os.stat(os.path.join(root, name))
            relative = os.path.relpath(os.path.join(root, name), path)
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
    return os.path.abspath(path), count, digest.hexdigest()


def cache_path(cache_dir: str | None, name: str, key: str) -> str:
    return os.path.join(cache_dir or default_cache_dir(), f"{name}-{key[:16]}.npz")


def load_or_build(
    path: str, build: Callable[[], dict[str, np.ndarray]], expected: Callable[[dict[str, np.ndarray]], str | None]
) -> dict[str, np.ndarray]:
    """Returns the arrays stored at `path`, or builds, stores and returns them.

    A file that cannot be read back whole (a crash during an earlier write, a disk error), or
    whose arrays `expected` finds wrong (it returns what is wrong, or None), is rebuilt rather
    than trusted. The temporaries that killed writers of `path` left over an hour ago are removed.
    """
    folder, name = os.path.split(path)
    files.remove_stale_temporaries(folder, (name,), older_than_sec=_STALE_AFTER_SEC)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        problem = expected(arrays)
        if problem is None:
            return arrays
        logger.warning("rebuilding the cache %s: %s", path, problem)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        pass
    try:
        files.require_writable(os.path.dirname(path))
    except StorageError as e:
        logger.warning("%s; going on without the cache (every run decodes the data again)", e)
        return build()
    arrays = build()
    try:
        files.write_atomically(path, lambda f: np.savez(f, **arrays))
    except OSError as e:  # a full disk: the arrays are built, so the run goes on
        logger.warning("could not write the cache %s (%s); going on without it", path, e.strerror or e)
    return arrays


def arrays_problem(arrays: dict[str, np.ndarray], shapes: dict[str, tuple], dtypes: dict[str, str]) -> str | None:
    """What is wrong with cached `arrays` given each array's expected shape (None: any length along
    that axis; one length shared by every array whose shape starts with "n") and dtype kind."""
    missing = sorted(set(shapes) - set(arrays))
    if missing:
        return f"no array {missing[0]!r}"
    lengths = set()
    for name, shape in shapes.items():
        actual = arrays[name].shape
        if len(actual) != len(shape) or any(want not in (None, "n", got) for want, got in zip(shape, actual)):
            return f"{name!r} has shape {actual}, expected {shape}"
        if arrays[name].dtype.kind != dtypes[name]:
            return f"{name!r} has dtype {arrays[name].dtype}"
        if shape and shape[0] == "n":
            lengths.add(actual[0])
    if len(lengths) > 1 or 0 in lengths:
        return f"arrays of lengths {sorted(lengths)}, expected one positive length"
    return None
