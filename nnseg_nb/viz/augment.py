"""Pictures of augmentation: many random draws of nnU-Net's training pipeline on one patch, and the
deep-supervision targets.

    pipeline = training_pipeline(patch_size, rotation_range, mirror_axes, dummy_2d)
    fig = augmentation_gallery(image, seg, pipeline, n=11, generator=torch.Generator().manual_seed(0))
    show_figure(fig)                                   # from nnseg_nb.viz
    show_figure(deep_supervision_figure(seg, deep_supervision_scales(pool_op_kernel_sizes)))

``image`` (C, *loaded) and ``seg`` (1, *loaded) are one sample of a loader batch (the larger initial
patch). Each draw has its own seed, taken from the one generator, so any panel can be redone alone with
:func:`draw_augmentations`. Its caption lists what the pipeline applied to it: every step draws its
parameters first (``Transform.sample``), and those say what happened.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from nnseg_nb import augment
from nnseg_nb.viz.overlay import label_colors, overlay_rgb, robust_window

AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}


class Draw(NamedTuple):
    """One run of a pipeline on one patch."""

    image: np.ndarray  # (C, *patch) float32
    seg: np.ndarray  # (S, *patch) int (the full-resolution target when the pipeline ends in deep supervision)
    applied: list[str]  # what was done, in order, e.g. ["rotation 23°", "scaling x1.12", "flip x"]
    seed: int


def _describe(step: augment.Transform, params: dict, ndim: int) -> list[str]:
    """What ``step`` does to sample 0 with these parameters, in a few words (empty: nothing)."""
    if isinstance(step, augment.SpatialTransform):
        notes = []
        if bool(params["rotate"][0]):
            degrees = [f"{np.degrees(float(a)):.0f}" for a in params["angles"][0]]
            notes.append(
                f"rotation {degrees[0]}°" if len(degrees) == 1 else f"rotation ({', '.join(degrees)})°"
            )
        if bool(params["scale"][0]):
            notes.append(f"scaling x{float(params['scales'][0]):.2f}")
        return notes
    if isinstance(step, augment.Mirror):
        axes = [AXIS_NAMES[ndim][a] for a in np.flatnonzero(params["flips"][0].numpy())]
        return [f"flip {''.join(axes)}"] if axes else []
    applied = params.get("applied")
    if applied is None or not bool(applied[0]):
        return []
    chosen = params.get("channels")
    if chosen is not None and not bool(chosen[0].any()):  # per-channel steps may pick no channel
        return []
    if isinstance(step, augment.GaussianNoise):
        return [f"noise σ {float(params['std'][0]):.2f}"]
    if isinstance(step, augment.GaussianBlur):
        return ["blur"]
    if isinstance(step, augment.MultiplicativeBrightness):
        return [f"brightness x{float(params['multipliers'][0, 0]):.2f}"]
    if isinstance(step, augment.Contrast):
        return [f"contrast x{float(params['factors'][0, 0]):.2f}"]
    if isinstance(step, augment.SimulateLowResolution):
        return ["low resolution"]
    if isinstance(step, augment.Gamma):
        return [f"{'inverted ' if step.invert else ''}gamma {float(params['gammas'][0, 0]):.2f}"]
    return [type(step).__name__]


def draw_augmentations(
    image,
    seg,
    pipeline: Sequence[augment.Transform],
    seeds: Sequence[int],
    device: torch.device | str | None = None,
) -> list[Draw]:
    """Run ``pipeline`` on one patch once per seed (a batch of one, ``torch.Generator().manual_seed(seed)``).

    The result equals ``augment.augment`` with that generator; the steps are run one by one only to read
    their parameters. Computed on ``device`` (default: where ``image`` is), returned as numpy.

    Args:
        image: (C, *loaded) float patch; seg: (S, *loaded) int labels (-1 outside the mask or the volume).
        pipeline: e.g. ``augment.training_pipeline(...)``.
    """
    image, seg = torch.as_tensor(image), torch.as_tensor(seg)
    device = image.device if device is None else torch.device(device)
    ndim = image.ndim - 1
    draws = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        batch = {"image": image[None].to(device), "seg": seg[None].to(device)}
        applied = []
        for step in pipeline:
            params = step.sample(batch, generator)
            applied += _describe(step, params, ndim)
            batch = step.apply(batch, params)
        target = batch["seg"][0] if isinstance(batch["seg"], list) else batch["seg"]
        draws.append(Draw(batch["image"][0].cpu().numpy(), target[0].cpu().numpy(), applied, int(seed)))
    return draws


def unaugmented(image, seg, pipeline: Sequence[augment.Transform]) -> Draw:
    """The patch as the network would see it without augmentation: the centre crop, -1 labels made 0."""
    spatial = next(step for step in pipeline if isinstance(step, augment.SpatialTransform))
    plain = [dataclasses.replace(spatial, p_rotation=0.0, p_scaling=0.0), augment.RemoveLabel()]
    return draw_augmentations(image, seg, plain, [0])[0]._replace(applied=["original (centre crop)"])


def _middle(array: np.ndarray, index: int | None) -> np.ndarray:
    """A 2D view of a (*spatial) array: itself in 2D, slice ``index`` (default the middle) of axis 0 in 3D."""
    if array.ndim == 2:
        return array
    return array[array.shape[0] // 2 if index is None else index]


def augmentation_gallery(
    image,
    seg,
    pipeline: Sequence[augment.Transform],
    n: int = 11,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    channel: int = 0,
    slice_index: int | None = None,
    columns: int = 6,
    panel_size: float = 2.0,
    alpha: float = 0.4,
) -> Figure:
    """The unaugmented patch, then ``n`` random draws of ``pipeline``, labels overlaid, captioned.

    Args:
        image: (C, *loaded) patch (numpy or tensor); seg: (S, *loaded) labels; one sample of a loader batch.
        pipeline: the training pipeline (without ``DownsampleSegForDS`` is simplest; with it, the
            full-resolution target is shown).
        generator: the draws' seeds come from it (``torch.randint``); default ``manual_seed(0)``.
        device: where the pipeline runs (e.g. the notebook's ``device``).
        slice_index: the slice (axis 0 of the final patch) shown for a 3D patch; default the middle one.

    All panels share the original's intensity window, so brightness, contrast and gamma show as such.
    """
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator).tolist()
    draws = [unaugmented(image, seg, pipeline), *draw_augmentations(image, seg, pipeline, seeds, device)]
    window = robust_window(draws[0].image[channel])
    rows = -(-len(draws) // columns)
    fig = Figure(figsize=(panel_size * columns, (panel_size + 0.45) * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, draw) in enumerate(zip(axes.flat, draws)):
        ax.imshow(
            overlay_rgb(
                _middle(draw.image[channel], slice_index), _middle(draw.seg[0], slice_index), window, alpha
            ),
            interpolation="nearest",
        )
        caption = ", ".join(draw.applied) if draw.applied else "nothing applied"
        title = caption if k == 0 else f"#{k}: {caption}"
        ax.set_title(textwrap.fill(title, 26), fontsize=7, color="firebrick" if k == 0 else "black")
    fig.suptitle(
        f"nnU-Net's training augmentation: {n} random draws of one patch {tuple(draws[0].image.shape[1:])}",
        fontsize=10,
    )
    return fig


def deep_supervision_figure(
    seg, scales: Sequence[Sequence[float]], slice_index: int | None = None, panel_size: float = 2.2
) -> Figure:
    """One panel per deep-supervision output: the target at that scale, as ``DownsampleSegForDS`` makes it.

    Args:
        seg: (1, *patch) labels of the final patch (numpy or tensor; e.g. an augmented draw's ``seg``).
        scales: from ``network.deep_supervision_scales(strides)``; the first is 1.
        slice_index: for 3D, the slice of the full-resolution target; each scale shows the slice it keeps.

    Every panel spans the same field of view, so the coarse targets look blocky.
    """
    seg = torch.as_tensor(np.asarray(seg))
    targets = augment.DownsampleSegForDS(tuple(tuple(s) for s in scales))({"seg": seg[None]}, None)["seg"]
    full = seg.shape[1:]
    index = full[0] // 2 if slice_index is None else int(slice_index)
    n_labels = int(seg.max()) + 1
    fig = Figure(figsize=(panel_size * len(scales), panel_size + 0.5), layout="constrained")
    axes = fig.subplots(1, len(scales), squeeze=False)[0]
    for ax, target, scale in zip(axes, targets, scales):
        target = target[0, 0].numpy()
        # nearest-exact keeps source slice floor((k + 0.5) / s): the target slice nearest to ``index``
        k = min(int(index * scale[0]), target.shape[0] - 1) if target.ndim == 3 else None
        labels = np.clip(_middle(target, k), 0, None)
        ax.imshow(
            label_colors(max(n_labels, 2))[labels], extent=(0, full[-1], full[-2], 0), interpolation="nearest"
        )
        ax.set_title(f"scale {_fmt(scale)}\n{tuple(target.shape)}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Deep supervision: one target per decoder output", fontsize=10)
    return fig


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
