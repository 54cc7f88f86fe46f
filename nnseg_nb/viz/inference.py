"""Pictures of prediction: the sliding window's tiles and weights, what mirroring changes, errors.

    fig = sliding_window_figure(data[0], patch_size=(64, 80, 64))           # tiles + summed Gaussian weights
    plain, mirrored = mirroring_logits(model, data)                           # with and without mirroring
    fig = mirroring_figure(data[0], plain, mirrored)                          # argmaxes and where they differ
    browser = prediction_browser(image, reference, prediction, spacing)       # image / reference / prediction / errors
    show_figure(errors_figure(image, reference, prediction, spacing))         # a static montage of the errors

Volumes are (Z, Y, X) (a (C, Z, Y, X) image: pass one channel). Error maps: 1 = missed (false negative:
labelled, predicted background), 2 = extra (false positive: predicted, background in the reference),
3 = wrong label (both foreground, different labels); coloured with the fixed label colours of
``nnseg_nb.viz.overlay``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnseg_nb.inference import compute_steps_for_sliding_window, gaussian_importance_map
from nnseg_nb.viz.browser import SliceBrowser, slices_figure
from nnseg_nb.viz.overlay import label_colors, overlay_rgb, robust_window

ERROR_NAMES = {1: "missed (FN)", 2: "extra (FP)", 3: "wrong label"}


def tile_boxes(
    shape: Sequence[int], patch_size: Sequence[int], step_size: float = 0.5
) -> list[list[tuple[int, int]]]:
    """Every tile as ``[(start, stop) per axis]`` for an image of ``shape`` (already at least the patch).

    >>> tile_boxes((110, 64), (64, 64))
    [[(0, 64), (0, 64)], [(23, 87), (0, 64)], [(46, 110), (0, 64)]]
    """
    steps = compute_steps_for_sliding_window(shape, patch_size, step_size)
    grids = np.meshgrid(*steps, indexing="ij")
    starts = np.stack([g.ravel() for g in grids], 1)
    return [[(int(s), int(s) + int(p)) for s, p in zip(start, patch_size)] for start in starts]


def weight_sum(shape: Sequence[int], patch_size: Sequence[int], step_size: float = 0.5) -> np.ndarray:
    """The summed Gaussian weights every voxel receives (the denominator of nnU-Net's weighted mean)."""
    gaussian = gaussian_importance_map(patch_size).float().numpy()
    total = np.zeros(shape, np.float32)
    for box in tile_boxes(shape, patch_size, step_size):
        total[tuple(slice(a, b) for a, b in box)] += gaussian
    return total


def sliding_window_figure(
    volume: np.ndarray,
    patch_size: Sequence[int],
    step_size: float = 0.5,
    index: int | None = None,
    spacing: Sequence[float] | None = None,
):
    """Three panels for one axial slice: the tiles drawn on the image, one tile's Gaussian, the summed weights.

    ``volume`` (Z, Y, X) at least the patch size (pad it as :func:`nnseg_nb.inference.pad_to_patch_size`).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    volume = np.asarray(volume)
    patch_size = list(patch_size)[-3:] if len(patch_size) == 3 else [1, *patch_size]
    index = volume.shape[0] // 2 if index is None else index
    boxes = sorted(
        {tuple(b[1:]) for b in tile_boxes(volume.shape, patch_size, step_size) if b[0][0] <= index < b[0][1]}
    )
    weights = weight_sum(volume.shape, patch_size, step_size)
    gaussian = gaussian_importance_map(patch_size).float().numpy()
    aspect = (spacing[1] / spacing[2]) if spacing is not None else 1.0
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_tiles, ax_gauss, ax_sum = fig.subplots(1, 3)
    ax_tiles.imshow(
        volume[index],
        cmap="gray",
        aspect=aspect,
        vmin=robust_window(volume)[0],
        vmax=robust_window(volume)[1],
    )
    colors = label_colors(len(boxes) + 1)[1:]
    for box, color in zip(boxes, colors):
        (y0, y1), (x0, x1) = box
        ax_tiles.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec=color))
    ax_tiles.set_title(f"{len(boxes)} in-plane tiles through Z = {index} (step {step_size})", fontsize=9)
    image = ax_gauss.imshow(gaussian[patch_size[0] // 2], cmap="magma", aspect=aspect)
    fig.colorbar(image, ax=ax_gauss, shrink=0.8)
    ax_gauss.set_title("one tile's weight (sigma = patch/8, peak 10)", fontsize=9)
    image = ax_sum.imshow(weights[index], cmap="magma", aspect=aspect)
    fig.colorbar(image, ax=ax_sum, shrink=0.8)
    ax_sum.set_title("summed weights: every voxel's divisor", fontsize=9)
    for ax in (ax_tiles, ax_gauss, ax_sum):
        ax.set_axis_off()
    return fig


def mirroring_logits(model, data, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits for a preprocessed (C, Z, Y, X) image without and with mirroring (float32)."""
    from nnseg_nb.inference import predict_logits

    plain = predict_logits(model, data, use_mirroring=False, **kwargs).float().numpy()
    mirrored = predict_logits(model, data, use_mirroring=True, **kwargs).float().numpy()
    return plain, mirrored


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def mirroring_figure(
    volume: np.ndarray, plain_logits: np.ndarray, mirrored_logits: np.ndarray, index: int | None = None
):
    """What mirroring changes on one slice: both argmaxes, the largest probability change and the flipped voxels."""
    from matplotlib.figure import Figure

    index = volume.shape[0] // 2 if index is None else index
    plain_seg, mirrored_seg = plain_logits.argmax(0), mirrored_logits.argmax(0)
    change = np.abs(_softmax(mirrored_logits) - _softmax(plain_logits)).max(0)
    flipped = plain_seg != mirrored_seg
    window = robust_window(volume)
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(overlay_rgb(volume[index], plain_seg[index], window, 0.5))
    axes[0].set_title("one pass", fontsize=9)
    axes[1].imshow(overlay_rgb(volume[index], mirrored_seg[index], window, 0.5))
    axes[1].set_title("mean of the mirrored passes", fontsize=9)
    image = axes[2].imshow(change[index], cmap="viridis", vmin=0)
    fig.colorbar(image, ax=axes[2], shrink=0.8)
    axes[2].set_title("largest probability change", fontsize=9)
    axes[3].imshow(overlay_rgb(volume[index], flipped[index].astype(int) * 3, window, 0.8))
    axes[3].set_title(f"label changed: {int(flipped.sum())} voxels ({flipped.mean():.2%})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    return fig


def error_map(reference: np.ndarray, prediction: np.ndarray, ignore_label: int | None = None) -> np.ndarray:
    """1 = missed (FN), 2 = extra (FP), 3 = wrong foreground label, 0 = right (or ignored).

    >>> error_map(np.array([0, 1, 1, 2, 0]), np.array([0, 0, 1, 1, 2])).tolist()
    [0, 1, 0, 3, 2]
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    errors = np.zeros(reference.shape, np.uint8)
    wrong = reference != prediction
    errors[wrong & (prediction == 0)] = 1
    errors[wrong & (reference == 0)] = 2
    errors[wrong & (reference > 0) & (prediction > 0)] = 3
    if ignore_label is not None:
        errors[reference == ignore_label] = 0
    return errors


def prediction_browser(
    image, reference, prediction, spacing: Sequence[float] | None = None, **kwargs
) -> SliceBrowser:
    """A slice browser: the image with the reference, the prediction and the error map as panels."""
    reference, prediction = np.squeeze(np.asarray(reference)), np.squeeze(np.asarray(prediction))
    labels = {
        "reference": reference,
        "prediction": prediction,
        "errors: FN 1, FP 2, wrong 3": error_map(reference, prediction),
    }
    return SliceBrowser({"image": image}, labels=labels, spacing=spacing, **kwargs)


def errors_figure(image, reference, prediction, spacing: Sequence[float] | None = None, n: int = 6, **kwargs):
    """A montage of the slices with errors (colours: missed, extra, wrong label), as a matplotlib Figure."""
    errors = error_map(np.squeeze(np.asarray(reference)), np.squeeze(np.asarray(prediction)))
    counts = ", ".join(f"{name} {int((errors == v).sum())}" for v, name in ERROR_NAMES.items())
    return slices_figure(image, errors, spacing, n, title=f"errors: {counts}", **kwargs)
