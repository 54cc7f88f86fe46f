"""What a planner is: ``PlannerSettings`` (nnU-Net's planner classes written as values), the presets
``DEFAULT``, ``RESENC_M``/``L``/``XL``, and nnU-Net's command-line changes to them.

    settings = preset("resenc-l", gpu_memory_target_gb=16)      # nnUNetPlannerResEncL -gpu_memory_target 16
    settings = with_changes(DEFAULT, plans_name="nnUNetPlans_16GB", gpu_memory_target_gb=16)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nnseg_nb.network import PLAIN_CONV_UNET, RESIDUAL_ENCODER_UNET
from nnseg_nb.resampling import ANISOTROPY_THRESHOLD

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
