"""Resumable randomness: patches (``loader.batch_rng``) and augmentation (``augment.batch_generator``)
both depend only on (seed, batch index), so a run resumed at batch k draws the batches it would have."""

from __future__ import annotations

import itertools

import torch
from test_loader import blob_case

from nnseg_nb import augment, loader


def augmented_stream(folder, settings, pipeline, seed: int, first_batch: int, n: int) -> list[dict]:
    """n batches of the loader's stream from ``first_batch`` on, each augmented with its own generator."""
    batches = iter(
        loader.make_dataloader(
            folder, ["a", "b"], settings, num_workers=0, seed=seed, first_batch=first_batch
        )
    )
    out = []
    for batch in itertools.islice(batches, n):
        generator = augment.batch_generator(seed, batch["batch_index"], "cpu")
        image, seg = batch["image"], batch["seg"]
        out.append(
            {
                "batch_index": batch["batch_index"],
                **augment.augment({"image": image, "seg": seg}, pipeline, generator),
            }
        )
    return out


def test_a_resumed_stream_repeats_the_uninterrupted_one(tmp_path):
    blob_case(tmp_path, "a", at=(4, 10, 20))
    blob_case(tmp_path, "b", at=(12, 5, 8), label=1)
    patch = (12, 12, 12)
    rotation, dummy_2d, mirror_axes = augment.rotation_and_mirroring_for(patch)
    loaded = augment.loaded_patch_size(patch, rotation, dummy_2d=dummy_2d)
    settings = loader.SamplerSettings(patch_size=patch, loaded_patch_size=loaded, batch_size=3)
    settings_always = augment.AugmentSettings(p_rotation=1.0, p_scaling=1.0, p_noise=1.0, p_gamma=1.0)
    pipeline = augment.training_pipeline(patch, rotation, mirror_axes, dummy_2d, settings=settings_always)

    whole = augmented_stream(tmp_path, settings, pipeline, seed=7, first_batch=0, n=5)
    resumed = augmented_stream(tmp_path, settings, pipeline, seed=7, first_batch=3, n=2)
    assert [b["batch_index"] for b in resumed] == [3, 4]
    for ours, theirs in zip(resumed, whole[3:]):
        assert torch.equal(ours["image"], theirs["image"]) and torch.equal(ours["seg"], theirs["seg"])
    # and the batches differ from each other: the index matters, not only the seed
    assert not torch.equal(whole[3]["image"], whole[4]["image"])
    other_seed = augmented_stream(tmp_path, settings, pipeline, seed=8, first_batch=3, n=1)[0]
    assert not torch.equal(other_seed["image"], whole[3]["image"])


def test_batch_generator_depends_on_seed_and_index_only():
    draw = lambda seed, index: torch.rand(4, generator=augment.batch_generator(seed, index, "cpu"))  # noqa: E731
    assert torch.equal(draw(0, 5), draw(0, 5))
    assert not torch.equal(draw(0, 5), draw(0, 6)) and not torch.equal(draw(0, 5), draw(1, 5))
    assert not torch.equal(draw(0, 1), draw(1, 0))  # (seed, index) is not mixed by a sum
    assert augment.batch_generator(0, 0, "cuda").device.type == "cpu"  # parameters are drawn on the CPU
