"""The ``nnseg-nb`` command: one subcommand per nnU-Net stage, each a thin call into the library.

    nnseg-nb --help
    nnseg-nb <subcommand> --help

Subcommands mirror nnU-Net's ``nnUNetv2_*`` scripts. Each one is a pair of functions here,
``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (the call), registered in ``SUBCOMMANDS``.
A user error (:class:`UserError`, ``ValueError``, ``FileNotFoundError``) is printed as one readable
line per problem and exits 1; there is never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """An error in what the user asked for; ``problems`` are printed one per line."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# --- subcommands (each: _add_<name>_parser + _cmd_<name>) -------------------------------------


# --- registry: name -> (add_parser, help) -------------------------------------------------------
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnseg-nb",
        description="nnU-Net v2, faithful and readable: datasets, planning, preprocessing, notebooks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for add_parser in SUBCOMMANDS.values():
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
