"""Experiment planning, as nnU-Net v2's ``ExperimentPlanner`` and its ResEnc M/L/XL presets do it.

    plans = plan(fingerprint, dataset_json, DEFAULT, dataset_name="Dataset004_Hippocampus")
    fullres = plans.configuration("3d_fullres")
    fullres.patch_size, fullres.batch_size, fullres.spacing        # [40, 56, 40], 9, [1.0, 1.0, 1.0]
    save_plans(plans, preprocessed / "nnUNetPlans.json")              # nnU-Net's file, key for key
    print(format_explanation(explain(fingerprint, dataset_json, RESENC_L)))   # why these numbers
    print("\n".join(summary_lines(plans)))                          # patch, batch, spacing per configuration
    plan_dataset("Dataset004_Hippocampus", RESENC_L)   # on disk: fingerprint -> <preprocessed>/.../plans

From the fingerprint (spacings and cropped shapes of the training cases) the planner decides:

1. the target spacing: the median per axis, except that a much coarser axis with few slices gets
   its 10th percentile instead (``fullres_target_spacing``);
2. the axis order: the coarsest axis goes first (``transpose_axes``); everything after works there;
3. per configuration (``2d``, ``3d_fullres``, ``3d_lowres``): a patch with the median image's
   aspect ratio, the U-Net topology that fits it (``pool_and_conv_props``), then shrinking the patch
   until the network's feature maps fit the GPU budget (``network.conv_feature_map_size``), and the
   batch size that fills the budget, capped so one batch sees at most 5% of the dataset;
4. whether a ``3d_lowres`` + ``3d_cascade_fullres`` pair is needed: when the fullres patch covers
   less than a quarter of the median image.

``plan`` is pure (no disk). It optionally appends ``TraceRecord``s to a list as it goes, which is
all ``explain`` does; reading and writing the plans file are ``load_plans`` and ``save_plans``.
``plan_dataset`` is the one way to plan a dataset on disk (the CLI and the notebooks call it).

This module is longer than the project's ~600 lines because nnU-Net's planner is one chain of
decisions (spacing -> axes -> topology -> shrink -> batch size -> lowres) that reads best in order.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nnseg_nb.dataset import load_dataset_json
from nnseg_nb.fingerprint import FINGERPRINT_FILE, ensure_fingerprint
from nnseg_nb.network import PLAIN_CONV_UNET, RESIDUAL_ENCODER_UNET, conv_feature_map_size
from nnseg_nb.paths import find_dataset, parse_dataset_folder_name, preprocessed_root
from nnseg_nb.plans import (  # noqa: F401  (re-exported)
    ArchitecturePlan,
    ConfigurationPlan,
    Plans,
    keep_custom_configurations,
    load_plans,
    save_plans,
)
from nnseg_nb.resampling import ANISOTROPY_THRESHOLD, compute_new_shape
from nnseg_nb.utils import atomic_write_bytes, load_json

# --- settings and presets --------------------------------------------------------------------------

SHRINK_WHILE_BATCH_OF_2_EXCEEDS = "batch_of_2_exceeds"  # ExperimentPlanner: estimate / ref_bs * 2 > reference
SHRINK_WHILE_ESTIMATE_EXCEEDS = "estimate_exceeds"  # ResEnc planners: estimate > reference
ShrinkWhile = Literal["batch_of_2_exceeds", "estimate_exceeds"]


@dataclass(frozen=True)
class PlannerSettings:
    """What a planner is: nnU-Net's planner classes, written as values (comments give nnU-Net's names).

    A reference value is a feature-map count (``network.conv_feature_map_size``) known to fit
    ``reference_memory_gb`` of GPU memory at the reference batch size. The budget for a patch is
    ``reference_val * gpu_memory_target_gb / reference_memory_gb``.

    >>> RESENC_L.plans_name, RESENC_L.gpu_memory_target_gb, RESENC_L.max_dataset_covered
    ('nnUNetResEncUNetLPlans', 24.0, 1.0)
    >>> preset("default", gpu_memory_target_gb=16).gpu_memory_target_gb   # --gpu-memory 16
    16.0
    """

    plans_name: str = "nnUNetPlans"  # plans_identifier; the file is <plans_name>.json
    planner_name: str = "ExperimentPlanner"  # written as experiment_planner_used
    network_class_name: str = PLAIN_CONV_UNET  # UNet_class
    gpu_memory_target_gb: float = 8.0  # UNet_vram_target_GB (-gpu_memory_target)
    reference_memory_gb: float = 8.0  # UNet_reference_val_corresp_GB
    reference_val_3d: int = 560_000_000  # UNet_reference_val_3d
    reference_val_2d: int = 85_000_000  # UNet_reference_val_2d
    reference_batch_size_3d: int = 2  # UNet_reference_val_corresp_bs_3d
    reference_batch_size_2d: int = 12  # UNet_reference_val_corresp_bs_2d
    shrink_while: ShrinkWhile = (
        SHRINK_WHILE_BATCH_OF_2_EXCEEDS  # the shrink loop's condition (see shrink_is_needed)
    )
    min_batch_size: int = 2  # UNet_min_batch_size
    max_dataset_covered: float = 0.05  # one batch sees at most this fraction of the dataset's voxels
    base_features: int = 32  # UNet_base_num_features, doubled per stage ...
    max_features_3d: int = 320  # ... up to UNet_max_features_3d
    max_features_2d: int = 512  # ... or UNet_max_features_2d
    min_feature_map_edge: int = 4  # UNet_featuremap_min_edge_length (bottleneck edge)
    blocks_per_stage_encoder: tuple[int, ...] = (
        2,
    ) * 14  # convs (plain) or residual blocks (ResEnc) per stage
    convs_per_stage_decoder: tuple[int, ...] = (2,) * 13  # UNet_blocks_per_stage_decoder
    # Configurations whose preprocessed data is the default planner's ("nnUNetPlans_<name>") because
    # their preprocessing is the same (the ResEnc planners share 2d and 3d_fullres).
    shared_data_identifiers: tuple[str, ...] = ()
    preprocessor_name: str = "DefaultPreprocessor"
    overwrite_target_spacing: tuple[float, ...] | None = (
        None  # replaces the fullres target spacing (-overwrite_target_spacing)
    )
    suppress_transpose: bool = False  # keep the reader's axis order
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD  # ANISO_THRESHOLD
    lowres_creation_threshold: float = 0.25  # 3d_lowres when the fullres patch covers less than this
    lowres_spacing_step: float = 1.03  # 3d_lowres spacing grows by this factor per try

    def __post_init__(self):
        if self.shrink_while not in (SHRINK_WHILE_BATCH_OF_2_EXCEEDS, SHRINK_WHILE_ESTIMATE_EXCEEDS):
            raise ValueError(
                f"shrink_while must be {SHRINK_WHILE_BATCH_OF_2_EXCEEDS!r} or "
                f"{SHRINK_WHILE_ESTIMATE_EXCEEDS!r}, not {self.shrink_while!r}"
            )
        if self.gpu_memory_target_gb <= 0:
            raise ValueError(f"gpu_memory_target_gb must be positive, not {self.gpu_memory_target_gb}")
        if self.overwrite_target_spacing is not None and (
            len(self.overwrite_target_spacing) != 3 or any(s <= 0 for s in self.overwrite_target_spacing)
        ):
            raise ValueError(
                f"overwrite_target_spacing must be three positive spacings, "
                f"not {self.overwrite_target_spacing}"
            )

    def data_identifier(self, configuration_name: str) -> str:
        """The folder name of a configuration's preprocessed data, ``<plans_name>_<configuration>``."""
        plans_name = "nnUNetPlans" if configuration_name in self.shared_data_identifiers else self.plans_name
        return f"{plans_name}_{configuration_name}"


DEFAULT = PlannerSettings()

# nnUNetPlannerResEncM: a residual encoder, at the default's GPU memory (~9-11 GB in practice).
RESENC_M = PlannerSettings(
    plans_name="nnUNetResEncUNetMPlans",
    planner_name="nnUNetPlannerResEncM",
    network_class_name=RESIDUAL_ENCODER_UNET,
    reference_val_3d=680_000_000,
    reference_val_2d=135_000_000,
    shrink_while=SHRINK_WHILE_ESTIMATE_EXCEEDS,
    max_dataset_covered=1.0,  # no 5% cap: the batch size only follows GPU memory
    blocks_per_stage_encoder=(1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6),
    convs_per_stage_decoder=(1,) * 12,
    shared_data_identifiers=("2d", "3d_fullres"),
)
# nnUNetPlannerResEncL (24 GB) and nnUNetPlannerResEncXL (40 GB): the same network, more memory.
RESENC_L = dataclasses.replace(
    RESENC_M,
    plans_name="nnUNetResEncUNetLPlans",
    planner_name="nnUNetPlannerResEncL",
    gpu_memory_target_gb=24.0,
    reference_memory_gb=24.0,
    reference_val_3d=2_100_000_000,
    reference_val_2d=380_000_000,
)
RESENC_XL = dataclasses.replace(
    RESENC_M,
    plans_name="nnUNetResEncUNetXLPlans",
    planner_name="nnUNetPlannerResEncXL",
    gpu_memory_target_gb=40.0,
    reference_memory_gb=40.0,
    reference_val_3d=3_600_000_000,
    reference_val_2d=560_000_000,
)

PRESETS = {"default": DEFAULT, "resenc-m": RESENC_M, "resenc-l": RESENC_L, "resenc-xl": RESENC_XL}


def preset(name: str, gpu_memory_target_gb: float | None = None) -> PlannerSettings:
    """A preset by name (``PRESETS``), optionally with another GPU memory target (``--gpu-memory``).

    The plans name stays the preset's, as in nnU-Net; pick another one if both should coexist.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown planner preset {name!r}; known: {', '.join(PRESETS)}")
    settings = PRESETS[name]
    if gpu_memory_target_gb is None or gpu_memory_target_gb == settings.gpu_memory_target_gb:
        return settings
    if settings.network_class_name == RESIDUAL_ENCODER_UNET:
        # nnU-Net's M/L/XL planners warn too: their reference values were tuned for one memory size.
        warnings.warn(
            f"planner preset {name!r} is tuned for {settings.gpu_memory_target_gb:g} GB; "
            f"planning for {gpu_memory_target_gb:g} GB instead",
            stacklevel=2,
        )
    return dataclasses.replace(settings, gpu_memory_target_gb=float(gpu_memory_target_gb))


# --- the trace (what explain() shows) --------------------------------------------------------------


@dataclass(frozen=True)
class TraceRecord:
    """One decision of the planner: which step, in which configuration, why, and the numbers."""

    step: str  # "target_spacing", "transpose", "patch", "shrink", "batch_size", "3d_lowres", ...
    message: str  # one readable sentence
    configuration: str | None = None  # "2d", "3d_fullres", "3d_lowres" or None for dataset-wide steps
    values: dict = field(default_factory=dict)


def _note(trace: list | None, step: str, message: str, configuration: str | None = None, **values) -> None:
    if trace is not None:
        trace.append(TraceRecord(step, message, configuration, values))


def format_explanation(trace: Sequence[TraceRecord]) -> str:
    """The trace as text, one line per record, grouped under a header per configuration."""
    lines, current = [], object()
    for record in trace:
        if record.configuration != current:
            current = record.configuration
            lines.append(f"[{current or 'dataset'}]")
        lines.append(f"  {record.step}: {record.message}")
    return "\n".join(lines)


# --- dataset-wide steps -----------------------------------------------------------------------------


def fullres_target_spacing(
    spacings: np.ndarray,
    shapes_after_crop: np.ndarray,
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
    trace: list | None = None,
) -> np.ndarray:
    """The 3d_fullres spacing: the per-axis median, with nnU-Net's rule for thick-slice data.

    If the coarsest axis is more than ``anisotropy_threshold`` times coarser than the others *and*
    has fewer than 1/threshold as many voxels, the median would make those few slices interpolate
    badly; its 10th percentile is used instead (but not finer than the other axes: then their
    largest spacing + 1e-5).

    Args:
        spacings: (n_cases, 3) in the reader's axis order. shapes_after_crop: (n_cases, 3).

    >>> fullres_target_spacing(np.array([[3.0, .6, .6], [3.6, .6, .6], [4.0, .6, .6]]), np.array([[20, 320, 320]] * 3))
    array([3.12, 0.6 , 0.6 ])
    """
    spacings = np.asarray(spacings, dtype=np.float64)
    target = np.percentile(spacings, 50, axis=0)
    median_size = np.percentile(np.asarray(shapes_after_crop, dtype=np.float64), 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    coarsest_other = max(target[a] for a in others)
    anisotropic_spacing = target[worst] > anisotropy_threshold * coarsest_other
    few_slices = median_size[worst] * anisotropy_threshold < min(median_size[a] for a in others)
    if anisotropic_spacing and few_slices:
        tenth = np.percentile(spacings[:, worst], 10)
        if tenth < coarsest_other:
            tenth = max(coarsest_other, tenth) + 1e-5
        _note(
            trace,
            "target_spacing",
            f"axis {worst} is anisotropic ({target[worst]:.4g} > {anisotropy_threshold:g} x "
            f"{coarsest_other:.4g}) with few voxels ({median_size[worst]:g} x {anisotropy_threshold:g} < "
            f"{min(median_size[a] for a in others):g}): its 10th percentile {tenth:.4g} replaces the median "
            f"{target[worst]:.4g}",
            axis=worst,
            median=float(target[worst]),
            tenth_percentile=float(tenth),
        )
        target[worst] = tenth
    else:
        _note(
            trace,
            "target_spacing",
            f"median spacing {_fmt(target)} (no axis both {anisotropy_threshold:g}x coarser "
            f"and {anisotropy_threshold:g}x shorter than the others)",
            median=target.tolist(),
        )
    return target


def transpose_axes(target_spacing: Sequence[float], suppress: bool = False) -> tuple[list[int], list[int]]:
    """``(transpose_forward, transpose_backward)``: the coarsest axis first, the others in order.

    >>> transpose_axes([0.7, 0.7, 5.0])
    ([2, 0, 1], [1, 2, 0])
    """
    if suppress:
        return [0, 1, 2], [0, 1, 2]
    coarsest = int(np.argmax(target_spacing))  # first of equal maxima: isotropic spacing keeps the order
    forward = [coarsest] + [a for a in range(3) if a != coarsest]
    backward = [forward.index(a) for a in range(3)]
    return forward, backward


def median_shape_after_resampling(
    spacings: np.ndarray, shapes_after_crop: np.ndarray, target_spacing: Sequence[float]
) -> np.ndarray:
    """Per-axis median of the cases' shapes once resampled to ``target_spacing`` (may end in .5)."""
    new_shapes = [
        compute_new_shape(shape, spacing, target_spacing)
        for spacing, shape in zip(spacings, shapes_after_crop)
    ]
    return np.median(np.asarray(new_shapes, dtype=np.float64), axis=0)


# --- normalization and resampling choices ---------------------------------------------------------

# nnU-Net's map_channel_name_to_normalization: channel name (any case) -> scheme; any other name: ZScore.
NORMALIZATION_BY_CHANNEL_NAME = {
    "ct": "CTNormalization",
    "nonorm": "NoNormalization",
    "zscore": "ZScoreNormalization",
    "rescale_to_0_1": "RescaleTo01Normalization",
    "rgb_to_0_1": "RGBTo01Normalization",
}
# Schemes that keep voxels outside the nonzero mask at 0 when normalizing inside the mask only.
SCHEMES_THAT_CAN_USE_MASK = ("ZScoreNormalization",)
# Cropping to the nonzero box must have removed over a quarter of the median image to normalize in the mask.
USE_MASK_MAX_RELATIVE_SIZE = 0.75

RESAMPLING_FUNCTION = "resample_data_or_seg_to_shape"
# force_separate_z None: resample the coarse axis apart when the spacing is anisotropic (resampling.py).
RESAMPLING_DATA_KWARGS = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
RESAMPLING_SEG_KWARGS = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
RESAMPLING_PROBABILITIES_KWARGS = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}


def channel_names(dataset_json: dict) -> list[str]:
    """The input channels' names in order (``channel_names``, or v1's ``modality``)."""
    names = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not names:
        raise ValueError("dataset.json has no channel_names (nor a v1 'modality')")
    return list(names.values())


def normalization_schemes(
    dataset_json: dict, median_relative_size_after_cropping: float
) -> tuple[list[str], list[bool]]:
    """``(normalization_schemes, use_mask_for_norm)``, one per channel.

    >>> normalization_schemes({"channel_names": {"0": "CT", "1": "T2"}}, 0.5)
    (['CTNormalization', 'ZScoreNormalization'], [False, True])
    """
    schemes = [
        NORMALIZATION_BY_CHANNEL_NAME.get(name.casefold(), "ZScoreNormalization")
        for name in channel_names(dataset_json)
    ]
    cropped_a_lot = median_relative_size_after_cropping < USE_MASK_MAX_RELATIVE_SIZE
    return schemes, [cropped_a_lot and scheme in SCHEMES_THAT_CAN_USE_MASK for scheme in schemes]


# nnU-Net's reader/writer registry, in its order: the first class that reads a file ending wins.
READER_WRITERS = {
    "NaturalImage2DIO": (".png", ".bmp", ".tif"),
    "SimpleITKIO": (".nii.gz", ".nrrd", ".mha", ".gipl"),
    "Tiff3DIO": (".tif", ".tiff"),
    "NibabelIO": (".nii", ".nii.gz"),
    "NibabelIOWithReorient": (".nii", ".nii.gz"),
}


def default_image_reader_writer(dataset_json: dict) -> str:
    """The reader/writer nnU-Net records in the plans, from dataset.json alone.

    ``overwrite_image_reader_writer`` wins; otherwise the first class for the file ending. nnU-Net
    also tries to read one image and moves on to the next class if that fails: ``.tif`` stacks
    that are 3D need ``"Tiff3DIO"`` passed to ``plan`` explicitly.
    """
    chosen = dataset_json.get("overwrite_image_reader_writer")
    if chosen in READER_WRITERS:
        return chosen
    ending = str(dataset_json.get("file_ending", "")).lower()
    for name, endings in READER_WRITERS.items():
        if ending in endings:
            return name
    raise ValueError(
        f"no nnU-Net reader for file ending {ending!r}; known: "
        f"{', '.join(sorted({e for endings in READER_WRITERS.values() for e in endings}))}"
    )


# --- topology --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """A U-Net's shape for one patch: nnU-Net's ``get_pool_and_conv_props`` result."""

    pools_per_axis: list[int]  # how often each axis is halved
    strides: list[list[int]]  # per stage; the first is all ones (pool_op_kernel_sizes)
    kernel_sizes: list[list[int]]  # per stage, 1 or 3 per axis (conv_kernel_sizes)
    patch_size: list[int]  # the patch, padded up to a multiple of divisible_by
    divisible_by: list[int]  # 2 ** pools_per_axis

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pad_shape(shape: Sequence[float], divisible_by: Sequence[int]) -> list[int]:
    """Round each size up to a multiple of ``divisible_by`` (unchanged if it already is one).

    >>> pad_shape([36, 50, 35.5], [8, 8, 8])
    [40, 56, 40]
    """
    padded = []
    for size, step in zip(shape, divisible_by):
        remainder = size % step
        padded.append(int(size if remainder == 0 else size + step - remainder))
    return padded


def pool_and_conv_props(
    spacing: Sequence[float],
    patch_size: Sequence[float],
    min_feature_map_edge: int = 4,
    max_pools: int = 999999,
) -> Topology:
    """How often to halve each axis of ``patch_size``, and the conv kernels per stage.

    Each round halves every axis that (a) is at least ``2 * min_feature_map_edge`` long and
    (b) has a spacing less than twice the finest spacing among those axes; a lone such axis must be
    at least ``3 * min_feature_map_edge`` long. Halving doubles the axis's spacing, so a coarse axis
    joins in once the others have caught up. An axis's kernel becomes 3 once its spacing is within
    2x of the finest current spacing (1 before: no smoothing across thick slices); the bottleneck
    gets 3s.

    >>> t = pool_and_conv_props([1.0, 1.0, 1.0], [36, 50, 35])
    >>> t.patch_size, t.pools_per_axis, t.n_stages
    ([40, 56, 40], [3, 3, 3], 4)
    >>> pool_and_conv_props([3.06, 0.625, 0.625], [24, 256, 256]).strides[:4]
    [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]]
    """
    dim = len(spacing)
    current_spacing, current_size = [float(s) for s in spacing], list(patch_size)
    strides, kernel_sizes = [[1] * dim], []
    pools, kernel = [0] * dim, [1] * dim
    while True:
        long_enough = [a for a in range(dim) if current_size[a] >= 2 * min_feature_map_edge]
        if not long_enough:
            break
        finest = min(current_spacing[a] for a in long_enough)
        axes = [a for a in long_enough if current_spacing[a] / finest < 2 and pools[a] < max_pools]
        if not axes or (len(axes) == 1 and current_size[axes[0]] < 3 * min_feature_map_edge):
            break
        finest_overall = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[a] / finest_overall < 2 else 1 for a, k in enumerate(kernel)]
        for a in axes:
            pools[a] += 1
            current_spacing[a] *= 2
            current_size[a] = np.ceil(current_size[a] / 2)
        strides.append([2 if a in axes else 1 for a in range(dim)])
        kernel_sizes.append(list(kernel))
    divisible_by = [2**p for p in pools]
    return Topology(
        pools, strides, kernel_sizes + [[3] * dim], pad_shape(patch_size, divisible_by), divisible_by
    )


def starting_patch_size(spacing: Sequence[float], median_shape: Sequence[float]) -> list[float]:
    """The starting patch: the volume of 256^3 (2D: 2048^2) voxels, shaped like 1/spacing, cut to the median.

    >>> starting_patch_size([1.0, 1.0, 1.0], [36.0, 50.0, 35.0])
    [36.0, 50.0, 35.0]
    >>> starting_patch_size([1.0, 0.768, 0.768], [432.0, 512.0, 512.0])
    [215, 280, 280]
    """
    inverse = 1 / np.asarray(spacing, dtype=np.float64)
    edge = 256**3 if len(spacing) == 3 else 2048**2
    aspect = inverse * (edge / np.prod(inverse)) ** (1 / len(spacing))
    return [min(round(a), m) for a, m in zip(aspect, median_shape)]


def features_per_stage(n_stages: int, base_features: int, max_features: int) -> list[int]:
    """``base_features`` doubled per stage, capped at ``max_features``.

    >>> features_per_stage(6, 32, 320)
    [32, 64, 128, 256, 320, 320]
    """
    return [min(max_features, base_features * 2**i) for i in range(n_stages)]


def architecture_plan(topology: Topology, settings: PlannerSettings) -> ArchitecturePlan:
    """The plans' ``architecture`` entry for a topology (nnU-Net's ``architecture_kwargs``)."""
    dim = len(topology.patch_size)
    n = topology.n_stages
    blocks_key = (
        "n_conv_per_stage" if settings.network_class_name == PLAIN_CONV_UNET else "n_blocks_per_stage"
    )
    if n > len(settings.blocks_per_stage_encoder):
        raise ValueError(
            f"the patch needs {n} stages but the planner lists blocks for only "
            f"{len(settings.blocks_per_stage_encoder)}"
        )
    arch_kwargs = {
        "n_stages": n,
        "features_per_stage": features_per_stage(
            n, settings.base_features, settings.max_features_3d if dim == 3 else settings.max_features_2d
        ),
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": [list(k) for k in topology.kernel_sizes],
        "strides": [list(s) for s in topology.strides],
        blocks_key: list(settings.blocks_per_stage_encoder[:n]),
        "n_conv_per_stage_decoder": list(settings.convs_per_stage_decoder[: n - 1]),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return ArchitecturePlan(
        settings.network_class_name, arch_kwargs, ["conv_op", "norm_op", "dropout_op", "nonlin"]
    )


# --- patch, network and batch size for one configuration ------------------------------------------


def memory_budget(dim: int, settings: PlannerSettings) -> float:
    """The feature-map count a configuration may use: the reference value scaled to the GPU target."""
    reference = settings.reference_val_3d if dim == 3 else settings.reference_val_2d
    return reference * (settings.gpu_memory_target_gb / settings.reference_memory_gb)


def reference_batch_size(dim: int, settings: PlannerSettings) -> int:
    return settings.reference_batch_size_3d if dim == 3 else settings.reference_batch_size_2d


def shrink_is_needed(estimate: int, dim: int, settings: PlannerSettings) -> bool:
    """Whether the patch is still too large for the budget.

    The default planner asks whether a batch of 2 would exceed it (``estimate / ref_bs * 2 >
    budget``): in 3D (ref_bs 2) that is ``estimate > budget``, in 2D (ref_bs 12) ``estimate > 6 *
    budget``, so 2D patches stay large and get small batches. The ResEnc planners ask whether a
    single patch exceeds it, which is stricter in 2D.
    """
    budget = memory_budget(dim, settings)
    if settings.shrink_while == SHRINK_WHILE_ESTIMATE_EXCEEDS:
        return estimate > budget
    return (
        estimate / reference_batch_size(dim, settings) * 2 > budget
    )  # 2: nnU-Net's literal, not min_batch_size


def shrink_limit(dim: int, settings: PlannerSettings) -> float:
    """The largest estimate that stops the shrinking (for messages; ``shrink_is_needed`` decides)."""
    budget = memory_budget(dim, settings)
    if settings.shrink_while == SHRINK_WHILE_ESTIMATE_EXCEEDS:
        return budget
    return budget * reference_batch_size(dim, settings) / 2


def axis_to_shrink(patch_size: Sequence[int], median_shape: Sequence[float]) -> int:
    """The axis whose patch is largest relative to the median image; on a tie the last such axis.

    >>> axis_to_shrink([128, 128, 128], [200.0, 200.0, 200.0])
    2
    """
    ratios = [p / m for p, m in zip(patch_size, median_shape)]
    return max(a for a in range(len(ratios)) if ratios[a] == max(ratios))


def shrink_patch(
    topology: Topology, axis: int, spacing: Sequence[float], settings: PlannerSettings
) -> Topology:
    """One shrink step along ``axis``, and the topology of the smaller patch.

    The step is the divisibility of the patch reduced by the *current* divisibility, so no valid
    size is skipped: 256 (divisible by 64) first tries 192, which is divisible by 32, so the step is
    32 and the patch becomes 224.
    """
    tried = list(topology.patch_size)
    tried[axis] -= topology.divisible_by[axis]
    step = pool_and_conv_props(spacing, tried, settings.min_feature_map_edge).divisible_by[axis]
    smaller = list(topology.patch_size)
    smaller[axis] -= step
    return pool_and_conv_props(spacing, smaller, settings.min_feature_map_edge)


def batch_size_for(
    estimate: int,
    patch_size: Sequence[int],
    n_voxels_dataset: float,
    dim: int,
    settings: PlannerSettings,
    trace: list | None = None,
    configuration: str | None = None,
) -> int:
    """Fill the budget with patches, at most ``max_dataset_covered`` of the dataset, at least ``min_batch_size``.

    Python's ``round`` (halves to even), as nnU-Net: 2.5 gives 2.
    """
    by_memory = round(memory_budget(dim, settings) / estimate * reference_batch_size(dim, settings))
    by_dataset = round(
        n_voxels_dataset * settings.max_dataset_covered / np.prod(patch_size, dtype=np.float64)
    )
    batch_size = max(min(by_memory, by_dataset), settings.min_batch_size)
    reason = (
        "the GPU budget" if by_memory <= by_dataset else f"the {settings.max_dataset_covered:.0%} dataset cap"
    )
    if batch_size == settings.min_batch_size and min(by_memory, by_dataset) < settings.min_batch_size:
        reason = "the minimum batch size"
    _note(
        trace,
        "batch_size",
        f"batch size {batch_size}, set by {reason}: the budget fits {by_memory}, "
        f"{settings.max_dataset_covered:.0%} of the dataset ({n_voxels_dataset:.4g} voxels) is {by_dataset} "
        f"patches, minimum {settings.min_batch_size}",
        configuration,
        batch_size=batch_size,
        by_memory=by_memory,
        by_dataset=by_dataset,
    )
    return batch_size


def plan_configuration(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    n_voxels_dataset: float,
    num_classes: int,
    settings: PlannerSettings,
    trace: list | None = None,
    configuration: str | None = None,
) -> tuple[Topology, ArchitecturePlan, int]:
    """Patch, network and batch size for one configuration (nnU-Net's ``get_plans_for_configuration``).

    Args:
        spacing: the configuration's spacing in transposed order, 3 (3D) or 2 (2D) entries.
        median_shape: the median image at that spacing, same order and length.
        n_voxels_dataset: median image voxels x training cases (the 5% cap's denominator).
        num_classes: ``len(dataset_json["labels"])``, the estimate's head width.

    Returns:
        ``(topology, architecture, batch_size)``; ``topology.patch_size`` is the patch.
    """
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {list(spacing)}")
    dim = len(spacing)
    starting = starting_patch_size(spacing, median_shape)
    topology = pool_and_conv_props(spacing, starting, settings.min_feature_map_edge)
    architecture = architecture_plan(topology, settings)
    estimate = conv_feature_map_size(
        architecture.network_class_name, architecture.arch_kwargs, topology.patch_size, num_classes
    )
    limit = shrink_limit(dim, settings)
    _note(
        trace,
        "patch",
        f"median image {_fmt(median_shape)} at spacing {_fmt(spacing)}: start from patch "
        f"{_fmt(starting)}, padded to {_fmt(topology.patch_size)} ({topology.n_stages} stages, pools per axis "
        f"{topology.pools_per_axis}); estimate {estimate:,} vs limit {limit:,.0f}",
        configuration,
        starting_patch_size=starting,
        patch_size=topology.patch_size,
        estimate=estimate,
        limit=limit,
    )
    while shrink_is_needed(estimate, dim, settings):
        axis = axis_to_shrink(topology.patch_size, median_shape)
        topology = shrink_patch(topology, axis, spacing, settings)
        architecture = architecture_plan(topology, settings)
        estimate = conv_feature_map_size(
            architecture.network_class_name, architecture.arch_kwargs, topology.patch_size, num_classes
        )
        _note(
            trace,
            "shrink",
            f"axis {axis} -> patch {_fmt(topology.patch_size)}, {topology.n_stages} stages, "
            f"estimate {estimate:,} vs limit {limit:,.0f}",
            configuration,
            axis=axis,
            patch_size=topology.patch_size,
            n_stages=topology.n_stages,
            estimate=estimate,
        )
    batch_size = batch_size_for(
        estimate, topology.patch_size, n_voxels_dataset, dim, settings, trace, configuration
    )
    return topology, architecture, batch_size


# --- the whole plan --------------------------------------------------------------------------------


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _check_inputs(fingerprint: dict, dataset_json: dict) -> tuple[np.ndarray, np.ndarray]:
    for key in ("spacings", "shapes_after_crop", "median_relative_size_after_cropping"):
        if key not in fingerprint:
            raise ValueError(f"the fingerprint has no {key!r}; extract the fingerprint again")
    for key in ("labels", "numTraining"):
        if key not in dataset_json:
            raise ValueError(f"dataset.json has no {key!r}")
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=np.float64)
    if spacings.ndim != 2 or spacings.shape[1] != 3 or spacings.shape != shapes.shape or len(spacings) == 0:
        raise ValueError(
            f"the fingerprint needs one 3-axis spacing and shape per case; got spacings "
            f"{spacings.shape} and shapes_after_crop {shapes.shape}"
        )
    if (spacings <= 0).any():
        raise ValueError("the fingerprint has a spacing <= 0")
    return spacings, shapes


def _configuration(
    name: str,
    found: tuple[Topology, ArchitecturePlan, int],
    median_shape,
    spacing,
    settings: PlannerSettings,
    normalization: tuple[list[str], list[bool]],
) -> ConfigurationPlan:
    """A configuration's plans entry from what ``plan_configuration`` found."""
    topology, architecture, batch_size = found
    return ConfigurationPlan(
        data_identifier=settings.data_identifier(name),
        preprocessor_name=settings.preprocessor_name,
        batch_size=int(batch_size),
        patch_size=list(topology.patch_size),
        median_image_size_in_voxels=[m.item() if isinstance(m, np.generic) else m for m in median_shape],
        spacing=[float(s) for s in spacing],
        normalization_schemes=list(normalization[0]),
        use_mask_for_norm=list(normalization[1]),
        resampling_fn_data=RESAMPLING_FUNCTION,
        resampling_fn_seg=RESAMPLING_FUNCTION,
        resampling_fn_data_kwargs=dict(RESAMPLING_DATA_KWARGS),
        resampling_fn_seg_kwargs=dict(RESAMPLING_SEG_KWARGS),
        resampling_fn_probabilities=RESAMPLING_FUNCTION,
        resampling_fn_probabilities_kwargs=dict(RESAMPLING_PROBABILITIES_KWARGS),
        architecture=architecture,
    )


def plan_lowres(
    fullres_spacing: np.ndarray,
    median_shape: np.ndarray,
    fullres_patch: Sequence[int],
    num_training: int,
    num_classes: int,
    settings: PlannerSettings,
    trace: list | None = None,
) -> tuple[np.ndarray, list[int], tuple[Topology, ArchitecturePlan, int]] | None:
    """The 3d_lowres configuration, or None when the fullres patch already covers enough of the image.

    While the patch covers less than ``lowres_creation_threshold`` of the median image, coarsen the
    spacing by ``lowres_spacing_step``: only the axes more than 2x finer than the coarsest while
    there are such axes, then all of them; plan again each time. Drop the result if the lowres image
    is not at least 2x smaller than the fullres one.

    Returns:
        ``(spacing, median_shape, plan_configuration's result)`` or None.
    """
    full_voxels = np.prod(median_shape, dtype=np.float64)
    median_voxels, patch_voxels = full_voxels, np.prod(fullres_patch, dtype=np.float64)
    if patch_voxels / median_voxels >= settings.lowres_creation_threshold:
        _note(
            trace,
            "3d_lowres",
            f"not needed: the fullres patch covers {patch_voxels / median_voxels:.1%} of the "
            f"median image (threshold {settings.lowres_creation_threshold:.0%})",
            "3d_lowres",
        )
        return None
    lowres_spacing, tries = np.array(fullres_spacing, dtype=np.float64), 0
    while patch_voxels / median_voxels < settings.lowres_creation_threshold:
        tries += 1
        fine = lowres_spacing.max() / lowres_spacing > 2
        lowres_spacing[fine if fine.any() else slice(None)] *= settings.lowres_spacing_step
        scaled = fullres_spacing / lowres_spacing * median_shape
        median_voxels, lowres_median = np.prod(scaled, dtype=np.float64), [round(s) for s in scaled]
        attempt_trace = [] if trace is not None else None  # only the last attempt's steps are kept
        found = plan_configuration(
            lowres_spacing,
            lowres_median,
            float(median_voxels * num_training),
            num_classes,
            settings,
            attempt_trace,
            "3d_lowres",
        )
        patch_voxels = np.prod(found[0].patch_size, dtype=np.int64)
        _note(
            trace,
            "3d_lowres",
            f"try {tries}: spacing {_fmt(lowres_spacing)}, median {_fmt(lowres_median)}, "
            f"patch {_fmt(found[0].patch_size)} covers {patch_voxels / median_voxels:.1%}",
            "3d_lowres",
            spacing=lowres_spacing.tolist(),
            median_shape=lowres_median,
            patch_size=found[0].patch_size,
        )
    ratio = float(full_voxels / median_voxels)
    if ratio < 2:
        _note(
            trace,
            "3d_lowres",
            f"dropped: the lowres median image is only {ratio:.2f}x smaller than the fullres one (needs 2x)",
            "3d_lowres",
            size_ratio=ratio,
        )
        return None
    if trace is not None:
        trace.extend(attempt_trace)
    _note(
        trace,
        "3d_lowres",
        f"kept after {tries} tries: {ratio:.2f}x fewer voxels than fullres; "
        "3d_cascade_fullres refines its output",
        "3d_lowres",
        size_ratio=ratio,
    )
    return lowres_spacing, lowres_median, found


def _plan_3d(
    spacing: np.ndarray,
    median_shape: np.ndarray,
    n_voxels_dataset: float,
    num_training: int,
    num_classes: int,
    settings: PlannerSettings,
    normalization,
    trace: list | None,
) -> dict[str, ConfigurationPlan]:
    """3d_fullres, and 3d_lowres + 3d_cascade_fullres when needed (in the plans' order)."""
    found = plan_configuration(
        spacing, median_shape, n_voxels_dataset, num_classes, settings, trace, "3d_fullres"
    )
    fullres = _configuration("3d_fullres", found, median_shape, spacing, settings, normalization)
    lowres_found = plan_lowres(
        spacing, median_shape, fullres.patch_size, num_training, num_classes, settings, trace
    )
    # nnU-Net's rule: fullres computes Dice over the whole batch exactly when a lowres stage exists.
    fullres.batch_dice = lowres_found is not None
    _note(
        trace,
        "batch_dice",
        f"batch_dice {fullres.batch_dice}" + (" (3d_lowres has it False)" if lowres_found else ""),
        "3d_fullres",
    )
    if lowres_found is None:
        return {"3d_fullres": fullres}
    lowres_spacing, lowres_median, found = lowres_found
    lowres = _configuration("3d_lowres", found, lowres_median, lowres_spacing, settings, normalization)
    lowres.batch_dice, lowres.next_stage = False, "3d_cascade_fullres"
    cascade = ConfigurationPlan(inherits_from="3d_fullres", previous_stage="3d_lowres")
    return {"3d_lowres": lowres, "3d_fullres": fullres, "3d_cascade_fullres": cascade}


def plan(
    fingerprint: dict,
    dataset_json: dict,
    settings: PlannerSettings = DEFAULT,
    *,
    dataset_name: str | None = None,
    image_reader_writer: str | None = None,
    trace: list | None = None,
) -> Plans:
    """nnU-Net v2's plans for a dataset, from its fingerprint and dataset.json (no disk access).

    Args:
        fingerprint: ``dataset_fingerprint.json`` content (``spacings`` and ``shapes_after_crop`` per
            case in the reader's axis order, ``median_relative_size_after_cropping``, intensities).
        dataset_json: the dataset's ``dataset.json`` (channel names, labels, numTraining, file ending).
        settings: ``DEFAULT``, ``RESENC_M``/``L``/``XL`` or your own ``PlannerSettings``.
        dataset_name: the folder name, e.g. ``"Dataset004_Hippocampus"`` (default: dataset.json's name).
        image_reader_writer: nnU-Net reader class name; default from the file ending.
        trace: a list to append ``TraceRecord``s to (see ``explain``).

    >>> fingerprint = {"spacings": [[1.0, 1.0, 1.0]] * 260, "shapes_after_crop": [[36, 50, 35]] * 260,
    ...                "median_relative_size_after_cropping": 1.0, "foreground_intensity_properties_per_channel": {}}
    >>> dataset_json = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
    ...                 "numTraining": 260, "file_ending": ".nii.gz"}
    >>> plans = plan(fingerprint, dataset_json, dataset_name="Dataset004_Hippocampus")
    >>> [(name, c.patch_size, c.batch_size) for name, c in plans.configurations.items()]
    [('2d', [56, 40], 366), ('3d_fullres', [40, 56, 40], 9)]
    """
    spacings, shapes = _check_inputs(fingerprint, dataset_json)
    num_classes, num_training = len(dataset_json["labels"]), int(dataset_json["numTraining"])
    if settings.overwrite_target_spacing is not None:
        target = np.array(settings.overwrite_target_spacing, dtype=np.float64)
        _note(trace, "target_spacing", f"set by the settings: {_fmt(target)}")
    else:
        target = fullres_target_spacing(spacings, shapes, settings.anisotropy_threshold, trace)
    forward, backward = transpose_axes(target, settings.suppress_transpose)
    _note(
        trace,
        "transpose",
        f"transpose_forward {forward}: axis {forward[0]} (the coarsest, or the first of equals) goes first",
        forward=forward,
    )
    spacing, median_shape = target[forward], median_shape_after_resampling(spacings, shapes, target)[forward]
    n_voxels_dataset = float(np.prod(median_shape, dtype=np.float64) * num_training)
    _note(
        trace,
        "median_shape",
        f"median image at the target spacing {_fmt(median_shape)}; x {num_training} cases "
        f"= {n_voxels_dataset:.4g} voxels",
        median_shape=median_shape.tolist(),
        n_voxels_dataset=n_voxels_dataset,
    )
    relative_size = fingerprint["median_relative_size_after_cropping"]
    normalization = normalization_schemes(dataset_json, relative_size)
    _note(
        trace,
        "normalization",
        f"{normalization[0]}, inside the nonzero mask: {normalization[1]} (median size "
        f"after cropping {relative_size:.3g} of the image; the mask is used below {USE_MASK_MAX_RELATIVE_SIZE})",
    )

    three_d = {}
    if median_shape[0] != 1:
        three_d = _plan_3d(
            spacing, median_shape, n_voxels_dataset, num_training, num_classes, settings, normalization, trace
        )
    else:
        _note(trace, "3d_fullres", "no 3D configurations: the median image has one slice", "3d_fullres")
    found = plan_configuration(
        spacing[1:], median_shape[1:], n_voxels_dataset, num_classes, settings, trace, "2d"
    )
    two_d = _configuration("2d", found, median_shape[1:], spacing[1:], settings, normalization)
    two_d.batch_dice = True
    return Plans(
        dataset_name=dataset_name or dataset_json.get("name", ""),
        plans_name=settings.plans_name,
        original_median_spacing_after_transp=[float(s) for s in np.median(spacings, axis=0)[forward]],
        original_median_shape_after_transp=[int(round(s)) for s in np.median(shapes, axis=0)[forward]],
        image_reader_writer=image_reader_writer or default_image_reader_writer(dataset_json),
        transpose_forward=forward,
        transpose_backward=backward,
        configurations={"2d": two_d, **three_d},
        experiment_planner_used=settings.planner_name,
        label_manager="LabelManager",
        foreground_intensity_properties_per_channel=copy.deepcopy(
            fingerprint.get("foreground_intensity_properties_per_channel", {})
        ),
    )


def explain(
    fingerprint: dict, dataset_json: dict, settings: PlannerSettings = DEFAULT, **plan_kwargs
) -> list[TraceRecord]:
    """The planner's decisions for a dataset, in order (``plan`` run with a trace).

    >>> fingerprint = {"spacings": [[1.0, 1.0, 1.0]] * 260, "shapes_after_crop": [[36, 50, 35]] * 260,
    ...                "median_relative_size_after_cropping": 1.0}
    >>> dataset_json = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2},
    ...                 "numTraining": 260, "file_ending": ".nii.gz"}
    >>> [r.message for r in explain(fingerprint, dataset_json) if r.step == "batch_size"][0]   # 3d_fullres
    'batch size 9, set by the 5% dataset cap: the budget fits 58, 5% of the dataset (1.638e+07 voxels) is 9 patches, minimum 2'
    """
    trace: list[TraceRecord] = []
    plan(fingerprint, dataset_json, settings, trace=trace, **plan_kwargs)
    return trace


# --- the plans, summarised ------------------------------------------------------------------------


def summary_lines(plans: Plans, kept: Sequence[str] = ()) -> list[str]:
    """A table for a terminal: per configuration its patch, batch size, spacing and number of stages.

    ``inherits_from`` is resolved; ``kept`` names configurations carried over from an older file.

    >>> fingerprint = {"spacings": [[1.0, 1.0, 1.0]] * 260, "shapes_after_crop": [[36, 50, 35]] * 260,
    ...                "median_relative_size_after_cropping": 1.0}
    >>> dataset_json = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2},
    ...                 "numTraining": 260, "file_ending": ".nii.gz"}
    >>> print("\\n".join(summary_lines(plan(fingerprint, dataset_json))))
    configuration  patch         batch  spacing    stages
    2d             56 x 40       366    1 x 1      4
    3d_fullres     40 x 56 x 40  9      1 x 1 x 1  4
    """
    rows = [("configuration", "patch", "batch", "spacing", "stages", "")]
    for name, stored in plans.configurations.items():
        notes = [f"inherits {stored.inherits_from}"] if stored.inherits_from else []
        notes += ["kept from the existing file"] if name in kept else []
        try:
            c = plans.configuration(name)
        except ValueError as e:
            rows.append((name, "?", "?", "?", "?", "; ".join(notes + [str(e)])))
            continue
        rows.append(
            (
                name,
                " x ".join(map(str, c.patch_size)),
                str(c.batch_size),
                " x ".join(f"{s:.4g}" for s in c.spacing),
                str(c.architecture.n_stages),
                ", ".join(notes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths + [0])).rstrip() for row in rows]


# --- a dataset on disk: fingerprint -> plans file (what `nnseg-nb plan DATASET` does) -------------------


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


def with_changes(
    settings: PlannerSettings,
    *,
    gpu_memory_target_gb: float | None = None,
    plans_name: str | None = None,
    overwrite_target_spacing: Sequence[float] | None = None,
) -> PlannerSettings:
    """A planner with nnU-Net's command-line changes (-gpu_memory_target, -overwrite_plans_name,
    -overwrite_target_spacing); None keeps the planner's value. As nnU-Net, another GPU target keeps
    the plans name, and a ResEnc planner warns that its reference values were tuned for its own target.

    >>> with_changes(DEFAULT, gpu_memory_target_gb=16).plans_name
    'nnUNetPlans'
    """
    changes: dict = {}
    if gpu_memory_target_gb is not None and gpu_memory_target_gb != settings.gpu_memory_target_gb:
        if settings.network_class_name == RESIDUAL_ENCODER_UNET:
            warnings.warn(
                f"planner {settings.planner_name} is tuned for {settings.gpu_memory_target_gb:g} GB; "
                f"planning for {gpu_memory_target_gb:g} GB instead",
                stacklevel=2,
            )
        changes["gpu_memory_target_gb"] = float(gpu_memory_target_gb)
    if plans_name:
        changes["plans_name"] = plans_name
    if overwrite_target_spacing is not None:
        changes["overwrite_target_spacing"] = tuple(float(s) for s in overwrite_target_spacing)
    return dataclasses.replace(settings, **changes) if changes else settings


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
