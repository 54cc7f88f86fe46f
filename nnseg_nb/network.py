"""The U-Nets of nnU-Net's plans (dynamic-network-architectures 0.4.4): build one, or count its feature maps.

    arch = plans.configuration("3d_fullres").architecture
    in_channels, out_channels = network_channels(plans.configuration("3d_fullres"), dataset_json)  # 1, 3
    net = build_network(arch, in_channels, out_channels)  # PlainConvUNet, nnU-Net's init, deep supervision
    net(x)                                # (B, 1, Z, Y, X) -> list of (B, 3, ...) logits, highest res first
    net.decoder.deep_supervision = False  # inference: net(x) -> (B, 3, Z, Y, X)
    conv_feature_map_size(arch.network_class_name, arch.arch_kwargs, patch_size=(40, 56, 40), num_classes=3)
    # -> 19174400: output elements of every conv, transposed conv and the final head, batch size 1

``build_network`` is nnU-Net's ``get_network_from_plans`` with its weight init; the modules live in
``nnseg_nb.unet`` and carry dynamic-network-architectures' parameter names, so nnU-Net checkpoints
load into them (``net.load_state_dict(checkpoint["network_weights"])``) and back. torch is imported
only when a network is built: the planner imports this module for the count alone.

The planner sizes patches and batches with the count, nnU-Net's ``compute_conv_feature_map_size``
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
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nnseg_nb.dataset import LabelInfo

if TYPE_CHECKING:
    from torch import Generator, nn

    from nnseg_nb.plans import ArchitecturePlan, ConfigurationPlan

# Dotted names as nnU-Net writes them into plans (``network_class_name``).
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL_ENCODER_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def per_stage(value, n_stages: int, what: str) -> list:
    """One value per stage: dynamic-network-architectures accepts one value for all stages or a list.

    >>> per_stage(2, 3, "n_conv_per_stage"), per_stage([32, 64], 2, "features_per_stage")
    ([2, 2, 2], [32, 64])
    """
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n_stages
    value = list(value)
    if len(value) != n_stages:
        raise ValueError(f"{what} has {len(value)} entries, expected {n_stages} (one per stage)")
    return value


def per_stage_per_axis(value, n_stages: int, dim: int, what: str) -> list[list[int]]:
    """Kernel sizes or strides as one list per stage with one entry per axis (an int means all axes).

    >>> per_stage_per_axis([1, 2, [1, 2, 2]], 3, 3, "strides")
    [[1, 1, 1], [2, 2, 2], [1, 2, 2]]
    """
    return [
        [int(s)] * dim if isinstance(s, (int, np.integer)) else [int(n) for n in s]
        for s in per_stage(value, n_stages, what)
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
    features = per_stage(arch_kwargs["features_per_stage"], n_stages, "features_per_stage")
    strides = per_stage_per_axis(arch_kwargs["strides"], n_stages, len(patch_size), "strides")
    decoder_convs = per_stage(
        arch_kwargs["n_conv_per_stage_decoder"], n_stages - 1, "n_conv_per_stage_decoder"
    )
    sizes = stage_sizes(patch_size, strides)
    if network_class_name == PLAIN_CONV_UNET:
        convs = per_stage(arch_kwargs["n_conv_per_stage"], n_stages, "n_conv_per_stage")
        encoder = plain_encoder_feature_map_size(sizes, features, convs)
    elif network_class_name == RESIDUAL_ENCODER_UNET:
        blocks = per_stage(arch_kwargs["n_blocks_per_stage"], n_stages, "n_blocks_per_stage")
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


# --- the network itself ------------------------------------------------------------------------------


def build_network(
    architecture: ArchitecturePlan,
    num_input_channels: int,
    num_output_channels: int,
    deep_supervision: bool = True,
    generator: Generator | None = None,
) -> nn.Module:
    """A configuration's U-Net, initialized as nnU-Net does (``get_network_from_plans``).

    Args:
        architecture: the plans configuration's ``architecture``; its ``_kw_requires_import`` names
            (``torch.nn.modules.conv.Conv3d`` ...) become torch classes through ``unet.TORCH_LAYERS``.
        num_input_channels: image channels, plus the previous stage's foreground labels for a cascade
            (``network_channels``).
        num_output_channels: ``LabelInfo.num_segmentation_heads``: labels, or regions for region training.
        deep_supervision: return every decoder level's logits, highest resolution first (training);
            settable later as ``network.decoder.deep_supervision``.
        generator: for the weight draws (PyTorch's global generator if None, as in nnU-Net).

    >>> from nnseg_nb.plans import ArchitecturePlan
    >>> arch = ArchitecturePlan(PLAIN_CONV_UNET, {"n_stages": 2, "features_per_stage": [4, 8],
    ...     "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": 3, "strides": [1, 2],
    ...     "n_conv_per_stage": [2, 2], "n_conv_per_stage_decoder": [2], "conv_bias": True,
    ...     "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
    ...     "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    ...     "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
    ...     "nonlin_kwargs": {"inplace": True}}, ["conv_op", "norm_op", "dropout_op", "nonlin"])
    >>> net = build_network(arch, 1, 3, deep_supervision=False)
    >>> type(net).__name__, sum(p.numel() for p in net.parameters())
    ('PlainConvUNet', 1719)
    """
    from nnseg_nb import unet  # torch is imported here, not when the planner imports this module

    network_classes = {PLAIN_CONV_UNET: unet.PlainConvUNet, RESIDUAL_ENCODER_UNET: unet.ResidualEncoderUNet}
    name = architecture.network_class_name
    if name not in network_classes:
        raise ValueError(f"no network class {name!r}; known: {', '.join(network_classes)}")
    network_class = network_classes[name]
    kwargs = dict(architecture.arch_kwargs)
    for key in architecture.kw_requires_import:
        if kwargs.get(key) is not None:
            if kwargs[key] not in unet.TORCH_LAYERS:
                raise ValueError(
                    f"architecture {key} {kwargs[key]!r} is not a layer nnseg_nb knows; "
                    f"known: {', '.join(sorted(unet.TORCH_LAYERS))}"
                )
            kwargs[key] = unet.TORCH_LAYERS[kwargs[key]]
    accepted = set(inspect.signature(network_class).parameters) - {"input_channels", "num_classes"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"{network_class.__name__} does not take arch_kwargs {unknown}; it takes {sorted(accepted)}"
        )
    kwargs["deep_supervision"] = deep_supervision
    network = network_class(input_channels=num_input_channels, num_classes=num_output_channels, **kwargs)
    unet.init_weights(network, generator)
    return network


def network_channels(configuration: ConfigurationPlan, dataset_json: dict) -> tuple[int, int]:
    """Input and output channels of a configuration's network, as nnU-Net counts them.

    Inputs: one per image channel (``channel_names``, or a v1 ``modality``), plus, for a cascade stage
    (``previous_stage`` set), one per foreground label: the previous stage's one-hot segmentation.
    Outputs: ``LabelInfo.num_segmentation_heads`` (labels with background, or foreground regions; never
    the ignore label).

    >>> from nnseg_nb.plans import ConfigurationPlan
    >>> dataset_json = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "gm": 1, "wm": 2}}
    >>> network_channels(ConfigurationPlan(), dataset_json), network_channels(
    ...     ConfigurationPlan(previous_stage="3d_lowres"), dataset_json)
    ((1, 3), (3, 3))
    """
    labels = LabelInfo.from_dataset_json(dataset_json)
    image_channels = len(
        dataset_json["modality"] if "modality" in dataset_json else dataset_json["channel_names"]
    )
    cascade_channels = len(labels.foreground_labels) if configuration.previous_stage is not None else 0
    return image_channels + cascade_channels, labels.num_segmentation_heads
