"""Postprocessing: the component removal and the cross-validation decision equal nnunetv2 2.8.1's.

Fixture: tests/fixtures/make_postprocessing.py (determine_postprocessing on four constructed scenarios,
remove_all_but_largest_component_from_segmentation on random label maps).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnseg_nb import cli
from nnseg_nb.io import read_seg
from nnseg_nb.postprocessing import (
    apply_postprocessing,
    determine_postprocessing,
    load_postprocessing,
    remove_all_but_largest_component,
)

FIXTURES = Path(__file__).parent / "fixtures" / "postprocessing"
SCENARIOS = {
    "foreground": [{"labels_or_regions": [1, 2]}],
    "one_class": [{"labels_or_regions": 1}],
    "none": [],
    "regions": [{"labels_or_regions": 2}],
}
OPS = [1, (1, 2), [1, 2, 3], [(2, 3)], 3]


def test_component_removal_equals_nnunet():
    fixture = np.load(FIXTURES / "components.npz")
    for i in range(4):
        seg = fixture[f"seg_{i}"]
        for j, labels_or_regions in enumerate(OPS):
            expected = fixture[f"seg_{i}_op_{j}"]
            np.testing.assert_array_equal(remove_all_but_largest_component(seg, labels_or_regions), expected)
    tie = remove_all_but_largest_component(fixture["tie"], 1)
    np.testing.assert_array_equal(tie, fixture["tie_op_0"])
    assert (tie == 1).sum() == 8  # both 2x2 squares kept, the single voxel removed


def _copy_scenario(name: str, tmp_path: Path) -> Path:
    work = tmp_path / name
    shutil.copytree(FIXTURES / name / "prediction", work / "prediction")
    shutil.copy(FIXTURES / name / "dataset.json", work / "prediction" / "dataset.json")
    return work / "prediction"


def _names_only(summary: dict) -> dict:
    for case in summary["metric_per_case"]:
        for key in ("reference_file", "prediction_file"):
            case[key] = Path(case[key]).name
    return summary


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_decision_and_files_equal_nnunet(name, tmp_path):
    prediction = _copy_scenario(name, tmp_path)
    result = determine_postprocessing(prediction, FIXTURES / name / "reference", num_workers=1)
    assert result.postprocessing_kwargs == SCENARIOS[name]
    nnunet = FIXTURES / name / "nnunet"
    assert json.loads((prediction / "postprocessing.json").read_text()) == json.loads(
        (nnunet / "postprocessing.json").read_text()
    )
    for summary in ("summary.json", "postprocessed/summary.json"):
        ours = _names_only(json.loads((prediction / summary).read_text()))
        assert ours == json.loads((nnunet / summary).read_text()), summary
    for expected in sorted((nnunet / "postprocessed").glob("*.nii.gz")):
        ours, ours_props = read_seg(prediction / "postprocessed" / expected.name)
        theirs, their_props = read_seg(expected)
        np.testing.assert_array_equal(ours, theirs)
        assert ours_props["nifti"] == their_props["nifti"]
    # the .pkl reads back (ours and nnU-Net's), and nnU-Net's import path is what ours pickles
    assert load_postprocessing(prediction / "postprocessing.pkl") == SCENARIOS[name]
    assert load_postprocessing(nnunet / "postprocessing.pkl") == SCENARIOS[name]
    if SCENARIOS[name]:
        raw = (prediction / "postprocessing.pkl").read_bytes()
        assert b"nnunetv2.postprocessing.remove_connected_components" in raw


def test_steps_say_what_was_tried(tmp_path):
    prediction = _copy_scenario("regions", tmp_path)
    result = determine_postprocessing(prediction, FIXTURES / "regions" / "reference", num_workers=1)
    tried = [(s.scope, s.judged_on, s.accepted) for s in result.steps]
    assert tried == [
        ("foreground", "foreground_mean", False),
        ("class", "(1, 2)", False),
        ("class", "2", True),
    ]
    assert result.steps[2].dice_before == 0.75 and result.steps[2].dice_after == 1.0
    # region (1, 2) got worse but was not checked: the after-summary shows it
    assert result.summary_after["mean"][(1, 2)]["Dice"] < result.summary_before["mean"][(1, 2)]["Dice"]


def test_apply_postprocessing_reproduces_the_postprocessed_folder(tmp_path):
    out = apply_postprocessing(
        FIXTURES / "foreground" / "prediction",
        tmp_path / "out",
        FIXTURES / "foreground" / "nnunet" / "postprocessing.json",
        num_workers=1,
    )
    assert [p.name for p in out] == ["case_0.nii.gz", "case_1.nii.gz"]
    for path in out:
        expected, _ = read_seg(FIXTURES / "foreground" / "nnunet" / "postprocessed" / path.name)
        np.testing.assert_array_equal(read_seg(path)[0], expected)


def test_unexpected_pickle_content_is_refused(tmp_path):
    bad = tmp_path / "postprocessing.pkl"
    bad.write_bytes(pickle.dumps(([print], [{}])))
    with pytest.raises(pickle.UnpicklingError, match="postprocessing.pkl: refusing to load builtins.print"):
        load_postprocessing(bad)


def test_cli_determine_and_apply(tmp_path, capsys):
    prediction = _copy_scenario("one_class", tmp_path)
    reference = FIXTURES / "one_class" / "reference"
    assert cli.main(["determine-postprocessing", str(prediction), str(reference), "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "labels_or_regions" in out
    pp = prediction / "postprocessing.json"
    assert (
        cli.main(["apply-postprocessing", "-i", str(prediction), "-o", str(tmp_path / "o"), "-pp", str(pp)])
        == 0
    )
    expected, _ = read_seg(FIXTURES / "one_class" / "nnunet" / "postprocessed" / "case_0.nii.gz")
    np.testing.assert_array_equal(read_seg(tmp_path / "o" / "case_0.nii.gz")[0], expected)
    assert (
        cli.main(["apply-postprocessing", "-i", str(prediction), "-o", str(tmp_path / "o"), "-pp", "nope"])
        == 1
    )
    assert capsys.readouterr().err.startswith("error: nope: no such postprocessing file")
