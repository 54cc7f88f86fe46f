"""The cascade's steps: the previous stage's segmentation becomes one-hot image channels, which are then
perturbed (random dilation/erosion/opening/closing, a removed connected component) so that the second
stage learns to correct a first stage's mistakes.

    MoveSegAsOneHotToData(labels=(1, 2))(batch, generator)      # seg channel 1 -> 2 more image channels
    RandomBinaryOperator(num_channels=2)(batch, generator)        # each channel with p 0.5: a morphology op
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nnseg_nb.augment.common import (
    Batch,
    Params,
    Transform,
    _coin,
    _indices,
    _pairs,
    _replace,
    _uniform,
    _update_pairs,
)
from nnseg_nb.augment.settings import NNUNET_DEFAULTS


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
    p: float = NNUNET_DEFAULTS.p_binary_operator
    p_per_channel: float = NNUNET_DEFAULTS.p_binary_operator_per_channel
    radius_range: tuple[float, float] = NNUNET_DEFAULTS.binary_operator_radius_range

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
    p: float = NNUNET_DEFAULTS.p_remove_component
    p_per_channel: float = NNUNET_DEFAULTS.p_remove_component_per_channel
    max_fraction: float = NNUNET_DEFAULTS.remove_component_max_fraction

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
