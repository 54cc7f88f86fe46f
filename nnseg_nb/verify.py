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
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import io
from .dataset import (
    REQUIRED_KEYS,
    LabelInfo,
    channel_file_pattern,
    find_cases,
    is_v1_dataset_json,
    label_problems,
    upgrade_v1_dataset_json,
)
from .parallel import map_in_processes
from .paths import find_dataset, parse_dataset_folder_name
from .utils import load_json

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"
# Keys nnU-Net reads besides the required ones, and descriptive keys that MSD / nnU-Net write.
OPTIONAL_KEYS = ("regions_class_order", "dataset", "overwrite_image_reader_writer")
DESCRIPTIVE_KEYS = (
    "name",
    "description",
    "reference",
    "licence",
    "license",
    "release",
    "citation",
    "tensorImageSize",
    "numTest",
    "training",
    "test",
    "converted_by",
)
# Data files that a detached header names: they lie next to the header and are not stray files.
_DETACHED_DATA_ENDINGS = {".mhd": (".raw", ".zraw"), ".nhdr": (".raw", ".raw.gz", ".gz")}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: ``severity`` is ``"error"`` or ``"warning"``, ``file`` the path concerned."""

    severity: Severity
    file: str
    message: str

    def format(self) -> str:
        return f"{self.file}: {self.severity}: {self.message}"


@dataclass
class VerifyReport:
    """All problems of a dataset plus what was found (for the summary)."""

    folder: Path
    problems: list[Problem] = field(default_factory=list)
    num_cases: int = 0
    channel_names: dict = field(default_factory=dict)
    file_ending: str | None = None
    labels_declared: dict = field(default_factory=dict)
    labels_found: list[int] = field(default_factory=list)
    spacing_range: tuple[list[float], list[float]] | None = None  # (min, max) per axis, (Z, Y, X)
    shape_range: tuple[list[int], list[int]] | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """One line per problem: ``<file>: <severity>: <message>``."""
        return "\n".join(p.format() for p in self.problems)

    def summary(self) -> str:
        channels = ", ".join(f"{k}: {v}" for k, v in self.channel_names.items()) or "?"
        declared = ", ".join(f"{k}={v}" for k, v in self.labels_declared.items()) or "?"
        lines = [
            f"{self.folder.name}: {self.num_cases} cases, {len(self.channel_names)} channel(s) ({channels}), "
            f"file ending {self.file_ending or '?'}",
            f"labels found: {_short(self.labels_found) or 'none'} (declared: {declared})",
        ]
        if self.spacing_range:
            lines.append(f"spacing (z, y, x): {_axis_ranges(*self.spacing_range)}")
        if self.shape_range:
            lines.append(f"shape (z, y, x): {_axis_ranges(*self.shape_range)}")
        verdict = "OK" if self.ok else "NOT OK"
        lines.append(f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join(part for part in (self.format(), self.summary()) if part)


class _Problems(list):
    """A list of Problems with shorthands; paths are kept as given."""

    def error(self, file: Any, message: str) -> None:
        self.append(Problem(ERROR, str(file), _one_line(message)))

    def warning(self, file: Any, message: str) -> None:
        self.append(Problem(WARNING, str(file), _one_line(message)))


# --- the entry point -------------------------------------------------------------------------------


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


# --- dataset.json ----------------------------------------------------------------------------------


def _check_folder_name(folder: Path, problems: _Problems) -> None:
    try:
        parse_dataset_folder_name(folder.name)
    except ValueError:
        problems.warning(
            folder, f"folder name {folder.name!r} is not DatasetXXX_Name; nnU-Net finds datasets by that name"
        )


def _check_dataset_json(folder: Path, problems: _Problems) -> dict | None:
    """Report what is wrong with dataset.json; return it (v2 form) if the case checks can go on, else None."""
    path = folder / "dataset.json"
    if not path.is_file():
        problems.error(path, "missing: a raw dataset needs a dataset.json with " + ", ".join(REQUIRED_KEYS))
        return None
    try:
        raw = load_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        problems.error(
            path, _strip_path(str(e), path) if isinstance(e, ValueError) else f"not a text file ({e})"
        )
        return None
    if not isinstance(raw, dict):
        problems.error(path, f"must hold a JSON object, found a {type(raw).__name__}")
        return None
    if is_v1_dataset_json(raw):
        problems.warning(
            path,
            "nnU-Net v1 format ('modality', labels keyed by value): nnseg_nb reads it, nnU-Net v2 "
            "does not; convert it with `nnseg-nb convert v1`",
        )
    dataset_json = upgrade_v1_dataset_json(raw)
    missing = [key for key in REQUIRED_KEYS if key not in dataset_json]
    if missing:
        unused = [k for k in raw if k not in REQUIRED_KEYS + OPTIONAL_KEYS + DESCRIPTIVE_KEYS]
        problems.error(
            path,
            f"missing required keys: {', '.join(missing)} (required: {', '.join(REQUIRED_KEYS)}; "
            f"present keys nnU-Net does not use: {', '.join(unused) or 'none'})",
        )
    _check_channel_names(dataset_json, path, problems)
    if "numTraining" in dataset_json and not (
        _is_int(dataset_json["numTraining"]) and dataset_json["numTraining"] >= 0
    ):
        problems.error(
            path, f"numTraining must be a non-negative integer, found {dataset_json['numTraining']!r}"
        )
    _check_file_ending(dataset_json, path, problems)
    if "labels" in dataset_json:
        for message in label_problems(dataset_json["labels"], dataset_json.get("regions_class_order")):
            problems.error(path, message)
    reader = dataset_json.get("overwrite_image_reader_writer")
    if reader is not None and reader not in ("SimpleITKIO", "NibabelIO", "NaturalImage2DIO"):
        problems.warning(
            path,
            f"overwrite_image_reader_writer {reader!r} is ignored: nnseg_nb reads files by their "
            "ending, like SimpleITKIO (no reorientation)",
        )
    return dataset_json


def _check_channel_names(dataset_json: dict, path: Path, problems: _Problems) -> None:
    names = dataset_json.get("channel_names")
    if names is None:
        return
    if not isinstance(names, dict) or not names:
        problems.error(path, f'channel_names must be a non-empty object like {{"0": "CT"}}, found {names!r}')
    elif sorted(names, key=str) != sorted((str(i) for i in range(len(names))), key=str):
        problems.error(
            path, f'channel_names keys must be "0" .. "{len(names) - 1}", found {", ".join(map(repr, names))}'
        )


def _check_file_ending(dataset_json: dict, path: Path, problems: _Problems) -> None:
    ending = dataset_json.get("file_ending")
    if ending is None:
        return
    if not isinstance(ending, str) or not ending.strip("."):
        problems.error(path, f'file_ending must be a string like ".nii.gz", found {ending!r}')
        return
    if not ending.startswith("."):
        problems.error(path, f"file_ending {ending!r} must start with a dot: {'.' + ending!r}")
        ending = "." + ending
    if ending.lower() not in io.SUPPORTED_ENDINGS:
        problems.error(
            path, f"no reader supports file_ending {ending!r} (readable: {', '.join(io.SUPPORTED_ENDINGS)})"
        )
    elif ending.lower() not in io.NNUNET_ENDINGS:
        problems.warning(
            path,
            f"file_ending {ending!r} is read by nnseg_nb but not by nnU-Net v2 "
            f"(its readers take {', '.join(io.NNUNET_ENDINGS)})",
        )


def _usable_file_ending(dataset_json: dict, folder: Path) -> str | None:
    """The file ending to look for, or None if none can be read (the problem is reported already).

    A missing dot is added, and a missing ``file_ending`` is guessed from imagesTr, so that the
    other problems can still be found.
    """
    ending = dataset_json.get("file_ending")
    if "file_ending" not in dataset_json:
        endings = [io.file_ending(p) for p in _listing(folder / "imagesTr") if not p.name.startswith(".")]
        endings = [e for e in endings if e in io.SUPPORTED_ENDINGS]
        return max(set(endings), key=endings.count) if endings else None
    if not isinstance(ending, str) or not ending.strip("."):
        return None
    ending = ending if ending.startswith(".") else "." + ending
    return ending if ending.lower() in io.SUPPORTED_ENDINGS else None


def _channel_names(dataset_json: dict) -> dict:
    names = dataset_json.get("channel_names")
    return dict(names) if isinstance(names, dict) else {}


def _label_info(dataset_json: dict) -> LabelInfo | None:
    try:
        return LabelInfo.from_dataset_json(dataset_json)
    except (KeyError, ValueError, TypeError):
        return None


def _expected_label_values(dataset_json: dict) -> list[int] | None:
    """Values label files may hold; None when ``labels`` is too broken to say (already reported)."""
    info = _label_info(dataset_json)
    if info is not None:
        return sorted(info.expected_values)
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict):
        return None
    values = {
        v for value in labels.values() for v in (value if isinstance(value, (list, tuple)) else [value])
    }
    return sorted(v for v in values if _is_int(v)) or None


# --- files: which cases, which channel files --------------------------------------------------------


@dataclass
class _CaseTask:
    """What a worker checks for one case (plain data, so it pickles)."""

    identifier: str
    images: list[str]
    label: str | None
    expected_values: list[int] | None
    expected_channels: int | None  # checked after reading (natural 2D files can hold several channels)
    channel_desc: str


def _collect_cases(
    folder: Path, dataset_json: dict, file_ending: str, problems: _Problems
) -> list[_CaseTask]:
    if "dataset" in dataset_json:
        cases = _cases_from_list(folder, dataset_json, problems)
    else:
        cases = _cases_from_folders(folder, dataset_json, file_ending, problems)
        _check_test_folder(folder, dataset_json, file_ending, problems)
    channel_names = _channel_names(dataset_json)
    natural = file_ending.lower() in io.NATURAL_2D_ENDINGS
    expected_values = _expected_label_values(dataset_json)
    return [
        _CaseTask(
            case,
            [str(p) for p in images],
            str(label) if label else None,
            expected_values,
            len(channel_names) if (channel_names and (natural or channels_ok)) else None,
            _describe_channels(channel_names),
        )
        for case, (images, label, channels_ok) in cases.items()
    ]


def _cases_from_folders(
    folder: Path, dataset_json: dict, file_ending: str, problems: _Problems
) -> dict[str, tuple[list[Path], Path | None, bool]]:
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    for sub in (images_dir, labels_dir):
        if not sub.is_dir():
            problems.error(sub, "missing folder (needed unless dataset.json lists the files under 'dataset')")
    channel_files = _scan_images_folder(images_dir, file_ending, problems, ERROR)
    if images_dir.is_dir() and not channel_files:
        problems.error(images_dir, f"no training cases: no file named <case>_0000{file_ending}")
    complete = _check_channel_files(images_dir, channel_files, dataset_json, file_ending, problems, ERROR)
    label_files = _scan_labels_folder(labels_dir, file_ending, problems)
    cases = {}
    for case, files in channel_files.items():
        label = label_files.pop(case, None)
        if label is None and labels_dir.is_dir():
            problems.error(labels_dir / f"{case}{file_ending}", f"missing label file for case {case!r}")
        cases[case] = ([files[i] for i in sorted(files)], label, case in complete)
    for case, label in label_files.items() if images_dir.is_dir() else ():  # else "missing folder" says it
        # nnU-Net would skip it silently: most often its images were misnamed or forgotten
        problems.error(
            label,
            f"label file without images (no {case}_0000{file_ending} in imagesTr); add its images "
            "or remove it",
        )
    return cases


def _scan_images_folder(
    images_dir: Path, file_ending: str, problems: _Problems, severity: Severity
) -> dict[str, dict[int, Path]]:
    """``{case: {channel index: file}}`` of ``{case}_{XXXX}{ending}`` files; reports every other file."""
    pattern = channel_file_pattern(file_ending)
    report = problems.error if severity == ERROR else problems.warning
    found: dict[str, dict[int, Path]] = {}
    for path in _listing(images_dir):
        if path.is_dir():
            problems.warning(path, "subfolder ignored")
            continue
        match = pattern.match(path.name)
        if path.name.startswith("._") and path.name.endswith(file_ending):
            report(path, "macOS metadata file ('._' prefix), not an image: delete it")
        elif match:
            found.setdefault(match.group("case"), {})[int(match.group("channel"))] = path
        elif path.name.endswith(file_ending):
            stem = path.name[: -len(file_ending)]
            report(
                path, f"image file name lacks the 4-digit channel suffix (expected {stem}_0000{file_ending})"
            )
        else:
            _report_other_ending(path, file_ending, problems, report)
    return dict(sorted(found.items()))


def _scan_labels_folder(labels_dir: Path, file_ending: str, problems: _Problems) -> dict[str, Path]:
    found = {}
    for path in _listing(labels_dir):
        if path.is_dir():
            problems.warning(path, "subfolder ignored")
        elif path.name.startswith("._") and path.name.endswith(file_ending):
            problems.error(path, "macOS metadata file ('._' prefix), not a label map: delete it")
        elif path.name.endswith(file_ending):
            found[path.name[: -len(file_ending)]] = path
        else:
            _report_other_ending(path, file_ending, problems, problems.error)
    return found


def _report_other_ending(path: Path, file_ending: str, problems: _Problems, report: Callable) -> None:
    ending = io.file_ending(path)
    if path.name.startswith(".") or ending in _DETACHED_DATA_ENDINGS.get(file_ending.lower(), ()):
        return  # hidden files (.DS_Store) and the data files of .mhd/.nhdr headers
    if ending == ".json" and file_ending.lower() in (".tif", ".tiff"):
        return  # nnU-Net's 3D TIFF spacing sidecar
    if ending in io.SUPPORTED_ENDINGS or ending == ".gz":
        report(
            path,
            f"file ending {ending!r} is not the dataset's file_ending {file_ending!r}; nnU-Net ignores this file",
        )
    else:
        problems.warning(path, f"not a {file_ending!r} file; ignored")


def _check_channel_files(
    images_dir: Path,
    channel_files: dict[str, dict[int, Path]],
    dataset_json: dict,
    file_ending: str,
    problems: _Problems,
    severity: Severity,
) -> set[str]:
    """Report missing and extra ``_XXXX`` files; return the cases whose files are complete."""
    report = problems.error if severity == ERROR else problems.warning
    channel_names = _channel_names(dataset_json)
    if file_ending.lower() in io.NATURAL_2D_ENDINGS:
        # One RGB file holds three channels, so only gaps are certain; the channel count is checked on reading.
        expected = range(max((max(files) + 1 for files in channel_files.values()), default=0))
    elif channel_names:
        expected = range(len(channel_names))
    else:
        return set(channel_files)
    desc = _describe_channels(channel_names)
    complete = set()
    for case, files in channel_files.items():
        for index in expected:
            if index not in files:
                report(
                    images_dir / f"{case}_{index:04d}{file_ending}",
                    f"missing channel file: channel_names declares {desc}",
                )
        for index in sorted(set(files) - set(expected)):
            report(files[index], f"extra channel file: channel_names declares only {desc}")
        if set(files) == set(expected):
            complete.add(case)
    return complete


def _check_test_folder(folder: Path, dataset_json: dict, file_ending: str, problems: _Problems) -> None:
    """imagesTs is never used for training; its naming problems are warnings."""
    images_ts = folder / "imagesTs"
    if images_ts.is_dir():
        channel_files = _scan_images_folder(images_ts, file_ending, problems, WARNING)
        _check_channel_files(images_ts, channel_files, dataset_json, file_ending, problems, WARNING)


def _cases_from_list(
    folder: Path, dataset_json: dict, problems: _Problems
) -> dict[str, tuple[list[Path], Path | None, bool]]:
    """Cases of the explicit ``dataset`` file list; reports malformed entries and missing files."""
    path = folder / "dataset.json"
    entries = dataset_json["dataset"]
    if not isinstance(entries, dict):
        problems.error(path, '\'dataset\' must map case identifiers to {"images": [...], "label": ...}')
        return {}
    well_formed = {}
    for case, entry in entries.items():
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("images"), list)
            and entry["images"]
            and all(isinstance(p, str) for p in entry["images"])
            and isinstance(entry.get("label"), str)
        ):
            well_formed[case] = entry
        else:
            problems.error(
                path,
                f'\'dataset\' entry {case!r} must be {{"images": [file, ...], "label": file}}, found {entry!r}',
            )
    num_channels = len(_channel_names(dataset_json))
    cases = {}
    for case, files in find_cases(folder, {"dataset": well_formed}).items():
        missing = [p for p in files.images + [files.label] if not p.is_file()]
        for p in missing:
            problems.error(p, f"missing file, listed in dataset.json under 'dataset' -> {case!r}")
        channels_ok = not num_channels or len(files.images) == num_channels
        if not channels_ok:
            problems.error(
                path,
                f"'dataset' entry {case!r} lists {len(files.images)} image file(s), "
                f"channel_names declares {num_channels}",
            )
        # The case counts (numTraining); its existing files are still checked.
        images = [p for p in files.images if p not in missing]
        if images:
            cases[case] = (
                images,
                None if files.label in missing else files.label,
                channels_ok and not missing,
            )
    return cases


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


# --- one case (runs in a worker process) -------------------------------------------------------------


@dataclass
class _CaseResult:
    problems: list[Problem] = field(default_factory=list)
    label_values: list[int] | None = None
    spacing: list[float] | None = None
    shape: list[int] | None = None


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


def _read(path: str, problems: _Problems) -> tuple[np.ndarray, dict] | None:
    try:
        if os.path.getsize(path) == 0:
            problems.error(path, "empty file (0 bytes)")
            return None
        return io.read_image(path)
    except (io.ImageReadError, OSError) as e:
        problems.error(path, _strip_path(str(e), path))
    except Exception as e:
        problems.error(path, f"cannot be read ({type(e).__name__}: {_strip_path(str(e), path)})")
    return None


def _check_intensities(path: str, array: np.ndarray, props: dict, problems: _Problems) -> None:
    num_nan, num_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    if num_nan:
        problems.error(path, f"{num_nan} NaN voxel(s); replace them with a meaningful value")
    if num_inf:
        problems.error(path, f"{num_inf} infinite voxel(s); replace them with a meaningful value")
    spacing = np.asarray(props["spacing"], dtype=float)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        problems.error(path, f"spacing {props['spacing']} must be positive")


def _compare_geometry(
    path: str, shape: tuple, props: dict, reference: tuple, role: str, problems: _Problems
) -> None:
    """Shape and spacing must match the reference file (errors); origin/direction/affine should (warnings)."""
    ref_path, ref_shape, ref_props = reference
    ref_name = f"{role}{Path(ref_path).name}"
    if tuple(shape[1:]) != tuple(ref_shape[1:]):
        problems.error(path, f"shape {tuple(shape[1:])} differs from {ref_name} {tuple(ref_shape[1:])}")
    elif not np.allclose(props["spacing"], ref_props["spacing"]):
        problems.error(
            path, f"spacing {_fmt(props['spacing'])} differs from {ref_name} {_fmt(ref_props['spacing'])}"
        )
    mismatch = io.geometry_mismatch(ref_props, props)
    if mismatch:
        problems.warning(path, f"{mismatch} differs from {ref_name} (check that they are aligned)")


def _check_label(task: _CaseTask, reference: tuple | None, problems: _Problems) -> list[int] | None:
    image = _read(task.label, problems)
    if image is None:
        return None
    seg, props = image
    path = task.label
    if seg.shape[0] != 1:
        problems.error(path, f"label map has {seg.shape[0]} channels (an RGB image?); it must have one")
        seg = seg[:1]
    finite = np.isfinite(seg)
    if not finite.all():
        problems.error(
            path,
            f"{int(np.isnan(seg).sum())} NaN and {int(np.isinf(seg).sum())} infinite voxel(s) in a label map",
        )
    values = seg[finite]
    integral = values == np.round(values)
    if not integral.all():
        examples = np.unique(values[~integral])[:3]
        problems.error(
            path, f"non-integer label values (e.g. {_short(examples.tolist())}); label maps hold integers"
        )
    found = _unique_ints(values[integral])
    if task.expected_values is not None:
        unexpected = sorted(set(found) - set(task.expected_values))
        if unexpected:
            problems.error(
                path,
                f"label values {_short(unexpected)} are not declared in dataset.json labels "
                f"(declared: {_short(task.expected_values)})",
            )
    if found == [0]:
        problems.warning(path, "contains only background (0): no foreground voxels")
    if reference is not None:
        _compare_geometry(path, seg.shape, props, reference, "its image ", problems)
    return found


def _unique_ints(values: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer-valued float array (bincount when small and non-negative: fast)."""
    if values.size == 0:
        return []
    low, high = values.min(), values.max()
    if low >= 0 and high < 2**16:
        return np.flatnonzero(np.bincount(values.astype(np.int64).ravel())).tolist()
    return [int(v) for v in np.unique(values)]


# --- small formatting helpers --------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _describe_channels(channel_names: dict) -> str:
    names = ", ".join(f"{k}: {v}" for k, v in channel_names.items())
    return f"{len(channel_names)} channel{'s' if len(channel_names) != 1 else ''} [{names}]"


def _short(values: Iterable, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(_fmt_number(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def _fmt_number(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else f"{float(value):.6g}"


def _fmt(values: Iterable) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _axis_ranges(low: Sequence, high: Sequence) -> str:
    return " x ".join(
        f"{_fmt_number(a)}" if a == b else f"{_fmt_number(a)}-{_fmt_number(b)}" for a, b in zip(low, high)
    )


def _one_line(message: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(message)).strip()


def _strip_path(message: str, path: Any) -> str:
    """Readers' messages start with the file's path; the Problem names it already."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
