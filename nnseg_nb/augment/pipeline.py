"""nnU-Net's training and validation augmentation pipelines (``get_training_transforms`` /
``get_validation_transforms``) as lists of steps, and ``augment``, which runs one on a batch.

    pipeline = training_pipeline(patch_size, rotation_range, mirror_axes, dummy_2d)
    batch = augment(batch, pipeline, batch_generator(seed, batch_index))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nnseg_nb.augment.cascade import (
    MoveSegAsOneHotToData,
    RandomBinaryOperator,
    RemoveRandomConnectedComponent,
)
from nnseg_nb.augment.common import Batch, Transform
from nnseg_nb.augment.intensity import (
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    MultiplicativeBrightness,
    SimulateLowResolution,
)
from nnseg_nb.augment.settings import NNUNET_DEFAULTS, AugmentSettings
from nnseg_nb.augment.spatial import Mirror, SpatialTransform
from nnseg_nb.augment.targets import DownsampleSegForDS, MaskImage, RemoveLabel, SegToRegions


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
        patch_size: final patch (Z, Y, X) or (Y, X); the batch fed in has ``loaded_patch_size``.
        rotation_range, mirror_axes, dummy_2d: from ``rotation_and_mirroring_for``.
        use_mask_for_norm: per image channel (plans' ``use_mask_for_norm``); masked channels are zeroed
            outside the nonzero mask.
        is_cascaded, foreground_labels: cascade; seg channel 1 is the previous stage, moved to the image.
        regions, ignore_label: region-based training (the ignore label becomes the last region).
        deep_supervision_scales: from ``network.deep_supervision_scales``; None without deep supervision.

    >>> [type(t).__name__ for t in training_pipeline((16, 16, 16), (-0.5, 0.5), (0, 1, 2))]
    ['SpatialTransform', 'GaussianNoise', 'GaussianBlur', 'MultiplicativeBrightness', 'Contrast',
     'SimulateLowResolution', 'Gamma', 'Gamma', 'Mirror', 'RemoveLabel']
    """
    s = settings
    pipeline: list[Transform] = [
        SpatialTransform(
            patch_size=tuple(patch_size),
            rotation_range=tuple(rotation_range),
            p_rotation=s.p_rotation,
            p_scaling=s.p_scaling,
            scaling_range=s.scaling_range,
            dummy_2d=dummy_2d,
        ),
        GaussianNoise(p=s.p_noise, std_range=s.noise_std_range),
        GaussianBlur(p=s.p_blur, sigma_range=s.blur_sigma_range, p_per_channel=s.p_blur_per_channel),
        MultiplicativeBrightness(p=s.p_brightness, multiplier_range=s.brightness_range),
        Contrast(p=s.p_contrast, contrast_range=s.contrast_range),
        SimulateLowResolution(
            p=s.p_lowres,
            zoom_range=s.lowres_zoom_range,
            p_per_channel=s.p_lowres_per_channel,
            ignore_axes=(0,) if dummy_2d else (),
        ),
        Gamma(p=s.p_gamma_inverted, gamma_range=s.gamma_range, invert=True),
        Gamma(p=s.p_gamma, gamma_range=s.gamma_range, invert=False),
    ]
    if mirror_axes:
        pipeline.append(Mirror(axes=tuple(mirror_axes), p_per_axis=s.p_mirror_per_axis))
    if use_mask_for_norm is not None and any(use_mask_for_norm):
        pipeline.append(MaskImage(channels=tuple(i for i, masked in enumerate(use_mask_for_norm) if masked)))
    pipeline.append(RemoveLabel())
    if is_cascaded:
        n = len(foreground_labels)
        if n == 0:
            raise ValueError(
                "the cascade needs foreground_labels (the labels one-hot encoded from the previous stage)"
            )
        pipeline += [
            MoveSegAsOneHotToData(labels=tuple(foreground_labels)),
            RandomBinaryOperator(
                num_channels=n,
                p=s.p_binary_operator,
                p_per_channel=s.p_binary_operator_per_channel,
                radius_range=s.binary_operator_radius_range,
            ),
            RemoveRandomConnectedComponent(
                num_channels=n,
                p=s.p_remove_component,
                p_per_channel=s.p_remove_component_per_channel,
                max_fraction=s.remove_component_max_fraction,
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
        pipeline.append(MoveSegAsOneHotToData(labels=tuple(foreground_labels)))
    return pipeline + _target_steps(regions, ignore_label, deep_supervision_scales)


def _target_steps(
    regions: Sequence[int | Sequence[int]] | None,
    ignore_label: int | None,
    deep_supervision_scales: Sequence[Sequence[float]] | None,
) -> list[Transform]:
    steps: list[Transform] = []
    if regions is not None:
        steps.append(
            SegToRegions(regions=tuple(regions) + ((ignore_label,) if ignore_label is not None else ()))
        )
    if deep_supervision_scales is not None:
        steps.append(DownsampleSegForDS(scales=tuple(tuple(s) for s in deep_supervision_scales)))
    return steps


def augment(batch: Batch, pipeline: Sequence[Transform], generator: torch.Generator) -> Batch:
    """Run the steps in order on a batch, drawing all parameters from ``generator`` (a CPU generator;
    ``batch_generator(seed, batch_index)`` gives each batch its own, so a resumed run repeats its batches).

    >>> batch = {"image": torch.rand(2, 1, 24, 24), "seg": torch.zeros(2, 1, 24, 24, dtype=torch.int16)}
    >>> from nnseg_nb.augment import batch_generator, rotation_and_mirroring_for
    >>> pipeline = training_pipeline((16, 16), *rotation_and_mirroring_for((16, 16))[::2])
    >>> out = augment(batch, pipeline, batch_generator(seed=0, batch_index=0))
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
