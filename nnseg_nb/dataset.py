"""nnU-Net v2 raw datasets: ``dataset.json``, its labels, and where each case's files are.

A raw dataset is a folder ``DatasetXXX_Name/`` with ``dataset.json``, ``imagesTr/{case}_{XXXX}{ending}``
(one file per channel), ``labelsTr/{case}{ending}`` and optionally ``imagesTs/``::

    dataset_json = load_dataset_json("nnseg_data/raw/Dataset901_BrainTissue")
    labels = LabelInfo.from_dataset_json(dataset_json)    # labels.foreground_labels == [1, 2]
    cases = find_cases("nnseg_data/raw/Dataset901_BrainTissue", dataset_json)
    cases["brain_000"].images                              # [Path(.../imagesTr/brain_000_0000.nii.gz)]

An nnU-Net v1 ``dataset.json`` (``modality``, id -> name ``labels``, ``training`` list) is upgraded
to v2 on load; the file itself is never modified.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .utils import atomic_write_json, load_json

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


@dataclass
class Case:
    """The files of one case: its channel images in channel order, and its label map (None if absent)."""

    identifier: str
    images: list[Path]
    label: Path | None = None


# --- dataset.json ----------------------------------------------------------------------------------


def load_dataset_json(folder_or_file: str | os.PathLike) -> dict[str, Any]:
    """Read ``dataset.json`` (from a dataset folder or the file itself), upgrading nnU-Net v1 files.

    Raises FileNotFoundError if it is missing, ValueError if it is not valid JSON, lacks one of
    ``REQUIRED_KEYS`` or has labels that break nnU-Net's rules (one line per problem; ``nnseg-nb verify``
    lists every problem of a dataset, files included, at once).
    """
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset.json")
    dataset_json = load_json(path)
    if not isinstance(dataset_json, dict):
        raise ValueError(f"{path}: dataset.json must hold a JSON object")
    dataset_json = upgrade_v1_dataset_json(dataset_json)
    missing = [key for key in REQUIRED_KEYS if key not in dataset_json]
    if missing:
        raise ValueError(
            f"{path}: missing required keys {', '.join(missing)} (check it with `nnseg-nb verify`)"
        )
    problems = label_problems(dataset_json["labels"], dataset_json.get("regions_class_order"))
    if problems:
        raise ValueError("\n".join(f"{path}: {problem}" for problem in problems))
    return dataset_json


def is_v1_dataset_json(dataset_json: dict) -> bool:
    """True for nnU-Net v1 files: ``modality`` instead of ``channel_names``, labels keyed by id."""
    if "modality" in dataset_json and "channel_names" not in dataset_json:
        return True
    labels = dataset_json.get("labels", {})
    return (
        bool(labels)
        and all(str(k).lstrip("-").isdigit() for k in labels)
        and not all(isinstance(v, (int, list)) for v in labels.values())
    )


def upgrade_v1_dataset_json(dataset_json: dict) -> dict:
    """Return a v2 version of a v1 ``dataset.json`` (a v2 one is returned unchanged, as a copy).

    >>> upgrade_v1_dataset_json({"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior"},
    ...     "numTraining": 2, "training": [{"image": "./imagesTr/a.nii.gz"}]})["labels"]
    {'background': 0, 'Anterior': 1}
    """
    dataset_json = dict(dataset_json)
    if not is_v1_dataset_json(dataset_json):
        return dataset_json
    if "modality" in dataset_json:
        dataset_json["channel_names"] = dataset_json.pop("modality")
    labels = dataset_json.get("labels", {})
    if labels and all(str(k).lstrip("-").isdigit() for k in labels):
        dataset_json["labels"] = {
            str(name): int(value) for value, name in sorted(labels.items(), key=lambda kv: int(kv[0]))
        }
    if "file_ending" not in dataset_json:
        dataset_json["file_ending"] = _v1_file_ending(dataset_json)
    dataset_json.pop("tensorImageSize", None)
    return dataset_json


def _v1_file_ending(dataset_json: dict) -> str:
    from .io import file_ending

    training = dataset_json.get("training") or []
    if training and isinstance(training[0], dict) and training[0].get("image"):
        return file_ending(training[0]["image"])
    return ".nii.gz"


def write_dataset_json(
    folder: str | os.PathLike,
    channel_names: dict,
    labels: dict,
    num_training: int,
    file_ending: str,
    **extra: Any,
) -> dict:
    """Write a v2 ``dataset.json`` into ``folder`` (atomically) and return it.

    ``extra`` keys (``name``, ``description``, ``licence``, ``regions_class_order`` ...) are written too.
    """
    dataset_json = {
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    atomic_write_json(Path(folder) / "dataset.json", dataset_json)
    return dataset_json


# --- labels (nnU-Net's LabelManager, as data) --------------------------------------------------------


@dataclass(frozen=True)
class LabelInfo:
    """What the ``labels`` of a ``dataset.json`` mean for training and evaluation.

    >>> info = LabelInfo.from_dataset_json({"labels": {"background": 0, "gm": 1, "wm": 2, "ignore": 3}})
    >>> info.foreground_labels, info.ignore_label, info.num_segmentation_heads
    ([1, 2], 3, 3)
    """

    labels: dict[str, Any]
    all_labels: list[int]
    ignore_label: int | None
    has_regions: bool
    regions_class_order: list[int] | None = None
    foreground_regions: list[tuple[int, ...]] = field(default_factory=list)

    @classmethod
    def from_dataset_json(cls, dataset_json: dict) -> LabelInfo:
        labels = dataset_json["labels"]
        problems = label_problems(labels, dataset_json.get("regions_class_order"))
        if problems:
            raise ValueError("\n".join(problems))
        values = [v for k, v in labels.items() if k != "ignore"]
        all_labels = sorted({int(x) for v in values for x in (v if isinstance(v, (list, tuple)) else [v])})
        has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in values)
        regions = (
            [
                tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
                for k, v in labels.items()
                if k not in ("background", "ignore")
            ]
            if has_regions
            else []
        )
        return cls(
            labels=dict(labels),
            all_labels=all_labels,
            ignore_label=labels.get("ignore"),
            has_regions=has_regions,
            regions_class_order=dataset_json.get("regions_class_order"),
            foreground_regions=regions,
        )

    @property
    def foreground_labels(self) -> list[int]:
        return [label for label in self.all_labels if label != 0]

    @property
    def num_segmentation_heads(self) -> int:
        """Network outputs: one per label (softmax), or one per foreground region (sigmoid)."""
        return len(self.foreground_regions) if self.has_regions else len(self.all_labels)

    @property
    def expected_values(self) -> set[int]:
        """Values a label file may contain."""
        return set(self.all_labels) | ({self.ignore_label} if self.ignore_label is not None else set())


def label_problems(labels: dict, regions_class_order: list | None = None) -> list[str]:
    """Everything wrong with a ``labels`` dict, one readable sentence each (empty if it is valid)."""
    problems = []
    if not isinstance(labels, dict) or not labels:
        return ["'labels' must be a non-empty object mapping names to integer values"]
    if labels.get("background") != 0:
        problems.append("'labels' must contain \"background\": 0")
    plain = {}
    for name, value in labels.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            problems.append(
                f"label {name!r} has value {value!r}; values must be non-negative integers (or lists of them for regions)"
            )
            continue
        if name != "ignore" and not isinstance(value, (list, tuple)):
            plain.setdefault(value, []).append(name)
    for value, names in sorted(plain.items()):
        if len(names) > 1:
            problems.append(f"labels {', '.join(map(repr, names))} share the value {value}")
    values = sorted(
        {
            v
            for k, v in labels.items()
            if k != "ignore"
            for v in (v if isinstance(v, (list, tuple)) else [v])
            if isinstance(v, int)
        }
    )
    if values and values != list(range(values[-1] + 1)):
        missing = sorted(set(range(values[-1] + 1)) - set(values))
        problems.append(f"label values must be consecutive from 0; missing {missing}")
    if isinstance(labels.get("ignore"), (list, tuple)):
        problems.append(f"the ignore label must be one integer, not a region, found {labels['ignore']!r}")
    if (
        "ignore" in labels
        and isinstance(labels["ignore"], int)
        and values
        and labels["ignore"] != values[-1] + 1
    ):
        problems.append(
            f"the ignore label must be the largest value ({values[-1] + 1}), found {labels['ignore']}"
        )
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for k, v in labels.items() if k != "ignore")
    if has_regions and not regions_class_order:
        problems.append("region-based labels need 'regions_class_order'")
    elif has_regions and not isinstance(regions_class_order, (list, tuple)):
        problems.append(
            f"'regions_class_order' must be a list of label values, found {regions_class_order!r}"
        )
    elif has_regions and not problems:
        # nnU-Net's regions: every entry but `ignore` and background-only ones (0 or [0]).
        num_regions = sum(
            1
            for k, v in labels.items()
            if k != "ignore" and set(v if isinstance(v, (list, tuple)) else [v]) != {0}
        )
        if len(regions_class_order) != num_regions:
            problems.append(
                f"'regions_class_order' has {len(regions_class_order)} entries but there are {num_regions} regions"
            )
    return problems


# --- case discovery ------------------------------------------------------------------------------


def channel_file_pattern(file_ending: str) -> re.Pattern:
    """``{case}_{XXXX}{file_ending}``, with groups ``case`` and ``channel``."""
    return re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending) + "$")


def find_image_cases(folder: str | os.PathLike, file_ending: str) -> dict[str, list[Path]]:
    """Group ``{case}_{XXXX}{ending}`` files of an images folder by case, channel files in order."""
    folder = Path(folder)
    pattern = channel_file_pattern(file_ending)
    cases: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = pattern.match(path.name)
        if match and path.is_file():
            cases.setdefault(match.group("case"), []).append(path)
    return {case: sorted(files) for case, files in sorted(cases.items())}


def find_cases(
    folder: str | os.PathLike,
    dataset_json: dict | None = None,
    images: str = "imagesTr",
    labels: str = "labelsTr",
) -> dict[str, Case]:
    """Every training case of a raw dataset, sorted by identifier.

    Uses the explicit ``dataset`` file list of ``dataset.json`` when present (relative paths are taken
    from the dataset folder, ``$VARS`` are expanded), else ``imagesTr``/``labelsTr``.
    """
    folder = Path(folder)
    dataset_json = load_dataset_json(folder) if dataset_json is None else dataset_json
    if "dataset" in dataset_json and images == "imagesTr":
        return _cases_from_file_list(folder, dataset_json["dataset"])
    ending = dataset_json["file_ending"]
    cases = {}
    for case, files in find_image_cases(folder / images, ending).items():
        label = folder / labels / f"{case}{ending}"
        cases[case] = Case(case, files, label if label.is_file() else None)
    return cases


def find_test_cases(folder: str | os.PathLike, dataset_json: dict | None = None) -> dict[str, Case]:
    """The ``imagesTs`` cases; their labels are looked up in ``labelsTs`` (our demo data ships them)."""
    return find_cases(folder, dataset_json, images="imagesTs", labels="labelsTs")


def _cases_from_file_list(folder: Path, file_list: dict) -> dict[str, Case]:
    def resolve(p: str) -> Path:
        p = Path(os.path.expandvars(p))
        return p if p.is_absolute() else folder / p

    cases = {}
    for case, entry in sorted(file_list.items()):
        label = entry.get("label")
        cases[case] = Case(case, [resolve(p) for p in entry["images"]], resolve(label) if label else None)
    return cases


def case_identifiers(folder: str | os.PathLike, dataset_json: dict | None = None) -> list[str]:
    """Sorted identifiers of the training cases."""
    return list(find_cases(folder, dataset_json))
