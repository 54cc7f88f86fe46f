"""The spatial steps: rotation and scaling (with nnU-Net's label voting) and mirroring, plus the sizes
they imply for the loader.

    rotation_range, dummy_2d, mirror_axes = rotation_and_mirroring_for((40, 56, 40))
    loaded_patch_size((40, 56, 40), rotation_range, dummy_2d=dummy_2d)   # (73, 80, 64): the loader cuts this
    SpatialTransform(patch_size=(40, 56, 40), rotation_range=rotation_range)(batch, generator)  # -> 40x56x40

Labels are not interpolated as numbers: each label's mask is interpolated and the largest wins
(``_sample_labels`` / ``_vote``), as batchgeneratorsv2 does for nnU-Net.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nnseg_nb.augment.common import (
    Batch,
    Params,
    Transform,
    _assemble,
    _coin,
    _indices,
    _one_kernel,
    _replace,
    _rows,
    _spatial_ndim,
    _uniform,
)
from nnseg_nb.augment.settings import NNUNET_DEFAULTS
from nnseg_nb.preprocessing import OUTSIDE_LABEL
from nnseg_nb.resampling import ANISOTROPY_THRESHOLD

# ----------------------------------------------------------------------------------------------------------
# Configuration helpers (nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size)
# ----------------------------------------------------------------------------------------------------------


def rotation_and_mirroring_for(
    patch_size: Sequence[int],
) -> tuple[tuple[float, float], bool, tuple[int, ...]]:
    """nnU-Net's rotation range (radians), dummy-2D flag and mirror axes for a 2D or 3D patch.

    2D: ±15° if the patch is elongated (max/min > 1.5), else ±180°. 3D: dummy-2D (in-plane augmentation per
    slice) if max/patch[0] > 3, then ±180° in-plane, else ±30° about every axis. All axes are mirrored.

    >>> rotation_and_mirroring_for((20, 320, 256))
    ((-3.141592653589793, 3.141592653589793), True, (0, 1, 2))
    >>> rotation_and_mirroring_for((56, 40))[2]
    (0, 1)
    """
    if len(patch_size) == 2:
        degrees = 15.0 if max(patch_size) / min(patch_size) > 1.5 else 180.0
        dummy_2d = False
    elif len(patch_size) == 3:
        dummy_2d = max(patch_size) / patch_size[0] > ANISOTROPY_THRESHOLD
        degrees = 180.0 if dummy_2d else 30.0
    else:
        raise ValueError(f"patch_size must have 2 or 3 axes, got {tuple(patch_size)}")
    radians = degrees / 360 * 2 * math.pi
    return (-radians, radians), dummy_2d, tuple(range(len(patch_size)))


def loaded_patch_size(
    patch_size: Sequence[int],
    rotation_range: tuple[float, float],
    scale_range: tuple[float, float] = (0.85, 1.25),
    dummy_2d: bool = False,
) -> tuple[int, ...]:
    """The larger patch the loader crops so that rotating and scaling it still fills ``patch_size``.

    nnU-Net's ``get_patch_size``: rotate the patch's extent vector by the largest angle (capped at 90°)
    about each axis in turn, keep the element-wise max of the absolute values, divide by min(scale_range)
    and truncate. nnU-Net passes (0.85, 1.25) although the scaling it applies is (0.7, 1.4); we keep that.
    In dummy-2D, axis 0 is not rotated, so it stays ``patch_size[0]``.

    >>> loaded_patch_size((40, 56, 40), rotation_and_mirroring_for((40, 56, 40))[0])
    (73, 80, 64)
    >>> loaded_patch_size((20, 320, 256), (-math.pi, math.pi), dummy_2d=True)
    (20, 376, 376)
    """
    angle = min(max(abs(a) for a in rotation_range), math.pi / 2)
    extent = np.array(patch_size, dtype=float)
    c, s = math.cos(angle), math.sin(angle)
    if len(patch_size) == 3:
        rotations = [
            np.array(m)
            for m in (
                [[1, 0, 0], [0, c, -s], [0, s, c]],
                [[c, 0, s], [0, 1, 0], [-s, 0, c]],
                [[c, -s, 0], [s, c, 0], [0, 0, 1]],
            )
        ]
    else:
        rotations = [np.array([[c, -s], [s, c]])]
    largest = extent.copy()
    for rotation in rotations:  # batchgenerators rotates the row vector: extent @ R
        largest = np.maximum(largest, np.abs(extent @ rotation))
    size = (largest / min(scale_range)).astype(int)
    if dummy_2d:
        size[0] = patch_size[0]
    return tuple(int(i) for i in size)


# ----------------------------------------------------------------------------------------------------------
# Rotation + scaling + center crop of the final patch
# ----------------------------------------------------------------------------------------------------------


def _rotation_scaling_matrices(angles: Tensor, scales: Tensor) -> Tensor:
    """(B, 3) angles about axes 0, 1, 2 (or (B, 1) in 2D) and (B,) scales -> (B, d, d) ``Rz·Ry·Rx·S``."""
    b = angles.shape[0]
    cos, sin = angles.cos(), angles.sin()
    if angles.shape[1] == 1:
        rotation = torch.stack([cos[:, 0], -sin[:, 0], sin[:, 0], cos[:, 0]], 1).view(b, 2, 2)
    else:
        one, zero = torch.ones(b, dtype=angles.dtype), torch.zeros(b, dtype=angles.dtype)
        (cx, cy, cz), (sx, sy, sz) = cos.unbind(1), sin.unbind(1)
        rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(b, 3, 3)
        ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(b, 3, 3)
        rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(b, 3, 3)
        rotation = rz @ ry @ rx
    return rotation * scales.view(b, 1, 1)  # R @ diag(s, s, s)


def _crop_with_padding(x: Tensor, starts: Sequence[int], size: Sequence[int], value: float) -> Tensor:
    """``x[..., start:start + size]`` on the trailing axes (a view), padded with ``value`` where it leaves ``x``."""
    spatial = x.shape[-len(size) :]
    inside = tuple(slice(max(s, 0), min(s + n, dim)) for s, n, dim in zip(starts, size, spatial))
    cropped = x[(..., *inside)]
    pad = []
    for s, n, dim in zip(reversed(starts), reversed(size), reversed(spatial)):
        before = max(-s, 0)
        pad += [before, n - before - (min(s + n, dim) - max(s, 0))]
    return F.pad(cropped, pad, value=value) if any(pad) else cropped


def _centered_coordinates(
    affine: Tensor, patch: Sequence[int], like: Tensor, shift: Sequence[float] | None = None
) -> list[Tensor]:
    """Where each output voxel reads, relative to the input's center: ``affine @ p`` (+ ``shift``), per axis.

    affine (N, d, d) -> d tensors (N, *patch); ``p`` is the output voxel's offset from the patch center (in
    voxels), as in batchgeneratorsv2's grid. The sum is separable, so it is built from 1D pieces by
    broadcasting: one full-size write per axis instead of a (N, *patch, d) matmul.
    """
    n, d = affine.shape[:2]
    affine = affine.to(device=like.device, dtype=like.dtype)
    offsets = [torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2 for size in patch]
    coordinates = []
    for a in range(d):
        terms = []
        for b in range(d):
            shape = [n] + [1] * d
            shape[1 + b] = patch[b]
            terms.append((affine[:, a, b, None] * offsets[b]).view(shape))
        if shift is not None:
            terms[0] = terms[0] + shift[a]
        coordinates.append(sum(terms[1:], terms[0]))
    return coordinates


def _sample_image(image: Tensor, centered: list[Tensor]) -> Tensor:
    """(Bi)/(tri)linear ``grid_sample`` at the sampling points, zero padding, ``align_corners=False``."""
    d, spatial = len(centered), image.shape[2:]
    grid = torch.empty((*centered[0].shape, d), device=image.device, dtype=image.dtype)
    for a, (c, size) in enumerate(zip(centered, spatial)):
        torch.div(c, size / 2, out=grid[..., d - 1 - a])  # normalized; grid_sample wants (x, y, z) order
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sample_labels(seg: Tensor, samples: list[int], affine: Tensor, patch: Sequence[int]) -> Tensor:
    """Labels at the sampling points, as batchgeneratorsv2 0.3.6 samples them for nnU-Net: the seg is padded
    with the label -1 (``border_mode_seg="constant"``), every label's mask is linearly interpolated (x1000,
    compared in float16), the largest wins, and a tie goes to the nearest voxel's label when it is among the
    tied ones (``seg_tiebreak="nearest"``), else to the lowest label. So a point up to half a voxel past the
    loaded patch keeps the edge label, and one further out becomes -1.

    seg (B, S, *in); ``samples``: the B-indices ``affine`` (N, d, d) is for. Returns (N, S, *patch).
    Computed from the 2^d neighbours, not one interpolation per label: where they all carry one label it
    wins, so only the points on label borders are scored.
    """
    s, n, d, spatial = seg.shape[1], len(samples), len(patch), seg.shape[2:]
    # padding: 1 voxel before and 2 after each axis, so that points clamped to [-1, size] have all neighbours;
    # in the padded seg, voxel v of the input is at v + 1
    padded = F.pad(_rows(seg, samples), [1, 2] * d, value=OUTSIDE_LABEL)
    strides = [math.prod(padded.shape[3 + a :]) for a in range(d)]
    shifted = _centered_coordinates(
        affine, patch, seg.new_empty(0, dtype=torch.float32), [(size - 1) / 2 + 1 for size in spatial]
    )  # voxel + 1, (N, *patch) each
    index = torch.zeros((n, 1, math.prod(patch)), dtype=torch.int32, device=seg.device)
    for c, size, stride in zip(shifted, spatial, strides):
        c = c.reshape(n, 1, -1).clamp_(0, size + 1)  # further out there is only padding
        index += c.int().mul_(stride)  # int() is floor() for c >= 0; int32 keeps the gathers cheap
    index = (
        index + torch.arange(n * s, device=seg.device, dtype=torch.int32).view(n, s, 1) * padded[0, 0].numel()
    )
    corners = list(itertools.product((0, 1), repeat=d))
    flat = padded.reshape(-1)

    def take(corner: tuple[int, ...], at: Tensor) -> Tensor:  # index_select: the fastest gather on CPU
        offset = sum(bit * stride for bit, stride in zip(corner, strides))
        return flat[offset:].index_select(0, at.reshape(-1)).view(at.shape)

    result = take(corners[0], index)  # (N, S, P)
    smallest, largest = result.clone(), result.clone()
    for corner in corners[1:]:
        neighbour = take(corner, index)
        torch.minimum(smallest, neighbour, out=smallest)
        torch.maximum(largest, neighbour, out=largest)
    border = (smallest != largest).view(-1).nonzero().squeeze(1)  # flat (N, S, P) positions
    if len(border):
        point = border // (s * index.shape[2]) * index.shape[2] + border % index.shape[2]  # flat (N, P)
        coordinates = [
            c.reshape(-1).index_select(0, point).clamp_(0, size + 1) - 1 for c, size in zip(shifted, spatial)
        ]
        candidates = torch.stack([take(corner, index.view(-1).index_select(0, border)) for corner in corners])
        result.view(-1).index_copy_(0, border, _vote(candidates, coordinates))
    return result.view(n, s, *patch)


def _labels_in(labels: Tensor) -> list[int]:
    """The values in an integer tensor, ascending (``torch.unique`` sorts: 10x slower on a million voxels)."""
    low = int(labels.min())
    counts = torch.bincount((labels.reshape(-1) - low).int())
    return (counts.nonzero().view(-1) + low).tolist()


def _label_scores(candidates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
    """Each point's best interpolated label score (float16, as upstream compares them) and its label, the
    lowest one on ties; and a function giving the score of a label per point. candidates, weights (2^d, M)."""
    low, high = (int(v) for v in torch.aminmax(candidates))
    if high - low < 32:  # every label's score in one pass
        scores = torch.zeros(
            (high - low + 1, candidates.shape[1]), dtype=weights.dtype, device=weights.device
        )
        scores = scores.scatter_add_(0, (candidates - low).long(), weights).half()
        best, winner = scores.max(0)  # ties: the first maximum, so the lowest label
        return (
            best,
            (winner + low).to(candidates.dtype),
            lambda label: scores.gather(0, (label - low).long()[None])[0],
        )

    def score(label: Tensor) -> Tensor:  # many labels: one pass per label present
        return torch.where(candidates == label, weights, 0).sum(0).half()

    best, winner = None, None
    for label in _labels_in(candidates):  # ascending, so ties keep the lower label
        current = score(torch.tensor(label, dtype=candidates.dtype, device=candidates.device))
        if best is None:
            best, winner = current, torch.full_like(candidates[0], label)
        else:
            winner = winner.masked_fill(current > best, label)
            best = torch.maximum(best, current)
    return best, winner, score


def _vote(candidates: Tensor, coordinates: list[Tensor]) -> Tensor:
    """The label of each point from its 2^d neighbours' labels (2^d, M) and its coordinates (d tensors (M,))."""
    lower = [c.floor() for c in coordinates]
    fractions = [c - f for c, f in zip(coordinates, lower)]
    corners = list(itertools.product((0, 1), repeat=len(coordinates)))
    weights = (
        torch.stack(
            [math.prod(f if bit else 1 - f for f, bit in zip(fractions, corner)) for corner in corners]
        )
        * 1000
    )
    best, winner, score = _label_scores(candidates, weights)
    # the nearest neighbour's label wins a tie it is part of (grid_sample "nearest": round half to even)
    nearest_bits = [(c.round() - f).long() for c, f in zip(coordinates, lower)]
    nearest_corner = sum(bit << (len(coordinates) - 1 - a) for a, bit in enumerate(nearest_bits))
    nearest = candidates.gather(0, nearest_corner[None])[0]
    return torch.where(score(nearest) == best, nearest, winner)


@dataclass
class SpatialTransform(Transform):
    """Rotation and scaling (per sample), then the final patch from the center of the larger loaded patch.

    Image: trilinear/bilinear ``grid_sample``, zero padding, ``align_corners=False``. Seg: per-label mask
    interpolation + argmax with the outside counted as label -1 (see ``_sample_labels``). Samples with neither
    rotation nor scaling are an exact integer center crop (start ``shape//2 - patch//2``), as in nnU-Net.
    ``dummy_2d``: a 3D patch is augmented per axial slice (nnU-Net's Convert3DTo2D/2DTo3D around it):
    one in-plane angle, scaling in-plane, axis 0 untouched (the loader already cut it to ``patch_size[0]``).

    >>> t = SpatialTransform(patch_size=(4, 4), p_rotation=0, p_scaling=0)
    >>> image = torch.arange(36.).view(1, 1, 6, 6)
    >>> t({"image": image}, torch.Generator())["image"][0, 0, 0]   # rows 1..4, columns 1..4 of the 6x6
    tensor([ 7.,  8.,  9., 10.])
    """

    patch_size: tuple[int, ...]
    rotation_range: tuple[float, float] = (-math.pi / 6, math.pi / 6)  # radians, per axis
    p_rotation: float = NNUNET_DEFAULTS.p_rotation
    p_scaling: float = NNUNET_DEFAULTS.p_scaling
    scaling_range: tuple[float, float] = NNUNET_DEFAULTS.scaling_range  # > 1 zooms out: objects get smaller
    dummy_2d: bool = False

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b = batch["image"].shape[0]
        rotate, scale = _coin(self.p_rotation, (b,), generator), _coin(self.p_scaling, (b,), generator)
        in_plane = self.dummy_2d or _spatial_ndim(batch) == 2
        angles = _uniform(*self.rotation_range, (b, 1 if in_plane else 3), generator) * rotate[:, None]
        scales = torch.where(scale, _uniform(*self.scaling_range, (b,), generator), 1.0)
        return {
            "rotate": rotate,
            "scale": scale,
            "angles": angles,
            "scales": scales,
            "affine": _rotation_scaling_matrices(angles, scales),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        image, seg = batch["image"], batch.get("seg")
        if self.dummy_2d:  # (B, C, Z, Y, X) -> (B, C*Z, Y, X): every slice becomes a channel
            image = image.flatten(1, 2)
            seg = seg.flatten(1, 2) if seg is not None else None
        patch = tuple(self.patch_size[1:] if self.dummy_2d else self.patch_size)
        spatial = image.shape[2:]
        warped = _indices(params["rotate"] | params["scale"])
        plain = [b for b in range(len(image)) if b not in warped]
        starts = [s // 2 - p // 2 for s, p in zip(spatial, patch)]
        images, segs = [], []  # (sample indices, their new patches)
        if plain:
            images.append((plain, _rows(_crop_with_padding(image, starts, patch, 0.0), plain)))
            if seg is not None:
                segs.append((plain, _rows(_crop_with_padding(seg, starts, patch, OUTSIDE_LABEL), plain)))
        if warped:
            centered = _centered_coordinates(params["affine"][warped], patch, image)
            images.append((warped, _sample_image(image if not plain else _rows(image, warped), centered)))
            if seg is not None:
                segs.append((warped, _sample_labels(seg, warped, params["affine"][warped], patch)))
        new_image, new_seg = _assemble(images), _assemble(segs) if seg is not None else None
        if self.dummy_2d:
            new_image = new_image.unflatten(1, batch["image"].shape[1:3])
            new_seg = new_seg.unflatten(1, batch["seg"].shape[1:3]) if seg is not None else None
        return _replace(batch, image=new_image, **({"seg": new_seg} if seg is not None else {}))


# ----------------------------------------------------------------------------------------------------------
# Mirroring
# ----------------------------------------------------------------------------------------------------------


def _flip(x: Tensor, flips: Tensor) -> Tensor:
    """Flip each sample of x (B, C, *spatial) along the spatial axes where ``flips`` (B, d) is True."""
    if _one_kernel(x):
        return _flip_grouped(x, flips)
    return torch.stack([sample.flip([axis + 1 for axis in _indices(axes)]) for sample, axes in zip(x, flips)])


def _flip_grouped(x: Tensor, flips: Tensor) -> Tensor:
    """``_flip`` with one flip per distinct set of axes (at most 2^d) instead of one per sample."""
    out = torch.empty_like(x)
    patterns, group = flips.unique(dim=0, return_inverse=True)
    for k, pattern in enumerate(patterns):
        samples = (group == k).nonzero().squeeze(1).to(x.device)
        chosen = x.index_select(0, samples)
        axes = [axis + 2 for axis in _indices(pattern)]  # (N, C, *spatial)
        out.index_copy_(0, samples, chosen.flip(axes) if axes else chosen)
    return out


@dataclass
class Mirror(Transform):
    """Flip each allowed spatial axis with p 0.5, independently per sample and axis.

    >>> image = torch.arange(3.).view(1, 1, 3)
    >>> Mirror(axes=(0,)).apply({"image": image}, {"flips": torch.tensor([[True]])})["image"]
    tensor([[[2., 1., 0.]]])
    """

    axes: tuple[int, ...] = (0, 1, 2)
    p_per_axis: float = NNUNET_DEFAULTS.p_mirror_per_axis

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, d = batch["image"].shape[0], _spatial_ndim(batch)
        chosen = _coin(self.p_per_axis, (b, len(self.axes)), generator)
        flips = torch.zeros(b, d, dtype=torch.bool)
        flips[:, list(self.axes)] = chosen
        return {"flips": flips}

    def apply(self, batch: Batch, params: Params) -> Batch:
        if not params["flips"].any():
            return batch
        new = {"image": _flip(batch["image"], params["flips"])}
        if batch.get("seg") is not None:
            new["seg"] = _flip(batch["seg"], params["flips"])
        return _replace(batch, **new)
