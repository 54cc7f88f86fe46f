"""Pictures of evaluation and postprocessing: a per-case metric table, box plots per class, before/after bars.

    summary = evaluate_folders(reference_folder, prediction_folder, [1, 2])
    rows = metric_rows(summary)                    # [{"case": "brain_000", "class": "1", "Dice": 0.93, ...}]
    display(HTML(metric_table_html(rows)))
    show_figure(metric_figure(summary, "Dice"))    # one box + the cases as dots, per class
    show_figure(postprocessing_figure(result))     # mean Dice per class before and after postprocessing

Rows are plain dicts (no pandas): a notebook can sort or filter them, or hand them to pandas itself.
NaN (a class absent from reference and prediction) is left out of the boxes, as nnU-Net's means skip it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nnseg_nb.evaluation import key_of, label_or_region_from_key
from nnseg_nb.viz.overlay import label_colors

DEFAULT_COLUMNS = ("Dice", "IoU", "HD95", "NSD", "n_ref", "n_pred")


def _case_name(case: dict) -> str:
    name = Path(case["prediction_file"]).name
    for ending in (".nii.gz", ".gipl.gz"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def _keyed(metrics: dict) -> dict:
    """Class keys as nnU-Net writes them, whether the summary came from memory or from summary.json."""
    return {k if isinstance(k, str) else key_of(k): v for k, v in metrics.items()}


def metric_rows(summary: dict, columns: Sequence[str] = DEFAULT_COLUMNS) -> list[dict]:
    """One row per case and class: ``{"case", "class", <metric>: value ...}`` (metrics the summary lacks are
    left out), in the summary's case order, classes in label order.

    >>> summary = {"metric_per_case": [{"prediction_file": "p/a.nii.gz", "reference_file": "r/a.nii.gz",
    ...            "metrics": {1: {"Dice": 0.5, "n_ref": 4}}}], "mean": {}, "foreground_mean": {}}
    >>> metric_rows(summary)
    [{'case': 'a', 'class': '1', 'Dice': 0.5, 'n_ref': 4}]
    """
    rows = []
    for case in summary["metric_per_case"]:
        for key, metrics in _keyed(case["metrics"]).items():
            rows.append(
                {"case": _case_name(case), "class": key} | {c: metrics[c] for c in columns if c in metrics}
            )
    return rows


def _format(value) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def metric_table_html(rows: Sequence[dict]) -> str:
    """The rows as an HTML table (for ``IPython.display.HTML``); floats to 4 decimals, NaN written NaN."""
    if not rows:
        return "<table></table>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def metric_values(summary: dict, metric: str = "Dice") -> dict[str, list[float]]:
    """Per class key, the metric of every case where it is not NaN (what the box of that class shows)."""
    values: dict[str, list[float]] = {}
    for case in summary["metric_per_case"]:
        for key, metrics in _keyed(case["metrics"]).items():
            value = metrics.get(metric)
            values.setdefault(key, [])
            if value is not None and not math.isnan(value):
                values[key].append(float(value))
    return values


def _class_color(key: str):
    label_or_region = label_or_region_from_key(key)
    label = max(label_or_region) if isinstance(label_or_region, tuple) else label_or_region
    return label_colors(label + 1)[label]


def metric_figure(summary: dict, metric: str = "Dice", size: tuple[float, float] = (6.0, 3.5)) -> Figure:
    """A box per class with each case as a dot (a small fixed horizontal jitter) for one metric.

    The dots are one ``PathCollection`` per class, in class order, at x = class position; the median lines
    carry the gid ``"median"``.
    """
    values = metric_values(summary, metric)
    keys = list(values)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    boxes = [values[k] for k in keys]
    axes.boxplot(
        boxes,
        positions=range(len(keys)),
        widths=0.5,
        showfliers=False,
        medianprops={"color": "0.1", "gid": "median"},
    )
    for position, key in enumerate(keys):
        ys = np.asarray(values[key], dtype=float)
        offsets = np.linspace(-0.12, 0.12, len(ys)) if len(ys) > 1 else np.zeros(len(ys))
        axes.scatter(position + offsets, ys, s=18, color=_class_color(key), zorder=3, label=key)
    axes.set_xticks(range(len(keys)), keys)
    axes.set_xlabel("class / region")
    axes.set_ylabel(f"{metric} (mm)" if metric == "HD95" else metric)
    axes.set_title(f"{metric} per case ({len(summary['metric_per_case'])} cases)")
    return figure


def postprocessing_dice(result_or_record) -> tuple[list[str], list[float], list[float]]:
    """Class keys and their mean Dice before and after, from a PostprocessingResult or a postprocessing.json dict."""
    if isinstance(result_or_record, dict):
        before = result_or_record["input_folder"]["mean"]
        after = result_or_record["postprocessed"]["mean"]
    else:
        before = _keyed(result_or_record.summary_before["mean"])
        after = _keyed(result_or_record.summary_after["mean"])
    keys = list(before)
    return keys, [before[k]["Dice"] for k in keys], [after[k]["Dice"] for k in keys]


def postprocessing_figure(result_or_record, size: tuple[float, float] = (6.0, 3.5)) -> Figure:
    """Mean Dice per class before (light) and after (dark) postprocessing, side by side."""
    keys, before, after = postprocessing_dice(result_or_record)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    x = np.arange(len(keys))
    axes.bar(x - 0.2, before, width=0.4, color="0.75", label="before")
    axes.bar(x + 0.2, after, width=0.4, color="0.25", label="after")
    axes.set_xticks(x, keys)
    axes.set_xlabel("class / region")
    axes.set_ylabel("mean Dice")
    axes.set_ylim(0, 1.05)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes.set_title("largest-component postprocessing")
    return figure
