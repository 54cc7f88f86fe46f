"""nnU-Net's training loss (Dice + cross-entropy, or Dice + BCE for regions) and its pseudo-Dice counts.

    labels = LabelInfo.from_dataset_json(dataset_json)
    loss_fn = build_loss(labels, batch_dice=plan.batch_dice, deep_supervision=True, n_outputs=4)
    loss = loss_fn(network(images), targets)     # lists, full resolution first -> one scalar
    tp, fp, fn = tp_fp_fn(outputs[0], targets[0], labels)   # per foreground class, summed over the batch

Labels (softmax, nnU-Net's ``DC_and_CE_loss``)::

    loss = CE(logits, target) + soft_dice_loss(softmax(logits)[:, 1:], onehot(target)[:, 1:])

The Dice term is nnU-Net's ``MemoryEfficientSoftDiceLoss``: per sample and class (or per class,
over the batch, with ``batch_dice``) ``dc = (2 I + 1e-5) / (P + G + 1e-5)``, with ``I`` the summed
product of probabilities and one-hot target, ``P`` the summed probabilities, ``G`` the summed target;
the loss is ``-mean(dc)``, so it is negative and the total goes below zero as training succeeds.
Background is left out of the Dice (``do_bg=False``) but not out of the CE.

Regions (sigmoid, ``DC_and_BCE_loss``): BCE with logits + the same Dice on ``sigmoid(logits)``,
every region kept (they are all foreground).

Ignore label: its voxels count in neither term. Labels: CE's ``ignore_index`` and a Dice mask (when a
batch holds no annotated voxel at all, CE is 0). Regions: the target's last channel marks them and
its complement masks both terms.

Deep supervision: the network returns one output per decoder level (full resolution first), the
augmentation one target per level; the loss is ``sum(w_i * loss_i)`` with
``network.deep_supervision_weights`` (1/2^i, the coarsest 0, normalized).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nnseg_nb.dataset import LabelInfo
from nnseg_nb.network import deep_supervision_weights

DICE_SMOOTH = 1e-5  # nnU-Net's _build_loss: keeps an absent class from dividing 0 by 0


# --- functional core --------------------------------------------------------------------------------


def soft_dice_loss(
    probabilities: torch.Tensor,
    target_onehot: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    batch_dice: bool = False,
    smooth: float = DICE_SMOOTH,
    ddp: bool = False,
) -> torch.Tensor:
    """``-mean(dc)`` of nnU-Net's ``MemoryEfficientSoftDiceLoss`` (after its nonlinearity and ``do_bg``).

    Args:
        probabilities: (B, C, *spatial) softmax or sigmoid outputs, only the channels to score.
        target_onehot: (B, C, *spatial) float 0/1, the same channels.
        loss_mask: (B, 1, *spatial) bool, True where a voxel counts (ignore label); None: all count.
        batch_dice: sum ``I``, ``P`` and ``G`` over the batch (and over DDP ranks) before the ratio,
            one Dice per class; otherwise one Dice per sample and class.
        ddp: with ``batch_dice``, also sum over all ranks of the process group (the gradient flows
            back to every rank's samples), as nnU-Net does under DDP.

    >>> p = torch.tensor([[[0.9, 0.1, 0.8]]])                  # (B=1, C=1, X=3)
    >>> round(float(soft_dice_loss(p, torch.tensor([[[1.0, 0.0, 1.0]]]))), 4)   # -2*1.7 / (1.8 + 2)
    -0.8947
    """
    spatial_axes = tuple(range(2, probabilities.ndim))
    if loss_mask is None:
        intersection = (probabilities * target_onehot).sum(spatial_axes, dtype=torch.float32)
        predicted = probabilities.sum(spatial_axes, dtype=torch.float32)
        with torch.no_grad():  # the target needs no gradient
            ground_truth = target_onehot.sum(spatial_axes, dtype=torch.float32)
    else:
        intersection = (probabilities * target_onehot * loss_mask).sum(spatial_axes, dtype=torch.float32)
        predicted = (probabilities * loss_mask).sum(spatial_axes, dtype=torch.float32)
        with torch.no_grad():
            ground_truth = (target_onehot * loss_mask).sum(spatial_axes, dtype=torch.float32)
    # each is (B, C) now
    if batch_dice:
        if ddp:
            intersection, predicted, ground_truth = (
                _sum_over_ranks(t) for t in (intersection, predicted, ground_truth)
            )
        intersection, predicted, ground_truth = (
            t.sum(0, dtype=torch.float32) for t in (intersection, predicted, ground_truth)
        )
    dice = (2 * intersection + smooth) / (ground_truth + predicted + float(smooth)).clamp_min(1e-8)
    return -dice.mean()


class _AllGatherWithGradient(torch.autograd.Function):
    """Stack a tensor from every rank (W, ...); the backward pass sums the gradients of all ranks
    and hands each rank the part for its own tensor (nnU-Net's ``AllGatherGrad``)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        gradient = gradient.contiguous()
        dist.all_reduce(gradient, op=dist.ReduceOp.SUM)
        return gradient[dist.get_rank()]


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    return _AllGatherWithGradient.apply(tensor).sum(0, dtype=torch.float32)


def label_onehot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, *spatial) label map -> (B, num_classes, *spatial) float32 one-hot.

    >>> label_onehot(torch.tensor([[[0, 2]]]), 3)[0].tolist()
    [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    """
    shape = (target.shape[0], num_classes, *target.shape[2:])
    return torch.zeros(shape, device=target.device, dtype=torch.float32).scatter_(1, target.long(), 1)


def _check_label_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if target.ndim != logits.ndim or target.shape[1] != 1 or target.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"a label target must be (B, 1, *spatial) matching logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )


# --- the two losses and deep supervision ------------------------------------------------------------


class DiceCELoss(nn.Module):
    """Softmax training (nnU-Net's ``DC_and_CE_loss`` with ``MemoryEfficientSoftDiceLoss``): CE + Dice.

    Args:
        batch_dice: the plan's ``batch_dice`` (see ``soft_dice_loss``).
        ignore_label: the ``ignore`` value of ``dataset.json``, or None.
        ddp: training runs under DistributedDataParallel (only changes anything with ``batch_dice``).

    Called with logits (B, C, *spatial) and a label map (B, 1, *spatial) (any integer or float dtype).

    >>> logits = torch.tensor([[[4.0, -4.0], [-4.0, 4.0]]])   # (B=1, C=2, X=2): confident and right
    >>> round(float(DiceCELoss(batch_dice=False)(logits, torch.tensor([[[0, 1]]]))), 4)   # CE + (-Dice)
    -0.9993
    """

    def __init__(self, batch_dice: bool, ignore_label: int | None = None, ddp: bool = False):
        super().__init__()
        self.batch_dice = batch_dice
        self.ignore_label = ignore_label
        self.ddp = ddp

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_label_target(logits, target)
        if self.ignore_label is None:
            mask, dice_target = None, target
        else:
            mask = target != self.ignore_label
            # ignore voxels become background for the one-hot; the mask removes them from every sum
            dice_target = torch.where(mask, target, 0)
        with torch.no_grad():
            onehot = label_onehot(dice_target, logits.shape[1])
        probabilities = torch.softmax(logits, 1)
        dice = soft_dice_loss(
            probabilities[:, 1:], onehot[:, 1:], mask, self.batch_dice, DICE_SMOOTH, self.ddp
        )
        if mask is not None and not mask.any():
            return dice  # nothing annotated: CE would be 0/0, nnU-Net leaves it out
        ignore_index = -100 if self.ignore_label is None else self.ignore_label  # -100: torch's "none"
        ce = F.cross_entropy(logits, target[:, 0].long(), ignore_index=ignore_index)
        return ce + dice


class DiceBCELoss(nn.Module):
    """Region training (nnU-Net's ``DC_and_BCE_loss``): BCE with logits + Dice on ``sigmoid(logits)``.

    Args:
        batch_dice: the plan's ``batch_dice``.
        has_ignore_label: the target's last channel marks ignored voxels (``SegToRegions`` puts it there).
        ddp: training runs under DistributedDataParallel.

    Called with logits (B, R, *spatial) and a bool or 0/1 target (B, R, *spatial), or (B, R + 1, *spatial)
    with the ignore channel. With an ignore label nnU-Net divides the BCE summed over voxels *and*
    regions by the number of annotated voxels (not voxels x regions), so that BCE is R times a mean;
    we keep that, since it sets the balance between the two terms.

    >>> logits = torch.tensor([[[4.0, -4.0]]])                # (B=1, R=1, X=2): confident and right
    >>> round(float(DiceBCELoss(batch_dice=False)(logits, torch.tensor([[[True, False]]]))), 4)
    -0.9639
    """

    def __init__(self, batch_dice: bool, has_ignore_label: bool = False, ddp: bool = False):
        super().__init__()
        self.batch_dice = batch_dice
        self.has_ignore_label = has_ignore_label
        self.ddp = ddp

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n_channels = logits.shape[1] + self.has_ignore_label
        if target.shape != (logits.shape[0], n_channels, *logits.shape[2:]):
            raise ValueError(
                f"a region target must be (B, {n_channels}, *spatial) for logits {tuple(logits.shape)}"
                f"{' plus the ignore channel' if self.has_ignore_label else ''}, got {tuple(target.shape)}"
            )
        if self.has_ignore_label:
            ignored = target[:, -1:]
            mask = ~ignored if ignored.dtype == torch.bool else (1 - ignored).bool()
            target = target[:, :-1]
        else:
            mask = None
        regions = target.float()
        dice = soft_dice_loss(torch.sigmoid(logits), regions, mask, self.batch_dice, DICE_SMOOTH, self.ddp)
        if mask is None:
            bce = F.binary_cross_entropy_with_logits(logits, regions)
        else:
            per_voxel = F.binary_cross_entropy_with_logits(logits, regions, reduction="none")
            bce = (per_voxel * mask).sum() / torch.clip(mask.sum(), min=1e-8)
        return bce + dice


class DeepSupervisionLoss(nn.Module):
    """``sum(weights[i] * loss(outputs[i], targets[i]))``, skipping zero weights (``DeepSupervisionWrapper``).

    >>> ds = DeepSupervisionLoss(lambda o, t: (o - t).abs().sum(), [0.75, 0.25])
    >>> float(ds([torch.tensor(1.0), torch.tensor(2.0)], [torch.tensor(0.0), torch.tensor(0.0)]))
    1.25
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float]):
        super().__init__()
        if not any(w != 0 for w in weights):
            raise ValueError(f"at least one deep-supervision weight must be non-zero, got {list(weights)}")
        self.loss = loss
        self.weights = tuple(float(w) for w in weights)

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(outputs) != len(self.weights) or len(targets) != len(self.weights):
            raise ValueError(
                f"deep supervision expects {len(self.weights)} outputs and targets, "
                f"got {len(outputs)} and {len(targets)}"
            )
        return sum(w * self.loss(o, t) for w, o, t in zip(self.weights, outputs, targets) if w != 0)


def build_loss(
    label_info: LabelInfo,
    batch_dice: bool,
    deep_supervision: bool,
    n_outputs: int,
    ddp: bool = False,
    compiled: bool = False,
) -> nn.Module:
    """nnU-Net's training loss for a dataset and plan (``nnUNetTrainer._build_loss``).

    Args:
        label_info: the dataset's labels: regions pick ``DiceBCELoss``, else ``DiceCELoss``; the
            ignore label is masked in both.
        batch_dice: the configuration's ``batch_dice`` from the plans.
        deep_supervision: wrap in ``DeepSupervisionLoss`` (nnU-Net trains with it on).
        n_outputs: outputs supervised, ``len(network.deep_supervision_scales(strides))``; unused
            without deep supervision.
        ddp: DistributedDataParallel training: ``batch_dice`` sums over all ranks, and the coarsest
            output gets weight 1e-6 instead of 0 (so every head has a gradient), unless ``compiled``.
        compiled: the network is ``torch.compile``-d (nnU-Net keeps the 0 weight then).

    >>> labels = LabelInfo.from_dataset_json({"labels": {"background": 0, "gm": 1, "wm": 2}})
    >>> build_loss(labels, batch_dice=False, deep_supervision=True, n_outputs=3).weights
    (0.6666666666666666, 0.3333333333333333, 0.0)
    """
    if label_info.has_regions:
        loss = DiceBCELoss(batch_dice, has_ignore_label=label_info.ignore_label is not None, ddp=ddp)
    else:
        loss = DiceCELoss(batch_dice, ignore_label=label_info.ignore_label, ddp=ddp)
    if not deep_supervision:
        return loss
    last = 1e-6 if ddp and not compiled else 0.0
    return DeepSupervisionLoss(loss, deep_supervision_weights(n_outputs, last=last))


# --- online evaluation (the pseudo Dice) -------------------------------------------------------------


@torch.no_grad()
def tp_fp_fn(
    output_logits: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor | Sequence[torch.Tensor],
    label_info: LabelInfo,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True positives, false positives, false negatives per foreground class, summed over the batch.

    What ``nnUNetTrainer.validation_step`` counts for the pseudo Dice ``2tp / (2tp + fp + fn)``: the
    prediction is the argmax (labels) or ``sigmoid > 0.5`` per region; ignored voxels are not counted.

    Args:
        output_logits: (B, C, *spatial) logits, or the deep-supervision list (its first, full-resolution
            entry is used).
        target: the matching label map (B, 1, *spatial) or region target (B, R[+1], *spatial), or list.
        label_info: the dataset's labels.

    Returns:
        tp, fp, fn: float32 tensors of shape (foreground classes,) or (regions,), on the logits' device.

    >>> labels = LabelInfo.from_dataset_json({"labels": {"background": 0, "a": 1, "b": 2}})
    >>> logits = torch.tensor([[[5.0, 0, 0, 0], [0, 5.0, 5.0, 0], [0, 0, 0, 5.0]]])   # predicts 0 1 1 2
    >>> [t.tolist() for t in tp_fp_fn(logits, torch.tensor([[[0, 1, 2, 2]]]), labels)]
    [[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    """
    if not isinstance(output_logits, torch.Tensor):
        output_logits, target = output_logits[0], target[0]
    spatial = output_logits.shape[2:]
    if label_info.has_regions:
        predicted = torch.sigmoid(output_logits) > 0.5
        if label_info.ignore_label is not None:
            mask, target = ~target[:, -1:].bool(), target[:, :-1]
        else:
            mask = torch.ones((1, 1, *spatial), dtype=torch.bool, device=output_logits.device)
        truth = target.bool()
    else:
        _check_label_target(output_logits, target)
        classes = torch.arange(1, output_logits.shape[1], device=output_logits.device)
        classes = classes.view(1, -1, *[1] * len(spatial))  # (1, C - 1, 1, ...): foreground only
        predicted = output_logits.argmax(1, keepdim=True) == classes
        truth = target == classes
        if label_info.ignore_label is not None:
            mask = target != label_info.ignore_label
        else:
            mask = torch.ones((1, 1, *spatial), dtype=torch.bool, device=output_logits.device)
    axes = (0, *range(2, predicted.ndim))
    # counted exactly as integers; nnU-Net sums 0/1 floats, which is the same number
    tp = (predicted & truth & mask).sum(axes).float()
    fp = (predicted & ~truth & mask).sum(axes).float()
    fn = (~predicted & truth & mask).sum(axes).float()
    return tp, fp, fn
