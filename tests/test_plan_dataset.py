"""``planning.plan_dataset`` is the one way to plan a dataset on disk: notebook 03's planning and
preprocessing cells leave the same preprocessed folder as ``nnseg-nb plan`` + ``nnseg-nb preprocess``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnseg_nb import cli, demo_data, fingerprint, planning
from nnseg_nb.demo_data import build_demo_datasets

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "03_preprocessing_and_augmentation.py"


def notebook_cell(containing: str) -> str:
    """The code of the one notebook 03 cell (jupytext percent format) whose text contains ``containing``."""
    cells = re.split(r"^# %%.*$", NOTEBOOK.read_text(), flags=re.MULTILINE)
    found = [cell for cell in cells if containing in cell]
    assert len(found) == 1, f"{len(found)} cells of {NOTEBOOK.name} contain {containing!r}"
    return found[0]


@pytest.fixture
def raw(tmp_path, monkeypatch):
    """A 3-case AnisoSynth build under $nnUNet_raw; few intensity samples for the fingerprint."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setattr(fingerprint, "FOREGROUND_SAMPLES_TOTAL", 30_000)  # 1e8 is nnU-Net's; values only
    folders = build_demo_datasets(
        tmp_path / "raw", only=["AnisoSynth"], num_train=3, num_test=0, progress=False
    )
    monkeypatch.setattr(demo_data, "build_demo_datasets", lambda *args, **kwargs: folders)  # already built
    return tmp_path


def folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_notebook_03_and_the_cli_write_the_same_preprocessed_folder(raw, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(raw / "notebook"))
    namespace = {"dataset": "Dataset902_AnisoSynth", "configuration": "3d_fullres", "num_workers": 1}
    for marker in ("planning.plan_dataset(", "preprocessing.preprocess_dataset("):
        exec(notebook_cell(marker), namespace)

    monkeypatch.setenv("nnUNet_preprocessed", str(raw / "cli"))
    assert cli.main(["plan", "Dataset902_AnisoSynth", "-np", "1"]) == 0
    assert cli.main(["preprocess", "902", "-c", "3d_fullres", "-np", "1"]) == 0
    capsys.readouterr()

    notebook, command = (raw / where / "Dataset902_AnisoSynth" for where in ("notebook", "cli"))
    assert (notebook / "nnUNetPlans.json").read_bytes() == (command / "nnUNetPlans.json").read_bytes()
    fullres = folder_files(command / "nnUNetPlans_3d_fullres")
    assert len(fullres) >= 3 * 3  # per case: image, seg, properties
    assert folder_files(notebook / "nnUNetPlans_3d_fullres") == fullres
    assert sorted(p.name for p in notebook.iterdir()) == sorted(p.name for p in command.iterdir())


def test_plan_dataset_keeps_a_hand_added_configuration_and_checks_splits(raw, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(raw / "preprocessed"))
    first = planning.plan_dataset(902, num_workers=1, progress=False)
    assert first.fingerprint_computed and first.kept == [] and first.plans_file.is_file()
    custom = first.plans.to_json()
    custom["configurations"]["3d_fullres_bs4"] = {"inherits_from": "3d_fullres", "batch_size": 4}
    planning.save_plans(planning.Plans.from_json(custom), first.plans_file)

    again = planning.plan_dataset(902, planning.RESENC_M, plans_name="nnUNetPlans", progress=False)
    assert not again.fingerprint_computed and again.kept == ["3d_fullres_bs4"]
    assert planning.load_plans(again.plans_file).configuration("3d_fullres_bs4").batch_size == 4
    assert (
        again.settings.planner_name == "nnUNetPlannerResEncM" and again.settings.plans_name == "nnUNetPlans"
    )

    splits = '[{"train": ["a"], "val": ["b"]}]'
    (raw / "raw" / "Dataset902_AnisoSynth" / "splits_final.json").write_text(splits)
    (first.plans_file.parent / "splits_final.json").write_text('[{"train": ["b"], "val": ["a"]}]')
    before = first.plans_file.read_bytes()
    with pytest.raises(ValueError, match="has other folds than"):
        planning.plan_dataset(902, progress=False)
    assert first.plans_file.read_bytes() == before  # nothing written
