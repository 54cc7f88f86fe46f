"""Model selection: ranking, inference_information.json and instructions equal nnunetv2 2.8.1's.

Fixture: tests/fixtures/make_model_selection.py (find_best_configuration on a tiny 2d + 3d_fullres tree,
folds 0 and 1, where the pair ensemble wins).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nnseg_nb.model_selection import TrainedModel, find_best_configuration, inference_instructions

FIXTURES = Path(__file__).parent / "fixtures" / "model_selection"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "tree", tree)
    monkeypatch.setenv("nnUNet_raw", str(tree / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tree / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tree / "results"))
    return tree


def test_find_best_configuration_equals_nnunet(tree):
    models = [TrainedModel(c) for c in ("2d", "3d_fullres", "3d_lowres")]  # 3d_lowres is not planned: skipped
    info = find_best_configuration("901", models, folds=(0, 1), num_workers=1)
    results = tree / "results" / "Dataset901_BrainTissue"
    ours = json.loads((results / "inference_information.json").read_text().replace(str(tree), "TREE"))
    assert ours == json.loads((FIXTURES / "nnunet" / "inference_information.json").read_text())
    text = (results / "inference_instructions.txt").read_text().replace(str(tree), "TREE")
    assert text == (FIXTURES / "nnunet" / "inference_instructions.txt").read_text()
    expected = json.loads((FIXTURES / "nnunet" / "summaries.json").read_text())
    winner = Path(info["best_model_or_ensemble"]["postprocessing_file"]).parent
    assert json.loads((winner / "postprocessing.json").read_text()) == expected["postprocessing"]
    assert info["all_results"] == expected["all_results"]
    assert list(info["all_results"])[-1].startswith("ensemble___")  # ensembles are ranked after single models


def test_single_model_without_ensembling(tree):
    info = find_best_configuration(
        "Dataset901_BrainTissue",
        [TrainedModel("2d"), TrainedModel("3d_fullres")],
        False,
        (0, 1),
        num_workers=1,
    )
    expected = json.loads((FIXTURES / "nnunet" / "summaries.json").read_text())["all_results"]
    assert info["all_results"] == {k: v for k, v in expected.items() if not k.startswith("ensemble")}
    assert info["best_model_or_ensemble"]["selected_model_or_models"] == [
        {"configuration": "3d_fullres", "trainer": "nnUNetTrainer", "plans_identifier": "nnUNetPlans"}
    ]
    text = inference_instructions(info)
    assert "--save_probabilities" not in text and "nnUNetv2_ensemble" not in text
    assert "-o OUTPUT_FOLDER -f  0 1 -tr nnUNetTrainer -c 3d_fullres -p nnUNetPlans\n" in text


def test_planned_but_untrained_model_is_an_error(tree):
    shutil.rmtree(tree / "results" / "Dataset901_BrainTissue" / "nnUNetTrainer__nnUNetPlans__2d")
    with pytest.raises(FileNotFoundError, match="planned but not trained"):
        find_best_configuration("901", [TrainedModel("2d")], folds=(0, 1), num_workers=1)


def test_cli_find_best_configuration(tree, capsys):
    from nnseg_nb import cli

    assert (
        cli.main(["find-best-configuration", "901", "-c", "2d", "3d_fullres", "-f", "0", "1", "-np", "1"])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "0.54693  ensemble___nnUNetTrainer__nnUNetPlans__2d___nnUNetTrainer__nnUNetPlans__3d_fullres___0_1"
        in out
    )
    assert "nnUNetv2_ensemble -i OUTPUT_FOLDER_MODEL_1 OUTPUT_FOLDER_MODEL_2 -o OUTPUT_FOLDER -np 8" in out
