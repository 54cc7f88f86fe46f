"""The U-Nets of nnU-Net's plans (dynamic-network-architectures 0.4.4): so far, the planner's arithmetic.

    arch = plans.configuration("3d_fullres").architecture
    conv_feature_map_size(arch.network_class_name, arch.arch_kwargs, patch_size=(40, 56, 40), num_classes=3)
    # -> 19174400: output elements of every conv, transposed conv and the final head, batch size 1

The planner sizes patches and batches with this count, nnU-Net's ``compute_conv_feature_map_size``
(``static_estimate_VRAM_usage``): a stand-in for GPU memory that needs no GPU and no torch modules.
Every conv uses "same" padding, so an output is ``features * prod(size // stride)``; kernel sizes
and input channels do not change the count.

Two networks are planned, named by their dotted class paths as the plans write them:

- ``PlainConvUNet``: stage s is ``n_conv_per_stage[s]`` convs (the first one strided); the decoder
  mirrors it (a transposed conv, then ``n_conv_per_stage_decoder`` convs per level) and ends in a
  1x1 segmentation head.
- ``ResidualEncoderUNet`` (the ResEnc presets): a stem conv, then ``n_blocks_per_stage[s]`` residual
  blocks of two convs (plus a 1x1 projection when a block changes size or width); the same decoder.

Deep supervision lives here too, because the network's strides decide it: ``deep_supervision_scales``
(the size of each extra output, which the augmentation's targets follow) and
``deep_supervision_weights`` (the loss weight of each output).

A later stage adds the ``nn.Module`` versions here, with nnU-Net's parameter names so checkpoints load.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Dotted names as nnU-Net writes them into plans (``network_class_name``).
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL_ENCODER_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def _per_stage(value, n_stages: int, what: str) -> list:
    """dynamic-network-architectures accepts one value for all stages or a list with one per stage."""
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n_stages
    value = list(value)
    if len(value) != n_stages:
        raise ValueError(f"{what} has {len(value)} entries, expected {n_stages} (one per stage)")
    return value


def _strides_per_axis(strides, n_stages: int, dim: int) -> list[list[int]]:
    return [
        [s] * dim if isinstance(s, (int, np.integer)) else list(s)
        for s in _per_stage(strides, n_stages, "strides")
    ]


def stage_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Feature-map size after each encoder stage: each stage divides by its stride, rounding down.

    >>> stage_sizes((40, 56, 40), [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    [[40, 56, 40], [20, 28, 20], [10, 14, 10], [5, 7, 5]]
    """
    sizes, size = [], [int(s) for s in patch_size]
    for stride in strides:
        size = [n // s for n, s in zip(size, stride)]
        sizes.append(size)
    return sizes


def _voxels(size: Sequence[int]) -> int:
    return int(np.prod(size, dtype=np.int64))


def plain_encoder_feature_map_size(
    sizes: Sequence[Sequence[int]], features: Sequence[int], n_conv_per_stage: Sequence[int]
) -> int:
    """Outputs of the plain encoder: every conv of stage s gives ``features[s]`` maps of ``sizes[s]``."""
    return sum(n * f * _voxels(size) for n, f, size in zip(n_conv_per_stage, features, sizes))


def residual_encoder_feature_map_size(
    patch_size: Sequence[int],
    sizes: Sequence[Sequence[int]],
    features: Sequence[int],
    n_blocks_per_stage: Sequence[int],
) -> int:
    """Outputs of the residual encoder: the stem conv, then two convs per block (``BasicBlockD``).

    A block whose output differs from its input in width or size also has a 1x1 projection on the
    skip path, counted once more (only the first block of a stage can).
    """
    total = features[0] * _voxels(patch_size)  # stem: one conv to features[0], stride 1
    in_features, in_size = features[0], list(patch_size)
    for f, size, n_blocks in zip(features, sizes, n_blocks_per_stage):
        projection = in_features != f or list(in_size) != list(size)
        total += (2 + projection) * f * _voxels(size) + (n_blocks - 1) * 2 * f * _voxels(size)
        in_features, in_size = f, size
    return total


def decoder_feature_map_size(
    sizes: Sequence[Sequence[int]],
    features: Sequence[int],
    n_conv_per_stage_decoder: Sequence[int],
    num_classes: int,
    deep_supervision: bool = False,
) -> int:
    """Outputs of ``UNetDecoder``, from the bottleneck up.

    Decoder level k (0 = lowest) works at the size of encoder stage ``n - 2 - k``: a transposed conv
    and ``n_conv_per_stage_decoder[k]`` convs, all with that stage's width. The segmentation head
    (``num_classes`` maps) is counted at the top level only, or at every level with deep supervision.
    """
    n_levels = len(sizes) - 1
    total = 0
    for k in range(n_levels):
        skip = n_levels - 1 - k
        maps = (n_conv_per_stage_decoder[k] + 1) * features[skip] * _voxels(sizes[skip])
        if deep_supervision or k == n_levels - 1:
            maps += num_classes * _voxels(sizes[skip])
        total += maps
    return total


def conv_feature_map_size(
    network_class_name: str,
    arch_kwargs: dict,
    patch_size: Sequence[int],
    num_classes: int,
    deep_supervision: bool = False,
) -> int:
    """nnU-Net's VRAM proxy: how many output elements all convs produce for one patch (batch size 1).

    Args:
        network_class_name: ``PLAIN_CONV_UNET`` or ``RESIDUAL_ENCODER_UNET`` (the plans' dotted name).
        arch_kwargs: the plans' ``arch_kwargs`` (``n_stages``, ``features_per_stage``, ``strides``,
            ``n_conv_per_stage`` or ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``).
        patch_size: (Z, Y, X) or (Y, X), without batch and channel axes.
        num_classes: output channels of the segmentation head. The planner passes
            ``len(dataset_json["labels"])``, background and ignore label included.
        deep_supervision: count a head at every decoder level (the planner does not).

    >>> kwargs = {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320], "strides": [1, 2, 2, 2, 2, 2],
    ...           "n_blocks_per_stage": [1, 3, 4, 6, 6, 6], "n_conv_per_stage_decoder": [1, 1, 1, 1, 1]}
    >>> conv_feature_map_size(RESIDUAL_ENCODER_UNET, kwargs, (128, 128, 128), 3, deep_supervision=True)
    558319104
    """
    n_stages = int(arch_kwargs["n_stages"])
    features = _per_stage(arch_kwargs["features_per_stage"], n_stages, "features_per_stage")
    strides = _strides_per_axis(arch_kwargs["strides"], n_stages, len(patch_size))
    decoder_convs = _per_stage(
        arch_kwargs["n_conv_per_stage_decoder"], n_stages - 1, "n_conv_per_stage_decoder"
    )
    sizes = stage_sizes(patch_size, strides)
    if network_class_name == PLAIN_CONV_UNET:
        convs = _per_stage(arch_kwargs["n_conv_per_stage"], n_stages, "n_conv_per_stage")
        encoder = plain_encoder_feature_map_size(sizes, features, convs)
    elif network_class_name == RESIDUAL_ENCODER_UNET:
        blocks = _per_stage(arch_kwargs["n_blocks_per_stage"], n_stages, "n_blocks_per_stage")
        encoder = residual_encoder_feature_map_size(patch_size, sizes, features, blocks)
    else:
        raise ValueError(
            f"no feature-map count for network {network_class_name!r}; "
            f"known: {PLAIN_CONV_UNET}, {RESIDUAL_ENCODER_UNET}"
        )
    return encoder + decoder_feature_map_size(sizes, features, decoder_convs, num_classes, deep_supervision)


# --- deep supervision ------------------------------------------------------------------------------


def deep_supervision_scales(pool_op_kernel_sizes: Sequence[Sequence[int]]) -> list[list[float]]:
    """Scale of each deep-supervision output relative to the patch: 1 / cumulative stride, coarsest dropped.

    >>> deep_supervision_scales([[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2]])
    [[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.5, 0.25, 0.25]]
    """
    cumulative = np.cumprod(np.array(pool_op_kernel_sizes, dtype=float), axis=0)
    return [[float(v) for v in 1 / row] for row in cumulative[:-1]]


def deep_supervision_weights(n_outputs: int, last: float = 0.0) -> list[float]:
    """nnU-Net's loss weight per deep-supervision output: 1/2^i, the lowest resolution ``last``, summing to 1.

    ``n_outputs`` is ``len(deep_supervision_scales(strides))``: every decoder output but the coarsest.
    nnU-Net sets the last weight to 0; with DDP and no torch.compile it uses 1e-6 instead, so that
    every head gets a gradient (``last=1e-6``).

    >>> deep_supervision_weights(4)
    [0.5714285714285714, 0.2857142857142857, 0.14285714285714285, 0.0]
    """
    weights = [1 / 2**i for i in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = last
    total = sum(weights)
    return [w / total for w in weights]
