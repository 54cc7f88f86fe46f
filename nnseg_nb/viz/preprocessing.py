"""Pictures of preprocessing: one slice before and after (crop, resampling, normalization), with histograms.

    fig = preprocessing_figure_for_case(case, plans, "3d_fullres", dataset_json)   # reads and preprocesses
    show_figure(fig)

Both slices are drawn in millimetres, so the raw and the resampled grid line up and keep their true
aspect ratio; the dashed box is the crop to the nonzero region. The histograms show the channel's
intensities inside the nonzero mask before and after normalization.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nnseg_nb import io
from nnseg_nb.dataset import Case
from nnseg_nb.plans import as_plans
from nnseg_nb.preprocessing import nonzero_mask, preprocess_case
from nnseg_nb.viz.overlay import overlay_rgb, robust_window


def _source_index(index: int, old_size: int, new_size: int) -> int:
    """The cropped-grid slice nearest to preprocessed slice ``index`` (voxel centres, align_corners=False)."""
    position = (index + 0.5) * old_size / new_size - 0.5
    return int(np.clip(np.floor(position + 0.5), 0, old_size - 1))


def _busiest_slice(seg_zyx: np.ndarray) -> int:
    """The slice (axis 0) with the most foreground, or the middle one when there is none."""
    counts = (seg_zyx > 0).sum(axis=(1, 2))
    return int(np.argmax(counts)) if counts.any() else seg_zyx.shape[0] // 2


def preprocessing_figure(
    raw_data: np.ndarray,
    raw_seg: np.ndarray | None,
    raw_spacing: Sequence[float],
    data: np.ndarray,
    seg: np.ndarray,
    properties: dict,
    target_spacing: Sequence[float],
    channel: int = 0,
    slice_index: int | None = None,
    alpha: float = 0.35,
    panel_size: float = 4.0,
) -> Figure:
    """The same slice (axis 0 of the plan's axis order) before and after preprocessing, plus histograms.

    Args:
        raw_data: (C, Z, Y, X) image and raw_seg (1, Z, Y, X) labels (or None), already transposed to
            the plan's axis order; raw_spacing in that order (mm).
        data, seg, properties: what :func:`nnseg_nb.preprocessing.preprocess_case` returned.
        target_spacing: the configuration's spacing, 3 entries (for 2d, the slice spacing first).
        slice_index: a slice of the preprocessed grid; default the one with the most foreground.
    """
    bbox = properties["bbox_used_for_cropping"]
    cropped_shape = properties["shape_after_cropping_and_before_resampling"]
    new_seg = np.asarray(seg[0])
    index = _busiest_slice(new_seg) if slice_index is None else int(slice_index)
    raw_index = bbox[0][0] + _source_index(index, cropped_shape[0], data.shape[1])

    fig = Figure(figsize=(2 * panel_size, 2 * panel_size * 0.85), layout="constrained")
    (ax_raw, ax_new), (hist_raw, hist_new) = fig.subplots(2, 2, height_ratios=[3, 1])
    raw_image = np.asarray(raw_data[channel, raw_index], dtype=np.float32)
    raw_labels = None if raw_seg is None else np.asarray(raw_seg[0, raw_index])
    sy, sx = raw_spacing[1], raw_spacing[2]
    ax_raw.imshow(
        overlay_rgb(raw_image, raw_labels, robust_window(raw_data[channel]), alpha),
        extent=(0, raw_image.shape[1] * sx, raw_image.shape[0] * sy, 0),
        interpolation="nearest",
    )
    (y0, y1), (x0, x1) = bbox[1], bbox[2]
    ax_raw.add_patch(
        Rectangle(
            (x0 * sx, y0 * sy),
            (x1 - x0) * sx,
            (y1 - y0) * sy,
            fill=False,
            linestyle="--",
            color="gold",
            linewidth=1,
        )
    )
    ax_raw.set_title(
        f"raw slice {raw_index}: {tuple(raw_data.shape[1:])} voxels\nspacing {_fmt(raw_spacing)} mm",
        fontsize=9,
    )

    new_image = np.asarray(data[channel, index], dtype=np.float32)
    ty, tx = target_spacing[1], target_spacing[2]
    # the cropped box starts at (y0, x0) raw voxels; its edges stay put when resampling (align_corners=False)
    extent = (x0 * sx, x0 * sx + new_image.shape[1] * tx, y0 * sy + new_image.shape[0] * ty, y0 * sy)
    ax_new.imshow(
        overlay_rgb(new_image, new_seg[index], robust_window(data[channel]), alpha),
        extent=extent,
        interpolation="nearest",
    )
    ax_new.set_xlim(ax_raw.get_xlim())
    ax_new.set_ylim(ax_raw.get_ylim())
    ax_new.set_title(
        f"preprocessed slice {index}: {tuple(data.shape[1:])} voxels\nspacing {_fmt(target_spacing)} mm",
        fontsize=9,
    )
    for ax in (ax_raw, ax_new):
        ax.set_xlabel("mm", fontsize=8)
        ax.tick_params(labelsize=7)

    cropped_raw = raw_data[(slice(None), *(slice(lo, hi) for lo, hi in bbox))]
    _histogram(
        hist_raw, cropped_raw[channel][nonzero_mask(cropped_raw)], "raw intensities (inside the nonzero mask)"
    )
    _histogram(hist_new, np.asarray(data[channel])[new_seg >= 0], "after normalization")
    return fig


def _histogram(ax, values: np.ndarray, title: str) -> None:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[:: max(1, values.size // 1_000_000)]
    ax.hist(values, bins=100, color="0.35")
    ax.set_title(
        f"{title}\nmean {values.mean():.3g}, std {values.std():.3g}" if values.size else title, fontsize=8
    )
    ax.tick_params(labelsize=7)
    ax.set_yticks([])


def _fmt(spacing: Sequence[float]) -> str:
    return "(" + ", ".join(f"{s:.3g}" for s in spacing) + ")"


def preprocessing_figure_for_case(
    case: Case | Sequence[str],
    plans,
    configuration_name: str,
    dataset_json: dict,
    channel: int = 0,
    slice_index: int | None = None,
) -> Figure:
    """Read one case, preprocess it with ``plans`` and draw :func:`preprocessing_figure`.

    ``case`` is a :class:`~nnseg_nb.dataset.Case` (from ``find_cases``) or a list of channel files.
    """
    images, label = (case.images, case.label) if isinstance(case, Case) else (list(case), None)
    raw_data, props = io.read_case(images)
    raw_seg = io.read_seg(label)[0] if label is not None else None
    plans = as_plans(plans)
    data, seg, properties = preprocess_case(raw_data, raw_seg, props, plans, configuration_name, dataset_json)
    transpose = [int(a) for a in plans.transpose_forward]
    axes = [0, *(a + 1 for a in transpose)]
    raw_spacing = [props["spacing"][a] for a in transpose]
    target_spacing = list(plans.configuration(configuration_name).spacing)
    if len(target_spacing) < 3:
        target_spacing = [raw_spacing[0], *target_spacing]
    return preprocessing_figure(
        raw_data.transpose(axes),
        None if raw_seg is None else raw_seg.transpose(axes),
        raw_spacing,
        data,
        seg,
        properties,
        target_spacing,
        channel,
        slice_index,
    )


def intensity_histograms(
    volumes: dict[str, np.ndarray],
    mask: np.ndarray | None = None,
    lines: dict[str, Sequence[float]] | None = None,
    bins: int = 80,
    names: tuple[str, str] = ("inside the mask", "outside"),
    log: bool = False,
    panel_size: float = 3.2,
) -> Figure:
    """One histogram per volume (e.g. raw, then normalized two ways), voxels inside ``mask`` dark, outside light.

    Args:
        volumes: ``{title: (Z, Y, X) array}``, all of one shape (one channel of one case).
        mask: (Z, Y, X) bool, e.g. the nonzero mask (``seg >= 0`` after cropping); None: every voxel inside.
        lines: ``{title: [values]}`` drawn as dashed vertical lines (e.g. clipping percentiles).
        names: legend entries of the voxels inside and outside ``mask``; log: logarithmic counts.

    Each title gets the mean and std of the voxels inside the mask, the numbers normalization is about.
    """
    lines = lines or {}
    fig = Figure(figsize=(panel_size * len(volumes), panel_size * 0.75), layout="constrained")
    axes = fig.subplots(1, len(volumes), squeeze=False)[0]
    for ax, (title, volume) in zip(axes, volumes.items()):
        volume = np.asarray(volume, dtype=np.float64)
        inside = np.ones(volume.shape, bool) if mask is None else np.asarray(mask, bool)
        ax.hist(
            [volume[inside], volume[~inside]],
            bins=bins,
            stacked=True,
            color=["0.25", "lightsteelblue"],
            label=list(names),
            log=log,
        )
        for value in lines.get(title, ()):
            ax.axvline(value, color="firebrick", linestyle="--", linewidth=1)
        mean, std = (
            round(float(v), 4) + 0.0 for v in (volume[inside].mean(), volume[inside].std())
        )  # no -0, 1e-9
        ax.set_title(f"{title}\nmean {mean:.3g}, std {std:.3g} ({names[0]})", fontsize=8)
        ax.tick_params(labelsize=7)
        if not log:
            ax.set_yticks([])
    if mask is not None and (~np.asarray(mask, bool)).any():
        axes[0].legend(fontsize=7)
    return fig


def through_plane_figure(
    volumes: dict[str, tuple[np.ndarray, Sequence[float]]], row: float = 0.5, panel_size: float = 3.0
) -> Figure:
    """A cut across the slices (axis 1 fixed: the (Z, X) plane) of each volume, drawn in millimetres.

    Shows what happens along the slice axis: thick slices as tall blocks, and whether resampling
    interpolated new slices or repeated the nearest one.

    Args:
        volumes: ``{title: ((Z, Y, X) array, spacing (Z, Y, X) in mm)}`` of one scan; the window is the first's.
        row: where along axis 1 to cut, as a fraction of its length (default the middle).
    """
    window = robust_window(next(iter(volumes.values()))[0])
    fig = Figure(figsize=(panel_size * len(volumes), panel_size * 0.9), layout="constrained")
    axes = fig.subplots(1, len(volumes), squeeze=False)[0]
    for ax, (title, (volume, spacing)) in zip(axes, volumes.items()):
        cut = np.asarray(volume)[:, min(int(row * volume.shape[1]), volume.shape[1] - 1)]
        ax.imshow(
            overlay_rgb(cut, None, window),
            extent=(0, cut.shape[1] * spacing[2], cut.shape[0] * spacing[0], 0),
            interpolation="nearest",
        )
        ax.set_title(f"{title}\n{cut.shape[0]} slices of {spacing[0]:.3g} mm", fontsize=8)
        ax.set_xlabel("mm", fontsize=7)
        ax.set_ylabel("mm (slice axis)", fontsize=7)
        ax.tick_params(labelsize=7)
    return fig
