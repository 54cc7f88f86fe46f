"""nnU-Net's postprocessing: keep only the largest connected component, where cross-validation says it helps.

    result = determine_postprocessing("crossval_results_folds_0_1_2_3_4", "raw/Dataset901/labelsTr",
                                      dataset_json="raw/Dataset901/dataset.json")
    result.postprocessing_kwargs      # e.g. [{"labels_or_regions": [1, 2]}]: the accepted operations
    apply_postprocessing("predictions", "predictions_pp", "crossval_results_folds_0_1_2_3_4/postprocessing.json")

The one operation (``remove_all_but_largest_component``): take the union of the given labels or regions,
label its connected components with **full connectivity** (26 neighbours in 3D, 8 in 2D: skimage's
``label`` default that nnU-Net calls through acvl_utils), keep the largest (every one of the largest on a
tie) and set the voxels of the others to background 0 (never to another class).

The decision (nnU-Net's ``determine_postprocessing``), on the cross-validation predictions:

1. All foreground as one object (the foreground *labels*, even for regions). Accepted iff the
   foreground mean Dice strictly improves and no class's mean Dice gets worse.
2. Only with more than one label or region: each in dataset.json order, alone, on top of what was
   accepted so far. Accepted iff *its own* mean Dice strictly improves (other classes are not checked).

Accepted operations are applied in that order. The input folder's ``summary.json`` is the baseline; as in
nnU-Net an existing one is reused, not recomputed. Files written next to the predictions, as nnU-Net
2.8.1 writes them: ``postprocessing.json`` (summaries before and after, function names, kwargs),
``postprocessing.pkl`` (loadable by nnU-Net's ``nnUNetv2_apply_postprocessing``; ours reads either) and
``postprocessed/`` (final label maps and their ``summary.json``). Candidates are scored in memory, so
there is no ``postprocessed/temp`` folder.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnseg_nb.evaluation import (
    LabelOrRegion,
    evaluate_arrays,
    evaluate_folders,
    key_of,
    labels_or_regions_from_dataset_json,
    load_summary_json,
    region_mask,
    save_summary_json,
    summarize,
)
from nnseg_nb.io import SafeUnpickler, read_seg, write_seg
from nnseg_nb.parallel import map_in_processes
from nnseg_nb.utils import atomic_write_bytes, atomic_write_json

# nnU-Net stores the operation by this name (postprocessing.json) and import path (postprocessing.pkl).
NNUNET_FUNCTION_MODULE = "nnunetv2.postprocessing.remove_connected_components"
NNUNET_FUNCTION_NAME = "remove_all_but_largest_component_from_segmentation"

Operation = dict  # {"labels_or_regions": int | tuple | list}: kwargs of one removal, as nnU-Net stores them


# --- the operation -----------------------------------------------------------------------------


def largest_component_mask(mask: np.ndarray) -> np.ndarray:
    """The largest full-connectivity component of a boolean mask (all of them on a size tie).

    >>> mask = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]], bool)
    >>> largest_component_mask(mask).astype(int)   # (0,0)-(0,1) is the largest; corners touch diagonally
    array([[1, 1, 0, 0],
           [0, 0, 0, 0],
           [0, 0, 0, 0]])
    """
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)  # full connectivity
    components, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(components.ravel())[1:]
    largest = np.flatnonzero(sizes == sizes.max()) + 1
    return np.isin(components, largest)


def remove_all_but_largest_component(
    segmentation: np.ndarray, labels_or_regions: LabelOrRegion | list[LabelOrRegion]
) -> np.ndarray:
    """Set every component of the union of ``labels_or_regions`` but the largest to background 0.

    ``labels_or_regions``: a label (``1``), a region (``(1, 2)``) or a list of them (``[1, 2]``: all
    foreground as one object). The input is not modified.

    >>> seg = np.array([[1, 1, 0, 2, 0, 1]])
    >>> remove_all_but_largest_component(seg, 1)
    array([[1, 1, 0, 2, 0, 0]])
    >>> remove_all_but_largest_component(seg, [1, 2])   # foreground: {1, 1}, {2}, {1} -> keep the first
    array([[1, 1, 0, 0, 0, 0]])
    """
    items = labels_or_regions if isinstance(labels_or_regions, list) else [labels_or_regions]
    mask = np.zeros(segmentation.shape, dtype=bool)
    for item in items:
        mask |= region_mask(segmentation, item)
    result = segmentation.copy()
    result[mask & ~largest_component_mask(mask)] = 0
    return result


def apply_operations(segmentation: np.ndarray, operations: Sequence[Operation]) -> np.ndarray:
    """Apply the operations of a postprocessing file in order."""
    for operation in operations:
        segmentation = remove_all_but_largest_component(segmentation, operation["labels_or_regions"])
    return segmentation


# --- the decision ------------------------------------------------------------------------------


@dataclass
class PostprocessingStep:
    """One tried operation: on which classes, the Dice it was judged by, and whether it was kept."""

    operation: Operation
    scope: str  # "foreground" (step 1) or "class" (step 2)
    judged_on: str  # "foreground_mean" or the class key, e.g. "1" or "(1, 2)"
    dice_before: float
    dice_after: float
    accepted: bool


@dataclass
class PostprocessingResult:
    """What :func:`determine_postprocessing` decided, with the summaries before and after."""

    postprocessing_kwargs: list[Operation]
    steps: list[PostprocessingStep] = field(default_factory=list)
    summary_before: dict = field(default_factory=dict)
    summary_after: dict = field(default_factory=dict)


def _score_case(
    files: tuple[str, str, str | None],
    operations: list[Operation],
    labels_or_regions: list,
    ignore_label: int | None,
) -> dict:
    """Read one prediction, apply ``operations``, score it; write it too when an output file is given."""
    reference_file, prediction_file, output_file = files
    reference, _ = read_seg(reference_file)
    prediction, props = read_seg(prediction_file)
    segmentation = apply_operations(prediction[0].astype(np.int32), operations)
    if output_file is not None:
        write_seg(segmentation, output_file, props)
    metrics = evaluate_arrays(
        reference[0].astype(np.int32),
        segmentation,
        labels_or_regions,
        ignore_label,
        distance_metrics_on=False,
    )
    return {
        "reference_file": reference_file,
        "prediction_file": output_file or prediction_file,
        "metrics": metrics,
    }


def _score_folder(
    files: list[tuple[str, str, str | None]],
    operations: list[Operation],
    labels_or_regions: list,
    ignore_label: int | None,
    num_workers: int | None,
    progress: bool,
    desc: str,
) -> dict:
    """The summary of a folder's predictions after ``operations`` (in memory; written where asked)."""
    score = partial(
        _score_case, operations=operations, labels_or_regions=labels_or_regions, ignore_label=ignore_label
    )
    per_case = map_in_processes(score, files, num_workers, progress=progress, desc=desc)
    return summarize(per_case, labels_or_regions)


def determine_postprocessing(
    prediction_folder: str | os.PathLike,
    reference_folder: str | os.PathLike,
    plans: object | None = None,
    dataset_json: dict | str | os.PathLike | None = None,
    num_workers: int | None = None,
    keep_postprocessed_files: bool = True,
    progress: bool = True,
) -> PostprocessingResult:
    """Decide nnU-Net's postprocessing on cross-validation predictions; write its files (module docstring).

    Args:
        prediction_folder: predicted label maps (e.g. ``crossval_results_folds_0_1_2_3_4``).
        reference_folder: the ground truth of the same cases (``labelsTr`` or ``gt_segmentations``).
        plans: accepted for nnU-Net's signature; the reader is chosen by file ending, so it is not used.
        dataset_json: dict or path; default ``prediction_folder/dataset.json`` (copied there by prediction).
        keep_postprocessed_files: keep ``postprocessed/`` (nnU-Net's default) or delete it at the end.

    Returns:
        The accepted operations and every step's Dice before and after.
    """
    from nnseg_nb.dataset import LabelInfo, load_dataset_json

    del plans  # nnU-Net takes the reader/writer from the plans; ours follows the file ending
    prediction_folder, reference_folder = Path(prediction_folder), Path(reference_folder)
    if dataset_json is None:
        dataset_json = prediction_folder / "dataset.json"
        if not dataset_json.is_file():
            raise FileNotFoundError(f"{dataset_json}: no dataset.json; give dataset_json")
    if not isinstance(dataset_json, dict):
        dataset_json = load_dataset_json(dataset_json)
    info = LabelInfo.from_dataset_json(dataset_json)
    labels_or_regions = labels_or_regions_from_dataset_json(dataset_json)
    ending = dataset_json["file_ending"]
    names = sorted(p.name for p in prediction_folder.iterdir() if p.name.endswith(ending) and p.is_file())
    if not names:
        raise ValueError(f"{prediction_folder}: no {ending} predictions")
    in_memory = [(str(reference_folder / n), str(prediction_folder / n), None) for n in names]
    score = partial(
        _score_folder,
        labels_or_regions=labels_or_regions,
        ignore_label=info.ignore_label,
        num_workers=num_workers,
        progress=progress,
    )

    summary_file = prediction_folder / "summary.json"
    if not summary_file.is_file():  # as nnU-Net: an existing summary is the baseline, not recomputed
        evaluate_folders(
            reference_folder,
            prediction_folder,
            labels_or_regions,
            info.ignore_label,
            ending,
            summary_file,
            num_workers,
            distance_metrics_on=False,
            progress=progress,
        )
    before = load_summary_json(summary_file)
    if set(before["mean"]) != set(labels_or_regions):
        raise ValueError(
            f"{summary_file} scores {sorted(map(key_of, before['mean']))}, not the dataset's "
            f"{sorted(map(key_of, labels_or_regions))}: delete it to have it recomputed"
        )
    step, after = _foreground_step(score, in_memory, before, info.foreground_labels, labels_or_regions)
    steps, accepted = [step], [step.operation] if step.accepted else []
    if len(labels_or_regions) > 1:
        current = after if step.accepted else before
        steps += _per_class_steps(score, in_memory, current, accepted, labels_or_regions)
        accepted = [step.operation for step in steps if step.accepted]

    output_folder = prediction_folder / "postprocessed"
    to_files = [
        (str(reference_folder / n), str(prediction_folder / n), str(output_folder / n)) for n in names
    ]
    final = score(to_files, accepted, desc="postprocessing: write")
    save_summary_json(final, output_folder / "summary.json")
    save_postprocessing(prediction_folder, accepted, before, final)
    if not keep_postprocessed_files:
        shutil.rmtree(output_folder)
    return PostprocessingResult(accepted, steps, before, final)


def _foreground_step(score, files, before: dict, foreground_labels: list[int], labels_or_regions: list):
    """Step 1: all foreground labels as one object; kept iff the foreground mean Dice strictly improves
    and no class's mean Dice drops (NaN compares False either way, as in nnU-Net). Returns the step and
    the summary after it."""
    operation = {"labels_or_regions": list(foreground_labels)}
    after = score(files, [operation], desc="postprocessing: foreground")
    better = after["foreground_mean"]["Dice"] > before["foreground_mean"]["Dice"]
    no_class_worse = not any(after["mean"][r]["Dice"] < before["mean"][r]["Dice"] for r in labels_or_regions)
    dice_before, dice_after = before["foreground_mean"]["Dice"], after["foreground_mean"]["Dice"]
    step = PostprocessingStep(
        operation, "foreground", "foreground_mean", dice_before, dice_after, better and no_class_worse
    )
    return step, after


def _per_class_steps(score, files, current: dict, accepted: list, labels_or_regions: list):
    """Step 2: each label or region alone, on top of what was accepted; kept iff its own mean Dice strictly
    improves. ``current`` is the summary of what was accepted so far."""
    steps = []
    for label_or_region in labels_or_regions:
        operation = {"labels_or_regions": label_or_region}
        after = score(files, [*accepted, operation], desc=f"postprocessing: {key_of(label_or_region)}")
        dice_before = current["mean"][label_or_region]["Dice"]
        dice_after = after["mean"][label_or_region]["Dice"]
        keep = dice_after > dice_before
        steps.append(
            PostprocessingStep(operation, "class", key_of(label_or_region), dice_before, dice_after, keep)
        )
        if keep:
            current, accepted = after, [*accepted, operation]
    return steps


# --- postprocessing.json / .pkl ------------------------------------------------------------------


def save_postprocessing(
    folder: str | os.PathLike, operations: list[Operation], before: dict, after: dict
) -> None:
    """Write ``postprocessing.json`` and ``postprocessing.pkl`` as nnU-Net 2.8.1 writes them."""
    folder = Path(folder)
    record = {
        "input_folder": {
            "foreground_mean": before["foreground_mean"],
            "mean": {key_of(k): v for k, v in before["mean"].items()},
        },
        "postprocessed": {
            "foreground_mean": after["foreground_mean"],
            "mean": {key_of(k): v for k, v in after["mean"].items()},
        },
        "postprocessing_fns": [NNUNET_FUNCTION_NAME] * len(operations),
        "postprocessing_kwargs": operations,
    }
    atomic_write_json(folder / "postprocessing.json", record, sort_keys=True)
    functions = [_NnunetFunction() for _ in operations]
    atomic_write_bytes(folder / "postprocessing.pkl", pickle.dumps((functions, operations), protocol=4))


class _NnunetFunction:
    """Pickles as a reference to nnU-Net's function, so nnU-Net loads our postprocessing.pkl."""

    def __reduce__(self):
        return getattr, (_NnunetModule(), NNUNET_FUNCTION_NAME)


class _NnunetModule:
    def __reduce__(self):
        import importlib

        return importlib.import_module, (NNUNET_FUNCTION_MODULE,)


class _PostprocessingUnpickler(SafeUnpickler):
    """Reads nnU-Net's postprocessing.pkl without nnunetv2: its function becomes a name; numpy and plain
    values load as :class:`~nnseg_nb.io.SafeUnpickler` loads them, anything else is refused."""

    def find_class(self, module: str, name: str):
        if module == NNUNET_FUNCTION_MODULE and name == NNUNET_FUNCTION_NAME:
            return NNUNET_FUNCTION_NAME
        if module in ("importlib", "builtins") and name in ("import_module", "getattr"):  # our own .pkl
            return {"import_module": lambda m: m, "getattr": lambda m, n: n}[name]
        return super().find_class(module, name)


def load_postprocessing(path: str | os.PathLike) -> list[Operation]:
    """The operations of a ``postprocessing.json`` or ``.pkl`` (ours or nnU-Net's), in order.

    Values come back as ints, regions as tuples, lists (all foreground) as lists.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such postprocessing file")
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            functions, kwargs = _PostprocessingUnpickler(f, path).load()
    else:
        from nnseg_nb.utils import load_json

        record = load_json(path)
        if "postprocessing_fns" not in record or "postprocessing_kwargs" not in record:
            raise ValueError(
                f"{path}: not a postprocessing.json (no postprocessing_fns / postprocessing_kwargs)"
            )
        functions, kwargs = record["postprocessing_fns"], record["postprocessing_kwargs"]
    unknown = sorted({str(f) for f in functions} - {NNUNET_FUNCTION_NAME})
    if unknown:
        raise ValueError(f"{path}: unknown postprocessing functions {', '.join(unknown)}")
    return [{"labels_or_regions": _as_labels_or_regions(k["labels_or_regions"])} for k in kwargs]


def _as_labels_or_regions(value):
    if isinstance(value, tuple):
        return tuple(int(v) for v in value)
    if isinstance(value, list):  # JSON writes regions and label lists alike; the mask is the same union
        return [int(v) if np.isscalar(v) else tuple(int(x) for x in v) for v in value]
    return int(value)


def apply_postprocessing(
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    postprocessing_file: str | os.PathLike,
    file_ending: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Apply a ``postprocessing.json``/``.pkl`` to every label map of ``input_folder`` (nnU-Net's
    ``nnUNetv2_apply_postprocessing``); returns the written files. The file ending defaults to
    ``input_folder/dataset.json``'s, else ``.nii.gz``.
    """
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    operations = load_postprocessing(postprocessing_file)
    if file_ending is None:
        dataset_json = input_folder / "dataset.json"
        from nnseg_nb.utils import load_json

        file_ending = load_json(dataset_json)["file_ending"] if dataset_json.is_file() else ".nii.gz"
    names = sorted(p.name for p in input_folder.iterdir() if p.is_file() and p.name.endswith(file_ending))
    if not names:
        raise ValueError(f"{input_folder}: no {file_ending} files to postprocess")
    items = [(str(input_folder / n), str(output_folder / n)) for n in names]
    map_in_processes(
        partial(_postprocess_file, operations=operations), items, num_workers, progress, "postprocess"
    )
    return [output_folder / n for n in names]


def _postprocess_file(item: tuple[str, str], operations: list[Operation]) -> None:
    source, target = item
    segmentation, props = read_seg(source)
    write_seg(apply_operations(segmentation[0].astype(np.int32), operations), target, props)
