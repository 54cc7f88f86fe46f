"""From predicted logits back to a label map in the input's own geometry, as nnU-Net's ``export_prediction``.

    seg = logits_to_segmentation(logits, properties, plans, "3d_fullres", dataset_json)   # (Z, Y, X) uint8
    seg, probabilities = logits_to_segmentation(..., return_probabilities=True)
    export_prediction(logits, properties, plans, "3d_fullres", dataset_json, "out/case_001")
    # -> out/case_001.nii.gz with the input's affine (+ .npz / .pkl with save_probabilities=True)

The steps (``convert_predicted_logits_to_segmentation_with_correct_shape``):

1. resample the logits from the configuration's spacing (2D: the slice axis keeps the original spacing)
   to the cropped original shape, with the plans' ``resampling_fn_probabilities`` (separate z on
   anisotropic images);
2. labels: argmax over the channels; regions: sigmoid, then each region of ``regions_class_order`` in
   turn writes its label where its probability exceeds 0.5;
3. paste into zeros of the shape before cropping at ``bbox_used_for_cropping``;
4. transpose back (``transpose_backward``) and write with the reader's geometry.

Probabilities (softmax or sigmoid) are un-cropped too: outside the box the background has probability 1
(labels) or every region 0 (regions). They are saved as nnU-Net does: ``{case}.npz`` with key
``probabilities`` (float32, (C, *original shape)) and ``{case}.pkl``, the properties (pickled dict).
"""

from __future__ import annotations

import io as _io
import os
import pickle
from collections.abc import Sequence

import numpy as np
import torch

from nnseg_nb import io
from nnseg_nb.dataset import LabelInfo
from nnseg_nb.plans import Plans, as_plans
from nnseg_nb.preprocessing import _resampling_fn
from nnseg_nb.utils import atomic_write_bytes, to_builtin

REGION_THRESHOLD = 0.5


def resample_logits_to_original(
    logits: np.ndarray | torch.Tensor, properties: dict, plans: Plans, configuration_name: str
) -> np.ndarray:
    """Logits (C, Z', Y', X') at the configuration's spacing -> the cropped original shape (transposed order)."""
    configuration = plans.configuration(configuration_name)
    if isinstance(logits, torch.Tensor):
        logits = logits.cpu().numpy()
    original_spacing = [properties["spacing"][a] for a in plans.transpose_forward]
    target_shape = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = list(configuration.spacing)
    if len(current_spacing) < len(target_shape):  # 2d: the slice axis was never resampled
        current_spacing = [original_spacing[0], *current_spacing]
    return _resampling_fn(configuration, "probabilities")(
        logits, target_shape, current_spacing, original_spacing
    )


def apply_inference_nonlinearity(logits: np.ndarray, labels: LabelInfo) -> np.ndarray:
    """Softmax over the channels (labels) or a sigmoid per channel (regions), in float32."""
    t = torch.from_numpy(np.asarray(logits)).float()
    return (torch.sigmoid(t) if labels.has_regions else torch.softmax(t, 0)).numpy()


def probabilities_or_logits_to_segmentation(
    values: np.ndarray, labels: LabelInfo, are_logits: bool = True
) -> np.ndarray:
    """Labels: argmax (the same on logits and probabilities). Regions: threshold the sigmoid at 0.5 region by
    region in ``regions_class_order`` order, later regions overwriting earlier ones."""
    if values.shape[0] != labels.num_segmentation_heads:
        raise ValueError(f"expected {labels.num_segmentation_heads} channels, got {values.shape[0]}")
    if not labels.has_regions:
        return values.argmax(0)
    probabilities = apply_inference_nonlinearity(values, labels) if are_logits else values
    segmentation = np.zeros(values.shape[1:], dtype=np.uint16)
    for channel, label in enumerate(labels.regions_class_order):
        segmentation[probabilities[channel] > REGION_THRESHOLD] = label
    return segmentation


def _uncrop(
    array: np.ndarray, bbox: Sequence[Sequence[int]], shape_before: Sequence[int], fill
) -> np.ndarray:
    out = np.zeros((*array.shape[: array.ndim - len(shape_before)], *shape_before), dtype=array.dtype)
    if fill is not None:
        out[fill] = 1
    box = tuple(slice(lo, hi) for lo, hi in bbox)
    out[(Ellipsis, *box)] = array
    return out


def logits_to_segmentation(
    logits: np.ndarray | torch.Tensor,
    properties: dict,
    plans: Plans | dict | str | os.PathLike,
    configuration_name: str,
    dataset_json: dict,
    return_probabilities: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The label map (reader's axis order, original shape) of predicted logits; with ``return_probabilities``
    also the (C, ...) float32 probabilities in the same space.

    ``properties``: the preprocessing's (``spacing``, ``shape_before_cropping``, ``bbox_used_for_cropping``,
    ``shape_after_cropping_and_before_resampling``).
    """
    plans = as_plans(plans)
    labels = LabelInfo.from_dataset_json(dataset_json)
    resampled = resample_logits_to_original(logits, properties, plans, configuration_name)
    if return_probabilities:
        probabilities = apply_inference_nonlinearity(resampled, labels)
        segmentation = probabilities_or_logits_to_segmentation(probabilities, labels, are_logits=False)
    else:
        segmentation = probabilities_or_logits_to_segmentation(resampled, labels)
    del resampled
    dtype = np.uint8 if len(labels.foreground_labels) < 255 else np.uint16
    bbox, shape_before = properties["bbox_used_for_cropping"], properties["shape_before_cropping"]
    segmentation = _uncrop(segmentation.astype(dtype), bbox, shape_before, None)
    segmentation = segmentation.transpose(plans.transpose_backward)
    if not return_probabilities:
        return segmentation
    background = None if labels.has_regions else 0  # outside the box: background certain (labels) / no region
    probabilities = _uncrop(probabilities.astype(np.float32), bbox, shape_before, background)
    probabilities = probabilities.transpose([0, *(a + 1 for a in plans.transpose_backward)])
    return segmentation, probabilities


def save_probabilities(probabilities: np.ndarray, properties: dict, output_stem: str | os.PathLike) -> None:
    """``{stem}.npz`` (key ``probabilities``, compressed) and ``{stem}.pkl`` (the properties), as nnU-Net."""
    buffer = _io.BytesIO()
    np.savez_compressed(buffer, probabilities=probabilities)
    atomic_write_bytes(f"{output_stem}.npz", buffer.getvalue())
    plain = {k: to_builtin(v) for k, v in properties.items() if k != "class_locations"}
    atomic_write_bytes(f"{output_stem}.pkl", pickle.dumps(plain))


def export_prediction(
    logits: np.ndarray | torch.Tensor,
    properties: dict,
    plans: Plans | dict | str | os.PathLike,
    configuration_name: str,
    dataset_json: dict,
    output_stem: str | os.PathLike,
    save_probabilities_too: bool = False,
) -> str:
    """Write ``{output_stem}{file_ending}`` (the dataset's ``file_ending``) with the input's geometry, and
    with ``save_probabilities_too`` the ``.npz``/``.pkl`` pair; returns the label file's path."""
    result = logits_to_segmentation(
        logits,
        properties,
        plans,
        configuration_name,
        dataset_json,
        return_probabilities=save_probabilities_too,
    )
    segmentation = result[0] if save_probabilities_too else result
    if save_probabilities_too:
        save_probabilities(result[1], properties, output_stem)
    path = f"{output_stem}{dataset_json['file_ending']}"
    io.write_seg(segmentation, path, properties)
    return path
