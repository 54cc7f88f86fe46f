"""The checks of one case's files, run in a worker process: each file readable, NaN/Inf voxels, a positive
spacing, shape and spacing equal across channels and label (origin, direction, affine: warnings), and the
label map's values (integers, declared, more than background).

    image = _read(path, problems)                       # (array, props), or None with the problem reported
    _check_label(task, (first_image, shape, props), problems)   # the label values found, e.g. [0, 1, 2]

A worker gets a ``_CaseTask`` and returns a ``_CaseResult``; both are plain data, so they pickle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnseg_nb import io
from nnseg_nb.verify._format import _fmt, _short, _strip_path
from nnseg_nb.verify.report import Problem, _Problems


@dataclass
class _CaseTask:
    """What a worker checks for one case (plain data, so it pickles)."""

    identifier: str
    images: list[str]
    label: str | None
    expected_values: list[int] | None
    expected_channels: int | None  # checked after reading (natural 2D files can hold several channels)
    channel_desc: str


@dataclass
class _CaseResult:
    problems: list[Problem] = field(default_factory=list)
    label_values: list[int] | None = None
    spacing: list[float] | None = None
    shape: list[int] | None = None


def _read(path: str, problems: _Problems) -> tuple[np.ndarray, dict] | None:
    try:
        if os.path.getsize(path) == 0:
            problems.error(path, "empty file (0 bytes)")
            return None
        return io.read_image(path)
    except (io.ImageReadError, OSError) as e:
        problems.error(path, _strip_path(str(e), path))
    except Exception as e:
        problems.error(path, f"cannot be read ({type(e).__name__}: {_strip_path(str(e), path)})")
    return None


def _check_intensities(path: str, array: np.ndarray, props: dict, problems: _Problems) -> None:
    num_nan, num_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    if num_nan:
        problems.error(path, f"{num_nan} NaN voxel(s); replace them with a meaningful value")
    if num_inf:
        problems.error(path, f"{num_inf} infinite voxel(s); replace them with a meaningful value")
    spacing = np.asarray(props["spacing"], dtype=float)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        problems.error(path, f"spacing {props['spacing']} must be positive")


def _compare_geometry(
    path: str, shape: tuple, props: dict, reference: tuple, role: str, problems: _Problems
) -> None:
    """Shape and spacing must match the reference file (errors); origin/direction/affine should (warnings)."""
    ref_path, ref_shape, ref_props = reference
    ref_name = f"{role}{Path(ref_path).name}"
    if tuple(shape[1:]) != tuple(ref_shape[1:]):
        problems.error(path, f"shape {tuple(shape[1:])} differs from {ref_name} {tuple(ref_shape[1:])}")
    elif not np.allclose(props["spacing"], ref_props["spacing"]):
        problems.error(
            path, f"spacing {_fmt(props['spacing'])} differs from {ref_name} {_fmt(ref_props['spacing'])}"
        )
    mismatch = io.geometry_mismatch(ref_props, props)
    if mismatch:
        problems.warning(path, f"{mismatch} differs from {ref_name} (check that they are aligned)")


def _check_label(task: _CaseTask, reference: tuple | None, problems: _Problems) -> list[int] | None:
    image = _read(task.label, problems)
    if image is None:
        return None
    seg, props = image
    path = task.label
    if seg.shape[0] != 1:
        problems.error(path, f"label map has {seg.shape[0]} channels (an RGB image?); it must have one")
        seg = seg[:1]
    finite = np.isfinite(seg)
    if not finite.all():
        problems.error(
            path,
            f"{int(np.isnan(seg).sum())} NaN and {int(np.isinf(seg).sum())} infinite voxel(s) in a label map",
        )
    values = seg[finite]
    integral = values == np.round(values)
    if not integral.all():
        examples = np.unique(values[~integral])[:3]
        problems.error(
            path, f"non-integer label values (e.g. {_short(examples.tolist())}); label maps hold integers"
        )
    found = _unique_ints(values[integral])
    if task.expected_values is not None:
        unexpected = sorted(set(found) - set(task.expected_values))
        if unexpected:
            problems.error(
                path,
                f"label values {_short(unexpected)} are not declared in dataset.json labels "
                f"(declared: {_short(task.expected_values)})",
            )
    if found == [0]:
        problems.warning(path, "contains only background (0): no foreground voxels")
    if reference is not None:
        _compare_geometry(path, seg.shape, props, reference, "its image ", problems)
    return found


def _unique_ints(values: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer-valued float array (bincount when small and non-negative: fast)."""
    if values.size == 0:
        return []
    low, high = values.min(), values.max()
    if low >= 0 and high < 2**16:
        return np.flatnonzero(np.bincount(values.astype(np.int64).ravel())).tolist()
    return [int(v) for v in np.unique(values)]
