"""Resampling, as nnU-Net's ``default_resampling`` does it (with batchgenerators' ``resize_segmentation``).

    new_shape = compute_new_shape(shape, spacing, target_spacing)          # round(spacing / target * shape)
    data = resample_data_or_seg_to_shape(data, new_shape, spacing, target_spacing, force_separate_z=None)
    seg = resample_data_or_seg_to_shape(seg, new_shape, spacing, target_spacing, is_seg=True, order=1,
                                        force_separate_z=None)

Images are resized with cubic splines, label maps label by label with linear interpolation. When a
spacing is strongly anisotropic, the coarse axis is handled apart: every slice is resized in-plane,
then the slices are resampled with nearest neighbour, so thick slices are never blurred together.
``resize_image`` reproduces ``skimage.transform.resize(mode='edge', anti_aliasing=False)`` bit for
bit with scipy alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

# A spacing is anisotropic when its largest entry is more than 3 times its smallest (nnU-Net's ANISO_THRESHOLD).
ANISOTROPY_THRESHOLD = 3


def compute_new_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> list[int]:
    """``round(spacing / new_spacing * shape)`` per axis (Python's round: halves go to the even number).

    >>> compute_new_shape([10, 11, 20], [1.0, 1.0, 1.0], [4.0, 2.0, 0.5])
    [2, 6, 40]
    """
    if not len(shape) == len(spacing) == len(new_spacing):
        raise ValueError(f"shape {shape}, spacing {spacing} and new spacing {new_spacing} differ in length")
    return [int(round(s / t * n)) for s, t, n in zip(spacing, new_spacing, shape)]


def lowres_axes(spacing: Sequence[float]) -> list[int]:
    """The axes that have the largest spacing (more than one on a tie)."""
    spacing = np.asarray(spacing, dtype=float)
    return [int(a) for a in np.flatnonzero(spacing.max() / spacing == 1)]


def determine_do_sep_z_and_axis(
    force_separate_z: bool | None,
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
) -> tuple[bool, int | None]:
    """Whether to resample the coarse axis separately (in-plane first, then nearest along it), and which axis.

    Automatic (``force_separate_z=None``): yes if the *current* spacing is anisotropic (its coarse axis),
    else if the *target* spacing is (that one's coarse axis). Never when two or three axes tie for
    the largest spacing.

    >>> determine_do_sep_z_and_axis(None, [5.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    (True, 0)
    >>> determine_do_sep_z_and_axis(None, [1.0, 1.0, 1.0], [1.0, 4.0, 1.0])
    (True, 1)
    >>> determine_do_sep_z_and_axis(None, [0.5, 2.0, 2.0], [1.0, 1.0, 1.0])
    (False, None)
    """

    def is_anisotropic(spacing):
        return max(spacing) / min(spacing) > anisotropy_threshold

    if force_separate_z is not None:
        axes = lowres_axes(current_spacing) if force_separate_z else []
    elif is_anisotropic(current_spacing):
        axes = lowres_axes(current_spacing)
    elif is_anisotropic(new_spacing):
        axes = lowres_axes(new_spacing)
    else:
        axes = []
    if len(axes) != 1:
        return False, None
    return True, axes[0]


def resize_image(image: np.ndarray, new_shape: Sequence[int], order: int = 3) -> np.ndarray:
    """Resize like ``skimage.transform.resize(image, new_shape, order, mode='edge', anti_aliasing=False)``.

    That is ``scipy.ndimage.zoom`` with ``grid_mode=True`` (pixel edges align, as in skimage) and
    ``mode='nearest'``, then clipped to the input's range (skimage's ``clip=True``), which removes
    the over- and undershoot of cubic splines. Computed in float64 (order 0 keeps the dtype).
    """
    if order > 0:
        image = np.asarray(image, dtype=np.float64)
    zoom = [
        1 / (old / new) for old, new in zip(image.shape, new_shape)
    ]  # skimage's expression, same rounding
    resized = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    np.clip(resized, np.nanmin(image), np.nanmax(image), out=resized)
    return resized


def resize_segmentation(seg: np.ndarray, new_shape: Sequence[int], order: int = 3) -> np.ndarray:
    """Resize a label map without inventing labels between two others (batchgenerators' ``resize_segmentation``).

    Each label value (-1 included) is resized as a 0/1 mask with ``order``; a voxel gets the label
    with the highest score. On an exact tie (a voxel halfway between two labels) the nearest-neighbour
    label wins if it is among the tied ones, else the smallest tied label. Order 0 resizes the values
    directly. This is batchgenerators >= 0.25.4, which nnunetv2 2.8 installs; 0.25.3 and older gave
    each label, in ascending order, the voxels where its score reached 0.5 (larger labels won ties).

    >>> resize_segmentation(np.array([[0, 0, 2, 2]]), (1, 8), order=1)
    array([[0, 0, 0, 0, 2, 2, 2, 2]])
    """
    if order == 0:
        return resize_image(seg.astype(float), new_shape, order=0).astype(seg.dtype)
    nearest = resize_image(seg.astype(float), new_shape, order=0)
    nearest_score = np.zeros(new_shape)  # score of the nearest-neighbour label at each voxel
    best_score = np.full(new_shape, -np.inf)
    winner = np.zeros(new_shape, dtype=seg.dtype)
    for label in np.unique(seg):  # ascending, so a strict '>' keeps the smallest label on ties
        score = resize_image((seg == label).astype(float), new_shape, order)
        better = score > best_score
        winner[better] = label
        np.maximum(best_score, score, out=best_score)
        is_nearest = nearest == label
        nearest_score[is_nearest] = score[is_nearest]
    nearest_wins = (nearest_score == best_score) & (best_score > 0)
    winner[nearest_wins] = nearest[nearest_wins]
    return winner


def _coarse_axis_coordinates(old_size: int, new_size: int) -> np.ndarray:
    # Source coordinate of each output voxel centre (align_corners=False): src = scale * (dst + 0.5) - 0.5.
    scale = float(old_size) / new_size
    return scale * (np.arange(new_size) + 0.5) - 0.5


def _resample_coarse_axis(
    volume: np.ndarray, new_size: int, axis: int, order_z: int, is_seg: bool
) -> np.ndarray:
    """Resample ``volume`` (float64) along ``axis`` only, as nnU-Net's ``map_coordinates(mode='nearest')`` call."""
    coordinates = _coarse_axis_coordinates(volume.shape[axis], new_size)
    if order_z == 0:
        # map_coordinates with order 0 takes floor(c + 0.5), clamped to the volume ('nearest')
        index = np.clip(np.floor(coordinates + 0.5).astype(np.int64), 0, volume.shape[axis] - 1)
        return np.take(volume, index, axis=axis)
    # Higher orders (not used by the default plans): nnU-Net's full coordinate grid, identity on the other axes.
    new_shape = list(volume.shape)
    new_shape[axis] = new_size
    grid = np.mgrid[tuple(slice(0, n) for n in new_shape)].astype(np.float64)
    grid[axis] = np.expand_dims(coordinates, [a for a in range(volume.ndim) if a != axis])
    if not is_seg:
        return ndimage.map_coordinates(volume, grid, order=order_z, mode="nearest")
    resampled = np.zeros(new_shape)
    for label in np.unique(volume):
        one_hot = ndimage.map_coordinates(
            (volume == label).astype(float), grid, order=order_z, mode="nearest"
        )
        resampled[np.round(one_hot) > 0.5] = label
    return resampled


def _resize_separate_z(
    channel: np.ndarray,
    new_shape: Sequence[int],
    axis: int,
    resize_fn: Callable,
    order: int,
    order_z: int,
    is_seg: bool,
) -> np.ndarray:
    """Resize every slice across ``axis`` in-plane with ``order``, then resample along ``axis`` with ``order_z``."""
    in_plane_shape = [n for a, n in enumerate(new_shape) if a != axis]
    slices = np.moveaxis(channel, axis, 0)
    resized = np.stack([resize_fn(s, in_plane_shape, order) for s in slices]).astype(np.float64, copy=False)
    resized = np.moveaxis(resized, 0, axis)
    if channel.shape[axis] == new_shape[axis]:
        return resized
    return _resample_coarse_axis(resized, new_shape[axis], axis, order_z, is_seg)


def resample_data_or_seg(
    data: np.ndarray,
    new_shape: Sequence[int],
    is_seg: bool = False,
    axis: int | None = None,
    order: int = 3,
    do_separate_z: bool = False,
    order_z: int = 0,
    dtype_out: np.dtype | None = None,
) -> np.ndarray:
    """Resample every channel of ``data`` (C, Z, Y, X) to ``new_shape`` (Z', Y', X').

    Images go through :func:`resize_image`, label maps through :func:`resize_segmentation`; with
    ``do_separate_z`` the ``axis`` is handled apart (see :func:`determine_do_sep_z_and_axis`).
    Float64 inside; the result has ``data``'s dtype (or ``dtype_out``). Same shape: ``data`` is returned.
    """
    new_shape = [int(n) for n in new_shape]
    if len(new_shape) != data.ndim - 1:
        raise ValueError(
            f"new shape {new_shape} must have {data.ndim - 1} entries for data of shape {data.shape}"
        )
    if list(data.shape[1:]) == new_shape:
        return data
    resize_fn = resize_segmentation if is_seg else resize_image
    resampled = np.zeros((data.shape[0], *new_shape), dtype=data.dtype if dtype_out is None else dtype_out)
    for c, channel in enumerate(data):
        channel = channel.astype(np.float64, copy=False)
        if do_separate_z:
            resampled[c] = _resize_separate_z(channel, new_shape, axis, resize_fn, order, order_z, is_seg)
        else:
            resampled[c] = resize_fn(channel, new_shape, order)
    return resampled


def resample_data_or_seg_to_shape(
    data: np.ndarray,
    new_shape: Sequence[int],
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    is_seg: bool = False,
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = False,
    separate_z_anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
) -> np.ndarray:
    """nnU-Net's resampling function (the one its plans name): decide separate-z, then resample.

    Args:
        data: (C, Z, Y, X) image or label map (numpy, or a CPU torch tensor).
        new_shape: (Z', Y', X').
        current_spacing, new_spacing: in the same axis order, used only to decide separate-z.
        is_seg, order, order_z, force_separate_z: as in the plans' ``resampling_fn_*_kwargs``
            (``force_separate_z=None`` is automatic; the default ``False`` is nnU-Net's signature default).
    """
    if hasattr(data, "numpy"):
        data = data.numpy()
    do_separate_z, axis = determine_do_sep_z_and_axis(
        force_separate_z, current_spacing, new_spacing, separate_z_anisotropy_threshold
    )
    return resample_data_or_seg(data, new_shape, is_seg, axis, order, do_separate_z, order_z=order_z)


RESAMPLING_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "resample_data_or_seg_to_shape": resample_data_or_seg_to_shape,
}
