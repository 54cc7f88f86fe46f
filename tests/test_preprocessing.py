"""Preprocessing: nnU-Net parity fixtures, each formula and rule by hand, the dataset run and its files, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from nnseg_nb import io, preprocessed, resampling
from nnseg_nb import preprocessing as pp
from nnseg_nb.cli import main
from nnseg_nb.dataset import write_dataset_json

FIXTURE_FOLDER = Path(__file__).parent / "fixtures" / "preprocessing"
FIXTURES = sorted(f for f in FIXTURE_FOLDER.glob("*.npz") if not f.name.startswith("demo_"))
DEMO_FIXTURES = sorted(FIXTURE_FOLDER.glob("demo_*.npz"))


# --- parity with nnunetv2's DefaultPreprocessor (fixtures from tests/fixtures/make_preprocessing.py) ----


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_matches_nnunet(fixture):
    ref = np.load(fixture)
    meta = json.loads(str(ref["meta"]))
    data, seg, properties = pp.preprocess_case(
        ref["input_data"],
        ref["input_seg"].astype(np.float32),
        {"spacing": ref["input_spacing"].tolist()},
        meta["plans"],
        meta["configuration"],
        meta["dataset_json"],
    )
    assert data.dtype == np.float32 and data.shape == ref["data"].shape
    np.testing.assert_allclose(data, ref["data"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(seg, ref["seg"])
    for key, value in meta["properties"].items():
        assert json.loads(json.dumps(pp.to_builtin(properties[key]))) == value, key
    locations = properties["class_locations"]
    assert [str(k) for k in locations] == meta["class_location_keys"]
    for i, key in enumerate(locations):
        np.testing.assert_array_equal(locations[key], ref[f"class_locations_{i}"], err_msg=str(key))


def _sha256(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("fixture", DEMO_FIXTURES, ids=[f.stem for f in DEMO_FIXTURES])
def test_matches_nnunet_on_a_demo_case(fixture, tmp_path):
    """The first case of a demo dataset with nnunetv2's own plans, in every configuration of them."""
    from nnseg_nb.dataset import find_cases
    from nnseg_nb.demo_data import DEMO_DATASETS, build_demo_datasets

    ref = np.load(fixture)
    meta = json.loads(str(ref["meta"]))
    name = meta["dataset"]
    assert DEMO_DATASETS[name]["version"] == meta["demo_version"], (
        f"the {name} builder changed; regenerate with tests/fixtures/make_preprocessing.py"
    )
    folder = build_demo_datasets(
        tmp_path, seed=meta["seed"], only=[name], num_train=1, num_test=0, progress=False
    )[name]
    case = find_cases(folder, meta["dataset_json"])[meta["case"]]
    raw_data, props = io.read_case(case.images)
    raw_seg, _ = io.read_seg(case.label)
    assert meta["configurations"]
    for configuration, expected in meta["configurations"].items():
        data, seg, properties = pp.preprocess_case(
            raw_data, raw_seg, props, meta["plans"], configuration, meta["dataset_json"]
        )
        assert list(data.shape) == expected["data_shape"] and list(seg.shape) == expected["seg_shape"], (
            configuration
        )
        np.testing.assert_allclose(
            data.ravel()[:: expected["data_step"]],
            ref[f"data_sample_{configuration}"],
            atol=1e-4,
            rtol=0,
            err_msg=configuration,
        )
        stats = [data.astype(np.float64).mean(), data.astype(np.float64).std(), data.min(), data.max()]
        np.testing.assert_allclose(stats, expected["data_stats"], atol=1e-4, rtol=0, err_msg=configuration)
        assert _sha256(seg.astype(np.int16)) == expected["seg_sha256"], configuration
        for key, value in expected["properties"].items():
            assert json.loads(json.dumps(pp.to_builtin(properties[key]))) == value, (configuration, key)
        locations = {
            str(k): {"count": len(v), "sha256": _sha256(v)} for k, v in properties["class_locations"].items()
        }
        assert locations == expected["class_locations"], configuration


def test_fixtures_cover_the_cases_we_promise():
    names = {f.stem for f in FIXTURES}
    assert {
        "separate_z_current",
        "separate_z_target",
        "ct_two_channels",
        "config_2d",
        "ignore_label",
        "regions",
        "tie_no_separate_z",
        "transpose_separate_z",
        "big_class_rescale_nonorm",
        "natural_2d_rgb",
    } <= names
    assert {f.stem for f in DEMO_FIXTURES} == {
        "demo_BrainTissue",
        "demo_AnisoSynth",
        "demo_MultiChannel",
        "demo_Shapes2D",
    }
    assert sum(f.stat().st_size for f in FIXTURES + DEMO_FIXTURES) < 2 * 1024**2


# --- normalization ------------------------------------------------------------------------------


def test_normalization_dict_uses_nnunet_class_names():
    assert list(pp.NORMALIZATION_SCHEMES) == [
        "ZScoreNormalization",
        "CTNormalization",
        "NoNormalization",
        "RescaleTo01Normalization",
        "RGBTo01Normalization",
    ]


def test_zscore_whole_image_and_masked():
    rng = np.random.default_rng(0)
    image = rng.normal(50, 10, (4, 5, 6)).astype(np.float32)
    out = pp.zscore_normalization(image.copy())
    assert out.dtype == np.float32
    np.testing.assert_allclose([out.mean(), out.std()], [0, 1], atol=1e-5)

    seg = np.zeros((4, 5, 6), np.int8)
    seg[:, :, :2] = -1
    image[:, :, :2] = 0
    out = pp.zscore_normalization(image.copy(), seg, use_mask_for_norm=True)
    inside = image[:, :, 2:]
    np.testing.assert_allclose(out[:, :, 2:], (inside - inside.mean()) / inside.std(), atol=1e-5)
    assert np.all(out[:, :, :2] == 0)  # outside the mask stays untouched
    with pytest.raises(ValueError, match="needs the label map"):
        pp.zscore_normalization(image.copy(), None, use_mask_for_norm=True)


def test_zscore_of_a_constant_image_is_zero_not_nan():
    assert np.all(pp.zscore_normalization(np.full((2, 2), 7.0, np.float32)) == 0)


def test_ct_clips_then_uses_the_fingerprint_numbers():
    props = {"percentile_00_5": -100.0, "percentile_99_5": 300.0, "mean": 50.0, "std": 25.0}
    out = pp.ct_normalization(np.array([-1000, -100, 50, 100, 2000], np.float32), intensity_properties=props)
    np.testing.assert_allclose(out, [-6, -6, 0, 2, 10])
    with pytest.raises(ValueError, match="intensity properties"):
        pp.ct_normalization(np.zeros(3, np.float32))


def test_other_schemes():
    x = np.array([10, 20, 60], np.float32)
    np.testing.assert_allclose(pp.rescale_to_01_normalization(x.copy()), [0, 0.2, 1])
    assert pp.no_normalization(np.array([1, 2], np.int16)).dtype == np.float32
    np.testing.assert_allclose(pp.rgb_to_01_normalization(np.array([0, 51, 255], np.float32)), [0, 0.2, 1])
    with pytest.raises(ValueError, match="0..255"):
        pp.rgb_to_01_normalization(np.array([0, 300], np.float32))


def test_normalize_checks_schemes_and_channels():
    data, seg = np.ones((2, 2, 2, 2), np.float32), np.zeros((1, 2, 2, 2))
    with pytest.raises(ValueError, match="2 channels"):
        pp.normalize(data, seg, ["ZScoreNormalization"], [False])
    with pytest.raises(ValueError, match="unknown normalization scheme 'Foo'"):
        pp.normalize(data, seg, ["Foo", "Foo"], [False, False])


# --- resampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "force, current, target, expected",
    [
        (None, [1, 1, 1], [1, 1, 1], (False, None)),
        (None, [3, 1, 1], [1, 1, 1], (False, None)),  # ratio 3 is not > 3
        (None, [3.01, 1, 1], [1, 1, 1], (True, 0)),
        (None, [1, 1, 5], [1, 1, 1], (True, 2)),  # current spacing decides first
        (None, [1, 1, 1], [1, 4, 1], (True, 1)),  # else the target spacing
        (None, [1, 5, 1], [1, 1, 5], (True, 1)),  # current wins over target
        (None, [4, 4, 1], [1, 1, 1], (False, None)),  # two axes tie for the coarsest: no separate z
        (None, [0.24, 1.25, 1.25], [1, 1, 1], (False, None)),
        (True, [1, 1, 1], [1, 1, 1], (False, None)),  # forced, but all three tie
        (True, [2, 1, 1], [1, 1, 1], (True, 0)),
        (False, [5, 1, 1], [1, 1, 1], (False, None)),
    ],
)
def test_separate_z_decision(force, current, target, expected):
    assert resampling.determine_do_sep_z_and_axis(force, current, target) == expected


@pytest.mark.parametrize(
    "shape, spacing, new_spacing, expected",
    [
        ([10, 10, 10], [1, 1, 1], [2, 2, 2], [5, 5, 5]),
        ([5, 7, 9], [1, 1, 1], [2, 2, 2], [2, 4, 4]),  # 2.5 -> 2, 3.5 -> 4, 4.5 -> 4: Python's round
        ([3, 3, 3], [1, 1, 1], [1.5, 0.5, 1], [2, 6, 3]),
    ],
)
def test_new_shape_rounding(shape, spacing, new_spacing, expected):
    assert resampling.compute_new_shape(shape, spacing, new_spacing) == expected


def test_resize_image_clips_cubic_overshoot_and_keeps_shape():
    step = np.zeros((1, 10), np.float64)
    step[:, 5:] = 1
    out = resampling.resize_image(step, (1, 23), order=3)
    assert out.shape == (1, 23) and out.min() == 0 and out.max() == 1


def test_resize_segmentation_never_invents_labels():
    seg = np.zeros((6, 6))
    seg[:3] = 4
    seg[3:, 3:] = -1
    out = resampling.resize_segmentation(seg, (11, 13), order=1)
    assert set(np.unique(out)) == {-1, 0, 4}


def test_resize_segmentation_ties_go_to_the_nearest_label():
    # halving puts each sample point exactly between two voxels: labels 1 and 2 both score 0.5
    seg = np.array([[1, 2, 2, 1]], np.float64)
    np.testing.assert_array_equal(
        resampling.resize_image(seg, (1, 2), order=0), [[2, 1]]
    )  # the nearest neighbours
    np.testing.assert_array_equal(resampling.resize_segmentation(seg, (1, 2), order=1), [[2, 1]])
    # (">= 0.5, larger label last" would give [[2, 2]], a plain argmax [[1, 1]])


@pytest.mark.parametrize("old, new", [(3, 7), (7, 3), (2, 3), (5, 8), (9, 4)])
@pytest.mark.parametrize("order_z", [0, 1])
def test_coarse_axis_resampling_equals_map_coordinates(old, new, order_z):
    volume = np.random.default_rng(old * new).random((old, 4, 3))
    coordinates = np.mgrid[0:new, 0:4, 0:3].astype(float)
    coordinates[0] = float(old) / new * (coordinates[0] + 0.5) - 0.5
    expected = map_coordinates(volume, coordinates, order=order_z, mode="nearest")
    np.testing.assert_array_equal(resampling._resample_coarse_axis(volume, new, 0, order_z, False), expected)


def test_resampling_to_the_same_shape_returns_the_input():
    data = np.ones((1, 3, 4, 5), np.float32)
    assert resampling.resample_data_or_seg_to_shape(data, (3, 4, 5), [1, 1, 1], [1, 1, 1]) is data


def test_separate_z_only_resizes_in_plane_when_the_slice_count_stays():
    data = np.random.default_rng(0).random((1, 4, 8, 8)).astype(np.float32)
    out = resampling.resample_data_or_seg_to_shape(
        data, (4, 16, 16), [5, 1, 1], [5, 0.5, 0.5], force_separate_z=None
    )
    for z in range(4):  # each slice resized on its own: slices never mix
        np.testing.assert_allclose(
            out[0, z], resampling.resize_image(data[0, z].astype(float), (16, 16)), atol=1e-6
        )


# --- class locations ------------------------------------------------------------------------------


def test_class_location_keys():
    assert pp.class_location_keys({"labels": {"background": 0, "a": 1, "b": 2}}) == [1, 2]
    assert pp.class_location_keys({"labels": {"background": 0, "a": 1, "ignore": 2}}) == [1, (-1, 0, 1)]
    regions = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    assert pp.class_location_keys({"labels": regions}) == [(1, 2, 3), (2, 3), 3]


def test_class_location_counts():
    seg = np.zeros((1, 20, 100, 100), np.int16)
    seg[0, :15] = 1  # 150,000 voxels: 1% = 1,500 < 10,000 -> 10,000
    seg[0, 15:, :30] = 2  # 15,000 -> 10,000
    seg[0, 15:, 30:31] = 3  # 500 -> all 500
    locations = pp.sample_class_locations(seg, [1, 2, 3, 4, (2, 3)])
    assert {k: len(v) for k, v in locations.items()} == {1: 10000, 2: 10000, 3: 500, 4: 0, (2, 3): 10000}
    for key, value in locations.items():
        assert value.dtype == np.int64 and value.shape[1:] == (4,)
        labels = key if isinstance(key, tuple) else (key,)
        assert np.all(value[:, 0] == 0) and np.isin(seg[tuple(value.T)], labels).all()
        assert len(np.unique(value, axis=0)) == len(value)  # without replacement


def test_class_locations_take_one_percent_of_a_huge_class():
    seg = np.ones((1, 20, 250, 250), np.int8)  # 1.25 M voxels -> 12,500
    assert len(pp.sample_class_locations(seg, [1])[1]) == 12500


def test_class_locations_json_round_trip():
    locations = {1: np.array([[0, 1, 2, 3]]), (-1, 0, 1): np.zeros((0, 4), np.int64)}
    as_json = json.loads(json.dumps(preprocessed.class_locations_to_json(locations)))
    assert as_json == {"1": [[0, 1, 2, 3]], "(-1, 0, 1)": []}
    back = preprocessed.class_locations_from_json(as_json)
    assert list(back) == [1, (-1, 0, 1)] and back[(-1, 0, 1)].shape == (0, 4)


def test_a_case_without_labels_gets_the_mask_as_seg():
    data = np.zeros((1, 4, 6, 6), np.float32)
    data[0, 1:3, 1:5, 1:5] = np.arange(32).reshape(2, 4, 4) + 1
    data[0, 1:3, 2, 2] = 0  # a hole: filled, so inside the mask
    props = {"spacing": [1.0, 1.0, 1.0]}
    out, seg, properties = pp.preprocess_case(
        data, None, props, PLANS, "3d_fullres", {"labels": {"background": 0}}
    )
    assert seg.dtype == np.int8 and set(np.unique(seg)) <= {-1, 0} and "class_locations" not in properties
    assert properties["bbox_used_for_cropping"] == [[1, 3], [1, 5], [1, 5]] and props == {
        "spacing": [1.0, 1.0, 1.0]
    }


# --- a small dataset on disk: preprocess_dataset, files, skipping, loading, CLI -------------------------


def _configuration(spacing, identifier):
    kwargs = {"order_z": 0, "force_separate_z": None}
    return {
        "data_identifier": identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [8, 16, 16][-len(spacing) :],
        "median_image_size_in_voxels": [6, 11, 11][-len(spacing) :],
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [True],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, **kwargs},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, **kwargs},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {},
            "_kw_requires_import": [],
        },
    }


PLANS = {
    "dataset_name": "Dataset901_Tiny",
    "plans_name": "nnUNetPlans",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "foreground_intensity_properties_per_channel": {"0": {}},
    "configurations": {
        "3d_fullres": _configuration([2.0, 1.0, 1.0], "nnUNetPlans_3d_fullres"),
        "2d": _configuration([1.0, 1.0], "nnUNetPlans_2d"),
        "3d_cascade_fullres": {"inherits_from": "3d_fullres"},
    },
}


@pytest.fixture()
def tiny_dataset(tmp_path, monkeypatch):
    """Dataset901_Tiny under tmp_path/raw (2 cases, 1 channel, labels 0..2) with plans in preprocessed/."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    raw = tmp_path / "raw" / "Dataset901_Tiny"
    rng = np.random.default_rng(0)
    for i in range(2):
        image = np.zeros((6, 20, 18), np.float32)
        image[1:5, 3:17, 2:16] = rng.normal(100, 10, (4, 14, 14))
        seg = np.zeros((6, 20, 18), np.uint8)
        seg[2:4, 5:10, 5:10] = 1
        seg[2:4, 10:12, 5:10] = 2
        io.write_image(image, raw / "imagesTr" / f"tiny_{i:03d}_0000.nii.gz", {"spacing": [3.0, 0.8, 0.8]})
        io.write_seg(seg, raw / "labelsTr" / f"tiny_{i:03d}.nii.gz", {"spacing": [3.0, 0.8, 0.8]})
    write_dataset_json(raw, {"0": "MRI"}, {"background": 0, "a": 1, "b": 2}, 2, ".nii.gz")
    (tmp_path / "preprocessed" / "Dataset901_Tiny").mkdir(parents=True)
    (tmp_path / "preprocessed" / "Dataset901_Tiny" / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    return raw


def test_preprocess_dataset_writes_nnunet_layout(tiny_dataset):
    results = pp.preprocess_dataset("Dataset901_Tiny", ["3d_fullres"], num_workers=1, progress=False)
    folder = tiny_dataset.parents[1] / "preprocessed" / "Dataset901_Tiny" / "nnUNetPlans_3d_fullres"
    assert results[0].folder == folder and results[0].processed == ["tiny_000", "tiny_001"]
    assert preprocessed.list_cases(folder) == ["tiny_000", "tiny_001"]
    data, seg, properties = preprocessed.load_case(folder, "tiny_000")
    assert isinstance(data, np.memmap) and data.dtype == np.float32 and seg.dtype == np.int16
    assert data.shape == (1, 6, 11, 11)  # cropped (4, 14, 14) at (3, .8, .8) -> (2, 1, 1) spacing
    assert properties["spacing"] == pytest.approx([3.0, 0.8, 0.8])
    assert properties["bbox_used_for_cropping"] == [[1, 5], [3, 17], [2, 16]]
    assert properties["shape_before_cropping"] == [6, 20, 18]
    assert properties["shape_after_cropping_and_before_resampling"] == [4, 14, 14]
    assert list(properties["class_locations"]) == [1, 2] and properties["reader"] == "nibabel"
    raw_data, props = io.read_case([tiny_dataset / "imagesTr" / "tiny_000_0000.nii.gz"])
    raw_seg, _ = io.read_seg(tiny_dataset / "labelsTr" / "tiny_000.nii.gz")
    expected_data, expected_seg, _ = pp.preprocess_case(
        raw_data, raw_seg, props, PLANS, "3d_fullres", {"labels": {"background": 0, "a": 1, "b": 2}}
    )
    np.testing.assert_array_equal(data, expected_data)
    np.testing.assert_array_equal(seg, expected_seg)
    gt = tiny_dataset.parents[1] / "preprocessed" / "Dataset901_Tiny" / "gt_segmentations" / "tiny_001.nii.gz"
    assert gt.read_bytes() == (tiny_dataset / "labelsTr" / "tiny_001.nii.gz").read_bytes()
    assert not list(folder.glob(".*"))  # no temporary files left


def test_2d_keeps_the_slice_axis(tiny_dataset):
    (result,) = pp.preprocess_dataset(tiny_dataset, "2d", num_workers=1, progress=False)
    data, _, _ = preprocessed.load_case(result.folder, "tiny_001")
    assert data.shape == (1, 4, 11, 11)


def test_up_to_date_cases_are_skipped(tiny_dataset):
    def run(**kw):
        return pp.preprocess_dataset(tiny_dataset, ["3d_fullres"], num_workers=1, progress=False, **kw)[0]

    run()
    again = run()
    assert again.processed == [] and again.up_to_date == ["tiny_000", "tiny_001"]
    label = tiny_dataset / "labelsTr" / "tiny_001.nii.gz"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))  # a changed source file
    assert run().processed == ["tiny_001"]
    assert run(overwrite=True).processed == ["tiny_000", "tiny_001"]
    changed = json.loads(json.dumps(PLANS))
    changed["configurations"]["3d_fullres"]["spacing"] = [2.0, 1.2, 1.2]  # a changed plan
    assert pp.preprocess_dataset(tiny_dataset, ["3d_fullres"], plans=changed, num_workers=1, progress=False)[
        0
    ].processed == ["tiny_000", "tiny_001"]
    (again.folder / "tiny_000_seg.npy").unlink()  # a missing file
    assert pp.preprocess_dataset(tiny_dataset, ["3d_fullres"], plans=changed, num_workers=1, progress=False)[
        0
    ].processed == ["tiny_000"]


def test_worker_processes_give_the_same_files(tiny_dataset, tmp_path):
    one = pp.preprocess_dataset(
        tiny_dataset,
        ["3d_fullres"],
        output_folder=tmp_path / "one",
        num_workers=1,
        progress=False,
        plans=PLANS,
    )[0]
    two = pp.preprocess_dataset(
        tiny_dataset,
        ["3d_fullres"],
        output_folder=tmp_path / "two",
        num_workers=2,
        progress=False,
        plans=PLANS,
    )[0]
    for name in ("tiny_000.npy", "tiny_000_seg.npy", "tiny_001.json"):
        assert (one.folder / name).read_bytes() == (two.folder / name).read_bytes()


def test_reorienting_reader_in_the_plans_is_warned_about(tiny_dataset, tmp_path):
    plans = {**PLANS, "image_reader_writer": "NibabelIOWithReorient"}
    with pytest.warns(UserWarning, match="NibabelIOWithReorient; nnseg_nb reads images as SimpleITKIO does"):
        pp.preprocess_dataset(
            tiny_dataset,
            ["3d_fullres"],
            output_folder=tmp_path / "out",
            num_workers=1,
            progress=False,
            plans=plans,
        )


def test_missing_plans_or_configuration(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="no plans"):
        pp.preprocess_dataset(
            tiny_dataset, ["3d_fullres"], output_folder=tmp_path / "elsewhere", progress=False
        )
    with pytest.raises(ValueError, match="available: 3d_fullres, 2d, 3d_cascade_fullres"):
        pp.preprocess_dataset(tiny_dataset, ["3d_lowres"], progress=False)
    with pytest.warns(UserWarning, match="3d_lowres"):
        pp.preprocess_dataset(
            tiny_dataset, ["3d_lowres", "3d_cascade_fullres"], num_workers=1, progress=False
        )


def _nnunet_style_folder(folder: Path, data, seg, packed: str) -> dict:
    """A folder as nnU-Net writes it: <case>.npz or unpacked .npy, with pickled properties."""
    folder.mkdir()
    properties = {
        "spacing": np.array([1.0, 2.0, 2.0]),
        "shape_before_cropping": (4, 5, 6),
        "class_locations": {1: np.array([[0, 1, 1, 1]]), (-1, 0, 1): []},
    }
    if packed == "npz":
        np.savez_compressed(folder / "c1.npz", data=data, seg=seg)
    else:
        np.save(folder / "c1.npy", data)
        np.save(folder / "c1_seg.npy", seg)
    with open(folder / "c1.pkl", "wb") as f:
        pickle.dump(properties, f)
    return properties


@pytest.mark.parametrize("packed", ["npz", "npy"])
def test_reads_nnunet_preprocessed_folders(tmp_path, packed):
    data, seg = (
        np.random.default_rng(0).random((1, 4, 5, 6)).astype(np.float32),
        np.ones((1, 4, 5, 6), np.int16),
    )
    _nnunet_style_folder(tmp_path / "f", data, seg, packed)
    assert preprocessed.list_cases(tmp_path / "f") == ["c1"]
    loaded, loaded_seg, properties = preprocessed.load_case(tmp_path / "f", "c1")
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_array_equal(loaded_seg, seg)
    assert properties["spacing"] == [1.0, 2.0, 2.0] and properties["shape_before_cropping"] == [4, 5, 6]
    assert properties["class_locations"][(-1, 0, 1)].shape == (0, 4)
    np.testing.assert_array_equal(properties["class_locations"][1], [[0, 1, 1, 1]])


NNUNET_FOLDER = (
    Path(__file__).parent / "fixtures" / "nnunet_folder"
)  # written by nnunetv2 2.8.1 (make_nnunet_folder.py)


def test_reads_the_b2nd_folder_nnunet_writes():
    """nnU-Net 2.8's default format: blosc2 ``.b2nd`` arrays and pickled properties, read as its own loader does."""
    folder = NNUNET_FOLDER / "nnUNetPlans_3d_fullres"
    reference = np.load(NNUNET_FOLDER / "reference.npz")
    reference_properties = json.loads((NNUNET_FOLDER / "reference.json").read_text())
    assert preprocessed.list_cases(folder) == ["tiny_a", "tiny_b"]
    for case in ("tiny_a", "tiny_b"):
        data, seg, properties = preprocessed.load_case(folder, case)
        assert data.dtype == np.float32 and seg.dtype == np.int16
        np.testing.assert_array_equal(data, reference[f"{case}/data"])
        np.testing.assert_array_equal(seg, reference[f"{case}/seg"])
        locations = properties.pop("class_locations")
        assert properties == reference_properties[case]
        assert sorted(locations) == [1, 2]
        for key, value in locations.items():
            np.testing.assert_array_equal(value, reference[f"{case}/class_locations/{key}"])


def test_samples_patches_from_an_nnunet_b2nd_folder_with_its_previous_stage():
    from nnseg_nb import loader

    folder = NNUNET_FOLDER / "nnUNetPlans_3d_fullres"
    reference = np.load(NNUNET_FOLDER / "reference.npz")
    arrays = preprocessed.open_case(
        folder, "tiny_a", previous_stage_folder=NNUNET_FOLDER / "predicted_previous_stage"
    )
    np.testing.assert_array_equal(arrays.previous_seg, reference["tiny_a/previous"])
    settings = loader.SamplerSettings(
        patch_size=(8, 16, 16), batch_size=3, previous_stage_folder=NNUNET_FOLDER / "predicted_previous_stage"
    )
    batch = loader.sample_batch(folder, ["tiny_a", "tiny_b"], settings, np.random.default_rng(0))
    assert batch["image"].shape == (3, 1, 8, 16, 16) and batch["seg"].shape == (3, 2, 8, 16, 16)
    inside = batch["seg"][:, 0] >= 0  # padding is -1 in both channels; elsewhere the previous stage is fg > 0
    assert torch.equal(batch["seg"][:, 1][inside], (batch["seg"][:, 0][inside] > 0).to(batch["seg"].dtype))
    assert (batch["seg"][:, 0] > 0).any()  # the last of three is forced onto foreground
    assert not isinstance(arrays.data, np.ndarray)  # opened, not read: a patch decompresses only its chunks


def test_b2nd_patches_equal_patches_of_the_same_case_as_npy(tmp_path):
    from nnseg_nb import loader

    folder, previous = NNUNET_FOLDER / "nnUNetPlans_3d_fullres", NNUNET_FOLDER / "predicted_previous_stage"
    (tmp_path / "previous").mkdir()
    for case in ("tiny_a", "tiny_b"):
        data, seg, properties = preprocessed.load_case(folder, case)
        preprocessed.save_case(tmp_path / "ours", case, np.asarray(data), np.asarray(seg), properties)
        np.save(tmp_path / "previous" / f"{case}.npy", preprocessed.read_b2nd(previous / f"{case}.b2nd"))
    for patch in [(8, 16, 16), (1, 12, 30)]:  # inside, and leaving the volume
        settings = loader.SamplerSettings(patch_size=patch, batch_size=4, previous_stage_folder=previous)
        from_b2nd = loader.sample_batch(folder, ["tiny_a", "tiny_b"], settings, np.random.default_rng(5))
        settings = dataclasses.replace(settings, previous_stage_folder=tmp_path / "previous")
        from_npy = loader.sample_batch(
            tmp_path / "ours", ["tiny_a", "tiny_b"], settings, np.random.default_rng(5)
        )
        assert torch.equal(from_b2nd["image"], from_npy["image"]) and torch.equal(
            from_b2nd["seg"], from_npy["seg"]
        )


def test_b2nd_without_blosc2_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (
            (_ for _ in ()).throw(ImportError()) if name == "blosc2" else real_import(name, *a, **k)
        ),
    )
    (tmp_path / "c1.b2nd").write_bytes(b"")
    (tmp_path / "c1.pkl").write_bytes(pickle.dumps({}))
    with pytest.raises(ImportError, match="pip install blosc2"):
        preprocessed.load_case(tmp_path, "c1")
    with pytest.raises(FileNotFoundError, match="no preprocessed case 'c2'"):
        preprocessed.load_case(tmp_path, "c2")


def test_cli_preprocess(tiny_dataset, tmp_path, capsys):
    plans_file = tmp_path / "custom_plans.json"
    plans_file.write_text(json.dumps(PLANS))
    assert (
        main(
            [
                "preprocess",
                "901",
                "-c",
                "3d_fullres",
                "2d",
                "--plans",
                str(plans_file),
                "-o",
                str(tmp_path / "out"),
                "-np",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3d_fullres: 2 preprocessed, 0 up to date" in out and "2d: 2 preprocessed" in out
    assert (tmp_path / "out" / "nnUNetPlans_2d" / "tiny_000.npy").is_file()
    assert (
        main(
            [
                "preprocess",
                "901",
                "-c",
                "3d_fullres",
                "--plans",
                str(plans_file),
                "-o",
                str(tmp_path / "out"),
                "-np",
                "1",
            ]
        )
        == 0
    )
    assert "0 preprocessed, 2 up to date" in capsys.readouterr().out
    assert main(["preprocess", "901", "-c", "3d_fullres", "-o", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no plans" in err and len(err.strip().splitlines()) == 1


def test_preprocessing_figure(tiny_dataset):
    from nnseg_nb.dataset import find_cases, load_dataset_json
    from nnseg_nb.viz.preprocessing import preprocessing_figure_for_case

    case = find_cases(tiny_dataset)["tiny_000"]
    fig = preprocessing_figure_for_case(
        case, PLANS, "3d_fullres", load_dataset_json(tiny_dataset), slice_index=3
    )
    raw, new, hist_raw, hist_new = fig.axes
    assert (
        "raw slice 3: (6, 20, 18) voxels" in raw.get_title()
    )  # preprocessed slice 3 of 6 <- cropped slice 2 of 4
    assert "(6, 11, 11) voxels" in new.get_title() and "spacing (2, 1, 1)" in new.get_title()
    assert raw.get_xlim() == new.get_xlim() and raw.get_ylim() == new.get_ylim()  # both in millimetres
    assert "mean 99.8, std 10" in hist_raw.get_title() and "mean -0.0" in hist_new.get_title()
