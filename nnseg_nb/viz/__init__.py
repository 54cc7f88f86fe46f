"""Plots and widgets: a slice browser, static montages, and the label colours every figure shares.

    from nnseg_nb.viz import SliceBrowser, show_slices
    browser = SliceBrowser({"image": image}, labels={"ground truth": gt}, spacing=spacing)
    display(browser)            # the widget, and its static picture for viewers that cannot show widgets
    show_slices(image, labels=gt, spacing=spacing, n=6)

The planning widget is :mod:`nnseg_nb.viz.planning_widget`, the plans figures :mod:`nnseg_nb.viz.plans`.
Figures are made with ``matplotlib.figure.Figure`` (not pyplot) and shown as PNG outputs with
:func:`show_figure`, so they appear exactly once, under any backend, headless included.
"""

from nnseg_nb.viz.browser import SliceBrowser, show_slices, slices_figure
from nnseg_nb.viz.overlay import (
    PALETTE,
    figure_png,
    label_cmap,
    label_colors,
    overlay_rgb,
    png_bytes,
    robust_window,
    show_figure,
)

__all__ = [
    "PALETTE",
    "SliceBrowser",
    "figure_png",
    "label_cmap",
    "label_colors",
    "overlay_rgb",
    "png_bytes",
    "robust_window",
    "show_figure",
    "show_slices",
    "slices_figure",
]
