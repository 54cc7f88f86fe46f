"""Record a notebook's "golden" outputs: run its ``.py`` as nbval will and store them in its ``.ipynb``.

    from nnseg_nb.runner.record import record_outputs
    record_outputs("notebooks/01_data.py")       # -> notebooks/01_data.ipynb, outputs without widget views

The golden outputs are what readers see on GitHub and what nbval compares a fresh run against.
"""

from __future__ import annotations

from pathlib import Path

from nnseg_nb.runner.execute import (
    KERNEL_ENV,
    NotebookError,
    PathLike,
    _cell_line,
    _kernel_manager_class,
    _load,
)


def record_outputs(notebook: PathLike, kernel_name: str = "python3", timeout: float | None = None) -> Path:
    """Run a notebook's ``.py`` as nbval will (kernel in the notebook's folder, default parameters) and
    store the outputs in its paired ``.ipynb``: the "golden" outputs that readers and nbval see.

    Unlike papermill it adds no cells or metadata, and unlike ``jupyter execute`` it leaves the
    widget state out (an image widget's frames would bloat the notebook), and with it the widget
    views that could never render without it: a widget displayed with a static picture
    (``nnseg_nb.viz`` widgets) keeps only the picture, which is what a reader sees before running
    the notebook (instead of a ``VBox(children=...)`` repr); cells tagged
    ``skip-execution`` or ``raises-exception`` behave as in nbclient. Returns the ``.ipynb`` path;
    raises :class:`NotebookError` if a cell fails (the ``.ipynb`` is then left as it was).

    Example: ``record_outputs("notebooks/01_data.py")``, then ``jupytext --sync notebooks/01_data.py``.
    """
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    source = Path(notebook).with_suffix(".py")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such notebook source (.py)")
    nb = _load(source, kernel_name)
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=timeout,
        store_widget_state=False,
        resources={"metadata": {"path": str(source.parent.resolve())}},
        kernel_manager_class=_kernel_manager_class(KERNEL_ENV),
    )
    try:
        client.execute()
    except CellExecutionError as e:
        failed = [
            i
            for i, cell in enumerate(nb.cells)
            if any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        ]
        index = failed[-1] if failed else None
        source_text = nb.cells[index].source if index is not None else ""
        raise NotebookError(
            source,
            e.ename,
            e.evalue,
            index,
            None,
            _cell_line(source, source_text),
            [line for line in source_text.splitlines() if line.strip()][:3],
        ) from None
    _drop_widget_views(nb)
    output = source.with_suffix(".ipynb")
    jupytext.write(nb, output, fmt="ipynb")
    return output


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _drop_widget_views(nb) -> None:
    """Remove widget views from the outputs: without the widget state nothing can render them, and
    a frontend that tries shows an error instead of the output's static picture or text."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
