"""nnU-Net's training loop: one plain function over a settings dataclass, resumable at every epoch.

    from nnseg_nb.training import NNUNET, QUICK_CPU, train
    result = train("Dataset904_Shapes2D", "2d", fold=0, settings=QUICK_CPU)     # 2 minutes on a CPU
    result.log.ema_fg_dice[-1], result.fold_folder    # pseudo-Dice EMA; .../nnUNetTrainer__nnUNetPlans__2d/fold_0
    train("Dataset904_Shapes2D", "2d", 0, settings=NNUNET, continue_training=True)   # on to 1000 epochs

One training step (DESIGN.md, "The training step"): DataLoader workers cut raw patches from the
preprocessed cases (``loader.make_dataloader``, pinned memory); the main process copies them to the
training device (non-blocking) and augments them there as a batch (``augment.training_pipeline``); the
network runs under autocast, the deep-supervision Dice+CE is back-propagated (through a GradScaler for
fp16), gradients are clipped at 12 and SGD steps. An epoch is ``iterations_per_epoch`` such steps and
``val_iterations`` validation batches (random patches, no augmentation) whose counts give the online
pseudo Dice; its moving average picks ``checkpoint_best.pth``. The learning rate follows nnU-Net's poly
schedule, set at the start of each epoch.

Everything random is a function of ``(seed, stream, batch index)``: batch ``k`` of the training stream is
cut with ``loader.batch_rng(stream seed, k)`` and augmented with ``augment.batch_generator(stream seed, k)``, and
epoch ``e`` holds batches ``e * iterations_per_epoch ...``. A run resumed from ``checkpoint_latest.pth``
(written atomically after every epoch) therefore draws the batches the uninterrupted run would have drawn.

Deviation from nnU-Net (named, on purpose): on a CPU nnU-Net trains in fp32. Here ``precision="auto"``
trains under bf16 autocast where the CPU runs bf16 natively (``avx512_bf16`` or ``amx_bf16`` in
/proc/cpuinfo), which roughly halves a 3D step there, and in fp32 elsewhere (emulated bf16 is many times
slower). ``precision="fp32"`` restores nnU-Net's behaviour. CUDA trains in fp16 with a GradScaler as
nnU-Net does; MPS in fp32.

At a little over 600 lines this stays one file on purpose: a reader follows training from top to bottom
here (settings, data, step, epoch, loop); checkpoints and devices live in their own modules.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from nnseg_nb import augment as aug
from nnseg_nb.checkpoint import (
    TrainingLog,
    checkpoint_dict,
    load_checkpoint,
    network_weights,
    plain_module,
    pretrained_weights_for,
    save_checkpoint,
)
from nnseg_nb.dataset import LabelInfo
from nnseg_nb.devices import (  # noqa: F401  (re-exported: part of the trainer's API)
    autocast_dtype,
    cpu_runs_bf16_natively,
    keep_freed_memory,
    rank_and_world,
    rank_batch,
    resolve_device,
    sum_over_ranks,
)
from nnseg_nb.loader import SamplerSettings, make_dataloader
from nnseg_nb.loss import build_loss, tp_fp_fn
from nnseg_nb.network import build_network, deep_supervision_scales, network_channels
from nnseg_nb.paths import dataset_name, model_folder, preprocessed_root, results_root
from nnseg_nb.plans import ConfigurationPlan, Plans, load_plans
from nnseg_nb.preprocessed import list_cases
from nnseg_nb.splits import load_fold
from nnseg_nb.utils import atomic_write_bytes, atomic_write_json, load_json

TRAIN, VALIDATION = 0, 1  # the two random streams of a run


@dataclass(frozen=True)
class TrainingSettings:
    """How to train; the defaults are nnU-Net's ``nnUNetTrainer`` (2.8.1).

    >>> NNUNET.num_epochs * NNUNET.iterations_per_epoch, QUICK_CPU.num_epochs * QUICK_CPU.iterations_per_epoch
    (250000, 200)
    """

    num_epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50  # validation batches per epoch: random patches, for the pseudo Dice
    initial_lr: float = 1e-2
    lr_exponent: float = 0.9  # poly schedule: lr = initial_lr * (1 - epoch / num_epochs) ** 0.9
    momentum: float = 0.99  # SGD, Nesterov
    weight_decay: float = 3e-5
    grad_clip: float = 12.0  # max gradient norm
    oversample_foreground_percent: float = 0.33
    ema_momentum: float = 0.9  # pseudo-Dice EMA: 0.9 * previous + 0.1 * this epoch
    batch_size: int | None = None  # None: the plans' batch size (split across DDP ranks)
    deep_supervision: bool = True
    seed: int = 0  # every random stream (weights, patches, augmentation) derives from it
    device: str = "auto"  # "auto" (cuda, else mps, else cpu), "cpu", "cuda", "cuda:1", "mps"
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16" (see the module docstring)
    compile: bool | None = None  # torch.compile the network; None: on CUDA only, as nnU-Net
    num_workers: int = 2  # DataLoader processes cutting patches (0: in the main process)
    augmentation: aug.AugmentSettings = dataclasses.field(default_factory=aug.AugmentSettings)
    progress: bool = True  # tqdm bar per epoch and one summary line per epoch
    validate: bool = True  # after training, predict the fold's validation cases into validation/summary.json

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        for name in ("num_epochs", "iterations_per_epoch", "val_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


NNUNET = TrainingSettings()
# A notebook run on a laptop CPU: same schedule shape, 20 x 10 iterations.
QUICK_CPU = dataclasses.replace(NNUNET, num_epochs=20, iterations_per_epoch=10, val_iterations=5)


@dataclass
class TrainingResult:
    """What ``train`` leaves behind."""

    fold_folder: Path  # <results>/<Dataset>/<Trainer>__<Plans>__<config>/fold_<f>
    log: TrainingLog
    epochs_done: int
    best_ema: float | None
    stopped: str  # "finished" or "interrupted"


# --- schedule ---------------------------------------------------------------------


def poly_lr(epoch: int, initial_lr: float = 1e-2, num_epochs: int = 1000, exponent: float = 0.9) -> float:
    """nnU-Net's ``PolyLRScheduler``: the learning rate of ``epoch``, set at its start.

    >>> round(poly_lr(250), 7), poly_lr(0)
    (0.0077189, 0.01)
    """
    return initial_lr * (1 - epoch / num_epochs) ** exponent


# --- random streams ------------------------------------------------------------------------------------


def stream_seed(seed: int, stream: int, rank: int = 0) -> int:
    """The loader seed of one stream (TRAIN or VALIDATION) of one DDP rank."""
    return int(np.random.SeedSequence([seed, stream, rank]).generate_state(1)[0])


def batch_generator(seed: int, stream: int, batch_index: int, rank: int = 0) -> torch.Generator:
    """The CPU generator that augments batch ``batch_index`` of a stream: ``augment.batch_generator`` seeded
    with the stream's seed, so a batch's patches and its augmentation both follow from (seed, stream, index)."""
    return aug.batch_generator(stream_seed(seed, stream, rank), batch_index)


# --- inputs and outputs ------------------------------------------------------------------------------------


@dataclass
class TrainingInputs:
    """Where a configuration's preprocessed data, plans and dataset.json are (``find_training_inputs``)."""

    dataset_name: str
    preprocessed_dataset_folder: Path  # nnUNet_preprocessed/DatasetXXX_Name
    data_folder: Path  # .../<data_identifier>
    plans: Plans
    plans_json: dict
    configuration_name: str
    configuration: ConfigurationPlan
    dataset_json: dict


def find_training_inputs(
    dataset: str | int, configuration: str, plans_name: str = "nnUNetPlans", preprocessed: Path | None = None
) -> TrainingInputs:
    """Locate a planned and preprocessed configuration; say which command to run if it is not."""
    root = Path(preprocessed) if preprocessed is not None else preprocessed_root()
    try:
        name = dataset_name(dataset, roots=[root])
    except FileNotFoundError:
        raise FileNotFoundError(
            f"dataset {dataset} is not planned in {root}; run first: nnseg-nb plan {dataset}"
        ) from None
    folder = root / name
    plans_file = folder / f"{plans_name}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no such plans; run first: nnseg-nb plan {name}")
    plans = load_plans(plans_file)
    config = plans.configuration(configuration)  # names the available ones if missing
    data_folder = folder / config.data_identifier
    if not data_folder.is_dir() or not list_cases(data_folder):
        raise FileNotFoundError(
            f"{data_folder}: not preprocessed; run first: nnseg-nb preprocess {name} -c {configuration}"
            + (f" --plans {plans_file}" if plans_name != "nnUNetPlans" else "")
        )
    dataset_json_file = folder / "dataset.json"
    if not dataset_json_file.is_file():
        raise FileNotFoundError(f"{dataset_json_file}: missing; run first: nnseg-nb plan {name}")
    return TrainingInputs(
        name,
        folder,
        data_folder,
        plans,
        load_json(plans_file),
        configuration,
        config,
        load_json(dataset_json_file),
    )


def _copy_plans_files(inputs: TrainingInputs, folder: Path) -> None:
    atomic_write_json(folder / "plans.json", inputs.plans_json)
    atomic_write_json(folder / "dataset.json", inputs.dataset_json)
    fingerprint = inputs.preprocessed_dataset_folder / "dataset_fingerprint.json"
    if fingerprint.is_file():
        atomic_write_json(folder / "dataset_fingerprint.json", load_json(fingerprint))


class TextLog:
    """nnU-Net's ``training_log_<date>.txt``: timestamped lines, printed too when ``echo``."""

    def __init__(self, folder: Path, echo: bool):
        now = datetime.now()
        name = f"training_log_{now.year}_{now.month}_{now.day}_{now.hour:02d}_{now.minute:02d}_{now.second:02d}.txt"
        self.path, self.echo = folder / name, echo

    def __call__(self, message: str) -> None:
        with open(self.path, "a") as file:
            file.write(f"{datetime.now()}: {message}\n")
        if self.echo:
            tqdm.write(message)


# --- the steps ---------------------------------------------------------------------------------------------


@dataclass
class Model:
    """The network, its optimizer and loss: what a step needs."""

    network: torch.nn.Module  # possibly compiled and/or wrapped in DistributedDataParallel
    optimizer: torch.optim.Optimizer
    loss: torch.nn.Module
    grad_scaler: torch.amp.GradScaler | None
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None: fp32
    label_info: LabelInfo


def _prepared(batch: dict, pipeline, generator: torch.Generator, device: torch.device) -> tuple:
    """Copy a loader batch to the device (non-blocking from pinned memory) and augment it there."""
    moved = {
        "image": batch["image"].to(device, non_blocking=True),
        "seg": batch["seg"].to(device, non_blocking=True),
    }
    out = aug.augment(moved, pipeline, generator)
    return out["image"], out["seg"]


def _autocast(model: Model):
    return torch.autocast(
        model.device.type, dtype=model.dtype or torch.float32, enabled=model.dtype is not None
    )


def train_step(model: Model, data: torch.Tensor, target, grad_clip: float) -> float:
    """One SGD step (``nnUNetTrainer.train_step``); returns the loss."""
    model.optimizer.zero_grad(set_to_none=True)
    with _autocast(model):
        loss = model.loss(model.network(data), target)
    if model.grad_scaler is not None:
        model.grad_scaler.scale(loss).backward()
        model.grad_scaler.unscale_(model.optimizer)
        torch.nn.utils.clip_grad_norm_(model.network.parameters(), grad_clip)
        model.grad_scaler.step(model.optimizer)
        model.grad_scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.network.parameters(), grad_clip)
        model.optimizer.step()
    return loss.item()


@torch.no_grad()
def validation_step(model: Model, data: torch.Tensor, target) -> tuple[float, torch.Tensor]:
    """Loss and (tp, fp, fn) per foreground class of one validation batch (``validation_step``)."""
    with _autocast(model):
        output = model.network(data)
        loss = model.loss(output, target)
    counts = torch.stack(tp_fp_fn(output, target, model.label_info))  # (3, classes)
    return loss.item(), counts


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --- the loop ----------------------------------------------------------------------------------------------


def train(
    dataset: str | int,
    configuration: str,
    fold: int | str = 0,
    settings: TrainingSettings = NNUNET,
    *,
    plans_name: str = "nnUNetPlans",
    trainer_name: str = "nnUNetTrainer",
    continue_training: bool = False,
    pretrained_weights: str | os.PathLike | None = None,
    preprocessed: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    callback: Callable[[dict, TrainingLog], None] | None = None,
) -> TrainingResult:
    """Train one fold of a configuration, as ``nnUNetv2_train DATASET CONFIG FOLD`` does.

    Args:
        dataset: ``DatasetXXX_Name``, name or id, planned and preprocessed under ``preprocessed``.
        configuration: e.g. ``"3d_fullres"``, or a custom one of the plans (``inherits_from``).
        fold: 0-4 (``splits_final.json``, written on first use) or ``"all"``.
        settings: schedule and runtime (``NNUNET``, ``QUICK_CPU`` or your own ``dataclasses.replace``).
        continue_training: resume from the fold's newest checkpoint (final or latest) and train on to
            ``settings.num_epochs``; a fold without a checkpoint starts fresh, as nnU-Net's ``--c``.
        pretrained_weights: a checkpoint to fine-tune from (segmentation heads skipped, shapes checked).
        preprocessed, results: roots; default ``$nnUNet_preprocessed`` and ``$nnUNet_results``.
        callback: called after every epoch with the epoch's record (``TrainingLog.epoch_record``) and the log,
            e.g. ``viz.training.LiveCurves().update``.

    Returns:
        TrainingResult. Ctrl-C (a notebook's stop button) ends cleanly with ``stopped="interrupted"``;
        the last finished epoch is in ``checkpoint_latest.pth``. A non-finite loss raises
        ``NonFiniteLossError`` and leaves the checkpoints of the last good epoch.
    """
    if continue_training and pretrained_weights is not None:
        raise ValueError("continue_training and pretrained_weights exclude each other (as in nnU-Net)")
    rank, world = rank_and_world()
    inputs = find_training_inputs(
        dataset, configuration, plans_name, Path(preprocessed) if preprocessed else None
    )
    output = model_folder(
        inputs.dataset_name, trainer_name, plans_name, configuration, Path(results or results_root())
    )
    fold_folder = output / f"fold_{fold}"
    if rank == 0:
        fold_folder.mkdir(parents=True, exist_ok=True)
        _copy_plans_files(inputs, output)
    text_log = TextLog(fold_folder, echo=settings.progress) if rank == 0 else (lambda message: None)

    config, label_info = inputs.configuration, LabelInfo.from_dataset_json(inputs.dataset_json)
    device = resolve_device(settings.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    previous_stage = None  # the cascade reads the previous stage's validations (nnseg_nb.cascade)
    if config.previous_stage is not None:
        previous_stage = output.parent / f"{trainer_name}__{plans_name}__{config.previous_stage}"
        previous_stage = previous_stage / "predicted_next_stage" / configuration
    model, scales, mirror_axes, data = _build(
        inputs, settings, label_info, device, fold, world, rank, previous_stage
    )
    train_cases, val_cases = data["cases"]
    text_log(
        f"{inputs.dataset_name} {configuration} fold {fold}: {len(train_cases)} training, {len(val_cases)} "
        f"validation cases; device {device}, precision {model.dtype or torch.float32}, batch {data['batch']} "
        f"on each of {world} process(es), patch {tuple(config.patch_size)}"
    )

    log, best_ema, start_epoch = TrainingLog(), None, 0
    if continue_training:
        start_epoch, log, best_ema = _resume(model, fold_folder, text_log)
    elif pretrained_weights is not None:
        checkpoint = load_checkpoint(pretrained_weights)
        plain_module(model.network).load_state_dict(
            pretrained_weights_for(model.network, checkpoint, str(pretrained_weights)), strict=False
        )
        text_log(f"fine-tuning from {pretrained_weights} (segmentation heads not loaded)")

    init_args = {
        "plans": inputs.plans_json,
        "configuration": configuration,
        "fold": fold,
        "dataset_json": inputs.dataset_json,
        "device": device,
    }

    def save(name: str, epochs_done: int) -> None:
        if rank != 0:
            return
        extra = {"settings": _settings_json(settings), "seed": settings.seed}
        checkpoint = checkpoint_dict(
            model.network, model.optimizer, model.grad_scaler, log, best_ema, epochs_done,
            init_args, trainer_name, mirror_axes, extra,
        )  # fmt: skip
        save_checkpoint(fold_folder / name, checkpoint)

    train_batches = iter(data["train_loader"](start_epoch * settings.iterations_per_epoch))
    val_batches = iter(data["val_loader"](start_epoch * settings.val_iterations))
    stopped = "finished"
    try:
        with keep_freed_memory():  # activations reuse freed memory: a CPU step ~1.3x faster
            for epoch in range(start_epoch, settings.num_epochs):
                started = time.time()
                lr = poly_lr(epoch, settings.initial_lr, settings.num_epochs, settings.lr_exponent)
                for group in model.optimizer.param_groups:
                    group["lr"] = lr
                train_loss = _train_epoch(model, settings, data, train_batches, epoch, rank)
                val_loss, dice = _validate_epoch(model, settings, data, val_batches, epoch, rank)
                log.add_epoch(train_loss, val_loss, dice, lr, started, time.time(), settings.ema_momentum)
                if best_ema is None or log.ema_fg_dice[-1] > best_ema:
                    best_ema = log.ema_fg_dice[-1]
                    save("checkpoint_best.pth", epoch + 1)
                save("checkpoint_latest.pth", epoch + 1)
                record = log.epoch_record(epoch)
                if rank == 0:
                    _write_epoch_outputs(fold_folder, log)
                    text_log(_summary_line(record, settings.num_epochs))
                    if callback is not None:
                        callback(record, log)
    except KeyboardInterrupt:
        stopped = "interrupted"
        text_log(
            f"interrupted; {fold_folder / 'checkpoint_latest.pth'} holds epoch {log.epochs}: "
            "continue with continue_training=True (--continue)"
        )
    finally:
        del train_batches, val_batches  # stop the loader workers
    if stopped == "finished":
        save("checkpoint_final.pth", log.epochs)
        if rank == 0:
            (fold_folder / "checkpoint_latest.pth").unlink(missing_ok=True)
            _write_epoch_outputs(fold_folder, log)
            text_log(f"training done: {log.epochs} epochs, best EMA pseudo Dice {best_ema}")
            if settings.validate:
                _predict_validation(output, fold, inputs, device, text_log)
    return TrainingResult(fold_folder, log, log.epochs, best_ema, stopped)


def _build(
    inputs: TrainingInputs, settings: TrainingSettings, label_info, device, fold, world, rank, previous=None
):
    """Network, optimizer, loss, pipelines and loaders for a configuration (``nnUNetTrainer.initialize``)."""
    config = inputs.configuration
    in_channels, out_channels = network_channels(config, inputs.dataset_json)
    network = build_network(
        config.architecture, in_channels, out_channels, settings.deep_supervision,
        generator=torch.Generator().manual_seed(settings.seed),
    ).to(device)  # fmt: skip
    strides = config.architecture.strides
    scales = deep_supervision_scales(strides) if settings.deep_supervision else None
    compiled = settings.compile if settings.compile is not None else device.type == "cuda"
    loss = build_loss(label_info, bool(config.batch_dice), settings.deep_supervision,
                      len(deep_supervision_scales(strides)), ddp=world > 1, compiled=compiled)  # fmt: skip
    optimizer = torch.optim.SGD(
        network.parameters(), settings.initial_lr, momentum=settings.momentum,
        weight_decay=settings.weight_decay, nesterov=True,
    )  # fmt: skip
    for group in optimizer.param_groups:  # what nnU-Net's PolyLRScheduler (an _LRScheduler) adds to its state
        group.setdefault("initial_lr", settings.initial_lr)
    dtype = autocast_dtype(device, settings.precision)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    if compiled:
        network = torch.compile(network)
    if world > 1:
        network = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
    model = Model(network, optimizer, loss, scaler, device, dtype, label_info)

    patch = tuple(config.patch_size)
    rotation, dummy_2d, mirror_axes = aug.rotation_and_mirroring_for(patch)
    loaded = aug.loaded_patch_size(patch, rotation, dummy_2d=dummy_2d)
    regions = label_info.foreground_regions if label_info.has_regions else None
    target_args = dict(
        is_cascaded=config.previous_stage is not None, foreground_labels=tuple(label_info.foreground_labels),
        regions=regions, ignore_label=label_info.ignore_label, deep_supervision_scales=scales,
    )  # fmt: skip
    train_pipeline = aug.training_pipeline(
        patch, rotation, mirror_axes, dummy_2d, settings=settings.augmentation,
        use_mask_for_norm=config.use_mask_for_norm, **target_args,
    )  # fmt: skip
    val_pipeline = aug.validation_pipeline(**target_args)

    identifiers = list_cases(inputs.data_folder)
    cases = (
        load_fold(inputs.preprocessed_dataset_folder, fold, identifiers) if rank == 0 or world == 1 else None
    )
    if world > 1:  # rank 0 writes splits_final.json; the others wait and read it
        shared = [cases]
        dist.broadcast_object_list(shared, src=0)
        cases = shared[0]
    train_cases, val_cases = cases
    global_batch = settings.batch_size or config.batch_size
    batch, oversample = rank_batch(global_batch, settings.oversample_foreground_percent, rank, world)
    has_ignore = label_info.ignore_label is not None
    sampler = dict(batch_size=batch, oversample_foreground_percent=oversample, has_ignore=has_ignore,
                   previous_stage_folder=previous)  # fmt: skip
    train_sampler = SamplerSettings(patch, loaded_patch_size=loaded, **sampler)
    val_sampler = SamplerSettings(patch, loaded_patch_size=None, **sampler)
    pin = device.type == "cuda"

    def loader(cases, sampler, stream):
        return lambda first_batch: make_dataloader(
            inputs.data_folder, cases, sampler, num_workers=settings.num_workers,
            seed=stream_seed(settings.seed, stream, rank), pin_memory=pin, first_batch=first_batch,
        )  # fmt: skip

    data = {
        "cases": (train_cases, val_cases),
        "batch": batch,
        "train_loader": loader(train_cases, train_sampler, TRAIN),
        "val_loader": loader(val_cases, val_sampler, VALIDATION),
        "train_pipeline": train_pipeline,
        "val_pipeline": val_pipeline,
    }
    return model, scales, tuple(mirror_axes), data


def _train_epoch(
    model: Model, settings: TrainingSettings, data: dict, batches, epoch: int, rank: int
) -> float:
    model.network.train()
    losses = []
    bar = tqdm(range(settings.iterations_per_epoch), desc=f"epoch {epoch}", leave=False,
               disable=not settings.progress or rank != 0)  # fmt: skip
    for i in bar:
        batch = next(batches)
        batch_index = epoch * settings.iterations_per_epoch + i
        if batch["batch_index"] != batch_index:  # the stream and the epoch must agree for resumes to be exact
            raise RuntimeError(f"loader batch {batch['batch_index']} where batch {batch_index} was expected")
        generator = batch_generator(settings.seed, TRAIN, batch_index, rank)
        image, target = _prepared(batch, data["train_pipeline"], generator, model.device)
        loss = train_step(model, image, target, settings.grad_clip)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss is {loss} in epoch {epoch}, iteration {i}; training stopped. The checkpoints "
                f"after {epoch} finished epochs are kept. Try a lower initial_lr or precision='fp32'."
            )
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}")
    mean = torch.tensor([float(np.mean(losses)) if losses else float("nan")], dtype=torch.float64)
    return float(sum_over_ranks(mean).item() / rank_and_world()[1])


def _validate_epoch(model: Model, settings: TrainingSettings, data: dict, batches, epoch: int, rank: int):
    """Mean validation loss and the pseudo Dice per class, from counts summed over batches and ranks."""
    model.network.eval()
    losses, counts = [], 0
    for j in range(settings.val_iterations):
        batch = next(batches)
        batch_index = epoch * settings.val_iterations + j
        generator = batch_generator(settings.seed, VALIDATION, batch_index, rank)
        image, target = _prepared(batch, data["val_pipeline"], generator, model.device)
        loss, batch_counts = validation_step(model, image, target)
        losses.append(loss)
        counts = counts + batch_counts.double().cpu()
    n_classes = len(model.label_info.foreground_regions if model.label_info.has_regions
                    else model.label_info.foreground_labels)  # fmt: skip
    counts = counts if isinstance(counts, torch.Tensor) else torch.zeros(3, n_classes, dtype=torch.float64)
    counts = sum_over_ranks(counts.clone())
    mean_loss = torch.tensor([float(np.mean(losses)) if losses else float("nan")], dtype=torch.float64)
    val_loss = float(sum_over_ranks(mean_loss).item() / rank_and_world()[1])
    tp, fp, fn = counts.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * tp / (2 * tp + fp + fn)  # NaN for a class absent from prediction and truth
    return val_loss, [float(d) for d in dice]


def _resume(model: Model, fold_folder: Path, text_log) -> tuple[int, TrainingLog, float | None]:
    """Restore a run from its newest checkpoint (most epochs; final before latest before best)."""
    found = []
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        if (fold_folder / name).is_file():
            found.append((name, load_checkpoint(fold_folder / name, map_location=model.device)))
    if not found:
        text_log(f"no checkpoint in {fold_folder}: starting a new training")
        return 0, TrainingLog(), None
    name, checkpoint = max(found, key=lambda item: item[1]["current_epoch"])  # max keeps the first of ties
    plain_module(model.network).load_state_dict(network_weights(checkpoint, model.network))
    model.optimizer.load_state_dict(checkpoint["optimizer_state"])
    if model.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
        model.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
    epochs = int(checkpoint["current_epoch"])
    log = TrainingLog.from_json(checkpoint["logging"]).truncated(epochs)
    text_log(f"continuing from {fold_folder / name} after epoch {epochs}")
    return epochs, log, checkpoint.get("_best_ema")


def _settings_json(settings: TrainingSettings) -> dict:
    return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
            for k, v in dataclasses.asdict(settings).items()}  # fmt: skip


def _summary_line(record: dict, num_epochs: int) -> str:
    dice = ", ".join(f"{d:.4f}" for d in record["dice_per_class_or_region"])
    return (
        f"epoch {record['epoch']}/{num_epochs}: train loss {record['train_losses']:.4f}, val loss "
        f"{record['val_losses']:.4f}, pseudo Dice [{dice}], EMA {record['ema_fg_dice']:.4f}, "
        f"lr {record['lrs']:.2e}, {record['epoch_seconds']:.1f} s"
    )


def _write_epoch_outputs(fold_folder: Path, log: TrainingLog) -> None:
    """``training_log.jsonl`` (one line per epoch, rewritten whole so it matches the checkpoint) and progress.png."""
    import json

    from nnseg_nb.viz.training import save_progress_png

    lines = "".join(json.dumps(log.epoch_record(e)) + "\n" for e in range(log.epochs))
    atomic_write_bytes(fold_folder / "training_log.jsonl", lines.encode())
    save_progress_png(log, fold_folder / "progress.png")


def _predict_validation(output: Path, fold, inputs: TrainingInputs, device: torch.device, text_log) -> None:
    """nnU-Net's ``perform_actual_validation``: predict the fold's validation cases whole, score them."""
    if fold == "all":
        text_log("fold 'all' trains on every case: no validation cases to predict")
        return
    from nnseg_nb.predict import predict_validation

    summary = predict_validation(
        output, fold, inputs.preprocessed_dataset_folder, "checkpoint_final.pth", device=str(device)
    )
    text_log(
        f"validation: mean Dice {summary['foreground_mean']['Dice']:.4f} over the fold's cases -> "
        f"{output / f'fold_{fold}' / 'validation' / 'summary.json'}"
    )
