"""nnU-Net's two U-Nets as torch modules, with dynamic-network-architectures' (0.4.x) names.

    net = PlainConvUNet(input_channels=1, num_classes=3, deep_supervision=True, **arch_kwargs)
    init_weights(net)                      # nnU-Net's init: He-normal convs, zero biases
    outputs = net(x)                       # x (B, 1, Z, Y, X) -> [(B, 3, Z, Y, X), (B, 3, Z/2, ...), ...]
    net.decoder.deep_supervision = False   # what inference does
    logits = net(x)                        # (B, 3, Z, Y, X), logits (no softmax)

``arch_kwargs`` are the plans' with classes for the layer names (``TORCH_LAYERS``);
``network.build_network(architecture, ...)`` does all of this from a plans configuration.

Both networks are an encoder, which returns the output of every resolution stage (the skips), and
the same ``UNetDecoder``, which climbs back up: a transposed conv doubles the size (by that stage's
stride), the skip is concatenated, convs merge the two, and a 1x1 conv head gives logits at that
level. With deep supervision every level's logits come out, highest resolution first.

- ``PlainConvUNet``: stage s is ``n_conv_per_stage[s]`` conv layers, the first one strided (no pooling).
- ``ResidualEncoderUNet``: a stem conv layer, then ``n_blocks_per_stage[s]`` residual blocks
  (``BasicBlockD``, ResNet-D: an average pool and a 1x1 conv on the skip path when the block changes
  size or width).

A conv layer is conv -> (dropout) -> norm -> nonlin; nnU-Net's plans make it Conv, InstanceNorm
(eps 1e-5, affine) and LeakyReLU(0.01, inplace), with no dropout.

The constructors take dynamic-network-architectures' arguments and the modules keep its attribute
names, so state dicts are interchangeable key for key: the ``network_weights`` of an nnU-Net v2
checkpoint load here with ``strict=True``, and ours load into nnU-Net's classes. Two quirks of that
layout are kept for this reason: every conv layer registers its layers twice (``conv``/``norm`` and
again in ``all_modules``, the ``nn.Sequential`` that runs them), and the decoder holds the encoder
(``decoder.encoder``). The parameters are shared, so ``parameters()`` yields each once; only the
state dict lists them under two or three keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnseg_nb.network import per_stage, per_stage_per_axis

# The layers the plans may name (``_kw_requires_import``), under both spellings nnU-Net writes: the
# class's own module path (``torch.nn.modules.conv.Conv3d``) and the short one (``torch.nn.LeakyReLU``).
_LAYERS = (
    nn.Conv2d,
    nn.Conv3d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.LeakyReLU,
    nn.ReLU,
    nn.PReLU,
    nn.GELU,
    nn.ELU,
)
TORCH_LAYERS: dict[str, type[nn.Module]] = {
    **{f"{layer.__module__}.{layer.__name__}": layer for layer in _LAYERS},
    **{f"torch.nn.{layer.__name__}": layer for layer in _LAYERS},
}

_TRANSPOSED_CONV = {nn.Conv2d: nn.ConvTranspose2d, nn.Conv3d: nn.ConvTranspose3d}
_AVG_POOL = {nn.Conv2d: nn.AvgPool2d, nn.Conv3d: nn.AvgPool3d}


@dataclass
class ConvOps:
    """The layers every conv layer of a network is made of: the plans' ``conv_op``, ``norm_op`` ...

    ``nonlin_first`` puts the nonlinearity before the norm (a ``PlainConvUNet`` option; off in nnU-Net).
    A None for a ``*_kwargs`` means no arguments.
    """

    conv_op: type[nn.Module]
    conv_bias: bool = False
    norm_op: type[nn.Module] | None = None
    norm_op_kwargs: dict | None = None
    dropout_op: type[nn.Module] | None = None
    dropout_op_kwargs: dict | None = None
    nonlin: type[nn.Module] | None = None
    nonlin_kwargs: dict | None = None
    nonlin_first: bool = False

    def __post_init__(self):
        if self.conv_op not in _TRANSPOSED_CONV:
            raise ValueError(f"conv_op must be torch.nn.Conv2d or torch.nn.Conv3d, got {self.conv_op!r}")
        self.norm_op_kwargs = dict(self.norm_op_kwargs or {})
        self.dropout_op_kwargs = dict(self.dropout_op_kwargs or {})
        self.nonlin_kwargs = dict(self.nonlin_kwargs or {})

    @property
    def dim(self) -> int:
        return 2 if self.conv_op is nn.Conv2d else 3

    @property
    def transposed_conv_op(self) -> type[nn.Module]:
        return _TRANSPOSED_CONV[self.conv_op]

    @property
    def avg_pool_op(self) -> type[nn.Module]:
        return _AVG_POOL[self.conv_op]


def _as_list(value: int | list[int], dim: int) -> list[int]:
    return [int(value)] * dim if isinstance(value, int) else [int(v) for v in value]


# --- conv layers ------------------------------------------------------------------------------------


class ConvDropoutNormReLU(nn.Module):
    """One conv layer: conv ("same" padding) -> dropout -> norm -> nonlin; each but the conv optional.

    ``dropout=False`` / ``nonlin=False`` leave that layer out even if ``ops`` has one (the second conv
    of a residual block and its skip projection have neither). ``bias`` overrides ``ops.conv_bias``.

    >>> layer = ConvDropoutNormReLU(ConvOps(nn.Conv2d, True, nn.InstanceNorm2d, {"affine": True}), 1, 4, 3, 2)
    >>> layer(torch.zeros(1, 1, 9, 8)).shape, [name for name, _ in layer.state_dict().items()][:2]
    (torch.Size([1, 4, 5, 4]), ['conv.weight', 'conv.bias'])
    """

    def __init__(
        self,
        ops: ConvOps,
        input_channels: int,
        output_channels: int,
        kernel_size: int | list[int],
        stride: int | list[int],
        dropout: bool = True,
        nonlin: bool = True,
        bias: bool | None = None,
    ):
        super().__init__()
        kernel_size, stride = _as_list(kernel_size, ops.dim), _as_list(stride, ops.dim)
        self.conv = ops.conv_op(
            input_channels,
            output_channels,
            kernel_size,
            stride,
            padding=[(k - 1) // 2 for k in kernel_size],
            bias=ops.conv_bias if bias is None else bias,
        )
        layers = [self.conv]
        if dropout and ops.dropout_op is not None:
            self.dropout = ops.dropout_op(**ops.dropout_op_kwargs)
            layers.append(self.dropout)
        if ops.norm_op is not None:
            self.norm = ops.norm_op(output_channels, **ops.norm_op_kwargs)
            layers.append(self.norm)
        if nonlin and ops.nonlin is not None:
            self.nonlin = ops.nonlin(**ops.nonlin_kwargs)
            layers.append(self.nonlin)
            if ops.nonlin_first and ops.norm_op is not None:
                layers[-1], layers[-2] = layers[-2], layers[-1]
        self.all_modules = nn.Sequential(*layers)  # the same layers again: their second state-dict name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


class StackedConvBlocks(nn.Module):
    """``num_convs`` conv layers to ``output_channels``; only the first has ``initial_stride``."""

    def __init__(
        self,
        num_convs: int,
        ops: ConvOps,
        input_channels: int,
        output_channels: int,
        kernel_size: int | list[int],
        initial_stride: int | list[int],
    ):
        super().__init__()
        self.convs = nn.Sequential(
            ConvDropoutNormReLU(ops, input_channels, output_channels, kernel_size, initial_stride),
            *[
                ConvDropoutNormReLU(ops, output_channels, output_channels, kernel_size, 1)
                for _ in range(num_convs - 1)
            ],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class BasicBlockD(nn.Module):
    """A ResNet-D residual block: ``nonlin(conv2(conv1(x)) + skip(x))``.

    conv1 carries the stride; conv2 has a norm but no nonlinearity. The skip path is the identity,
    or an average pool (kernel = stride) when strided, then a 1x1 conv (no bias) and a norm when the
    width changes.
    """

    def __init__(
        self,
        ops: ConvOps,
        input_channels: int,
        output_channels: int,
        kernel_size: int | list[int],
        stride: int | list[int],
    ):
        super().__init__()
        stride = _as_list(stride, ops.dim)
        self.conv1 = ConvDropoutNormReLU(ops, input_channels, output_channels, kernel_size, stride)
        self.conv2 = ConvDropoutNormReLU(
            ops, output_channels, output_channels, kernel_size, 1, dropout=False, nonlin=False
        )
        self.nonlin2 = ops.nonlin(**ops.nonlin_kwargs) if ops.nonlin is not None else nn.Identity()
        skip = []
        if any(s != 1 for s in stride):
            skip.append(ops.avg_pool_op(stride, stride))
        if input_channels != output_channels:
            skip.append(
                ConvDropoutNormReLU(
                    ops, input_channels, output_channels, 1, 1, dropout=False, nonlin=False, bias=False
                )
            )
        self.skip = nn.Sequential(*skip) if skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        out += self.skip(x)
        return self.nonlin2(out)


class StackedResidualBlocks(nn.Module):
    """``n_blocks`` ``BasicBlockD`` to ``output_channels``; only the first has ``initial_stride``."""

    def __init__(
        self,
        n_blocks: int,
        ops: ConvOps,
        input_channels: int,
        output_channels: int,
        kernel_size: int | list[int],
        initial_stride: int | list[int],
    ):
        super().__init__()
        self.blocks = nn.Sequential(
            BasicBlockD(ops, input_channels, output_channels, kernel_size, initial_stride),
            *[
                BasicBlockD(ops, output_channels, output_channels, kernel_size, 1)
                for _ in range(n_blocks - 1)
            ],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# --- encoders and the decoder -------------------------------------------------------------------------


class PlainConvEncoder(nn.Module):
    """Stages of plain conv layers; returns every stage's output (the skips, bottleneck last)."""

    def __init__(
        self,
        ops: ConvOps,
        input_channels: int,
        features_per_stage: list[int],
        kernel_sizes: list[list[int]],
        strides: list[list[int]],
        n_conv_per_stage: list[int],
    ):
        super().__init__()
        stages = []
        for features, kernel, stride, n in zip(features_per_stage, kernel_sizes, strides, n_conv_per_stage):
            convs = StackedConvBlocks(n, ops, input_channels, features, kernel, stride)
            # the one-element Sequential is dynamic-network-architectures' (its slot for a pooling layer)
            stages.append(nn.Sequential(convs))
            input_channels = features
        self.stages = nn.Sequential(*stages)
        # what the decoder needs to mirror this encoder
        self.ops, self.output_channels = ops, list(features_per_stage)
        self.kernel_sizes, self.strides = kernel_sizes, strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class ResidualEncoder(nn.Module):
    """A stem conv layer (stride 1), then stages of residual blocks; returns every stage's output."""

    def __init__(
        self,
        ops: ConvOps,
        input_channels: int,
        features_per_stage: list[int],
        kernel_sizes: list[list[int]],
        strides: list[list[int]],
        n_blocks_per_stage: list[int],
        stem_channels: int | None = None,
    ):
        super().__init__()
        stem_channels = features_per_stage[0] if stem_channels is None else stem_channels
        self.stem = StackedConvBlocks(1, ops, input_channels, stem_channels, kernel_sizes[0], 1)
        input_channels, stages = stem_channels, []
        for features, kernel, stride, n_blocks in zip(
            features_per_stage, kernel_sizes, strides, n_blocks_per_stage
        ):
            stages.append(StackedResidualBlocks(n_blocks, ops, input_channels, features, kernel, stride))
            input_channels = features
        self.stages = nn.Sequential(*stages)
        self.ops, self.output_channels = ops, list(features_per_stage)
        self.kernel_sizes, self.strides = kernel_sizes, strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """From the bottleneck up: transposed conv, concatenate the skip, conv layers, 1x1 head.

    Level k (0 = lowest) works at the size of encoder stage ``n - 2 - k`` with its width and kernel.
    Every level has a head, so weights load with or without deep supervision; ``deep_supervision``
    (an attribute, set freely) decides whether all heads run and a list comes out, highest resolution
    first, or only the top head runs and its logits come out.
    """

    def __init__(
        self,
        encoder: PlainConvEncoder | ResidualEncoder,
        num_classes: int,
        n_conv_per_stage: list[int],
        deep_supervision: bool,
    ):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.encoder = encoder  # kept as dynamic-network-architectures keeps it: decoder.encoder.* keys
        self.num_classes = num_classes
        ops, features = encoder.ops, encoder.output_channels
        stages, transpconvs, seg_layers = [], [], []
        for level in range(len(features) - 1):
            below, skip = features[-1 - level], features[-2 - level]
            stride = encoder.strides[-1 - level]
            transpconvs.append(ops.transposed_conv_op(below, skip, stride, stride, bias=ops.conv_bias))
            kernel = encoder.kernel_sizes[-2 - level]
            stages.append(StackedConvBlocks(n_conv_per_stage[level], ops, 2 * skip, skip, kernel, 1))
            seg_layers.append(ops.conv_op(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x, outputs = skips[-1], []
        top = len(self.stages) - 1
        for level, (up, stage, head) in enumerate(zip(self.transpconvs, self.stages, self.seg_layers)):
            x = stage(torch.cat((up(x), skips[-2 - level]), dim=1))  # (B, 2 * skip width, *skip size)
            if self.deep_supervision or level == top:
                outputs.append(head(x))
        outputs.reverse()  # highest resolution first
        return outputs if self.deep_supervision else outputs[0]


# --- the two networks -----------------------------------------------------------------------------------


class PlainConvUNet(nn.Module):
    """nnU-Net's default U-Net; arguments as in dynamic-network-architectures (the plans' arch_kwargs).

    An int for a per-stage argument means the same for every stage; a kernel size or stride may be
    an int (all axes) or one per axis.

    >>> net = PlainConvUNet(1, 3, [4, 8, 16], nn.Conv2d, 3, [1, 2, 2], 2, 3, 2, True, nn.InstanceNorm2d,
    ...                     {"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, deep_supervision=True)
    >>> [tuple(o.shape) for o in net(torch.zeros(2, 1, 16, 12))]
    [(2, 3, 16, 12), (2, 3, 8, 6)]
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: int | list[int],
        conv_op: type[nn.Module],
        kernel_sizes: int | list,
        strides: int | list,
        n_conv_per_stage: int | list[int],
        num_classes: int,
        n_conv_per_stage_decoder: int | list[int],
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        nonlin_first: bool = False,
    ):
        super().__init__()
        ops = ConvOps(
            conv_op,
            conv_bias,
            norm_op,
            norm_op_kwargs,
            dropout_op,
            dropout_op_kwargs,
            nonlin,
            nonlin_kwargs,
            nonlin_first,
        )
        self.encoder = PlainConvEncoder(
            ops,
            input_channels,
            per_stage(features_per_stage, n_stages, "features_per_stage"),
            per_stage_per_axis(kernel_sizes, n_stages, ops.dim, "kernel_sizes"),
            per_stage_per_axis(strides, n_stages, ops.dim, "strides"),
            per_stage(n_conv_per_stage, n_stages, "n_conv_per_stage"),
        )
        decoder_convs = per_stage(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")
        self.decoder = UNetDecoder(self.encoder, num_classes, decoder_convs, deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))


class ResidualEncoderUNet(nn.Module):
    """The ResEnc presets' U-Net: a residual encoder (``BasicBlockD``) and the plain decoder.

    Arguments as in dynamic-network-architectures (the plans' arch_kwargs); only ``BasicBlockD``
    blocks (its ``block`` and ``bottleneck_channels`` arguments are not taken).

    >>> net = ResidualEncoderUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], [1, 2, 2], 2, 1, True,
    ...                           nn.InstanceNorm3d, {"affine": True}, nonlin=nn.LeakyReLU)
    >>> tuple(net(torch.zeros(1, 1, 8, 8, 8)).shape)
    (1, 2, 8, 8, 8)
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: int | list[int],
        conv_op: type[nn.Module],
        kernel_sizes: int | list,
        strides: int | list,
        n_blocks_per_stage: int | list[int],
        num_classes: int,
        n_conv_per_stage_decoder: int | list[int],
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        stem_channels: int | None = None,
    ):
        super().__init__()
        ops = ConvOps(
            conv_op, conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs
        )
        self.encoder = ResidualEncoder(
            ops,
            input_channels,
            per_stage(features_per_stage, n_stages, "features_per_stage"),
            per_stage_per_axis(kernel_sizes, n_stages, ops.dim, "kernel_sizes"),
            per_stage_per_axis(strides, n_stages, ops.dim, "strides"),
            per_stage(n_blocks_per_stage, n_stages, "n_blocks_per_stage"),
            stem_channels,
        )
        decoder_convs = per_stage(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")
        self.decoder = UNetDecoder(self.encoder, num_classes, decoder_convs, deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))


# --- initialization ---------------------------------------------------------------------------------------

_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def init_weights(network: nn.Module, generator: torch.Generator | None = None) -> None:
    """nnU-Net's initialization, in place: ``InitWeights_He(1e-2)`` and ``init_last_bn_before_add_to_0``.

    Every conv and transposed-conv weight is drawn He-normal for a LeakyReLU of slope 0.01 (std
    ``sqrt(2 / (1 + 0.01**2) / fan_in)``) and its bias set to 0; norms keep PyTorch's (weight 1,
    bias 0), except the last norm of each residual block: weight and bias 0, so every block starts
    as the identity (its skip path). Draws come from ``generator`` (PyTorch's global one if None).

    >>> net = ResidualEncoderUNet(1, 2, [4, 8], nn.Conv2d, 3, [1, 2], 1, 2, 1, True, nn.InstanceNorm2d,
    ...                           {"affine": True}, nonlin=nn.LeakyReLU)
    >>> init_weights(net, torch.Generator().manual_seed(0))
    >>> last_norm = net.encoder.stages[1].blocks[0].conv2.norm
    >>> int(last_norm.weight.count_nonzero()), int(net.decoder.seg_layers[0].bias.count_nonzero())
    (0, 0)
    """
    for module in network.modules():
        if isinstance(module, _CONVS):
            nn.init.kaiming_normal_(module.weight, a=1e-2, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        last_norm = getattr(module.conv2, "norm", None) if isinstance(module, BasicBlockD) else None
        if getattr(last_norm, "weight", None) is not None:  # a norm without affine has nothing to zero
            nn.init.zeros_(last_norm.weight)
            nn.init.zeros_(last_norm.bias)
