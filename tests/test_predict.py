"""Prediction with a model folder trained by nnunetv2 2.8.1 equals nnUNetv2_predict's output.

Fixture: tests/fixtures/make_nnunet_model.py (a tiny 3d_tiny configuration inheriting from 3d_fullres,
trainer nnUNetTrainerTiny, folds 0 and 1; nnU-Net's own predictions and fold 0's validation).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg_nb import io
from nnseg_nb.evaluation import load_summary_json
from nnseg_nb.inference import load_model, pad_to_patch_size, sliding_window_slicers
from nnseg_nb.io import load_nnunet_properties
from nnseg_nb.predict import (
    PredictionSettings,
    predict_folder,
    predict_image,
    predict_validation,
    preprocess_for_prediction,
)
from nnseg_nb.preprocessed import load_case as load_preprocessed_case

FIXTURE = Path(__file__).parent / "fixtures" / "inference_model"
DATASET = "Dataset990_TinyInfer"
MODEL = FIXTURE / "nnUNet_results" / DATASET / "nnUNetTrainerTiny__nnUNetPlans__3d_tiny"
IMAGES = FIXTURE / "nnUNet_raw" / DATASET / "imagesTs"
NNUNET = FIXTURE / "nnunet_predictions"
CASES = ("test_006", "test_007")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model(MODEL, folds=[0, 1])


def test_model_folder_is_read_as_nnunet_wrote_it(model):
    assert model.configuration_name == "3d_tiny" and model.trainer_name == "nnUNetTrainerTiny"
    assert model.mirror_axes == (0, 1, 2) and model.folds == [0, 1]
    assert model.configuration.patch_size == [8, 24, 24]  # the custom configuration
    assert model.configuration.data_identifier == "nnUNetPlans_3d_fullres"  # inherited from 3d_fullres


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_predictions_equal_nnunet_predict(model, tmp_path, precision):
    settings = PredictionSettings(save_probabilities=True, precision=precision, progress=False)
    report = predict_folder(model, IMAGES, tmp_path, settings=settings)
    assert report.failed == {} and len(report.written) == 2
    for case in CASES:
        ours, ours_props = io.read_seg(tmp_path / f"{case}.nii.gz")
        theirs, theirs_props = io.read_seg(NNUNET / f"{case}.nii.gz")
        assert np.mean(ours == theirs) >= (0.9999 if precision == "fp32" else 0.995)
        assert set(np.unique(theirs)) == {0, 1, 2}  # the model predicts both labels: the test is not trivial
        assert io.geometry_mismatch(ours_props, theirs_props) is None
        image_props = io.read_image(IMAGES / f"{case}_0000.nii.gz")[1]
        assert ours_props["nifti"] == image_props["nifti"]  # the input's exact geometry
        probabilities = np.load(tmp_path / f"{case}.npz")["probabilities"]
        expected = np.load(NNUNET / f"{case}.npz")["probabilities"]
        assert probabilities.dtype == np.float32 and probabilities.shape == expected.shape
        np.testing.assert_allclose(probabilities, expected, atol=1e-3 if precision == "fp32" else 3e-2)
        properties = load_nnunet_properties(tmp_path / f"{case}.pkl")
        assert (
            properties["bbox_used_for_cropping"]
            == load_nnunet_properties(NNUNET / f"{case}.pkl")["bbox_used_for_cropping"]
        )


def test_in_memory_image_gives_the_same_label_map(model):
    image, props = io.read_case([IMAGES / "test_006_0000.nii.gz"])
    seg = predict_image(model, image, props, settings=PredictionSettings(precision="fp32", progress=False))
    expected, _ = io.read_seg(NNUNET / "test_006.nii.gz")
    assert seg.shape == expected.shape[1:] and np.mean(seg == expected[0]) >= 0.9999


def test_in_memory_prediction_counts_its_tiles(model, capsys):
    image, props = io.read_case([IMAGES / "test_006_0000.nii.gz"])
    data, _ = preprocess_for_prediction(model, image, props)
    padded, _ = pad_to_patch_size(torch.zeros(tuple(data.shape)), model.configuration.patch_size)
    tiles = len(sliding_window_slicers(padded.shape[1:], model.configuration.patch_size, 0.5))
    predict_image(model, image, props, settings=PredictionSettings(use_mirroring=False))
    err = capsys.readouterr().err
    assert re.findall(r"tiles:\s+0%\|.*?\| 0/(\d+)", err) == [str(tiles)] * len(model.folds)  # a bar per fold
    predict_image(model, image, props, settings=PredictionSettings(use_mirroring=False, progress=False))
    assert "tiles" not in capsys.readouterr().err


def test_bad_cases_are_reported_and_the_others_predicted(model, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(IMAGES, inputs)
    (inputs / "broken_0000.nii.gz").write_bytes(b"not an image")
    shutil.copy(IMAGES / "test_006_0000.nii.gz", inputs / "two_0000.nii.gz")
    shutil.copy(IMAGES / "test_006_0000.nii.gz", inputs / "two_0001.nii.gz")
    report = predict_folder(model, inputs, tmp_path / "out", settings=PredictionSettings(progress=False))
    assert sorted(report.failed) == ["broken", "two"]
    assert "broken_0000.nii.gz" in report.failed["broken"] and "channel" in report.failed["two"]
    assert sorted(Path(p).name for p in report.written) == ["test_006.nii.gz", "test_007.nii.gz"]


def test_missing_fold_names_the_file():
    with pytest.raises(FileNotFoundError, match="fold_3"):
        load_model(MODEL, folds=[3])


def test_validation_equals_nnunet_final_validation(tmp_path):
    model_folder = tmp_path / DATASET / MODEL.name
    shutil.copytree(MODEL, model_folder, ignore=shutil.ignore_patterns("validation"))
    plans = json.loads((model_folder / "plans.json").read_text())  # as a lowres stage would be
    plans["configurations"]["3d_tiny"]["next_stage"] = "3d_fullres"
    (model_folder / "plans.json").write_text(json.dumps(plans))
    summary = predict_validation(
        model_folder,
        0,
        preprocessed_dataset_folder=FIXTURE / "nnUNet_preprocessed" / DATASET,
        settings=PredictionSettings(precision="fp32", progress=False),
    )
    ours_folder, theirs_folder = model_folder / "fold_0" / "validation", MODEL / "fold_0" / "validation"
    for case in ("tiny_003", "tiny_005"):
        ours, ours_props = io.read_seg(ours_folder / f"{case}.nii.gz")
        theirs, theirs_props = io.read_seg(theirs_folder / f"{case}.nii.gz")
        assert np.mean(ours == theirs) >= 0.9999
        assert io.geometry_mismatch(ours_props, theirs_props) is None
    expected = load_summary_json(theirs_folder / "summary.json")
    assert summary["foreground_mean"]["Dice"] == pytest.approx(expected["foreground_mean"]["Dice"], abs=1e-3)
    assert (ours_folder / "summary.json").is_file()
    # the next stage's input: labels on the 3d_fullres grid, as nnU-Net's resample_and_save writes them
    _, seg, _ = load_preprocessed_case(
        FIXTURE / "nnUNet_preprocessed" / DATASET / "nnUNetPlans_3d_fullres", "tiny_003"
    )
    next_stage = np.load(model_folder / "predicted_next_stage" / "3d_fullres" / "tiny_003.npy")
    assert next_stage.shape == seg.shape[1:] and next_stage.dtype == np.uint8  # (Z, Y, X), as nnU-Net's
    assert np.mean(next_stage == np.maximum(seg[0], 0)) > 0.95


def test_cli_predicts_with_model_folder_or_dataset_and_configuration(tmp_path, monkeypatch, capsys):
    from nnseg_nb.cli import main

    args = ["-f", "0", "--precision", "fp32", "--no-mirroring"]
    assert main(["predict", "-i", str(IMAGES), "-o", str(tmp_path / "a"), "-m", str(MODEL), *args]) == 0
    monkeypatch.setenv("nnUNet_results", str(FIXTURE / "nnUNet_results"))
    by_name = ["-d", "990", "-c", "3d_tiny", "-tr", "nnUNetTrainerTiny"]
    assert main(["predict", "-i", str(IMAGES), "-o", str(tmp_path / "b"), *by_name, *args]) == 0
    for case in CASES:
        a, _ = io.read_seg(tmp_path / "a" / f"{case}.nii.gz")
        b, _ = io.read_seg(tmp_path / "b" / f"{case}.nii.gz")
        assert np.array_equal(a, b)
    assert "2 case(s)" in capsys.readouterr().out


def test_cli_reports_bad_input_as_error_lines(tmp_path, capsys):
    from nnseg_nb.cli import main

    inputs = tmp_path / "in"
    shutil.copytree(IMAGES, inputs)
    (inputs / "broken_0000.nii.gz").write_bytes(b"garbage")
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "o"), "-m", str(MODEL), "-f", "0"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "broken_0000.nii.gz" in errors[0] and "cannot be read" in errors[0]
    assert (tmp_path / "o" / "test_006.nii.gz").is_file()  # the good cases were predicted
    assert main(["predict", "-i", str(IMAGES), "-o", str(tmp_path / "o"), "-m", str(MODEL), "-f", "4"]) == 1
    assert "fold_4" in capsys.readouterr().err


def test_cascade_appends_the_previous_stage_one_hot(model, tmp_path):
    import dataclasses

    from nnseg_nb.network import build_network
    from nnseg_nb.predict import preprocess_for_prediction
    from nnseg_nb.preprocessing import preprocess_case

    configuration = dataclasses.replace(model.configuration, previous_stage="3d_lowres")
    network = build_network(configuration.architecture, 3, 3, deep_supervision=False).eval()
    cascade = dataclasses.replace(
        model, configuration=configuration, network=network, fold_weights=[network.state_dict()]
    )
    assert cascade.num_input_channels == 3  # the image + one channel per foreground label
    image, props = io.read_case([IMAGES / "test_006_0000.nii.gz"])
    previous, _ = io.read_seg(NNUNET / "test_006.nii.gz")
    data, _ = preprocess_for_prediction(cascade, image, props, previous)
    _, seg, _ = preprocess_case(image, previous, props, model.plans, "3d_tiny", model.dataset_json)
    assert data.shape[0] == 3
    np.testing.assert_array_equal(data[1], seg[0] == 1)
    np.testing.assert_array_equal(data[2], seg[0] == 2)
    with pytest.raises(ValueError, match="cascade stage"):
        preprocess_for_prediction(cascade, image, props, None)
    report = predict_folder(cascade, IMAGES, tmp_path / "out", NNUNET, PredictionSettings(progress=False))
    assert report.failed == {} and len(report.written) == 2
    report = predict_folder(cascade, IMAGES, tmp_path / "out2", tmp_path, PredictionSettings(progress=False))
    assert all("no previous-stage prediction" in message for message in report.failed.values())


def test_spacing_far_from_the_training_data_warns(model):
    from nnseg_nb.predict import spacing_warning

    image, props = io.read_case([IMAGES / "test_006_0000.nii.gz"])
    assert spacing_warning(model, props, "a.nii.gz") is None
    far = {**props, "spacing": [s / 3 for s in props["spacing"]]}  # resampled to a 3x smaller grid: quick
    assert "a.nii.gz: spacing" in spacing_warning(model, far, "a.nii.gz")
    with pytest.warns(UserWarning, match="far from the training data"):
        predict_image(model, image, far, settings=PredictionSettings(use_mirroring=False, progress=False))


class _Anything:  # a pickled object a weights-only load must refuse
    pass


def test_checkpoints_load_without_running_code(tmp_path):
    from nnseg_nb.inference import load_checkpoint

    checkpoint = load_checkpoint(MODEL / "fold_0" / "checkpoint_final.pth")  # nnU-Net's, numpy inside
    assert checkpoint["trainer_name"] == "nnUNetTrainerTiny" and "network_weights" in checkpoint
    torch.save({"network_weights": {}, "x": _Anything()}, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"bad.pth: not a loadable nnU-Net checkpoint \(UnpicklingError: .*_Anything"
    ):
        load_checkpoint(tmp_path / "bad.pth")


@pytest.mark.parametrize("numpy_core", ["numpy._core", "numpy.core"])  # saved under numpy 2, numpy 1
def test_checkpoint_numpy_values_load_whichever_numpy_saved_them(tmp_path, numpy_core):
    from nnseg_nb.checkpoint import load_checkpoint

    checkpoint = {"network_weights": {"w": torch.ones(2)}, "current_epoch": 3, "_best_ema": np.float64(0.5)}
    checkpoint["logging"] = {"ema_fg_dice": [np.float64(0.25)], "lrs": np.array([0.01, 0.005])}
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)  # one protocol-2 stream: GLOBAL lines
    stream = path.read_bytes()
    for spelling in ("numpy.core.", "numpy._core."):
        stream = stream.replace(f"c{spelling}multiarray\n".encode(), f"c{numpy_core}.multiarray\n".encode())
    assert f"c{numpy_core}.multiarray\nscalar\n".encode() in stream
    assert f"c{numpy_core}.multiarray\n_reconstruct\n".encode() in stream
    path.write_bytes(stream)
    loaded = load_checkpoint(path)
    assert loaded["_best_ema"] == 0.5 and loaded["logging"]["ema_fg_dice"] == [0.25]
    np.testing.assert_array_equal(loaded["logging"]["lrs"], [0.01, 0.005])
    torch.testing.assert_close(loaded["network_weights"]["w"], torch.ones(2))
