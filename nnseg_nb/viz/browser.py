"""A fast slice browser for 3D volumes with label overlays, plus static montages of the same views.

In a notebook cell (tag it ``nbval-ignore-output``: widget output differs between tools)::

    browser = SliceBrowser({"image": image}, labels={"ground truth": gt, "prediction": pred},
                           spacing=props["spacing"])
    display(browser)        # interactive: axis, slice, channel, window, label opacity, a colour legend
    browser.show_static()   # the same view as a plain PNG (display() also carries it, see below)

    show_slices(image, labels=gt, spacing=props["spacing"], n=6)   # a static montage

Arrays are ``(C, Z, Y, X)`` or ``(Z, Y, X)`` (``(Y, X)`` too), labels ``(1, Z, Y, X)`` or ``(Z, Y, X)``.
Each frame is the grey image with the labels blended in (:func:`overlay_rgb`, fixed class colours),
resampled to the physical aspect ratio and sent as PNG bytes to an ``ipywidgets.Image``; frames are
cached, so going back to a slice costs nothing. In the Y and X views the Z axis points up. Only
widgets that ipywidgets 7.7 (Colab) and 8 share are used, with explicit widths (ipywidgets 8 cuts
readouts and descriptions at about 64 and 80 pixels). ``display(browser)`` sends the widget together
with the static picture, so a viewer without the widget (GitHub, a notebook before it runs) shows
the picture rather than a ``VBox(...)`` repr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from nnseg_nb.viz.overlay import (
    display_widget,
    figure_png,
    label_colors,
    overlay_rgb,
    png_bytes,
    png_size,
    robust_window,
    show_figure,
)

AXIS_NAMES = ("Z", "Y", "X")
WIDE = {"description_width": "70px"}  # every control's description column, so they line up


def _as_czyx(array, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None, None]
    if array.ndim == 3:
        return array[None]
    if array.ndim == 4:
        return array
    raise ValueError(f"{name}: expected a (C, Z, Y, X), (Z, Y, X) or (Y, X) array, got shape {array.shape}")


def _slice(volume_zyx: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D slice; in Y and X views rows are Z, flipped so that Z points up."""
    plane = np.take(volume_zyx, index, axis=axis)
    return plane[::-1] if axis > 0 else plane


def _in_plane_spacing(spacing: Sequence[float], axis: int) -> tuple[float, float]:
    rows, cols = (a for a in range(3) if a != axis)
    return float(spacing[rows]), float(spacing[cols])


def _resample_to_aspect(rgb: np.ndarray, pixel_spacing: tuple[float, float], size: int) -> np.ndarray:
    """Nearest-neighbour resize so pixels are square in millimetres and the long side is ``size``."""
    height_mm, width_mm = rgb.shape[0] * pixel_spacing[0], rgb.shape[1] * pixel_spacing[1]
    scale = size / max(height_mm, width_mm)
    height, width = max(1, round(height_mm * scale)), max(1, round(width_mm * scale))
    rows = np.minimum((np.arange(height) + 0.5) * rgb.shape[0] / height, rgb.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * rgb.shape[1] / width, rgb.shape[1] - 1).astype(int)
    return rgb[rows][:, cols]


def label_legend(values: Sequence[int], names: Mapping | None = None) -> list[tuple[int, str, tuple]]:
    """``(value, name, rgb)`` for each label value > 0, named from ``names``.

    ``names`` maps a value to its name, or a name to its value as in ``dataset.json``'s ``labels``
    (regions, whose value is a list, are left out).

    >>> [(v, n) for v, n, _ in label_legend([0, 1, 2], {"background": 0, "gray": 1, "white": 2})]
    [(1, 'gray'), (2, 'white')]
    """
    by_value = {}
    for key, value in (names or {}).items():
        if isinstance(key, str) and isinstance(value, (int, np.integer)):
            by_value[int(value)] = key
        elif isinstance(key, (int, np.integer)):
            by_value[int(key)] = str(value)
    shown = sorted({int(v) for v in values if int(v) > 0})
    colors = label_colors(max(shown, default=0) + 1)
    return [(v, by_value.get(v, f"label {v}"), tuple(colors[v])) for v in shown]


def _legend_html(legend) -> str:
    swatch = (
        '<span style="display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;'
        'vertical-align:middle;background:rgb({},{},{})"></span>'
    )
    return "".join(
        swatch.format(*(round(255 * c) for c in rgb)) + f"{value} {name}" for value, name, rgb in legend
    )


def _set_bounds(slider, low, high, value) -> None:
    """Move a slider's range without the value ever falling outside it (traitlets would clip it)."""
    slider.min, slider.max = min(slider.min, low), max(slider.max, high)
    slider.value = value
    slider.min, slider.max = low, high


class SliceBrowser:
    """Browse one or more volumes side by side, slice by slice, with label overlays.

    Args:
        volumes: ``{name: array}``, a list of arrays, or one array; all with the same (Z, Y, X).
        labels: None; one label array (overlaid on every volume); or ``{name: label array}``, each
            shown as an extra panel on the first volume (e.g. ground truth and prediction).
        spacing: voxel spacing in (Z, Y, X) order, for the aspect ratio (default isotropic).
        axis: 0, 1 or 2 = slice along Z, Y or X.
        window: ``(low, high)`` for the first volume; default percentiles 0.5 and 99.5. Other
            volumes and channels get their own robust window.
        alpha: label opacity.
        size: long side of each panel in screen pixels.
        label_names: names for the legend: ``dataset.json``'s ``labels`` (``{"gray": 1, ...}``) or
            ``{1: "gray", ...}``; unnamed values are shown as ``label k``.

    Attributes: ``widget`` (the VBox), and the controls ``axis``, ``slice``, ``channel``, ``window``,
    ``opacity``; ``images`` maps panel titles to their ``ipywidgets.Image``; ``legend`` lists
    ``(value, name, rgb)`` of the label values present.
    """

    def __init__(
        self,
        volumes,
        labels=None,
        spacing: Sequence[float] | None = None,
        axis: int = 0,
        window: tuple[float, float] | None = None,
        alpha: float = 0.4,
        size: int = 320,
        label_names: Mapping | None = None,
    ):
        import ipywidgets as widgets

        self.volumes = self._named_volumes(volumes)
        first = next(iter(self.volumes.values()))
        self.shape = first.shape[1:]
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)
        if len(self.spacing) != 3:
            raise ValueError(f"spacing must have 3 values (Z, Y, X), got {spacing}")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0 (Z), 1 (Y) or 2 (X), got {axis}")
        self.panels = self._make_panels(labels)
        self.size = int(size)
        self._windows = {}
        self._value_range = {}
        n_channels = max(v.shape[0] for v in self.volumes.values())
        is_2d = self.shape[0] == 1
        axis = 0 if is_2d else axis
        low, high = self._data_range(0, 0)

        # one slider step per few pixels: as wide as the panels, at least 400 px
        row_width = max(400, (self.size + 10) * len(self.panels))
        self.axis = widgets.ToggleButtons(
            options=[(n, i) for i, n in enumerate(AXIS_NAMES)],
            value=axis,
            description="axis",
            style={**WIDE, "button_width": "40px"},
        )
        self.slice = widgets.IntSlider(
            value=self.shape[axis] // 2,
            min=0,
            max=self.shape[axis] - 1,
            description="slice",
            style=WIDE,
            layout=widgets.Layout(width=f"{row_width}px"),
        )
        self.channel = widgets.IntSlider(
            value=0, min=0, max=n_channels - 1, description="channel", style=WIDE
        )
        self.window = widgets.FloatRangeSlider(
            value=window or self._window(0, 0),
            min=low,
            max=high,
            step=(high - low) / 500,
            description="window",
            readout=False,  # shown by window_readout: ipywidgets 8 cuts "-1000.00 - 1500.00" short
            style=WIDE,
            layout=widgets.Layout(width="320px"),
        )
        self.window_readout = widgets.Label(layout=widgets.Layout(width="130px"))
        self.opacity = widgets.FloatSlider(
            value=alpha, min=0.0, max=1.0, step=0.05, description="opacity", style=WIDE
        )
        self.legend = label_legend(
            np.unique(np.concatenate([np.unique(p[2]) for p in self.panels if p[2] is not None] or [[]])),
            label_names,
        )
        self.legend_html = widgets.HTML(_legend_html(self.legend))
        for control, hidden in (
            (self.axis, is_2d),
            (self.slice, is_2d),
            (self.channel, n_channels == 1),
            (self.opacity, all(p[2] is None for p in self.panels)),
            (self.legend_html, not self.legend),
        ):
            if hidden:
                control.layout.display = "none"
        if window is not None:
            self._windows[(0, 0)] = (float(window[0]), float(window[1]))

        self.images = {title: widgets.Image(format="png") for title, _, _ in self.panels}
        self.info = widgets.HTML()
        panels = [
            widgets.VBox([widgets.HTML(f"<b>{title}</b>"), image]) for title, image in self.images.items()
        ]
        self.widget = widgets.VBox(
            [
                widgets.HBox(panels),
                self.legend_html,
                widgets.HBox([self.axis, self.channel]),
                self.slice,
                widgets.HBox([self.window, self.window_readout, self.opacity]),
                self.info,
            ]
        )
        self._frame = lru_cache(maxsize=512)(self._encode_frame)
        self._busy = False
        self.axis.observe(self._on_axis, names="value")
        self.channel.observe(self._on_channel, names="value")
        self.window.observe(self._on_window, names="value")
        for control in (self.slice, self.opacity):
            control.observe(self._render, names="value")
        self._render()

    # --- inputs ---------------------------------------------------------------------------------

    @staticmethod
    def _named_volumes(volumes) -> dict[str, np.ndarray]:
        if isinstance(volumes, Mapping):
            named = {str(k): _as_czyx(v, str(k)) for k, v in volumes.items()}
        elif isinstance(volumes, (list, tuple)):
            named = {f"volume {i}": _as_czyx(v, f"volume {i}") for i, v in enumerate(volumes)}
        else:
            named = {"image": _as_czyx(volumes, "image")}
        if not named:
            raise ValueError("SliceBrowser needs at least one volume")
        shapes = {name: v.shape[1:] for name, v in named.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"volumes must share their (Z, Y, X) shape, got {shapes}")
        return named

    def _label_volume(self, label, name: str) -> np.ndarray:
        label = _as_czyx(label, name)
        if label.shape[0] != 1 or label.shape[1:] != self.shape:
            raise ValueError(
                f"{name}: labels must be (1, Z, Y, X) or (Z, Y, X) with (Z, Y, X) = {self.shape}, "
                f"got {label.shape}"
            )
        return label[0]

    def _make_panels(self, labels) -> list[tuple[str, int, np.ndarray | None]]:
        """(title, volume index, label volume or None) for each panel."""
        names = list(self.volumes)
        if labels is None or not isinstance(labels, Mapping):
            overlay = None if labels is None else self._label_volume(labels, "labels")
            return [(name, i, overlay) for i, name in enumerate(names)]
        panels = [(name, i, None) for i, name in enumerate(names)]
        return panels + [(str(k), 0, self._label_volume(v, str(k))) for k, v in labels.items()]

    def _volume(self, index: int, channel: int) -> np.ndarray:
        volume = list(self.volumes.values())[index]
        return volume[min(channel, volume.shape[0] - 1)]

    def _window(self, index: int, channel: int) -> tuple[float, float]:
        key = (index, min(channel, list(self.volumes.values())[index].shape[0] - 1))
        if key not in self._windows:
            self._windows[key] = robust_window(self._volume(*key))
        return self._windows[key]

    def _data_range(self, index: int, channel: int) -> tuple[float, float]:
        key = (index, channel)
        if key not in self._value_range:
            volume = self._volume(index, channel)
            low, high = float(np.nanmin(volume)), float(np.nanmax(volume))
            self._value_range[key] = (low, high if high > low else low + 1.0)
        return self._value_range[key]

    # --- frames ---------------------------------------------------------------------------------

    def _slice_rgb(self, panel: int, axis: int, index: int, channel: int, alpha: float) -> np.ndarray:
        """The panel's slice at native resolution as RGB."""
        _, volume_index, labels = self.panels[panel]
        image = _slice(self._volume(volume_index, channel), axis, index)
        label = None if labels is None else _slice(labels, axis, index)
        return overlay_rgb(image, label, self._window(volume_index, channel), alpha)

    def _encode_frame(self, panel, axis, index, channel, window, alpha) -> bytes:
        # window is part of the cache key; _window() already returns it for this panel's volume
        rgb = self._slice_rgb(panel, axis, index, channel, alpha)
        return png_bytes(_resample_to_aspect(rgb, _in_plane_spacing(self.spacing, axis), self.size))

    def frame_rgb(self, panel: int | str = 0) -> np.ndarray:
        """The current frame of a panel (index or title) as shown: ``(H, W, 3)`` uint8, aspect applied."""
        panel = self._panel_index(panel)
        rgb = self._slice_rgb(
            panel, self.axis.value, self.slice.value, self.channel.value, self.opacity.value
        )
        return _resample_to_aspect(rgb, _in_plane_spacing(self.spacing, self.axis.value), self.size)

    def _panel_index(self, panel: int | str) -> int:
        if isinstance(panel, str):
            titles = [title for title, _, _ in self.panels]
            if panel not in titles:
                raise ValueError(f"no panel {panel!r}; panels are {titles}")
            return titles.index(panel)
        return int(panel)

    # --- callbacks ------------------------------------------------------------------------------

    def _render(self, change=None) -> None:
        if self._busy:
            return
        axis, index, channel = self.axis.value, self.slice.value, self.channel.value
        alpha = round(float(self.opacity.value), 3)
        for panel, (title, volume_index, _) in enumerate(self.panels):
            window = self._window(volume_index, channel)
            png = self._frame(panel, axis, index, channel, window, alpha)
            width, height = png_size(png)  # shown at its own size: never stretched to the output's width
            self.images[title].value = png
            self.images[title].layout.width, self.images[title].layout.height = f"{width}px", f"{height}px"
        low, high = self.window.value
        self.window_readout.value = f"{low:.4g} to {high:.4g}"
        self.info.value = (
            f"{AXIS_NAMES[axis]} = {index} of {self.shape[axis]} &nbsp; "
            f"spacing {' x '.join(f'{s:g}' for s in self.spacing)}"
        )

    def _on_axis(self, change) -> None:
        self._busy = True
        n = self.shape[self.axis.value]
        _set_bounds(self.slice, 0, n - 1, n // 2)
        self._busy = False
        self._render()

    def _on_channel(self, change) -> None:
        self._busy = True
        low, high = self._data_range(0, self.channel.value)
        self.window.step = (high - low) / 500
        _set_bounds(self.window, low, high, self._window(0, self.channel.value))
        self._busy = False
        self._render()

    def _on_window(self, change) -> None:
        if not self._busy:
            channel = min(self.channel.value, next(iter(self.volumes.values())).shape[0] - 1)
            self._windows[(0, channel)] = tuple(float(v) for v in self.window.value)
            self._render()

    # --- display --------------------------------------------------------------------------------

    def figure(self, panel_size: float = 3.5):
        """The current view as a matplotlib Figure (made without pyplot), one subplot per panel."""
        from matplotlib.figure import Figure

        axis, index = self.axis.value, self.slice.value
        row_mm, col_mm = _in_plane_spacing(self.spacing, axis)
        fig = Figure(figsize=(panel_size * len(self.panels), panel_size), layout="constrained")
        for panel, ax in enumerate(np.atleast_1d(fig.subplots(1, len(self.panels)))):
            rgb = self._slice_rgb(panel, axis, index, self.channel.value, self.opacity.value)
            ax.imshow(rgb, aspect=row_mm / col_mm, interpolation="nearest")
            ax.set_title(f"{self.panels[panel][0]}  ({AXIS_NAMES[axis]} = {index})", fontsize=9)
            ax.set_axis_off()
        if self.legend:
            from matplotlib.patches import Patch

            handles = [Patch(color=rgb, label=f"{value} {name}") for value, name, rgb in self.legend]
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
        return fig

    def show_static(self, dpi: int = 80) -> None:
        """Display :meth:`figure` as a PNG: the view survives headless runs and static renderers."""
        show_figure(self.figure(), dpi=dpi)

    def _ipython_display_(self) -> None:
        """The widget, with :meth:`figure` as the picture for viewers that cannot show it."""
        text = f"SliceBrowser: {', '.join(title for title, _, _ in self.panels)} (run the cell to browse)"
        display_widget(self.widget, figure_png(self.figure(), dpi=80), text)


def _montage_indices(n_slices: int, labels_zyx: np.ndarray | None, axis: int, n: int) -> list[int]:
    """``n`` evenly spaced slices over the labelled range (the whole range without foreground)."""
    first, last = 0, n_slices - 1
    if labels_zyx is not None:
        other_axes = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero((labels_zyx > 0).any(axis=other_axes))
        if present.size:
            first, last = int(present[0]), int(present[-1])
    return sorted(set(np.linspace(first, last, num=min(n, last - first + 1)).round().astype(int).tolist()))


def slices_figure(
    volume,
    labels=None,
    spacing: Sequence[float] | None = None,
    n: int = 6,
    axis: int = 0,
    channel: int = 0,
    window: tuple[float, float] | None = None,
    alpha: float = 0.4,
    ncols: int = 6,
    panel_size: float = 2.2,
    title: str | None = None,
):
    """A montage of ``n`` slices as a matplotlib Figure (see :func:`show_slices`)."""
    from matplotlib.figure import Figure

    image = _as_czyx(volume, "volume")
    image = image[min(channel, image.shape[0] - 1)]
    label = None if labels is None else _as_czyx(labels, "labels")[0]
    if label is not None and label.shape != image.shape:
        raise ValueError(f"labels shape {label.shape} differs from the volume's (Z, Y, X) {image.shape}")
    spacing = tuple(spacing) if spacing is not None else (1.0, 1.0, 1.0)
    window = window or robust_window(image)
    indices = _montage_indices(image.shape[axis], label, axis, n)
    ncols = min(ncols, len(indices))
    nrows = -(-len(indices) // ncols)
    row_mm, col_mm = _in_plane_spacing(spacing, axis)
    fig = Figure(
        figsize=(panel_size * ncols, panel_size * nrows + (0.3 if title else 0)), layout="constrained"
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, index in zip(axes, indices):
        rgb = overlay_rgb(
            _slice(image, axis, index), None if label is None else _slice(label, axis, index), window, alpha
        )
        ax.imshow(rgb, aspect=row_mm / col_mm, interpolation="nearest")
        ax.set_title(f"{AXIS_NAMES[axis]} = {index}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def show_slices(
    volume, labels=None, spacing: Sequence[float] | None = None, n: int = 6, axis: int = 0, **kwargs
) -> None:
    """Show a static montage of ``n`` evenly spaced slices, with labels overlaid.

    Args:
        volume: ``(C, Z, Y, X)`` or ``(Z, Y, X)`` (``channel=`` picks C).
        labels: ``(1, Z, Y, X)`` or ``(Z, Y, X)``; when given, slices span the labelled range.
        spacing: (Z, Y, X) spacing for the aspect ratio.
        n: number of slices; ``axis``: 0, 1 or 2 (Z, Y, X).
        **kwargs: ``channel``, ``window``, ``alpha``, ``ncols``, ``panel_size``, ``title`` of
            :func:`slices_figure`, which returns the Figure instead of showing it.
    """
    show_figure(slices_figure(volume, labels, spacing, n, axis, **kwargs))


__all__ = ["SliceBrowser", "show_slices", "slices_figure", "figure_png"]
