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

The package, in the order of a plan: ``settings`` (planners as values, the presets), ``rules`` (one
function per decision), ``planner`` (``plan``, ``plan_configuration``, ``plan_lowres``, ``explain``,
``summary_lines``), ``trace`` (the decisions as text), ``on_disk`` (``plan_dataset``). Every public name
is here too: ``planning.plan``, ``planning.RESENC_L``, ... The plans file itself is ``nnseg_nb.plans``.
"""

from nnseg_nb.planning.on_disk import (
    PlannedDataset,
    merge_existing_plans,
    plan_dataset,
)
from nnseg_nb.planning.planner import (
    explain,
    plan,
    plan_configuration,
    plan_lowres,
    summary_lines,
)
from nnseg_nb.planning.rules import (
    NORMALIZATION_BY_CHANNEL_NAME,
    READER_WRITERS,
    RESAMPLING_DATA_KWARGS,
    RESAMPLING_FUNCTION,
    RESAMPLING_PROBABILITIES_KWARGS,
    RESAMPLING_SEG_KWARGS,
    SCHEMES_THAT_CAN_USE_MASK,
    USE_MASK_MAX_RELATIVE_SIZE,
    Topology,
    architecture_plan,
    axis_to_shrink,
    batch_size_for,
    channel_names,
    default_image_reader_writer,
    features_per_stage,
    fullres_target_spacing,
    median_shape_after_resampling,
    memory_budget,
    normalization_schemes,
    pad_shape,
    pool_and_conv_props,
    reference_batch_size,
    shrink_is_needed,
    shrink_limit,
    shrink_patch,
    starting_patch_size,
    transpose_axes,
)
from nnseg_nb.planning.settings import (
    DEFAULT,
    PRESETS,
    RESENC_L,
    RESENC_M,
    RESENC_XL,
    SHRINK_WHILE_BATCH_OF_2_EXCEEDS,
    SHRINK_WHILE_ESTIMATE_EXCEEDS,
    PlannerSettings,
    ShrinkWhile,
    preset,
    with_changes,
)
from nnseg_nb.planning.trace import (
    TraceRecord,
    format_explanation,
)
from nnseg_nb.plans import (  # the plans file (planning builds Plans; nnseg_nb.plans is their home)
    ArchitecturePlan,
    ConfigurationPlan,
    Plans,
    keep_custom_configurations,
    load_plans,
    save_plans,
)

__all__ = [
    "ArchitecturePlan",
    "ConfigurationPlan",
    "DEFAULT",
    "NORMALIZATION_BY_CHANNEL_NAME",
    "PRESETS",
    "PlannedDataset",
    "PlannerSettings",
    "Plans",
    "READER_WRITERS",
    "RESAMPLING_DATA_KWARGS",
    "RESAMPLING_FUNCTION",
    "RESAMPLING_PROBABILITIES_KWARGS",
    "RESAMPLING_SEG_KWARGS",
    "RESENC_L",
    "RESENC_M",
    "RESENC_XL",
    "SCHEMES_THAT_CAN_USE_MASK",
    "SHRINK_WHILE_BATCH_OF_2_EXCEEDS",
    "SHRINK_WHILE_ESTIMATE_EXCEEDS",
    "ShrinkWhile",
    "Topology",
    "TraceRecord",
    "USE_MASK_MAX_RELATIVE_SIZE",
    "architecture_plan",
    "axis_to_shrink",
    "batch_size_for",
    "channel_names",
    "default_image_reader_writer",
    "explain",
    "features_per_stage",
    "format_explanation",
    "fullres_target_spacing",
    "keep_custom_configurations",
    "load_plans",
    "median_shape_after_resampling",
    "memory_budget",
    "merge_existing_plans",
    "normalization_schemes",
    "pad_shape",
    "plan",
    "plan_configuration",
    "plan_dataset",
    "plan_lowres",
    "pool_and_conv_props",
    "preset",
    "reference_batch_size",
    "save_plans",
    "shrink_is_needed",
    "shrink_limit",
    "shrink_patch",
    "starting_patch_size",
    "summary_lines",
    "transpose_axes",
    "with_changes",
]
