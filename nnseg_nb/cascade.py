"""The cascade's hand-over: a ``3d_lowres`` prediction, resampled to the next stage's grid, as its input.

    from nnseg_nb.cascade import export_next_stages, next_stage_folder
    # in the validation of a 3d_lowres fold, for each validation case, with the network's logits:
    export_next_stages(logits, "case_007", plans, "3d_lowres", dataset_json, spacing, model_folder,
                       preprocessed_dataset_folder)
    # -> <model_folder>/predicted_next_stage/3d_cascade_fullres/case_007.npy, (Z, Y, X) uint8 on the
    #    3d_fullres preprocessed grid, which 3d_cascade_fullres training reads (loader previous_stage_folder)

nnU-Net 2.8.1 (``perform_actual_validation`` + ``export_prediction.resample_and_save``): for every next stage
of the configuration, the logits of the validation case are resampled to the shape of the case in the next
stage's preprocessed folder (with the configuration's ``resampling_fn_probabilities``; both spacings passed
are the lowres configuration's own, so only its anisotropy decides separate-z), turned into a label map
(argmax, or sigmoid and ``regions_class_order``) and saved, uint8 below 255 foreground labels, uint16 above.
The folder is ``<results>/<Dataset>/<Trainer>__<Plans>__3d_lowres/predicted_next_stage/<next stage>/``;
every training case is there once all five lowres folds are validated, each predicted by the fold that
did not train on it. A case missing from the next stage's preprocessed folder is skipped with a warning,
as nnU-Net logs and goes on.

nnU-Net writes ``{case}.b2nd`` or ``{case}.npz`` (key ``seg``), following its preprocessed format; ours is
``.npy``, so the previous stage is ``{case}.npy`` (memory-mappable; nnU-Net's numpy loader reads it too).
``preprocessed.open_case`` reads all three.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nnseg_nb.dataset import LabelInfo
from nnseg_nb.ensemble import probabilities_to_segmentation
from nnseg_nb.plans import ConfigurationPlan, Plans
from nnseg_nb.preprocessed import open_case
from nnseg_nb.resampling import RESAMPLING_FUNCTIONS
from nnseg_nb.utils import atomic_save_npy


def next_stage_folder(
    results: str | os.PathLike,
    dataset: str,
    previous: str,
    configuration: str,
    trainer_name: str = "nnUNetTrainer",
    plans_name: str = "nnUNetPlans",
) -> Path:
    """Where ``previous``'s validations leave the inputs of ``configuration`` (nnU-Net 2.8.1's folder).

    >>> next_stage_folder("r", "Dataset1_A", "3d_lowres", "3d_cascade_fullres").as_posix()
    'r/Dataset1_A/nnUNetTrainer__nnUNetPlans__3d_lowres/predicted_next_stage/3d_cascade_fullres'
    """
    model = Path(results) / dataset / f"{trainer_name}__{plans_name}__{previous}"
    return model / "predicted_next_stage" / configuration


def logits_to_segmentation(logits: np.ndarray, dataset_json: dict) -> np.ndarray:
    """nnU-Net's ``convert_logits_to_segmentation``: argmax, or sigmoid then the regions in their order.

    >>> logits_to_segmentation(np.array([[0.0, 2.0], [1.0, -1.0]])[:, None], {"labels": {"background": 0, "a": 1}})
    array([[1, 0]])
    """
    info = LabelInfo.from_dataset_json(dataset_json)
    if not info.has_regions:
        return probabilities_to_segmentation(logits, dataset_json)  # argmax of logits = of probabilities
    probabilities = torch.sigmoid(torch.from_numpy(np.asarray(logits)).float()).numpy()
    return probabilities_to_segmentation(probabilities, dataset_json)


def resample_to_next_stage(
    logits: np.ndarray,
    target_shape: Sequence[int],
    configuration: ConfigurationPlan,
    dataset_json: dict,
    case_spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """A case's logits ``(C, ...)`` from this configuration's grid to ``target_shape``, as a label map.

    ``case_spacing``: the case's spacing in transposed order; only a 2D configuration reads its first axis.
    """
    spacing = list(configuration.spacing)
    if len(spacing) != len(target_shape):  # 2D: the slice axis keeps the case's own spacing
        spacing = [case_spacing[0], *spacing]
    resample = RESAMPLING_FUNCTIONS[configuration.resampling_fn_probabilities]
    kwargs = configuration.resampling_fn_probabilities_kwargs or {}
    resampled = resample(np.asarray(logits), list(target_shape), spacing, spacing, **kwargs)
    segmentation = logits_to_segmentation(resampled, dataset_json)
    many = len(LabelInfo.from_dataset_json(dataset_json).foreground_labels) >= 255
    return np.asarray(segmentation).astype(np.uint16 if many else np.uint8)


def export_next_stages(
    logits: np.ndarray,
    case: str,
    plans: Plans,
    configuration_name: str,
    dataset_json: dict,
    case_spacing: Sequence[float] | None,
    model_folder: str | os.PathLike,
    preprocessed_dataset_folder: str | os.PathLike,
) -> list[Path]:
    """Write ``case``'s segmentation for every next stage of ``configuration_name``; returns the files.

    Args:
        logits: the network's output for the whole case, ``(C, Z, Y, X)`` on this configuration's grid.
        plans, configuration_name: the plans and the configuration predicted (``3d_lowres``).
        case_spacing: the case's spacing in transposed order (read only for a 2D configuration).
        model_folder: ``<Trainer>__<Plans>__<configuration>``; files go to its ``predicted_next_stage/<n>/``.
        preprocessed_dataset_folder: ``nnUNet_preprocessed/DatasetXXX_Name`` (gives each target shape).
    """
    written = []
    configuration = plans.configuration(configuration_name)
    for name in configuration.next_stage_names:
        data_folder = Path(preprocessed_dataset_folder) / plans.configuration(name).data_identifier
        try:
            target_shape = open_case(data_folder, case).data.shape[1:]
        except FileNotFoundError:
            warnings.warn(
                f"{data_folder}: case {case} is not preprocessed, so no {name} input is written for it; "
                f"preprocess {name} first",
                stacklevel=2,
            )
            continue
        segmentation = resample_to_next_stage(logits, target_shape, configuration, dataset_json, case_spacing)
        path = Path(model_folder) / "predicted_next_stage" / name / f"{case}.npy"
        atomic_save_npy(path, segmentation)  # (Z, Y, X), as nnU-Net's; its data loader adds the channel axis
        written.append(path)
    return written


def predict_next_stage(
    model_folder: str | os.PathLike,
    fold: int,
    preprocessed_dataset_folder: str | os.PathLike | None = None,
    device: str = "cpu",
    precision: str = "auto",
    progress: bool = False,
) -> list[Path]:
    """Predict a fold's validation cases and write their next-stage segmentations (``export_next_stages``).

    What nnU-Net does inside ``perform_actual_validation`` of a ``3d_lowres`` fold (``predict.predict_validation``
    does it too, in the same pass), here on its own, e.g. for a fold validated before its next stage was
    planned: sliding window with mirroring over the fold's ``checkpoint_final.pth``, logits on the lowres
    grid, then resampled to the next stage's grid.
    Returns the files written; none for a configuration without a next stage.

    >>> predict_next_stage("nnUNet_results/Dataset901_BrainTissue/nnUNetTrainer__nnUNetPlans__3d_lowres", 0)
    ... # doctest: +SKIP
    [PosixPath('.../predicted_next_stage/3d_cascade_fullres/brain_003.npy'), ...]
    """
    from nnseg_nb.inference import load_model, predict_logits
    from nnseg_nb.paths import preprocessed_root
    from nnseg_nb.predict import one_hot_previous_stage
    from nnseg_nb.preprocessed import list_cases, load_case
    from nnseg_nb.splits import load_fold

    model_folder = Path(model_folder)
    model = load_model(model_folder, [fold], device=device)
    if not model.configuration.next_stage_names:
        return []
    pre = Path(preprocessed_dataset_folder or preprocessed_root() / model_folder.parent.name)
    data_folder = pre / model.configuration.data_identifier
    _, cases = load_fold(pre, fold, list_cases(data_folder))
    previous = None
    if model.configuration.previous_stage:  # a middle stage: its own input is a previous stage's output
        previous = next_stage_folder(
            model_folder.parent.parent, model_folder.parent.name, model.configuration.previous_stage,
            model.configuration_name, model.trainer_name, model.plans.plans_name,
        )  # fmt: skip
    written = []
    for case in tqdm(cases, desc=f"next stage, fold {fold}", disable=not progress):
        data, _, properties = load_case(data_folder, case)
        data = np.asarray(data, dtype=np.float32)
        if previous is not None:
            seg = open_case(data_folder, case, previous).previous_seg
            data = np.concatenate([data, one_hot_previous_stage(seg, model.labels.foreground_labels)])
        logits = predict_logits(model, data, precision=precision).float().numpy()
        spacing = [properties["spacing"][a] for a in model.plans.transpose_forward]
        written += export_next_stages(
            logits,
            case,
            model.plans,
            model.configuration_name,
            model.dataset_json,
            spacing,
            model_folder,
            pre,
        )
    return written
