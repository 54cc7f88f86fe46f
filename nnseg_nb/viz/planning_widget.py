"""The planning widget: move a GPU-memory slider or pick a planner preset, and see the plans change.

In a notebook cell (tag it ``nbval-ignore-output``)::

    widget = planning_widget(fingerprint, dataset_json, image, spacing)   # GPU memory + preset -> re-plan
    display(widget)    # the widget, and its static picture for viewers without it
    widget.plans       # the current Plans; widget.summary_lines() says them in words

Each setting is planned once by :func:`nnseg_nb.planning.plan` and drawn once by
:func:`nnseg_nb.viz.plans.patch_boxes_figure` (both cached). Only widgets that ipywidgets 7.7 (Colab)
and 8 share are used, with widths that ipywidgets 8 does not cut short.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from matplotlib.figure import Figure

from nnseg_nb import planning
from nnseg_nb.plans import Plans
from nnseg_nb.viz.overlay import display_widget, figure_png, png_size, show_figure
from nnseg_nb.viz.plans import _times, patch_boxes_figure, plotted_configurations

# --- the widget ------------------------------------------------------------------------

GPU_MEMORY_CHOICES_GB = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 40.0, 80.0)
PRESET_LABELS = {
    "default": "default",
    "resenc-m": "ResEnc M",
    "resenc-l": "ResEnc L",
    "resenc-xl": "ResEnc XL",
}


def plans_summary(plans: Plans, configurations: Sequence[str] | None = None) -> list[str]:
    """One line per configuration: ``3d_fullres: patch 64 x 80 x 64, batch 2, spacing 2.48 x 2.44 x 2.44``."""
    lines = []
    for name in plotted_configurations(plans, configurations):
        c = plans.configuration(name)
        lines.append(
            f"{name}: patch {_times(c.patch_size)}, batch {c.batch_size}, spacing {_times(c.spacing, 3)}"
        )
    return lines


class PlanningWidget:
    """Re-plan a dataset while you move a GPU-memory slider or pick a planner preset.

    Args:
        fingerprint, dataset_json: what ``planning.plan`` takes.
        image, spacing: optional case (``(C, Z, Y, X)``, reader order) to draw the patches on.
        preset: ``"default"``, ``"resenc-m"``, ``"resenc-l"`` or ``"resenc-xl"``.
        gpu_memory_gb: start value (default the preset's own target).
        configurations: passed to :func:`patch_boxes_figure`.
        dpi: the picture's size (its pixels are rendered at twice this, for sharp high-DPI screens,
            and shown at the size of this dpi, never stretched to the output's width).

    Attributes: ``widget`` (the VBox), controls ``preset`` and ``gpu_memory``, ``plans`` (the current
    ``Plans``), ``text`` (the summary line per configuration). Choosing a preset moves the slider to
    that preset's own GPU memory target.
    """

    def __init__(
        self,
        fingerprint: dict,
        dataset_json: dict,
        image: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
        preset: str = "default",
        gpu_memory_gb: float | None = None,
        configurations: Sequence[str] | None = None,
        dpi: int = 60,
        **plan_kwargs,
    ):
        import ipywidgets as widgets

        if preset not in planning.PRESETS:
            raise ValueError(f"unknown planner preset {preset!r}; known: {', '.join(planning.PRESETS)}")
        self.fingerprint, self.dataset_json, self.plan_kwargs = fingerprint, dataset_json, plan_kwargs
        self.image, self.spacing, self.configurations, self.dpi = image, spacing, configurations, dpi
        start = float(gpu_memory_gb or planning.PRESETS[preset].gpu_memory_target_gb)
        choices = sorted(set(GPU_MEMORY_CHOICES_GB) | {start})
        described = {"description_width": "initial"}  # ipywidgets 8 cuts descriptions at 80 px ("GPU mem...")
        self.preset = widgets.Dropdown(
            options=[(label, key) for key, label in PRESET_LABELS.items()],
            value=preset,
            description="planner",
            style=described,
            layout=widgets.Layout(width="200px"),
        )
        self.gpu_memory = widgets.SelectionSlider(
            options=[(f"{g:g} GB", g) for g in choices],
            value=start,
            description="GPU memory",
            continuous_update=False,
            readout=False,  # memory_readout instead: ipywidgets 8 cuts a readout at about 64 px
            style=described,
            layout=widgets.Layout(width="380px"),
        )
        self.memory_readout = widgets.Label(layout=widgets.Layout(width="70px"))
        self.text = widgets.HTML()
        self.picture = widgets.Image(format="png")
        if image is None:
            self.picture.layout.display = "none"
        controls = widgets.HBox([self.preset, self.gpu_memory, self.memory_readout])
        self.widget = widgets.VBox([controls, self.text, self.picture])
        self._plan = lru_cache(maxsize=64)(self._plan_for)
        self._png = lru_cache(maxsize=64)(self._png_for)
        self._busy = False
        self.preset.observe(self._on_preset, names="value")
        self.gpu_memory.observe(self._render, names="value")
        self._render()

    def _plan_for(self, preset: str, gpu_memory_gb: float) -> Plans:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ResEnc presets warn about a non-standard memory target
            settings = planning.preset(preset, gpu_memory_gb)
        return planning.plan(self.fingerprint, self.dataset_json, settings, **self.plan_kwargs)

    def _png_for(self, preset: str, gpu_memory_gb: float) -> bytes:
        return figure_png(self.figure(), dpi=2 * self.dpi)

    @property
    def plans(self) -> Plans:
        return self._plan(self.preset.value, float(self.gpu_memory.value))

    def summary_lines(self) -> list[str]:
        settings = f"{PRESET_LABELS[self.preset.value]} at {self.gpu_memory.value:g} GB"
        return [settings] + plans_summary(self.plans, self.configurations)

    def figure(self) -> Figure:
        """The current plans' patches on the case (a Figure); without a case, a ValueError."""
        if self.image is None:
            raise ValueError("no case to draw on: pass image= and spacing= to the widget")
        return patch_boxes_figure(self.plans, self.image, self.spacing, self.configurations)

    def _render(self, change=None) -> None:
        if self._busy:
            return
        lines = self.summary_lines()
        self.text.value = "<b>" + lines[0] + "</b><br>" + "<br>".join(lines[1:])
        self.memory_readout.value = f"{self.gpu_memory.value:g} GB"
        if self.image is not None:
            png = self._png(self.preset.value, float(self.gpu_memory.value))
            width, height = png_size(png)
            self.picture.value = png
            self.picture.layout.width, self.picture.layout.height = f"{width // 2}px", f"{height // 2}px"

    def _on_preset(self, change) -> None:
        self._busy = True
        self.gpu_memory.value = planning.PRESETS[self.preset.value].gpu_memory_target_gb
        self._busy = False
        self._render()

    def show_static(self) -> None:
        """Print the summary and show the patches as a PNG (for headless runs and static renderers)."""
        print("\n".join(self.summary_lines()))
        if self.image is not None:
            show_figure(self.figure(), dpi=self.dpi)

    def _ipython_display_(self) -> None:
        """The widget, with the patches as the picture for viewers that cannot show it."""
        text = "PlanningWidget: " + "; ".join(self.summary_lines()) + " (run the cell to re-plan)"
        png = figure_png(self.figure(), dpi=self.dpi) if self.image is not None else None
        if png is None:
            from IPython.display import display

            display(self.widget)
        else:
            display_widget(self.widget, png, text)


def planning_widget(
    fingerprint: dict,
    dataset_json: dict,
    image: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    **kwargs,
) -> PlanningWidget:
    """A :class:`PlanningWidget`: ``display(w)`` in a cell tagged ``nbval-ignore-output``."""
    return PlanningWidget(fingerprint, dataset_json, image, spacing, **kwargs)


__all__ = ["GPU_MEMORY_CHOICES_GB", "PRESET_LABELS", "PlanningWidget", "planning_widget", "plans_summary"]
