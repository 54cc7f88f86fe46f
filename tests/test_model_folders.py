"""model_folders: the shipped nnunetv2-trained model, installing a shared zip, comparing prediction folders."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

from nnseg_nb import io
from nnseg_nb.checkpoint import TrainingLog
from nnseg_nb.inference import load_checkpoint
from nnseg_nb.model_folders import (
    demo_model,
    describe_model_folder,
    find_model_folders,
    install_model_zip,
    parse_model_folder_name,
    segmentation_agreement,
)


def test_demo_model_is_the_one_nnunet_trained():
    demo = demo_model()
    info = describe_model_folder(demo.model_folder)
    assert (info.dataset, info.trainer, info.plans, info.configuration) == (
        "Dataset990_TinyInfer",
        "nnUNetTrainerTiny",
        "nnUNetPlans",
        "3d_tiny",
    )
    assert [f.fold for f in info.folds] == ["0", "1"]
    assert info.labels == {"background": 0, "outer": 1, "inner": 2}
    checkpoint = load_checkpoint(demo.model_folder / "fold_0" / "checkpoint_final.pth")
    log = TrainingLog.from_json(checkpoint["logging"])
    fold0 = info.folds[0]
    assert fold0.epochs == 4 == len(log.mean_fg_dice)
    assert fold0.final_pseudo_dice == pytest.approx(log.dice_per_class_or_region[-1])
    assert fold0.best_ema_pseudo_dice == pytest.approx(checkpoint["_best_ema"])
    assert fold0.validation_dice["1"] == pytest.approx(0.9563315525335924)
    assert info.folds[1].validation_dice is None  # only fold 0's validation folder was kept
    assert sorted(p.name for p in demo.images.iterdir()) == ["test_006_0000.nii.gz", "test_007_0000.nii.gz"]
    assert len(info.lines()) == 4


def test_model_folder_names():
    assert parse_model_folder_name("nnUNetTrainer__nnUNetPlans__3d_fullres") == (
        "nnUNetTrainer",
        "nnUNetPlans",
        "3d_fullres",
    )
    with pytest.raises(ValueError, match="not a model folder name"):
        parse_model_folder_name("nnUNetTrainer__3d_fullres")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        describe_model_folder(demo_model().images)


def _export_zip(path, extra: dict[str, bytes] | None = None):
    """A zip laid out as nnUNetv2_export_model_to_zip writes it: paths relative to nnUNet_results."""
    folder = demo_model().model_folder
    with zipfile.ZipFile(path, "w") as archive:
        for file in folder.rglob("*"):
            if file.is_file():
                archive.write(file, file.relative_to(folder.parents[1]).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def test_install_model_zip_unpacks_into_results(tmp_path):
    results = tmp_path / "results"
    (results / "Dataset990_TinyInfer" / "other").mkdir(parents=True)  # an existing folder stays
    installed = install_model_zip(_export_zip(tmp_path / "model.zip"), results)
    folder = results / "Dataset990_TinyInfer" / "nnUNetTrainerTiny__nnUNetPlans__3d_tiny"
    assert installed == [folder] == find_model_folders(results)
    original = demo_model().model_folder / "fold_1" / "checkpoint_final.pth"
    assert (folder / "fold_1" / "checkpoint_final.pth").read_bytes() == original.read_bytes()
    assert (results / "Dataset990_TinyInfer" / "other").is_dir()
    assert [p.name for p in results.iterdir()] == ["Dataset990_TinyInfer"]  # no temporary folder left


def test_install_model_zip_refuses_bad_archives(tmp_path):
    evil = _export_zip(tmp_path / "evil.zip", {"../outside.txt": b"x"})
    with pytest.raises(ValueError, match="outside the results folder"):
        install_model_zip(evil, tmp_path / "results")
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "not.zip").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a zip file"):
        install_model_zip(tmp_path / "not.zip", tmp_path / "results")
    with pytest.raises(FileNotFoundError, match="no such zip file"):
        install_model_zip(tmp_path / "missing.zip", tmp_path / "results")


def test_segmentation_agreement_counts_voxels_and_dice(tmp_path):
    props = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": tuple(np.eye(3).ravel())}
    a = np.zeros((1, 2, 4, 5), np.uint8)
    a[0, 0, :2] = 1  # 10 voxels of label 1
    b = a.copy()
    b[0, 0, 0] = 2  # 5 of them become label 2 in the other folder
    for folder, seg in (("ours", a), ("theirs", b)):
        (tmp_path / folder).mkdir()
        io.write_seg(seg[0], tmp_path / folder / "case_1.nii.gz", props)
    np.savez(tmp_path / "ours" / "case_1.npz", probabilities=np.zeros((3, 2, 4, 5), np.float16))
    np.savez(tmp_path / "theirs" / "case_1.npz", probabilities=np.full((3, 2, 4, 5), 0.25, np.float16))
    (row,) = segmentation_agreement(tmp_path / "ours", tmp_path / "theirs", [1, 2, 3])
    assert row["case"] == "case_1" and row["voxels"] == 40 and row["differing"] == 5
    assert row["agreement"] == pytest.approx(35 / 40)
    assert (
        row["Dice"][1] == pytest.approx(2 * 5 / 15) and row["Dice"][2] == 0.0 and math.isnan(row["Dice"][3])
    )
    assert row["max_probability_difference"] == pytest.approx(0.25)
    with pytest.raises(FileNotFoundError, match="no .nii.gz case in common"):
        segmentation_agreement(tmp_path / "ours", tmp_path, [1])
