"""The ``nnseg-nb`` command: one subcommand per nnU-Net stage, each a thin call into the library.

    nnseg-nb --help
    nnseg-nb <subcommand> --help

Subcommands mirror nnU-Net's ``nnUNetv2_*`` scripts. Each one is a pair of functions,
``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (the call), registered here in ``SUBCOMMANDS``.
A user error (:class:`UserError`, ``ValueError``, ``OSError`` such as a missing file) is printed as
one readable line per problem and exits 1; there is never a traceback for bad input.

The package, one module per pipeline stage: ``data`` (demo-data, convert, verify), ``planning``
(fingerprint, plan, preprocess), ``training`` (train, cv), ``inference`` (predict, evaluate,
determine-/apply-postprocessing, ensemble, find-best-configuration), ``notebooks`` (run, batch, demo,
record), ``common`` (:class:`UserError`, how paths are shown). ``python -m nnseg_nb.cli`` runs
``__main__``, which calls :func:`main`, as the ``nnseg-nb`` console script does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from nnseg_nb.cli.common import UserError, _shown
from nnseg_nb.cli.data import _add_convert_parser, _add_demo_data_parser, _add_verify_parser
from nnseg_nb.cli.inference import (
    _add_apply_postprocessing_parser,
    _add_determine_postprocessing_parser,
    _add_ensemble_parser,
    _add_evaluate_parser,
    _add_find_best_configuration_parser,
    _add_predict_parser,
)
from nnseg_nb.cli.notebooks import _add_batch_parser, _add_demo_parser, _add_record_parser, _add_run_parser
from nnseg_nb.cli.planning import _add_fingerprint_parser, _add_plan_parser, _add_preprocess_parser
from nnseg_nb.cli.training import _add_cv_parser, _add_train_parser

__all__ = ["SUBCOMMANDS", "UserError", "_shown", "build_parser", "main"]


# --- registry: name -> add_parser, in the order --help lists them ---------------------------------
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "verify": _add_verify_parser,
    "convert": _add_convert_parser,
    "fingerprint": _add_fingerprint_parser,
    "plan": _add_plan_parser,
    "preprocess": _add_preprocess_parser,
    "train": _add_train_parser,
    "run": _add_run_parser,
    "batch": _add_batch_parser,
    "demo": _add_demo_parser,
    "demo-data": _add_demo_data_parser,
    "record": _add_record_parser,
    "evaluate": _add_evaluate_parser,
    "determine-postprocessing": _add_determine_postprocessing_parser,
    "apply-postprocessing": _add_apply_postprocessing_parser,
    "ensemble": _add_ensemble_parser,
    "find-best-configuration": _add_find_best_configuration_parser,
    "predict": _add_predict_parser,
    "cv": _add_cv_parser,
}


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
    except BrokenPipeError:  # `nnseg-nb verify 901 | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush would fail again
        return 1
    except (ValueError, OSError) as e:  # OSError: missing files, permissions, a full disk
        for line in str(e).splitlines() or [type(e).__name__]:  # several problems: one line each
            print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
