"""The checks of dataset.json alone (before any image is read): valid JSON, required keys, channel names,
``numTraining``, ``file_ending``, the label rules, nnU-Net v1 format, and the dataset folder's name.

    dataset_json = _check_dataset_json(folder, problems)   # None when it is missing or not a JSON object
    _expected_label_values(dataset_json)                     # [0, 1, 2]: values label files may hold
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nnseg_nb import io
from nnseg_nb.dataset import (
    REQUIRED_KEYS,
    LabelInfo,
    is_v1_dataset_json,
    label_problems,
    upgrade_v1_dataset_json,
)
from nnseg_nb.paths import parse_dataset_folder_name
from nnseg_nb.utils import load_json
from nnseg_nb.verify._format import _strip_path
from nnseg_nb.verify.report import _Problems

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


def _is_int(value: Any) -> bool:
    """An integer as JSON holds it (``true`` is not one)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
