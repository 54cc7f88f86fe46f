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

The parsing helpers run without a kernel:

>>> parameter_slug({"configuration": "3d_fullres", "fold": 0})
'configuration=3d_fullres_fold=0'
>>> expand_grid({"fold": [0, 1], "lr": [0.01]})
[{'fold': 0, 'lr': 0.01}, {'fold': 1, 'lr': 0.01}]
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from nnseg_nb import paths
from nnseg_nb.notebook import RESULTS_FILE, read_results
from nnseg_nb.utils import atomic_write_json, to_builtin

PathLike = str | os.PathLike
# The kernel's environment on top of the caller's: quiet progress bars, matplotlib's inline backend
# (headless, yet figures stay in the executed notebook; "Agg" would drop every pyplot figure), and
# no debugger warning about frozen modules.
KERNEL_ENV = {
    "TQDM_DISABLE": "1",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}
_GUIDED_NOTEBOOK = re.compile(r"^\d{2}_[^.]+\.(py|ipynb)$")


# --- results and errors -------------------------------------------------------------------------


RunStatus = Literal["ok", "error"]  # status.json also says "running" while a run is under way


@dataclass
class RunResult:
    """What one notebook run left behind. ``results`` is its results.json (None if it wrote none)."""

    notebook: str
    output: str
    cwd: str
    parameters: dict
    status: RunStatus = "ok"
    duration_s: float = 0.0
    results: dict | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return to_builtin(asdict(self))


class NotebookError(RuntimeError):
    """A notebook run failed; ``summary`` says where and why in one line.

    Attributes: ``cell_index`` (0-based, in the source notebook), ``exec_count``, ``line`` (of the
    cell in a ``.py``), ``ename``/``evalue`` (the exception), ``source_head`` (first lines of the
    cell), ``output`` (executed notebook with the full traceback), ``result`` (a :class:`RunResult`).
    """

    def __init__(
        self,
        notebook: PathLike,
        ename: str,
        evalue: str,
        cell_index: int | None = None,
        exec_count: int | None = None,
        line: int | None = None,
        source_head: Sequence[str] = (),
        output: PathLike | None = None,
        result: RunResult | None = None,
    ):
        self.notebook, self.ename, self.evalue = str(notebook), ename, evalue
        self.cell_index, self.exec_count, self.line = cell_index, exec_count, line
        self.source_head, self.output, self.result = list(source_head), output, result
        super().__init__(self.details())

    @property
    def summary(self) -> str:
        where = "a cell" if self.cell_index is None else f"cell {self.cell_index}"
        if self.line is not None:
            where += f" (line {self.line})"
        first_line = (self.evalue.strip().splitlines() or [""])[0][:300]
        text = f"{self.notebook}: {where} failed: {self.ename}: {first_line}".rstrip(": ")
        return text + (f" (traceback in {self.output})" if self.output else "")

    def details(self) -> str:
        lines = [self.summary]
        if self.exec_count is not None:
            lines.append(f"  execution count: [{self.exec_count}]")
        lines += [f"  | {source_line}" for source_line in self.source_head]
        return "\n".join(lines)


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


def parameter_slug(parameters: Mapping[str, Any] | None) -> str:
    """A folder name from parameter values (``out_dir`` left out); long ones end in a hash."""
    items = [(k, v) for k, v in (parameters or {}).items() if k != "out_dir"]
    text = "_".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in items)
    text = re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-")
    if len(text) > 80:
        import hashlib

        text = text[:60] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return text


def default_output(
    notebook: PathLike, parameters: Mapping[str, Any] | None = None, root: PathLike | None = None
) -> Path:
    """``runs/<notebook stem>/<parameter slug or timestamp>/executed.ipynb`` under ``root`` (default
    :func:`nnseg_nb.paths.runs_root`: ``runs/`` of the clone, or of the working directory outside one).

    The same parameters give the same folder, so a repeated run replaces the earlier one.
    """
    root = paths.runs_root() if root is None else root
    slug = parameter_slug(parameters)
    if slug:
        return Path(root) / Path(notebook).stem / slug / "executed.ipynb"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = Path(root) / Path(notebook).stem / stamp, 1
    while folder.exists():
        n += 1
        folder = folder.with_name(f"{stamp}-{n}")
    return folder / "executed.ipynb"


# --- reading notebooks and their parameters -----------------------------------------------------


def _load(notebook: Path, kernel_name: str = "python3"):
    """The notebook as an nbformat node (jupytext reads .py and .ipynb), with a kernelspec."""
    import jupytext

    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: no such notebook")
    nb = jupytext.read(notebook)
    if not nb.metadata.get("kernelspec"):
        nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3", "language": "python"}
    return nb


def _inspect(nb) -> dict[str, dict]:
    """papermill's view of a notebook's parameters cell (it only reads files, hence the temp file)."""
    import nbformat
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "notebook.ipynb"
        nbformat.write(nb, path)
        logging.getLogger("papermill").disabled = True  # it logs "Input Notebook: /tmp/..." at INFO
        try:
            found = papermill.inspect_notebook(str(path))
        finally:
            logging.getLogger("papermill").disabled = False
    described = {}
    for name, info in found.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            default = info["default"]  # an expression: keep its source text
        described[name] = {"default": default, "type": info["inferred_type_name"], "help": info["help"]}
    return described


def notebook_parameters(notebook: PathLike) -> dict[str, dict]:
    """The notebook's parameters: ``{name: {"default", "type", "help"}}`` from its ``parameters`` cell.

    ``default`` is the Python value when it is a literal, else the source text; ``type`` is the
    annotation (``"None"`` when there is none) and ``help`` the trailing comment.
    """
    return _inspect(_load(Path(notebook)))


def _check_parameters(notebook: PathLike, names: Iterable[str], declared: Mapping[str, Any]) -> None:
    unknown = sorted(set(names) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none (it has no cell tagged 'parameters')"
        raise ValueError(
            f"{notebook}: unknown parameter(s) {', '.join(unknown)}; its parameters are: {known}"
        )


def notebooks_folder(folder: PathLike | None = None) -> Path:
    """``folder``, or the ``notebooks/`` of the repository checkout that holds this package."""
    path = Path(folder) if folder is not None else Path(__file__).resolve().parent.parent / "notebooks"
    if not path.is_dir():
        hint = (
            ""
            if folder is not None
            else (
                " (a pip install does not ship the notebooks: clone https://github.com/nnseg-nb/nnseg_nb"
                " and pass its notebooks/ folder)"
            )
        )
        raise FileNotFoundError(f"{path}: no such notebooks folder{hint}")
    return path


def list_notebooks(folder: PathLike | None = None) -> list[Path]:
    """The guided notebooks ``NN_name.py`` in order (an ``.ipynb`` stands in when its ``.py`` is absent)."""
    by_stem: dict[str, Path] = {}
    for path in sorted(notebooks_folder(folder).iterdir()):
        if _GUIDED_NOTEBOOK.match(path.name) and (path.suffix == ".py" or path.stem not in by_stem):
            by_stem[path.stem] = path
    return [by_stem[stem] for stem in sorted(by_stem)]


# --- running one notebook -----------------------------------------------------------------------


def _kernel_manager_class(extra_env: Mapping[str, str], log_file: Path | None = None):
    """A kernel manager on unix-domain sockets (parallel kernels cannot race for TCP ports, see
    papermill#511) that starts the kernel with ``extra_env`` on top of the caller's environment and,
    given ``log_file``, sends the kernel process's own stdout/stderr there (not cell output: that is
    in the notebook; this is what the kernel prints while starting, dying or being interrupted)."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kernel_id = uuid.uuid4().hex[:12]
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True)
            # sockets are "<ip>-<n>"; a short absolute path keeps them out of the run folder and
            # under the 107-character limit of a unix socket path
            sockets = os.path.join(tempfile.gettempdir(), f"nnseg-kernel-{kernel_id}")
            super().__init__(
                transport="ipc",
                ip=sockets,
                kernel_id=kernel_id,
                connection_file=str(runtime / f"kernel-{kernel_id}.json"),
                **kwargs,
            )

        async def start_kernel(self, **kwargs):
            kwargs["env"] = {**kwargs.get("env", os.environ), **extra_env}
            if log_file is None:
                return await super().start_kernel(**kwargs)
            with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
                await super().start_kernel(stdout=log, stderr=log, **kwargs)

    return IPCKernelManager


@contextlib.contextmanager
def _papermill_log(to_stderr: bool):
    """Stream papermill's cell output log to stderr for the run (it logs nothing without a handler)."""
    logger = logging.getLogger("papermill")
    if not to_stderr or logger.handlers:
        yield
        return
    handler, level = logging.StreamHandler(sys.stderr), logger.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _source_index(nb, executed_index: int) -> int:
    """Index in the source notebook of cell ``executed_index`` of papermill's parameterized copy,
    which has an injected-parameters cell after the ``parameters`` cell (or first, without one)."""
    tags = [set(cell.get("metadata", {}).get("tags", [])) for cell in nb.cells]
    if any("injected-parameters" in t for t in tags):
        return executed_index  # replaced in place
    parameters_at = next((i for i, t in enumerate(tags) if "parameters" in t), -1)
    return executed_index - 1 if executed_index > parameters_at + 1 else executed_index


def _cell_line(notebook: Path, source: str) -> int | None:
    """Line of a cell's first source line in a text notebook (None for .ipynb or if not found)."""
    if notebook.suffix == ".ipynb" or not source.strip():
        return None
    text = notebook.read_text(errors="replace")
    position = text.find(source.strip())  # the whole cell first: a first line alone may repeat
    if position < 0:
        position = text.find(source.strip().splitlines()[0])
    return None if position < 0 else text.count("\n", 0, position) + 1


def _error_from_papermill(notebook: Path, nb, error, output: Path) -> NotebookError:
    index = _source_index(nb, error.cell_index)
    source = nb.cells[index].source if 0 <= index < len(nb.cells) else error.source
    head = [line for line in source.splitlines() if line.strip()][:3]
    return NotebookError(
        notebook,
        error.ename,
        error.evalue,
        index,
        error.exec_count,
        _cell_line(notebook, source),
        head,
        output,
    )


def _error_from_abort(
    notebook: Path, nb, exc: Exception, output: Path, timeout: float | None
) -> NotebookError:
    """A timeout or a dead kernel: the failed cell is the last one papermill started."""
    import nbformat

    ename = type(exc).__name__
    evalue = (
        f"a cell ran longer than {timeout} s"
        if ename == "CellTimeoutError"
        else ("the kernel died (out of memory?)" if ename == "DeadKernelError" else str(exc))
    )
    index = None
    if output.is_file():
        executed = nbformat.read(output, as_version=4)
        started = [
            i
            for i, cell in enumerate(executed.cells)
            if cell.get("metadata", {}).get("papermill", {}).get("start_time")
        ]
        index = _source_index(nb, started[-1]) if started else None
    source = nb.cells[index].source if index is not None and index < len(nb.cells) else ""
    head = [line for line in source.splitlines() if line.strip()][:3]
    return NotebookError(notebook, ename, evalue, index, None, _cell_line(notebook, source), head, output)


def run_notebook(
    notebook: PathLike,
    output: PathLike | None = None,
    parameters: Mapping[str, Any] | None = None,
    cwd: PathLike | None = None,
    kernel_name: str = "python3",
    timeout: float | None = None,
    log_output: bool = False,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Execute a notebook headless with papermill and collect its ``results.json``.

    Args:
        notebook: a jupytext percent ``.py`` or an ``.ipynb``.
        output: the executed ``.ipynb`` (its folder is created); default
            ``runs/<stem>/<parameter slug or timestamp>/executed.ipynb`` under the current folder.
        parameters: values for names of the notebook's ``parameters`` cell (unknown names are a
            ValueError before anything runs). ``out_dir``, when the notebook has it and it is not
            given, is set to the run folder, so the notebook's files land next to the executed copy.
        cwd: the kernel's working directory (must exist); default the run folder.
        kernel_name: Jupyter kernel to use.
        timeout: per-cell limit in seconds (None: no limit).
        log_output: stream the cells' output to stderr while running.
        env: extra environment variables for the kernel (the caller's ``os.environ`` is not touched).
            The kernel always gets ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` set to
            the caller's roots (:func:`data_root_env`), so it reads the caller's data wherever it runs;
            ``env`` may point them elsewhere.

    Returns:
        A :class:`RunResult`; raises :class:`NotebookError` when a cell fails, times out or the kernel dies.

    Example::

        result = run_notebook("notebooks/01_data.py", parameters={"profile": "quick"})
        print(result.output, result.results)
    """
    notebook = Path(notebook)
    nb = _load(notebook, kernel_name)
    declared = _inspect(nb)
    parameters = dict(parameters or {})
    _check_parameters(notebook, parameters, declared)
    output = Path(output if output is not None else default_output(notebook, parameters)).resolve()
    if output.parent == notebook.resolve().parent:
        raise ValueError(
            f"{output}: refusing to write a run next to its source notebook (use a runs/ folder)"
        )
    if cwd is not None and not Path(cwd).is_dir():
        raise NotADirectoryError(f"{cwd}: the kernel's working directory does not exist")
    output.parent.mkdir(parents=True, exist_ok=True)
    cwd = Path(cwd).resolve() if cwd is not None else output.parent
    if "out_dir" in declared and "out_dir" not in parameters:
        parameters["out_dir"] = str(output.parent)
    result = RunResult(str(notebook), str(output), str(cwd), to_builtin(parameters))

    started = time.time()
    kernel_env = {**KERNEL_ENV, **data_root_env(), **(env or {})}
    error = _execute(notebook, nb, output, parameters, cwd, kernel_name, timeout, log_output, kernel_env)
    result.duration_s = round(time.time() - started, 3)
    if error is not None:
        result.status, result.error, error.result = "error", error.summary, result
        raise error from None  # papermill's own traceback adds nothing to the summary
    out_dir = cwd / str(parameters.get("out_dir", output.parent))
    result.results = _fresh_results(out_dir, started) or _fresh_results(cwd, started)
    return result


def data_root_env() -> dict[str, str]:
    """The caller's three data roots (:mod:`nnseg_nb.paths`) as nnU-Net's environment variables.

    A kernel runs in its run folder; without these it would resolve its own roots from there.
    """
    roots = (paths.raw_root(), paths.preprocessed_root(), paths.results_root())
    return {var: str(root.resolve()) for var, root in zip(paths.ROOT_VARIABLES, roots)}


def _execute(
    notebook: Path,
    nb,
    output: Path,
    parameters: dict,
    cwd: Path,
    kernel_name: str,
    timeout: float | None,
    log_output: bool,
    env: Mapping[str, str],
) -> NotebookError | None:
    """papermill's run, its failures turned into a :class:`NotebookError` (returned, not raised)."""
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    kernel_log = output.with_suffix(".log")
    try:
        with _papermill_log(log_output):
            papermill.execute_notebook(
                nb,
                str(output),
                parameters=parameters,
                kernel_name=kernel_name,
                cwd=str(cwd),
                progress_bar=False,
                log_output=log_output,
                execution_timeout=timeout,
                store_widget_state=False,  # an Image widget's PNG frames would bloat the notebook
                kernel_manager_class=_kernel_manager_class(env, kernel_log),
            )
        return None
    except papermill.PapermillExecutionError as e:
        return _error_from_papermill(notebook, nb, e, output)
    except (CellTimeoutError, DeadKernelError) as e:
        return _error_from_abort(notebook, nb, e, output, timeout)
    except NoSuchKernel:
        raise ValueError(f"no Jupyter kernel named {kernel_name!r} (see `jupyter kernelspec list`)") from None
    finally:
        if kernel_log.is_file() and kernel_log.stat().st_size == 0:
            kernel_log.unlink()  # kept only when the kernel process itself had something to say


def _fresh_results(folder: Path, since: float) -> dict | None:
    """``folder/results.json`` if this run wrote it (a rerun into the same folder finds the old one)."""
    path = folder / RESULTS_FILE
    return read_results(folder) if path.is_file() and path.stat().st_mtime >= since - 1 else None


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


# --- batches ------------------------------------------------------------------------------------


def _run_recorded(
    notebook: str, run_dir: str, parameters: dict, status_params: dict, **run_kwargs
) -> RunResult:
    """Run into ``run_dir`` and keep ``status.json`` up to date; never raises for a failed run
    (it is a top-level function so that spawned worker processes can import it)."""
    run_path = Path(run_dir)
    status = {
        "notebook": notebook,
        "params": status_params,
        "status": "running",
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write_json(run_path / "status.json", status)
    try:
        result = run_notebook(
            notebook, output=run_path / "executed.ipynb", parameters=parameters, **run_kwargs
        )
    except NotebookError as e:
        result = e.result
    except Exception as e:  # e.g. a kernel that does not start: recorded, the batch goes on
        result = RunResult(
            notebook,
            str(run_path / "executed.ipynb"),
            str(run_path),
            to_builtin(parameters),
            status="error",
            error=f"{notebook}: {type(e).__name__}: {e}",
        )
    status.update(
        status=result.status,
        duration_s=result.duration_s,
        error=result.error,
        output=result.output,
        finished=datetime.now().isoformat(timespec="seconds"),
    )
    atomic_write_json(run_path / "status.json", status)
    return result


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
            collect(i, _run_recorded(**job))
    else:
        context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads or CUDA
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_run_recorded, **job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                collect(futures[future], future.result())
    ordered = [rows[i] for i in range(len(jobs))]
    atomic_write_json(batch_dir / "batch_results.json", ordered)
    return ordered


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
        result = _run_recorded(
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


__all__ = [
    "KERNEL_ENV",
    "NotebookError",
    "ROW_FIELDS",
    "RunResult",
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
