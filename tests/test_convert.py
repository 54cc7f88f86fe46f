"""nnseg_nb.convert: each converter on a tiny generated source; the result verifies and holds the source's data."""

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nnseg_nb import cli, convert, io
from nnseg_nb.verify import verify_dataset

GEOMETRY_FIELDS = (
    "pixdim",
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
)
SHAPE_XYZ = (12, 10, 8)


def oblique_affine() -> np.ndarray:
    affine = np.array([[0.0, -1.2, 0.1, 5.0], [0.9, 0.0, 0.0, -3.0], [0.0, 0.05, 2.5, 7.0], [0, 0, 0, 1]])
    return affine


def save_nifti(path, data, affine=None):
    affine = oblique_affine() if affine is None else affine
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def xyz_seg(seed=0) -> np.ndarray:
    seg = np.zeros(SHAPE_XYZ, np.uint8)
    seg[2:6, 2:5, 1:4] = 1
    seg[7:10, 6:9, 4:7] = 2
    return seg


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its content hash: equal snapshots mean nothing was changed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def msd_json(modality, labels, num_training, cases, test_cases=()):
    return {
        "name": "TEST",
        "description": "made by a test",
        "licence": "CC-BY-SA 4.0",
        "tensorImageSize": "4D",
        "modality": modality,
        "labels": labels,
        "numTraining": num_training,
        "numTest": len(test_cases),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test_cases],
    }


@pytest.fixture
def msd_task(tmp_path):
    """Task05_Prostate-like: 2-modality 4D images (T2, ADC), 2 training cases, 1 test case, a macOS ._ file."""
    source = tmp_path / "Task05_Prostate"
    rng = np.random.default_rng(0)
    cases = ("prostate_00", "prostate_01")
    for case in cases:
        save_nifti(
            source / "imagesTr" / f"{case}.nii.gz", rng.normal(size=SHAPE_XYZ + (2,)).astype(np.float32)
        )
        save_nifti(source / "labelsTr" / f"{case}.nii.gz", xyz_seg())
    save_nifti(
        source / "imagesTs" / "prostate_09.nii.gz", rng.normal(size=SHAPE_XYZ + (2,)).astype(np.float32)
    )
    (source / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    labels = {"0": "background", "1": "PZ", "2": "TZ"}
    (source / "dataset.json").write_text(
        json.dumps(msd_json({"0": "T2", "1": "ADC"}, labels, 2, cases, ["prostate_09"]))
    )
    return source


# --- (a) MSD ---------------------------------------------------------------------------------------


def test_msd_4d_images_are_split_into_channels_with_their_geometry(msd_task, tmp_path):
    before = snapshot(msd_task)
    folder = convert.convert_msd(msd_task, output_root=tmp_path / "raw", num_workers=1, progress=False)
    assert folder == tmp_path / "raw" / "Dataset005_Prostate"
    assert snapshot(msd_task) == before  # the source is never modified
    assert sorted(snapshot(folder)) == [
        "dataset.json",
        "imagesTr/prostate_00_0000.nii.gz",
        "imagesTr/prostate_00_0001.nii.gz",
        "imagesTr/prostate_01_0000.nii.gz",
        "imagesTr/prostate_01_0001.nii.gz",
        "imagesTs/prostate_09_0000.nii.gz",
        "imagesTs/prostate_09_0001.nii.gz",
        "labelsTr/prostate_00.nii.gz",
        "labelsTr/prostate_01.nii.gz",
    ]
    assert json.loads((folder / "dataset.json").read_text()) == {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "PZ": 1, "TZ": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
        "name": "TEST",
        "description": "made by a test",
        "licence": "CC-BY-SA 4.0",
    }

    report = verify_dataset(folder, num_workers=1, progress=False)
    assert report.ok and report.problems == [], report.format()
    source = nib.load(str(msd_task / "imagesTr" / "prostate_01.nii.gz"))
    for channel in (0, 1):
        written = nib.load(str(folder / "imagesTr" / f"prostate_01_{channel:04d}.nii.gz"))
        np.testing.assert_array_equal(
            np.asanyarray(written.dataobj), np.asanyarray(source.dataobj)[..., channel]
        )
        for field in GEOMETRY_FIELDS:
            np.testing.assert_array_equal(written.header[field], source.header[field], err_msg=field)
    data, _ = io.read_case([folder / "imagesTr" / f"prostate_01_{c:04d}.nii.gz" for c in (0, 1)])
    np.testing.assert_array_equal(data, np.asanyarray(source.dataobj).transpose(3, 2, 1, 0))
    assert (folder / "labelsTr/prostate_00.nii.gz").read_bytes() == (
        msd_task / "labelsTr/prostate_00.nii.gz"
    ).read_bytes()


def test_msd_existing_dataset_is_kept_unless_overwrite(msd_task, tmp_path):
    raw = tmp_path / "raw"
    folder = convert.convert_msd(msd_task, output_root=raw, num_workers=1, progress=False)
    (folder / "marker.txt").write_text("old")
    with pytest.raises(FileExistsError, match="Dataset005_Prostate: already exists; pass overwrite=True"):
        convert.convert_msd(msd_task, output_root=raw, num_workers=1, progress=False)
    assert (folder / "marker.txt").exists()
    convert.convert_msd(msd_task, output_root=raw, overwrite=True, num_workers=1, progress=False)
    assert not (folder / "marker.txt").exists() and (folder / "dataset.json").is_file()
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset005_Prostate"]  # no temporary folders left

    other = convert.convert_msd(msd_task, dataset_id=105, output_root=raw, num_workers=1, progress=False)
    assert other.name == "Dataset105_Prostate"
    (raw / "Dataset206_Other").mkdir()
    with pytest.raises(FileExistsError, match="id 206 is taken"):
        convert.convert_msd(msd_task, dataset_id=206, output_root=raw, num_workers=1, progress=False)


def test_msd_failure_leaves_nothing_behind(msd_task, tmp_path):
    source_json = json.loads((msd_task / "dataset.json").read_text())
    source_json["modality"] = {"0": "T2", "1": "ADC", "2": "DWI"}
    (msd_task / "dataset.json").write_text(json.dumps(source_json))
    with pytest.raises(
        ValueError, match=r"prostate_00.nii.gz: shape \(12, 10, 8, 2\) holds 2 volume\(s\), but .* lists 3"
    ):
        convert.convert_msd(msd_task, output_root=tmp_path / "raw", num_workers=1, progress=False)
    assert list((tmp_path / "raw").iterdir()) == []


def test_msd_single_modality_3d_images_are_copied(tmp_path):
    source = tmp_path / "Task04_Hippocampus"
    save_nifti(source / "imagesTr/hippocampus_001.nii.gz", np.arange(960, dtype=np.int16).reshape(SHAPE_XYZ))
    save_nifti(source / "labelsTr/hippocampus_001.nii.gz", xyz_seg())
    (source / "dataset.json").write_text(
        json.dumps(
            msd_json(
                {"0": "MRI"}, {"0": "background", "1": "Anterior", "2": "Posterior"}, 1, ["hippocampus_001"]
            )
        )
    )
    folder = convert.convert_msd(source, output_root=tmp_path / "raw", num_workers=1, progress=False)
    assert folder.name == "Dataset004_Hippocampus" and not (folder / "imagesTs").exists()
    assert (folder / "imagesTr/hippocampus_001_0000.nii.gz").read_bytes() == (
        source / "imagesTr/hippocampus_001.nii.gz"
    ).read_bytes()
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []


# --- (c) nnU-Net v1 --------------------------------------------------------------------------------


@pytest.fixture
def v1_task(tmp_path):
    source = tmp_path / "Task004_Hippocampus"
    cases = ("hippocampus_001", "hippocampus_002")
    for i, case in enumerate(cases):
        save_nifti(source / "imagesTr" / f"{case}_0000.nii.gz", np.full(SHAPE_XYZ, i, np.float32))
        save_nifti(source / "labelsTr" / f"{case}.nii.gz", xyz_seg())
    save_nifti(source / "imagesTs" / "hippocampus_100_0000.nii.gz", np.zeros(SHAPE_XYZ, np.float32))
    (source / "labelsTr" / ".DS_Store").write_bytes(b"\x00")
    (source / "dataset.json").write_text(
        json.dumps(
            msd_json(
                {"0": "MRI"},
                {"0": "background", "1": "Anterior", "2": "Posterior"},
                2,
                cases,
                ["hippocampus_100"],
            )
        )
    )
    return source


def test_v1_task_becomes_a_v2_dataset(v1_task, tmp_path):
    before = snapshot(v1_task)
    folder = convert.convert_v1(v1_task, output_root=tmp_path / "raw")
    assert folder == tmp_path / "raw" / "Dataset004_Hippocampus" and snapshot(v1_task) == before
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "MRI"} and dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert not {"modality", "training", "test", "numTest", "tensorImageSize"} & set(dataset_json)
    for name in (
        "imagesTr/hippocampus_002_0000.nii.gz",
        "labelsTr/hippocampus_001.nii.gz",
        "imagesTs/hippocampus_100_0000.nii.gz",
    ):
        assert (folder / name).read_bytes() == (v1_task / name).read_bytes()
    assert not (folder / "labelsTr" / ".DS_Store").exists()
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []

    renamed = convert.convert_v1(v1_task, dataset_id=504, name="Hippo", output_root=tmp_path / "raw")
    assert renamed.name == "Dataset504_Hippo"


def test_converters_refuse_the_other_layout(v1_task, msd_task, tmp_path):
    with pytest.raises(ValueError, match="already split into _0000 files.*use convert_v1"):
        convert.convert_msd(v1_task, output_root=tmp_path / "raw", num_workers=1, progress=False)
    with pytest.raises(ValueError, match="not split into _0000 files.*use convert_msd"):
        convert.convert_v1(msd_task, output_root=tmp_path / "raw")
    (tmp_path / "Task009_Empty" / "imagesTr").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Task009_Empty/labelsTr: missing folder"):
        convert.convert_v1(tmp_path / "Task009_Empty", output_root=tmp_path / "raw")


# --- (b) image and label folders -------------------------------------------------------------------


def test_tutorial_png_folders_with_0_255_masks(tmp_path):
    """The classic input/ + ground_truth/ layout: RGB PNGs, masks named <case>_mask.png holding 0/255."""
    rng = np.random.default_rng(3)
    images = {}
    for case in ("cell_a", "cell_b", "cell_c"):
        images[case] = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
        (tmp_path / "input").mkdir(exist_ok=True)
        Image.fromarray(images[case]).save(tmp_path / "input" / f"{case}.png")
        mask = np.zeros((10, 12), np.uint8)
        mask[2:6, 3:9] = 255
        (tmp_path / "ground_truth").mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "ground_truth" / f"{case}_mask.png")
    before = snapshot(tmp_path)
    folder = convert.convert_folders(
        tmp_path / "input",
        tmp_path / "ground_truth",
        "Cells",
        910,
        output_root=tmp_path / "raw",
        num_workers=1,
        progress=False,
    )
    assert snapshot(tmp_path / "input") == {k[6:]: v for k, v in before.items() if k.startswith("input/")}
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert (
        dataset_json["labels"] == {"background": 0, "foreground": 1} and dataset_json["file_ending"] == ".png"
    )
    assert "{255: 1}" in dataset_json["description"]
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []
    data, _ = io.read_case([folder / "imagesTr" / "cell_b_0000.png"])
    np.testing.assert_array_equal(data[:, 0], images["cell_b"].transpose(2, 0, 1))
    seg, _ = io.read_seg(folder / "labelsTr" / "cell_b.png")
    assert sorted(np.unique(seg)) == [0, 1] and seg[0, 0, 3, 4] == 1


def make_nifti_folders(tmp_path, label_suffix="_seg", label_values=(1, 2)):
    rng = np.random.default_rng(4)
    for case in ("p1", "p2"):
        save_nifti(tmp_path / "images" / f"{case}.nii.gz", rng.normal(size=SHAPE_XYZ).astype(np.float32))
        seg = xyz_seg()
        for old, new in zip((1, 2), label_values):
            seg[xyz_seg() == old] = new
        save_nifti(tmp_path / "labels" / f"{case}{label_suffix}.nii.gz", seg)
    save_nifti(tmp_path / "test" / "p9.nii.gz", np.zeros(SHAPE_XYZ, np.float32))


def test_nifti_folders_with_given_labels_and_test_images(tmp_path):
    make_nifti_folders(tmp_path)
    folder = convert.convert_folders(
        tmp_path / "images",
        tmp_path / "labels",
        "Organs",
        911,
        channel_names={"0": "CT"},
        labels={"background": 0, "liver": 1, "tumor": 2},
        test_images_dir=tmp_path / "test",
        output_root=tmp_path / "raw",
        num_workers=1,
        progress=False,
    )
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "CT"} and dataset_json["numTraining"] == 2
    assert (folder / "imagesTr/p1_0000.nii.gz").read_bytes() == (tmp_path / "images/p1.nii.gz").read_bytes()
    assert (folder / "labelsTr/p2.nii.gz").read_bytes() == (tmp_path / "labels/p2_seg.nii.gz").read_bytes()
    assert (folder / "imagesTs/p9_0000.nii.gz").is_file()


def test_non_consecutive_label_values_are_renumbered_when_labels_are_inferred(tmp_path):
    make_nifti_folders(tmp_path, label_values=(3, 7))
    folder = convert.convert_folders(
        tmp_path / "images",
        tmp_path / "labels",
        "Renumbered",
        912,
        output_root=tmp_path / "raw",
        num_workers=1,
        progress=False,
    )
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "label_3": 1, "label_7": 2}
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []
    seg, _ = io.read_seg(folder / "labelsTr/p1.nii.gz")
    np.testing.assert_array_equal(seg[0], xyz_seg().transpose(2, 1, 0))  # 3 -> 1, 7 -> 2
    # the rewritten label keeps the source's geometry
    np.testing.assert_allclose(
        nib.load(str(folder / "labelsTr/p1.nii.gz")).affine, oblique_affine(), atol=1e-5
    )


def test_multi_channel_folders_in_another_format_are_converted(tmp_path):
    """One folder per channel (.nrrd), written as .nii.gz: arrays and physical geometry survive."""
    rng = np.random.default_rng(5)
    arrays = {}
    for channel in ("t1", "t2"):
        for case in ("a", "b"):
            arrays[channel, case] = rng.integers(0, 1000, size=(8, 10, 12)).astype(np.int16)
            image = sitk.GetImageFromArray(arrays[channel, case])
            image.SetSpacing((0.8, 0.9, 3.0))
            image.SetOrigin((-5.0, 10.0, 2.0))
            (tmp_path / channel).mkdir(exist_ok=True)
            sitk.WriteImage(image, str(tmp_path / channel / f"{case}.nrrd"))
    for case in ("a", "b"):
        seg = sitk.GetImageFromArray(xyz_seg().transpose(2, 1, 0).copy())
        seg.CopyInformation(sitk.ReadImage(str(tmp_path / "t1" / f"{case}.nrrd")))
        (tmp_path / "masks").mkdir(exist_ok=True)
        sitk.WriteImage(seg, str(tmp_path / "masks" / f"{case}_label.nrrd"))
    folder = convert.convert_folders(
        [tmp_path / "t1", tmp_path / "t2"],
        tmp_path / "masks",
        "Brain",
        913,
        channel_names=["T1", "T2"],
        file_ending=".nii.gz",
        output_root=tmp_path / "raw",
        num_workers=1,
        progress=False,
    )
    assert verify_dataset(folder, num_workers=1, progress=False).problems == []
    data, props = io.read_case([folder / "imagesTr" / f"b_{c:04d}.nii.gz" for c in (0, 1)])
    np.testing.assert_array_equal(data[0], arrays["t1", "b"])
    np.testing.assert_array_equal(data[1], arrays["t2", "b"])
    assert props["spacing"] == pytest.approx([3.0, 0.9, 0.8])
    assert sitk.ReadImage(str(folder / "imagesTr/a_0001.nii.gz")).GetOrigin() == pytest.approx(
        (-5.0, 10.0, 2.0)
    )


def test_folder_mismatches_are_errors_naming_the_cases(tmp_path):
    make_nifti_folders(tmp_path)
    save_nifti(tmp_path / "images" / "p3.nii.gz", np.zeros(SHAPE_XYZ, np.float32))
    with pytest.raises(ValueError, match=r"labels: no label file for 1 image\(s\): p3"):
        convert.convert_folders(
            tmp_path / "images",
            tmp_path / "labels",
            "X",
            914,
            output_root=tmp_path / "raw",
            num_workers=1,
            progress=False,
        )
    (tmp_path / "images" / "p3.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"p1_seg.nii.gz: values \[2\] are not in labels .* value_map"):
        convert.convert_folders(
            tmp_path / "images",
            tmp_path / "labels",
            "X",
            914,
            labels=["background", "liver"],
            output_root=tmp_path / "raw",
            num_workers=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="channel_names has 2 entries but the images hold 1 channel"):
        convert.convert_folders(
            tmp_path / "images",
            tmp_path / "labels",
            "X",
            914,
            channel_names=["T1", "T2"],
            output_root=tmp_path / "raw",
            num_workers=1,
            progress=False,
        )
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


# --- the command line ------------------------------------------------------------------------------


def test_cli_convert_msd_then_refuses_to_overwrite(msd_task, tmp_path, capsys):
    raw = tmp_path / "raw"
    assert cli.main(["convert", "msd", str(msd_task), "-o", str(raw), "--id", "7", "-np", "1"]) == 0
    assert f"wrote {raw / 'Dataset007_Prostate'}" in capsys.readouterr().out
    assert cli.main(["convert", "msd", str(msd_task), "-o", str(raw), "--id", "7", "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli.main(["verify", str(raw / "Dataset007_Prostate"), "-np", "1"]) == 0


def test_cli_convert_folders_and_v1(v1_task, tmp_path, capsys):
    make_nifti_folders(tmp_path, label_values=(255, 2))
    raw = tmp_path / "raw"
    assert (
        cli.main(
            [
                "convert",
                "folders",
                str(tmp_path / "images"),
                "--labels",
                str(tmp_path / "labels"),
                "--name",
                "Liver",
                "--id",
                "920",
                "--channels",
                "CT",
                "--label-names",
                "background",
                "liver",
                "tumor",
                "--value-map",
                "255=1",
                "-o",
                str(raw),
                "-np",
                "1",
            ]
        )
        == 0
    )
    dataset_json = json.loads((raw / "Dataset920_Liver/dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    assert verify_dataset(raw / "Dataset920_Liver", num_workers=1, progress=False).problems == []
    assert cli.main(["convert", "v1", str(v1_task), "-o", str(raw)]) == 0
    assert (raw / "Dataset004_Hippocampus/dataset.json").is_file()
    assert (
        cli.main(["convert", "folders", "x", "--labels", "y", "--name", "Z", "--id", "1", "--value-map", "a"])
        == 1
    )
    assert "--value-map takes FROM=TO" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", "msd", "--help"])
    assert exit_info.value.code == 0 and "TaskXX_Name" in capsys.readouterr().out
