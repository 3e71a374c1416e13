"""Progress of long evaluations on the terminal: a bar with an ETA, silent when stderr is not a terminal
(a log file or a test then gets no control characters)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, description: str) -> tqdm:
    """A bar over `total` units of work; call `.update()` per unit and use it as a context manager."""
    return tqdm(total=total, desc=description, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)
