"""Preprocessing, as nnU-Net's ``DefaultPreprocessor`` does it: crop to nonzero, normalize, resample.

    data, seg, bbox = crop_to_nonzero(data, seg)   # data (C, Z, Y, X); seg gets -1 outside the nonzero mask
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes

# Label given to background voxels outside the nonzero mask: normalization and augmentation use it
# to tell "outside the body" from "background inside the body"; it becomes 0 right before the loss.
OUTSIDE_MASK_LABEL = -1


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels where any channel is nonzero, with holes filled. ``data``: (C, Z, Y, X) -> (Z, Y, X) bool."""
    mask = np.any(data != 0, axis=0)
    return binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """Half-open ``[[lo, hi), ...]`` box of the True voxels; the whole array if there are none.

    >>> bounding_box(np.pad(np.ones((2, 3), bool), ((1, 0), (2, 1))))
    [[1, 3], [2, 5]]
    """
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other_axes))
        box.append([int(present[0]), int(present[-1]) + 1] if present.size else [0, int(mask.shape[axis])])
    return box


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Crop image and label map to the bounding box of the nonzero mask.

    Args:
        data: (C, Z, Y, X) image.
        seg: (1, Z, Y, X) label map, or None.

    Returns:
        ``(data, seg, bbox)``: the cropped arrays and the half-open box. Inside the box, background
        voxels outside the nonzero mask become -1 in ``seg``; with no ``seg``, one is made (0 inside
        the mask, -1 outside, int8).
    """
    mask = nonzero_mask(data)
    bbox = bounding_box(mask)
    box = tuple(slice(lo, hi) for lo, hi in bbox)
    data = data[(slice(None), *box)]
    mask = mask[box][None]
    if seg is None:
        seg = np.where(mask, np.int8(0), np.int8(OUTSIDE_MASK_LABEL))
    else:
        seg = seg[(slice(None), *box)].copy()
        seg[(seg == 0) & ~mask] = OUTSIDE_MASK_LABEL
    return data, seg, bbox
