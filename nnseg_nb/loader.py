"""Patch sampling with foreground oversampling, as nnU-Net's ``nnUNetDataLoader`` does it.

    settings = SamplerSettings(patch_size=(40, 56, 40), loaded_patch_size=(73, 80, 64), batch_size=2)
    batch = sample_batch(folder, case_ids, settings, batch_rng(seed=0, batch_index=0))
    batch["image"].shape, batch["seg"].shape   # (2, C, 73, 80, 64) float32, (2, 1, 73, 80, 64) int16
    batches = iter(make_dataloader(folder, case_ids, settings, num_workers=2, seed=0))
    batch = next(batches)                      # the same batch, built in a worker process
    batches = background_batches(folder, case_ids, settings, seed=0)   # ... or by a thread

The loader only reads and crops: each batch holds the larger *loaded* patch, raw (image padded
with 0, labels with ``OUTSIDE_LABEL`` -1). Augmentation runs afterwards, batched on the training
device, and center-crops to ``patch_size`` (``nnseg_nb.augment``).

Randomness: batch ``k`` of a stream is drawn from its own generator, ``batch_rng(seed, k)``. The
stream is therefore a function of ``seed`` alone: the same with 0, 1 or 8 workers (or threads)
and whatever the timing, because batches are handed back in order.
"""

from __future__ import annotations

import functools
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnseg_nb.preprocessed import CaseArrays, ClassKey, open_case, read_class_locations
from nnseg_nb.preprocessing import OUTSIDE_LABEL

# Fill value for image voxels of a patch that lie outside the volume; labels get OUTSIDE_LABEL (-1),
# the "outside" label the preprocessing gives background outside the nonzero mask.
IMAGE_PAD_VALUE = 0


@dataclass(frozen=True)
class SamplerSettings:
    """How patches are cut (nnU-Net's defaults; the trainer fills in the plan's numbers).

    >>> SamplerSettings(patch_size=(56, 40), batch_size=12).forced_foreground()
    [False, False, False, False, False, False, False, False, True, True, True, True]
    """

    patch_size: tuple[int, ...]  # final patch the network sees: (Z, Y, X), or (Y, X) for 2D
    # the larger patch cut so that rotation and scaling have context (augment.loaded_patch_size);
    # None: patch_size (validation)
    loaded_patch_size: tuple[int, ...] | None = None
    batch_size: int = 2
    oversample_foreground_percent: float = (
        0.33  # the last ~33% of each batch is centred on a foreground voxel
    )
    has_ignore: bool = False  # dataset has an ignore label: centre the other samples on annotated voxels
    previous_stage_folder: str | Path | None = (
        None  # cascade: lowres predictions on this grid, stacked as seg channel 1
    )

    def __post_init__(self):
        if len(self.patch_size) not in (2, 3):
            raise ValueError(f"patch_size must have 2 (2D) or 3 (3D) entries, got {self.patch_size}")
        if self.loaded_patch_size is not None and len(self.loaded_patch_size) != len(self.patch_size):
            raise ValueError(
                f"loaded_patch_size {self.loaded_patch_size} and patch_size {self.patch_size} "
                "must have the same number of axes"
            )
        if self.batch_size < 1 or not 0 <= self.oversample_foreground_percent <= 1:
            raise ValueError("batch_size must be >= 1 and oversample_foreground_percent in [0, 1]")

    @property
    def is_2d(self) -> bool:
        return len(self.patch_size) == 2

    @property
    def loaded_patch_size_3d(self) -> tuple[int, int, int]:
        """The patch cut from the 3D volume: ``loaded_patch_size``, with a leading 1 for 2D."""
        patch = tuple(self.loaded_patch_size or self.patch_size)
        return (1, *patch) if self.is_2d else patch

    @property
    def need_to_pad(self) -> tuple[int, int, int]:
        """How far beyond the volume a random patch may reach, in total per axis: ``loaded - final``.

        So the final patch, cut from the centre after augmentation, can still reach the border.
        0 along the slice axis of a 2D patch. (nnU-Net 2.8.1 does this for 2D too; some earlier
        versions padded 2D patches by 0, replacing the final patch by ``(1, *loaded)``.)

        >>> SamplerSettings(patch_size=(56, 40), loaded_patch_size=(65, 65)).need_to_pad
        (0, 9, 25)
        """
        final = (1, *self.patch_size) if self.is_2d else tuple(self.patch_size)
        return tuple(int(i) - int(p) for i, p in zip(self.loaded_patch_size_3d, final))

    def forced_foreground(self) -> list[bool]:
        """Which positions of a batch are forced to foreground: ``j >= round(bs * (1 - percent))``.

        By position, not by chance (Python's ``round`` rounds half to even, as nnU-Net's does).
        """
        first_forced = round(self.batch_size * (1 - self.oversample_foreground_percent))
        return [j >= first_forced for j in range(self.batch_size)]


# --------------------------------------------------------------------------------------------
# Where a patch goes
# --------------------------------------------------------------------------------------------


def lower_corner_bounds(
    shape: Sequence[int], patch: Sequence[int], need_to_pad: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Range ``[lb, ub]`` (inclusive) of a patch's lower corner along each axis.

    The patch may stick out by about ``need_to_pad / 2`` on either side; a volume smaller than the
    patch is padded on both sides.

    >>> lower_corner_bounds(shape=(100, 20), patch=(64, 32), need_to_pad=(10, 10))
    ([-5, -6], [41, -6])
    """
    lbs, ubs = [], []
    for size, p, pad in zip(shape, patch, need_to_pad):
        if size + pad < p:
            pad = p - size
        lbs.append(-pad // 2)
        ubs.append(size + pad // 2 + pad % 2 - p)
    return lbs, ubs


def is_annotated_key(key: ClassKey) -> bool:
    """The ignore-label datasets' extra key ``(-1, *all_labels)``: every annotated voxel."""
    return isinstance(key, tuple) and len(key) > 0 and key[0] == -1


def choose_class(class_locations: dict, rng: np.random.Generator) -> ClassKey | None:
    """Pick the class a forced-foreground patch is centred on: uniform over the classes present.

    Uniform over classes, not voxels: a case with a large and a tiny class gives each half of its
    forced patches. The "annotated" key only counts when nothing else is present; None if no class is.

    >>> choose_class({1: [], 2: [[0, 3, 4, 5]], (-1, 1, 2): [[0, 0, 0, 0]]}, np.random.default_rng(0))
    2
    """
    present = [key for key, locations in class_locations.items() if len(locations) > 0]
    if len(present) > 1:
        present = [key for key in present if not is_annotated_key(key)]
    if not present:
        return None
    return present[int(rng.integers(len(present)))]


def choose_lower_corner(
    shape: Sequence[int],
    settings: SamplerSettings,
    forced: bool,
    class_locations: dict | None,
    rng: np.random.Generator,
    case: str = "",
) -> tuple[list[int], ClassKey | None]:
    """Lower corner of one patch in the 3D volume, and the class it was centred on (None: random).

    Args:
        shape: (Z, Y, X) of the volume.
        forced: centre the patch on a voxel of a randomly chosen class present in the case.
        class_locations: ``{class key: [[0, z, y, x], ...]}``; only read when needed (forced, or ignore label).

    A centred patch puts the voxel at ``voxel - patch // 2`` (at least ``lb``; no upper clamp,
    padding covers it). With an ignore label, unforced patches are centred on an annotated voxel,
    so a patch is never entirely unlabelled.
    """
    patch = settings.loaded_patch_size_3d
    lbs, ubs = lower_corner_bounds(shape, patch, settings.need_to_pad)
    selected = None
    if forced:
        selected = choose_class(class_locations, rng)
    elif settings.has_ignore:
        selected = next((key for key in class_locations if is_annotated_key(key)), None)
        if selected is None:
            raise ValueError(
                f"case {case!r}: has_ignore is set but class_locations has no annotated key "
                "(-1, *labels); preprocess with the dataset's ignore label"
            )
        if len(class_locations[selected]) == 0:
            warnings.warn(f"case {case!r} has no annotated voxel; cutting a random patch", stacklevel=2)
            selected = None
    if selected is None:
        return [int(rng.integers(lb, ub + 1)) for lb, ub in zip(lbs, ubs)], None
    locations = class_locations[selected]
    voxel = locations[int(rng.integers(len(locations)))]  # [0, z, y, x]
    return [max(lb, int(v) - p // 2) for lb, v, p in zip(lbs, voxel[1:], patch)], selected


def crop_and_pad(
    array: np.ndarray, box: Sequence[Sequence[int]], pad_value: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Cut ``box`` (half-open ``[[lo, hi), ...]`` per spatial axis, may leave the volume) from ``array``.

    Only the part inside the volume is read, so a memory-mapped ``array`` reads just the patch.

    Args:
        array: (C, Z, Y, X) (or any (C, *spatial)).
        out: (C, *box extent) buffer to fill; allocated with ``array``'s dtype if None.

    >>> crop_and_pad(np.arange(4).reshape(1, 4), [[-2, 3]], pad_value=-1)
    array([[-1, -1,  0,  1,  2]])
    """
    spatial = array.shape[1:]
    inside = [slice(max(lo, 0), min(hi, size)) for (lo, hi), size in zip(box, spatial)]
    if out is None:
        out = np.empty((array.shape[0], *(hi - lo for lo, hi in box)), dtype=array.dtype)
    out.fill(pad_value)
    if all(s.stop > s.start for s in inside):
        target = tuple(slice(s.start - lo, s.stop - lo) for s, (lo, _) in zip(inside, box))
        out[(slice(None), *target)] = array[(slice(None), *inside)]
    return out


# --------------------------------------------------------------------------------------------
# Reading cases (memory-mapped: only the patch is read from disk)
# --------------------------------------------------------------------------------------------


class CaseReader:
    """Opens cases of one folder and reads their class locations, remembering the last ``cache_size``.

    Opening a memory map and reading the class locations cost more than cutting a small patch, so a
    stream keeps recent cases open (a memory map holds a file handle, not the data). Cases read
    whole (nnU-Net's ``.npz`` files) are not kept.
    """

    def __init__(
        self, folder: str | Path, previous_stage_folder: str | Path | None = None, cache_size: int = 64
    ):
        self.folder, self.previous_stage_folder = Path(folder), previous_stage_folder
        self.memory_mapped = functools.lru_cache(cache_size)(self._open)
        self.class_locations = functools.lru_cache(cache_size)(self._read_class_locations)

    def arrays(self, case: str) -> CaseArrays:
        if (self.folder / f"{case}.npy").is_file() or (self.folder / f"{case}.b2nd").is_file():
            return self.memory_mapped(case)  # opened, not read: cheap to keep
        return self._open(case)

    def _open(self, case: str) -> CaseArrays:
        return open_case(self.folder, case, self.previous_stage_folder)

    def _read_class_locations(self, case: str) -> dict[ClassKey, np.ndarray]:
        return read_class_locations(self.folder, case)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def batch_rng(seed: int, batch_index: int) -> np.random.Generator:
    """The generator batch ``batch_index`` of the stream seeded with ``seed`` is drawn from."""
    return np.random.default_rng([seed, batch_index])


def sample_batch(
    source: str | Path | CaseReader,
    case_ids: Sequence[str],
    settings: SamplerSettings,
    rng: np.random.Generator,
) -> dict:
    """Build one batch: cases uniform with replacement, the last ~33% centred on foreground.

    Args:
        source: preprocessed configuration folder (``<case>.npy``, ``<case>_seg.npy``, ``<case>.json``),
            or a ``CaseReader`` of it (keeps cases open between batches).
        case_ids: the cases to draw from (e.g. one fold's training cases).
        rng: the batch's generator (see ``batch_rng``).

    Returns:
        dict with ``image`` (B, C, *patch) float32 and ``seg`` (B, S, *patch) int16 tensors (S = 2 for
        the cascade: seg channel 1 is the previous stage's prediction), where ``patch`` is the loaded
        patch, without the slice axis for 2D; ``case_ids`` (B names);
        ``forced_foreground`` (B,) bool; ``crop_boxes`` (B, 3, 2) half-open boxes in the 3D volume;
        ``selected_classes`` (the class each patch was centred on, None for a random patch).
    """
    if len(case_ids) == 0:
        raise ValueError("sample_batch needs at least one case")
    reader = source if isinstance(source, CaseReader) else CaseReader(source, settings.previous_stage_folder)
    patch = settings.loaded_patch_size_3d
    chosen = [case_ids[i] for i in rng.integers(len(case_ids), size=settings.batch_size)]
    forced_flags = settings.forced_foreground()
    image, seg = None, None
    boxes, selected_classes = [], []
    for j, (case, forced) in enumerate(zip(chosen, forced_flags)):
        arrays = reader.arrays(case)
        if image is None:  # shapes known once the first case is open
            seg_channels = 1 + (arrays.previous_seg is not None)
            image = torch.empty((settings.batch_size, arrays.data.shape[0], *patch), dtype=torch.float32)
            seg = torch.empty((settings.batch_size, seg_channels, *patch), dtype=torch.int16)
        needs_locations = forced or settings.has_ignore
        class_locations = reader.class_locations(case) if needs_locations else None
        corner, selected = choose_lower_corner(
            arrays.data.shape[1:], settings, forced, class_locations, rng, case
        )
        box = [[lo, lo + p] for lo, p in zip(corner, patch)]
        crop_and_pad(arrays.data, box, IMAGE_PAD_VALUE, out=image[j].numpy())
        crop_and_pad(arrays.seg, box, OUTSIDE_LABEL, out=seg[j, :1].numpy())
        if arrays.previous_seg is not None:
            crop_and_pad(arrays.previous_seg, box, OUTSIDE_LABEL, out=seg[j, 1:].numpy())
        boxes.append(box)
        selected_classes.append(selected)
    if settings.is_2d:  # drop the singleton slice axis: (B, C, 1, Y, X) -> (B, C, Y, X)
        image, seg = image[:, :, 0], seg[:, :, 0]
    return {
        "image": image,
        "seg": seg,
        "case_ids": chosen,
        "forced_foreground": torch.tensor(forced_flags),
        "crop_boxes": torch.tensor(boxes, dtype=torch.int64),
        "selected_classes": selected_classes,
    }


class PatchStream(torch.utils.data.IterableDataset):
    """An endless stream of whole batches (no epochs, as in nnU-Net), for a torch DataLoader.

    With ``n`` workers, worker ``w`` builds batches ``w, w + n, w + 2n, ...``; the DataLoader
    returns them in order, so the stream equals ``sample_batch(..., batch_rng(seed, k))`` for
    k = first_batch, first_batch + 1, ... whatever the number of workers.
    """

    def __init__(
        self,
        folder: str | Path,
        case_ids: Sequence[str],
        settings: SamplerSettings,
        seed: int = 0,
        first_batch: int = 0,
    ):
        super().__init__()
        self.folder, self.case_ids, self.settings = Path(folder), list(case_ids), settings
        self.seed, self.first_batch = seed, first_batch

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        reader = CaseReader(self.folder, self.settings.previous_stage_folder)  # made here: one per process
        batch_index = self.first_batch + worker_id
        while True:
            yield _numbered_batch(reader, self.case_ids, self.settings, self.seed, batch_index)
            batch_index += num_workers


def _numbered_batch(
    reader: CaseReader, case_ids: Sequence[str], settings: SamplerSettings, seed: int, batch_index: int
) -> dict:
    batch = sample_batch(reader, case_ids, settings, batch_rng(seed, batch_index))
    batch["batch_index"] = batch_index
    return batch


def make_dataloader(
    folder: str | Path,
    case_ids: Sequence[str],
    settings: SamplerSettings,
    num_workers: int = 2,
    seed: int = 0,
    pin_memory: bool | None = None,
    first_batch: int = 0,
    prefetch_factor: int = 2,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``PatchStream``: whole batches from worker processes, endless.

    Make one iterator and keep it (``batches = iter(loader)``, then ``next(batches)`` per step);
    a new iterator starts the stream again at ``first_batch``. Workers persist between iterators.
    A worker hands each batch over through shared memory, a copy that for the large loaded patch
    can cost more than cutting it (about 1 ms per MB on a 2-core machine); ``background_batches``
    builds the same stream in threads without that copy.

    Args:
        num_workers: worker processes (0: build batches in this process). The batches do not depend on it.
        seed: the stream's seed; the same seed gives the same batches.
        pin_memory: page-locked batches for fast copies to the GPU; None: when CUDA is available.
        first_batch: index of the first batch (resume a stream where a run stopped).
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    stream = PatchStream(folder, case_ids, settings, seed=seed, first_batch=first_batch)
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        collate_fn=_as_is,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )


def _as_is(batch: dict) -> dict:
    # batches are complete already; torch's default would turn region keys (tuples) into lists
    return batch


def background_batches(
    folder: str | Path,
    case_ids: Sequence[str],
    settings: SamplerSettings,
    seed: int = 0,
    threads: int = 1,
    prefetch: int = 2,
    first_batch: int = 0,
) -> Iterator[dict]:
    """The same endless stream as ``make_dataloader``, built by threads of this process.

    Cutting a patch is mostly a memory copy, which numpy does without holding the GIL, so threads
    overlap with the training step. Unlike worker processes, they hand batches over without copying
    them through shared memory, which matters here because the batches hold the large loaded patch.

    Args:
        threads: threads building batches; ``prefetch`` batches per thread are built ahead.
    """
    reader = CaseReader(folder, settings.previous_stage_folder)  # shared: lru_cache is thread-safe
    ahead = threads * prefetch
    with ThreadPoolExecutor(threads, thread_name_prefix="nnseg-loader") as pool:
        pending = deque(
            pool.submit(_numbered_batch, reader, case_ids, settings, seed, k)
            for k in range(first_batch, first_batch + ahead)
        )
        next_index = first_batch + ahead
        while True:
            batch = pending.popleft().result()  # oldest first: the order never depends on timing
            pending.append(pool.submit(_numbered_batch, reader, case_ids, settings, seed, next_index))
            next_index += 1
            yield batch
