"""Pixels for every figure: one fixed label colour map, a robust intensity window, overlays, PNG bytes.

Every plot and widget of nnseg_nb colours class ``k`` the same way, so "label 2" is the same
orange in the slice browser, the montage and the evaluation plots::

    window = robust_window(image)                            # (low, high) from percentiles, once per volume
    rgb = overlay_rgb(image[0, 20], seg[0, 20], window, 0.4)  # (Y, X, 3) uint8
    show_figure(fig)                                          # a matplotlib Figure as a PNG output

>>> label_colors(3)[0].tolist(), label_colors(3).shape
([0.0, 0.0, 0.0], (3, 3))
>>> overlay_rgb(np.zeros((2, 2)), np.array([[0, 1], [0, 0]]), (0, 1), alpha=1.0)[0, 1].tolist() == \\
...     (label_colors(2)[1] * 255).round().astype(int).tolist()
True
"""

from __future__ import annotations

import base64
import io
import struct

import matplotlib
import numpy as np

# tab10 without its grey (which vanishes on a grey image), then the light tab20 tones without grey.
_TAB10, _TAB20 = matplotlib.colormaps["tab10"].colors, matplotlib.colormaps["tab20"].colors
PALETTE = np.array(
    [c for i, c in enumerate(_TAB10) if i != 7] + [c for i, c in enumerate(_TAB20) if i % 2 and i != 15]
)


def label_colors(n: int) -> np.ndarray:
    """RGB colours in [0, 1] for labels ``0..n-1``, shape ``(n, 3)``.

    Label 0 (background) is black; label ``k >= 1`` is ``PALETTE[(k - 1) % 18]``, whatever ``n`` is,
    so colours never depend on how many classes a figure shows.
    """
    colors = np.zeros((max(int(n), 1), 3))
    if n > 1:
        colors[1:] = PALETTE[(np.arange(1, n) - 1) % len(PALETTE)]
    return colors


def label_cmap(n: int):
    """A matplotlib colormap of :func:`label_colors` for ``imshow(seg, cmap=..., vmin=0, vmax=n - 1,
    interpolation="nearest")``; background is transparent."""
    from matplotlib.colors import ListedColormap

    rgba = np.concatenate([label_colors(n), np.ones((max(n, 1), 1))], axis=1)
    rgba[0, 3] = 0.0
    return ListedColormap(rgba, name=f"nnseg_labels_{n}")


def robust_window(
    volume: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), max_samples: int = 1_000_000
) -> tuple[float, float]:
    """An intensity window ``(low, high)`` from percentiles, robust to a few extreme voxels.

    Compute it once per volume (not per slice) so that slices are comparable. Large volumes are
    subsampled to ``max_samples`` voxels. ``high > low`` always.
    """
    values = np.asarray(volume).ravel()
    values = values[:: max(1, values.size // max_samples)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:
        high = low + 1.0
    return low, high


def overlay_rgb(
    image2d: np.ndarray,
    label2d: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    alpha: float = 0.4,
) -> np.ndarray:
    """Grey image with coloured labels blended on top.

    Args:
        image2d: ``(H, W)`` intensities.
        label2d: ``(H, W)`` integer labels (floats are rounded); values <= 0 are background.
        window: ``(low, high)`` mapped to black and white; default :func:`robust_window` of the slice.
        alpha: label opacity, 0 (invisible) to 1 (opaque).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    low, high = window if window is not None else robust_window(image2d)
    grey = np.clip((np.asarray(image2d, dtype=np.float32) - low) / max(high - low, 1e-8), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if label2d is not None and alpha > 0:
        labels = np.rint(np.asarray(label2d)).astype(np.int64)
        foreground = labels > 0
        if foreground.any():
            colors = label_colors(int(labels.max()) + 1)
            rgb[foreground] = (1 - alpha) * rgb[foreground] + alpha * colors[labels[foreground]]
    return np.round(rgb * 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG (fast, lightly compressed: it is sent, not stored)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib Figure rendered to PNG bytes (no pyplot, no GUI backend needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # a Figure made without pyplot has no canvas yet
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def show_figure(fig, dpi: int = 100) -> None:
    """Show a Figure as a PNG output cell: works under any matplotlib backend, headless, in papermill
    reports and on GitHub (a bare ``Figure`` at the end of a cell shows only its text repr)."""
    from IPython.display import Image, display

    display(Image(data=figure_png(fig, dpi=dpi), format="png"))


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels of PNG bytes, read from the header.

    >>> png_size(png_bytes(np.zeros((3, 5, 3), np.uint8)))
    (5, 3)
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not PNG bytes")
    return struct.unpack(">II", png[16:24])


def display_widget(widget, png: bytes, text: str) -> None:
    """Display an ipywidgets widget with a static picture in the same output.

    A live frontend renders the widget; anything without the widget's state (GitHub, nbviewer, a
    notebook opened before running it, where ``nnseg-nb record`` left only the picture) shows
    ``png`` instead of a ``VBox(children=...)`` repr. ``text`` is the plain-text fallback.
    """
    from IPython.display import display

    bundle = {
        "text/plain": text,
        "image/png": base64.b64encode(png).decode("ascii"),
        # the view reference that ipywidgets 7.7 and 8 both send (their own _ipython_display_/_repr_mimebundle_)
        "application/vnd.jupyter.widget-view+json": {
            "version_major": 2,
            "version_minor": 0,
            "model_id": widget.model_id,
        },
    }
    display(bundle, raw=True)
