"""Run one notebook over a parameter grid, several kernels at a time, and collect a table of results.

    from nnseg_nb.runner.batch import run_batch
    rows = run_batch("notebooks/03_train.py", {"configuration": ["2d", "3d_fullres"], "fold": [0, 1]},
                     workers=2)                  # 4 runs, 2 kernels at a time
    pandas.DataFrame(rows)                       # one row per run: parameters, status, results

Every run gets ``<batch>/<parameter slug>/`` (see :func:`run_batch`); the grid helpers parse what the
command line gives:

>>> parse_grid_item("fold=0,1")
('fold', [0, 1])
>>> expand_grid({"fold": [0, 1], "lr": [0.01]})
[{'fold': 0, 'lr': 0.01}, {'fold': 1, 'lr': 0.01}]
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from nnseg_nb import paths
from nnseg_nb.runner.execute import (
    PathLike,
    RunResult,
    _check_parameters,
    notebook_parameters,
    parameter_slug,
    run_recorded,
)
from nnseg_nb.utils import atomic_write_json, to_builtin

# --- small pure helpers -------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """Type-guess a command-line value like papermill's ``-p``, plus JSON lists and objects.

    >>> [parse_value(v) for v in ["True", "None", "3", "0.5", "[64,64,64]", "3d_fullres"]]
    [True, None, 3, 0.5, [64, 64, 64], '3d_fullres']
    """
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def parse_grid_item(text: str) -> tuple[str, list]:
    """``"NAME=V1,V2"`` -> ``(NAME, [V1, V2])``; commas inside brackets or quotes don't split.

    >>> parse_grid_item("patch_size=[64,64],[32,32]")
    ('patch_size', [[64, 64], [32, 32]])
    >>> parse_grid_item("fold=0,1")
    ('fold', [0, 1])
    """
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values:
        raise ValueError(f"grid entry {text!r} must look like NAME=VALUE1,VALUE2")
    parts, depth, quote, current = [], 0, None, ""
    for char in values:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return name.strip(), [parse_value(part.strip()) for part in parts]


def expand_grid(grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> list[dict]:
    """The runs of a grid: the cartesian product of a ``{name: [values]}`` dict (first name varies
    slowest), or a list of parameter dicts taken as they are."""
    if isinstance(grid, Mapping):
        for name, values in grid.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise ValueError(
                    f"grid values must be a list: {name}={values!r} (write [{values!r}] for one value)"
                )
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    return [dict(params) for params in grid]


# --- batches ------------------------------------------------------------------------------------

ROW_FIELDS = (
    "run",
    "status",
    "duration_s",
    "error",
    "run_dir",
)  # in every batch row, besides params and results


def _row(run: str, params: Mapping[str, Any], result: RunResult) -> dict:
    """One flat table row: run name, parameters, status, results (``results.<k>`` where a key clashes)."""
    row = {"run": run, **params, "status": result.status, "duration_s": result.duration_s}
    for key, value in (result.results or {}).items():
        row[f"results.{key}" if key in row else key] = value
    row.update(error=result.error, run_dir=str(Path(result.output).parent))
    return to_builtin(row)


def run_batch(
    notebook: PathLike,
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    workers: int = 1,
    out_root: PathLike | None = None,
    name: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    kernel_name: str = "python3",
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run a notebook once per point of a parameter grid and collect every run's results.

    Args:
        notebook: ``.py`` or ``.ipynb``.
        grid: ``{"configuration": ["2d", "3d_fullres"], "fold": [0, 1]}`` (cartesian product, 4 runs)
            or a list of parameter dicts.
        workers: runs at a time, each in its own process and kernel (spawned; on a GPU machine keep
            one per GPU).
        out_root, name: the batch folder is ``out_root/name`` (out_root: :func:`nnseg_nb.paths.runs_root`,
            name: the notebook's stem); each run
            gets ``<batch>/<parameter slug>/`` with ``executed.ipynb``, ``status.json`` and ``results.json``.
        parameters: fixed values for every run (the grid wins on a clash).
        kernel_name, timeout, env: as for :func:`run_notebook`.
        on_result: called with each row as its run finishes (e.g. to print progress).

    Returns:
        One flat dict per run, in grid order (``run``, the parameters, ``status``, ``duration_s``,
        the results.json entries, ``error``, ``run_dir``); also written to
        ``<batch>/batch_results.json`` and, as runs finish, ``<batch>/batch_results.jsonl``.
        ``pandas.DataFrame(rows)`` makes the table. A failed run is a row with status "error".

    Example::

        rows = run_batch("notebooks/03_train.py", {"fold": [0, 1, 2, 3, 4]}, workers=2)
    """
    notebook = Path(notebook).resolve()
    runs = expand_grid(grid)
    if not runs:
        raise ValueError("the grid has no runs")
    fixed = dict(parameters or {})
    _check_parameters(notebook, set(fixed).union(*runs), notebook_parameters(notebook))
    batch_dir = Path(out_root or paths.runs_root()).resolve() / (name or notebook.stem)
    names = [parameter_slug(params) or f"run{i:03d}" for i, params in enumerate(runs)]
    names = [n if names.count(n) == 1 else f"{n}_{i:03d}" for i, n in enumerate(names)]
    batch_dir.mkdir(parents=True, exist_ok=True)
    jsonl = batch_dir / "batch_results.jsonl"
    jsonl.write_text("")
    common = dict(kernel_name=kernel_name, timeout=timeout, env=dict(env or {}))
    jobs = [
        dict(
            notebook=str(notebook),
            run_dir=str(batch_dir / n),
            parameters={**fixed, **params},
            status_params=params,
            **common,
        )
        for n, params in zip(names, runs)
    ]

    rows: dict[int, dict] = {}

    def collect(i: int, result: RunResult) -> None:
        rows[i] = _row(names[i], runs[i], result)
        with jsonl.open("a") as f:
            f.write(json.dumps(rows[i]) + "\n")
        if on_result is not None:
            on_result(rows[i])

    if workers <= 1:
        for i, job in enumerate(jobs):
            collect(i, run_recorded(**job))
    else:
        context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads or CUDA
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(run_recorded, **job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                collect(futures[future], future.result())
    ordered = [rows[i] for i in range(len(jobs))]
    atomic_write_json(batch_dir / "batch_results.json", ordered)
    return ordered
