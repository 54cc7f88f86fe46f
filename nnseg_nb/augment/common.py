"""What every augmentation step shares: the ``Transform`` protocol, the batch and parameter dicts, how
random numbers are drawn (one CPU generator per batch, ``batch_generator``) and the per-sample indexing
helpers that let a step touch only the samples it augments.

    generator = batch_generator(seed=0, batch_index=7)   # the same parameters for batch 7, resumed or not
    params = GaussianNoise().sample(batch, generator)     # a dict of (B, ...) CPU tensors
    batch = GaussianNoise().apply(batch, params)          # ... used on the batch's device
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

Batch = dict  # {"image": (B, C, *spatial) float, "seg": (B, S, *spatial) int | list, ...}
Params = dict  # {name: (B, ...) CPU tensor}


def batch_generator(seed: int, batch_index: int, device: torch.device | str | None = None) -> torch.Generator:
    """The generator augmentation draws batch ``batch_index``'s parameters from: a CPU ``torch.Generator``
    seeded from ``(seed, batch_index)`` alone (``np.random.SeedSequence``), as ``loader.batch_rng`` seeds the
    patch sampler. A run resumed at batch k draws exactly the augmentations it would have drawn.

    ``device`` is the device the batch lives on. Parameters are always drawn on the CPU, so the generator is
    a CPU one whatever it is (and a seed gives the same parameters on CPU and CUDA); per-voxel noise is then
    drawn on ``device`` from a seed taken from this generator.

    >>> a = torch.rand(3, generator=batch_generator(0, 5, "cuda"))
    >>> torch.equal(a, torch.rand(3, generator=batch_generator(0, 5))), batch_generator(0, 5).device
    (True, device(type='cpu'))
    """
    if device is not None:
        torch.device(device)  # a clear error for a misspelt device, even though nothing is drawn there
    (state,) = np.random.SeedSequence([seed, batch_index]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


# ----------------------------------------------------------------------------------------------------------
# Sampling helpers: everything random is drawn here, on the CPU, from the one generator
# ----------------------------------------------------------------------------------------------------------


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _coin(p: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64) < p


def bg_contrast(
    value_range: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    """batchgeneratorsv2's ``BGContrast``: half the factors fall in U(low, 1), half in U(max(low, 1), high).

    So decreases and increases are equally likely, although (0.75, 1.25) or (0.7, 1.5) are not centered on 1.

    >>> f = bg_contrast((0.7, 1.5), (10000,), torch.Generator().manual_seed(0))
    >>> round(float((f < 1).float().mean()), 1), bool(f.min() >= 0.7), bool(f.max() <= 1.5)
    (0.5, True, True)
    """
    low, high = value_range
    below_one = _coin(0.5, shape, generator) & (low < 1)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    upper_low = max(low, 1.0)
    return torch.where(below_one, low + (1 - low) * u, upper_low + (high - upper_low) * u)


def _indices(mask: Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def _one_kernel(x: Tensor) -> bool:
    """Whether to index a batch with one gather/scatter (CUDA: a loop over samples or channels would launch
    one kernel each) or with a block copy per sample (CPU: 2-3x faster than ATen's indexing, which goes
    element by element). Both give the same values; the ``*_gathered`` helpers are the one-kernel forms."""
    return x.device.type != "cpu"


def _index(values: list[int], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=like.device)


def _rows(x: Tensor, samples: list[int]) -> Tensor:
    """``x[samples]``, a new tensor."""
    if _one_kernel(x):
        return _rows_gathered(x, samples)
    return torch.stack([x[i] for i in samples])


def _rows_gathered(x: Tensor, samples: list[int]) -> Tensor:
    return x.index_select(0, _index(samples, x))


def _pair_rows(x: Tensor, samples: list[int], channels: list[int]) -> Tensor:
    """``x[samples, channels]`` (paired lists), a new tensor (N, *spatial)."""
    if _one_kernel(x):
        return _pair_rows_gathered(x, samples, channels)
    return torch.stack([x[b, c] for b, c in zip(samples, channels)])


def _pair_rows_gathered(x: Tensor, samples: list[int], channels: list[int]) -> Tensor:
    return x[_index(samples, x), _index(channels, x)]


def _spatial_ndim(batch: Batch) -> int:
    return batch["image"].ndim - 2


def _replace(batch: Batch, **new) -> Batch:
    return {**batch, **new}


class Transform:
    """One augmentation step. ``sample`` draws per-sample parameters on the CPU; ``apply`` uses them.

    Subclasses are dataclasses whose fields are the settings (probabilities, ranges).
    """

    def sample(self, batch: Batch, generator: torch.Generator) -> Params:
        return {}

    def apply(self, batch: Batch, params: Params) -> Batch:
        raise NotImplementedError

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        return self.apply(batch, self.sample(batch, generator))


# ----------------------------------------------------------------------------------------------------------
# Only the samples (or sample-channel pairs) a step augments
# ----------------------------------------------------------------------------------------------------------


def _pairs(applied: Tensor, per_channel: Tensor) -> tuple[list[int], list[int]]:
    """(sample, channel) index lists where the sample is augmented and the channel chosen."""
    b, c = (applied[:, None] & per_channel).nonzero().unbind(1)
    return b.tolist(), c.tolist()


def _assemble(parts: list[tuple[list[int], Tensor]]) -> Tensor:
    """One batch from (sample indices, their values) parts that together cover every sample once."""
    if len(parts) == 1:
        return parts[0][1]
    out = torch.empty(
        (sum(len(i) for i, _ in parts), *parts[0][1].shape[1:]),
        dtype=parts[0][1].dtype,
        device=parts[0][1].device,
    )
    for samples, values in parts:
        if _one_kernel(out):
            out.index_copy_(0, _index(samples, out), values)
            continue
        for i, value in zip(samples, values):
            out[i].copy_(value)  # a block copy per sample (index_copy_ goes element by element)
    return out


def _update(image: Tensor, samples: list[int], values: Tensor) -> Tensor:
    """image with its ``samples`` replaced by ``values`` (a new tensor; values itself if that is all of them)."""
    others = [b for b in range(len(image)) if b not in samples]
    return _assemble([(samples, values)] + ([(others, _rows(image, others))] if others else []))


def _update_pairs(image: Tensor, samples: list[int], channels: list[int], values: Tensor) -> Tensor:
    """image with ``image[samples, channels]`` (paired lists) replaced by ``values``, a new tensor."""
    if _one_kernel(image):
        return _update_pairs_scattered(image, samples, channels, values)
    out = image.clone()
    for b, c, value in zip(samples, channels, values):
        out[b, c].copy_(value)
    return out


def _update_pairs_scattered(image: Tensor, samples: list[int], channels: list[int], values: Tensor) -> Tensor:
    return image.index_put((_index(samples, image), _index(channels, image)), values.to(image.dtype))


# ----------------------------------------------------------------------------------------------------------
# nearest-exact downsampling (low-resolution simulation and deep-supervision targets)
# ----------------------------------------------------------------------------------------------------------


def _nearest_exact_indices(size: int, new_size: int) -> Tensor:
    """Input voxel each output voxel copies in ``interpolate(mode="nearest-exact")`` from size to new_size.

    ATen: ``floorf((j + 0.5) * scale)`` with the float32 ``scale = size / new_size``.
    """
    scale = (torch.tensor(size, dtype=torch.float32) / new_size).double()
    return (
        ((torch.arange(new_size, dtype=torch.float64) + 0.5) * scale)
        .float()
        .floor()
        .long()
        .clamp(max=size - 1)
    )


@functools.lru_cache(maxsize=1024)
def _nearest_exact_selection(size: int, new_size: int) -> slice | Tensor:
    """``_nearest_exact_indices`` as a slice when they are a regular progression (a strided view, no gather),
    else the index tensor. Cached: the same few sizes come back every batch."""
    index = _nearest_exact_indices(size, new_size)
    start, step = int(index[0]), int(index[1] - index[0]) if len(index) > 1 else 1
    if step > 0 and torch.equal(index, start + step * torch.arange(len(index))):
        return slice(start, start + (len(index) - 1) * step + 1, step)
    return index


def _nearest_exact_downsample(x: Tensor, new_shape: Sequence[int]) -> Tensor:
    """``interpolate(x, new_shape, mode="nearest-exact")`` on the trailing axes, for any dtype: strided views
    where the kept voxels are evenly spaced, a gather elsewhere, and one copy at the end."""
    spatial = x.shape[x.ndim - len(new_shape) :]
    if tuple(spatial) == tuple(new_shape):
        return x
    lead = x.ndim - len(new_shape)
    selections = [_nearest_exact_selection(size, new) for size, new in zip(spatial, new_shape)]
    x = x[(slice(None),) * lead + tuple(s if isinstance(s, slice) else slice(None) for s in selections)]
    for axis, selection in enumerate(selections):
        if not isinstance(selection, slice):
            x = x.index_select(lead + axis, selection.to(x.device))
    return x.contiguous()
