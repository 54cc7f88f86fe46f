"""The planner itself: one configuration (``plan_configuration``), the 3d_lowres search (``plan_lowres``)
and the whole plans of a dataset (``plan``), from its fingerprint and dataset.json, with no disk access.

    plans = plan(fingerprint, dataset_json, DEFAULT, dataset_name="Dataset004_Hippocampus")
    print("\n".join(summary_lines(plans)))       # patch, batch, spacing per configuration
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from nnseg_nb.network import conv_feature_map_size
from nnseg_nb.planning.rules import (  # the rules, applied in order
    RESAMPLING_DATA_KWARGS,
    RESAMPLING_FUNCTION,
    RESAMPLING_PROBABILITIES_KWARGS,
    RESAMPLING_SEG_KWARGS,
    USE_MASK_MAX_RELATIVE_SIZE,
    Topology,
    architecture_plan,
    axis_to_shrink,
    batch_size_for,
    default_image_reader_writer,
    fullres_target_spacing,
    median_shape_after_resampling,
    normalization_schemes,
    pool_and_conv_props,
    shrink_is_needed,
    shrink_limit,
    shrink_patch,
    starting_patch_size,
    transpose_axes,
)
from nnseg_nb.planning.settings import DEFAULT, PlannerSettings
from nnseg_nb.planning.trace import TraceRecord, _fmt, _note
from nnseg_nb.plans import ArchitecturePlan, ConfigurationPlan, Plans


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
