"""Evaluation: summary.json equal to nnunetv2 2.8.1's, distance metrics against hand-computed values.

Fixture: tests/fixtures/make_evaluation.py (nnunetv2's compute_metrics_on_folder on tiny NIfTI cases).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnseg_nb import cli
from nnseg_nb.evaluation import (
    NNUNET_METRICS,
    distance_metrics,
    evaluate_arrays,
    evaluate_folders,
    evaluate_folders_with_dataset_json,
    key_of,
    label_or_region_from_key,
    labels_or_regions_from_dataset_json,
    load_summary_json,
    surface_distances,
)

FIXTURES = Path(__file__).parent / "fixtures" / "evaluation"
RUNS = {
    "summary_labels.json": ([1, 2], 3),
    "summary_regions.json": ([(1, 2), 2], 3),
    "summary_absent.json": ([1, 2, 4], None),
}


def _same(a, b, path="") -> list[str]:
    """Paths where two JSON values differ (NaN equals NaN, floats to 1e-12 relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _same(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    if type(a) is not type(b):
        return [f"{path}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"]
    if isinstance(a, float) and math.isclose(a, b, rel_tol=1e-12):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _relative_files(summary: dict, root: Path) -> dict:
    for case in summary["metric_per_case"]:
        for key in ("reference_file", "prediction_file"):
            case[key] = str(Path(case[key]).relative_to(root))
    return summary


@pytest.mark.parametrize("name", sorted(RUNS))
def test_summary_json_equals_nnunet(name, tmp_path):
    labels_or_regions, ignore_label = RUNS[name]
    out = tmp_path / "summary.json"
    evaluate_folders(
        FIXTURES / "reference",
        FIXTURES / "prediction",
        labels_or_regions,
        ignore_label,
        output_file=out,
        num_workers=1,
        distance_metrics_on=False,
    )
    ours = _relative_files(json.loads(out.read_text()), FIXTURES)
    expected = json.loads((FIXTURES / name).read_text())
    assert _same(ours, expected) == []
    assert list(json.loads(out.read_text())) == sorted(expected)  # sorted keys, as nnU-Net writes


def test_distance_metrics_are_extra_keys_next_to_nnunets(tmp_path):
    summary = evaluate_folders(
        FIXTURES / "reference",
        FIXTURES / "prediction",
        [1, 2],
        3,
        output_file=tmp_path / "s.json",
        num_workers=1,
    )
    expected = json.loads((FIXTURES / "summary_labels.json").read_text())
    written = json.loads((tmp_path / "s.json").read_text())
    for key in ("1", "2"):
        assert set(written["mean"][key]) == set(NNUNET_METRICS) | {"HD95", "NSD"}
        nnunet_part = {m: written["mean"][key][m] for m in NNUNET_METRICS}
        assert _same(nnunet_part, expected["mean"][key]) == []
    assert written["nsd_tolerance_mm"] == 1.0
    # c2: class 1 predicted empty -> HD95 NaN, NSD 0; c4: both empty -> NaN; c1: exact class 1 -> 0 mm, NSD 1
    per_case = {Path(c["prediction_file"]).name: c["metrics"] for c in summary["metric_per_case"]}
    assert math.isnan(per_case["c2.nii.gz"][1]["HD95"]) and per_case["c2.nii.gz"][1]["NSD"] == 0.0
    assert math.isnan(per_case["c4.nii.gz"][1]["NSD"])
    assert per_case["c1.nii.gz"][1]["HD95"] == 0.0 and per_case["c1.nii.gz"][1]["NSD"] == 1.0
    # nnU-Net's reader turns the keys back
    loaded = load_summary_json(tmp_path / "s.json")
    assert set(loaded["mean"]) == {1, 2}


def test_missing_prediction_is_an_error_only_when_asked(tmp_path):
    with pytest.raises(ValueError, match="no prediction for c5.nii.gz"):
        evaluate_folders(
            FIXTURES / "reference",
            FIXTURES / "prediction",
            [1],
            num_workers=1,
            allow_missing_predictions=False,
        )


def test_hd95_on_an_anisotropic_case_by_hand():
    # Reference: a 1x1x3 bar; prediction: the same bar shifted one slice in z (3 mm) and 1 voxel longer in x.
    spacing = (3.0, 1.0, 0.5)  # (Z, Y, X) mm
    ref = np.zeros((5, 5, 8), bool)
    ref[2, 2, 2:5] = True
    pred = np.zeros((5, 5, 8), bool)
    pred[3, 2, 2:6] = True
    pred_to_ref, ref_to_pred = surface_distances(ref, pred, spacing)
    # Thin bars: every voxel is surface. pred x=2..4 sit 3 mm above ref; x=5 is sqrt(3^2 + 0.5^2) away.
    assert sorted(pred_to_ref) == pytest.approx([3.0, 3.0, 3.0, math.hypot(3.0, 0.5)])
    assert sorted(ref_to_pred) == pytest.approx([3.0, 3.0, 3.0])
    d = distance_metrics(ref, pred, spacing, nsd_tolerance_mm=3.0)
    # np.percentile(linear) of [3, 3, 3, 3.0414]: 3 + 0.85 * 0.0414
    assert d["HD95"] == pytest.approx(3.0 + 0.85 * (math.hypot(3.0, 0.5) - 3.0))
    assert d["NSD"] == pytest.approx(6 / 7)  # all but the 3.04 mm voxel are within 3 mm


def test_surface_of_a_solid_block_excludes_its_inside():
    ref = np.zeros((7, 7, 7), bool)
    ref[1:6, 1:6, 1:6] = True  # 125 voxels, 27 inside
    pred = ref.copy()
    pred_to_ref, _ = surface_distances(ref, pred, (1.0, 1.0, 1.0))
    assert pred_to_ref.size == 125 - 27 and not pred_to_ref.any()


def test_2d_images_have_an_in_plane_surface():
    ref = np.zeros((1, 6, 6), bool)
    ref[0, 1:5, 1:5] = True  # 16 pixels, 4 inside
    pred_to_ref, ref_to_pred = surface_distances(ref, ref, (999.0, 1.0, 1.0))
    assert pred_to_ref.size == ref_to_pred.size == 12


def test_ignore_label_cuts_both_masks():
    ref = np.array([[1, 1, 3, 3, 0, 0]])
    pred = np.array([[1, 1, 1, 1, 0, 0]])
    m = evaluate_arrays(ref, pred, [1], ignore_label=3)[1]
    assert (m["Dice"], m["FP"], m["TN"], m["HD95"], m["NSD"]) == (1.0, 0, 2, 0.0, 1.0)


def test_keys_round_trip_as_nnunet_writes_them():
    for value, key in ((1, "1"), ((1, 2), "(1, 2)"), ((3,), "(3,)")):
        assert key_of(value) == key and label_or_region_from_key(key) == value
    assert key_of(np.int64(2)) == "2"


def test_labels_or_regions_from_dataset_json_keeps_nnunets_types():
    dataset_json = {
        "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},
        "regions_class_order": [1, 2, 3],
    }
    assert labels_or_regions_from_dataset_json(dataset_json) == [(1, 2, 3), (2, 3), 3]


def test_cli_evaluate_writes_the_summary(tmp_path, capsys):
    out = tmp_path / "summary.json"
    argv = ["evaluate", str(FIXTURES / "reference"), str(FIXTURES / "prediction"), "-l", "1", "2"]
    assert cli.main([*argv, "-il", "3", "-o", str(out), "-np", "1", "--chill", "--no-distance"]) == 0
    ours = _relative_files(json.loads(out.read_text()), FIXTURES)
    assert _same(ours, json.loads((FIXTURES / "summary_labels.json").read_text())) == []
    assert "Dice" in capsys.readouterr().out


def test_cli_evaluate_errors_are_one_line(tmp_path, capsys):
    argv = ["evaluate", str(FIXTURES / "reference"), str(FIXTURES / "prediction"), "-l", "1"]
    assert cli.main([*argv, "-o", str(tmp_path / "s.json"), "-np", "1"]) == 1  # c5 has no prediction
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "c5.nii.gz" in err and len(err.splitlines()) == 1
    assert cli.main(["evaluate", str(tmp_path / "nope"), str(FIXTURES / "prediction"), "-l", "1"]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_hd95_and_nsd_equal_monai():
    # Fixture: tests/fixtures/make_distance_metrics.py (MONAI 1.6.1 on random blobs, 3D anisotropic and 2D).
    masks = np.load(FIXTURES.parent / "distance_metrics" / "masks.npz")
    expected = json.loads((FIXTURES.parent / "distance_metrics" / "monai.json").read_text())
    for name, monai in expected.items():
        ref, pred = masks[f"{name}_ref"], masks[f"{name}_pred"]
        for tolerance in (1.0, 2.5):
            ours = distance_metrics(ref, pred, monai["spacing"], nsd_tolerance_mm=tolerance)
            assert ours["HD95"] == pytest.approx(monai["HD95"], rel=1e-6), name  # MONAI computes in float32
            assert ours["NSD"] == pytest.approx(monai[f"NSD_{tolerance}"], rel=1e-6), name


def test_evaluate_with_a_dataset_json_uses_its_regions_and_ignore_label(tmp_path):
    prediction = tmp_path / "prediction"
    shutil.copytree(FIXTURES / "prediction", prediction)
    dataset_json = {
        "channel_names": {"0": "x"},
        "labels": {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3},
        "regions_class_order": [1, 2],
        "numTraining": 6,
        "file_ending": ".nii.gz",
    }
    evaluate_folders_with_dataset_json(FIXTURES / "reference", prediction, dataset_json, num_workers=1)
    ours = json.loads((prediction / "summary.json").read_text())
    ours = {k: ours[k] for k in ("mean", "foreground_mean")}
    expected = json.loads((FIXTURES / "summary_regions.json").read_text())
    for part in ("mean", "foreground_mean"):
        nnunet_part = ours[part] if part == "mean" else {"_": ours[part]}
        expected_part = expected[part] if part == "mean" else {"_": expected[part]}
        for key, metrics in nnunet_part.items():
            assert _same({m: metrics[m] for m in NNUNET_METRICS}, expected_part[key]) == []
