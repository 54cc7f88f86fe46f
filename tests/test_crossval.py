"""crossval: which folds a run trains, skips or resumes, the cascade's order, and the merged CV folder.

The trainer here is a stand-in that leaves what ``training.train`` leaves (checkpoint_final.pth, a
validation folder with the ground truth as prediction, its summary.json) and logs each call, so the
orchestration is tested on its own in seconds; the real trainer is exercised by test_crossval_training.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnseg_nb import cli, crossval
from nnseg_nb.crossval import CONTINUE, DONE, NEW, VALIDATE, FoldJob, cross_validate, fold_state
from nnseg_nb.splits import load_fold


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Dataset904_Shapes2D, 6 cases, planned and preprocessed for 2d (about 6 s)."""
    from nnseg_nb import fingerprint, planning, preprocessing
    from nnseg_nb.demo_data import build_demo_datasets

    root = tmp_path_factory.mktemp("cv")
    mp = pytest.MonkeyPatch()
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        mp.setenv(var, str(root / sub))
    mp.setattr(fingerprint, "FOREGROUND_SAMPLES_TOTAL", 30_000)
    build_demo_datasets(root / "raw", only=["Shapes2D"], num_train=6, num_test=0, progress=False)
    planning.plan_dataset(904, num_workers=1, progress=False)
    preprocessing.preprocess_dataset(904, ["2d"], num_workers=1, progress=False)
    yield root
    mp.undo()


@pytest.fixture
def roots(planned, tmp_path, monkeypatch):
    """The planned dataset with a fresh, empty results root."""
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre")):
        monkeypatch.setenv(var, str(planned / sub))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    return {"pre": planned / "pre", "res": tmp_path / "res", "calls": tmp_path / "calls.jsonl"}


def fake_train(job: FoldJob, continue_training: bool) -> int:
    """Leave a trained, validated fold as the trainer would, and log the call (across processes too)."""
    pre = Path(job.preprocessed) / job.dataset
    model = crossval.model_folder(
        job.dataset, job.trainer_name, job.plans_name, job.configuration, job.results
    )
    fold = model / f"fold_{job.fold}"
    (fold / "validation").mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "nnUNetPlans.json"):
        shutil.copy(pre / name, model / name.replace("nnUNetPlans", "plans"))
    cases = sorted(p.name for p in (pre / "gt_segmentations").iterdir())
    _, val = load_fold(pre, job.fold, [c.removesuffix(".png") for c in cases])
    for case in val:
        shutil.copy(pre / "gt_segmentations" / f"{case}.png", fold / "validation" / f"{case}.png")
        np.savez(fold / "validation" / f"{case}.npz", probabilities=np.zeros((3, 2, 2), np.float32))
    (fold / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 1.0}}))
    (fold / "checkpoint_final.pth").write_bytes(b"weights")
    for path in job.next_stage_files:  # a lowres fold's validation leaves the cascade's inputs
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros((1, 1), np.uint8))
    with open(Path(job.results).parent / "calls.jsonl", "a") as log:
        log.write(json.dumps([job.configuration, job.fold, continue_training]) + "\n")
    return 3


def calls(roots) -> list:
    return (
        [tuple(json.loads(line)) for line in roots["calls"].read_text().splitlines()]
        if roots["calls"].is_file()
        else []
    )


def test_fold_state_reads_the_files_a_fold_leaves(tmp_path):
    fold = tmp_path / "fold_0"
    assert fold_state(fold) == NEW
    fold.mkdir()
    (fold / "checkpoint_latest.pth").write_bytes(b"")
    assert fold_state(fold) == CONTINUE
    (fold / "checkpoint_final.pth").write_bytes(b"")
    assert fold_state(fold) == VALIDATE
    (fold / "validation").mkdir()
    (fold / "validation" / "summary.json").write_text("{}")
    assert fold_state(fold) == DONE
    assert fold_state(fold, save_probabilities=True) == VALIDATE  # no .npz for ensembling yet
    (fold / "validation" / "a.npz").write_bytes(b"")
    assert fold_state(fold, save_probabilities=True) == DONE


def test_a_resumed_run_skips_done_folds_and_continues_interrupted_ones(roots):
    lines = []
    first = cross_validate(
        904, ["2d"], folds=(0, 1), train_function=fake_train, num_workers=1, echo=lines.append
    )
    assert calls(roots) == [("2d", 0, False), ("2d", 1, False)]
    assert [o.status for o in first.outcomes] == ["trained", "trained"]
    assert lines[0].startswith("2d fold 0: trained, 3 epochs, validation Dice 1.0000")

    model = roots["res"] / "Dataset904_Shapes2D" / "nnUNetTrainer__nnUNetPlans__2d"
    mtime = (model / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns
    (model / "fold_2").mkdir()
    (model / "fold_2" / "checkpoint_latest.pth").write_bytes(b"interrupted")
    roots["calls"].unlink()
    again = cross_validate(
        904, ["2d"], folds=(0, 1, 2), train_function=fake_train, num_workers=1, echo=lines.append
    )
    assert calls(roots) == [("2d", 2, True)]  # folds 0 and 1 skipped; 2 resumed with continue
    assert [(o.fold, o.state_before, o.status) for o in again.outcomes] == [
        (0, DONE, "skipped"), (1, DONE, "skipped"), (2, CONTINUE, "trained"),
    ]  # fmt: skip
    assert (model / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns == mtime
    assert "2d fold 0: skipped (done before), validation Dice 1.0000" in lines


def test_the_merged_cv_folder_is_nnunets(roots):
    result = cross_validate(
        904, ["2d"], folds=(0, 1, 2, 3, 4), train_function=fake_train, num_workers=1, echo=None
    )
    merged = result.merged_folders["2d"]
    assert merged.name == "crossval_results_folds_0_1_2_3_4"
    assert sorted(p.name for p in merged.glob("*.png")) == [f"shapes_{i:03d}.png" for i in range(6)]
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] == 1.0  # the ground truth was the prediction
    assert len(summary["metric_per_case"]) == 6


def test_parallel_folds_run_in_their_own_processes(roots):
    result = cross_validate(
        904, ["2d"], folds=(0, 1), jobs=2, gpus=[], train_function=fake_train, num_workers=1, echo=None
    )
    assert sorted(calls(roots)) == [("2d", 0, False), ("2d", 1, False)]
    assert [o.fold for o in result.outcomes] == [0, 1] and not result.failed


def test_a_failed_fold_is_reported_and_its_configuration_not_merged(roots):
    def broken(job, continue_training):
        if job.fold == 1:
            raise RuntimeError("out of memory")
        return fake_train(job, continue_training)

    lines = []
    result = cross_validate(
        904, ["2d"], folds=(0, 1), train_function=broken, num_workers=1, echo=lines.append
    )
    assert [o.fold for o in result.failed] == [1]
    assert "2d fold 1: failed (0 s): RuntimeError: out of memory" in lines
    assert "2d" not in result.merged_folders


def test_cascade_folds_wait_for_every_lowres_fold(roots):
    plans_file = roots["pre"] / "Dataset904_Shapes2D" / "nnUNetPlans.json"
    original = plans_file.read_text()
    plans = json.loads(original)
    plans["configurations"]["lowres"] = {"inherits_from": "2d", "next_stage": "cascade"}
    plans["configurations"]["cascade"] = {"inherits_from": "2d", "previous_stage": "lowres"}
    try:
        plans_file.write_text(json.dumps(plans))
        with pytest.raises(ValueError, match="have no lowres prediction"):
            cross_validate(
                904, ["cascade"], folds=(0, 1), train_function=fake_train, num_workers=1, echo=None
            )
        cross_validate(
            904, ["cascade", "lowres"], folds=(0, 1), train_function=fake_train, num_workers=1, echo=None
        )
    finally:
        plans_file.write_text(original)
    assert calls(roots) == [
        ("lowres", 0, False),
        ("lowres", 1, False),
        ("cascade", 0, False),
        ("cascade", 1, False),
    ]


def test_cli_cv_prints_one_line_per_fold_and_errors_in_one_line(roots, monkeypatch, capsys):
    monkeypatch.setattr(crossval, "train_fold", fake_train)
    assert cli.main(["cv", "904", "-c", "2d", "--folds", "0", "1", "--epochs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "2d fold 0: trained, 3 epochs, validation Dice 1.0000 (0 s)",
        "2d fold 1: trained, 3 epochs, validation Dice 1.0000 (0 s)",
    ]
    assert out[2].startswith("2d: cross-validation Dice 1.0000 -> ")
    assert cli.main(["cv", "904", "-c", "3d_fullres"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
