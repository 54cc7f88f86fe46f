"""Ensemble predictions of several models by averaging their probabilities, as ``nnUNetv2_ensemble`` does.

    ensemble_folders(["pred_2d", "pred_3d_fullres"], "pred_ensemble")   # each run with --save_probabilities
    # pred_ensemble/{case}.nii.gz for every case, plus dataset.json

Each input folder holds what prediction with ``--save_probabilities`` writes: ``{case}.npz`` (key
``probabilities``, ``(C, Z, Y, X)`` at the original resolution, the reader's axis order) and ``{case}.pkl``
(the reader's properties: geometry), and ``dataset.json``. For every case the float32 mean of the members'
probabilities (summed in folder order, then divided, as nnU-Net does) becomes a label map:

- labels: ``argmax`` over the channels;
- regions: start from 0 and, for each region in ``regions_class_order``, write its label where the
  region's probability is above 0.5 (later regions overwrite earlier ones).

It is written with the geometry of the first folder's ``.pkl``. Every folder must hold the same cases.
nnU-Net writes ``dataset.json`` into the output folder but not ``plans.json``; so does this.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from nnseg_nb.io import load_nnunet_properties, props_from_nnunet, write_seg
from nnseg_nb.parallel import map_in_processes
from nnseg_nb.utils import atomic_write_bytes, atomic_write_json, load_json

REGION_THRESHOLD = 0.5


def average_probabilities(files: Sequence[str | os.PathLike]) -> np.ndarray:
    """The float32 mean of the ``probabilities`` arrays of ``.npz`` files (nnU-Net's order of operations)."""
    if not files:
        raise ValueError("average_probabilities needs at least one .npz file")
    total = None
    for path in files:
        with np.load(path) as npz:
            if "probabilities" not in npz:
                raise ValueError(f"{path}: no 'probabilities' array (keys: {', '.join(npz.files)})")
            probabilities = npz["probabilities"]
        if total is None:
            total = probabilities.astype(np.float32)
        elif probabilities.shape != total.shape:
            raise ValueError(f"{path}: probabilities of shape {probabilities.shape}, others {total.shape}")
        else:
            total += probabilities
    total /= len(files)
    return total


def probabilities_to_segmentation(probabilities: np.ndarray, dataset_json: dict) -> np.ndarray:
    """``(C, Z, Y, X)`` probabilities -> ``(Z, Y, X)`` label map: argmax, or regions in their order.

    >>> p = np.array([[0.2, 0.7], [0.8, 0.3]], np.float32)[:, None]              # (C=2, 1, 2)
    >>> probabilities_to_segmentation(p, {"labels": {"background": 0, "a": 1}})
    array([[1, 0]])
    >>> regions = {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}
    >>> probabilities_to_segmentation(p, regions)                                 # core wins where both > 0.5
    array([[2, 1]], dtype=uint16)
    """
    from nnseg_nb.dataset import LabelInfo

    info = LabelInfo.from_dataset_json(dataset_json)
    if probabilities.shape[0] != info.num_segmentation_heads:
        raise ValueError(
            f"probabilities have {probabilities.shape[0]} channels, the labels need {info.num_segmentation_heads}"
        )
    if not info.has_regions:
        return probabilities.argmax(0)
    segmentation = np.zeros(probabilities.shape[1:], dtype=np.uint16)
    for channel, label in enumerate(info.regions_class_order):
        segmentation[probabilities[channel] > REGION_THRESHOLD] = label
    return segmentation


# --- folders ---------------------------------------------------------------------------------------


def _merge_case(
    item: tuple[list[str], str], dataset_json: dict, file_ending: str, save_merged_probabilities: bool
) -> str:
    member_files, output_stem = item
    properties_file = Path(member_files[0][: -len(".npz")] + ".pkl")
    properties = load_nnunet_properties(properties_file)
    probabilities = average_probabilities(member_files)
    segmentation = probabilities_to_segmentation(probabilities, dataset_json)
    write_seg(segmentation, output_stem + file_ending, props_from_nnunet(properties, properties_file))
    if save_merged_probabilities:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, probabilities=probabilities)
        atomic_write_bytes(output_stem + ".npz", buffer.getvalue())
        atomic_write_bytes(output_stem + ".pkl", pickle.dumps(properties))
    return output_stem + file_ending


def ensemble_folders(
    input_folders: Sequence[str | os.PathLike],
    output_folder: str | os.PathLike,
    save_merged_probabilities: bool = False,
    num_workers: int | None = None,
    dataset_json: dict | str | os.PathLike | None = None,
    progress: bool = True,
) -> list[Path]:
    """Average the ``.npz`` probabilities of every case over ``input_folders`` and write label maps.

    Args:
        input_folders: prediction folders made with ``--save_probabilities`` (at least one).
        output_folder: gets ``{case}{file_ending}`` (and ``{case}.npz``/``.pkl`` with
            ``save_merged_probabilities``) and ``dataset.json``.
        dataset_json: labels and file ending; default the first folder's ``dataset.json``.

    Returns:
        The written label maps, sorted by case.
    """
    folders = [Path(f) for f in input_folders]
    if not folders:
        raise ValueError("ensemble_folders needs at least one input folder")
    if dataset_json is None:
        dataset_json = folders[0] / "dataset.json"
    if not isinstance(dataset_json, dict):
        if not Path(dataset_json).is_file():
            raise FileNotFoundError(f"{dataset_json}: no dataset.json; give dataset_json")
        dataset_json = load_json(dataset_json)
    cases_per_folder = [{p.name for p in f.glob("*.npz")} if f.is_dir() else set() for f in folders]
    all_cases = sorted(set().union(*cases_per_folder))
    problems = [
        f"{folder}: no {', '.join(sorted(set(all_cases) - cases))}"
        for folder, cases in zip(folders, cases_per_folder)
        if set(all_cases) - cases
    ]
    if problems:
        raise ValueError("\n".join(["every folder must hold the same cases' .npz probabilities:", *problems]))
    if not all_cases:
        raise ValueError(f"{folders[0]}: no .npz probabilities (predict with --save_probabilities)")
    atomic_write_json(Path(output_folder) / "dataset.json", dataset_json)
    members = {case[: -len(".npz")]: [f / case for f in folders] for case in all_cases}
    return ensemble_cases(
        members, output_folder, dataset_json, save_merged_probabilities, num_workers, progress
    )


def ensemble_cases(
    members: dict[str, Sequence[str | os.PathLike]],
    output_folder: str | os.PathLike,
    dataset_json: dict,
    save_merged_probabilities: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Merge each case's ``.npz`` files (``{case: [member .npz, ...]}``) into ``output_folder/{case}{ending}``.

    The geometry comes from the ``.pkl`` next to each case's first file. Returns the written label maps.
    """
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    items = [([str(f) for f in files], str(output_folder / case)) for case, files in sorted(members.items())]
    merge = partial(
        _merge_case,
        dataset_json=dataset_json,
        file_ending=dataset_json["file_ending"],
        save_merged_probabilities=save_merged_probabilities,
    )
    written = map_in_processes(merge, items, num_workers, progress=progress, desc="ensemble")
    return [Path(p) for p in written]
