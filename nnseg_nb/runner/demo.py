"""The demo: build the demo datasets, run every guided notebook on its quick profile, write an index.

    from nnseg_nb.runner.demo import run_demo
    index = run_demo()                           # -> runs/demo/<notebook>/..., index.json and index.md
    [(e["notebook"], e["status"], e["headline"]) for e in index["notebooks"]]

>>> headline({"dice": 0.8123, "n_cases": 4})
{'dice': 0.8123, 'n_cases': 4}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from nnseg_nb import paths
from nnseg_nb.runner.execute import (
    PathLike,
    _check_parameters,
    data_root_env,
    list_notebooks,
    notebook_parameters,
    run_recorded,
)
from nnseg_nb.utils import atomic_write_json, to_builtin

# --- the demo -----------------------------------------------------------------------------------


def headline(results: Mapping[str, Any] | None, most: int = 6) -> dict:
    """The figures to show for a run: ``results["headline"]`` if the notebook set one, else its
    top-level numbers, booleans and short strings (at most ``most``).

    >>> headline({"dice": 0.8123, "per_class": {"1": 0.8}, "configuration": "3d_fullres"})
    {'dice': 0.8123, 'configuration': '3d_fullres'}
    """
    if not results:
        return {}
    if isinstance(results.get("headline"), Mapping):
        return dict(results["headline"])
    scalars = {
        k: v
        for k, v in results.items()
        if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 40)
    }
    return dict(list(scalars.items())[:most])


def _format_figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write_index(out_root: Path, index: dict) -> None:
    atomic_write_json(out_root / "index.json", index)
    entries = index["notebooks"]
    n_ok = sum(e["status"] == "ok" for e in entries)
    lines = [
        "# nnseg_nb demo run",
        "",
        f"Created {index['created']}. Raw data in `{paths.display(index['env']['nnUNet_raw'])}`. "
        f"{len(entries)} of {index['n_notebooks']} notebooks run: {n_ok} ok, {len(entries) - n_ok} failed.",
        "",
        "| # | Notebook | Status | Duration | Headline figures |",
        "|---|---|---|---|---|",
    ]
    for i, e in enumerate(entries, 1):
        if e["status"] == "ok":
            figures = (
                ", ".join(f"{k} = {_format_figure(v)}" for k, v in e["headline"].items())
                or "(no results.json)"
            )
        else:
            figures = (e["error"] or "").replace("|", "\\|")
        link = (
            Path(e["output"]).relative_to(out_root).as_posix()
            if e["output"].startswith(str(out_root))
            else e["output"]
        )
        lines.append(
            f"| {i} | [{e['notebook']}]({link}) | {e['status']} | {e['duration_s']:.1f} s | {figures} |"
        )
    (out_root / "index.md").write_text("\n".join(lines) + "\n")


def run_demo(
    out_root: PathLike | None = None,
    notebooks_folder: PathLike | None = None,
    parameters: Mapping[str, Any] | None = None,
    kernel_name: str = "python3",
    timeout: float | None = None,
    on_result: Callable[[dict], None] | None = None,
    data_root: PathLike | None = None,
) -> dict:
    """Build the demo datasets and run every guided notebook headless, in order, on its quick profile.

    The data is the same as the CLI's and the notebooks' (one data root, :mod:`nnseg_nb.paths`):
    the demo datasets are built there (kept when up to date) and every kernel gets
    ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` pointing at those roots (the caller's
    environment is left alone), so later notebooks find what the earlier ones made. A failed
    notebook is recorded and the demo goes on.

    Args:
        out_root: one folder per notebook, ``index.json`` and ``index.md`` (rewritten after every
            notebook); default ``runs/demo`` in the project folder (:func:`nnseg_nb.paths.runs_root`).
        notebooks_folder: where the ``NN_*.py`` notebooks are (default: the repository checkout).
        parameters: extra values, given to each notebook that declares them (``profile`` is "quick").
        kernel_name, timeout: as for :func:`run_notebook`.
        on_result: called with each notebook's index entry when it finishes.
        data_root: a separate data root for this demo (``raw``, ``preprocessed`` and ``results``
            inside it) instead of the usual roots, e.g. to start from nothing.

    Returns:
        The index: ``{"created", "out_root", "env", "datasets", "n_notebooks", "notebooks": [entry]}``,
        each entry ``{"notebook", "path", "status", "duration_s", "output", "headline", "results", "error"}``.
    """
    out_root = Path(out_root or paths.runs_root() / "demo").resolve()
    notebooks = list_notebooks(notebooks_folder)
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    extra = dict(parameters or {})
    _check_parameters("the demo notebooks", extra, {name: 0 for d in declared.values() for name in d})
    if data_root is None:
        env = data_root_env()
    else:
        data_root = Path(data_root).resolve()
        env = {
            var: str(data_root / sub)
            for var, sub in zip(paths.ROOT_VARIABLES, ("raw", "preprocessed", "results"))
        }
    for folder in env.values():
        Path(folder).mkdir(parents=True, exist_ok=True)

    from nnseg_nb.demo_data import build_demo_datasets  # imported here: the runner works without it

    datasets = build_demo_datasets(Path(env["nnUNet_raw"]))
    index = {
        "created": datetime.now().isoformat(timespec="seconds"),
        "out_root": str(out_root),
        "env": env,
        "datasets": _jsonable(datasets),
        "n_notebooks": len(notebooks),
        "notebooks": [],
    }
    for notebook in notebooks:
        wanted = {"profile": "quick", **extra}
        params = {k: v for k, v in wanted.items() if k in declared[notebook]}
        result = run_recorded(
            str(notebook),
            str(out_root / notebook.stem),
            params,
            params,
            kernel_name=kernel_name,
            timeout=timeout,
            env=env,
        )
        entry = {
            "notebook": notebook.stem,
            "path": str(notebook),
            "status": result.status,
            "duration_s": result.duration_s,
            "output": result.output,
            "headline": headline(result.results),
            "results": result.results,
            "error": result.error,
        }
        index["notebooks"].append(to_builtin(entry))
        _write_index(out_root, index)
        if on_result is not None:
            on_result(entry)
    if not notebooks:
        _write_index(out_root, index)
    return index


def _jsonable(value: Any) -> Any:
    value = to_builtin(value)
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)
