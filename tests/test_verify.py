"""nnseg_nb.verify: a corpus of broken datasets, one fault each, every fault reported with its file.

Each test builds a tiny valid dataset (3 cases, 2 channels, 8x10x12) with nnseg_nb.io in tmp_path,
injects a fault and checks that exactly the expected problems come back: severity, file and a message
that names the problem.
"""

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nnseg_nb import cli, io, verify
from nnseg_nb.dataset import write_dataset_json
from nnseg_nb.verify import ERROR, WARNING, Problem, verify_dataset

SHAPE = (8, 10, 12)  # (Z, Y, X)
SPACING = [2.0, 1.0, 1.5]
PROPS = {"spacing": SPACING}
LABELS = {"background": 0, "a": 1, "b": 2}
CASES = ("case0", "case1", "case2")


def make_seg(shape=SHAPE) -> np.ndarray:
    seg = np.zeros(shape, np.uint8)
    seg[2:5, 3:6, 4:8] = 1
    seg[5:7, 2:4, 1:3] = 2
    return seg


def make_image(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)


def make_dataset(root, name="Dataset900_Base", ending=".nii.gz", **json_extra):
    """The valid base dataset: 3 cases, channels T1/T2, labels background/a/b."""
    folder = root / name
    for i, case in enumerate(CASES):
        for channel in (0, 1):
            io.write_image(
                make_image(10 * i + channel), folder / "imagesTr" / f"{case}_{channel:04d}{ending}", PROPS
            )
        io.write_seg(make_seg(), folder / "labelsTr" / f"{case}{ending}", PROPS)
    write_dataset_json(folder, {"0": "T1", "1": "T2"}, LABELS, len(CASES), ending, name="Base", **json_extra)
    return folder


def edit_json(folder, drop=(), **changes):
    path = folder / "dataset.json"
    dataset_json = json.loads(path.read_text())
    dataset_json.update(changes)
    for key in drop:
        dataset_json.pop(key)
    path.write_text(json.dumps(dataset_json))


def write_nifti(path, zyx: np.ndarray, spacing=SPACING, offset=(0.0, 0.0, 0.0)):
    """Write a (Z, Y, X) array (any dtype, NaN allowed) with an axis-aligned affine."""
    affine = np.diag(list(spacing[::-1]) + [1.0])
    affine[:3, 3] = offset
    nib.save(nib.Nifti1Image(np.asarray(zyx).transpose(2, 1, 0), affine), str(path))


def truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def seg_with(value, where=(0, 0, 0)) -> np.ndarray:
    seg = make_seg().astype(np.float32)
    seg[where] = value
    return seg


@dataclass
class Fault:
    name: str
    inject: Callable
    expected: list  # (severity, file relative to the dataset folder, regex on the message)
    strict: bool = True  # the expected problems are all the problems


E, W = ERROR, WARNING
IMG = "imagesTr/{}_{:04d}.nii.gz".format
LBL = "labelsTr/{}.nii.gz".format
V1_JSON = {
    "name": "Base",
    "modality": {"0": "T1", "1": "T2"},
    "labels": {"0": "background", "1": "a", "2": "b"},
    "numTraining": 3,
    "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in CASES],
}

FAULTS = [
    # --- what nnU-Net checks -----------------------------------------------------------------------
    Fault(
        "missing_dataset_json", lambda f: (f / "dataset.json").unlink(), [(E, "dataset.json", r"^missing")]
    ),
    Fault(
        "missing_required_keys",
        lambda f: edit_json(f, drop=("numTraining", "file_ending"), comment="hi"),
        [(E, "dataset.json", r"missing required keys: numTraining, file_ending .*does not use: comment\)")],
    ),
    Fault(
        "numTraining_mismatch",
        lambda f: edit_json(f, numTraining=5),
        [(E, "dataset.json", r"numTraining is 5 but 3 training cases were found")],
    ),
    Fault(
        "image_without_label",
        lambda f: (f / LBL("case2")).unlink(),
        [(E, LBL("case2"), r"missing label file for case 'case2'")],
    ),
    Fault("missing_labelsTr", lambda f: shutil.rmtree(f / "labelsTr"), [(E, "labelsTr", r"missing folder")]),
    Fault(
        "missing_imagesTr",
        lambda f: shutil.rmtree(f / "imagesTr"),
        [(E, "imagesTr", r"missing folder"), (E, "dataset.json", r"numTraining is 3 but 0")],
    ),
    Fault(
        "non_consecutive_labels",
        lambda f: edit_json(f, labels={"background": 0, "a": 1, "b": 3}),
        [
            (E, "dataset.json", r"consecutive from 0; missing \[2\]"),
            *[
                (E, LBL(c), r"label values 2 are not declared in dataset.json labels \(declared: 0, 1, 3\)")
                for c in CASES
            ],
            (W, "dataset.json", r"declared labels found in no label file: b \(3\)"),
        ],
    ),
    Fault(
        "undeclared_label_value",
        lambda f: write_nifti(f / LBL("case1"), seg_with(3).astype(np.uint8)),
        [(E, LBL("case1"), r"label values 3 are not declared in dataset.json labels \(declared: 0, 1, 2\)")],
    ),
    Fault(
        "nan_in_image",
        lambda f: write_nifti(f / IMG("case1", 0), np.where(make_seg() == 1, np.nan, 1.0).astype(np.float32)),
        [(E, IMG("case1", 0), r"36 NaN voxel\(s\)")],
    ),
    Fault(
        "nan_in_label",
        lambda f: write_nifti(f / LBL("case1"), seg_with(np.nan)),
        [(E, LBL("case1"), r"1 NaN and 0 infinite voxel\(s\) in a label map")],
    ),
    Fault(
        "label_shape_mismatch",
        lambda f: io.write_seg(make_seg((8, 10, 11)), f / LBL("case0"), PROPS),
        [(E, LBL("case0"), r"shape \(8, 10, 11\) differs from its image case0_0000.nii.gz \(8, 10, 12\)")],
    ),
    Fault(
        "label_spacing_mismatch",
        lambda f: io.write_seg(make_seg(), f / LBL("case0"), {"spacing": [3.0, 1.0, 1.5]}),
        [
            (
                E,
                LBL("case0"),
                r"spacing \(3, 1, 1.5\) differs from its image case0_0000.nii.gz \(2, 1, 1.5\)",
            ),
            (W, LBL("case0"), r"affine differs from its image case0_0000.nii.gz"),
        ],
    ),
    Fault(
        "more_channel_names",
        lambda f: edit_json(f, channel_names={"0": "T1", "1": "T2", "2": "FLAIR"}),
        [
            (
                E,
                IMG(c, 2),
                r"missing channel file: channel_names declares 3 channels \[0: T1, 1: T2, 2: FLAIR\]",
            )
            for c in CASES
        ],
    ),
    Fault(
        "label_affine_mismatch",
        lambda f: write_nifti(f / LBL("case0"), make_seg(), offset=(5.0, 0.0, 0.0)),
        [(W, LBL("case0"), r"affine differs from its image case0_0000.nii.gz")],
    ),
    # --- nnU-Net's "only background" warning, which never fires there -------------------------------
    Fault(
        "only_background",
        lambda f: io.write_seg(np.zeros(SHAPE, np.uint8), f / LBL("case2"), PROPS),
        [(W, LBL("case2"), r"contains only background \(0\)")],
    ),
    # --- what nnU-Net misses -----------------------------------------------------------------------
    Fault(
        "inf_in_image",
        lambda f: write_nifti(f / IMG("case2", 1), np.full(SHAPE, np.inf, np.float32)),
        [(E, IMG("case2", 1), r"960 infinite voxel\(s\)")],
    ),
    Fault(
        "empty_file",
        lambda f: (f / IMG("case1", 1)).write_bytes(b""),
        [(E, IMG("case1", 1), r"empty file \(0 bytes\)")],
    ),
    Fault(
        "truncated_file",
        lambda f: truncate(f / IMG("case2", 0)),
        [(E, IMG("case2", 0), r"cannot be read as an image \(.*(EOF|ended|truncated|[Cc]ompressed)")],
    ),
    Fault(
        "text_file_as_image",
        lambda f: (f / IMG("case0", 0)).write_text("not an image\n"),
        [(E, IMG("case0", 0), r"cannot be read as an image \(.*not a gzip file")],
    ),
    Fault(
        "png_as_label",
        lambda f: Image.fromarray(np.zeros((4, 4), np.uint8)).save(f / LBL("case1"), format="PNG"),
        [(E, LBL("case1"), r"cannot be read as an image")],
    ),
    Fault(
        "label_without_image",
        lambda f: io.write_seg(make_seg(), f / LBL("orphan"), PROPS),
        [(E, LBL("orphan"), r"label file without images \(no orphan_0000.nii.gz in imagesTr\)")],
    ),
    Fault(
        "other_ending_in_imagesTr",
        lambda f: io.write_image(make_image(0), f / "imagesTr/case0_0000.nrrd", PROPS),
        [(E, "imagesTr/case0_0000.nrrd", r"file ending '.nrrd' is not the dataset's file_ending '.nii.gz'")],
    ),
    Fault(
        "other_ending_in_labelsTr",
        lambda f: io.write_seg(make_seg(), f / "labelsTr/case0.mha", PROPS),
        [(E, "labelsTr/case0.mha", r"file ending '.mha' is not the dataset's file_ending")],
    ),
    Fault(
        "stray_text_file",
        lambda f: (f / "imagesTr/readme.txt").write_text("hi"),
        [(W, "imagesTr/readme.txt", r"not a '.nii.gz' file; ignored")],
    ),
    Fault("subfolder", lambda f: (f / "imagesTr/old").mkdir(), [(W, "imagesTr/old", r"subfolder ignored")]),
    Fault(
        "unsupported_file_ending",
        lambda f: edit_json(f, file_ending=".npy"),
        [(E, "dataset.json", r"no reader supports file_ending '.npy'")],
    ),
    Fault(
        "file_ending_without_dot",
        lambda f: edit_json(f, file_ending="nii.gz"),
        [(E, "dataset.json", r"file_ending 'nii.gz' must start with a dot: '.nii.gz'")],
    ),
    Fault(
        "file_ending_of_other_files",
        lambda f: edit_json(f, file_ending=".nrrd"),
        [
            (E, IMG("case0", 0), r"file ending '.nii.gz' is not the dataset's file_ending '.nrrd'"),
            (E, LBL("case2"), r"file ending '.nii.gz' is not the dataset's file_ending '.nrrd'"),
            (E, "imagesTr", r"no training cases: no file named <case>_0000.nrrd"),
            (E, "dataset.json", r"numTraining is 3 but 0 training cases were found"),
        ],
        strict=False,
    ),
    Fault(
        "missing_channel_file",
        lambda f: (f / IMG("case1", 1)).unlink(),
        [(E, IMG("case1", 1), r"missing channel file: channel_names declares 2 channels \[0: T1, 1: T2\]")],
    ),
    Fault(
        "extra_channel_file",
        lambda f: io.write_image(make_image(7), f / IMG("case1", 2), PROPS),
        [(E, IMG("case1", 2), r"extra channel file: channel_names declares only 2 channels")],
    ),
    Fault(
        "fewer_channel_names",
        lambda f: edit_json(f, channel_names={"0": "T1"}),
        [
            (E, IMG(c, 1), r"extra channel file: channel_names declares only 1 channel \[0: T1\]")
            for c in CASES
        ],
    ),
    Fault(
        "channel_names_keys",
        lambda f: edit_json(f, channel_names={"0": "T1", "2": "T2"}),
        [(E, "dataset.json", r"channel_names keys must be \"0\" .. \"1\", found '0', '2'")],
    ),
    Fault(
        "image_without_channel_suffix",
        lambda f: io.write_image(make_image(3), f / "imagesTr/case9.nii.gz", PROPS),
        [(E, "imagesTr/case9.nii.gz", r"lacks the 4-digit channel suffix \(expected case9_0000.nii.gz\)")],
    ),
    Fault(
        "macos_resource_fork",
        lambda f: (f / "imagesTr/._case0_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07"),
        [(E, "imagesTr/._case0_0000.nii.gz", r"macOS metadata file")],
    ),
    Fault(
        "non_integer_label",
        lambda f: write_nifti(f / LBL("case0"), seg_with(0.5)),
        [(E, LBL("case0"), r"non-integer label values \(e.g. 0.5\); label maps hold integers")],
    ),
    Fault(
        "negative_label",
        lambda f: write_nifti(f / LBL("case0"), seg_with(-1).astype(np.int16)),
        [(E, LBL("case0"), r"label values -1 are not declared")],
    ),
    Fault(
        "4d_image",
        lambda f: nib.save(
            nib.Nifti1Image(np.zeros((12, 10, 8, 2), np.float32), np.eye(4)), str(f / IMG("case0", 1))
        ),
        [(E, IMG("case0", 1), r"4D image of shape \(12, 10, 8, 2\) where a 3D image is expected")],
    ),
    Fault(
        "channel_shape_mismatch",
        lambda f: io.write_image(make_image(1, (8, 9, 12)), f / IMG("case1", 1), PROPS),
        [(E, IMG("case1", 1), r"shape \(8, 9, 12\) differs from case1_0000.nii.gz \(8, 10, 12\)")],
    ),
    Fault(
        "channel_spacing_mismatch",
        lambda f: io.write_image(make_image(1), f / IMG("case1", 1), {"spacing": [2.0, 1.0, 1.25]}),
        [
            (E, IMG("case1", 1), r"spacing \(2, 1, 1.25\) differs from case1_0000.nii.gz \(2, 1, 1.5\)"),
            (W, IMG("case1", 1), r"affine differs from case1_0000.nii.gz"),
        ],
    ),
    Fault(
        "declared_label_never_found",
        lambda f: edit_json(f, labels={**LABELS, "c": 3}),
        [(W, "dataset.json", r"declared labels found in no label file: c \(3\)")],
    ),
    Fault(
        "duplicate_label_values",
        lambda f: edit_json(f, labels={**LABELS, "b_again": 2}),
        [(E, "dataset.json", r"labels 'b', 'b_again' share the value 2")],
    ),
    Fault(
        "ignore_not_largest",
        lambda f: edit_json(f, labels={"background": 0, "ignore": 1, "a": 2, "b": 3}),
        [
            (E, "dataset.json", r"consecutive from 0; missing \[1\]"),
            (E, "dataset.json", r"the ignore label must be the largest value \(4\), found 1"),
            (W, "dataset.json", r"declared labels found in no label file: b \(3\)"),
        ],
    ),
    Fault(
        "regions_without_order",
        lambda f: edit_json(f, labels={"background": 0, "both": [1, 2], "b": 2}),
        [(E, "dataset.json", r"region-based labels need 'regions_class_order'")],
    ),
    Fault(
        "label_value_not_integer_in_json",
        lambda f: edit_json(f, labels={"background": 0, "a": 1, "b": 2.5}),
        [
            (E, "dataset.json", r"label 'b' has value 2.5"),
            *[
                (E, LBL(c), r"label values 2 are not declared in dataset.json labels \(declared: 0, 1\)")
                for c in CASES
            ],
        ],
    ),
    Fault(
        "numTraining_not_an_integer",
        lambda f: edit_json(f, numTraining="3"),
        [(E, "dataset.json", r"numTraining must be a non-negative integer, found '3'")],
    ),
    Fault(
        "invalid_json",
        lambda f: (f / "dataset.json").write_text('{"labels": {"background": 0,}'),
        [(E, "dataset.json", r"not valid JSON \(.* at line 1, column \d+\)")],
    ),
    Fault(
        "json_not_an_object",
        lambda f: (f / "dataset.json").write_text("[1, 2, 3]"),
        [(E, "dataset.json", r"must hold a JSON object, found a list")],
    ),
    Fault(
        "v1_dataset_json",
        lambda f: (f / "dataset.json").write_text(json.dumps(V1_JSON)),
        [(W, "dataset.json", r"nnU-Net v1 format .*convert it with `nnseg-nb convert v1`")],
    ),
    Fault(
        "reader_override",
        lambda f: edit_json(f, overwrite_image_reader_writer="NibabelIOWithReorient"),
        [(W, "dataset.json", r"overwrite_image_reader_writer 'NibabelIOWithReorient' is ignored")],
    ),
    Fault(
        "test_image_missing_channel",
        lambda f: io.write_image(make_image(5), f / "imagesTs/t0_0000.nii.gz", PROPS),
        [(W, "imagesTs/t0_0001.nii.gz", r"missing channel file")],
    ),
]


def problem_matches(problem: Problem, folder, severity, relative, pattern) -> bool:
    return (
        problem.severity == severity
        and problem.file == str(folder / relative)
        and re.search(pattern, problem.message) is not None
    )


def assert_reported(report, folder, expected, strict=True):
    for severity, relative, pattern in expected:
        assert any(problem_matches(p, folder, severity, relative, pattern) for p in report.problems), (
            f"not reported: {severity} {relative} /{pattern}/ in:\n{report.format()}"
        )
    if strict:
        assert len(report.problems) == len(expected), report.format()


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_each_fault_is_reported_with_its_file(tmp_path, fault):
    folder = make_dataset(tmp_path)
    fault.inject(folder)
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert_reported(report, folder, fault.expected, fault.strict)
    assert report.ok == (not any(severity == ERROR for severity, _, _ in fault.expected))
    assert all("\n" not in p.format() for p in report.problems)


def test_the_valid_base_dataset_passes_with_a_summary(tmp_path):
    folder = make_dataset(tmp_path)
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert report.ok and report.problems == [] and report.format() == ""
    assert report.num_cases == 3 and report.labels_found == [0, 1, 2]
    assert report.spacing_range == ([2.0, 1.0, 1.5], [2.0, 1.0, 1.5])
    summary = report.summary()
    assert "Dataset900_Base: 3 cases, 2 channel(s) (0: T1, 1: T2), file ending .nii.gz" in summary
    assert "labels found: 0, 1, 2" in summary and "spacing (z, y, x): 2 x 1 x 1.5" in summary
    assert summary.endswith("OK: 0 error(s), 0 warning(s)")


def test_all_faults_of_one_dataset_are_reported_at_once_with_a_process_pool(tmp_path):
    folder = make_dataset(tmp_path)
    combined = [
        f
        for f in FAULTS
        if f.name
        in (
            "numTraining_mismatch",
            "nan_in_image",
            "truncated_file",
            "channel_shape_mismatch",
            "only_background",
            "label_without_image",
            "other_ending_in_imagesTr",
            "non_integer_label",
            "duplicate_label_values",
        )
    ]
    for fault in combined:
        fault.inject(folder)
    report = verify_dataset(folder, num_workers=2, progress=False)
    expected = [e for f in combined for e in f.expected]
    expected[0] = (E, "dataset.json", r"numTraining is 5 but 3")
    assert_reported(report, folder, expected, strict=False)
    assert len(report.errors) == 8 and len(report.warnings) == 1
    assert [p.file for p in report.problems] == sorted(p.file for p in report.problems)  # grouped by file


def test_declared_label_missing_is_a_warning_only(tmp_path):
    folder = make_dataset(tmp_path)
    edit_json(folder, labels={**LABELS, "c": 3})
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert report.ok and len(report.warnings) == 1


def test_folder_name_that_nnunet_cannot_find_is_a_warning(tmp_path):
    folder = make_dataset(tmp_path, name="my_data")
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert report.ok
    assert_reported(report, folder, [(W, "", r"not DatasetXXX_Name")])


def test_nrrd_dataset_origin_and_direction_mismatch_warn(tmp_path):
    folder = make_dataset(tmp_path, ending=".nrrd")
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []
    label = sitk.ReadImage(str(folder / "labelsTr/case0.nrrd"))
    label.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(label, str(folder / "labelsTr/case0.nrrd"))
    channel = sitk.ReadImage(str(folder / "imagesTr/case1_0001.nrrd"))
    channel.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(channel, str(folder / "imagesTr/case1_0001.nrrd"))
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert report.ok
    assert_reported(
        report,
        folder,
        [
            (W, "labelsTr/case0.nrrd", r"origin differs from its image case0_0000.nrrd"),
            (W, "imagesTr/case1_0001.nrrd", r"direction differs from case1_0000.nrrd"),
        ],
    )


def test_mhd_dataset_keeps_its_data_files_and_warns_that_nnunet_cannot_read_it(tmp_path):
    folder = make_dataset(tmp_path, ending=".mhd")
    assert (folder / "imagesTr/case0_0000.zraw").is_file()
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert_reported(
        report, folder, [(W, "dataset.json", r"file_ending '.mhd' is read by nnseg_nb but not by nnU-Net v2")]
    )


def make_png_dataset(root, rgb=True, channel_names=None):
    folder = root / "Dataset901_Road"
    for i, case in enumerate(CASES):
        image = np.random.default_rng(i).integers(
            0, 256, size=(10, 12, 3) if rgb else (10, 12), dtype=np.uint8
        )
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "imagesTr" / f"{case}_0000.png")
        io.write_seg(make_seg().max(axis=0)[None], folder / "labelsTr" / f"{case}.png", {})  # labels 1 and 2
    names = channel_names or ({"0": "R", "1": "G", "2": "B"} if rgb else {"0": "gray"})
    write_dataset_json(folder, names, LABELS, 3, ".png")
    return folder


def test_natural_2d_datasets_count_rgb_channels(tmp_path):
    folder = make_png_dataset(tmp_path)
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert report.problems == [] and report.spacing_range == ([999.0, 1.0, 1.0], [999.0, 1.0, 1.0])
    edit_json(folder, channel_names={"0": "gray"})
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert_reported(
        report,
        folder,
        [
            (
                E,
                f"imagesTr/{c}_0000.png",
                r"3 channel\(s\) read from 1 file\(s\), but channel_names declares 1 channel",
            )
            for c in CASES
        ],
    )


def test_colour_label_map_is_an_error(tmp_path):
    folder = make_png_dataset(tmp_path, rgb=False)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "labelsTr/case1.png")
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert_reported(report, folder, [(E, "labelsTr/case1.png", r"label map has 3 channels")], strict=False)


def test_explicit_file_list_is_checked(tmp_path, monkeypatch):
    folder = tmp_path / "Dataset902_Listed"
    data = tmp_path / "data"
    for case in CASES:
        io.write_image(make_image(1), data / f"{case}_t1.nii.gz", PROPS)
        io.write_seg(make_seg(), data / f"{case}_seg.nii.gz", PROPS)
    monkeypatch.setenv("NNSEG_VERIFY_DATA", str(data))
    listing = {
        case: {"images": [f"$NNSEG_VERIFY_DATA/{case}_t1.nii.gz"], "label": f"../data/{case}_seg.nii.gz"}
        for case in CASES
    }
    write_dataset_json(folder, {"0": "T1"}, LABELS, 3, ".nii.gz", dataset=listing)
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []

    listing["case1"]["images"].append("$NNSEG_VERIFY_DATA/case1_t2.nii.gz")
    listing["case2"] = {"image": "oops"}
    write_dataset_json(folder, {"0": "T1"}, LABELS, 3, ".nii.gz", dataset=listing)
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert str(data / "case1_t2.nii.gz") in [p.file for p in report.errors]
    assert any("listed in dataset.json under 'dataset' -> 'case1'" in p.message for p in report.errors)
    assert any(
        "'dataset' entry 'case1' lists 2 image file(s), channel_names declares 1" in p.message
        for p in report.errors
    )
    assert any("'dataset' entry 'case2' must be" in p.message for p in report.errors)
    assert any(
        "numTraining is 3 but 2 training cases" in p.message for p in report.errors
    )  # case2 is malformed
    assert len(report.errors) == 4


def test_an_unexpected_crash_becomes_a_problem(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("reader exploded")

    monkeypatch.setattr(verify, "_check_label", broken)
    report = verify_dataset(folder, num_workers=1, progress=False)
    assert len(report.errors) == 3
    assert report.errors[0].file == str(folder / LBL("case0"))
    assert "unexpected RuntimeError while checking: reader exploded" in report.errors[0].message


def test_unknown_dataset_name_raises_listing_what_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    make_dataset(tmp_path)
    assert verify_dataset(
        "Base", num_workers=1, progress=False
    ).ok  # resolved by name, like 900 or Dataset900_Base
    with pytest.raises(FileNotFoundError, match="Dataset900_Base"):
        verify_dataset("Nope", num_workers=1, progress=False)


# --- the command line ------------------------------------------------------------------------------


def test_cli_exit_0_for_a_valid_dataset(tmp_path, capsys):
    folder = make_dataset(tmp_path)
    assert cli.main(["verify", str(folder), "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 error(s), 0 warning(s)" in out and "labels found: 0, 1, 2" in out


def test_cli_exit_1_with_one_line_per_problem_and_no_traceback(tmp_path, capsys):
    folder = make_dataset(tmp_path)
    for name in ("truncated_file", "label_without_image", "undeclared_label_value", "numTraining_mismatch"):
        next(f for f in FAULTS if f.name == name).inject(folder)
    assert cli.main(["verify", str(folder), "-np", "1"]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out
    problem_lines = [line for line in out.splitlines() if re.match(r".*: (error|warning): ", line)]
    assert len(problem_lines) == 4
    assert f"{folder / IMG('case2', 0)}: error: cannot be read as an image" in out
    assert f"{folder / LBL('orphan')}: error: label file without images" in out
    assert "NOT OK: 4 error(s), 0 warning(s)" in out


def test_cli_unknown_dataset_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    assert cli.main(["verify", "Dataset123_Nothing"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no dataset 'Dataset123_Nothing'") and len(err.strip().splitlines()) == 1
    assert cli.main(["verify", str(tmp_path), "-np", "0"]) == 1
