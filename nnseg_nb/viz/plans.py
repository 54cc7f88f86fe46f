"""Pictures of a plans file: the patch to scale on a real case, the U-Net it implies, a planning widget.

Every function takes any ``nnUNetPlans.json``, ours or nnU-Net's: as ``Plans``, as its dict or as a path::

    show_figure(fingerprint_figure(fingerprint, dataset_json))    # spacings, shapes after crop, intensities
    plans = planning.plan(fingerprint, dataset_json)
    show_figure(patch_boxes_figure(plans, image, spacing))       # each configuration's patch on 3 slices, in mm
    show_figure(topology_figure(plans, "3d_fullres"))            # the U-Net: stages, sizes, strides, kernels

The planning widget, which re-plans as GPU memory and preset change, is :mod:`nnseg_nb.viz.planning_widget`.

``image`` is ``(C, Z, Y, X)`` with ``spacing`` in the reader's axis order, as ``io.read_case`` returns
them; the figures transpose both with the plans' ``transpose_forward``. Slices are drawn in
millimetres, resampled to each configuration's target spacing, so a box of ``patch_size *
spacing`` mm is the patch to scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from scipy import ndimage

from nnseg_nb.fingerprint import SUMMATION_RTOL
from nnseg_nb.network import RESIDUAL_ENCODER_UNET, stage_sizes
from nnseg_nb.plans import ConfigurationPlan, Plans, as_plans
from nnseg_nb.viz.browser import AXIS_NAMES
from nnseg_nb.viz.overlay import overlay_rgb, robust_window

CONFIGURATION_COLORS = {"2d": "tab:orange", "3d_fullres": "tab:red", "3d_lowres": "tab:cyan"}
MAIN_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _times(values: Sequence[float], digits: int = 4) -> str:
    return " x ".join(f"{float(v):.{digits}g}" for v in values)


def plotted_configurations(plans: Plans, configurations: Sequence[str] | None = None) -> list[str]:
    """The configurations to draw: those asked for, else 2d, 3d_fullres and 3d_lowres (those present).

    A plans file with none of the three (custom names only) gets all of its configurations.
    """
    if configurations is not None:
        for name in configurations:
            plans.configuration(name)  # a readable error for an unknown name
        return list(configurations)
    present = [name for name in MAIN_CONFIGURATIONS if name in plans.configurations]
    return present or list(plans.configurations)


# --- patch boxes --------------------------------------------------------------------------------


def _to_plan_order(
    image: np.ndarray, spacing: Sequence[float], plans: Plans
) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or len(spacing) != 3:
        raise ValueError(
            f"image must be (C, Z, Y, X) with a 3-value spacing, got {image.shape} and {spacing}"
        )
    forward = list(plans.transpose_forward)
    return image.transpose([0] + [a + 1 for a in forward]), np.asarray(spacing, dtype=float)[forward]


def configuration_spacing_3d(configuration: ConfigurationPlan, image_spacing: Sequence[float]) -> np.ndarray:
    """A configuration's target spacing with 3 entries: a 2d one keeps the image's own slice spacing."""
    spacing = [float(s) for s in configuration.spacing]
    return np.array(spacing if len(spacing) == 3 else [float(image_spacing[0])] + spacing)


def patch_extent_mm(configuration: ConfigurationPlan, image_spacing: Sequence[float]) -> np.ndarray:
    """The patch in millimetres per axis (plan order): ``patch_size * spacing``; a 2d patch is one slice thick."""
    patch = list(configuration.patch_size)
    patch = patch if len(patch) == 3 else [1] + patch
    return np.array(patch) * configuration_spacing_3d(configuration, image_spacing)


def _view_slice(
    volume: np.ndarray, axis: int, index: int, spacing: np.ndarray, target: np.ndarray, order: int
) -> tuple[np.ndarray, tuple[float, float]]:
    """A slice along ``axis`` resampled to the target's in-plane spacing; returns it and its (rows, cols) mm."""
    plane = np.take(volume, index, axis=axis)
    in_plane = [a for a in range(3) if a != axis]
    zoom = [spacing[a] / target[a] for a in in_plane]
    new_shape = [max(1, round(n * z)) for n, z in zip(plane.shape, zoom)]
    plane = ndimage.zoom(
        plane.astype(np.float32),
        [n / o for n, o in zip(new_shape, plane.shape)],
        order=order,
        mode="nearest",
        grid_mode=True,
    )
    return plane, (new_shape[0] * target[in_plane[0]], new_shape[1] * target[in_plane[1]])


def _box_view(ax, box_mm: np.ndarray, centre_mm: np.ndarray, axis: int, color: str, gid: str) -> Rectangle:
    rows, cols = (a for a in range(3) if a != axis)
    rect = Rectangle(
        (centre_mm[cols] - box_mm[cols] / 2, centre_mm[rows] - box_mm[rows] / 2),
        box_mm[cols],
        box_mm[rows],
        fill=False,
        edgecolor=color,
        linewidth=2,
        gid=gid,
    )
    ax.add_patch(rect)
    return rect


def _draw_view(
    ax, image_zyx, seg_zyx, spacing, target, axis, centre_vox, window, names
) -> tuple[float, float]:
    rows, cols = (a for a in range(3) if a != axis)
    index = int(np.clip(round(centre_vox[axis]), 0, image_zyx.shape[axis] - 1))
    plane, (height, width) = _view_slice(image_zyx, axis, index, spacing, target, order=1)
    labels = None if seg_zyx is None else _view_slice(seg_zyx, axis, index, spacing, target, order=0)[0]
    # axis 0 view: rows top-down as on screen; other views: the plan's axis 0 points up
    origin = "upper" if axis == 0 else "lower"
    extent = (0, width, height, 0) if axis == 0 else (0, width, 0, height)
    ax.imshow(overlay_rgb(plane, labels, window, 0.35), extent=extent, origin=origin, interpolation="nearest")
    ax.set_title(f"{names[axis]} = {index}", fontsize=8)
    ax.set_xlabel(f"{names[cols]} (mm)", fontsize=7, labelpad=1)
    ax.set_ylabel(f"{names[rows]} (mm)", fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6, length=2, pad=1)
    return height, width


def _fit_limits(ax, axis: int, image_mm: tuple[float, float], box: Rectangle) -> None:
    """Show the whole image and the whole box (a padded patch can be larger than the image)."""
    x0, y0 = min(0.0, box.get_x()), min(0.0, box.get_y())
    x1, y1 = max(image_mm[1], box.get_x() + box.get_width()), max(image_mm[0], box.get_y() + box.get_height())
    margin = 0.03 * max(x1 - x0, y1 - y0)
    ax.set_xlim(x0 - margin, x1 + margin)
    ax.set_ylim((y1 + margin, y0 - margin) if axis == 0 else (y0 - margin, y1 + margin))
    ax.set_aspect("equal")


def patch_title(name: str, configuration: ConfigurationPlan, image_spacing: Sequence[float]) -> str:
    """``3d_fullres: patch 64 x 80 x 64 voxels = 159 x 196 x 156 mm at 2.48 x 2.44 x 2.44 mm, batch 2``."""
    extent = patch_extent_mm(configuration, image_spacing)[-len(configuration.patch_size) :]
    return (
        f"{name}: patch {_times(configuration.patch_size)} voxels = {_times(extent, 3)} mm "
        f"at {_times(configuration.spacing, 3)} mm, batch {configuration.batch_size}"
    )


def patch_boxes_figure(
    plans,
    image: np.ndarray,
    spacing: Sequence[float],
    configurations: Sequence[str] | None = None,
    seg: np.ndarray | None = None,
    centre: Sequence[float] | None = None,
    channel: int = 0,
    panel_size: float = 2.6,
) -> Figure:
    """Each configuration's patch drawn to scale on three orthogonal slices of a case, one row per configuration.

    Args:
        plans: ``Plans``, nnU-Net's plans dict or a path to a plans JSON.
        image: ``(C, Z, Y, X)`` (or ``(Z, Y, X)``) in the reader's axis order; ``spacing`` in that order (mm).
        configurations: names to draw (default 2d, 3d_fullres, 3d_lowres, those present).
        seg: optional ``(1, Z, Y, X)`` labels, overlaid.
        centre: the box centre in voxels (reader order); default the image centre.

    Each slice is resampled to the configuration's spacing (2d: in-plane only) and drawn in mm, so the
    box is ``patch_size * spacing`` mm per axis (its ``gid`` is ``"<configuration> axis <a>"``). A 2d
    patch is drawn on the axis-0 slice; the other views show it as one slice thick.

    >>> fig = patch_boxes_figure(plans, image, props["spacing"])   # doctest: +SKIP
    """
    plans = as_plans(plans)
    volume, image_spacing = _to_plan_order(image, spacing, plans)
    volume = volume[min(channel, volume.shape[0] - 1)]
    seg_zyx = None if seg is None else _to_plan_order(seg, spacing, plans)[0][0]
    if centre is None:
        centre_vox = (np.array(volume.shape) - 1) / 2
    else:
        centre_vox = np.asarray(centre, dtype=float)[list(plans.transpose_forward)]
    names = [AXIS_NAMES[a] for a in plans.transpose_forward]
    window = robust_window(volume)
    selected = plotted_configurations(plans, configurations)
    fig = Figure(figsize=(3 * panel_size, len(selected) * (panel_size + 0.35)), layout="constrained")
    rows = np.atleast_1d(fig.subfigures(len(selected), 1))
    for subfig, name in zip(rows, selected):
        configuration = plans.configuration(name)
        target = configuration_spacing_3d(configuration, image_spacing)
        box_mm = patch_extent_mm(configuration, image_spacing)
        centre_mm = (centre_vox + 0.5) * image_spacing
        color = CONFIGURATION_COLORS.get(name, "tab:green")
        for axis, ax in enumerate(subfig.subplots(1, 3)):
            image_mm = _draw_view(ax, volume, seg_zyx, image_spacing, target, axis, centre_vox, window, names)
            box = _box_view(ax, box_mm, centre_mm, axis, color, gid=f"{name} axis {axis}")
            _fit_limits(ax, axis, image_mm, box)
        subfig.suptitle(patch_title(name, configuration, image_spacing), fontsize=9, color=color)
    return fig


# --- topology -----------------------------------------------------------------------------------


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's loss weights of the deep-supervision outputs, highest resolution first.

    ``1 / 2**i``, the lowest-resolution output set to 0, normalized to sum 1.

    >>> [round(w, 3) for w in deep_supervision_weights(3)]
    [0.667, 0.333, 0.0]
    """
    weights = np.array([1 / 2**i for i in range(n_outputs)])
    if n_outputs > 1:
        weights[-1] = 0.0
    return (weights / weights.sum()).tolist()


def topology_rows(configuration: ConfigurationPlan) -> dict[str, list[dict]]:
    """The network of a configuration as two tables: ``{"encoder": [...], "decoder": [...]}``.

    Encoder row s: ``size`` (patch // cumulative stride), ``stride``, ``kernel``, ``features``,
    ``blocks`` (convs for PlainConvUNet, residual blocks for ResidualEncoderUNet). Decoder rows,
    from the bottleneck up: ``stage`` (the encoder stage whose size and skip they use), ``size``,
    ``features``, ``convs``, ``output`` (deep-supervision output index, 0 = full resolution) and
    ``weight`` (its loss weight).

    >>> rows = topology_rows(plans.configuration("3d_fullres"))               # doctest: +SKIP
    >>> [r["size"] for r in rows["encoder"]]                                  # doctest: +SKIP
    [[40, 56, 40], [20, 28, 20], [10, 14, 10], [5, 7, 5]]
    """
    arch = configuration.architecture
    n, dim = arch.n_stages, len(configuration.patch_size)

    def listed(value, length: int) -> list:  # dynamic-network-architectures takes one value or one per stage
        return list(value) if isinstance(value, (list, tuple)) else [value] * length

    strides = [listed(s, dim) for s in listed(arch.strides, n)]
    kernels = [listed(k, dim) for k in listed(arch.kernel_sizes, n)]
    features, blocks = listed(arch.features_per_stage, n), listed(arch.blocks_per_stage, n)
    decoder_convs = listed(arch.n_conv_per_stage_decoder, n - 1)
    sizes = stage_sizes(configuration.patch_size, strides)
    encoder = [
        {
            "stage": s,
            "size": sizes[s],
            "stride": strides[s],
            "kernel": kernels[s],
            "features": features[s],
            "blocks": blocks[s],
        }
        for s in range(n)
    ]
    weights = deep_supervision_weights(n - 1)
    decoder = [
        {
            "stage": s,
            "size": sizes[s],
            "features": features[s],
            "kernel": kernels[s],
            "convs": decoder_convs[n - 2 - s],
            "output": s,
            "weight": weights[s],
        }
        for s in range(n - 2, -1, -1)
    ]
    return {"encoder": encoder, "decoder": decoder}


def _box(ax, x: float, y: float, width: float, text: str, face: str, height: float = 0.62) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02",
            facecolor=face,
            edgecolor="0.3",
            linewidth=0.8,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5, linespacing=1.25)


def _arrow(ax, start, end, text: str = "", style: str = "-|>", **kwargs) -> None:
    ax.annotate(
        "", xy=end, xytext=start, arrowprops={"arrowstyle": style, "color": "0.35", "lw": 1, **kwargs}
    )
    if text:
        ax.text(
            (start[0] + end[0]) / 2,
            (start[1] + end[1]) / 2,
            text,
            fontsize=6.5,
            ha="center",
            va="center",
            color="0.25",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
        )


def topology_figure(plans, configuration: str = "3d_fullres", width: float = 9.0) -> Figure:
    """The U-Net of a configuration drawn as a U: encoder down the left, decoder up the right.

    Each encoder box gives the stage's feature-map size (patch // cumulative stride), channels,
    number of convs (PlainConvUNet) or residual blocks (ResidualEncoderUNet) and kernel; arrows
    give the strides; dashed lines are the skip connections; each decoder level ends in a
    deep-supervision output with its loss weight (the lowest gets weight 0).
    """
    plans = as_plans(plans)
    config = plans.configuration(configuration)
    rows = topology_rows(config)
    encoder, decoder = rows["encoder"], rows["decoder"]
    n = len(encoder)
    residual = config.architecture.network_class_name == RESIDUAL_ENCODER_UNET
    unit = "res block" if residual else "conv"
    max_features = max(r["features"] for r in encoder)
    fig = Figure(figsize=(width, 0.85 * n + 1.0), layout="constrained")
    ax = fig.add_subplot()
    step, box_width = 0.55, 2.3
    for r in encoder:
        s = r["stage"]
        face = (1.0, 1 - 0.45 * r["features"] / max_features, 1 - 0.7 * r["features"] / max_features)
        text = (
            f"stage {s}: {_times(r['size'])}\n{r['features']} ch, {_count(r['blocks'], unit)} "
            f"{_times(r['kernel'])}" + ("\n+ stem conv" if residual and s == 0 else "")
        )
        _box(ax, s * step, -s, box_width, text, face)
        if s > 0:
            _arrow(
                ax, ((s - 1) * step, -(s - 1) - 0.31), (s * step, -s + 0.31), f"stride {_times(r['stride'])}"
            )
    right = 2 * (n - 1) * step + 1.2 * box_width
    for r in decoder:
        s = r["stage"]
        x = right - s * step
        text = f"{_times(r['size'])}\n{r['features']} ch, {_count(r['convs'], 'conv')} {_times(r['kernel'])}"
        _box(ax, x, -s, box_width, text, "#dbe9f6")
        below = (x + step, -(s + 1) + 0.31) if s < n - 2 else ((n - 1) * step + box_width / 2, -(n - 1))
        _arrow(ax, below, (x, -s - 0.31), f"up {_times(encoder[s + 1]['stride'])}")
        _arrow(ax, (s * step + box_width / 2, -s), (x - box_width / 2, -s), style="-|>", linestyle="--")
        out_color = "0.55" if r["weight"] == 0 else "tab:green"
        _arrow(ax, (x + box_width / 2, -s), (x + box_width / 2 + 0.3, -s), color=out_color)
        ax.text(
            x + box_width / 2 + 0.35,
            -s,
            f"output {r['output']}: {_times(r['size'])}\nloss weight {r['weight']:.3f}",
            fontsize=7,
            va="center",
            color=out_color,
        )
    ax.text(0, 0.5, "encoder", ha="center", fontsize=8, weight="bold")
    ax.text(right, 0.5, "decoder", ha="center", fontsize=8, weight="bold")
    ax.set_xlim(-box_width / 2 - 0.2, right + box_width / 2 + 2.3)
    ax.set_ylim(-(n - 1) - 0.6, 0.75)
    ax.set_axis_off()
    network = "ResidualEncoderUNet" if residual else config.architecture.network_class_name.rsplit(".", 1)[-1]
    ax.set_title(
        f"{configuration}: {network}, {n} stages, patch {_times(config.patch_size)}, "
        f"batch {config.batch_size}; skips dashed, deep-supervision outputs on the right",
        fontsize=9,
    )
    return fig


# --- fingerprint --------------------------------------------------------------------------------


def _strip(ax, values: np.ndarray, ylabel: str, title: str) -> None:
    """Per axis, one dot per case (jittered sideways) and the median as a bar."""
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=len(values))
    for axis in range(values.shape[1]):
        ax.scatter(axis + jitter, values[:, axis], s=10, alpha=0.7, color=f"C{axis}")
        median = float(np.median(values[:, axis]))
        ax.plot([axis - 0.3, axis + 0.3], [median] * 2, color="k", lw=1.5)
        ax.annotate(f"{median:.3g}", (axis + 0.32, median), fontsize=7, va="center")
    ax.set_xticks(range(values.shape[1]), AXIS_NAMES[: values.shape[1]])
    ax.set_xlim(-0.5, values.shape[1] - 0.1)
    if values.max() / max(values.min(), 1e-9) > 30:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)


def fingerprint_figure(
    fingerprint: dict, dataset_json: dict | None = None, panel_size: float = 3.2
) -> Figure:
    """The fingerprint at a glance: spacings and shapes after crop per axis (one dot per case, median bar),
    and the foreground intensities per channel (min-max line, 0.5-99.5 percentile bar, median, mean ± std)."""
    spacings = np.asarray(fingerprint["spacings"], dtype=float)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=float)
    intensities = fingerprint.get("foreground_intensity_properties_per_channel", {})
    names = (dataset_json or {}).get("channel_names", {})
    fig = Figure(figsize=(3 * panel_size, panel_size), layout="constrained")
    ax_spacing, ax_shape, ax_intensity = fig.subplots(1, 3)
    _strip(ax_spacing, spacings, "spacing (mm)", f"spacing of {len(spacings)} cases")
    _strip(ax_shape, shapes, "voxels", "shape after crop to nonzero")
    for row, (_channel, stats) in enumerate(intensities.items()):
        y = -row
        ax_intensity.plot([stats["min"], stats["max"]], [y, y], color="0.6", lw=1)
        ax_intensity.plot(
            [stats["percentile_00_5"], stats["percentile_99_5"]],
            [y, y],
            color=f"C{row}",
            lw=7,
            solid_capstyle="butt",
            alpha=0.6,
        )
        ax_intensity.errorbar(
            stats["mean"], y + 0.22, xerr=stats["std"], fmt="o", ms=3, color="k", capsize=2, lw=1
        )
        ax_intensity.plot([stats["median"]] * 2, [y - 0.12, y + 0.12], color="k", lw=2)
    ax_intensity.set_yticks(
        [-r for r in range(len(intensities))], [f"{c}: {names.get(c, '')}" for c in intensities], fontsize=8
    )
    ax_intensity.set_ylim(-len(intensities) + 0.4, 0.6)
    ax_intensity.set_xlabel("foreground intensity", fontsize=8)
    ax_intensity.set_title("0.5-99.5% bar, median |, mean ± std", fontsize=9)
    for ax in (ax_spacing, ax_shape, ax_intensity):
        ax.tick_params(labelsize=7)
    return fig


# --- comparing plans ----------------------------------------------------------------------------


INTENSITY_KEY = "foreground_intensity_properties_per_channel"


def _equal(a, b, rtol: float = 0.0) -> bool:
    """Equal values; floats (anywhere inside dicts and lists) within ``rtol`` relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k], rtol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rtol)
        )
    return a == b


def configuration_differences(
    plans_a, plans_b, configurations: Sequence[str] | None = None, intensity_rtol: float = SUMMATION_RTOL
) -> dict[str, list[str]]:
    """Which keys differ, per configuration (``inherits_from`` resolved) and for the file (``"plans"``).

    Returns ``{"plans": [top-level keys], name: [configuration keys], ...}``; an empty list means
    equal. A configuration only one side has is reported as ``["only in the first"]`` or
    ``["only in the second"]``. The dataset's intensity statistics are a top-level key, compared
    within ``intensity_rtol`` (their mean and std are sums of 1e8 float32 values whose order differs
    between numpy versions, see :data:`nnseg_nb.fingerprint.SUMMATION_RTOL`); every other value must
    be equal. Pass ``intensity_rtol=0`` for exact equality.
    """
    a, b = as_plans(plans_a), as_plans(plans_b)
    ja, jb = a.to_json(), b.to_json()
    differences = {
        "plans": sorted(
            k
            for k in set(ja) | set(jb)
            if k != "configurations"
            and not _equal(ja.get(k), jb.get(k), intensity_rtol if k == INTENSITY_KEY else 0.0)
        )
    }
    names = configurations or list(dict.fromkeys([*a.configurations, *b.configurations]))
    for name in names:
        if name not in b.configurations or name not in a.configurations:
            differences[name] = ["only in the first" if name in a.configurations else "only in the second"]
            continue
        ca, cb = a.configuration(name).to_json(), b.configuration(name).to_json()
        differences[name] = sorted(k for k in set(ca) | set(cb) if not _equal(ca.get(k), cb.get(k)))
    return differences


__all__ = [
    "configuration_differences",
    "deep_supervision_weights",
    "fingerprint_figure",
    "patch_boxes_figure",
    "patch_extent_mm",
    "topology_figure",
    "topology_rows",
]
