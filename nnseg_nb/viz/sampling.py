"""Pictures of patch sampling: where each patch of a batch was cut, and which were forced to foreground.

batch = loader.sample_batch(folder, case_ids, settings, loader.batch_rng(0, 0))
fig = patch_sampling_figure(batch, folder, patch_size=settings.patch_size)
show_figure(fig)   # from nnseg_nb.viz
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nnseg_nb.preprocessed import open_case
from nnseg_nb.viz.overlay import overlay_rgb, robust_window

FORCED_COLOR = "tab:red"
RANDOM_COLOR = "gold"


def _draw_box(ax, y: Sequence[int], x: Sequence[int], color: str, **style) -> None:
    # pixel centres sit on integers, so a half-open box [lo, hi) spans lo - 0.5 .. hi - 0.5
    ax.add_patch(
        Rectangle((x[0] - 0.5, y[0] - 0.5), x[1] - x[0], y[1] - y[0], fill=False, color=color, **style)
    )


def patch_sampling_figure(
    batch: dict,
    folder: str | Path,
    patch_size: Sequence[int] | None = None,
    channel: int = 0,
    columns: int = 4,
    panel_size: float = 3.0,
) -> Figure:
    """One panel per sample: its case's slice through the patch centre, labels overlaid, patch box drawn.

    Forced-foreground samples are drawn in red with the class they were centred on (a cross marks the
    patch centre, which is the chosen voxel unless the patch was clamped at the lower bound); random
    samples in yellow. The axes reach beyond the image where a patch does; padding is shown grey.

    Args:
        batch: from ``loader.sample_batch`` (or the DataLoader): uses ``case_ids``, ``crop_boxes``
            (B, 3, 2), ``forced_foreground`` (B,) and ``selected_classes``.
        folder: the preprocessed folder the batch came from.
        patch_size: the final patch (after augmentation's centre crop), drawn dashed inside the loaded one.
        channel: image channel to show.
    """
    boxes = np.asarray(batch["crop_boxes"])
    forced = np.asarray(batch["forced_foreground"], bool)
    selected = batch.get("selected_classes", [None] * len(boxes))
    rows = -(-len(boxes) // columns)
    fig = Figure(figsize=(panel_size * columns, panel_size * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(boxes) :]:
        ax.axis("off")
    for ax, case, box, is_forced, key in zip(axes.flat, batch["case_ids"], boxes, forced, selected):
        arrays = open_case(folder, case)
        (z0, z1), (y0, y1), (x0, x1) = box.tolist()
        z = int(np.clip(z0 + (z1 - z0) // 2, 0, arrays.data.shape[1] - 1))
        ax.set_facecolor("0.85")  # what shows around the image is padding
        window = robust_window(arrays.data[channel])
        ax.imshow(overlay_rgb(arrays.data[channel, z], arrays.seg[0, z], window))
        color = FORCED_COLOR if is_forced else RANDOM_COLOR
        _draw_box(ax, (y0, y1), (x0, x1), color, linewidth=2)
        if patch_size is not None:  # the final patch: centred in the loaded one
            py, px = patch_size[-2:]
            cy, cx = y0 + (y1 - y0 - py) // 2, x0 + (x1 - x0 - px) // 2
            _draw_box(ax, (cy, cy + py), (cx, cx + px), color, linewidth=1, linestyle="--")
        if key is not None:
            ax.plot(x0 + (x1 - x0) // 2, y0 + (y1 - y0) // 2, "+", color=color, markersize=12, mew=2)
        height, width = arrays.data.shape[2:]
        ax.set_xlim(min(x0, 0) - 1, max(x1, width) + 0.5)
        ax.set_ylim(max(y1, height) + 0.5, min(y0, 0) - 1)
        what = (
            f"forced: class {key}"
            if is_forced and key is not None
            else "forced, no fg"
            if is_forced
            else "random"
        )
        ax.set_title(f"{case}  z={z}\n{what}", color="firebrick" if is_forced else "black", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Patch sampling: the last ~33% of each batch is centred on foreground (red)")
    fig.tight_layout()
    return fig
