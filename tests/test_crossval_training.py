"""A whole tiny cross-validation with the real trainer and predictor: a lowres stage and its cascade,
two folds each, then find-best and the cascade's inference on raw images (about a minute on 2 CPU cores).

Dataset904_Shapes2D (6 cases, 2D), two custom configurations of a tiny U-Net (3 stages, 4-16 features,
64 x 64 patches) - ``tinylow`` whose next stage is ``tinycascade`` - and a two-fold splits_final.json, so
that two lowres folds predict every training case for the cascade.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from nnseg_nb.cascade import next_stage_folder
from nnseg_nb.crossval import cross_validate
from nnseg_nb.model_selection import TrainedModel, find_best_configuration
from nnseg_nb.preprocessed import list_cases

TINY_ARCHITECTURE = {
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "kernel_sizes": [[3, 3]] * 3,
    "strides": [[1, 1], [2, 2], [2, 2]],
    "n_conv_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
}


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    from nnseg_nb import fingerprint, planning, preprocessing
    from nnseg_nb.demo_data import build_demo_datasets

    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setattr(fingerprint, "FOREGROUND_SAMPLES_TOTAL", 30_000)
    build_demo_datasets(tmp_path / "raw", only=["Shapes2D"], num_train=6, num_test=2, progress=False)
    planning.plan_dataset(904, num_workers=1, progress=False)
    pre = tmp_path / "pre" / "Dataset904_Shapes2D"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    architecture = plans["configurations"]["2d"]["architecture"]
    plans["configurations"]["tiny"] = {
        "inherits_from": "2d",
        "patch_size": [64, 64],
        "architecture": {**architecture, "arch_kwargs": {**architecture["arch_kwargs"], **TINY_ARCHITECTURE}},
    }
    plans["configurations"]["tinylow"] = {"inherits_from": "tiny", "next_stage": "tinycascade"}
    plans["configurations"]["tinycascade"] = {"inherits_from": "tiny", "previous_stage": "tinylow"}
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans, indent=1))
    preprocessing.preprocess_dataset(904, ["2d"], num_workers=1, progress=False)
    cases = list_cases(pre / "nnUNetPlans_2d")
    splits = [{"train": cases[3:], "val": cases[:3]}, {"train": cases[:3], "val": cases[3:]}]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return tmp_path


def test_tiny_cascade_cross_validation_find_best_and_cascade_inference(tiny, capsys):
    import torch

    from nnseg_nb.training import QUICK_CPU

    torch.set_num_threads(1)
    settings = dataclasses.replace(
        QUICK_CPU, num_epochs=2, iterations_per_epoch=2, val_iterations=1, num_workers=0, progress=False
    )
    lines = []
    result = cross_validate(
        904, ["tinycascade", "tinylow"], (0, 1), settings, echo=lines.append, num_workers=1
    )
    assert not result.failed, lines
    assert [(o.configuration, o.fold, o.status) for o in result.outcomes] == [
        ("tinylow", 0, "trained"), ("tinylow", 1, "trained"),
        ("tinycascade", 0, "trained"), ("tinycascade", 1, "trained"),
    ]  # fmt: skip
    res = tiny / "res" / "Dataset904_Shapes2D"
    next_stage = next_stage_folder(tiny / "res", "Dataset904_Shapes2D", "tinylow", "tinycascade")
    assert sorted(p.stem for p in next_stage.glob("*.npy")) == [f"shapes_{i:03d}" for i in range(6)]
    assert np.load(next_stage / "shapes_000.npy").shape == (1, 128, 128)  # (Z, Y, X) of the 2d grid
    for configuration in ("tinylow", "tinycascade"):
        merged = res / f"nnUNetTrainer__nnUNetPlans__{configuration}" / "crossval_results_folds_0_1"
        assert result.merged_folders[configuration] == merged
        summary = json.loads((merged / "summary.json").read_text())
        assert len(summary["metric_per_case"]) == 6
        assert 0 <= summary["foreground_mean"]["Dice"] <= 1
        assert len(list((merged.parent / "fold_0" / "validation").glob("*.npz"))) == 3  # for ensembling

    again = cross_validate(904, ["tinylow", "tinycascade"], (0, 1), settings, echo=None, num_workers=1)
    assert {o.status for o in again.outcomes} == {"skipped"}

    info = find_best_configuration(
        904,
        [TrainedModel("tinylow"), TrainedModel("tinycascade")],
        folds=(0, 1),
        num_workers=1,
        progress=False,
    )
    assert set(info["all_results"]) == {
        "nnUNetTrainer__nnUNetPlans__tinylow",
        "nnUNetTrainer__nnUNetPlans__tinycascade",
        "ensemble___nnUNetTrainer__nnUNetPlans__tinylow___nnUNetTrainer__nnUNetPlans__tinycascade___0_1",
    }
    assert "nnUNetv2_predict -d Dataset904_Shapes2D" in (res / "inference_instructions.txt").read_text()

    # cascade inference: the lowres model first; its label maps are the cascade's previous-stage predictions
    from nnseg_nb.inference import load_model
    from nnseg_nb.predict import PredictionSettings, predict_folder

    images = tiny / "raw" / "Dataset904_Shapes2D" / "imagesTs"
    low, cascade = tiny / "pred_low", tiny / "pred_cascade"
    quiet = PredictionSettings(progress=False, num_workers=1)
    low_model = load_model(res / "nnUNetTrainer__nnUNetPlans__tinylow", [0, 1])
    assert not predict_folder(low_model, images, low, settings=quiet).failed
    cascade_model = load_model(res / "nnUNetTrainer__nnUNetPlans__tinycascade", [0, 1])
    without = predict_folder(cascade_model, images, tiny / "x", settings=quiet)
    assert len(without.failed) == 2 and all("tinylow" in message for message in without.failed.values())
    report = predict_folder(cascade_model, images, cascade, previous_stage_folder=low, settings=quiet)
    assert not report.failed and len(report.written) == 2
    assert sorted(p.name for p in cascade.glob("*.png")) == sorted(p.name for p in low.glob("*.png"))
