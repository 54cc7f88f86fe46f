"""Score predicted segmentations against references, per case and per class or region, as nnU-Net does.

    summary = evaluate_folders("raw/Dataset901/labelsTr", "results/.../validation", [1, 2],
                               output_file="summary.json")
    summary["foreground_mean"]["Dice"]        # mean over classes of the mean over cases
    summary["mean"][1]["HD95"]                # millimetres (extra metric, nnU-Net has none)
    evaluate_folders_with_dataset_json(labels_folder, validation_folder, "dataset.json")  # labels from there

For each class (a label value) or region (a tuple of labels, scored as their union) and each case:
``TP, FP, FN, TN`` counted outside the ignore label's voxels, ``n_ref = TP + FN``, ``n_pred = TP + FP``,
``Dice = 2TP / (2TP + FP + FN)`` and ``IoU = TP / (TP + FP + FN)``; both are NaN when reference and
prediction are empty (nnU-Net's rule), 0 when only one is. ``mean`` is the NaN-skipping mean over cases,
``foreground_mean`` the plain mean over classes (label 0 left out), so a class that is NaN in every case
makes it NaN, as in nnU-Net.

``summary.json`` has nnU-Net's layout key for key (``metric_per_case`` with ``reference_file``,
``prediction_file`` and ``metrics``; ``mean``; ``foreground_mean``; region keys written ``"(1, 2)"``,
sorted keys), so nnU-Net's ``load_summary_json`` and ``find_best_configuration`` read ours. Two extra
metrics, spacing-aware and in millimetres, sit next to nnU-Net's in each metrics dict (switch them off
with ``distance_metrics_on=False``; the tolerance used is written as the top-level ``nsd_tolerance_mm``):

- ``HD95``: the larger of the two directed 95th percentiles of the surface distances (prediction surface
  to reference surface and back; MONAI's ``compute_hausdorff_distance(percentile=95)``). NaN when the
  reference or the prediction is empty (MONAI's default), so a missed object shows in Dice and NSD.
- ``NSD``: normalized surface Dice at ``nsd_tolerance_mm``: the share of both surfaces that lies within
  the tolerance of the other (MONAI's ``compute_surface_dice``, voxel-counted). 0 when exactly one is
  empty, NaN when both are. The default, 1 mm, is about one voxel of a typical CT or MR scan, i.e. "the
  boundary is right to within a voxel"; a structure's own inter-rater variation is the better choice
  where it is known (Nikolov et al. 2021, who introduced the metric).

A surface voxel is a mask voxel with a face neighbour outside the mask (or outside the image). Voxels of
the ignore label belong to neither mask, so both surfaces are cut alike where the ignore region starts.
Both equal MONAI 1.6.1's on 3D anisotropic and 2D masks (tests/fixtures/make_distance_metrics.py).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnseg_nb.io import file_ending as ending_of
from nnseg_nb.io import read_seg
from nnseg_nb.parallel import map_in_processes
from nnseg_nb.utils import atomic_write_json, load_json

LabelOrRegion = int | tuple[int, ...]
# The metrics nnU-Net writes, in its order; the distance metrics follow when switched on.
NNUNET_METRICS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")
DISTANCE_METRICS = ("HD95", "NSD")
DEFAULT_NSD_TOLERANCE_MM = 1.0


# --- labels and regions --------------------------------------------------------------------------


def labels_or_regions_from_dataset_json(dataset_json: dict) -> list[LabelOrRegion]:
    """What nnU-Net scores for a dataset: its foreground labels, or its foreground regions.

    Regions keep nnU-Net's types: a list becomes a tuple, a plain value stays an int (its key is then
    ``"3"``, not ``"(3,)"``).

    >>> labels_or_regions_from_dataset_json({"labels": {"background": 0, "gm": 1, "wm": 2, "ignore": 3}})
    [1, 2]
    >>> labels_or_regions_from_dataset_json({"labels": {"background": 0, "whole": [1, 2], "core": 2},
    ...                                      "regions_class_order": [1, 2]})
    [(1, 2), 2]
    """
    from nnseg_nb.dataset import LabelInfo

    info = LabelInfo.from_dataset_json(dataset_json)
    if not info.has_regions:
        return info.foreground_labels
    regions = []
    for name, value in dataset_json["labels"].items():
        region = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value)
        if name == "ignore" or set(np.atleast_1d(region).tolist()) == {0}:
            continue
        regions.append(region)
    return regions


def key_of(label_or_region: LabelOrRegion) -> str:
    """The JSON key nnU-Net writes: ``1 -> "1"``, ``(1, 2) -> "(1, 2)"``."""
    return str(
        tuple(int(v) for v in label_or_region) if isinstance(label_or_region, tuple) else int(label_or_region)
    )


def label_or_region_from_key(key: str) -> LabelOrRegion:
    """Inverse of :func:`key_of`: ``"(1, 2)" -> (1, 2)``, ``"(3,)" -> (3,)``, ``"1" -> 1``."""
    key = key.strip()
    if not key.startswith("("):
        return int(key)
    return tuple(int(v) for v in key.strip("()").split(",") if v.strip())


def region_mask(segmentation: np.ndarray, label_or_region: LabelOrRegion) -> np.ndarray:
    """Boolean mask of a label, or of the union of a region's labels."""
    if isinstance(label_or_region, tuple):
        return np.isin(segmentation, label_or_region)
    return segmentation == label_or_region


# --- metrics of one mask pair ------------------------------------------------------------------


def confusion_counts(
    mask_ref: np.ndarray, mask_pred: np.ndarray, ignore_mask: np.ndarray | None = None
) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, TN)`` of two boolean masks, voxels of ``ignore_mask`` not counted."""
    use = np.ones_like(mask_ref) if ignore_mask is None else ~ignore_mask
    tp = int(np.count_nonzero(mask_ref & mask_pred & use))
    fp = int(np.count_nonzero(~mask_ref & mask_pred & use))
    fn = int(np.count_nonzero(mask_ref & ~mask_pred & use))
    tn = int(np.count_nonzero(~mask_ref & ~mask_pred & use))
    return tp, fp, fn, tn


def overlap_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | int]:
    """nnU-Net's metrics dict from the counts (Dice and IoU NaN when ``TP + FP + FN == 0``).

    >>> overlap_metrics(3, 1, 2, 10)["Dice"]
    0.6666666666666666
    """
    empty = tp + fp + fn == 0
    return {
        "Dice": float("nan") if empty else 2 * tp / (2 * tp + fp + fn),
        "IoU": float("nan") if empty else tp / (tp + fp + fn),
        "FP": fp,
        "TP": tp,
        "FN": fn,
        "TN": tn,
        "n_pred": fp + tp,
        "n_ref": fn + tp,
    }


def surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour outside the mask; voxels on the image border are surface."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    mask_ref: np.ndarray, mask_pred: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each prediction surface voxel to the reference surface, and back.

    Both masks must be non-empty. Axes of length 1 (a 2D image as ``(1, Y, X)``) are dropped, so a
    2D image has an in-plane surface. Only the masks' joint bounding box (plus one voxel) is searched.
    """
    keep = [axis for axis, size in enumerate(mask_ref.shape) if size > 1]
    squeeze = tuple(axis for axis in range(mask_ref.ndim) if axis not in keep)
    mask_ref, mask_pred = mask_ref.squeeze(squeeze), mask_pred.squeeze(squeeze)
    spacing = [float(spacing[axis]) for axis in keep]
    box = _bounding_box(mask_ref | mask_pred, margin=1)
    surface_ref, surface_pred = surface(mask_ref[box]), surface(mask_pred[box])
    to_ref = ndimage.distance_transform_edt(~surface_ref, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)
    return to_ref[surface_pred], to_pred[surface_ref]


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        where = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(where[0] - margin, 0), min(where[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)


def distance_metrics(
    mask_ref: np.ndarray,
    mask_pred: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict[str, float]:
    """``{"HD95": mm, "NSD": share}`` of two boolean masks (see the module docstring for empty masks).

    >>> ref = np.zeros((1, 1, 10), bool); ref[0, 0, 2:5] = True    # voxels 2..4, surface {2, 4}
    >>> pred = np.zeros((1, 1, 10), bool); pred[0, 0, 3:6] = True   # voxels 3..5, surface {3, 5}
    >>> distance_metrics(ref, pred, spacing=(1.0, 1.0, 2.0), nsd_tolerance_mm=2.0)  # one 2 mm voxel apart
    {'HD95': 2.0, 'NSD': 1.0}
    """
    has_ref, has_pred = bool(mask_ref.any()), bool(mask_pred.any())
    if not has_ref and not has_pred:
        return {"HD95": float("nan"), "NSD": float("nan")}
    if not has_ref or not has_pred:
        return {"HD95": float("nan"), "NSD": 0.0}
    pred_to_ref, ref_to_pred = surface_distances(mask_ref, mask_pred, spacing)
    hd95 = max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95))
    within = np.count_nonzero(pred_to_ref <= nsd_tolerance_mm) + np.count_nonzero(
        ref_to_pred <= nsd_tolerance_mm
    )
    return {"HD95": float(hd95), "NSD": float(within / (pred_to_ref.size + ref_to_pred.size))}


# --- one case -------------------------------------------------------------------------------------


def evaluate_arrays(
    reference: np.ndarray,
    prediction: np.ndarray,
    labels_or_regions: Sequence[LabelOrRegion],
    ignore_label: int | None = None,
    spacing: Sequence[float] | None = None,
    distance_metrics_on: bool = True,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict[LabelOrRegion, dict[str, float | int]]:
    """Metrics of one case: ``{label_or_region: {"Dice": ..., "TP": ..., "HD95": ...}}``.

    Args:
        reference, prediction: label maps of the same shape, e.g. ``(Z, Y, X)`` or ``(1, Z, Y, X)``.
        labels_or_regions: ints (labels) and tuples (regions), e.g. ``[1, 2]`` or ``[(1, 2), 2]``.
        ignore_label: voxels where the *reference* has this value are not scored.
        spacing: voxel size in mm per axis of the arrays (a leading channel axis needs no entry);
            1 mm per axis when None.
        distance_metrics_on: add ``HD95`` and ``NSD``.

    >>> ref = np.array([[0, 1, 1, 2]]); pred = np.array([[1, 1, 0, 0]])
    >>> m = evaluate_arrays(ref, pred, [1, 2], distance_metrics_on=False)
    >>> m[1]["Dice"], m[2]["Dice"], m[2]["n_ref"]
    (0.5, 0.0, 1)
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"reference shape {reference.shape} differs from prediction shape {prediction.shape}"
        )
    ignore_mask = reference == ignore_label if ignore_label is not None else None
    if spacing is None:
        spacing = [1.0] * reference.ndim
    spacing = [1.0] * (reference.ndim - len(spacing)) + [float(s) for s in spacing]
    metrics = {}
    for label_or_region in labels_or_regions:
        mask_ref = region_mask(reference, label_or_region)
        mask_pred = region_mask(prediction, label_or_region)
        metrics[label_or_region] = overlap_metrics(*confusion_counts(mask_ref, mask_pred, ignore_mask))
        if distance_metrics_on:
            if ignore_mask is not None:
                mask_ref, mask_pred = mask_ref & ~ignore_mask, mask_pred & ~ignore_mask
            metrics[label_or_region].update(distance_metrics(mask_ref, mask_pred, spacing, nsd_tolerance_mm))
    return metrics


def evaluate_files(
    files: tuple[str, str],
    labels_or_regions: Sequence[LabelOrRegion],
    ignore_label: int | None = None,
    distance_metrics_on: bool = True,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict:
    """One ``metric_per_case`` entry: read ``(reference_file, prediction_file)`` and score them."""
    reference_file, prediction_file = files
    reference, props = read_seg(reference_file)
    prediction, _ = read_seg(prediction_file)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"{prediction_file}: shape {prediction.shape[1:]} differs from its reference "
            f"{reference_file} {reference.shape[1:]}"
        )
    metrics = evaluate_arrays(
        reference[0].astype(np.int32),
        prediction[0].astype(np.int32),
        labels_or_regions,
        ignore_label,
        spacing=props["spacing"],
        distance_metrics_on=distance_metrics_on,
        nsd_tolerance_mm=nsd_tolerance_mm,
    )
    return {"reference_file": reference_file, "prediction_file": prediction_file, "metrics": metrics}


# --- many cases ----------------------------------------------------------------------------------


def summarize(metric_per_case: list[dict], labels_or_regions: Sequence[LabelOrRegion]) -> dict:
    """nnU-Net's summary from per-case entries: NaN-skipping ``mean`` per class, plain ``foreground_mean``."""
    if not metric_per_case:
        raise ValueError("there are no cases to summarize")
    metric_names = list(metric_per_case[0]["metrics"][labels_or_regions[0]])
    mean = {}
    with warnings.catch_warnings():  # a class that is NaN in every case: its mean is NaN, said once here
        warnings.simplefilter("ignore", RuntimeWarning)
        for label_or_region in labels_or_regions:
            mean[label_or_region] = {
                name: float(np.nanmean([case["metrics"][label_or_region][name] for case in metric_per_case]))
                for name in metric_names
            }
    foreground = [r for r in labels_or_regions if not (not isinstance(r, tuple) and r == 0)]
    foreground_mean = {name: float(np.mean([mean[r][name] for r in foreground])) for name in metric_names}
    return {"metric_per_case": metric_per_case, "mean": mean, "foreground_mean": foreground_mean}


def evaluate_folders(
    reference_folder: str | os.PathLike,
    prediction_folder: str | os.PathLike,
    labels_or_regions: Sequence[LabelOrRegion],
    ignore_label: int | None = None,
    file_ending: str | None = None,
    output_file: str | os.PathLike | None = None,
    num_workers: int | None = None,
    allow_missing_predictions: bool = True,
    distance_metrics_on: bool = True,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    progress: bool = True,
) -> dict:
    """Score every prediction file against the reference of the same name (nnU-Net's ``compute_metrics_on_folder``).

    Args:
        reference_folder, prediction_folder: label maps named ``{case}{file_ending}``.
        labels_or_regions: e.g. ``[1, 2]``, or ``labels_or_regions_from_dataset_json(dataset_json)``.
        ignore_label: reference voxels with this value are not scored.
        file_ending: e.g. ``".nii.gz"``; default: that of the first reference file.
        output_file: where to write ``summary.json`` (a ``.json`` path), or None.
        allow_missing_predictions: nnU-Net's ``chill``: references without a prediction are skipped
            (True) or an error (False). Only predicted cases are scored either way.

    Returns:
        ``{"metric_per_case": [...], "mean": {label_or_region: {...}}, "foreground_mean": {...}}``
        with int/tuple keys (written as nnU-Net's string keys).
    """
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    for folder in (reference_folder, prediction_folder):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
    if output_file is not None and not str(output_file).endswith(".json"):
        raise ValueError(f"{output_file}: the summary file must end with .json")
    if not labels_or_regions:
        raise ValueError("labels_or_regions is empty: give the labels (or regions) to score")
    file_ending = file_ending or _first_file_ending(reference_folder)
    predicted = _files_with_ending(prediction_folder, file_ending)
    references = _files_with_ending(reference_folder, file_ending)
    if not predicted:
        raise ValueError(f"{prediction_folder}: no {file_ending} files to evaluate")
    missing_references = sorted(set(predicted) - set(references))
    if missing_references:
        raise ValueError(
            f"{reference_folder}: no reference for the predictions {', '.join(missing_references)}"
        )
    missing_predictions = sorted(set(references) - set(predicted))
    if missing_predictions and not allow_missing_predictions:
        raise ValueError(f"{prediction_folder}: no prediction for {', '.join(missing_predictions)}")
    pairs = [
        (os.path.join(reference_folder, name), os.path.join(prediction_folder, name)) for name in predicted
    ]
    score = partial(
        evaluate_files,
        labels_or_regions=list(labels_or_regions),
        ignore_label=ignore_label,
        distance_metrics_on=distance_metrics_on,
        nsd_tolerance_mm=nsd_tolerance_mm,
    )
    metric_per_case = map_in_processes(score, pairs, num_workers, progress=progress, desc="evaluate")
    summary = summarize(metric_per_case, list(labels_or_regions))
    if distance_metrics_on:
        summary["nsd_tolerance_mm"] = float(nsd_tolerance_mm)
    if output_file is not None:
        save_summary_json(summary, output_file)
    return summary


def evaluate_folders_with_dataset_json(
    reference_folder: str | os.PathLike,
    prediction_folder: str | os.PathLike,
    dataset_json: dict | str | os.PathLike,
    output_file: str | os.PathLike | None = None,
    num_workers: int | None = None,
    **options,
) -> dict:
    """:func:`evaluate_folders` with the labels or regions, ignore label and file ending of a dataset.json
    (nnU-Net's ``compute_metrics_on_folder2``; its trainer's final validation scores this way).

    ``output_file`` defaults to ``prediction_folder/summary.json``; ``options`` go to :func:`evaluate_folders`.
    """
    from nnseg_nb.dataset import load_dataset_json

    if not isinstance(dataset_json, dict):
        dataset_json = load_dataset_json(dataset_json)
    return evaluate_folders(
        reference_folder,
        prediction_folder,
        labels_or_regions_from_dataset_json(dataset_json),
        dataset_json["labels"].get("ignore"),
        dataset_json["file_ending"],
        Path(prediction_folder) / "summary.json" if output_file is None else output_file,
        num_workers,
        **options,
    )


def _files_with_ending(folder: Path, file_ending: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(file_ending))


def _first_file_ending(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in files if p.suffix not in (".json", ".pkl", ".npz", ".txt")]
    if not files:
        raise ValueError(f"{folder}: no reference files (give file_ending if they have an unusual name)")
    return ending_of(files[0])


# --- summary.json ----------------------------------------------------------------------------------


def save_summary_json(summary: dict, path: str | os.PathLike) -> None:
    """Write ``summary`` as nnU-Net's ``summary.json``: string keys ``"1"``/``"(1, 2)"``, sorted, indent 4."""
    converted = dict(summary)
    converted["mean"] = {key_of(k): v for k, v in summary["mean"].items()}
    converted["metric_per_case"] = [
        {**case, "metrics": {key_of(k): v for k, v in case["metrics"].items()}}
        for case in summary["metric_per_case"]
    ]
    atomic_write_json(path, converted, sort_keys=True)


def load_summary_json(path: str | os.PathLike) -> dict:
    """Read a ``summary.json`` (ours or nnU-Net's) with int/tuple keys, as nnU-Net's reader returns it."""
    summary = load_json(path)
    for required in ("mean", "foreground_mean", "metric_per_case"):
        if required not in summary:
            raise ValueError(f"{path}: not a summary.json (no {required!r})")
    summary["mean"] = {label_or_region_from_key(k): v for k, v in summary["mean"].items()}
    for case in summary["metric_per_case"]:
        case["metrics"] = {label_or_region_from_key(k): v for k, v in case["metrics"].items()}
    return summary
