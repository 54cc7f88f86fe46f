"""A cascade trained by nnunetv2 2.8.1, predicted by us through both stages, equals nnUNetv2_predict's output.

Fixture: tests/fixtures/make_nnunet_cascade.py (``3d_lowres`` folds 0+1 -> ``3d_cascade_fullres`` fold 0,
trainer nnUNetTrainerTiny; nnU-Net's predictions of both stages with probabilities).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg_nb import io
from nnseg_nb.inference import load_model
from nnseg_nb.predict import PredictionSettings, predict_folder

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet_cascade"
DATASET = "Dataset991_TinyCascade"
RESULTS = FIXTURE / "nnUNet_results" / DATASET
LOWRES = RESULTS / "nnUNetTrainerTiny__nnUNetPlans__3d_lowres"
CASCADE = RESULTS / "nnUNetTrainerTiny__nnUNetPlans__3d_cascade_fullres"
IMAGES = FIXTURE / "nnUNet_raw" / DATASET / "imagesTs"
NNUNET = FIXTURE / "nnunet_predictions"
CASES = ("test_006", "test_007")
FP32 = PredictionSettings(save_probabilities=True, precision="fp32", num_workers=1, progress=False)


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return load_model(LOWRES, folds=[0, 1]), load_model(CASCADE, folds=[0])


@pytest.fixture(scope="module")
def our_lowres(models, tmp_path_factory):
    """Our 3d_lowres predictions of the test images, made once for the tests below."""
    output = tmp_path_factory.mktemp("lowres")
    report = predict_folder(models[0], IMAGES, output, settings=FP32)
    assert report.failed == {} and len(report.written) == len(CASES)
    return output


def assert_equals_nnunet(ours: Path, stage: str, voxels: float = 0.9999, atol: float = 1e-4) -> None:
    """Label maps, geometry, probabilities and cropping of ``ours`` against nnU-Net's ``stage`` outputs."""
    for case in CASES:
        seg, props = io.read_seg(ours / f"{case}.nii.gz")
        expected, expected_props = io.read_seg(NNUNET / stage / f"{case}.nii.gz")
        assert set(np.unique(expected)) == {0, 1, 2}  # both labels predicted: the comparison is not trivial
        assert np.mean(seg == expected) >= voxels, f"{stage} {case}"
        assert io.geometry_mismatch(props, expected_props) is None
        probabilities = np.load(ours / f"{case}.npz")["probabilities"]
        expected_probabilities = np.load(NNUNET / stage / f"{case}.npz")["probabilities"]
        assert probabilities.shape == expected_probabilities.shape
        np.testing.assert_allclose(probabilities, expected_probabilities, atol=atol)
        bbox = io.load_nnunet_properties(ours / f"{case}.pkl")["bbox_used_for_cropping"]
        assert bbox == io.load_nnunet_properties(NNUNET / stage / f"{case}.pkl")["bbox_used_for_cropping"]


def test_model_folders_are_read_as_a_cascade(models):
    lowres, cascade = models
    assert lowres.configuration.next_stage == "3d_cascade_fullres"  # nnU-Net's plans may list several
    assert lowres.configuration.data_identifier == "nnUNetPlans_3d_lowres"
    assert cascade.configuration.previous_stage == "3d_lowres"
    assert cascade.configuration.data_identifier == "nnUNetPlans_3d_fullres"  # inherited from 3d_fullres
    assert (lowres.num_input_channels, cascade.num_input_channels) == (1, 3)  # + one-hot of labels 1 and 2


def test_lowres_stage_equals_nnunet(our_lowres):
    assert_equals_nnunet(our_lowres, "3d_lowres")


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_cascade_stage_from_nnunets_lowres_equals_nnunet(models, tmp_path, precision):
    settings = PredictionSettings(save_probabilities=True, precision=precision, num_workers=1, progress=False)
    report = predict_folder(models[1], IMAGES, tmp_path, NNUNET / "3d_lowres", settings=settings)
    assert report.failed == {} and len(report.written) == len(CASES)
    if precision == "fp32":
        assert_equals_nnunet(tmp_path, "3d_cascade_fullres")
    else:  # bf16 autocast where the CPU has it (nnU-Net: fp32 on CPU)
        assert_equals_nnunet(tmp_path, "3d_cascade_fullres", voxels=0.995, atol=3e-2)


def test_both_stages_ours_end_to_end_equal_nnunet(models, our_lowres, tmp_path):
    predict_folder(models[1], IMAGES, tmp_path, our_lowres, settings=FP32)
    assert_equals_nnunet(tmp_path, "3d_cascade_fullres")


def test_the_previous_stage_matters(models, tmp_path):
    """The cascade's extra channels are used: an empty previous stage changes the prediction."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for case in CASES:
        seg, props = io.read_seg(NNUNET / "3d_lowres" / f"{case}.nii.gz")
        io.write_seg(np.zeros_like(seg[0]), empty / f"{case}.nii.gz", props)
    predict_folder(models[1], IMAGES, tmp_path / "out", empty, settings=FP32)
    seg, _ = io.read_seg(tmp_path / "out" / "test_006.nii.gz")
    expected, _ = io.read_seg(NNUNET / "3d_cascade_fullres" / "test_006.nii.gz")
    assert np.mean(seg == expected) < 0.999


def test_cli_cascade_stage_with_prev_stage_predictions(tmp_path, capsys):
    from nnseg_nb.cli import main

    args = ["-i", str(IMAGES), "-o", str(tmp_path), "-m", str(CASCADE), "-f", "0", "--precision", "fp32"]
    assert (
        main(
            ["predict", *args, "--save-probabilities", "--prev-stage-predictions", str(NNUNET / "3d_lowres")]
        )
        == 0
    )
    assert_equals_nnunet(tmp_path, "3d_cascade_fullres")
    assert main(["predict", *args[:3], str(tmp_path / "none"), *args[4:]]) == 1  # no previous stage given
    assert "--prev-stage-predictions" in capsys.readouterr().err
