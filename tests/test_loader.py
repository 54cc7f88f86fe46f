"""Patch sampling: nnU-Net's oversampling rule, bounds, padding, 2D, ignore label, cascade, seeding."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg_nb.loader import (
    CaseReader,
    SamplerSettings,
    background_batches,
    batch_rng,
    choose_class,
    choose_lower_corner,
    lower_corner_bounds,
    make_dataloader,
    sample_batch,
)
from nnseg_nb.preprocessed import open_case, read_class_locations


def class_locations_of(seg, keys):
    """{json key: [[0, z, y, x], ...]} for each label or region (tuple) in ``keys``."""
    locations = {}
    for key in keys:
        labels = list(key) if isinstance(key, tuple) else [key]
        locations[str(key)] = np.argwhere(np.isin(seg, labels)).tolist()
    return locations


def write_case(folder, case, data, seg, keys=(1,), class_locations=None):
    """A preprocessed case as preprocessing writes it: .npy image, _seg.npy, .json properties."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{case}.npy", np.asarray(data, np.float32))
    np.save(folder / f"{case}_seg.npy", np.asarray(seg, np.int16))
    if class_locations is None:
        class_locations = class_locations_of(seg, keys)
    (folder / f"{case}.json").write_text(
        json.dumps({"spacing": [1.0, 1.0, 1.0], "class_locations": class_locations})
    )


def ramp(shape, channels=1):
    """Positive, position-unique image values, so padding (0) and misplaced crops are visible."""
    return 1 + np.arange(channels * np.prod(shape), dtype=np.float32).reshape(channels, *shape)


def blob_case(folder, case="blob", shape=(20, 30, 40), at=(10, 12, 25), label=1, keys=None):
    seg = np.zeros((1, *shape), np.int16)
    seg[0, at[0] : at[0] + 2, at[1] : at[1] + 2, at[2] : at[2] + 2] = label
    write_case(folder, case, ramp(shape), seg, keys=keys or (label,))
    return seg


def batches(folder, cases, settings, seed, n):
    return [sample_batch(folder, cases, settings, batch_rng(seed, k)) for k in range(n)]


@pytest.mark.parametrize("batch_size, forced", [(2, [1]), (9, [6, 7, 8]), (12, [8, 9, 10, 11]), (1, [])])
def test_forced_positions_follow_nnunet_rounding(tmp_path, batch_size, forced):
    blob_case(tmp_path)
    for initial in [(24, 24, 24), None]:  # training and validation loaders alike
        settings = SamplerSettings(patch_size=(16, 16, 16), loaded_patch_size=initial, batch_size=batch_size)
        assert [j for j, f in enumerate(settings.forced_foreground()) if f] == forced
        batch = sample_batch(tmp_path, ["blob"], settings, batch_rng(0, 0))
        assert batch["forced_foreground"].nonzero().flatten().tolist() == forced


def test_forced_patches_have_the_class_at_their_centre(tmp_path):
    blob_case(tmp_path, at=(10, 12, 25))
    settings = SamplerSettings(
        patch_size=(8, 12, 16),
        loaded_patch_size=(12, 18, 22),
        batch_size=4,
        oversample_foreground_percent=1.0,
    )
    centre = tuple(p // 2 for p in settings.loaded_patch_size_3d)
    for batch in batches(tmp_path, ["blob"], settings, seed=3, n=25):
        assert batch["forced_foreground"].all()
        assert (batch["seg"][(slice(None), 0, *centre)] == 1).all()
        assert batch["selected_classes"] == [1] * 4
    # the lower corner is voxel - patch // 2, clamped below at lb only (no upper clamp)
    locations = {1: [[0, 19, 29, 39]]}
    corner, _ = choose_lower_corner((20, 30, 40), settings, True, locations, np.random.default_rng(0))
    assert corner == [19 - 6, 29 - 9, 39 - 11]
    corner, _ = choose_lower_corner(
        (20, 30, 40), settings, True, {1: [[0, 0, 1, 2]]}, np.random.default_rng(0)
    )
    assert corner == [-2, -3, -3]  # lb = -need_to_pad // 2 with need_to_pad (4, 6, 6)


def test_bounds_by_hand():
    # 3D training: need_to_pad = initial - patch = (33, 24, 24); -33 // 2 = -17
    lbs, ubs = lower_corner_bounds((100, 100, 100), (73, 80, 64), (33, 24, 24))
    assert (lbs, ubs) == ([-17, -12, -12], [100 + 16 + 1 - 73, 100 + 12 - 80, 100 + 12 - 64])
    # volume smaller than the patch: need_to_pad grows to patch - shape, padded on both sides
    assert lower_corner_bounds((4, 5, 6), (8, 8, 8), (0, 0, 0)) == ([-2, -2, -1], [-2, -1, -1])


def test_random_patches_cover_the_bounds_and_pad_image_0_seg_minus_1(tmp_path):
    shape = (4, 5, 6)
    data = ramp(shape, channels=2)
    seg = np.ones((1, *shape), np.int16)
    write_case(tmp_path, "small", data, seg)
    settings = SamplerSettings(patch_size=(8, 8, 8), batch_size=3, oversample_foreground_percent=0.0)
    seen = set()
    for batch in batches(tmp_path, ["small"], settings, seed=0, n=20):
        assert batch["image"].shape == (3, 2, 8, 8, 8) and batch["image"].dtype == torch.float32
        assert batch["seg"].shape == (3, 1, 8, 8, 8) and batch["seg"].dtype == torch.int16
        for image, labels, box in zip(
            batch["image"].numpy(), batch["seg"].numpy(), batch["crop_boxes"].tolist()
        ):
            seen.add(tuple(lo for lo, _ in box))
            inside = tuple(slice(-lo, -lo + s) for (lo, _), s in zip(box, shape))
            np.testing.assert_array_equal(image[(slice(None), *inside)], data)
            np.testing.assert_array_equal(labels[(slice(None), *inside)], seg)
            outside = np.ones((8, 8, 8), bool)
            outside[inside] = False
            assert (image[:, outside] == 0).all() and (labels[:, outside] == -1).all()
    assert seen == {(-2, -2, -1), (-2, -1, -1)}  # every lower corner in [lb, ub], and both ends reached


def test_random_corners_are_uniform_within_lb_ub(tmp_path):
    write_case(tmp_path, "big", ramp((30, 12, 10)), np.zeros((1, 30, 12, 10)))
    settings = SamplerSettings(
        patch_size=(8, 8, 8), loaded_patch_size=(12, 8, 8), batch_size=8, oversample_foreground_percent=0.0
    )
    corners = np.concatenate(
        [b["crop_boxes"][:, :, 0].numpy() for b in batches(tmp_path, ["big"], settings, 1, 100)]
    )
    lbs, ubs = lower_corner_bounds((30, 12, 10), (12, 8, 8), (4, 0, 0))
    assert corners.min(0).tolist() == lbs and corners.max(0).tolist() == ubs == [20, 4, 2]
    counts = np.bincount(corners[:, 0] - lbs[0])  # 23 values, 800 draws: about 35 each
    assert counts.min() > 15 and counts.max() < 60


def test_cases_are_drawn_uniformly_with_replacement(tmp_path):
    """nnU-Net's loader: each batch position picks any case with equal probability, repeats allowed."""
    for case in "abcd":
        write_case(tmp_path, case, ramp((8, 8, 8)), np.zeros((1, 8, 8, 8)))
    settings = SamplerSettings(patch_size=(8, 8, 8), batch_size=3, oversample_foreground_percent=0.0)
    drawn = [b["case_ids"] for b in batches(tmp_path, list("abcd"), settings, 3, 400)]
    counts = Counter(case for ids in drawn for case in ids)  # 1200 draws: 300 each, sd about 15
    assert sorted(counts) == list("abcd") and all(240 < n < 360 for n in counts.values())
    # with replacement a batch of 3 out of 4 cases repeats one with p 1 - 4*3*2/4^3 = 0.625 (without: never)
    repeats = sum(len(set(ids)) < len(ids) for ids in drawn)
    assert 200 < repeats < 300


def test_2d_patches_come_from_3d_volumes_without_the_slice_axis(tmp_path):
    shape = (6, 20, 24)
    data = ramp(shape, channels=2)
    seg = np.zeros((1, *shape), np.int16)
    seg[0, 3, 10, 12] = 2
    write_case(tmp_path, "vol", data, seg, keys=(2,))
    settings = SamplerSettings(patch_size=(12, 16), loaded_patch_size=(16, 20), batch_size=3)
    assert settings.is_2d and settings.need_to_pad == (0, 4, 4)  # no padding along the slice axis
    corners = set()
    for batch in batches(tmp_path, ["vol"], settings, seed=0, n=30):
        assert batch["image"].shape == (3, 2, 16, 20) and batch["seg"].shape == (3, 1, 16, 20)
        for j, box in enumerate(batch["crop_boxes"].tolist()):
            (z0, z1), (y0, y1), (x0, x1) = box
            corners.add((y0, x0))
            assert (
                z1 - z0 == 1 and 0 <= z0 < 6 and -2 <= y0 <= 6 and -2 <= x0 <= 6
            )  # lb -2, ub shape + 2 - patch
            inside = np.s_[max(y0, 0) : min(y1, 20), max(x0, 0) : min(x1, 24)]
            patch_inside = np.s_[max(-y0, 0) : 16 - max(y1 - 20, 0), max(-x0, 0) : 20 - max(x1 - 24, 0)]
            np.testing.assert_array_equal(
                batch["image"][j][(slice(None), *patch_inside)].numpy(), data[(slice(None), z0, *inside)]
            )
        # the forced sample is cut from the voxel's slice and centred on it
        assert batch["crop_boxes"][2, 0].tolist() == [3, 4]
        assert batch["seg"][2, 0, 8, 10] == 2
    assert {y for y, _ in corners} >= {-2, 6} and {x for _, x in corners} >= {-2, 6}


def test_class_choice_is_uniform_over_present_classes_not_voxels(tmp_path):
    shape = (10, 16, 16)
    seg = np.zeros((1, *shape), np.int16)
    seg[0, :, :8] = 1  # 1280 voxels
    seg[0, 5, 12, 12] = 2  # 1 voxel
    # class 3 absent; region (1, 2) present: three keys to choose from, uniformly
    write_case(tmp_path, "two", ramp(shape), seg, keys=(1, 2, 3, (1, 2)))
    assert set(read_class_locations(tmp_path, "two")) == {1, 2, 3, (1, 2)}
    settings = SamplerSettings(patch_size=(4, 6, 6), batch_size=10, oversample_foreground_percent=1.0)
    chosen = Counter()
    for batch in batches(tmp_path, ["two"], settings, seed=0, n=60):
        chosen.update(batch["selected_classes"])
        for j, key in enumerate(batch["selected_classes"]):
            labels = key if isinstance(key, tuple) else (key,)
            assert batch["seg"][j, 0, 2, 3, 3].item() in labels  # centred on a voxel of that class
    assert set(chosen) == {1, 2, (1, 2)}
    for key in chosen:  # 600 draws, p = 1/3: sd 11.5
        assert abs(chosen[key] - 200) < 50


def test_case_without_foreground_falls_back_to_a_random_patch(tmp_path):
    write_case(tmp_path, "empty", ramp((10, 10, 10)), np.zeros((1, 10, 10, 10)), keys=(1, 2))
    settings = SamplerSettings(patch_size=(4, 4, 4), batch_size=2)
    batch = sample_batch(tmp_path, ["empty"], settings, batch_rng(0, 0))
    assert batch["forced_foreground"].tolist() == [False, True] and batch["selected_classes"] == [None, None]


def test_ignore_label_centres_unforced_patches_on_annotated_voxels(tmp_path):
    shape = (12, 12, 12)
    seg = np.full((1, *shape), 3, np.int16)  # 3: ignore label (labels 0, 1, 2)
    seg[0, 2:4, 2:4, 2:4] = 0  # a few annotated background voxels
    seg[0, 8, 8, 8] = 1
    annotated = (-1, 0, 1, 2)
    write_case(tmp_path, "sparse", ramp(shape), seg, keys=(1, 2, annotated))
    settings = SamplerSettings(patch_size=(4, 4, 4), batch_size=3, has_ignore=True)
    for batch in batches(tmp_path, ["sparse"], settings, seed=0, n=20):
        assert batch["selected_classes"] == [annotated, annotated, 1]  # the annotated key loses to class 1
        assert all(v in (0, 1, 2) for v in batch["seg"][:, 0, 2, 2, 2].tolist())
    # only annotated background present: the forced sample uses the annotated key too
    seg[0, 8, 8, 8] = 3
    write_case(tmp_path, "bg_only", ramp(shape), seg, keys=(1, 2, annotated))
    batch = sample_batch(tmp_path, ["bg_only"], settings, batch_rng(0, 0))
    assert batch["selected_classes"] == [annotated] * 3
    # no annotated voxel at all: a warning and a random patch; no annotated key: a clear error
    write_case(tmp_path, "none", ramp(shape), np.full((1, *shape), 3), keys=(1, 2, annotated))
    with pytest.warns(UserWarning, match="no annotated voxel"):
        sample_batch(tmp_path, ["none"], settings, batch_rng(0, 0))
    write_case(tmp_path, "old", ramp(shape), seg, keys=(1, 2))
    with pytest.raises(ValueError, match="annotated key"):
        sample_batch(tmp_path, ["old"], settings, batch_rng(0, 0))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_cascade_stacks_the_previous_stage_as_seg_channel_1(tmp_path, suffix):
    shape = (6, 7, 5)  # smaller than the patch: the whole case is inside every patch
    seg = np.zeros((1, *shape), np.int16)
    seg[0, 3, 4, 2] = 1
    write_case(tmp_path / "pre", "c", ramp(shape), seg)
    previous = (np.arange(np.prod(shape)).reshape(shape) % 3).astype(np.int16)
    (tmp_path / "prev").mkdir()
    if suffix == ".npy":
        np.save(tmp_path / "prev" / "c.npy", previous)
    else:
        np.savez_compressed(tmp_path / "prev" / "c.npz", seg=previous[None])
    settings = SamplerSettings(patch_size=(8, 8, 8), batch_size=2, previous_stage_folder=tmp_path / "prev")
    batch = sample_batch(tmp_path / "pre", ["c"], settings, batch_rng(0, 0))
    assert batch["seg"].shape == (2, 2, 8, 8, 8)
    for j, box in enumerate(batch["crop_boxes"].tolist()):
        inside = tuple(slice(-lo, -lo + s) for (lo, _), s in zip(box, shape))
        np.testing.assert_array_equal(batch["seg"][j, 1][inside].numpy(), previous)
        np.testing.assert_array_equal(batch["seg"][j, 0][inside].numpy(), seg[0])
        assert (batch["seg"][j, 1] == -1).sum() == 8**3 - np.prod(shape)  # padded like the seg
    np.save(tmp_path / "prev" / "c.npy", previous[:, :4])
    with pytest.raises(ValueError, match="same preprocessed grid"):
        sample_batch(tmp_path / "pre", ["c"], settings, batch_rng(0, 0))


def test_same_seed_same_batches_through_the_dataloader_with_workers(tmp_path):
    for i in range(5):
        blob_case(tmp_path, f"case{i}", shape=(12, 14, 16), at=(2 * i, 3, 4), keys=(1, (1, 2)))
    cases = [f"case{i}" for i in range(5)]
    settings = SamplerSettings(
        patch_size=(8, 8, 8),
        loaded_patch_size=(10, 10, 12),
        batch_size=3,
        oversample_foreground_percent=0.67,
    )
    expected = batches(tmp_path, cases, settings, seed=7, n=6)
    assert (1, 2) in sum((b["selected_classes"] for b in expected), [])
    streams = {
        f"{n} workers": iter(make_dataloader(tmp_path, cases, settings, num_workers=n, seed=7))
        for n in (0, 2)
    }
    streams["2 threads"] = background_batches(tmp_path, cases, settings, seed=7, threads=2)
    for how, stream in streams.items():
        for k, want in enumerate(expected):
            got = next(stream)
            assert got["batch_index"] == k and got["case_ids"] == want["case_ids"]
            assert got["selected_classes"] == want["selected_classes"]  # region keys stay tuples
            for name in ("image", "seg", "crop_boxes", "forced_foreground"):
                assert torch.equal(got[name], want[name]), (how, k, name)
    other = batches(tmp_path, cases, settings, seed=8, n=6)
    assert any(not torch.equal(a["crop_boxes"], b["crop_boxes"]) for a, b in zip(expected, other))
    resumed = next(iter(make_dataloader(tmp_path, cases, settings, num_workers=0, seed=7, first_batch=4)))
    assert torch.equal(resumed["image"], expected[4]["image"])


def test_reads_are_memory_mapped(tmp_path):
    blob_case(tmp_path)
    (tmp_path / "prev").mkdir()
    np.save(tmp_path / "prev" / "blob.npy", np.zeros((20, 30, 40), np.int16))
    arrays = open_case(tmp_path, "blob", previous_stage_folder=tmp_path / "prev")
    assert isinstance(arrays.data, np.memmap) and isinstance(arrays.seg, np.memmap)
    assert isinstance(arrays.previous_seg, np.memmap)
    # a stream's reader keeps recent cases open and their class locations parsed, at most cache_size
    reader = CaseReader(tmp_path, cache_size=1)
    first = reader.arrays("blob")
    assert reader.arrays("blob") is first
    locations = reader.class_locations("blob")
    assert reader.class_locations("blob") is locations and locations[1].shape == (8, 4)
    blob_case(tmp_path, "other")
    reader.arrays("other")
    assert reader.arrays("blob") is not first and reader.memory_mapped.cache_info().currsize == 1


def test_missing_files_are_named(tmp_path):
    blob_case(tmp_path)
    settings = SamplerSettings(patch_size=(8, 8, 8), batch_size=2)
    with pytest.raises(FileNotFoundError, match="no preprocessed case 'nope'"):
        sample_batch(tmp_path, ["nope"], settings, batch_rng(0, 0))
    with pytest.raises(FileNotFoundError, match="no preprocessed case 'nope'"):  # from a thread, too
        next(background_batches(tmp_path, ["nope"], settings))
    (tmp_path / "blob_seg.npy").rename(tmp_path / "seg.npy")
    with pytest.raises(FileNotFoundError, match="blob_seg.npy"):
        sample_batch(tmp_path, ["blob"], settings, batch_rng(0, 0))
    (tmp_path / "seg.npy").rename(tmp_path / "blob_seg.npy")
    (tmp_path / "blob.json").write_text('{"spacing": [1, 1, 1]}')
    with pytest.raises(ValueError, match="blob.json: no 'class_locations'"):
        sample_batch(tmp_path, ["blob"], settings, batch_rng(0, 0))
    prev = SamplerSettings(patch_size=(8, 8, 8), batch_size=1, previous_stage_folder=tmp_path / "prev")
    with pytest.raises(FileNotFoundError, match="prev/blob.npy"):
        sample_batch(tmp_path, ["blob"], prev, batch_rng(0, 0))


def test_sampling_picture_draws_one_box_per_sample_and_marks_forced_ones(tmp_path):
    import matplotlib.colors

    from nnseg_nb.viz.sampling import FORCED_COLOR, patch_sampling_figure

    blob_case(tmp_path)
    settings = SamplerSettings(patch_size=(8, 8, 8), loaded_patch_size=(12, 12, 12), batch_size=5)
    batch = sample_batch(tmp_path, ["blob"], settings, batch_rng(0, 0))
    fig = patch_sampling_figure(batch, tmp_path, patch_size=settings.patch_size, columns=3)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5 and len(fig.axes) == 6
    red = matplotlib.colors.to_rgba(FORCED_COLOR)
    for ax, forced, box in zip(panels, batch["forced_foreground"].tolist(), batch["crop_boxes"].tolist()):
        assert ("forced: class 1" in ax.get_title()) == forced
        loaded, final = ax.patches  # the loaded patch and the final (centre) patch
        assert (loaded.get_width(), loaded.get_height()) == (12, 12) and final.get_width() == 8
        assert loaded.get_xy() == (box[2][0] - 0.5, box[1][0] - 0.5)
        assert (loaded.get_edgecolor() == red) == forced


def test_reads_cases_written_by_preprocessing_and_nnunet_folders(tmp_path):
    import pickle

    from nnseg_nb.preprocessed import save_case
    from nnseg_nb.preprocessing import sample_class_locations

    shape = (12, 14, 16)
    seg = np.zeros((1, *shape), np.int16)
    seg[0, 6, 7, 8] = 2
    keys = [1, 2, (1, 2)]
    properties = {"spacing": [1.0, 1.0, 1.0], "class_locations": sample_class_locations(seg, keys)}
    save_case(tmp_path / "ours", "c", ramp(shape), seg, properties)
    # nnU-Net's legacy folder: <case>.npz (data, seg) + <case>.pkl, read whole (no .npy to map)
    (tmp_path / "nnunet").mkdir()
    np.savez(tmp_path / "nnunet" / "c.npz", data=ramp(shape), seg=seg)
    with open(tmp_path / "nnunet" / "c.pkl", "wb") as f:
        pickle.dump(properties, f)
    settings = SamplerSettings(patch_size=(4, 4, 4), batch_size=8, oversample_foreground_percent=1.0)
    for folder in ("ours", "nnunet"):
        batch = sample_batch(tmp_path / folder, ["c"], settings, batch_rng(0, 0))
        assert set(batch["selected_classes"]) == {2, (1, 2)}  # class 1 is absent
        assert (batch["seg"][:, 0, 2, 2, 2] == 2).all()
        assert batch["crop_boxes"][0].tolist() == [[4, 8], [5, 9], [6, 10]]


# --- parity with nnU-Net's nnUNetDataLoader.get_bbox (tests/fixtures/make_loader.py) -------------------

GET_BBOX = json.loads((Path(__file__).parent / "fixtures" / "loader" / "get_bbox.json").read_text())


def _settings(record, **kw):
    return SamplerSettings(
        patch_size=tuple(record["final"]), loaded_patch_size=tuple(record["initial"]), **kw
    )


def _key(value):
    return tuple(value) if isinstance(value, list) else value


def test_nnunet_parity_forced_positions():
    for batch_size, forced in GET_BBOX["forced"].items():
        assert SamplerSettings(patch_size=(8, 8, 8), batch_size=int(batch_size)).forced_foreground() == forced


@pytest.mark.parametrize(
    "record", GET_BBOX["bounds"], ids=lambda r: f"{r['initial']}-{r['final']}-{r['shape']}"
)
def test_nnunet_parity_bounds(record):
    settings = _settings(record)
    assert lower_corner_bounds(record["shape"], settings.loaded_patch_size_3d, settings.need_to_pad) == (
        record["lbs"],
        record["ubs"],
    )


def test_nnunet_parity_centred_corners():
    for record in GET_BBOX["centred"]:
        has_ignore = record.get("has_ignore", False)
        settings = _settings(record, has_ignore=has_ignore)
        key = 1 if record["forced"] else (-1, 0, 1, 2)
        corner, selected = choose_lower_corner(
            record["shape"],
            settings,
            record["forced"],
            {key: np.array([[0, *record["voxel"]]])},
            np.random.default_rng(0),
        )
        assert (corner, selected) == (record["corner"], key), record


def test_nnunet_parity_eligible_classes():
    all_keys = [1, 2, (1, 2), (-1, 0, 1, 2)]
    for record in GET_BBOX["eligible"]:
        present = {_key(k) for k in record["present"]}
        class_locations = {k: np.zeros((1 if k in present else 0, 4), int) for k in all_keys}
        chosen = {choose_class(class_locations, np.random.default_rng(seed)) for seed in range(64)}
        assert chosen == {_key(k) for k in record["eligible"]}
