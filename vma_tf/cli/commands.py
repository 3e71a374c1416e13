"""Running an entry point: absl's app.run, with a --help that shows the command's own flags."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

from vma_tf.cli import flagfiles
from vma_tf.errors import UserInputError

HELP_ARGUMENTS = ("--help", "-h", "-?", "--helpshort")


def run(main: Callable[[list[str]], None], module_name: str, description: str) -> None:
    """app.run(main), each --flagfile expanded first (vma_tf/cli/flagfiles.py). `--help` instead
    prints `description` and the flags that `module_name` defines, each with its default and one
    line of documentation, and exits 0 (absl's own lists none of them, since they are not defined
    in the script that runs, and exits 1)."""
    try:
        sys.argv = flagfiles.expand(sys.argv)
    except UserInputError as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
    if any(argument in HELP_ARGUMENTS for argument in sys.argv[1:]):
        print(description.strip() + "\n")
        listing = flags.FLAGS.module_help(module_name).strip().splitlines()
        print("\n".join(line for line in listing if line != f"{module_name}:"))
        print("\n--flagfile=FILE reads flags from FILE, one per line; --helpfull lists absl's flags too.")
        sys.exit(0)
    app.run(lambda argv: main(_with_plain_console_lines(argv)))


def main_of(work: Callable[[], None]) -> Callable[[list[str]], None]:
    """An absl main that runs `work` (which reads the flags) and ends a UserInputError in one line."""

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:
            work()
        except UserInputError as e:
            sys.exit(f"{os.path.basename(argv[0])}: error: {e}")

    return main


class _PlainFormatter(logging.Formatter):
    """A console line is the message (warnings and errors say so), without absl's prefix of
    level, date, time, thread and source line, which filled half of each progress line."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def _with_plain_console_lines(argv: list[str]) -> list[str]:
    """Plain console lines unless --verbose (every command defines it) asks for absl's full ones."""
    if "verbose" not in flags.FLAGS or not flags.FLAGS.verbose:
        absl_logging.get_absl_handler().setFormatter(_PlainFormatter())
    return argv
