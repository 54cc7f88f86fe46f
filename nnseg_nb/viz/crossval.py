"""Pictures of a cross-validation: Dice per fold and configuration, the ensemble gain, a removed component.

    table = fold_dice_table(results / "Dataset904_Shapes2D", ["2d", "2d_small"], folds=range(5))
    show_figure(cv_dice_figure(table))                     # a box per configuration, its folds as dots
    info = load_json(results / "Dataset904_Shapes2D" / "inference_information.json")
    show_figure(ensemble_figure(info["all_results"]))      # every model and pair ensemble, gain annotated
    rows = postprocessing_changes(merged_folder)           # the cases postprocessing changed most, first
    show_figure(removed_component_figure(image, before, after, reference))

The postprocessing's per-class before/after bars are ``viz.evaluation.postprocessing_figure``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nnseg_nb.utils import load_json
from nnseg_nb.viz.overlay import overlay_rgb, robust_window

REMOVED_COLOR = np.array([255, 0, 255], dtype=np.uint8)  # magenta: voxels postprocessing set to background


def fold_dice_table(
    dataset_results: str | Path,
    configurations: Sequence[str],
    folds: Iterable[int],
    trainer: str = "nnUNetTrainer",
    plans: str = "nnUNetPlans",
) -> dict[str, dict[int, float]]:
    """``{configuration: {fold: foreground mean Dice}}`` from each ``fold_k/validation/summary.json``.

    A fold without a summary is NaN (not trained or not validated yet).
    """
    table: dict[str, dict[int, float]] = {}
    for configuration in configurations:
        model = Path(dataset_results) / f"{trainer}__{plans}__{configuration}"
        table[configuration] = {}
        for fold in folds:
            path = model / f"fold_{fold}" / "validation" / "summary.json"
            dice = load_json(path)["foreground_mean"]["Dice"] if path.is_file() else math.nan
            table[configuration][int(fold)] = float(dice)
    return table


def cv_rows(table: dict[str, dict[int, float]]) -> list[dict]:
    """One row per configuration: the Dice of each fold, their mean and standard deviation (NaN skipped).

    >>> cv_rows({"2d": {0: 0.8, 1: 0.9}})
    [{'configuration': '2d', 'fold 0': 0.8, 'fold 1': 0.9, 'mean': 0.85, 'std': 0.05}]
    """
    rows = []
    for configuration, by_fold in table.items():
        values = np.array([v for v in by_fold.values() if not math.isnan(v)])
        row = {"configuration": configuration, **{f"fold {f}": v for f, v in by_fold.items()}}
        row["mean"] = round(float(values.mean()), 10) if values.size else math.nan
        row["std"] = round(float(values.std()), 10) if values.size else math.nan
        rows.append(row)
    return rows


def cv_dice_figure(table: dict[str, dict[int, float]], size: tuple[float, float] = (6.0, 3.5)) -> Figure:
    """A box per configuration with its folds as dots, each dot labelled with its fold number.

    The dots are one ``PathCollection`` per configuration (in table order, x = its position); folds without
    a result are left out.
    """
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    names = list(table)
    values = [[(f, v) for f, v in table[n].items() if not math.isnan(v)] for n in names]
    axes.boxplot([[v for _, v in pairs] for pairs in values], positions=range(len(names)), widths=0.5,
                 showfliers=False, medianprops={"color": "0.1"})  # fmt: skip
    for position, pairs in enumerate(values):
        x = position + (np.linspace(-0.15, 0.15, len(pairs)) if len(pairs) > 1 else np.zeros(len(pairs)))
        axes.scatter(x, [v for _, v in pairs], s=22, zorder=3, color=f"C{position}")
        for xi, (fold, value) in zip(x, pairs):
            axes.annotate(str(fold), (xi, value), xytext=(4, 0), textcoords="offset points", fontsize=7)
    axes.set_xticks(range(len(names)), names)
    axes.set_xlabel("configuration")
    axes.set_ylabel("validation Dice (foreground mean)")
    axes.set_title("cross-validation: Dice per fold")
    return figure


def ensemble_gains(all_results: dict[str, float]) -> list[dict]:
    """For each pair ensemble of ``inference_information.json``'s ``all_results``: its Dice, its members'
    and the gain over the better member.

    >>> ensemble_gains({"T__P__a": 0.8, "T__P__b": 0.7, "ensemble___T__P__a___T__P__b___0_1": 0.85})
    [{'ensemble': 'a + b', 'dice': 0.85, 'members': {'a': 0.8, 'b': 0.7}, 'gain': 0.05}]
    """
    gains = []
    for key, dice in all_results.items():
        if not key.startswith("ensemble___"):
            continue
        members = key.split("___")[1:3]
        member_dice = {m.split("__")[-1]: all_results[m] for m in members}
        gains.append({
            "ensemble": " + ".join(member_dice), "dice": dice, "members": member_dice,
            "gain": round(dice - max(member_dice.values()), 10),
        })  # fmt: skip
    return gains


def _short(key: str) -> str:
    if key.startswith("ensemble___"):
        return " + ".join(m.split("__")[-1] for m in key.split("___")[1:3])
    return key.split("__")[-1]


def ensemble_figure(all_results: dict[str, float], size: tuple[float, float] = (6.0, 3.0)) -> Figure:
    """Every single model (grey) and pair ensemble (blue) as a horizontal bar of its CV Dice, best outlined.

    An ensemble's bar is annotated with its gain over its better member (``ensemble_gains``).
    """
    keys = list(all_results)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    dice = [all_results[k] for k in keys]
    colors = ["C0" if k.startswith("ensemble___") else "0.6" for k in keys]
    bars = axes.barh(range(len(keys)), dice, color=colors, linewidth=0)
    best = int(np.argmax(dice))  # the first of ties wins, as in find_best_configuration
    bars[best].set_edgecolor("black")
    bars[best].set_linewidth(2)
    gains = {g["ensemble"]: g["gain"] for g in ensemble_gains(all_results)}
    for i, key in enumerate(keys):
        label = f"{dice[i]:.4f}"
        if _short(key) in gains and key.startswith("ensemble___"):
            label += f" ({gains[_short(key)]:+.4f})"
        axes.annotate(label, (dice[i], i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    axes.set_yticks(range(len(keys)), [_short(k) for k in keys])
    axes.invert_yaxis()
    axes.set_xlim(0, 1.15)
    axes.set_xlabel("cross-validation Dice (foreground mean)")
    axes.set_title("models and pair ensembles (best outlined)")
    return figure


def postprocessing_changes(merged_folder: str | Path) -> list[dict]:
    """The cases whose foreground-mean Dice postprocessing changed, largest change first.

    Reads ``<merged_folder>/summary.json`` (before) and ``postprocessed/summary.json`` (after), as
    ``postprocessing.determine_postprocessing`` leaves them. Each row: case, file name, Dice before, after.
    """
    merged_folder = Path(merged_folder)
    before = load_json(merged_folder / "summary.json")["metric_per_case"]
    after = {
        Path(c["prediction_file"]).name: c
        for c in load_json(merged_folder / "postprocessed" / "summary.json")["metric_per_case"]
    }
    rows = []
    for case in before:
        name = Path(case["prediction_file"]).name
        dice_before, dice_after = (
            float(np.nanmean([m["Dice"] for m in c["metrics"].values()]))
            for c in (case, after[name])
        )  # fmt: skip
        if dice_after != dice_before:
            rows.append({"file": name, "dice_before": dice_before, "dice_after": dice_after})
    return sorted(rows, key=lambda r: -abs(r["dice_after"] - r["dice_before"]))


def slice_with_most(mask: np.ndarray) -> int:
    """The index along axis 0 of a (Z, Y, X) mask with the most voxels set (0 for an empty mask)."""
    return int(np.asarray(mask).reshape(mask.shape[0], -1).sum(1).argmax())


def removed_component_figure(
    image: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    reference: np.ndarray,
    title: str = "",
    size: tuple[float, float] = (9.0, 3.4),
) -> Figure:
    """Reference, prediction before and after postprocessing, the removed voxels in magenta.

    2D arrays ``(Y, X)``, or 3D ``(Z, Y, X)`` shown at the slice with the most removed voxels. Panel images
    are ``overlay_rgb`` of the labels, the middle one with the removed voxels painted ``REMOVED_COLOR``.
    """
    image, before, after, reference = (np.asarray(a) for a in (image, before, after, reference))
    removed = (before > 0) & (after == 0)
    if image.ndim == 3:
        z = slice_with_most(removed)
        image, before, after, reference, removed = (a[z] for a in (image, before, after, reference, removed))
    window = robust_window(image)
    panels = [overlay_rgb(image, reference, window), overlay_rgb(image, before, window),
              overlay_rgb(image, after, window)]  # fmt: skip
    panels[1][removed] = REMOVED_COLOR
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots(1, 3)
    names = ["reference", f"before ({int(removed.sum())} voxels removed)", "after postprocessing"]
    for ax, panel, name in zip(axes, panels, names):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        figure.suptitle(title)
    return figure
