"""Subcommands that execute the guided notebooks: ``run``, ``batch``, ``demo``, ``record``.

    nnseg-nb run notebooks/02_fingerprint_and_planning.ipynb -p seed 1
    nnseg-nb batch notebooks/04_training.ipynb --grid epochs=2,4
    nnseg-nb demo

Each subcommand is a pair, ``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (a thin call into
:mod:`nnseg_nb.runner`); the helpers above them share the ``-p NAME VALUE`` notebook options and the
one-line result each run prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nnseg_nb.cli.common import UserError, _shown

# --- notebooks: run / batch / demo / record (nnseg_nb.runner) ----------------------------------


def _add_notebook_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter; VALUE is typed like papermill's (True, 3, 0.5, [64,64], text)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds")


def _notebook_parameters(pairs: list[list[str]]) -> dict:
    from nnseg_nb.runner import parse_value

    return {name: parse_value(value) for name, value in pairs}


def _result_line(status: str, name: str, duration_s: float, figures: dict) -> str:
    from nnseg_nb.runner import headline

    shown = "  ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in headline(figures).items()
    )
    return f"{status:5s} {name}  {duration_s:.1f} s  {shown}".rstrip()


def _add_run_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run one notebook headless and collect its results.json",
        description="Run a notebook (.py or .ipynb) with papermill in a fresh kernel.",
    )
    parser.add_argument("notebook", help="notebooks/NN_name.py or .ipynb")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="executed notebook (default runs/<name>/<parameters or time>/executed.ipynb)",
    )
    parser.add_argument(
        "--cwd", default=None, help="the kernel's working directory (default: the run folder)"
    )
    parser.add_argument("--log-output", action="store_true", help="stream the cells' output while running")
    _add_notebook_options(parser)
    parser.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from nnseg_nb.runner import NotebookError, run_notebook

    try:
        result = run_notebook(
            args.notebook,
            output=args.output,
            parameters=_notebook_parameters(args.parameter),
            cwd=args.cwd,
            timeout=args.timeout,
            log_output=args.log_output,
        )
    except NotebookError as e:
        raise UserError(e.summary) from None
    print(_result_line("ok", args.notebook, result.duration_s, result.results or {}))
    print(f"executed notebook: {_shown(result.output)}")
    return 0


def _add_batch_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="run a notebook over a parameter grid, in parallel",
        description="Run a notebook once per combination of the --grid values; "
        "results go to <out>/<name>/batch_results.json(l).",
    )
    parser.add_argument("notebook")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="values of one parameter (repeat for a cartesian product); JSON lists allowed",
    )
    parser.add_argument("-j", "--workers", type=int, default=1, help="runs at a time (one kernel each)")
    parser.add_argument(
        "-o", "--out", default=None, help="folder holding the batch folder (default runs/ of the project)"
    )
    parser.add_argument("--name", default=None, help="batch folder name (default: the notebook's name)")
    _add_notebook_options(parser)
    parser.set_defaults(func=_cmd_batch)


def _cmd_batch(args) -> int:
    from nnseg_nb.runner import ROW_FIELDS, parse_grid_item, run_batch

    if not args.grid:
        raise UserError("give at least one --grid NAME=V1,V2")
    grid = dict(parse_grid_item(item) for item in args.grid)
    grid_names = list(grid)

    def report(row: dict) -> None:
        params = " ".join(f"{k}={row[k]}" for k in grid_names)
        print(
            f"error {params}  {row['error']}"
            if row["status"] != "ok"
            else _result_line(
                "ok",
                params,
                row["duration_s"],
                {k: v for k, v in row.items() if k not in (*grid_names, *ROW_FIELDS)},
            ),
            flush=True,
        )

    rows = run_batch(
        args.notebook,
        grid,
        workers=args.workers,
        out_root=args.out,
        name=args.name,
        parameters=_notebook_parameters(args.parameter),
        timeout=args.timeout,
        on_result=report,
    )
    failed = sum(row["status"] != "ok" for row in rows)
    batch_dir = Path(rows[0]["run_dir"]).parent
    print(
        f"{len(rows)} runs: {len(rows) - failed} ok, {failed} failed -> {_shown(batch_dir / 'batch_results.json')}"
    )
    return 1 if failed else 0


def _add_demo_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="build the demo data and run every guided notebook (quick profile)",
        description="Build the demo datasets, run notebooks/NN_*.py in order, "
        "and write index.md / index.json.",
    )
    parser.add_argument(
        "-o", "--out", default=None, help="output folder (default runs/demo of the project: the clone's root)"
    )
    parser.add_argument(
        "--notebooks", default=None, help="folder of the notebooks (default: the repository's)"
    )
    _add_notebook_options(parser)
    parser.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from nnseg_nb.paths import describe_roots, project_root
    from nnseg_nb.runner import run_demo

    print(f"project folder: {project_root()}\n{describe_roots()}", flush=True)

    def report(entry: dict) -> None:
        print(
            _result_line("ok", entry["notebook"], entry["duration_s"], entry["headline"])
            if entry["status"] == "ok"
            else f"error {entry['error']}",
            flush=True,
        )

    index = run_demo(
        args.out,
        notebooks_folder=args.notebooks,
        parameters=_notebook_parameters(args.parameter),
        timeout=args.timeout,
        on_result=report,
    )
    failed = sum(e["status"] != "ok" for e in index["notebooks"])
    print(
        f"{len(index['notebooks'])} notebooks: {failed} failed -> {_shown(Path(index['out_root']) / 'index.md')}"
    )
    return 1 if failed else 0


def _add_record_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "record",
        help="store a notebook's golden outputs in its paired .ipynb",
        description="Run notebooks/NN_name.py in its folder with default parameters "
        "(as nbval does) and write the outputs into NN_name.ipynb.",
    )
    parser.add_argument("notebooks", nargs="+", help="the .py sources")
    parser.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds")
    parser.set_defaults(func=_cmd_record)


def _cmd_record(args) -> int:
    from nnseg_nb.runner import NotebookError, record_outputs

    for notebook in args.notebooks:
        try:
            print(f"recorded {record_outputs(notebook, timeout=args.timeout)}", flush=True)
        except NotebookError as e:
            raise UserError(e.summary) from None
    return 0
