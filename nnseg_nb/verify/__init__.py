"""Check a raw dataset before planning: everything nnU-Net's ``verify_dataset_integrity`` checks, and more.

Every case is read (in parallel) and every problem is reported at once, each naming its file::

    report = verify_dataset("Dataset004_Hippocampus")   # a folder, DatasetXXX_Name, Name or id
    print(report.format())                              # one line per problem: "<file>: error: <what is wrong>"
    print(report.summary())                             # cases, channels, labels found, spacing range
    report.ok                                           # True when there are no errors (warnings are allowed)

Errors are what makes nnU-Net fail or train on wrong data; warnings are worth a look. Checked:

- ``dataset.json``: exists, is valid JSON, has the required keys (missing and unused keys listed),
  ``channel_names`` indexed 0..C-1, integer ``numTraining`` equal to the cases found, a ``file_ending``
  with its dot that a reader supports (a warning if nnU-Net itself has no reader for it), the label rules
  (background 0, integer values, no duplicates, consecutive, ``ignore`` the largest, regions), nnU-Net v1
  format (warning).
- Files: ``imagesTr``/``labelsTr`` exist (or the ``dataset`` list's files do), image names carry the
  ``_XXXX`` channel suffix, no image files with another ending, no macOS ``._`` files, every case has all
  its channel files and no extra ones, images without labels, labels without images.
- Each case: files readable (empty, truncated, not an image, 4D), NaN/Inf in images or labels, channel count,
  shape and spacing equal across channels and label (errors), origin/direction/affine (warnings), label
  values integer and declared, a label map with only background (warning, the check nnU-Net meant to make).
- Whole dataset: declared labels that no label file contains (warning).

The package, in the order the checks run: ``dataset_json`` (dataset.json and the folder name), ``files``
(which cases, which channel files), ``case`` (one case's files, read in worker processes), ``report``
(``Problem``, ``VerifyReport``), ``_format`` (message helpers). This module runs them in that order and
merges what they find into one report; every public name is here: ``verify.verify_dataset``, ...
"""

from __future__ import annotations

import os

import numpy as np

from nnseg_nb.parallel import map_in_processes
from nnseg_nb.paths import find_dataset
from nnseg_nb.verify._format import _one_line
from nnseg_nb.verify.case import (
    _CaseResult,
    _CaseTask,
    _check_intensities,
    _check_label,
    _compare_geometry,
    _read,
)
from nnseg_nb.verify.dataset_json import (
    DESCRIPTIVE_KEYS,
    OPTIONAL_KEYS,
    _channel_names,
    _check_dataset_json,
    _check_folder_name,
    _is_int,
)
from nnseg_nb.verify.files import _collect_cases, _usable_file_ending
from nnseg_nb.verify.report import ERROR, WARNING, Problem, Severity, VerifyReport, _Problems

__all__ = [
    "DESCRIPTIVE_KEYS",
    "ERROR",
    "OPTIONAL_KEYS",
    "WARNING",
    "Problem",
    "Severity",
    "VerifyReport",
    "verify_dataset",
]


def verify_dataset(
    folder_or_name: str | os.PathLike | int, num_workers: int | None = None, progress: bool = True
) -> VerifyReport:
    """Check a raw dataset and return every problem found (never raises for a bad dataset).

    Args:
        folder_or_name: the dataset folder, or ``DatasetXXX_Name``, ``Name`` or id in the raw root.
        num_workers: processes reading cases (default ``min(4, cpu count)``; 1 reads in this process).
        progress: show a progress bar over the cases.

    Raises:
        FileNotFoundError: only when no dataset of that name exists at all.
    """
    folder = find_dataset(folder_or_name)
    report = VerifyReport(folder=folder, problems=_Problems())
    try:
        _verify(report, num_workers, progress)
    except Exception as e:  # a bug of ours must not hide what was found so far behind a traceback
        report.problems.error(folder, f"verification stopped by an unexpected {type(e).__name__}: {e}")
    report.problems.sort(key=lambda p: p.file)  # stable: each file's problems together, in the order found
    return report


def _verify(report: VerifyReport, num_workers: int | None, progress: bool) -> None:
    folder, problems = report.folder, report.problems
    if not folder.is_dir():
        problems.error(folder, "no such folder")
        return
    _check_folder_name(folder, problems)
    dataset_json = _check_dataset_json(folder, problems)
    if dataset_json is None:
        return
    report.channel_names = _channel_names(dataset_json)
    report.file_ending = dataset_json.get("file_ending")
    labels = dataset_json.get("labels")
    report.labels_declared = dict(labels) if isinstance(labels, dict) else {}
    file_ending = _usable_file_ending(dataset_json, folder)
    if file_ending is None:
        return
    tasks = _collect_cases(folder, dataset_json, file_ending, problems)
    report.num_cases = len(tasks)
    num_training = dataset_json.get("numTraining")
    if _is_int(num_training) and num_training != len(tasks):
        problems.error(
            folder / "dataset.json",
            f"numTraining is {num_training} but {len(tasks)} training cases were found",
        )
    results = map_in_processes(
        _check_case, tasks, num_workers=num_workers, progress=progress, desc="verify", on_error=_crashed_case
    )
    _summarize(report, results, dataset_json)


def _crashed_case(task: _CaseTask, error: BaseException) -> _CaseResult:
    files = task.images + ([task.label] if task.label else [])
    return _CaseResult(
        problems=[
            Problem(
                ERROR,
                files[0],
                f"checking case {task.identifier!r} crashed the worker "
                f"({type(error).__name__}: {_one_line(str(error))})",
            )
        ]
    )


def _summarize(report: VerifyReport, results: list[_CaseResult], dataset_json: dict) -> None:
    """Merge the cases' problems and findings into the report; warn about labels no file contains."""
    found: set[int] = set()
    spacings, shapes = [], []
    for result in results:
        report.problems.extend(result.problems)
        found.update(result.label_values or [])
        if result.spacing is not None:
            spacings.append(result.spacing)
            shapes.append(result.shape)
    report.labels_found = sorted(found)
    if spacings:
        report.spacing_range = (np.min(spacings, 0).tolist(), np.max(spacings, 0).tolist())
        report.shape_range = (np.min(shapes, 0).tolist(), np.max(shapes, 0).tolist())
    labels = dataset_json.get("labels")
    if isinstance(labels, dict) and any(r.label_values is not None for r in results):
        missing = [
            f"{name} ({value})" for name, value in labels.items() if _is_int(value) and value not in found
        ]
        if missing:
            report.problems.warning(
                report.folder / "dataset.json",
                f"declared labels found in no label file: {', '.join(missing)}",
            )


# --- one case: the order of its checks (``case`` holds them); runs in a worker process --------------


def _check_case(task: _CaseTask) -> _CaseResult:
    """Read one case and check it; anything raised becomes a Problem of the file being read."""
    problems = _Problems()
    result = _CaseResult(problems=problems)
    current = task.images[0]
    try:
        reference = None  # (path, array shape, props) of the first readable channel file
        num_channels = 0
        for current in task.images:
            image = _read(current, problems)
            if image is None:
                num_channels = None
                continue
            array, props = image
            _check_intensities(current, array, props, problems)
            if num_channels is not None:
                num_channels += array.shape[0]
            if reference is None:
                reference = (current, array.shape, props)
                result.spacing, result.shape = list(props["spacing"]), list(array.shape[1:])
            else:
                _compare_geometry(current, array.shape, props, reference, "", problems)
            del array
        if (
            task.expected_channels is not None
            and num_channels is not None
            and num_channels != task.expected_channels
        ):
            problems.error(
                task.images[0],
                f"{num_channels} channel(s) read from {len(task.images)} file(s), "
                f"but channel_names declares {task.channel_desc}",
            )
        if task.label is not None:
            current = task.label
            result.label_values = _check_label(task, reference, problems)
    except Exception as e:  # a reader failing in an unforeseen way must not hide the other cases' problems
        problems.error(current, f"unexpected {type(e).__name__} while checking: {e}")
    return result
