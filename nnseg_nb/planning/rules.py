"""The planner's rules, one small function each, in the order ``plan`` applies them: the target spacing and
axis order of the dataset, normalization and resampling choices, the U-Net topology of a patch, and the
memory budget that shrinks the patch and sets the batch size.

    fullres_target_spacing(spacings, shapes)          # median, or the 10th percentile of a coarse axis
    pool_and_conv_props(spacing, patch, 4)            # pools, strides, kernels, padded patch
    shrink_is_needed(estimate, 3, DEFAULT)            # does this patch's network fit the GPU budget?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnseg_nb.network import PLAIN_CONV_UNET
from nnseg_nb.planning.settings import SHRINK_WHILE_ESTIMATE_EXCEEDS, PlannerSettings
from nnseg_nb.planning.trace import _fmt, _note
from nnseg_nb.plans import ArchitecturePlan
from nnseg_nb.resampling import ANISOTROPY_THRESHOLD, compute_new_shape

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
