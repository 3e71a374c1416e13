"""Writing a run's files safely: atomic replacement through unique temporaries, and one writer per logdir.

Temporaries are created with O_CREAT | O_EXCL under a fresh name (`tempfile`), so a symlink planted
at a predictable name is never followed; they live beside their target, so the final rename is
atomic, and they are removed when the write fails (a full disk) or, left by a killed process, by
the next run that holds the logdir's lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from vma_tf.errors import StorageError, UserInputError

TEMPORARY_SUFFIX = ".tmp"
LOCK_FILE = "train.lock"


def require_writable(folder: str) -> None:
    """Creates `folder` if needed and checks that a file can be written in it; raises StorageError
    otherwise, before any work is done."""
    if os.path.islink(folder) and not os.path.exists(folder):
        raise StorageError(f"cannot write in {folder}: it is a symbolic link to nothing, or to itself")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise StorageError(f"cannot write in {folder} ({e.strerror or e})") from None


def with_umask_mode(path: str) -> str:
    """`path` (made by tempfile, which gives 0600 files and 0700 folders) with the mode of a file
    or folder created the usual way, under the user's umask: a serving account can read an export."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)
    return path


def write_atomically(path: str, content: str | Callable[[BinaryIO], None]) -> None:
    """Replaces `path` by `content` (text, or a function writing to a binary file) in one step:
    readers see the old file or the new one, never a part. The temporary is `<name>.<random>.tmp`
    beside it (remove_stale_temporaries finds what a killed writer left)."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f"{name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with_umask_mode(temporary)
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def temporary_folder_beside(path: str) -> str:
    """A new, empty folder named `<path>.<random>.tmp` beside `path`, with the umask's mode."""
    directory, name = os.path.split(os.path.abspath(path))
    return with_umask_mode(tempfile.mkdtemp(dir=directory, prefix=f"{name}.", suffix=TEMPORARY_SUFFIX))


# The staging folder of an output set, `<OUTPUT_SET_STAGING>.<random>.tmp` in the outputs' folder.
OUTPUT_SET_STAGING = "outputs"


@contextlib.contextmanager
def output_set(folder: str) -> Iterator[str]:
    """A staging folder for outputs that belong together (an eval mode's JSON, Markdown and figures).

    The block writes them into it under their final names. When it ends without error, they replace
    the files of the same names in `folder` one after another, with nothing left to compute. It all
    runs under an exclusive lock on `folder`, so two writers' sets never interleave. An error or a
    kill in the block leaves `folder` as it was; a killed writer's staging folder is removed by the
    next one. A write that fails (a full disk) raises StorageError naming the folder."""
    require_writable(folder)
    lock = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for another writer's set
        # Under the lock no other writer is staging, so any staging folder here is a killed one's.
        remove_stale_temporaries(folder, (OUTPUT_SET_STAGING,))
        staging = temporary_folder_beside(os.path.join(folder, OUTPUT_SET_STAGING))
        try:
            yield staging
            for name in sorted(os.listdir(staging)):
                os.replace(os.path.join(staging, name), os.path.join(folder, name))
        except OSError as e:
            raise StorageError(f"cannot write the outputs in {folder} ({e.strerror or e})") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(lock)


def remove_stale_temporaries(folder: str, owners: tuple[str, ...], older_than_sec: float = 0.0) -> list[str]:
    """Removes what killed writers left in `folder`: the temporaries of the files and folders named
    in `owners` (`<owner>.<random>.tmp`, as `write_atomically` and `temporary_folder_beside` name
    them) and TensorFlow's checkpoint staging folders (`ckpt-<step>_temp`); nothing else, whatever
    its name. Only for a folder no other process writes (the holder of its logdir's lock), or with
    `older_than_sec` longer than any writer takes: then only temporaries last modified that long
    ago. Returns the removed paths."""
    now = time.time()
    stale = [path for path in glob.glob(os.path.join(glob.escape(folder), "*"))
             if is_temporary_of(os.path.basename(path), owners)
             and now - os.lstat(path).st_mtime >= older_than_sec]
    for path in stale:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return stale


def is_temporary_of(name: str, owners: tuple[str, ...]) -> bool:
    """Whether `name` is a temporary that a writer of one of `owners` (or TensorFlow's checkpoint
    writer) may leave behind."""
    if re.fullmatch(r"ckpt-\d+_temp", name):
        return True
    return any(name.startswith(f"{owner}.") and name.endswith(TEMPORARY_SUFFIX)
               and len(name) > len(owner) + 1 + len(TEMPORARY_SUFFIX) for owner in owners)


@contextlib.contextmanager
def exclusive_logdir(logdir: str) -> Iterator[None]:
    """Holds `logdir/train.lock` (an advisory lock the kernel drops when the process dies, so a
    killed run never leaves it stuck); raises UserInputError naming the holder when another
    process has it."""
    path = os.path.join(logdir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        reason = "is a symbolic link" if os.path.islink(path) else f"cannot be opened ({e.strerror or e})"
        raise UserInputError(f"{path} {reason}: a run's lock must be its own file; remove it") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserInputError(f"{logdir} is in use by process {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
