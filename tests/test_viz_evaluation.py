"""Evaluation pictures: the drawn values are the summary's (per-case dots, boxes, before/after bars)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle

from nnseg_nb.evaluation import evaluate_folders
from nnseg_nb.viz.evaluation import (
    metric_figure,
    metric_rows,
    metric_table_html,
    metric_values,
    postprocessing_figure,
)
from nnseg_nb.viz.overlay import figure_png

FIXTURES = Path(__file__).parent / "fixtures"


def _summary():
    return evaluate_folders(
        FIXTURES / "evaluation" / "reference",
        FIXTURES / "evaluation" / "prediction",
        [1, 2],
        3,
        num_workers=1,
    )


def test_rows_and_html_table_hold_the_per_case_values():
    summary = _summary()
    rows = metric_rows(summary)
    assert len(rows) == 5 * 2 and rows[0]["case"] == "c0" and rows[0]["class"] == "1"
    expected = json.loads((FIXTURES / "evaluation" / "summary_labels.json").read_text())
    assert rows[0]["Dice"] == expected["metric_per_case"][0]["metrics"]["1"]["Dice"]
    c4 = [r for r in rows if r["case"] == "c4"][0]
    assert math.isnan(c4["Dice"])
    table = metric_table_html(rows)
    assert table.count("<tr>") == 11 and "<td>NaN</td>" in table
    assert f"<td>{rows[0]['Dice']:.4f}</td>" in table


def test_box_and_strip_plot_draws_every_non_nan_case():
    summary = _summary()
    figure = metric_figure(summary, "Dice")
    axes = figure.axes[0]
    dots = [c for c in axes.collections if isinstance(c, PathCollection)]
    values = metric_values(summary, "Dice")
    assert len(dots) == 2
    for position, (key, collection) in enumerate(zip(["1", "2"], dots)):
        offsets = collection.get_offsets()
        np.testing.assert_allclose(offsets[:, 1], values[key])
        np.testing.assert_allclose(np.round(offsets[:, 0]), position)
    # class 1 is NaN only in c4 (both empty); class 2 also in c3
    assert len(values["1"]) == 4 and len(values["2"]) == 3
    medians = [line.get_ydata()[0] for line in axes.lines if line.get_gid() == "median"]
    np.testing.assert_allclose(medians, [np.median(values["1"]), np.median(values["2"])])
    assert figure_png(figure)[:4] == b"\x89PNG"


def test_postprocessing_bars_are_the_mean_dice_before_and_after():
    record = json.loads(
        (FIXTURES / "postprocessing" / "one_class" / "nnunet" / "postprocessing.json").read_text()
    )
    figure = postprocessing_figure(record)
    bars = [p for p in figure.axes[0].patches if isinstance(p, Rectangle)]
    heights = [b.get_height() for b in bars]
    before = [record["input_folder"]["mean"][k]["Dice"] for k in ("1", "2")]
    after = [record["postprocessed"]["mean"][k]["Dice"] for k in ("1", "2")]
    assert heights == before + after
    assert heights[2] > heights[0]  # class 1 improved
