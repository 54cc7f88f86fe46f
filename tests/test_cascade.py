"""cascade: the next-stage export equals nnunetv2's ``resample_and_save`` and lands where cascade training reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg_nb.cascade import export_next_stages, next_stage_folder, resample_to_next_stage
from nnseg_nb.plans import ConfigurationPlan, Plans
from nnseg_nb.preprocessed import open_case

FIXTURES = Path(__file__).parent / "fixtures" / "cascade"


@pytest.mark.parametrize("setup", ["labels", "anisotropic", "regions"])
def test_resampled_next_stage_segmentation_equals_nnunets(setup):
    fixture = np.load(FIXTURES / f"{setup}.npz")
    configuration = ConfigurationPlan.from_json(json.loads(str(fixture["configuration"])))
    dataset_json = json.loads(str(fixture["labels"]))
    ours = resample_to_next_stage(
        fixture["logits"], tuple(fixture["target_shape"]), configuration, dataset_json, fixture["spacing"]
    )
    assert ours.dtype == fixture["seg"].dtype == np.uint8
    np.testing.assert_array_equal(ours, fixture["seg"])


def test_export_writes_predicted_next_stage_that_the_loader_opens(tmp_path):
    fixture = np.load(FIXTURES / "labels.npz")
    lowres = json.loads(str(fixture["configuration"]))
    fullres = {**lowres, "data_identifier": "nnUNetPlans_3d_fullres", "spacing": [1.0, 1.0, 1.0]}
    fullres.pop("next_stage")
    plans = Plans.from_json({
        "dataset_name": "Dataset1_X", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_median_spacing_after_transp": [1, 1, 1], "original_median_shape_after_transp": [1, 1, 1],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {
            "3d_lowres": lowres, "3d_fullres": fullres,
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
    })  # fmt: skip
    target = tuple(int(s) for s in fixture["target_shape"])
    data_folder = tmp_path / "pre" / "nnUNetPlans_3d_fullres"
    data_folder.mkdir(parents=True)
    np.save(data_folder / "case_0.npy", np.zeros((1, *target), np.float32))
    np.save(data_folder / "case_0_seg.npy", np.zeros((1, *target), np.int16))
    (data_folder / "case_0.json").write_text("{}")
    model = tmp_path / "res" / "Dataset1_X" / "nnUNetTrainer__nnUNetPlans__3d_lowres"
    dataset_json = json.loads(str(fixture["labels"]))

    with pytest.warns(UserWarning, match="case_1 is not preprocessed"):
        assert export_next_stages(fixture["logits"], "case_1", plans, "3d_lowres", dataset_json, None, model,
                                  tmp_path / "pre") == []  # fmt: skip
    written = export_next_stages(
        fixture["logits"], "case_0", plans, "3d_lowres", dataset_json, None, model, tmp_path / "pre"
    )
    folder = next_stage_folder(tmp_path / "res", "Dataset1_X", "3d_lowres", "3d_cascade_fullres")
    assert written == [folder / "case_0.npy"]
    arrays = open_case(data_folder, "case_0", previous_stage_folder=folder)
    np.testing.assert_array_equal(arrays.previous_seg[0], fixture["seg"])
