"""Running an entry point: absl's app.run, with a --help that shows the command's own flags."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags

HELP_ARGUMENTS = ("--help", "-h", "-?", "--helpshort")


def run(main: Callable[[list[str]], None], module_name: str, description: str) -> None:
    """app.run(main). `--help` instead prints `description` and the flags that `module_name`
    defines, each with its default and one line of documentation, and exits 0 (absl's own lists
    none of them, since they are not defined in the script that runs, and exits 1)."""
    if any(argument in HELP_ARGUMENTS for argument in sys.argv[1:]):
        print(description.strip() + "\n")
        listing = flags.FLAGS.module_help(module_name).strip().splitlines()
        print("\n".join(line for line in listing if line != f"{module_name}:"))
        print("\n--flagfile=FILE reads flags from FILE, one per line; --helpfull lists absl's flags too.")
        sys.exit(0)
    app.run(main)
