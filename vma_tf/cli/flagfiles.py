"""Flagfiles by name from anywhere, each read relative to its own folder.

absl opens a flagfile's nested `--flagfile=NAME` relative to the working directory, so the shipped
configurations that build on another (omniglot_gmn_avg1.flags reads omniglot_gmn.flags) worked
only from the repository root, and `vma-train --flagfile=omniglot.flags` only inside it. The entry
points therefore expand every `--flagfile` argument here, before absl sees the command line, into
the flags it holds, in order, with absl's rules for comments and blank lines. A flagfile is looked
for where it is named (the working directory for the command line, the including file's folder
for a nested one), then among the shipped configurations (`vma_tf/configs/*.flags`, installed with
the package; also found by name without `.flags`).
"""

from __future__ import annotations

import os

from vma_tf.errors import UserInputError

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
_DIRECTIVES = ("--flagfile", "-flagfile")


def shipped_names() -> list[str]:
    """The shipped configurations' file names (`omniglot.flags`, ...)."""
    return sorted(name for name in os.listdir(SHIPPED_DIR) if name.endswith(".flags"))


def locate(name: str, folder: str) -> str:
    """The flagfile `name` names, relative to `folder` or among the shipped configurations."""
    path = os.path.join(folder, os.path.expanduser(name))
    if os.path.isfile(path):
        return path
    for shipped in (name, f"{name}.flags"):
        if os.path.basename(shipped) == shipped and shipped in shipped_names():
            return os.path.join(SHIPPED_DIR, shipped)
    raise UserInputError(f"no flagfile {name} (in {folder or '.'}, or shipped: {', '.join(shipped_names())})")


def expand(argv: list[str]) -> list[str]:
    """argv with each `--flagfile=NAME` (or `--flagfile NAME`, one dash or two) replaced by the flags
    NAME holds. Arguments after `--` are left alone."""
    expanded, position = [argv[0]], 1
    while position < len(argv):
        argument = argv[position]
        if argument == "--":
            return expanded + argv[position:]
        name, position = _directive(argv, position)
        expanded += [argument] if name is None else _flags_in(locate(name, os.getcwd()), ())
    return expanded


def _directive(argv: list[str], position: int) -> tuple[str | None, int]:
    """(the flagfile that argv[position] names, or None; the position after it)."""
    argument = argv[position]
    if argument in _DIRECTIVES:
        if position + 1 == len(argv):
            raise UserInputError(f"{argument} needs a file name")
        return argv[position + 1], position + 2
    for directive in _DIRECTIVES:
        if argument.startswith(f"{directive}="):
            return argument[len(directive) + 1 :], position + 1
    return None, position + 1


def _flags_in(path: str, including: tuple[str, ...]) -> list[str]:
    """The flags of the flagfile at `path`, nested flagfiles expanded; `including`: the files that
    (transitively) include it, to name a cycle."""
    real = os.path.realpath(path)
    if real in including:
        raise UserInputError(f"flagfile {path} includes itself")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"cannot read flagfile {path} ({getattr(e, 'strerror', None) or e})") from None
    flags = []
    for line in lines:
        if not line.strip() or line.startswith(("#", "//")):
            continue
        name, _ = _directive([line.strip()], 0)
        if name is None:
            flags.append(line.strip())
        else:
            flags += _flags_in(locate(name.strip(), os.path.dirname(path)), (*including, real))
    return flags
