"""Progress of long evaluations: a bar with an ETA on the terminal, and the pieces already computed,
kept on disk so that an interrupted evaluation resumes where it stopped."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from vma_tf import files


def progress_bar(total: int, description: str) -> tqdm:
    """A bar over `total` units of work; call `.update()` per unit and use it as a context manager.
    Silent when stderr is not a terminal (a log file or a test then gets no control characters)."""
    return tqdm(total=total, desc=description, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)


class KeptPieces:
    """The JSON-ready pieces of one evaluation computed so far (e.g. one C of a table), written to
    `path` after each, so that a rerun after an interruption computes only the rest. A piece is a
    function of its key and of `identity` (the checkpoint and the evaluation's settings), so a kept
    piece is the one the rerun would compute; a file of another identity, or one that is not such a
    record, is ignored and replaced. Without a path nothing is kept."""

    def __init__(self, path: str | None = None, identity: dict | None = None):
        self.path = path
        self.identity = json.loads(json.dumps(identity))  # as it reads back: tuples become lists
        self.pieces: dict[str, Any] = {}
        if path and os.path.isfile(path):
            with open(path) as f, contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
                kept = json.load(f)
                if kept.get("identity") == self.identity:
                    self.pieces = dict(kept["pieces"])

    def get(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(the piece `key`, whether it was kept from before): computed and written when new. The
        value is returned as it reads back from the file, so a resumed evaluation's result equals
        an uninterrupted one's."""
        if key in self.pieces:
            return self.pieces[key], True
        self.pieces[key] = json.loads(json.dumps(compute()))
        if self.path:
            files.write_atomically(self.path, json.dumps({"identity": self.identity, "pieces": self.pieces}))
        return self.pieces[key], False

    def discard(self) -> None:
        """Removes the file, once the evaluation's outputs are written."""
        if self.path and os.path.isfile(self.path):
            os.remove(self.path)
