"""nnU-Net's training augmentation, batched in torch on the training device (CPU or CUDA).

    rotation_range, dummy_2d, mirror_axes = rotation_and_mirroring_for(patch_size)
    loaded_size = loaded_patch_size(patch_size, rotation_range, dummy_2d=dummy_2d)  # the loader crops this
    pipeline = training_pipeline(patch_size, rotation_range, mirror_axes, dummy_2d)
    batch = augment({"image": image, "seg": seg}, pipeline, batch_generator(seed, batch_index))
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
``batch_generator(seed, batch_index)`` seeds one generator per batch from those two numbers alone (as
``loader.batch_rng`` does for the patches), so a training run resumed at batch k draws what it would have.

The modules, in the order a batch meets them:

- ``settings``: ``AugmentSettings`` and ``NNUNET_DEFAULTS``, nnU-Net's numbers (every step's defaults);
- ``common``: the ``Transform`` protocol, ``batch_generator`` and the sampling and indexing helpers;
- ``spatial``: rotation and scaling with label voting, mirroring, and the loader's ``loaded_patch_size``;
- ``intensity``: noise, blur, brightness, contrast, low resolution, gamma;
- ``cascade``: the previous stage's one-hot channels and their morphological perturbations;
- ``targets``: masking, label -1 -> 0, regions, deep-supervision targets;
- ``pipeline``: ``training_pipeline``, ``validation_pipeline`` and ``augment``.

``from nnseg_nb import augment`` then ``augment.<name>`` reaches every public name below.
"""

from nnseg_nb.augment.cascade import (
    BINARY_OPERATORS,
    MoveSegAsOneHotToData,
    RandomBinaryOperator,
    RemoveRandomConnectedComponent,
    structuring_element,
)
from nnseg_nb.augment.common import Batch, Params, Transform, batch_generator, bg_contrast
from nnseg_nb.augment.intensity import (
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    MultiplicativeBrightness,
    SimulateLowResolution,
)
from nnseg_nb.augment.pipeline import augment, training_pipeline, validation_pipeline
from nnseg_nb.augment.settings import NNUNET_DEFAULTS, AugmentSettings
from nnseg_nb.augment.spatial import Mirror, SpatialTransform, loaded_patch_size, rotation_and_mirroring_for
from nnseg_nb.augment.targets import DownsampleSegForDS, MaskImage, RemoveLabel, SegToRegions

__all__ = [
    "BINARY_OPERATORS",
    "NNUNET_DEFAULTS",
    "AugmentSettings",
    "Batch",
    "Contrast",
    "DownsampleSegForDS",
    "Gamma",
    "GaussianBlur",
    "GaussianNoise",
    "MaskImage",
    "Mirror",
    "MoveSegAsOneHotToData",
    "MultiplicativeBrightness",
    "Params",
    "RandomBinaryOperator",
    "RemoveLabel",
    "RemoveRandomConnectedComponent",
    "SegToRegions",
    "SimulateLowResolution",
    "SpatialTransform",
    "Transform",
    "augment",
    "batch_generator",
    "bg_contrast",
    "loaded_patch_size",
    "rotation_and_mirroring_for",
    "structuring_element",
    "training_pipeline",
    "validation_pipeline",
]
