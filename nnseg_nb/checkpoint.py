"""Training checkpoints and logs in nnU-Net's format: a run we write resumes in nnunetv2, and back.

    log = TrainingLog()
    log.add_epoch(train_loss=0.9, val_loss=0.8, dice_per_class=[0.5, 0.7], lr=0.01, start=t0, end=t1)
    log.ema_fg_dice[-1]                      # 0.6: the first EMA is the epoch's mean pseudo Dice
    save_checkpoint(fold_folder / "checkpoint_latest.pth", checkpoint_dict(...))   # atomic
    checkpoint = load_checkpoint(fold_folder / "checkpoint_latest.pth")
    checkpoint["current_epoch"]              # epochs done (nnU-Net stores epoch + 1)

A checkpoint holds nnU-Net's keys (``nnUNetTrainer.save_checkpoint``): ``network_weights`` (the plain
module's state dict: no ``module.`` or ``_orig_mod.`` prefixes), ``optimizer_state``, ``grad_scaler_state``
(None without a scaler), ``logging`` (the lists of nnU-Net's ``LocalLogger``), ``_best_ema``,
``current_epoch``, ``init_args`` (plans, configuration, fold, dataset_json, device), ``trainer_name`` and
``inference_allowed_mirroring_axes``; plus ``nnseg_nb`` (our settings and seed), which nnunetv2 ignores.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field

import numpy as np
import torch

from nnseg_nb.io import SafeUnpickler
from nnseg_nb.utils import atomic_write_bytes

CHECKPOINT_KEYS = (
    "network_weights",
    "optimizer_state",
    "grad_scaler_state",
    "logging",
    "_best_ema",
    "current_epoch",
    "init_args",
    "trainer_name",
    "inference_allowed_mirroring_axes",
)
EMA_MOMENTUM = 0.9  # nnU-Net: ema = 0.9 * ema + 0.1 * mean pseudo Dice


@dataclass
class TrainingLog:
    """nnU-Net's per-epoch lists (``LocalLogger.my_fantastic_logging``): one entry per finished epoch."""

    mean_fg_dice: list[float] = field(default_factory=list)
    ema_fg_dice: list[float] = field(default_factory=list)
    dice_per_class_or_region: list[list[float]] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    epoch_start_timestamps: list[float] = field(default_factory=list)
    epoch_end_timestamps: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Epochs logged completely (nnU-Net's logger infers it the same way: the shortest list)."""
        return min(len(values) for values in self.to_json().values())

    def add_epoch(
        self,
        train_loss: float,
        val_loss: float,
        dice_per_class: list[float],
        lr: float,
        start: float,
        end: float,
        ema_momentum: float = EMA_MOMENTUM,
    ) -> None:
        """Log one epoch; the mean pseudo Dice ignores NaN classes and the EMA starts at the first value.

        >>> log = TrainingLog()
        >>> log.add_epoch(1.0, 1.0, [0.4, float("nan")], 0.01, 0.0, 1.0)
        >>> log.add_epoch(0.9, 0.9, [0.5, 0.7], 0.009, 1.0, 2.0)
        >>> log.mean_fg_dice, [round(v, 4) for v in log.ema_fg_dice]
        ([0.4, 0.6], [0.4, 0.42])
        """
        finite = [d for d in dice_per_class if not np.isnan(d)]
        mean = float(np.mean(finite)) if finite else float("nan")  # nnU-Net's nanmean
        ema = (
            mean if not self.ema_fg_dice else ema_momentum * self.ema_fg_dice[-1] + (1 - ema_momentum) * mean
        )
        self.mean_fg_dice.append(mean)
        self.ema_fg_dice.append(ema)
        self.dice_per_class_or_region.append([float(d) for d in dice_per_class])
        self.train_losses.append(float(train_loss))
        self.val_losses.append(float(val_loss))
        self.lrs.append(float(lr))
        self.epoch_start_timestamps.append(float(start))
        self.epoch_end_timestamps.append(float(end))

    def epoch_record(self, epoch: int) -> dict:
        """One epoch as a flat dict (a line of ``training_log.jsonl``)."""
        record = {"epoch": epoch}
        for key, values in self.to_json().items():
            record[key] = values[epoch]
        record["epoch_seconds"] = record["epoch_end_timestamps"] - record["epoch_start_timestamps"]
        return record

    def truncated(self, epochs: int) -> TrainingLog:
        """The log of the first ``epochs`` epochs (a checkpoint saved mid-run may be followed by more lines)."""
        return TrainingLog(**{key: list(values[:epochs]) for key, values in self.to_json().items()})

    def to_json(self) -> dict[str, list]:
        """nnU-Net's ``logging`` dict, in its key order."""
        return {
            "mean_fg_dice": self.mean_fg_dice,
            "ema_fg_dice": self.ema_fg_dice,
            "dice_per_class_or_region": self.dice_per_class_or_region,
            "train_losses": self.train_losses,
            "val_losses": self.val_losses,
            "lrs": self.lrs,
            "epoch_start_timestamps": self.epoch_start_timestamps,
            "epoch_end_timestamps": self.epoch_end_timestamps,
        }

    @classmethod
    def from_json(cls, data: dict) -> TrainingLog:
        missing = [key for key in cls().to_json() if key not in data]
        if missing:
            raise ValueError(f"training log without {', '.join(missing)}")
        return cls(**{key: [_plain(v) for v in data[key]] for key in cls().to_json()})


def _plain(value):
    # nnU-Net logs numpy floats and lists of them; keep plain Python numbers
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(v) for v in value]
    return float(value)


def plain_module(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside DistributedDataParallel and torch.compile wrappers (whose weights we save)."""
    if isinstance(network, torch.nn.parallel.DistributedDataParallel):
        network = network.module
    return getattr(network, "_orig_mod", network)


def checkpoint_dict(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler | None,
    log: TrainingLog,
    best_ema: float | None,
    epochs_done: int,
    init_args: dict,
    trainer_name: str,
    mirror_axes: tuple[int, ...],
    extra: dict | None = None,
) -> dict:
    """The dict ``nnUNetTrainer.save_checkpoint`` writes (``current_epoch`` = epochs done)."""
    return {
        "network_weights": plain_module(network).state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": grad_scaler.state_dict() if grad_scaler is not None else None,
        "logging": log.to_json(),
        "_best_ema": best_ema,
        "current_epoch": epochs_done,
        "init_args": init_args,
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": tuple(mirror_axes),
        "nnseg_nb": extra or {},
    }


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# numpy types nnU-Net's checkpoints hold (the training log, the best EMA): allowed by name, nothing else
_NUMPY_DTYPES = "float64 float32 float16 int64 int32 int16 int8 uint8 uint16 bool".split()
# what torch.save writes for tensors, modules' state and devices (torch < 2.6 only: see _OldTorchPickle)
_TORCH_GLOBALS = {
    ("torch._utils", name)
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter")
} | {
    ("torch", "device"),
    ("torch", "Size"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"),
}


def _numpy_safe_globals() -> list:
    """numpy's reconstructors under numpy 1's and numpy 2's names (a checkpoint may come from either numpy),
    the dtype classes: ``torch.serialization.safe_globals`` entries."""
    multiarray = (getattr(np, "_core", None) or np.core).multiarray
    allowed: list = [np.ndarray, np.dtype, *(type(np.dtype(t)) for t in _NUMPY_DTYPES)]
    for function in (multiarray.scalar, multiarray._reconstruct):
        allowed += [(function, f"numpy.{core}.multiarray.{function.__name__}") for core in ("core", "_core")]
    return allowed


class _OldTorchPickle:
    """A ``pickle_module`` for ``torch.load`` on torch < 2.6, whose weights-only loader cannot allow numpy's
    names: the same rule (tensors, numpy values and plain values, nothing that runs code) by our unpickler."""

    class Unpickler(SafeUnpickler):
        def find_class(self, module: str, name: str):
            is_dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
            if (module, name) in _TORCH_GLOBALS or is_dtype:
                return pickle.Unpickler.find_class(self, module, name)
            return super().find_class(module, name)

    @staticmethod
    def load(file, **pickle_options):  # torch's legacy (pre-zip) format
        return _OldTorchPickle.Unpickler(file, **pickle_options).load()


def _torch_load(path: str | os.PathLike, map_location: str | torch.device) -> dict:
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 6):  # safe_globals takes names
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_OldTorchPickle)


def _reason(error: Exception) -> str:
    """The line of an error that says why: torch's weights-only error leads with advice, then the reason.

    >>> _reason(ValueError("Weights only load failed. ...\\n\\tWeightsUnpickler error: Unsupported global: GLOBAL "
    ...                    "x.A was not an allowed global by default. Please use ..."))
    'Unsupported global: GLOBAL x.A was not an allowed global by default'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    reason = next((line for line in lines if line.startswith("WeightsUnpickler error: ")), lines[0])
    return reason.removeprefix("WeightsUnpickler error: ").split(". Please use")[0]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by nnU-Net v2 or nnseg_nb, read with ``torch.load(weights_only=True)``.

    nnU-Net's checkpoints hold numpy scalars and arrays (the training log, the best EMA), which PyTorch's safe
    loader refuses by default; they are allowed here by name (numpy 1's and 2's) and nothing else is, so a
    checkpoint cannot run code. On torch < 2.6, which cannot allow names, the same rule is kept by
    :class:`nnseg_nb.io.SafeUnpickler`. A checkpoint that needs more fails with a message naming the file.
    """
    try:
        checkpoint = _torch_load(path, map_location)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except Exception as e:  # pickle.UnpicklingError and friends: say which file and why
        raise ValueError(
            f"{path}: not a loadable nnU-Net checkpoint ({type(e).__name__}: {_reason(e)})"
        ) from None
    missing = [key for key in ("network_weights", "current_epoch") if key not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not an nnU-Net checkpoint (no {', '.join(missing)})")
    return checkpoint


def network_weights(checkpoint: dict, network: torch.nn.Module) -> dict:
    """The checkpoint's weights with a DDP ``module.`` prefix dropped where the network lacks it (as nnU-Net)."""
    own = plain_module(network).state_dict().keys()
    weights = {}
    for key, value in checkpoint["network_weights"].items():
        if key not in own and key.startswith("module."):
            key = key[len("module.") :]
        weights[key] = value
    return weights


def pretrained_weights_for(network: torch.nn.Module, checkpoint: dict, source: str = "checkpoint") -> dict:
    """Weights to fine-tune from: every key but the segmentation heads, shapes checked (``load_pretrained_weights``).

    nnU-Net skips ``.seg_layers.`` (the heads, which depend on the number of classes) and demands that every
    other parameter exists with the same shape.
    """
    own = plain_module(network).state_dict()
    weights = network_weights(checkpoint, network)
    problems = []
    for key, value in own.items():
        if ".seg_layers." in key:
            continue
        if key not in weights:
            problems.append(f"missing {key}")
        elif tuple(weights[key].shape) != tuple(value.shape):
            problems.append(
                f"{key}: shape {tuple(weights[key].shape)} in the checkpoint, {tuple(value.shape)} here"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise ValueError(f"{source}: pretrained weights do not fit this network: {shown}")
    return {key: weights[key] for key in own if ".seg_layers." not in key}
