"""nnU-Net's training augmentation, batched in torch on the training device (CPU or CUDA).

    rotation_range, dummy_2d, mirror_axes = rotation_and_mirroring_for(patch_size)
    loaded_size = initial_patch_size(patch_size, rotation_range, dummy_2d=dummy_2d)  # the loader crops this
    pipeline = training_pipeline(patch_size, rotation_range, mirror_axes, dummy_2d)
    batch = augment({"image": image, "seg": seg}, pipeline, torch.Generator().manual_seed(0))
    # image (B, C, *loaded_size) float -> (B, C, *patch_size); seg (B, 1, ...) int -> same, labels >= 0

The steps, their order, probabilities and ranges are nnU-Net's ``get_training_transforms`` (batchgeneratorsv2),
but each step works on the whole batch at once, with its own random parameters per sample. A step is a
``Transform``: ``sample(batch, generator)`` draws a dict of ``(B, ...)`` CPU tensors, ``apply(batch, params)``
uses them, so a call can be inspected or replayed. A batch is a dict: ``"image"`` (B, C, *spatial) float,
``"seg"`` (B, S, *spatial) int (or bool regions; after ``DownsampleSegForDS`` a list, one tensor per scale),
plus any extra keys, which pass through. Steps return new tensors and never modify their input.

Randomness: every parameter comes from ONE CPU ``torch.Generator``, then moves to the batch's device, so a
seed gives the same parameters on CPU and CUDA. Per-voxel noise is drawn on the batch's device from a
generator seeded by that stream: reproducible on one device, but a different noise field on CPU and CUDA.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nnseg_nb.network import deep_supervision_scales  # noqa: F401  (re-exported)

Batch = dict  # {"image": (B, C, *spatial) float, "seg": (B, S, *spatial) int | list, ...}
Params = dict  # {name: (B, ...) CPU tensor}

ANISO_THRESHOLD = 3  # nnU-Net's configuration.py: 3D patches this anisotropic are augmented per slice
OUTSIDE_LABEL = -1  # label of voxels outside the nonzero mask and of augmentation padding


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
        dummy_2d = max(patch_size) / patch_size[0] > ANISO_THRESHOLD
        degrees = 180.0 if dummy_2d else 30.0
    else:
        raise ValueError(f"patch_size must have 2 or 3 axes, got {tuple(patch_size)}")
    radians = degrees / 360 * 2 * math.pi
    return (-radians, radians), dummy_2d, tuple(range(len(patch_size)))


def initial_patch_size(
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

    >>> initial_patch_size((40, 56, 40), rotation_and_mirroring_for((40, 56, 40))[0])
    (73, 80, 64)
    >>> initial_patch_size((20, 320, 256), (-math.pi, math.pi), dummy_2d=True)
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
# Sampling helpers: everything random is drawn here, on the CPU, from the one generator
# ----------------------------------------------------------------------------------------------------------


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _coin(p: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64) < p


def bg_contrast(
    value_range: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    """batchgeneratorsv2's ``BGContrast``: half the factors fall in U(low, 1), half in U(max(low, 1), high).

    So decreases and increases are equally likely, although (0.75, 1.25) or (0.7, 1.5) are not centered on 1.

    >>> f = bg_contrast((0.7, 1.5), (10000,), torch.Generator().manual_seed(0))
    >>> round(float((f < 1).float().mean()), 1), bool(f.min() >= 0.7), bool(f.max() <= 1.5)
    (0.5, True, True)
    """
    low, high = value_range
    below_one = _coin(0.5, shape, generator) & (low < 1)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    upper_low = max(low, 1.0)
    return torch.where(below_one, low + (1 - low) * u, upper_low + (high - upper_low) * u)


def _indices(mask: Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def _rows(x: Tensor, samples: list[int]) -> Tensor:
    """``x[samples]``, a new tensor. Stacking whole samples is a block copy each: on the CPU 2-3x faster than
    advanced indexing or ``index_select``, which go element by element."""
    return torch.stack([x[i] for i in samples])


def _pair_rows(x: Tensor, samples: list[int], channels: list[int]) -> Tensor:
    """``x[samples, channels]`` (paired lists), a new tensor (N, *spatial)."""
    return torch.stack([x[b, c] for b, c in zip(samples, channels)])


def _spatial_ndim(batch: Batch) -> int:
    return batch["image"].ndim - 2


def _replace(batch: Batch, **new) -> Batch:
    return {**batch, **new}


class Transform:
    """One augmentation step. ``sample`` draws per-sample parameters on the CPU; ``apply`` uses them.

    Subclasses are dataclasses whose fields are the settings (probabilities, ranges).
    """

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        return {}

    def apply(self, batch: Batch, params: Params) -> Batch:
        raise NotImplementedError

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        return self.apply(batch, self.sample(batch, generator))


# ----------------------------------------------------------------------------------------------------------
# Spatial: rotation + scaling + center crop of the final patch
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
    p_rotation: float = 0.2
    p_scaling: float = 0.2
    scaling_range: tuple[float, float] = (0.7, 1.4)  # > 1 zooms out: objects get smaller
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
# Intensity
# ----------------------------------------------------------------------------------------------------------


def _along_axes(x: Tensor, matrices: Sequence[Tensor | None]) -> Tensor:
    """Apply one (S, S) linear map per sample along each spatial axis. x (N, *S); matrices[a] (N, S_a, S_a).

    Blurring and low-resolution resampling are separable 1D linear operators; written as matrices, every
    sample can have its own kernel or zoom and the whole batch is a few batched matmuls.
    """
    n, spatial = x.shape[0], x.shape[1:]
    for axis, matrix in enumerate(matrices):
        if matrix is None:
            continue
        before, size = math.prod(spatial[:axis]), spatial[axis]
        after = math.prod(spatial[axis + 1 :])
        matrix = matrix.to(x)
        if after == 1:
            x = x.reshape(n, before, size) @ matrix.transpose(1, 2)
        else:
            x = matrix.unsqueeze(1) @ x.reshape(n, before, size, after)
    return x.reshape(n, *spatial)


def _pairs(applied: Tensor, per_channel: Tensor) -> tuple[list[int], list[int]]:
    """(sample, channel) index lists where the sample is augmented and the channel chosen."""
    b, c = (applied[:, None] & per_channel).nonzero().unbind(1)
    return b.tolist(), c.tolist()


def _assemble(parts: list[tuple[list[int], Tensor]]) -> Tensor:
    """One batch from (sample indices, their values) parts that together cover every sample once."""
    if len(parts) == 1:
        return parts[0][1]
    out = torch.empty(
        (sum(len(i) for i, _ in parts), *parts[0][1].shape[1:]),
        dtype=parts[0][1].dtype,
        device=parts[0][1].device,
    )
    for samples, values in parts:
        for i, value in zip(samples, values):
            out[i].copy_(value)  # a block copy per sample (index_copy_ goes element by element)
    return out


def _update(image: Tensor, samples: list[int], values: Tensor) -> Tensor:
    """image with its ``samples`` replaced by ``values`` (a new tensor; values itself if that is all of them)."""
    others = [b for b in range(len(image)) if b not in samples]
    return _assemble([(samples, values)] + ([(others, _rows(image, others))] if others else []))


def _update_pairs(image: Tensor, samples: list[int], channels: list[int], values: Tensor) -> Tensor:
    out = image.clone()
    for b, c, value in zip(samples, channels, values):
        out[b, c].copy_(value)
    return out


@dataclass
class GaussianNoise(Transform):
    """Add N(0, σ²) noise, σ ~ U(std_range) per sample, the same σ for all channels.

    (batchgeneratorsv2 calls it ``noise_variance`` but uses it as the standard deviation.)

    >>> out = GaussianNoise(p=1)({"image": torch.zeros(2, 1, 32, 32)}, torch.Generator().manual_seed(0))
    >>> 0 < float(out["image"].std()) < 0.1
    True
    """

    p: float = 0.1
    std_range: tuple[float, float] = (0.0, 0.1)

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b = batch["image"].shape[0]
        return {
            "applied": _coin(self.p, (b,), generator),
            "std": _uniform(*self.std_range, (b,), generator),
            "noise_seed": torch.randint(0, 2**62, (1,), generator=generator),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        samples = _indices(params["applied"])
        if not samples:
            return batch
        image = batch["image"]
        noise_generator = torch.Generator(image.device).manual_seed(int(params["noise_seed"]))
        noise = torch.randn(
            (len(samples), *image.shape[1:]),
            generator=noise_generator,
            device=image.device,
            dtype=image.dtype,
        )
        std = params["std"][samples].to(image).view(-1, *[1] * (image.ndim - 1))
        return _replace(
            batch, image=image.index_add(0, torch.tensor(samples, device=image.device), noise.mul_(std))
        )


def _gaussian_kernel_size(sigma: float, truncate: float = 6.0) -> int:
    """batchgeneratorsv2's size: ``sigma * truncate + 0.5`` rounded (half to even) to the nearest odd number."""
    n = sigma * truncate + 0.5
    rounded = round(n)
    if rounded % 2 == 1:
        return rounded
    return rounded + 1 if n - rounded >= 0 else rounded - 1


def _blur_matrix(sigma: float, size: int) -> Tensor:
    """(size, size) matrix of a 1D Gaussian blur with reflect padding (``F.pad(mode="reflect")``)."""
    k = _gaussian_kernel_size(sigma)
    offsets = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)  # float32, as batchgeneratorsv2 builds it
    weights = weights / weights.sum()
    source = torch.arange(size)[:, None] + torch.arange(k) - k // 2  # (size, k) positions read
    source = source.abs()  # reflect at 0 ...
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source).clamp(0, size - 1)  # ... and end
    matrix = torch.zeros(size, size)
    matrix.index_put_(
        (torch.arange(size)[:, None].expand(-1, k), source), weights.expand(size, k), accumulate=True
    )
    return matrix


@dataclass
class GaussianBlur(Transform):
    """Separable Gaussian blur, σ ~ U(sigma_range) per sample, channel and axis; each channel with p 0.5.

    Kernel as in batchgeneratorsv2: truncated at 6σ (size 3, 5 or 7 for σ in (0.5, 1)), reflect padding.

    >>> image = torch.zeros(1, 1, 9); image[..., 4] = 1
    >>> out = GaussianBlur(p=1, p_per_channel=1)({"image": image}, torch.Generator().manual_seed(0))
    >>> float(out["image"].sum()), bool(out["image"][0, 0, 4] < 1)
    (1.0, True)
    """

    p: float = 0.2
    sigma_range: tuple[float, float] = (0.5, 1.0)
    p_per_channel: float = 0.5

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, c = batch["image"].shape[:2]
        return {
            "applied": _coin(self.p, (b,), generator),
            "channels": _coin(self.p_per_channel, (b, c), generator),
            "sigmas": _uniform(*self.sigma_range, (b, c, _spatial_ndim(batch)), generator),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        samples, channels = _pairs(params["applied"], params["channels"])
        if not samples:
            return batch
        image = batch["image"]
        sigmas = params["sigmas"][samples, channels].tolist()  # (N, d) Python floats, as upstream's
        matrices = [
            torch.stack([_blur_matrix(s[axis], size) for s in sigmas]).to(image.device)
            for axis, size in enumerate(image.shape[2:])
        ]
        blurred = _along_axes(_pair_rows(image, samples, channels), matrices)
        return _replace(batch, image=_update_pairs(image, samples, channels, blurred))


@dataclass
class MultiplicativeBrightness(Transform):
    """Multiply each channel by its own ``BGContrast(multiplier_range)`` factor.

    >>> out = MultiplicativeBrightness(p=1)({"image": torch.ones(1, 2, 3)}, torch.Generator().manual_seed(0))
    >>> bool(((out["image"] >= 0.75) & (out["image"] <= 1.25)).all())
    True
    """

    p: float = 0.15
    multiplier_range: tuple[float, float] = (0.75, 1.25)

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, c = batch["image"].shape[:2]
        return {
            "applied": _coin(self.p, (b,), generator),
            "multipliers": bg_contrast(self.multiplier_range, (b, c), generator),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        if not params["applied"].any():
            return batch
        image = batch["image"]
        factor = torch.where(params["applied"][:, None], params["multipliers"], 1.0)
        return _replace(batch, image=image * _per_channel(factor, image))


def _mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std (unbiased, torch's default as upstream) of each (sample, channel) of x (N, C, *spatial),
    shaped to broadcast against x."""
    flat = x.flatten(2)
    # std over one dim of several rows takes a slow ATen path (10x on CPU); row by row it is fast
    std = torch.stack([row.std() for row in flat.flatten(0, 1)]).view(x.shape[:2])
    shape = (*x.shape[:2], *[1] * (x.ndim - 2))
    return flat.mean(2).view(shape), std.view(shape)


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean, std, min and max of each (sample, channel) of x (N, C, *spatial), shaped to broadcast against x."""
    flat = x.flatten(2)
    shape = (*x.shape[:2], *[1] * (x.ndim - 2))
    return (*_mean_std(x), flat.amin(2).view(shape), flat.amax(2).view(shape))


def _per_channel(values: Tensor, like: Tensor) -> Tensor:
    """(N, C) parameters -> broadcastable against ``like`` (N, C, *spatial), on its device and dtype."""
    return values.to(like).view(*values.shape, *[1] * (like.ndim - 2))


@dataclass
class Contrast(Transform):
    """Per channel ``x = (x - mean) * f + mean``, f ~ BGContrast(contrast_range), clamped to the channel's
    original [min, max] (batchgeneratorsv2 ``preserve_range=True``).

    >>> image = torch.linspace(0, 1, 5).view(1, 1, 5)
    >>> Contrast().apply({"image": image}, {"applied": torch.tensor([True]), "factors": torch.tensor([[2.0]])})
    {'image': tensor([[[0.0000, 0.0000, 0.5000, 1.0000, 1.0000]]])}
    """

    p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, c = batch["image"].shape[:2]
        return {
            "applied": _coin(self.p, (b,), generator),
            "factors": bg_contrast(self.contrast_range, (b, c), generator),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        samples = _indices(params["applied"])
        if not samples:
            return batch
        image = batch["image"]
        x = _rows(image, samples)  # a copy, so in-place is safe
        mean, _, low, high = _channel_stats(x)
        x.sub_(mean).mul_(_per_channel(params["factors"][samples], x)).add_(mean).clamp_(low, high)
        return _replace(batch, image=_update(image, samples, x))


def _nearest_exact_indices(size: int, new_size: int) -> Tensor:
    """Input voxel each output voxel copies in ``interpolate(mode="nearest-exact")`` from size to new_size.

    ATen: ``floorf((j + 0.5) * scale)`` with the float32 ``scale = size / new_size``.
    """
    scale = (torch.tensor(size, dtype=torch.float32) / new_size).double()
    return (
        ((torch.arange(new_size, dtype=torch.float64) + 0.5) * scale)
        .float()
        .floor()
        .long()
        .clamp(max=size - 1)
    )


@functools.lru_cache(maxsize=1024)
def _nearest_exact_selection(size: int, new_size: int) -> slice | Tensor:
    """``_nearest_exact_indices`` as a slice when they are a regular progression (a strided view, no gather),
    else the index tensor. Cached: the same few sizes come back every batch."""
    index = _nearest_exact_indices(size, new_size)
    start, step = int(index[0]), int(index[1] - index[0]) if len(index) > 1 else 1
    if step > 0 and torch.equal(index, start + step * torch.arange(len(index))):
        return slice(start, start + (len(index) - 1) * step + 1, step)
    return index


def _nearest_exact_downsample(x: Tensor, new_shape: Sequence[int]) -> Tensor:
    """``interpolate(x, new_shape, mode="nearest-exact")`` on the trailing axes, for any dtype: strided views
    where the kept voxels are evenly spaced, a gather elsewhere, and one copy at the end."""
    spatial = x.shape[x.ndim - len(new_shape) :]
    if tuple(spatial) == tuple(new_shape):
        return x
    lead = x.ndim - len(new_shape)
    selections = [_nearest_exact_selection(size, new) for size, new in zip(spatial, new_shape)]
    x = x[(slice(None),) * lead + tuple(s if isinstance(s, slice) else slice(None) for s in selections)]
    for axis, selection in enumerate(selections):
        if not isinstance(selection, slice):
            x = x.index_select(lead + axis, selection.to(x.device))
    return x.contiguous()


def _lowres_matrix(size: int, zoom: float) -> Tensor:
    """(size, size) matrix of ``interpolate(nearest-exact)`` down to ``round(size * zoom)`` then linear back.

    The index arithmetic follows ATen's CPU kernels (float32 scales, ``align_corners=False``).
    """
    small = max(round(size * zoom), 1)
    if small == size:
        return torch.eye(size)
    # linear upsampling small -> size: output i reads small-grid positions i0, i1 with weights 1-l, l
    up_scale = torch.tensor(small / size, dtype=torch.float32)
    position = (up_scale * (torch.arange(size, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0)
    i0 = position.floor().long().clamp(max=small - 1)
    weight1 = (position - i0).clamp(0, 1)
    i1 = torch.where(i0 < small - 1, i0 + 1, i0)
    source = _nearest_exact_indices(size, small)  # small-grid position j holds input voxel source[j]
    matrix = torch.zeros(size, size)
    rows = torch.arange(size)
    matrix.index_put_((rows, source[i0]), 1 - weight1, accumulate=True)
    matrix.index_put_((rows, source[i1]), weight1, accumulate=True)
    return matrix


@dataclass
class SimulateLowResolution(Transform):
    """Per channel (p 0.5): downsample by a zoom ~ U(zoom_range) (same for all axes) with nearest-exact,
    then upsample back with (bi/tri)linear interpolation. ``ignore_axes`` (axis 0 in dummy-2D) keep their size.

    >>> image = torch.arange(8.).view(1, 1, 8)
    >>> t = SimulateLowResolution(p=1, zoom_range=(0.5, 0.5), p_per_channel=1)
    >>> t({"image": image}, torch.Generator())["image"]
    tensor([[[1.0000, 1.5000, 2.5000, 3.5000, 4.5000, 5.5000, 6.5000, 7.0000]]])
    """

    p: float = 0.25
    zoom_range: tuple[float, float] = (0.5, 1.0)
    p_per_channel: float = 0.5
    ignore_axes: tuple[int, ...] = ()

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, c = batch["image"].shape[:2]
        # float32 like batchgeneratorsv2's torch.Tensor of scales; round(size * zoom) is half-to-even there too
        return {
            "applied": _coin(self.p, (b,), generator),
            "channels": _coin(self.p_per_channel, (b, c), generator),
            "zooms": _uniform(*self.zoom_range, (b, c), generator).float(),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        samples, channels = _pairs(params["applied"], params["channels"])
        if not samples:
            return batch
        image = batch["image"]
        zooms = params["zooms"][samples, channels].tolist()
        matrices = [
            None
            if axis in self.ignore_axes
            else torch.stack([_lowres_matrix(size, z) for z in zooms]).to(image.device)
            for axis, size in enumerate(image.shape[2:])
        ]
        resampled = _along_axes(_pair_rows(image, samples, channels), matrices)
        return _replace(batch, image=_update_pairs(image, samples, channels, resampled))


@dataclass
class Gamma(Transform):
    """Per channel ``x = ((x - min) / range) ** γ * range + min``, γ ~ BGContrast(gamma_range), then the
    channel's original mean and std are restored (``p_retain_stats=1``). ``invert``: the curve is applied to
    ``-x`` and the result negated back (nnU-Net's first gamma step, p 0.1).

    >>> image = torch.rand(1, 2, 50, generator=torch.Generator().manual_seed(0))
    >>> out = Gamma(p=1, gamma_range=(1.0, 1.0))({"image": image}, torch.Generator())["image"]
    >>> torch.allclose(out, image, atol=1e-6)
    True
    """

    p: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    invert: bool = False

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, c = batch["image"].shape[:2]
        return {
            "applied": _coin(self.p, (b,), generator),
            "gammas": bg_contrast(self.gamma_range, (b, c), generator),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        samples = _indices(params["applied"])
        if not samples:
            return batch
        image = batch["image"]
        x = _rows(image, samples)  # a copy, so in-place is safe
        x = x.neg_() if self.invert else x
        mean, std, low, high = _channel_stats(x)
        value_range = high - low
        x.sub_(low).div_(value_range.clamp(min=1e-7))
        # x ** gamma on [0, 1] as exp(gamma * log x): 2.5x faster than torch's pow on the CPU, within 1e-7
        # (0 stays 0: log gives -inf, exp of -inf is 0)
        x.log_().mul_(_per_channel(params["gammas"][samples], x)).exp_()
        # upstream maps the curve back (* range + low), then restores mean and std; the affine map changes
        # neither the standardized values nor the result, so the stats are taken on the curve itself
        curve_mean, curve_std = _mean_std(x)
        x.sub_(curve_mean).mul_(std / (curve_std * value_range).clamp(min=1e-7) * value_range).add_(mean)
        x = x.neg_() if self.invert else x
        return _replace(batch, image=_update(image, samples, x))


# ----------------------------------------------------------------------------------------------------------
# Mirroring, masking, labels
# ----------------------------------------------------------------------------------------------------------


def _flip(x: Tensor, flips: Tensor) -> Tensor:
    """Flip each sample of x (B, C, *spatial) along the spatial axes where ``flips`` (B, d) is True."""
    return torch.stack([sample.flip([axis + 1 for axis in _indices(axes)]) for sample, axes in zip(x, flips)])


@dataclass
class Mirror(Transform):
    """Flip each allowed spatial axis with p 0.5, independently per sample and axis.

    >>> image = torch.arange(3.).view(1, 1, 3)
    >>> Mirror(axes=(0,)).apply({"image": image}, {"flips": torch.tensor([[True]])})["image"]
    tensor([[[2., 1., 0.]]])
    """

    axes: tuple[int, ...] = (0, 1, 2)
    p_per_axis: float = 0.5

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


@dataclass
class MaskImage(Transform):
    """Set the given image channels to 0 where ``seg[:, 0] < 0`` (outside the nonzero mask), as nnU-Net does
    for channels normalized with ``use_mask_for_norm``.

    >>> batch = {"image": torch.ones(1, 2, 3), "seg": torch.tensor([[[-1, 0, 1]]])}
    >>> MaskImage(channels=(1,))(batch, torch.Generator())["image"]
    tensor([[[1., 1., 1.],
             [0., 1., 1.]]])
    """

    channels: tuple[int, ...] = ()

    def apply(self, batch: Batch, params: Params) -> Batch:
        if not self.channels:
            return batch
        image = batch["image"]
        # 1 inside, 0 outside, by arithmetic: on the CPU a multiply is several times faster than masked_fill
        inside = (batch["seg"][:, :1].clamp(-1, 0) + 1).to(image.dtype)  # broadcasts over the channels
        if len(self.channels) < image.shape[1]:
            unmasked = torch.ones(image.shape[1], dtype=torch.bool, device=image.device)
            unmasked[list(self.channels)] = False
            inside = inside.maximum(unmasked.view(1, -1, *[1] * (image.ndim - 2)).to(image.dtype))
        return _replace(batch, image=image * inside)


@dataclass
class RemoveLabel(Transform):
    """Replace a label in every seg channel (nnU-Net: -1 -> 0 right before the loss).

    >>> RemoveLabel()({"seg": torch.tensor([[-1, 0, 2]])}, torch.Generator())["seg"]
    tensor([[0, 0, 2]])
    """

    label: int = OUTSIDE_LABEL
    new_label: int = 0

    def apply(self, batch: Batch, params: Params) -> Batch:
        seg = batch["seg"]
        if self.new_label == self.label + 1 and int(seg.min()) >= self.label:  # the usual case, 10x faster
            return _replace(batch, seg=seg.clamp(min=self.new_label))
        return _replace(batch, seg=torch.where(seg == self.label, self.new_label, seg))


@dataclass
class MoveSegAsOneHotToData(Transform):
    """Cascade: one-hot of a seg channel (the previous stage's prediction) for ``labels``, appended to the
    image; that seg channel is removed.

    >>> batch = {"image": torch.zeros(1, 1, 3), "seg": torch.tensor([[[0, 1, 1], [2, 0, 1]]])}
    >>> out = MoveSegAsOneHotToData(labels=(1, 2))(batch, torch.Generator())
    >>> out["image"][0, 1:].tolist(), out["seg"].shape
    ([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], torch.Size([1, 1, 3]))
    """

    labels: tuple[int, ...] = ()
    source_channel: int = 1

    def apply(self, batch: Batch, params: Params) -> Batch:
        image, seg = batch["image"], batch["seg"]
        source = seg[:, self.source_channel : self.source_channel + 1]
        labels = torch.tensor(self.labels, device=seg.device, dtype=seg.dtype).view(
            1, -1, *[1] * (seg.ndim - 2)
        )
        one_hot = (source == labels).to(image.dtype)
        keep = [c for c in range(seg.shape[1]) if c != self.source_channel]
        return _replace(batch, image=torch.cat([image, one_hot], 1), seg=seg[:, keep])


def structuring_element(radius: float, ndim: int) -> Tensor:
    """skimage's ``ball(radius)`` (3D) or ``disk(radius)`` (2D) for the float radii nnU-Net samples.

    For a non-integer radius skimage's grids are not centered integers: ``ball`` spaces ``int(2r + 1)``
    points evenly over [-r, r], ``disk`` steps by 1 from -r. We rebuild the same masks.

    >>> structuring_element(1.0, 2).int().tolist()
    [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    """
    if ndim == 3:
        coords = np.linspace(-radius, radius, int(2 * radius + 1))  # np.mgrid[-r:r:(2r+1)j]
    else:
        coords = np.arange(-radius, radius + 1)
    grids = np.meshgrid(*[coords] * ndim, indexing="ij")
    return torch.from_numpy(sum(g**2 for g in grids) <= radius * radius)


def _dilate(masks: Tensor, elements: list[Tensor]) -> Tensor:
    """Binary dilation of each mask (N, *S) by its own structuring element, zero outside, via FFT.

    Same as batchgeneratorsv2's ``fft_conv(padding="same")`` + round > 0: an even-sized element is
    anchored at ``(k - 1) // 2``. Elements are embedded, so anchored, in one odd-sized common kernel.
    """
    n, spatial, d = masks.shape[0], masks.shape[1:], masks.ndim - 1
    anchor = max(max((k - 1) // 2, k // 2) for e in elements for k in e.shape)
    kernels = torch.zeros(n, *[2 * anchor + 1] * d)
    for i, element in enumerate(elements):
        start = [anchor - (k - 1) // 2 for k in element.shape]
        kernels[(i, *[slice(s, s + k) for s, k in zip(start, element.shape)])] = element.float()
    padded = F.pad(masks.float(), [anchor] * 2 * d)
    dims = tuple(range(1, d + 1))
    size = padded.shape[1:]
    kernels = F.pad(kernels.to(masks.device), [p for s in reversed(size) for p in (0, s - 2 * anchor - 1)])
    correlation = torch.fft.irfftn(
        torch.fft.rfftn(padded, dim=dims) * torch.fft.rfftn(kernels, dim=dims).conj(), s=size, dim=dims
    )
    return correlation[(..., *[slice(0, s) for s in spatial])] > 0.5


BINARY_OPERATORS = ("dilation", "erosion", "closing", "opening")
_OPERATOR_PHASES = {
    "dilation": ("dilate",),
    "erosion": ("erode",),
    "closing": ("dilate", "erode"),
    "opening": ("erode", "dilate"),
}


@dataclass
class RandomBinaryOperator(Transform):
    """Cascade: perturb the previous-stage one-hot channels (the last ``num_channels`` image channels).

    In a random channel order, each channel with p 0.5 gets a dilation, erosion, opening or closing with a
    ball (disk in 2D) of radius ~ U(radius_range); voxels it adds are removed from the other channels.

    >>> image = torch.zeros(1, 2, 9, 9); image[0, 1, 4, 4] = 1
    >>> t = RandomBinaryOperator(num_channels=1, p=1, p_per_channel=1)
    >>> params = {**t.sample({"image": image}, torch.Generator()), "operators": torch.tensor([[0]]),
    ...           "radii": torch.tensor([[1.0]], dtype=torch.float64)}
    >>> int(t.apply({"image": image}, params)["image"][0, 1].sum())   # a dilated dot: a 3x3 cross
    5
    """

    num_channels: int = 1
    p: float = 0.4
    p_per_channel: float = 0.5
    radius_range: tuple[float, float] = (1.0, 8.0)

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, n = batch["image"].shape[0], self.num_channels
        return {
            "applied": _coin(self.p, (b,), generator),
            "order": torch.rand((b, n), generator=generator).argsort(1),
            "chosen": _coin(self.p_per_channel, (b, n), generator),
            "operators": torch.randint(0, len(BINARY_OPERATORS), (b, n), generator=generator),
            "radii": _uniform(*self.radius_range, (b, n), generator),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        if not (params["applied"][:, None] & params["chosen"]).any():
            return batch
        image = batch["image"]
        first = image.shape[1] - self.num_channels
        one_hot = image[:, first:] != 0
        for step in range(self.num_channels):  # sequential: a channel sees the edits of the earlier ones
            samples = _indices(params["applied"] & params["chosen"][:, step])
            if not samples:
                continue
            channels = params["order"][samples, step].tolist()
            operators = [BINARY_OPERATORS[i] for i in params["operators"][samples, step].tolist()]
            elements = [
                structuring_element(r, image.ndim - 2) for r in params["radii"][samples, step].tolist()
            ]
            before = one_hot[samples, channels]
            after = before.clone()
            for phase in (0, 1):
                active = [i for i, op in enumerate(operators) if len(_OPERATOR_PHASES[op]) > phase]
                if not active:
                    continue
                # erosion = ~dilation(~x): outside the patch counts as foreground, so borders do not erode
                erode = torch.tensor(
                    [_OPERATOR_PHASES[operators[i]][phase] == "erode" for i in active], device=image.device
                ).view(-1, *[1] * (image.ndim - 2))
                after[active] = _dilate(after[active] ^ erode, [elements[i] for i in active]) ^ erode
            added = after & ~before
            sample_masks = one_hot[samples] & ~added.unsqueeze(1)
            sample_masks[range(len(samples)), channels] = after
            one_hot[samples] = sample_masks
        return _replace(batch, image=torch.cat([image[:, :first], one_hot.to(image.dtype)], 1))


@dataclass
class RemoveRandomConnectedComponent(Transform):
    """Cascade: per one-hot channel (p 0.5) delete one random connected component (full connectivity)
    smaller than ``max_fraction`` of the patch; nnU-Net does not refill it with another class.

    Connected-component labelling has no torch operator, so this step, rare (p 0.2, cascade only), runs
    ``scipy.ndimage.label`` on the CPU and copies the result back: the one CPU round trip of the pipeline.

    >>> image = torch.zeros(1, 1, 10); image[0, 0, [1, 5, 6]] = 1
    >>> params = {"applied": torch.tensor([True]), "chosen": torch.tensor([[True]]), "picks": torch.tensor([[0.]])}
    >>> RemoveRandomConnectedComponent(num_channels=1).apply({"image": image}, params)["image"][0, 0, :7]
    tensor([0., 0., 0., 0., 0., 1., 1.])
    """

    num_channels: int = 1
    p: float = 0.2
    p_per_channel: float = 0.5
    max_fraction: float = 0.15

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        b, n = batch["image"].shape[0], self.num_channels
        return {
            "applied": _coin(self.p, (b,), generator),
            "chosen": _coin(self.p_per_channel, (b, n), generator),
            "picks": torch.rand((b, n), generator=generator, dtype=torch.float64),
        }

    def apply(self, batch: Batch, params: Params) -> Batch:
        from scipy.ndimage import label as label_components

        samples, channels = _pairs(params["applied"], params["chosen"])
        if not samples:
            return batch
        image = batch["image"]
        first = image.shape[1] - self.num_channels
        masks = (image[samples, [first + c for c in channels]] != 0).cpu().numpy()
        keep = np.ones_like(masks)
        for i, (mask, pick) in enumerate(zip(masks, params["picks"][samples, channels].tolist())):
            components, count = label_components(mask, structure=np.ones([3] * mask.ndim))
            sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
            small = np.flatnonzero(sizes < mask.size * self.max_fraction) + 1
            if len(small):
                keep[i] = components != small[int(pick * len(small))]
        keep = torch.from_numpy(keep).to(image.device)
        return _replace(
            batch,
            image=_update_pairs(
                image,
                samples,
                [first + c for c in channels],
                image[samples, [first + c for c in channels]] * keep,
            ),
        )


@dataclass
class SegToRegions(Transform):
    """Region-based training: seg channel 0 -> one bool channel per region (``isin`` its labels).

    nnU-Net appends the ignore label as the last "region", which the loss uses as a mask.

    >>> seg = torch.tensor([[[0, 1, 2, 3]]])
    >>> SegToRegions(regions=((1, 2, 3), (2, 3), (3,)))({"seg": seg}, torch.Generator())["seg"].int().tolist()
    [[[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]]
    """

    regions: tuple[int | tuple[int, ...], ...] = ()

    def apply(self, batch: Batch, params: Params) -> Batch:
        seg = batch["seg"][:, 0]
        channels = [
            torch.isin(
                seg,
                torch.tensor(
                    region if isinstance(region, (tuple, list)) else [region],
                    device=seg.device,
                    dtype=seg.dtype,
                ),
            )
            for region in self.regions
        ]
        return _replace(batch, seg=torch.stack(channels, 1))


@dataclass
class DownsampleSegForDS(Transform):
    """Deep supervision: replace ``seg`` by a list, one target per output scale (``nearest-exact``).

    >>> seg = torch.zeros(1, 1, 8, 8, dtype=torch.int16)
    >>> [s.shape[2:] for s in DownsampleSegForDS(scales=([1, 1], [0.5, 0.5]))({"seg": seg}, None)["seg"]]
    [torch.Size([8, 8]), torch.Size([4, 4])]
    """

    scales: tuple[Sequence[float], ...] = ()

    def apply(self, batch: Batch, params: Params) -> Batch:
        seg = batch["seg"]
        targets = [
            _nearest_exact_downsample(seg, [round(size * s) for size, s in zip(seg.shape[2:], scale)])
            for scale in self.scales
        ]
        return _replace(batch, seg=targets)


# ----------------------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------------------


@dataclass
class AugmentSettings:
    """Probabilities (per sample) and ranges of the training augmentation; defaults are nnU-Net's."""

    p_rotation: float = 0.2
    p_scaling: float = 0.2
    scaling_range: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_std_range: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.5, 1.0)
    p_blur_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_lowres: float = 0.25
    lowres_zoom_range: tuple[float, float] = (0.5, 1.0)
    p_lowres_per_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_mirror_per_axis: float = 0.5
    # cascade only: perturbations of the previous stage's one-hot input channels
    p_binary_operator: float = 0.4
    binary_operator_radius_range: tuple[float, float] = (1.0, 8.0)
    p_binary_operator_per_channel: float = 0.5
    p_remove_component: float = 0.2
    remove_component_max_fraction: float = 0.15
    p_remove_component_per_channel: float = 0.5


NNUNET_DEFAULTS = AugmentSettings()


def training_pipeline(
    patch_size: Sequence[int],
    rotation_range: tuple[float, float],
    mirror_axes: Sequence[int],
    dummy_2d: bool = False,
    *,
    settings: AugmentSettings = NNUNET_DEFAULTS,
    use_mask_for_norm: Sequence[bool] | None = None,
    is_cascaded: bool = False,
    foreground_labels: Sequence[int] = (),
    regions: Sequence[int | Sequence[int]] | None = None,
    ignore_label: int | None = None,
    deep_supervision_scales: Sequence[Sequence[float]] | None = None,
) -> list[Transform]:
    """nnU-Net's ``get_training_transforms`` as a list of steps, in its order.

    Args:
        patch_size: final patch (Z, Y, X) or (Y, X); the batch fed in has ``initial_patch_size``.
        rotation_range, mirror_axes, dummy_2d: from ``rotation_and_mirroring_for``.
        use_mask_for_norm: per image channel (plans' ``use_mask_for_norm``); masked channels are zeroed
            outside the nonzero mask.
        is_cascaded, foreground_labels: cascade; seg channel 1 is the previous stage, moved to the image.
        regions, ignore_label: region-based training (the ignore label becomes the last region).
        deep_supervision_scales: from ``deep_supervision_scales``; None without deep supervision.

    >>> [type(t).__name__ for t in training_pipeline((16, 16, 16), (-0.5, 0.5), (0, 1, 2))]
    ['SpatialTransform', 'GaussianNoise', 'GaussianBlur', 'MultiplicativeBrightness', 'Contrast',
     'SimulateLowResolution', 'Gamma', 'Gamma', 'Mirror', 'RemoveLabel']
    """
    s = settings
    pipeline: list[Transform] = [
        SpatialTransform(
            tuple(patch_size), tuple(rotation_range), s.p_rotation, s.p_scaling, s.scaling_range, dummy_2d
        ),
        GaussianNoise(s.p_noise, s.noise_std_range),
        GaussianBlur(s.p_blur, s.blur_sigma_range, s.p_blur_per_channel),
        MultiplicativeBrightness(s.p_brightness, s.brightness_range),
        Contrast(s.p_contrast, s.contrast_range),
        SimulateLowResolution(
            s.p_lowres, s.lowres_zoom_range, s.p_lowres_per_channel, (0,) if dummy_2d else ()
        ),
        Gamma(s.p_gamma_inverted, s.gamma_range, invert=True),
        Gamma(s.p_gamma, s.gamma_range, invert=False),
    ]
    if mirror_axes:
        pipeline.append(Mirror(tuple(mirror_axes), s.p_mirror_per_axis))
    if use_mask_for_norm is not None and any(use_mask_for_norm):
        pipeline.append(MaskImage(tuple(i for i, masked in enumerate(use_mask_for_norm) if masked)))
    pipeline.append(RemoveLabel())
    if is_cascaded:
        n = len(foreground_labels)
        if n == 0:
            raise ValueError(
                "the cascade needs foreground_labels (the labels one-hot encoded from the previous stage)"
            )
        pipeline += [
            MoveSegAsOneHotToData(tuple(foreground_labels)),
            RandomBinaryOperator(
                n, s.p_binary_operator, s.p_binary_operator_per_channel, s.binary_operator_radius_range
            ),
            RemoveRandomConnectedComponent(
                n, s.p_remove_component, s.p_remove_component_per_channel, s.remove_component_max_fraction
            ),
        ]
    return pipeline + _target_steps(regions, ignore_label, deep_supervision_scales)


def validation_pipeline(
    *,
    is_cascaded: bool = False,
    foreground_labels: Sequence[int] = (),
    regions: Sequence[int | Sequence[int]] | None = None,
    ignore_label: int | None = None,
    deep_supervision_scales: Sequence[Sequence[float]] | None = None,
) -> list[Transform]:
    """nnU-Net's ``get_validation_transforms``: no augmentation, only the target preparation.

    >>> [type(t).__name__ for t in validation_pipeline(deep_supervision_scales=[[1, 1], [0.5, 0.5]])]
    ['RemoveLabel', 'DownsampleSegForDS']
    """
    pipeline: list[Transform] = [RemoveLabel()]
    if is_cascaded:
        pipeline.append(MoveSegAsOneHotToData(tuple(foreground_labels)))
    return pipeline + _target_steps(regions, ignore_label, deep_supervision_scales)


def _target_steps(regions, ignore_label, deep_supervision_scales) -> list[Transform]:
    steps: list[Transform] = []
    if regions is not None:
        steps.append(SegToRegions(tuple(regions) + ((ignore_label,) if ignore_label is not None else ())))
    if deep_supervision_scales is not None:
        steps.append(DownsampleSegForDS(tuple(tuple(s) for s in deep_supervision_scales)))
    return steps


def augment(batch: Batch, pipeline: Sequence[Transform], generator: torch.Generator) -> Batch:
    """Run the steps in order on a batch, drawing all parameters from ``generator`` (a CPU generator).

    >>> batch = {"image": torch.rand(2, 1, 24, 24), "seg": torch.zeros(2, 1, 24, 24, dtype=torch.int16)}
    >>> pipeline = training_pipeline((16, 16), *rotation_and_mirroring_for((16, 16))[::2])
    >>> out = augment(batch, pipeline, torch.Generator().manual_seed(0))
    >>> out["image"].shape, out["seg"].shape
    (torch.Size([2, 1, 16, 16]), torch.Size([2, 1, 16, 16]))
    """
    if generator.device.type != "cpu":
        raise ValueError(
            f"augment needs a CPU torch.Generator (parameters are drawn on the CPU), got one on "
            f"{generator.device}; use torch.Generator() and let the batch live on any device"
        )
    for step in pipeline:
        batch = step(batch, generator)
    return batch
