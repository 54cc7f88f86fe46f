"""Which files make the training cases: the ``_XXXX`` channel files of imagesTr and the label files of
labelsTr (or the ``dataset`` list of dataset.json), with every stray, misnamed, missing or extra file
reported. Each complete enough case becomes a ``_CaseTask`` for a worker to read.

    file_ending = _usable_file_ending(dataset_json, folder)          # ".nii.gz", guessed if not declared
    tasks = _collect_cases(folder, dataset_json, file_ending, problems)   # one _CaseTask per case
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nnseg_nb import io
from nnseg_nb.dataset import channel_file_pattern, find_cases
from nnseg_nb.verify._format import _describe_channels
from nnseg_nb.verify.case import _CaseTask
from nnseg_nb.verify.dataset_json import _channel_names, _expected_label_values
from nnseg_nb.verify.report import ERROR, WARNING, Severity, _Problems

# Data files that a detached header names: they lie next to the header and are not stray files.
_DETACHED_DATA_ENDINGS = {".mhd": (".raw", ".zraw"), ".nhdr": (".raw", ".raw.gz", ".gz")}


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
