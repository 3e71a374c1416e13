"""TensorFlow's own log lines, hidden from the entry points' output unless asked for.

Importing TensorFlow prints about seven C++ lines (oneDNN, "Could not find cuda drivers",
"failed call to cuInit" on a machine without a GPU) before its log level is read, so
TF_CPP_MIN_LOG_LEVEL alone cannot hide them: the import runs with stderr captured, and
whatever else it printed (a Python warning, a traceback) is passed on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

VERBOSE_HELP = "Show TensorFlow's own log lines (also shown when TF_CPP_MIN_LOG_LEVEL is set)."
_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# A line of TensorFlow's C++ logging: "I0000 00:00:1795404888.525996   17125 port.cc:153] ...", its
# absl preamble, and the continuation of the CPU-feature notice.
_TENSORFLOW_LINE = re.compile(
    r"([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:.*rebuild TensorFlow)"
)


def _is_tensorflow_line(line: str) -> bool:
    return bool(_TENSORFLOW_LINE.match(line))


class _TensorFlowInfo(logging.Filter):
    """Drops INFO lines that TensorFlow's own modules log through absl ("Sharding callback duration")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}tensorflow{os.sep}" not in record.pathname


@contextlib.contextmanager
def quiet_tensorflow(verbose: bool) -> Iterator[None]:
    """Around the import of TensorFlow (and modules that import it): unless `verbose` or the user
    set TF_CPP_MIN_LOG_LEVEL, hide TensorFlow's C++ log lines and its Python INFO lines."""
    if verbose or _LEVEL_VARIABLE in os.environ:
        yield
        return
    os.environ[_LEVEL_VARIABLE] = "3"  # later C++ lines: errors such as cuInit's are logged, not raised
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logging.getLogger("absl").addFilter(_TensorFlowInfo())
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _is_tensorflow_line(line)))
            sys.stderr.flush()
