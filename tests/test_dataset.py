"""nnseg_nb.dataset: dataset.json (v1 upgrade), label rules as nnU-Net's LabelManager, case discovery."""

import json

import pytest

from nnseg_nb.dataset import (
    LabelInfo,
    case_identifiers,
    find_cases,
    find_test_cases,
    is_v1_dataset_json,
    label_problems,
    load_dataset_json,
    upgrade_v1_dataset_json,
    write_dataset_json,
)

MSD_HIPPOCAMPUS_JSON = {  # as shipped in Task04_Hippocampus (shortened)
    "name": "Hippocampus",
    "description": "Left and right hippocampus segmentation",
    "tensorImageSize": "3D",
    "modality": {"0": "MRI"},
    "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
    "numTraining": 2,
    "numTest": 1,
    "training": [
        {"image": "./imagesTr/hippocampus_367.nii.gz", "label": "./labelsTr/hippocampus_367.nii.gz"},
        {"image": "./imagesTr/hippocampus_304.nii.gz", "label": "./labelsTr/hippocampus_304.nii.gz"},
    ],
    "test": ["./imagesTs/hippocampus_267.nii.gz"],
}


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --- dataset.json ----------------------------------------------------------------------------------


def test_v1_dataset_json_is_upgraded_on_load_and_the_file_is_untouched(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps(MSD_HIPPOCAMPUS_JSON))
    before = (tmp_path / "dataset.json").read_text()
    dataset_json = load_dataset_json(tmp_path)
    assert dataset_json["channel_names"] == {"0": "MRI"} and "modality" not in dataset_json
    assert dataset_json["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert list(dataset_json["labels"]) == ["background", "Anterior", "Posterior"]  # value order kept
    assert dataset_json["file_ending"] == ".nii.gz" and "tensorImageSize" not in dataset_json
    assert (tmp_path / "dataset.json").read_text() == before
    assert is_v1_dataset_json(MSD_HIPPOCAMPUS_JSON) and not is_v1_dataset_json(dataset_json)


def test_v2_dataset_json_is_returned_unchanged():
    v2 = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1},
        "numTraining": 3,
        "file_ending": ".nrrd",
    }
    assert upgrade_v1_dataset_json(v2) == v2 and upgrade_v1_dataset_json(v2) is not v2


def test_v1_file_ending_comes_from_the_training_list():
    v1 = dict(MSD_HIPPOCAMPUS_JSON, training=[{"image": "./imagesTr/a.nrrd", "label": "./labelsTr/a.nrrd"}])
    assert upgrade_v1_dataset_json(v1)["file_ending"] == ".nrrd"


def test_load_dataset_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        load_dataset_json(tmp_path)
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0,}}')
    with pytest.raises(ValueError, match=r"dataset.json: not valid JSON .* line 1"):
        load_dataset_json(tmp_path)
    (tmp_path / "dataset.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_dataset_json(tmp_path / "dataset.json")


def test_write_dataset_json_round_trips(tmp_path):
    written = write_dataset_json(
        tmp_path, {0: "T1", 1: "T2"}, {"background": 0, "a": 1}, 4, ".nii.gz", name="X"
    )
    assert written["channel_names"] == {"0": "T1", "1": "T2"}
    assert load_dataset_json(tmp_path) == written


# --- labels ----------------------------------------------------------------------------------------


def test_label_info_plain_labels_with_ignore():
    info = LabelInfo.from_dataset_json({"labels": {"background": 0, "gm": 1, "wm": 2, "ignore": 3}})
    assert info.all_labels == [0, 1, 2] and info.foreground_labels == [1, 2]
    assert info.ignore_label == 3 and not info.has_regions
    assert info.num_segmentation_heads == 3  # softmax over background + 2 labels; ignore gets no output
    assert info.expected_values == {0, 1, 2, 3}


def test_label_info_regions_follow_brats_example():
    labels = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": 3}
    info = LabelInfo.from_dataset_json({"labels": labels, "regions_class_order": [1, 2, 3]})
    assert info.has_regions and info.all_labels == [0, 1, 2, 3]
    assert info.foreground_regions == [(1, 2, 3), (2, 3), (3,)]
    assert info.num_segmentation_heads == 3  # one sigmoid per region
    assert info.regions_class_order == [1, 2, 3]


@pytest.mark.parametrize(
    "labels, regions_class_order, expected",
    [
        ({"background": 0, "a": 1}, None, []),
        ({"a": 1, "b": 0}, None, ['must contain "background": 0']),
        ({"background": [0], "a": 1}, None, ['must contain "background": 0']),
        (
            {"background": 0, "a": 1.5},
            None,
            ["label 'a' has value 1.5; values must be non-negative integers"],
        ),
        ({"background": 0, "a": "1"}, None, ["label 'a' has value '1'"]),
        ({"background": 0, "a": 1, "b": 1}, None, ["labels 'a', 'b' share the value 1"]),
        ({"background": 0, "a": 1, "b": 3}, None, ["label values must be consecutive from 0; missing [2]"]),
        (
            {"background": 0, "a": 1, "ignore": 1},
            None,
            ["the ignore label must be the largest value (2), found 1"],
        ),
        (
            {"background": 0, "ignore": 1, "a": 2},
            None,
            ["missing [1]", "the ignore label must be the largest value (3)"],
        ),
        (
            {"background": 0, "a": 1, "ignore": [2, 3]},
            None,
            ["the ignore label must be one integer, not a region"],
        ),
        ({"background": 0, "wt": [1, 2], "tc": 2}, None, ["region-based labels need 'regions_class_order'"]),
        (
            {"background": 0, "wt": [1, 2], "tc": 2},
            [1],
            ["'regions_class_order' has 1 entries but there are 2 regions"],
        ),
        ({}, None, ["'labels' must be a non-empty object"]),
        ([0, 1], None, ["'labels' must be a non-empty object"]),
    ],
)
def test_label_problems_messages(labels, regions_class_order, expected):
    problems = label_problems(labels, regions_class_order)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert start in problem


def test_label_info_refuses_invalid_labels_with_the_reasons():
    with pytest.raises(ValueError, match="(?s)share the value 1.*missing \\[2\\]"):
        LabelInfo.from_dataset_json({"labels": {"background": 0, "a": 1, "b": 1, "c": 3}})


# --- case discovery --------------------------------------------------------------------------------


def test_find_cases_groups_channels_and_finds_labels(tmp_path):
    for case in ("b", "a_1"):
        for channel in (1, 0):
            touch(tmp_path / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
    touch(tmp_path / "labelsTr" / "a_1.nii.gz")
    touch(tmp_path / "imagesTr" / "notes.txt")
    touch(tmp_path / "imagesTr" / "c_0000.nrrd")  # another ending: not a case
    dataset_json = {"file_ending": ".nii.gz"}
    cases = find_cases(tmp_path, dataset_json)
    assert list(cases) == ["a_1", "b"]
    assert [p.name for p in cases["a_1"].images] == ["a_1_0000.nii.gz", "a_1_0001.nii.gz"]
    assert cases["a_1"].label == tmp_path / "labelsTr" / "a_1.nii.gz"
    assert cases["b"].label is None
    assert case_identifiers(tmp_path, dataset_json) == ["a_1", "b"]


def test_find_cases_with_an_explicit_file_list(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSEG_TEST_DATA", str(tmp_path / "elsewhere"))
    dataset_json = {
        "file_ending": ".nii.gz",
        "dataset": {
            "x": {"images": ["imgs/x_t1.nii.gz", "imgs/x_t2.nii.gz"], "label": "segs/x.nii.gz"},
            "y": {"images": ["$NNSEG_TEST_DATA/y.nii.gz"], "label": str(tmp_path / "abs" / "y.nii.gz")},
        },
    }
    cases = find_cases(tmp_path, dataset_json)  # no imagesTr needed
    assert cases["x"].images == [tmp_path / "imgs/x_t1.nii.gz", tmp_path / "imgs/x_t2.nii.gz"]
    assert cases["x"].label == tmp_path / "segs/x.nii.gz"
    assert cases["y"].images == [tmp_path / "elsewhere" / "y.nii.gz"]
    assert cases["y"].label == tmp_path / "abs" / "y.nii.gz"


def test_find_test_cases_reads_imagesTs_and_labelsTs(tmp_path):
    touch(tmp_path / "imagesTr" / "a_0000.png")
    touch(tmp_path / "imagesTs" / "t1_0000.png")
    touch(tmp_path / "imagesTs" / "t2_0000.png")
    touch(tmp_path / "labelsTs" / "t2.png")
    dataset_json = {"file_ending": ".png", "dataset": {}}  # the file list only covers training cases
    cases = find_test_cases(tmp_path, dataset_json)
    assert list(cases) == ["t1", "t2"]
    assert cases["t1"].label is None and cases["t2"].label == tmp_path / "labelsTs" / "t2.png"
