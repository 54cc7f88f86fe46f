"""nnU-Net's numbers for the training augmentation, in one place: ``AugmentSettings`` and its defaults
``NNUNET_DEFAULTS``. Every step's defaults and every pipeline read them from here.

    settings = dataclasses.replace(NNUNET_DEFAULTS, p_rotation=0.5)   # a variant: rotate more often
    training_pipeline(patch_size, rotation_range, mirror_axes, settings=settings)
"""

from __future__ import annotations

from dataclasses import dataclass


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
