"""Run one notebook headless with papermill: parameters checked first, a failing cell as one line.

    from nnseg_nb.runner.execute import run_notebook
    result = run_notebook("notebooks/01_data.py", parameters={"profile": "quick"})
    result.status, result.results               # "ok", the notebook's results.json as a dict

The kernel gets :data:`KERNEL_ENV` and the caller's data roots (:func:`data_root_env`); a failing
cell raises :class:`NotebookError`. :func:`run_recorded` is the same run into a folder that keeps a
``status.json`` and never raises (what batches and the demo use).

>>> parameter_slug({"configuration": "3d_fullres", "fold": 0})
'configuration=3d_fullres_fold=0'
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
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
    """``folder``, or the ``notebooks/`` of the repository checkout that holds this package (nnseg_nb/runner/ -> ../..)."""
    path = Path(folder) if folder is not None else Path(__file__).resolve().parents[2] / "notebooks"
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


def run_recorded(
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
