"""nnU-Net's sliding-window prediction: tiles, Gaussian weighting, mirroring, fold ensembles.

    model = load_model("nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres", folds=[0])
    logits = predict_logits(model, data)        # data: (C, Z, Y, X) preprocessed -> (heads, Z, Y, X) fp16
    compute_steps_for_sliding_window((110,), (64,), 0.5)   # -> [[0, 23, 46]]

The rules are nnU-Net 2.8's (``nnUNetPredictor.predict_sliding_window_return_logits``):

- the image is padded with zeros to at least the patch size (centred, the odd voxel on the high side);
- tiles start at ``compute_steps_for_sliding_window`` (step ``patch * 0.5`` at most, evenly spread);
  a 2D configuration tiles every slice of axis 0;
- each tile's logits are the mean of the plain prediction and one prediction per non-empty subset of
  the checkpoint's mirror axes (flip the input, predict, flip back): 8 passes in 3D, 4 in 2D;
- the logits are weighted by a Gaussian (sigma = patch / 8, peak 10, no zeros) and summed into fp16
  accumulators with the weights, then divided by the summed weights;
- several folds: the folds' logits are averaged.

Where it costs nothing in results, it is faster than nnU-Net: tiles go through the network in batches
(nnU-Net: one at a time), bf16 autocast runs on CPUs that compute bf16 natively (AVX512-BF16 or AMX;
nnU-Net: fp32 on every CPU), fp16 autocast on CUDA as nnU-Net, and on a CPU the activations reuse freed
memory (``devices.keep_freed_memory``) instead of page-faulting fresh memory in at every forward. The
accumulators live on the device and fall back to CPU memory when the device runs out of memory, as
nnU-Net's do.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

from nnseg_nb.checkpoint import load_checkpoint  # noqa: F401  (re-exported: model folders read it here)
from nnseg_nb.dataset import LabelInfo
from nnseg_nb.devices import autocast_dtype, keep_freed_memory
from nnseg_nb.network import build_network, network_channels
from nnseg_nb.plans import ConfigurationPlan, Plans, as_plans
from nnseg_nb.utils import load_json

TILE_STEP_SIZE = 0.5  # nnUNetv2_predict -step_size: tiles overlap by half a patch
GAUSSIAN_SIGMA_SCALE = 1 / 8  # sigma of the importance map, as a fraction of the patch
GAUSSIAN_VALUE_SCALING = 10  # peak of the importance map (nnU-Net's value_scaling_factor)
CHECKPOINT_NAME = "checkpoint_final.pth"


# --- tiles and weights ----------------------------------------------------------------------------


def compute_steps_for_sliding_window(
    image_size: Sequence[int], tile_size: Sequence[int], tile_step_size: float = TILE_STEP_SIZE
) -> list[list[int]]:
    """Start of every tile along each axis: as few tiles as a step of ``tile * tile_step_size`` allows,
    spread evenly from 0 to ``size - tile`` (``round`` of the exact positions).

    >>> compute_steps_for_sliding_window((110, 64, 40), (64, 64, 32), 0.5)
    [[0, 23, 46], [0], [0, 8]]
    """
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"tile_step_size must be in (0, 1], got {tile_step_size}")
    steps = []
    for size, tile in zip(image_size, tile_size):
        if size < tile:
            raise ValueError(f"image size {tuple(image_size)} is smaller than the tile {tuple(tile_size)}")
        n_steps = int(np.ceil((size - tile) / (tile * tile_step_size))) + 1
        step = (size - tile) / (n_steps - 1) if n_steps > 1 else 0
        steps.append([int(np.round(step * i)) for i in range(n_steps)])
    return steps


@lru_cache(maxsize=4)
def _gaussian_numpy(
    tile_size: tuple[int, ...], sigma_scale: float, value_scaling_factor: float
) -> np.ndarray:
    impulse = np.zeros(tile_size)
    impulse[tuple(s // 2 for s in tile_size)] = 1
    gaussian = gaussian_filter(impulse, [s * sigma_scale for s in tile_size], 0, mode="constant", cval=0)
    return gaussian / (np.max(gaussian) / value_scaling_factor)


def gaussian_importance_map(
    tile_size: Sequence[int],
    sigma_scale: float = GAUSSIAN_SIGMA_SCALE,
    value_scaling_factor: float = GAUSSIAN_VALUE_SCALING,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """nnU-Net's tile weights: a Gaussian centred on the tile, peak ``value_scaling_factor``.

    An impulse at ``size // 2`` blurred by ``scipy.ndimage.gaussian_filter`` (sigma ``size * sigma_scale``
    per axis, zero outside), scaled to the peak, cast to ``dtype``; values that became 0 in that dtype are
    raised to the smallest nonzero one, so that no voxel ends with a zero weight sum.

    >>> g = gaussian_importance_map((16, 16))
    >>> g.dtype, float(g.max()), bool((g > 0).all())
    (torch.float16, 10.0, True)
    """
    gaussian = torch.from_numpy(
        _gaussian_numpy(tuple(int(s) for s in tile_size), sigma_scale, value_scaling_factor)
    )
    gaussian = gaussian.to(device=device, dtype=dtype)
    zero = gaussian == 0
    gaussian[zero] = torch.min(gaussian[~zero])
    return gaussian


def sliding_window_slicers(
    image_shape: Sequence[int], patch_size: Sequence[int], tile_step_size: float
) -> list:
    """Index tuples ``(slice(None), ...)`` of every tile, in nnU-Net's order, for a (C, *image_shape) array.

    With a 2D patch on a 3D image, every slice of axis 0 is tiled (the index holds the slice number).
    """
    if len(patch_size) == len(image_shape) - 1:
        steps = compute_steps_for_sliding_window(image_shape[1:], patch_size, tile_step_size)
        return [
            (slice(None), d, *(slice(s, s + p) for s, p in zip(starts, patch_size)))
            for d in range(image_shape[0])
            for starts in itertools.product(*steps)
        ]
    if len(patch_size) != len(image_shape):
        raise ValueError(f"patch {tuple(patch_size)} does not fit an image of shape {tuple(image_shape)}")
    steps = compute_steps_for_sliding_window(image_shape, patch_size, tile_step_size)
    return [
        (slice(None), *(slice(s, s + p) for s, p in zip(starts, patch_size)))
        for starts in itertools.product(*steps)
    ]


def pad_to_patch_size(
    data: torch.Tensor, patch_size: Sequence[int]
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the trailing axes of ``data`` to at least ``patch_size`` (centred; the odd voxel goes on the
    high side, as acvl_utils' ``pad_nd_image``); returns the padded tensor and the slices that undo it.

    >>> padded, back = pad_to_patch_size(torch.ones(1, 3, 8), (6, 6))
    >>> tuple(padded.shape), back
    ((1, 6, 8), (slice(None, None, None), slice(1, 4, None), slice(0, 8, None)))
    """
    old = list(data.shape[-len(patch_size) :])
    missing = [max(p - s, 0) for p, s in zip(patch_size, old)]
    low = [m // 2 for m in missing]
    high = [m - lo for m, lo in zip(missing, low)]
    keep = (slice(None),) * (data.ndim - len(patch_size))
    back = keep + tuple(slice(lo, lo + s) for lo, s in zip(low, old))
    if not any(missing):
        return data, back
    pad = [v for lo, hi in zip(reversed(low), reversed(high)) for v in (lo, hi)]  # torch: last axis first
    return torch.nn.functional.pad(data, pad, mode="constant", value=0), back


def mirror_axes_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Every non-empty subset of the mirror axes, by size then order, as tensor axes of a (B, C, ...) batch.

    >>> mirror_axes_combinations((0, 1))
    [(2,), (3,), (2, 3)]
    """
    if not mirror_axes:
        return []
    axes = [a + 2 for a in mirror_axes]
    return [c for n in range(1, len(axes) + 1) for c in itertools.combinations(axes, n)]


# --- precision (the choice is devices.autocast_dtype's: bf16 only on CPUs that run it natively) -------------


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# --- the sliding window ---------------------------------------------------------------------------------


def predict_tiles_with_mirroring(
    network: torch.nn.Module, tiles: torch.Tensor, mirror_axes: Sequence[int] | None
) -> torch.Tensor:
    """Logits of a batch of tiles, averaged over the plain pass and every flip combination (fp32)."""
    prediction = network(tiles).float()
    combinations = mirror_axes_combinations(mirror_axes)
    for axes in combinations:
        prediction += torch.flip(network(torch.flip(tiles, axes)), axes).float()
    return prediction / (len(combinations) + 1)


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def _accumulate(
    network: torch.nn.Module,
    data: torch.Tensor,
    slicers: list,
    patch_size: Sequence[int],
    num_heads: int,
    mirror_axes: Sequence[int] | None,
    tiles_per_batch: int,
    device: torch.device,
    results_device: torch.device,
    precision_dtype: torch.dtype | None,
    use_gaussian: bool,
    progress: bool,
) -> torch.Tensor:
    """The weighted mean of every tile's logits: fp16 sums of ``logits * gaussian`` and of ``gaussian`` on
    ``results_device`` (the network runs on ``device``), divided at the end (see sliding_window_logits)."""
    logits = torch.zeros((num_heads, *data.shape[1:]), dtype=torch.half, device=results_device)
    weights = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
    gaussian = (
        gaussian_importance_map(patch_size, device=results_device)
        if use_gaussian
        else torch.ones(tuple(patch_size), dtype=torch.half, device=results_device)
    )
    data = data.to(results_device)
    with tqdm(total=len(slicers), desc="tiles", leave=False, disable=not progress) as bar:
        for batch in _batches(slicers, tiles_per_batch):
            tiles = torch.stack([data[s] for s in batch]).to(device, non_blocking=True)
            with _autocast(device, precision_dtype):
                predictions = predict_tiles_with_mirroring(network, tiles, mirror_axes).to(results_device)
            for s, prediction in zip(batch, predictions):  # tile by tile, in nnU-Net's order and rounding
                logits[s] += prediction * gaussian if use_gaussian else prediction
                weights[s[1:]] += gaussian
            bar.update(len(batch))
    torch.div(logits, weights, out=logits)
    if torch.isinf(logits).any():
        raise RuntimeError("inf in the predicted logits: the fp16 accumulators overflowed")
    return logits


def sliding_window_logits(
    network: torch.nn.Module,
    data: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    num_heads: int,
    mirror_axes: Sequence[int] | None = None,
    tile_step_size: float = TILE_STEP_SIZE,
    tiles_per_batch: int = 1,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    use_gaussian: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """One network's logits for a whole preprocessed image, as nnU-Net's ``predict_sliding_window_return_logits``.

    Args:
        network: in eval mode, deep supervision off, already on ``device``.
        data: (C, Z, Y, X) preprocessed image (a 2D configuration tiles each slice of axis 0).
        patch_size: the configuration's patch; num_heads: the network's output channels.
        mirror_axes: the checkpoint's ``inference_allowed_mirroring_axes`` (None: no mirroring).
        tiles_per_batch: tiles per network call (nnU-Net: 1); only the speed changes.
        precision: see :func:`autocast_dtype`.

    Returns:
        (num_heads, Z, Y, X) fp16 logits on the CPU, as nnU-Net's (it accumulates in fp16).

    >>> net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    >>> sliding_window_logits(net, torch.zeros(1, 5, 20, 20), (4, 16, 16), 2, precision="fp32").shape
    torch.Size([2, 5, 20, 20])
    """
    device = torch.device(device)
    if not isinstance(data, torch.Tensor):  # a read-only memory map would make torch warn; copy it once
        data = np.array(data, copy=not np.asarray(data).flags.writeable)
    data = torch.as_tensor(data).float()
    if data.ndim != 4:
        raise ValueError(f"data must be (C, Z, Y, X), got shape {tuple(data.shape)}")
    spatial_patch = list(patch_size)
    data, undo_padding = pad_to_patch_size(data, spatial_patch)
    slicers = sliding_window_slicers(data.shape[1:], spatial_patch, tile_step_size)
    precision_dtype = autocast_dtype(device, precision)
    args = (network, data, slicers, spatial_patch, num_heads, mirror_axes, tiles_per_batch, device)
    with keep_freed_memory():  # each forward reuses the last one's activations: ~1.25x on a CPU
        try:
            logits = _accumulate(*args, device, precision_dtype, use_gaussian, progress)
        except torch.OutOfMemoryError:
            if device.type == "cpu":
                raise
            warnings.warn(
                "the accumulators do not fit the device memory; accumulating in CPU memory", stacklevel=2
            )
            torch.cuda.empty_cache() if device.type == "cuda" else None
            logits = _accumulate(*args, torch.device("cpu"), precision_dtype, use_gaussian, progress)
    return logits[(slice(None), *undo_padding[1:])].cpu()


# --- a trained model ---------------------------------------------------------------------------------------


@dataclass
class Model:
    """A trained model folder, loaded: what prediction needs (see :func:`load_model`)."""

    folder: Path
    plans: Plans
    configuration_name: str
    configuration: ConfigurationPlan
    dataset_json: dict
    labels: LabelInfo
    trainer_name: str
    network: torch.nn.Module  # on ``device``, eval mode, no deep supervision
    fold_weights: list[dict]  # one state dict per fold, on the CPU
    folds: list[int | str]
    mirror_axes: tuple[int, ...] | None  # inference_allowed_mirroring_axes of the first checkpoint
    device: torch.device

    @property
    def num_input_channels(self) -> int:
        return network_channels(self.configuration, self.dataset_json)[0]


def available_folds(model_folder: str | os.PathLike, checkpoint_name: str = CHECKPOINT_NAME) -> list[int]:
    """The ``fold_k`` folders holding ``checkpoint_name`` (``fold_all`` excluded, as nnU-Net's auto-detection)."""
    folds = []
    for sub in Path(model_folder).glob("fold_*"):
        suffix = sub.name[len("fold_") :]
        if suffix.isdigit() and (sub / checkpoint_name).is_file():
            folds.append(int(suffix))
    return sorted(folds)


def load_model(
    model_folder: str | os.PathLike,
    folds: Sequence[int | str] | None = None,
    checkpoint_name: str = CHECKPOINT_NAME,
    device: torch.device | str = "cpu",
) -> Model:
    """Load a ``<Trainer>__<Plans>__<configuration>`` folder written by nnU-Net v2 or nnseg_nb.

    Reads ``plans.json``, ``dataset.json`` and ``fold_k/<checkpoint_name>`` for each fold (all available
    folds when ``folds`` is None; ``"all"`` means ``fold_all``). The configuration and trainer come from the
    first checkpoint (``init_args["configuration"]``, ``trainer_name``), the mirror axes from its
    ``inference_allowed_mirroring_axes``. Any trainer name works: the network is built from the plans.

    >>> model = load_model("nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres",
    ...                    folds=[0, 1])                                        # doctest: +SKIP
    """
    folder = Path(model_folder)
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not a model folder (no {name})")
    folds = list(folds) if folds is not None else available_folds(folder, checkpoint_name)
    if not folds:
        raise FileNotFoundError(f"{folder}: no fold_k/{checkpoint_name} found")
    folds = [f if f == "all" else int(f) for f in folds]
    checkpoints = []
    for fold in folds:
        path = folder / f"fold_{fold}" / checkpoint_name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: fold {fold} has no {checkpoint_name}")
        checkpoints.append(load_checkpoint(path))
    plans = as_plans(folder / "plans.json")
    dataset_json = load_json(folder / "dataset.json")
    first = checkpoints[0]
    configuration_name = first["init_args"]["configuration"]
    configuration = plans.configuration(configuration_name)
    in_channels, out_channels = network_channels(configuration, dataset_json)
    network = build_network(configuration.architecture, in_channels, out_channels, deep_supervision=False)
    network.load_state_dict(first["network_weights"])
    mirror_axes = first.get("inference_allowed_mirroring_axes")
    return Model(
        folder=folder,
        plans=plans,
        configuration_name=configuration_name,
        configuration=configuration,
        dataset_json=dataset_json,
        labels=LabelInfo.from_dataset_json(dataset_json),
        trainer_name=first.get("trainer_name", "unknown"),
        network=network.to(device).eval(),
        fold_weights=[c["network_weights"] for c in checkpoints],
        folds=folds,
        mirror_axes=tuple(int(a) for a in mirror_axes) if mirror_axes is not None else None,
        device=torch.device(device),
    )


def predict_logits(
    model: Model,
    data: torch.Tensor | np.ndarray,
    tile_step_size: float = TILE_STEP_SIZE,
    use_mirroring: bool = True,
    tiles_per_batch: int | None = None,
    precision: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Logits of a preprocessed image, averaged over the model's folds (nnU-Net averages logits, not
    probabilities). ``data``: (C, Z, Y, X), cascade channels already appended. Returns fp16 on the CPU.

    ``tiles_per_batch`` defaults to the configuration's training batch size: training fits that many
    patches with gradients, so inference fits them without.
    """
    if data.shape[0] != model.num_input_channels:
        raise ValueError(
            f"the model takes {model.num_input_channels} input channels, the data has {data.shape[0]}"
        )
    tiles_per_batch = tiles_per_batch or int(model.configuration.batch_size or 1)
    total = None
    for weights in model.fold_weights:
        model.network.load_state_dict(weights)
        logits = sliding_window_logits(
            model.network,
            data,
            model.configuration.patch_size,
            model.labels.num_segmentation_heads,
            model.mirror_axes if use_mirroring else None,
            tile_step_size,
            tiles_per_batch,
            model.device,
            precision,
            progress=progress,
        )
        total = logits if total is None else total + logits  # fp16 sums, as nnU-Net's
    if len(model.fold_weights) > 1:
        total /= len(model.fold_weights)
    return total
