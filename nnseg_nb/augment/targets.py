"""The steps that prepare the targets (and mask the image) after augmentation: zero masked channels
outside the body, label -1 -> 0, labels -> regions, one target per deep-supervision scale.

    RemoveLabel()(batch, generator)["seg"]      # -1 (outside the nonzero mask) becomes background 0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nnseg_nb.augment.common import Batch, Params, Transform, _nearest_exact_downsample, _replace
from nnseg_nb.preprocessing import OUTSIDE_LABEL


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
