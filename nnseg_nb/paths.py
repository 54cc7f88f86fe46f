"""Where nnseg_nb keeps raw, preprocessed and trained data and its runs, and how a dataset is named.

nnU-Net reads three roots from environment variables; so do we, but lazily (each call reads the
environment again) and with one default, so nothing needs configuring: ``nnseg_data/`` in the
*project folder*. Inside a clone of this repository that is the clone's root, wherever the process
runs (a Jupyter kernel runs in ``notebooks/``, the CLI wherever you typed it); elsewhere it is the
working directory. Runs go to ``runs/`` in the same folder::

    >>> import os; os.environ.pop("nnUNet_raw", None) and None
    >>> raw_root() == project_root() / "nnseg_data" / "raw"
    True
    >>> display(project_root() / "nnseg_data" / "raw" / "Dataset901_BrainTissue")
    'nnseg_data/raw/Dataset901_BrainTissue'

A dataset can be named by its folder path, by ``Dataset004_Hippocampus``, by ``Hippocampus``
or by its id (``4``, ``004``, ``Dataset004``); :func:`find_dataset` resolves any of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_HOME = "nnseg_data"
RUNS_FOLDER = "runs"
ROOT_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")
_OUR_PROJECT = re.compile(r'^name\s*=\s*["\']nnseg-nb["\']', re.MULTILINE)


def find_clone(start: str | os.PathLike | None = None) -> Path | None:
    """The folder of this repository's ``pyproject.toml`` (``name = "nnseg-nb"``) at or above ``start``
    (default: the working directory), or None outside a clone."""
    start = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _OUR_PROJECT.search(pyproject.read_text(errors="replace")):
            return folder
    return None


def project_root() -> Path:
    """The folder that holds ``nnseg_data/`` and ``runs/``: the clone's root inside a clone of this
    repository (so the CLI at the root and a kernel in ``notebooks/`` share one), else the working
    directory."""
    return find_clone() or Path.cwd()


def data_root() -> Path:
    """``<project>/nnseg_data``: the default parent of the raw, preprocessed and results roots."""
    return project_root() / DEFAULT_HOME


def runs_root() -> Path:
    """``<project>/runs``: where headless runs and the notebooks' ``out_dir`` go (git ignores it)."""
    return project_root() / RUNS_FOLDER


def in_project(path: str | os.PathLike) -> Path:
    """A relative path taken from the project root (an absolute one is returned as it is).

    A notebook's ``out_dir = "runs/01_data"`` lands in ``<project>/runs/01_data`` whether the kernel
    runs in the clone's root, in ``notebooks/`` or elsewhere in the clone.
    """
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def _root(env_var: str, default_name: str) -> Path:
    value = os.environ.get(env_var)
    if value:
        return Path(value)
    return data_root() / default_name


def raw_root() -> Path:
    """``$nnUNet_raw``, or ``<project>/nnseg_data/raw``."""
    return _root("nnUNet_raw", "raw")


def preprocessed_root() -> Path:
    """``$nnUNet_preprocessed``, or ``<project>/nnseg_data/preprocessed``."""
    return _root("nnUNet_preprocessed", "preprocessed")


def results_root() -> Path:
    """``$nnUNet_results``, or ``<project>/nnseg_data/results``."""
    return _root("nnUNet_results", "results")


def describe_roots() -> str:
    """One line per root, as :func:`display` shows it, or the variable that set it::

    raw:          nnseg_data/raw
    preprocessed: $nnUNet_preprocessed = /data/nnUNet_preprocessed
    results:      nnseg_data/results
    """
    lines = []
    for name, env_var, root in (
        ("raw", "nnUNet_raw", raw_root()),
        ("preprocessed", "nnUNet_preprocessed", preprocessed_root()),
        ("results", "nnUNet_results", results_root()),
    ):
        where = f"${env_var} = {root}" if os.environ.get(env_var) else display(root)
        lines.append(f"{name + ':':<14}{where}")
    return "\n".join(lines)


def display(path: str | os.PathLike) -> str:
    """A path as outputs should show it: no one's home or clone folder in a committed notebook.

    Inside a root set by ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``: ``$nnUNet_raw/...``;
    inside the project folder: relative to it (``nnseg_data/raw/Dataset901_BrainTissue``,
    ``runs/01_data``); under the home folder: ``~/...``; anything else as it is.

    >>> display("/elsewhere/file.txt")
    '/elsewhere/file.txt'
    """
    absolute = Path(path).resolve()
    bases = [(Path(os.environ[v]).resolve(), f"${v}/") for v in ROOT_VARIABLES if os.environ.get(v)]
    bases += [(project_root().resolve(), ""), (Path.home().resolve(), "~/")]
    for base, prefix in bases:
        if absolute.is_relative_to(base) and base != Path(absolute.anchor):
            inside = absolute.relative_to(base).as_posix()
            return prefix + inside if inside != "." else prefix.rstrip("/") or "."
    return str(path)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name for a dataset.

    >>> dataset_folder_name(4, "Hippocampus")
    'Dataset004_Hippocampus'
    """
    if not 0 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset id must be between 0 and 999, got {dataset_id}")
    if not name or "/" in name or " " in name:
        raise ValueError(f"dataset name {name!r} must be non-empty, without spaces or slashes")
    return f"Dataset{int(dataset_id):03d}_{name}"


def parse_dataset_folder_name(folder_name: str) -> tuple[int, str]:
    """``'Dataset004_Hippocampus'`` -> ``(4, 'Hippocampus')``; ValueError for anything else."""
    match = _DATASET_FOLDER.match(folder_name)
    if not match:
        raise ValueError(f"{folder_name!r} is not an nnU-Net dataset folder name (DatasetXXX_Name)")
    return int(match.group(1)), match.group(2)


def list_datasets(root: str | os.PathLike) -> list[str]:
    """The ``DatasetXXX_Name`` folders in ``root``, sorted (none if it does not exist)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _DATASET_FOLDER.match(p.name))


def _matches(folder_name: str, query: str) -> bool:
    dataset_id, name = parse_dataset_folder_name(folder_name)
    if query.isdigit():
        return int(query) == dataset_id
    if re.fullmatch(r"Dataset\d{3}", query):  # nnU-Net also accepts the bare prefix
        return int(query[7:]) == dataset_id
    return query == folder_name or query == name or query.lower() == name.lower()


def dataset_name(name_or_id: str | int, roots: list[Path] | None = None) -> str:
    """Resolve a dataset to its ``DatasetXXX_Name``, searching the raw, preprocessed and results roots.

    Raises:
        FileNotFoundError: no dataset matches; the message lists the datasets that exist.
        ValueError: more than one distinct dataset matches (e.g. two folders with the same id).
    """
    query = str(name_or_id).strip()
    if Path(query).is_dir() and _DATASET_FOLDER.match(Path(query).resolve().name):
        return Path(query).resolve().name
    roots = roots if roots is not None else [raw_root(), preprocessed_root(), results_root()]
    found = sorted({name for root in roots for name in list_datasets(root) if _matches(name, query)})
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(f"dataset {query!r} is ambiguous: it matches {', '.join(found)}; name it in full")
    existing = sorted({name for root in roots for name in list_datasets(root)})
    where = ", ".join(str(r) for r in roots)
    listing = ", ".join(existing) if existing else "none"
    raise FileNotFoundError(f"no dataset {query!r} in {where} (datasets there: {listing})")


def find_dataset(name_or_id: str | int | os.PathLike, root: Path | None = None) -> Path:
    """The folder of a dataset under ``root`` (default: the raw root), or the path itself if one is given.

    >>> find_dataset("/no/such/Dataset001_X")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: ...
    """
    if isinstance(name_or_id, int):  # an id, never a path
        name_or_id = str(name_or_id)
    as_path = Path(name_or_id)
    if as_path.is_dir():
        return as_path.resolve() if as_path.name in ("", "..") else as_path  # "." has no name to parse
    if as_path.is_absolute() or os.sep in str(name_or_id):
        raise FileNotFoundError(f"{as_path}: no such dataset folder")
    root = raw_root() if root is None else Path(root)
    return root / dataset_name(name_or_id, roots=[root])


def model_folder(
    dataset: str,
    trainer_name: str,
    plans_name: str,
    configuration: str,
    results: str | os.PathLike | None = None,
) -> Path:
    """nnU-Net's trained-model folder ``<results>/<Dataset>/<Trainer>__<Plans>__<configuration>``.

    >>> model_folder("Dataset901_BrainTissue", "nnUNetTrainer", "nnUNetPlans", "3d_fullres", "/r").as_posix()
    '/r/Dataset901_BrainTissue/nnUNetTrainer__nnUNetPlans__3d_fullres'
    """
    return (
        Path(results if results is not None else results_root())
        / dataset
        / f"{trainer_name}__{plans_name}__{configuration}"
    )
