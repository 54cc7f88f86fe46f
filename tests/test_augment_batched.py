"""The one-kernel forms of augment's indexing helpers (used on CUDA, where a Python loop over samples or
channels launches a kernel each) give exactly what the CPU's per-sample copies give. Run here on the CPU."""

from __future__ import annotations

import torch

from nnseg_nb.augment import common, intensity, spatial


def batch(b=5, c=3, shape=(4, 6, 7)):
    return torch.randn(b, c, *shape, generator=torch.Generator().manual_seed(0))


def test_rows_and_pairs():
    x = batch()
    samples, channels = [4, 0, 2, 2], [1, 0, 2, 1]
    assert torch.equal(common._rows_gathered(x, [3, 1]), common._rows(x, [3, 1]))
    assert torch.equal(
        common._pair_rows_gathered(x, samples, channels), common._pair_rows(x, samples, channels)
    )
    values = torch.randn(3, *x.shape[2:])
    samples, channels = [4, 0, 2], [1, 0, 2]
    looped = common._update_pairs(x, samples, channels, values)
    assert torch.equal(common._update_pairs_scattered(x, samples, channels, values), looped)
    assert torch.equal(looped[4, 1], values[0]) and torch.equal(looped[4, 0], x[4, 0])


def test_flip_grouped():
    x = batch(b=9)
    flips = torch.rand(9, 3, generator=torch.Generator().manual_seed(1)) < 0.5
    flips[0] = False  # a sample not flipped at all
    assert torch.equal(spatial._flip_grouped(x, flips), spatial._flip(x, flips))


def test_std_in_one_pass_matches_row_by_row():
    x = batch().double()
    mean, std = intensity._mean_std(x)
    assert torch.allclose(x.flatten(2).std(2).view_as(std), std, rtol=0, atol=1e-12)
    assert mean.shape == std.shape == (5, 3, 1, 1, 1)
