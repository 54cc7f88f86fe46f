"""nnseg_nb.fingerprint: nnU-Net's dataset fingerprint, unit rules and parity with nnunetv2's own output."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from nnseg_nb import cli, fingerprint, io
from nnseg_nb.dataset import write_dataset_json
from nnseg_nb.fingerprint import (
    analyze_case,
    draw_foreground_samples,
    ensure_fingerprint,
    extract_fingerprint,
    fingerprint_path,
    foreground_values,
    intensity_statistics,
    load_fingerprint,
    pooled_intensity_statistics,
    samples_per_case,
    save_fingerprint,
    summarize_fingerprint,
)

FIXTURES = Path(__file__).parent / "fixtures" / "fingerprint"
LABELS = {"background": 0, "organ": 1, "ignore": 2}


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_fingerprint", FIXTURES.parent / "make_fingerprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_dataset(root: Path, cases: list, name: str = "Dataset999_Tiny", labels: dict = LABELS) -> Path:
    """cases: [(image (C, Z, Y, X), labels (Z, Y, X), spacing (Z, Y, X))] -> a raw dataset folder."""
    folder = root / name
    for index, (image, seg, spacing) in enumerate(cases):
        props = {"spacing": list(spacing)}
        for channel, plane in enumerate(image):
            io.write_image(
                plane.astype(np.float32), folder / "imagesTr" / f"c{index}_{channel:04d}.nii.gz", props
            )
        io.write_seg(seg, folder / "labelsTr" / f"c{index}.nii.gz", props)
    channels = {str(c): f"ch{c}" for c in range(cases[0][0].shape[0])}
    write_dataset_json(folder, channels, labels, len(cases), ".nii.gz")
    return folder


def tiny_cases(rng=None) -> list:
    """Three one-channel cases: organ + ignore, no foreground at all, organ only; zero border to crop."""
    rng = rng or np.random.RandomState(0)
    cases = []
    for index, spacing in enumerate([(3.0, 0.5, 0.5), (1.0, 1.0, 1.0), (2.0, 0.75, 0.7)]):
        image = np.zeros((1, 6, 10, 12), np.float32)
        image[0, 1:5, 2:9, 3:11] = rng.normal(100, 30, (4, 7, 8)).round(2)
        seg = np.zeros((6, 10, 12), np.uint8)
        if index != 1:
            seg[2:4, 3:7, 4:9] = 1
        if index == 0:
            seg[4, 2:9, 3:11] = 2  # the ignore label: counts as foreground
        cases.append((image, seg, spacing))
    return cases


# --- one case -----------------------------------------------------------------------------------


def test_samples_per_case_is_nnunet_integer_division():
    assert samples_per_case(14) == 7142857 == int(10e7 // 14)
    assert samples_per_case(3, 100) == 33


@pytest.mark.parametrize("num_values", [1, 2, 1000, 300_001])
def test_draws_are_nnunets_choice_stream(num_values):
    values = np.random.RandomState(5).normal(size=(3, num_values)).astype(np.float32)
    rng = np.random.RandomState(1234)  # nnU-Net: one fresh state per case, channels in order
    expected = np.stack([rng.choice(channel, 5000, replace=True) for channel in values])
    drawn = draw_foreground_samples(values, 5000)
    assert drawn.dtype == np.float32
    np.testing.assert_array_equal(drawn, expected)


def test_foreground_is_seg_above_zero_ignore_label_included():
    data = np.arange(2 * 5, dtype=np.float32).reshape(2, 1, 1, 5)
    seg = np.array([-1, 0, 1, 2, 3]).reshape(1, 1, 1, 5)  # -1: outside the mask; 3: the ignore label
    np.testing.assert_array_equal(foreground_values(data, seg), [[2, 3, 4], [7, 8, 9]])


def test_analyze_case_crops_and_measures(tmp_path):
    image = np.zeros((1, 6, 10, 12), np.float32)
    image[0, 1:5, 2:9, 3:11] = 7.0
    image[0, 2, 5, 6] = 0.0  # a hole: filled in the mask, so the box and the values keep it
    seg = np.zeros((6, 10, 12), np.uint8)
    seg[2, 4:7, 5:8] = 1
    seg[0, 0, 0] = 1  # foreground outside the nonzero box: cropped away
    folder = write_dataset(tmp_path, [(image, seg, (2.5, 0.7, 0.7))])
    case = analyze_case([folder / "imagesTr" / "c0_0000.nii.gz"], folder / "labelsTr" / "c0.nii.gz", 100)
    assert case.shape_after_crop == [4, 7, 8]
    assert case.relative_size_after_cropping == 4 * 7 * 8 / (6 * 10 * 12)
    assert case.spacing == [2.5, float(np.float32(0.7)), float(np.float32(0.7))]  # NIfTI stores float32
    assert not case.drawn and case.foreground.shape == (1, 9)  # fewer values than draws: sent whole
    assert sorted(case.foreground[0]) == [0.0] + [7.0] * 8


def test_analyze_case_sends_draws_when_smaller(tmp_path):
    image, seg, spacing = tiny_cases()[0]
    folder = write_dataset(tmp_path, [(image, seg, spacing)])
    case = analyze_case([folder / "imagesTr" / "c0_0000.nii.gz"], folder / "labelsTr" / "c0.nii.gz", 10)
    assert case.drawn and case.foreground.shape == (1, 10)
    full = analyze_case([folder / "imagesTr" / "c0_0000.nii.gz"], folder / "labelsTr" / "c0.nii.gz", 10**6)
    np.testing.assert_array_equal(case.foreground, draw_foreground_samples(full.foreground, 10))


def test_nan_in_image_is_a_user_error(tmp_path):
    image, seg, spacing = tiny_cases()[0]
    image[0, 2, 4, 5] = np.nan
    folder = write_dataset(tmp_path, [(image, seg, spacing)])
    with pytest.raises(ValueError, match="c0_0000.nii.gz: contains NaN"):
        extract_fingerprint(folder, num_workers=1, progress=False, num_foreground_samples=10)


# --- pooling ------------------------------------------------------------------------------------


def test_intensity_statistics_are_numpys():
    values = np.random.RandomState(1).gamma(2.0, 10.0, 10001).astype(np.float32)
    stats = intensity_statistics(values.copy())
    assert list(stats) == ["max", "mean", "median", "min", "percentile_00_5", "percentile_99_5", "std"]
    assert stats["mean"] == float(np.mean(values)) and stats["std"] == float(np.std(values))
    assert stats["median"] == float(np.median(values))
    assert stats["percentile_00_5"] == float(np.percentile(values, 0.5))
    assert (stats["min"], stats["max"]) == (float(values.min()), float(values.max()))


def test_pooling_is_nnunets_concatenation_in_case_order():
    rng = np.random.RandomState(0)
    values = [rng.normal(size=(2, n)).astype(np.float32) for n in (5, 0, 3, 7)]
    cases = [fingerprint.CaseFingerprint([1.0] * 3, [1] * 3, 1.0, v) for v in values]
    cases[3].foreground, cases[3].drawn = draw_foreground_samples(values[3], 4), True  # as a worker sends it
    stats = pooled_intensity_statistics(cases, num_samples=4)
    # nnU-Net: each case's draws (or [] without foreground), concatenated in case order; the []
    # makes its pool float64, and ours is summed in the same precision
    for channel in range(2):
        pooled = np.concatenate([draw_foreground_samples(v, 4)[channel] if v.size else [] for v in values])
        assert pooled.dtype == np.float64
        assert stats[str(channel)] == intensity_statistics(pooled)
    assert all(case.foreground.size == 0 for case in cases)  # released


def test_empty_case_contributes_nothing(tmp_path):
    cases = tiny_cases()
    with_empty = extract_fingerprint(
        write_dataset(tmp_path / "a", cases), num_workers=1, progress=False, num_foreground_samples=3000
    )
    # the same draws without the empty case: 1000 per case, drawn and pooled by hand
    values = [image[0][seg > 0] for image, seg, _ in (cases[0], cases[2])]
    pooled = np.concatenate([np.random.RandomState(1234).choice(v, 1000) for v in values] + [[]])
    stats = with_empty["foreground_intensity_properties_per_channel"]["0"]
    assert stats["mean"] == float(np.mean(pooled)) and stats["std"] == float(np.std(pooled))
    assert stats["percentile_99_5"] == float(np.percentile(pooled, 99.5))
    assert with_empty["shapes_after_crop"] == [[4, 7, 8]] * 3
    assert with_empty["median_relative_size_after_cropping"] == 4 * 7 * 8 / (6 * 10 * 12)
    assert with_empty["spacings"][0] == [3.0, 0.5, 0.5]


def test_ignore_label_counts_in_the_intensities(tmp_path):
    image, seg, spacing = tiny_cases()[0]
    image[0, 4, 2:9, 3:11] = 5000.0  # the ignore slab: only the quirk brings these values in
    fp = extract_fingerprint(
        write_dataset(tmp_path, [(image, seg, spacing)]),
        num_workers=1,
        progress=False,
        num_foreground_samples=2000,
    )
    assert fp["foreground_intensity_properties_per_channel"]["0"]["max"] == 5000.0


def test_no_foreground_anywhere_is_a_user_error(tmp_path):
    cases = tiny_cases()
    folder = write_dataset(tmp_path, [cases[1]])
    with pytest.raises(ValueError, match="no foreground voxel"):
        extract_fingerprint(folder, num_workers=1, progress=False, num_foreground_samples=10)


def test_missing_label_file_is_named(tmp_path):
    folder = write_dataset(tmp_path, tiny_cases())
    (folder / "labelsTr" / "c1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no label file for 1 case.*c1"):
        extract_fingerprint(folder, num_workers=1, progress=False)


def test_worker_processes_give_the_same_fingerprint(tmp_path):
    folder = write_dataset(tmp_path, tiny_cases())
    serial = extract_fingerprint(folder, num_workers=1, progress=False, num_foreground_samples=30_000)
    parallel = extract_fingerprint(folder, num_workers=2, progress=False, num_foreground_samples=30_000)
    assert parallel == serial


# --- files, summary, CLI --------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """nnU-Net roots in tmp_path, the tiny dataset in raw, and 3000 samples instead of 1e8."""
    for variable in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{variable}", str(tmp_path / variable))
    monkeypatch.setattr(fingerprint, "FOREGROUND_SAMPLES_TOTAL", 3000)
    write_dataset(tmp_path / "raw", tiny_cases())
    return tmp_path


def test_fingerprint_path_and_ensure_reuses_the_file(roots):
    path = fingerprint_path(999)
    assert path == roots / "preprocessed" / "Dataset999_Tiny" / "dataset_fingerprint.json"
    assert fingerprint_path("Dataset999_Tiny") == fingerprint_path("Tiny") == path
    computed = ensure_fingerprint("Tiny", num_workers=1, progress=False)
    assert load_fingerprint(path) == computed
    save_fingerprint({**computed, "spacings": [[9.0, 9.0, 9.0]] * 3}, path)
    assert ensure_fingerprint("Tiny", progress=False)["spacings"][0] == [9.0, 9.0, 9.0]  # kept, as nnU-Net
    assert ensure_fingerprint("Tiny", overwrite=True, num_workers=1, progress=False) == computed


def test_load_fingerprint_names_the_file(tmp_path):
    path = tmp_path / "fp.json"
    path.write_text(json.dumps({"spacings": []}))
    with pytest.raises(ValueError, match="fp.json: not a dataset fingerprint"):
        load_fingerprint(path)


def test_summarize_fingerprint():
    fp = {
        "spacings": [[3.0, 0.5, 0.5], [1.0, 1.0, 1.0], [2.0, 0.75, 0.7]],
        "shapes_after_crop": [[4, 7, 8], [4, 7, 8], [2, 9, 8]],
        "median_relative_size_after_cropping": 0.5,
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 1.0, "std": 2.0, "percentile_00_5": -1.0, "percentile_99_5": 5.0}
        },
    }
    summary = summarize_fingerprint(fp)
    assert summary["num_cases"] == 3
    assert summary["spacing"] == {"median": [2.0, 0.75, 0.7], "min": [1.0, 0.5, 0.5], "max": [3.0, 1.0, 1.0]}
    assert summary["shape_after_crop"]["median"] == [4.0, 7.0, 8.0]
    assert summary["intensity_per_channel"]["0"]["std"] == 2.0
    assert len(fingerprint.summary_lines(fp)) == 3


def test_cli_writes_default_location_then_keeps_it_unless_clean(roots, capsys):
    path = roots / "preprocessed" / "Dataset999_Tiny" / "dataset_fingerprint.json"
    assert cli.main(["fingerprint", "999", "-np", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "wrote $nnUNet_preprocessed/Dataset999_Tiny/dataset_fingerprint.json"  # no one's home
    assert len(out) == 4 and out[1].startswith("3 cases, spacing")
    computed = load_fingerprint(path)
    save_fingerprint({**computed, "median_relative_size_after_cropping": 0.25}, path)
    assert cli.main(["fingerprint", "Tiny", "-np", "1"]) == 0
    assert capsys.readouterr().out.startswith("kept the existing")
    assert load_fingerprint(path)["median_relative_size_after_cropping"] == 0.25
    assert cli.main(["fingerprint", "Dataset999_Tiny", "-np", "1", "--clean"]) == 0
    assert capsys.readouterr().out.startswith("wrote")
    assert load_fingerprint(path) == computed


def test_cli_output_option_and_user_errors(roots, capsys):
    out_file = roots / "elsewhere" / "fp.json"
    assert (
        cli.main(["fingerprint", str(roots / "raw" / "Dataset999_Tiny"), "-o", str(out_file), "-np", "1"])
        == 0
    )
    assert capsys.readouterr().out.startswith(f"wrote {out_file}")
    assert load_fingerprint(out_file)["shapes_after_crop"] == [[4, 7, 8]] * 3
    assert not (roots / "preprocessed").exists()
    assert cli.main(["fingerprint", "NoSuchSet"]) == 1
    assert capsys.readouterr().err.startswith("error: no dataset 'NoSuchSet'")


# --- parity with nnunetv2 ---------------------------------------------------------------------------


def _assert_same_fingerprint(ours: dict, nnunet: dict, rel: float = fingerprint.SUMMATION_RTOL) -> None:
    """Equal fingerprints; the intensity mean and std within the summation-order tolerance (numpy < 2.3
    sums float32 in another order: 3-8e-6 relative over 1e8 samples, for nnunetv2 on that numpy too)."""
    assert list(ours) == list(nnunet)
    assert ours["spacings"] == nnunet["spacings"]
    assert ours["shapes_after_crop"] == nnunet["shapes_after_crop"]
    assert ours["median_relative_size_after_cropping"] == nnunet["median_relative_size_after_cropping"]
    ours_stats = ours["foreground_intensity_properties_per_channel"]
    nnunet_stats = nnunet["foreground_intensity_properties_per_channel"]
    assert list(ours_stats) == list(nnunet_stats)
    for channel, expected in nnunet_stats.items():
        assert list(ours_stats[channel]) == list(expected)
        for key, value in expected.items():
            assert ours_stats[channel][key] == pytest.approx(value, rel=rel, abs=1e-9), (channel, key)


def _parity(tmp_path: Path, fixture_name: str, which: str, build) -> None:
    fixture = json.loads((FIXTURES / f"{fixture_name}.json").read_text())
    folder = build(tmp_path, fixture)
    maker = _load_maker()
    assert maker.arrays_digest(folder) == fixture["arrays_sha256"], (
        "the rebuilt dataset differs from the fixture's"
    )
    entry = fixture["fingerprints"][which]
    ours = extract_fingerprint(
        folder, num_workers=1, progress=False, num_foreground_samples=entry["num_foreground_samples"]
    )
    save_fingerprint(ours, tmp_path / "ours.json")
    ours_text, nnunet_text = (tmp_path / "ours.json").read_text(), entry["dataset_fingerprint_json"]
    _assert_same_fingerprint(json.loads(ours_text), json.loads(nnunet_text))
    if np.__version__ == fixture["numpy_version"]:  # same draws, same sums: the very same numbers
        assert json.loads(ours_text) == json.loads(nnunet_text)


def _build_synthetic(tmp_path: Path, fixture: dict) -> Path:
    return _load_maker().write_synthetic_dataset(tmp_path / "raw", fixture["source"]["params"])


def test_parity_synthetic_small(tmp_path):
    """Two channels, ignore label, an empty case, label outside the mask; 1e6 samples (fast)."""
    _parity(tmp_path, "synthetic", "small", _build_synthetic)


@pytest.mark.slow
def test_parity_synthetic_full(tmp_path):
    """nnU-Net's own 1e8 samples per channel (about 15 s, 2 GB)."""
    _parity(tmp_path, "synthetic", "full", _build_synthetic)


def _build_demo(tmp_path: Path, fixture: dict) -> Path:
    from nnseg_nb.demo_data import build_demo_datasets

    source = fixture["source"]
    return build_demo_datasets(
        tmp_path / "raw", seed=source["seed"], only=[source["dataset"]], progress=False
    )[source["dataset"]]


# The quick ones run by default (building the brain dataset alone takes seconds); 1e8 samples are slow.
DEMO_QUICK = ["Dataset902_AnisoSynth", "Dataset903_MultiChannel", "Dataset904_Shapes2D"]
DEMO_ALL = DEMO_QUICK + ["Dataset901_BrainTissue"]


@pytest.mark.parametrize("dataset", DEMO_QUICK)
def test_parity_demo_small(tmp_path, dataset):
    _parity(tmp_path, dataset, "small", _build_demo)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DEMO_ALL)
def test_parity_demo_full(tmp_path, dataset):
    _parity(tmp_path, dataset, "full", _build_demo)
