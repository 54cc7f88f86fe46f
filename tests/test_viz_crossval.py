"""Cross-validation pictures: the drawn values are the fold summaries', the ensemble results', the voxels removed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from nnseg_nb import io
from nnseg_nb.viz.crossval import (
    REMOVED_COLOR,
    cv_dice_figure,
    cv_rows,
    ensemble_figure,
    ensemble_gains,
    fold_dice_table,
    postprocessing_changes,
    removed_component_figure,
)
from nnseg_nb.viz.overlay import figure_png

FOREGROUND = Path(__file__).parent / "fixtures" / "postprocessing" / "foreground"


def write_fold_summaries(results: Path, dice: dict[str, dict[int, float]]) -> None:
    for configuration, by_fold in dice.items():
        for fold, value in by_fold.items():
            folder = results / f"nnUNetTrainer__nnUNetPlans__{configuration}" / f"fold_{fold}" / "validation"
            folder.mkdir(parents=True)
            (folder / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": value}}))


def test_fold_table_rows_and_strip_plot_show_each_folds_dice(tmp_path):
    dice = {"2d": {0: 0.81, 1: 0.86, 2: 0.9}, "3d_fullres": {0: 0.88, 1: 0.7}}
    write_fold_summaries(tmp_path, dice)
    table = fold_dice_table(tmp_path, ["2d", "3d_fullres"], range(3))
    assert table["2d"] == dice["2d"]
    assert table["3d_fullres"][0] == 0.88 and math.isnan(table["3d_fullres"][2])  # fold 2 not trained
    rows = cv_rows(table)
    assert rows[0]["mean"] == pytest.approx(np.mean([0.81, 0.86, 0.9]))
    assert rows[1]["mean"] == pytest.approx(0.79) and rows[1]["std"] == pytest.approx(0.09)

    figure = cv_dice_figure(table)
    dots = [c for c in figure.axes[0].collections if isinstance(c, PathCollection)]
    assert [list(d.get_offsets()[:, 1]) for d in dots] == [[0.81, 0.86, 0.9], [0.88, 0.7]]
    assert np.allclose([d.get_offsets()[:, 0].mean() for d in dots], [0, 1])
    assert [t.get_text() for t in figure.axes[0].texts] == ["0", "1", "2", "0", "1"]
    assert figure_png(figure)[:4] == b"\x89PNG"


def test_ensemble_bars_are_the_cv_results_and_the_gain_is_over_the_better_member():
    results = {
        "nnUNetTrainer__nnUNetPlans__2d": 0.8,
        "nnUNetTrainer__nnUNetPlans__3d_fullres": 0.84,
        "ensemble___nnUNetTrainer__nnUNetPlans__2d___nnUNetTrainer__nnUNetPlans__3d_fullres___0_1_2_3_4": 0.86,
    }
    assert ensemble_gains(results) == [
        {
            "ensemble": "2d + 3d_fullres",
            "dice": 0.86,
            "members": {"2d": 0.8, "3d_fullres": 0.84},
            "gain": 0.02,
        }
    ]
    axes = ensemble_figure(results).axes[0]
    assert [bar.get_width() for bar in axes.patches] == [0.8, 0.84, 0.86]
    assert [bar.get_linewidth() for bar in axes.patches] == [0.0, 0.0, 2.0]  # the best is outlined
    assert [t.get_text() for t in axes.texts] == ["0.8000", "0.8400", "0.8600 (+0.0200)"]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["2d", "3d_fullres", "2d + 3d_fullres"]


def test_postprocessing_changes_from_nnunets_files():
    rows = postprocessing_changes(FOREGROUND / "nnunet")
    assert [r["file"] for r in rows] == ["case_0.nii.gz", "case_1.nii.gz"]  # case_0 gained more
    assert rows[0]["dice_before"] == pytest.approx((80 / 84 + 1) / 2) and rows[0]["dice_after"] == 1.0


def test_removed_component_figure_paints_exactly_the_removed_voxels():
    before, _ = io.read_seg(FOREGROUND / "prediction" / "case_0.nii.gz")
    after, _ = io.read_seg(FOREGROUND / "nnunet" / "postprocessed" / "case_0.nii.gz")
    reference, _ = io.read_seg(FOREGROUND / "reference" / "case_0.nii.gz")
    before, after, reference = before[0], after[0], reference[0]
    removed = (before > 0) & (after == 0)
    assert removed.sum() == 8  # the 8 false-positive voxels of class 1
    image = np.random.default_rng(0).normal(size=before.shape)
    figure = removed_component_figure(image, before, after, reference, title="case_0")
    z = int(removed.reshape(removed.shape[0], -1).sum(1).argmax())
    middle = figure.axes[1].images[0].get_array()
    painted = np.all(middle == REMOVED_COLOR, axis=-1)
    assert np.array_equal(painted, removed[z])
    assert figure.axes[1].get_title() == f"before ({int(removed[z].sum())} voxels removed)"
    assert not np.all(figure.axes[2].images[0].get_array() == REMOVED_COLOR, axis=-1).any()
