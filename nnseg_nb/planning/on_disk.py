"""Planning a dataset on disk, as ``nnUNetv2_plan_experiment`` does: fingerprint found or computed, plans
written next to it with dataset.json, hand-added configurations kept. ``nnseg-nb plan DATASET`` and
notebook 03 both call ``plan_dataset``.

    done = plan_dataset("Dataset004_Hippocampus", RESENC_L)
    done.plans_file, done.kept, done.fingerprint_computed
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnseg_nb.dataset import load_dataset_json
from nnseg_nb.fingerprint import FINGERPRINT_FILE, ensure_fingerprint
from nnseg_nb.paths import find_dataset, parse_dataset_folder_name, preprocessed_root
from nnseg_nb.planning.planner import plan
from nnseg_nb.planning.settings import DEFAULT, PlannerSettings, with_changes
from nnseg_nb.planning.trace import TraceRecord
from nnseg_nb.plans import Plans, keep_custom_configurations, load_plans, save_plans
from nnseg_nb.utils import atomic_write_bytes, load_json


@dataclass
class PlannedDataset:
    """What :func:`plan_dataset` did: the plans, where they went, and what it found on the way."""

    plans: Plans
    plans_file: Path  # <preprocessed>/<DatasetXXX_Name>/<plans_name>.json
    settings: PlannerSettings  # the planner, with the keyword arguments' changes
    fingerprint_file: Path
    fingerprint_computed: bool  # False: an existing dataset_fingerprint.json was reused
    kept: list[str] = field(default_factory=list)  # configurations kept from the previous plans file
    trace: list[TraceRecord] = field(default_factory=list)  # the planner's decisions (see explain)


def merge_existing_plans(plans: Plans, plans_file: str | os.PathLike) -> tuple[Plans, list[str]]:
    """``plans`` plus the configurations an existing ``plans_file`` has and ``plans`` does not (added by
    hand; nnU-Net keeps them when it replans), and the names of those kept. Nothing is written."""
    plans_file = Path(plans_file)
    if not plans_file.is_file():
        return plans, []
    old = load_plans(plans_file)
    kept = [name for name in old.configurations if name not in plans.configurations]
    return keep_custom_configurations(plans, old), kept


def _check_splits(raw_folder: Path, preprocessed_folder: Path) -> bool:
    """True if the raw folder's splits_final.json should be copied; an error if the preprocessed folder
    already has other folds (nnU-Net refuses those before it writes anything)."""
    splits, target = raw_folder / "splits_final.json", preprocessed_folder / "splits_final.json"
    if not splits.is_file():
        return False
    if not target.is_file():
        return True
    try:
        as_sets = [[(set(f["train"]), set(f["val"])) for f in load_json(path)] for path in (splits, target)]
    except (KeyError, TypeError):
        raise ValueError(f"{splits} or {target} is not a list of folds with train and val cases") from None
    if as_sets[1][: len(as_sets[0])] != as_sets[0]:
        raise ValueError(f"{target} has other folds than {splits}; remove one of them")
    return False


def plan_dataset(
    dataset: str | int | os.PathLike,
    settings: PlannerSettings = DEFAULT,
    *,
    gpu_memory_target_gb: float | None = None,
    plans_name: str | None = None,
    overwrite_target_spacing: Sequence[float] | None = None,
    plans_file: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> PlannedDataset:
    """Plan a raw dataset and write its preprocessed folder's plans, as ``nnUNetv2_plan_experiment`` does.

    Finds the fingerprint (computes and writes it if missing), plans, keeps the configurations an existing
    plans file added by hand, copies dataset.json (and splits_final.json, refusing other folds already
    there) next to the plans and writes them atomically. ``nnseg-nb plan DATASET`` and notebook 03 both
    call this.

    Args:
        dataset: raw dataset folder, ``DatasetXXX_Name``, ``Name`` or id.
        settings: ``DEFAULT``, ``RESENC_M``/``L``/``XL`` or your own; changed by the next three.
        gpu_memory_target_gb, plans_name, overwrite_target_spacing: see :func:`with_changes`.
        plans_file: default ``<preprocessed>/<DatasetXXX_Name>/<plans_name>.json``; required when the
            folder is not named ``DatasetXXX_Name``. The fingerprint lives next to it.
        num_workers, progress: for the fingerprint, if it has to be computed.

    >>> done = plan_dataset("Dataset004_Hippocampus", RESENC_L, gpu_memory_target_gb=16)  # doctest: +SKIP
    >>> done.plans_file, done.kept, done.plans.configuration("3d_fullres").patch_size  # doctest: +SKIP
    (PosixPath('.../Dataset004_Hippocampus/nnUNetResEncUNetLPlans.json'), [], [40, 56, 40])
    """
    settings = with_changes(
        settings,
        gpu_memory_target_gb=gpu_memory_target_gb,
        plans_name=plans_name,
        overwrite_target_spacing=overwrite_target_spacing,
    )
    folder = find_dataset(dataset)
    if plans_file is None:
        try:
            parse_dataset_folder_name(folder.name)
        except ValueError:
            raise ValueError(
                f"{folder} is not named DatasetXXX_Name, so it has no default output; give a plans file"
            ) from None
        plans_file = preprocessed_root() / folder.name / f"{settings.plans_name}.json"
    plans_file = Path(plans_file)
    fingerprint_file = plans_file.parent / FINGERPRINT_FILE
    dataset_json = load_dataset_json(folder)  # before the fingerprint: a bad dataset.json stops here
    computed = not fingerprint_file.is_file()
    fingerprint = ensure_fingerprint(
        folder, output=fingerprint_file, num_workers=num_workers, progress=progress
    )
    trace: list[TraceRecord] = []
    try:
        plans = plan(fingerprint, dataset_json, settings, dataset_name=folder.name, trace=trace)
    except ValueError as e:
        raise ValueError(f"cannot plan {folder.name}: {e}") from None
    plans, kept = merge_existing_plans(plans, plans_file)
    copy_splits = _check_splits(folder, plans_file.parent)  # both before anything is written
    atomic_write_bytes(plans_file.parent / "dataset.json", (folder / "dataset.json").read_bytes())
    if copy_splits:
        atomic_write_bytes(
            plans_file.parent / "splits_final.json", (folder / "splits_final.json").read_bytes()
        )
    save_plans(plans, plans_file)
    return PlannedDataset(plans, plans_file, settings, fingerprint_file, computed, kept, trace)
