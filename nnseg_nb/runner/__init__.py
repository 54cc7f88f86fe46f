"""Run the guided notebooks headless: one run, a parameter grid, or the whole demo.

Notebooks are executed by papermill in a fresh Jupyter kernel; each run gets its own folder under
``runs/`` (git-ignored) holding the executed notebook and the ``results.json`` that the notebook
writes into its ``out_dir`` parameter::

    from nnseg_nb.runner import run_notebook, run_batch, run_demo
    result = run_notebook("notebooks/01_data.py", parameters={"profile": "quick"})
    result.results                               # the notebook's results.json, as a dict
    rows = run_batch("notebooks/03_train.py", {"configuration": ["2d", "3d_fullres"], "fold": [0, 1]},
                     workers=2)                  # 4 runs, 2 kernels at a time
    pandas.DataFrame(rows)                       # one row per run: parameters, status, results
    run_demo()                                   # demo data + every notebook -> runs/demo/index.md

A jupytext percent ``.py`` and an ``.ipynb`` are both accepted (papermill itself reads only
``.ipynb``). Parameter names are checked against the notebook's ``parameters`` cell before any
kernel starts. A failing cell raises :class:`NotebookError`, which names the cell and the error in
one line; the executed notebook keeps the full traceback.

One idea per module, all re-exported here: :mod:`~nnseg_nb.runner.execute` (one run: ``run_notebook``,
``NotebookError``, the kernel's environment), :mod:`~nnseg_nb.runner.batch` (grids, ``run_batch``),
:mod:`~nnseg_nb.runner.demo` (``run_demo`` and its index) and :mod:`~nnseg_nb.runner.record`
(``record_outputs``, the notebooks' golden outputs).

The parsing helpers run without a kernel:

>>> parameter_slug({"configuration": "3d_fullres", "fold": 0})
'configuration=3d_fullres_fold=0'
>>> expand_grid({"fold": [0, 1], "lr": [0.01]})
[{'fold': 0, 'lr': 0.01}, {'fold': 1, 'lr': 0.01}]
"""

from nnseg_nb.notebook import RESULTS_FILE
from nnseg_nb.runner.batch import ROW_FIELDS, expand_grid, parse_grid_item, parse_value, run_batch
from nnseg_nb.runner.demo import headline, run_demo
from nnseg_nb.runner.execute import (
    KERNEL_ENV,
    NotebookError,
    RunResult,
    data_root_env,
    default_output,
    list_notebooks,
    notebook_parameters,
    notebooks_folder,
    parameter_slug,
    run_notebook,
)
from nnseg_nb.runner.record import record_outputs

__all__ = [
    "KERNEL_ENV",
    "NotebookError",
    "ROW_FIELDS",
    "RunResult",
    "data_root_env",
    "default_output",
    "expand_grid",
    "headline",
    "list_notebooks",
    "notebook_parameters",
    "notebooks_folder",
    "parameter_slug",
    "parse_grid_item",
    "parse_value",
    "record_outputs",
    "run_batch",
    "run_demo",
    "run_notebook",
    "RESULTS_FILE",
]
