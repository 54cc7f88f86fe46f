"""Preprocessing, as nnU-Net's ``DefaultPreprocessor`` does it: transpose, crop, normalize, resample.

    data, props = io.read_case(case.images)                     # (C, Z, Y, X) float32
    seg, _ = io.read_seg(case.label)                            # (1, Z, Y, X)
    data, seg, properties = preprocess_case(data, seg, props, plans, "3d_fullres", dataset_json)
    preprocess_dataset("Dataset004_Hippocampus", ["3d_fullres"])  # every case -> <folder>/<case>.* files
    data, seg, properties = preprocessed.load_case(folder, "hippocampus_001")  # reading: nnseg_nb.preprocessed

The order of the steps is nnU-Net's (``run_case_npy``): cast to float32, transpose to the plan's
axis order, crop to the nonzero box, compute the new shape, normalize (before resampling, so the
nonzero mask still fits the image exactly), resample image then labels, sample foreground
locations for the loader, store labels as int8/int16.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.ndimage import binary_fill_holes

from nnseg_nb import io
from nnseg_nb.dataset import Case, find_cases, load_dataset_json
from nnseg_nb.parallel import map_in_processes
from nnseg_nb.paths import find_dataset, preprocessed_root
from nnseg_nb.plans import ConfigurationPlan, Plans, as_plans  # noqa: F401  (as_plans re-exported)
from nnseg_nb.preprocessed import ClassKey, is_up_to_date, save_case
from nnseg_nb.resampling import RESAMPLING_FUNCTIONS, compute_new_shape
from nnseg_nb.utils import to_builtin

# Label given to background voxels outside the nonzero mask: normalization and augmentation use it
# to tell "outside the body" from "background inside the body"; the loader pads with it, augmentation
# too, and it becomes 0 right before the loss. The one home of this number: the others import it.
OUTSIDE_LABEL = -1
# Normalization divides by max(std, EPS) so a constant image does not become NaN (nnU-Net: 1e-8 for float32).
EPS = 1e-8
# class_locations: nnU-Net's fixed seed, at least 10,000 voxels per class (all if fewer), or 1% if that is more.
CLASS_LOCATIONS_SEED = 1234
CLASS_LOCATIONS_MIN_SAMPLES = 10000
CLASS_LOCATIONS_MIN_FRACTION = 0.01
# nnU-Net's default number of worker processes per configuration (nnUNetv2_preprocess -np).
DEFAULT_NUM_WORKERS = {"2d": 8, "3d_fullres": 4, "3d_lowres": 8}
# Bump when the output of preprocessing changes, so that stored cases are redone.
# 2: class locations moved from <case>.json to <case>_class_locations.npz.
FORMAT_VERSION = 2


# --- crop to nonzero ---------------------------------------------------------------------------


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels where any channel is nonzero, with holes filled. ``data``: (C, Z, Y, X) -> (Z, Y, X) bool."""
    mask = np.any(data != 0, axis=0)
    return binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """Half-open ``[[lo, hi), ...]`` box of the True voxels; the whole array if there are none.

    >>> bounding_box(np.pad(np.ones((2, 3), bool), ((1, 0), (2, 1))))
    [[1, 3], [2, 5]]
    """
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other_axes))
        box.append([int(present[0]), int(present[-1]) + 1] if present.size else [0, int(mask.shape[axis])])
    return box


def crop_to_nonzero(
    data: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Crop image and label map to the bounding box of the nonzero mask.

    Args:
        data: (C, Z, Y, X) image.
        seg: (1, Z, Y, X) label map, or None.

    Returns:
        ``(data, seg, bbox)``: the cropped arrays and the half-open box. Inside the box, background
        voxels outside the nonzero mask become -1 in ``seg``; with no ``seg``, one is made (0 inside
        the mask, -1 outside, int8).
    """
    mask = nonzero_mask(data)
    bbox = bounding_box(mask)
    box = tuple(slice(lo, hi) for lo, hi in bbox)
    data = data[(slice(None), *box)]
    mask = mask[box][None]
    if seg is None:
        seg = np.where(mask, np.int8(0), np.int8(OUTSIDE_LABEL))
    else:
        seg = seg[(slice(None), *box)].copy()
        seg[(seg == 0) & ~mask] = OUTSIDE_LABEL
    return data, seg, bbox


# --- normalization (nnU-Net's schemes, by class name) -------------------------------------------
# Each takes one channel (Z, Y, X) and the cropped label map's channel (Z, Y, X; -1 = outside the
# nonzero mask) and returns the channel as float32. The input may be modified in place.


def zscore_normalization(
    image: np.ndarray,
    seg: np.ndarray | None = None,
    use_mask_for_norm: bool = False,
    intensity_properties: dict | None = None,
) -> np.ndarray:
    """``(x - mean) / std`` of this image; with ``use_mask_for_norm`` only inside the mask (``seg >= 0``).

    Outside the mask the voxels keep their value (0: the mask is the nonzero region).

    >>> zscore_normalization(np.array([0., 1., 3.], np.float32), np.array([-1, 0, 0]), True)
    array([ 0., -1.,  1.], dtype=float32)
    """
    image = image.astype(np.float32, copy=False)
    if use_mask_for_norm:
        if seg is None:
            raise ValueError(
                "ZScoreNormalization with use_mask_for_norm needs the label map (mask = seg >= 0)"
            )
        inside = seg >= 0
        mean, std = image[inside].mean(), image[inside].std()
        image[inside] = (image[inside] - mean) / max(std, EPS)
    else:
        mean, std = image.mean(), image.std()
        image -= mean
        image /= max(std, EPS)
    return image


def ct_normalization(
    image: np.ndarray,
    seg: np.ndarray | None = None,
    use_mask_for_norm: bool = False,
    intensity_properties: dict | None = None,
) -> np.ndarray:
    """Clip to the dataset's foreground 0.5/99.5 percentiles, then ``(x - mean) / std`` of the foreground.

    The numbers are the fingerprint's, the same for every case; the mask is never used.

    >>> ct_normalization(np.array([-2000., 40., 3000.], np.float32), intensity_properties={
    ...     "percentile_00_5": -100, "percentile_99_5": 200, "mean": 40, "std": 20})
    array([-7.,  0.,  8.], dtype=float32)
    """
    if not intensity_properties:
        raise ValueError(
            "CTNormalization needs the fingerprint's foreground intensity properties of the channel"
        )
    image = image.astype(np.float32, copy=False)
    np.clip(
        image, intensity_properties["percentile_00_5"], intensity_properties["percentile_99_5"], out=image
    )
    image -= intensity_properties["mean"]
    image /= max(intensity_properties["std"], EPS)
    return image


def no_normalization(
    image: np.ndarray,
    seg: np.ndarray | None = None,
    use_mask_for_norm: bool = False,
    intensity_properties: dict | None = None,
) -> np.ndarray:
    """Only cast to float32."""
    return image.astype(np.float32, copy=False)


def rescale_to_01_normalization(
    image: np.ndarray,
    seg: np.ndarray | None = None,
    use_mask_for_norm: bool = False,
    intensity_properties: dict | None = None,
) -> np.ndarray:
    """``(x - min) / (max - min)`` of this image.

    >>> rescale_to_01_normalization(np.array([2., 4., 6.], np.float32))
    array([0. , 0.5, 1. ], dtype=float32)
    """
    image = image.astype(np.float32, copy=False)
    image -= image.min()
    image /= max(image.max(), EPS)
    return image


def rgb_to_01_normalization(
    image: np.ndarray,
    seg: np.ndarray | None = None,
    use_mask_for_norm: bool = False,
    intensity_properties: dict | None = None,
) -> np.ndarray:
    """``x / 255`` for 8-bit colour channels (values outside 0..255 are an error)."""
    if image.min() < 0 or image.max() > 255:
        raise ValueError(f"RGBTo01Normalization expects values in 0..255, found {image.min()}..{image.max()}")
    image = image.astype(np.float32, copy=False)
    image /= 255.0
    return image


NORMALIZATION_SCHEMES: dict[str, Callable[..., np.ndarray]] = {
    "ZScoreNormalization": zscore_normalization,
    "CTNormalization": ct_normalization,
    "NoNormalization": no_normalization,
    "RescaleTo01Normalization": rescale_to_01_normalization,
    "RGBTo01Normalization": rgb_to_01_normalization,
}


def normalize(
    data: np.ndarray,
    seg: np.ndarray,
    schemes: Sequence[str],
    use_mask_for_norm: Sequence[bool],
    intensity_properties: dict | None = None,
) -> np.ndarray:
    """Normalize each channel of ``data`` (C, Z, Y, X) in place with its scheme; ``seg`` is (1, Z, Y, X).

    ``intensity_properties`` is the fingerprint's ``foreground_intensity_properties_per_channel``
    (keys ``"0"``, ``"1"``, ...), needed by ``CTNormalization``.
    """
    if len(schemes) != data.shape[0] or len(use_mask_for_norm) != data.shape[0]:
        raise ValueError(
            f"the plans name {len(schemes)} normalization schemes and {len(use_mask_for_norm)} "
            f"use_mask_for_norm flags, but the image has {data.shape[0]} channels"
        )
    intensity_properties = intensity_properties or {}
    for c, scheme in enumerate(schemes):
        if scheme not in NORMALIZATION_SCHEMES:
            raise ValueError(
                f"unknown normalization scheme {scheme!r}; known: {', '.join(NORMALIZATION_SCHEMES)}"
            )
        data[c] = NORMALIZATION_SCHEMES[scheme](
            data[c], seg[0], bool(use_mask_for_norm[c]), intensity_properties.get(str(c))
        )
    return data


# --- class locations (where the loader centres foreground patches) -------------------------------


def class_location_keys(dataset_json: dict) -> list[ClassKey]:
    """The ``class_locations`` keys nnU-Net samples for a dataset, in its order.

    Foreground labels (ints), or foreground regions (ints, or tuples for list-valued regions); with
    an ignore label one more key ``(-1, *all_labels)``: every annotated voxel, outside-mask included.

    >>> class_location_keys({"labels": {"background": 0, "a": 1, "b": 2, "ignore": 3}})
    [1, 2, (-1, 0, 1, 2)]
    """
    labels = {name: value for name, value in dataset_json["labels"].items() if name != "ignore"}
    values = [v if isinstance(v, (list, tuple)) else int(v) for v in labels.values()]
    all_labels = sorted({int(x) for v in values for x in (v if isinstance(v, (list, tuple)) else [v])})
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in values)
    if has_regions:
        keys = [tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else v for v in values]
        keys = [k for k in keys if set(k if isinstance(k, tuple) else [k]) != {0}]
    else:
        keys = [label for label in all_labels if label != 0]
    if dataset_json["labels"].get("ignore") is not None:
        keys.append((-1, *all_labels))
    return keys


def sample_class_locations(
    seg: np.ndarray,
    keys: Sequence[ClassKey],
    seed: int = CLASS_LOCATIONS_SEED,
    min_samples: int = CLASS_LOCATIONS_MIN_SAMPLES,
    min_fraction: float = CLASS_LOCATIONS_MIN_FRACTION,
) -> dict[ClassKey, np.ndarray]:
    """Voxel positions of each class, a random subset, for foreground oversampling.

    Per key with ``total`` voxels (a region: the union of its labels), ``max(min(10000, total),
    ceil(0.01 * total))`` are drawn without replacement from one ``RandomState(seed)``, in key order.
    The candidates are listed label by label (in the key's order), each in raster order, so the
    draws match nnU-Net's exactly.

    Args:
        seg: (1, Z, Y, X) label map on the preprocessed grid.

    Returns:
        ``{key: (N, 4) int64 array of [0, z, y, x]}``; an absent class has N = 0.

    >>> locations = sample_class_locations(np.array([[[[0, 1, 1], [2, 0, 1]]]]), [1, 2, (1, 2), 3])
    >>> {key: len(value) for key, value in locations.items()}
    {1: 3, 2: 1, (1, 2): 4, 3: 0}
    """
    rng = np.random.RandomState(seed)
    flat = seg.ravel()
    voxels_of_label: dict[int, np.ndarray] = {}
    locations = {}
    for key in keys:
        labels = key if isinstance(key, tuple) else (key,)
        for label in labels:
            if label not in voxels_of_label:
                voxels_of_label[label] = np.flatnonzero(flat == label)
        candidates = np.concatenate([voxels_of_label[label] for label in labels])
        total = candidates.size
        if total == 0:
            locations[key] = np.zeros((0, seg.ndim), dtype=np.int64)
            continue
        count = max(min(min_samples, total), int(math.ceil(total * min_fraction)))
        picked = candidates[rng.choice(total, count, replace=False)]
        locations[key] = np.stack(np.unravel_index(picked, seg.shape), axis=1).astype(np.int64)
    return locations


# --- plans -----------------------------------------------------------------------------------------


def _resampling_fn(configuration: ConfigurationPlan, which: str) -> Callable[..., np.ndarray]:
    name = getattr(configuration, f"resampling_fn_{which}")
    if name not in RESAMPLING_FUNCTIONS:
        raise ValueError(
            f"unknown resampling function {name!r} for {which}; known: {', '.join(RESAMPLING_FUNCTIONS)}"
        )
    kwargs = getattr(configuration, f"resampling_fn_{which}_kwargs") or {}
    return lambda array, new_shape, spacing, new_spacing: RESAMPLING_FUNCTIONS[name](
        array, new_shape, spacing, new_spacing, **kwargs
    )


# --- one case -------------------------------------------------------------------------------------


def preprocess_case(
    data: np.ndarray,
    seg: np.ndarray | None,
    props: dict,
    plans: Plans | dict | str | os.PathLike,
    configuration_name: str,
    dataset_json: dict,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Preprocess one case exactly as nnU-Net's ``DefaultPreprocessor.run_case_npy``.

    Args:
        data: (C, Z, Y, X) image, as ``io.read_case`` returns it (not modified).
        seg: (1, Z, Y, X) label map, or None (a test case: no class locations).
        props: the reader's props; ``props["spacing"]`` in the same axis order as ``data``.
        plans: nnU-Net plans (dict, path or ``Plans``); configuration_name: e.g. ``"3d_fullres"``.
        dataset_json: the dataset's ``dataset.json`` (labels, for the class locations).

    Returns:
        ``(data, seg, properties)``: data (C, Z', Y', X') float32 in the plan's axis order; seg
        (1, Z', Y', X') int8 (int16 when a label exceeds 127), -1 outside the nonzero mask;
        properties = props plus ``shape_before_cropping``, ``bbox_used_for_cropping``,
        ``shape_after_cropping_and_before_resampling`` and (with a seg) ``class_locations``.
    """
    plans = as_plans(plans)
    configuration = plans.configuration(configuration_name)
    data = data.astype(np.float32)  # a copy: the caller's array is left alone
    if seg is not None:
        if seg.shape[1:] != data.shape[1:]:
            raise ValueError(f"image shape {data.shape[1:]} and segmentation shape {seg.shape[1:]} differ")
        seg = np.copy(seg)
    properties = dict(props)

    transpose = [int(a) for a in plans.transpose_forward]
    data = data.transpose([0, *(a + 1 for a in transpose)])
    seg = None if seg is None else seg.transpose([0, *(a + 1 for a in transpose)])
    spacing = [props["spacing"][a] for a in transpose]

    properties["shape_before_cropping"] = list(data.shape[1:])
    has_seg = seg is not None
    data, seg, bbox = crop_to_nonzero(data, seg)
    properties["bbox_used_for_cropping"] = bbox
    properties["shape_after_cropping_and_before_resampling"] = list(data.shape[1:])

    target_spacing = list(configuration.spacing)
    if len(target_spacing) < len(spacing):  # 2d: the slice axis keeps its spacing, so it is never resampled
        target_spacing = [spacing[0], *target_spacing]
    new_shape = compute_new_shape(data.shape[1:], spacing, target_spacing)

    data = normalize(
        data,
        seg,
        configuration.normalization_schemes,
        configuration.use_mask_for_norm,
        plans.foreground_intensity_properties_per_channel,
    )
    data = _resampling_fn(configuration, "data")(data, new_shape, spacing, target_spacing)
    seg = _resampling_fn(configuration, "seg")(seg, new_shape, spacing, target_spacing)

    if has_seg:
        properties["class_locations"] = sample_class_locations(seg, class_location_keys(dataset_json))
    seg = seg.astype(np.int16 if np.max(seg) > 127 else np.int8)
    return data.astype(np.float32, copy=False), seg, properties


# --- a whole dataset -------------------------------------------------------------------------------


@dataclass
class PreprocessedConfiguration:
    """What :func:`preprocess_dataset` did for one configuration."""

    configuration: str
    folder: Path  # <preprocessed>/<DatasetName>/<data_identifier>
    processed: list[str] = field(default_factory=list)  # cases (re)written now
    up_to_date: list[str] = field(
        default_factory=list
    )  # cases skipped: already preprocessed with these plans


def preprocessing_key(plans: Plans, configuration_name: str, dataset_json: dict, case: Case) -> str:
    """A hash of everything a preprocessed case depends on: the plan's relevant settings and the source files.

    Stored in the case's JSON (``preprocessed.save_case``); a case whose stored key matches is not
    preprocessed again (``preprocessed.is_up_to_date``).
    """
    configuration = plans.configuration(configuration_name)
    settings = (
        "spacing",
        "normalization_schemes",
        "use_mask_for_norm",
        "resampling_fn_data",
        "resampling_fn_data_kwargs",
        "resampling_fn_seg",
        "resampling_fn_seg_kwargs",
    )
    files = [path for path in [*case.images, case.label] if path is not None]
    payload = {
        "version": FORMAT_VERSION,
        "configuration": {key: getattr(configuration, key) for key in settings},
        "transpose_forward": plans.transpose_forward,
        "intensity_properties": plans.foreground_intensity_properties_per_channel,
        "labels": dataset_json["labels"],
        "files": [[str(Path(p).resolve()), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in files],
    }
    return hashlib.sha256(json.dumps(to_builtin(payload), sort_keys=True).encode()).hexdigest()


class _CaseJob(NamedTuple):
    """One case to preprocess and store (what a worker process receives)."""

    case: Case
    folder: Path
    plans: Plans
    configuration_name: str
    dataset_json: dict
    key: str


def _preprocess_and_save(job: _CaseJob) -> str:
    """Read, preprocess and store one case (runs in a worker process)."""
    case = job.case
    data, props = io.read_case(case.images)
    seg = io.read_seg(case.label)[0] if case.label is not None else None
    try:
        data, seg, properties = preprocess_case(
            data, seg, props, job.plans, job.configuration_name, job.dataset_json
        )
    except ValueError as e:
        raise ValueError(f"case {case.identifier}: {e}") from None
    save_case(job.folder, case.identifier, data, seg, properties, preprocessing_key=job.key)
    return case.identifier


def _copy_ground_truth(cases: dict[str, Case], folder: Path, file_ending: str) -> None:
    """Copy each label file to ``folder/<case><ending>`` when missing or older (nnU-Net's gt_segmentations)."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases.values():
        target = folder / f"{case.identifier}{file_ending}"
        if target.is_file() and target.stat().st_mtime >= case.label.stat().st_mtime:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            shutil.copy2(case.label, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def preprocess_dataset(
    dataset: str | int | os.PathLike,
    configurations: str | Sequence[str],
    plans: Plans | dict | str | os.PathLike | None = None,
    output_folder: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> list[PreprocessedConfiguration]:
    """Preprocess every training case of a raw dataset for the given configurations.

    Args:
        dataset: raw dataset folder, ``DatasetXXX_Name``, name or id (looked up under ``nnUNet_raw``).
        configurations: e.g. ``["2d", "3d_fullres"]``; a name missing from the plans is skipped with a warning.
        plans: plans dict, ``Plans`` or path; default ``<output_folder>/nnUNetPlans.json``.
        output_folder: the dataset's preprocessed folder; default ``<nnUNet_preprocessed>/<DatasetName>``.
            Cases go to ``<output_folder>/<data_identifier>/``, label copies to ``gt_segmentations/``.
        num_workers: processes; default nnU-Net's (8 for 2d and 3d_lowres, 4 otherwise), at most the CPU count.
        overwrite: redo cases whose stored ``preprocessing_key`` says they are up to date.

    Returns:
        One :class:`PreprocessedConfiguration` per configuration done.
    """
    raw_folder = find_dataset(dataset)
    name = raw_folder.resolve().name
    output_folder = Path(output_folder) if output_folder is not None else preprocessed_root() / name
    if plans is None:
        plans = output_folder / "nnUNetPlans.json"
        if not plans.is_file():
            raise FileNotFoundError(f"{plans}: no plans; plan the dataset first or pass plans")
    plans = as_plans(plans)
    if plans.image_reader_writer == "NibabelIOWithReorient":
        warnings.warn(
            "the plans ask for nnU-Net's NibabelIOWithReorient; nnseg_nb reads images as SimpleITKIO does, "
            "so images not stored in RAS orientation come out in another axis order than nnU-Net's",
            stacklevel=2,
        )
    dataset_json = load_dataset_json(raw_folder)
    cases = find_cases(raw_folder, dataset_json)
    unlabelled = [c.identifier for c in cases.values() if c.label is None]
    if not cases or unlabelled:
        raise ValueError(
            f"{raw_folder}: "
            + (
                f"training cases without a label file: {', '.join(unlabelled)}"
                if unlabelled
                else "no training cases found"
            )
        )
    configurations = [configurations] if isinstance(configurations, str) else list(configurations)
    available = plans.configuration_names
    missing = [c for c in configurations if c not in available]
    if missing and len(missing) == len(configurations):
        raise ValueError(
            f"configurations {', '.join(missing)} are not in the plans; available: {', '.join(available)}"
        )
    results = []
    for configuration_name in configurations:
        if configuration_name in missing:
            warnings.warn(f"configuration {configuration_name!r} is not in the plans; skipped", stacklevel=2)
            continue
        folder = output_folder / plans.configuration(configuration_name).data_identifier
        result = PreprocessedConfiguration(configuration_name, folder)
        jobs = []
        for case in cases.values():
            key = preprocessing_key(plans, configuration_name, dataset_json, case)
            if not overwrite and is_up_to_date(folder, case.identifier, key):
                result.up_to_date.append(case.identifier)
            else:
                jobs.append(_CaseJob(case, folder, plans, configuration_name, dataset_json, key))
        workers = num_workers or min(DEFAULT_NUM_WORKERS.get(configuration_name, 4), os.cpu_count() or 1)
        try:
            result.processed = sorted(
                map_in_processes(_preprocess_and_save, jobs, workers, progress, configuration_name)
            )
        except BrokenProcessPool:
            raise RuntimeError(
                "a preprocessing worker died, most likely out of memory; use fewer workers (-np)"
            ) from None
        results.append(result)
    _copy_ground_truth(cases, output_folder / "gt_segmentations", dataset_json["file_ending"])
    return results
