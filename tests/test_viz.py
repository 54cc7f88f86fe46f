"""Slice browser callbacks and static figures, without a browser or a kernel (traitlets observers
run synchronously in plain Python)."""

import io

import numpy as np
import pytest
from PIL import Image

from nnseg_nb.viz import (
    PALETTE,
    SliceBrowser,
    figure_png,
    label_cmap,
    label_colors,
    overlay_rgb,
    robust_window,
    slices_figure,
)
from nnseg_nb.viz.browser import _montage_indices

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_shape(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


@pytest.fixture
def case():
    """A (1, Z, Y, X) image with a bright cube labelled 1 and a smaller cube labelled 2."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, size=(1, 12, 32, 24)).astype(np.float32)
    labels = np.zeros((1, 12, 32, 24), np.int16)
    labels[0, 3:9, 8:20, 6:18] = 1
    labels[0, 5:7, 12:16, 10:14] = 2
    image[labels > 0] += 5
    return image, labels


def test_label_colors_fixed_and_distinct():
    colors = label_colors(20)
    assert colors[0].tolist() == [0, 0, 0]
    assert np.allclose(label_colors(3)[1:], colors[1:3])  # class k's colour does not depend on n
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE) == 18
    assert np.allclose(colors[19], colors[1])  # cycles after 18 classes
    greys = [c for c in PALETTE if np.ptp(c) < 0.05]
    assert not greys  # a grey label would vanish on a grey image
    cmap = label_cmap(4)
    assert cmap(0)[3] == 0 and np.allclose(cmap(2)[:3], colors[2])


def test_overlay_rgb_colours_labelled_pixels():
    image = np.array([[0.0, 1.0], [2.0, 3.0]])
    labels = np.array([[0, 1], [2, 0]])
    rgb = overlay_rgb(image, labels, window=(0, 3), alpha=0.5)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0]  # background: grey level of intensity 0
    assert rgb[1, 1].tolist() == [255, 255, 255]  # window top
    grey = 1 / 3
    expected = np.round((0.5 * grey + 0.5 * label_colors(3)[1]) * 255)
    assert np.abs(rgb[0, 1].astype(int) - expected).max() <= 1
    assert np.abs(rgb[1, 0].astype(int) - np.round((0.5 * 2 / 3 + 0.5 * label_colors(3)[2]) * 255)).max() <= 1
    assert (overlay_rgb(image, labels, (0, 3), alpha=0.0) == overlay_rgb(image, None, (0, 3))).all()


def test_robust_window_ignores_outliers():
    volume = np.concatenate([np.linspace(0, 100, 10_000), [1e6, -1e6]])
    low, high = robust_window(volume)
    assert 0 <= low < 1 and 99 < high <= 100
    assert robust_window(np.full((4, 4), 7.0)) == (7.0, 8.0)  # constant: still high > low


def test_slider_changes_png_and_cache(case):
    image, labels = case
    browser = SliceBrowser({"image": image}, labels={"ground truth": labels})
    assert list(browser.images) == ["image", "ground truth"]
    assert browser.slice.value == 6 and browser.slice.max == 11
    before = bytes(browser.images["ground truth"].value)  # ipywidgets 8 gives a memoryview
    assert before[:8] == PNG_MAGIC
    browser.slice.value = 0  # no label on slice 0: the overlay frame must change
    after = bytes(browser.images["ground truth"].value)
    assert after != before and after[:8] == PNG_MAGIC
    browser.slice.value = 6
    assert bytes(browser.images["ground truth"].value) == before  # same slice, same (cached) bytes
    assert browser._frame.cache_info().hits >= 2


def test_axis_switch_changes_frame_shape_with_spacing(case):
    image, labels = case
    browser = SliceBrowser(image, labels=labels, spacing=(2.0, 1.0, 1.0), size=64)
    assert browser.frame_rgb().shape == (64, 48, 3)  # Y x X = 32 x 24 mm
    browser.axis.value = 2  # slice along X: rows Z (12 x 2 mm), columns Y (32 x 1 mm)
    assert browser.slice.max == 23 and browser.slice.value == 12
    assert browser.frame_rgb().shape == (48, 64, 3)
    assert _png_shape(bytes(browser.images["image"].value)) == (48, 64)
    browser.axis.value = 1  # rows Z (24 mm), columns X (24 mm)
    assert browser.frame_rgb().shape == (64, 64, 3)


def test_overlay_colour_at_labelled_pixel_and_opacity(case):
    image, labels = case
    browser = SliceBrowser(image, labels=labels, size=32)  # native 32 x 24: no resampling along Y
    browser.opacity.value = 1.0
    frame = browser.frame_rgb()
    color_1 = np.round(label_colors(2)[1] * 255)
    # slice 6, pixel (10, 7) is class 1 only; scaled x index: 7 stays 7 (24 -> 24 columns)
    assert np.array_equal(frame[10, 7], color_1)
    assert np.array_equal(frame[13, 11], np.round(label_colors(3)[2] * 255))
    browser.opacity.value = 0.0
    assert not np.array_equal(browser.frame_rgb()[10, 7], color_1)


def test_window_and_channel_controls(case):
    image, _ = case
    two_channels = np.concatenate([image, 100 + 10 * image**2])  # not affine: other grey levels
    browser = SliceBrowser(two_channels)
    assert browser.channel.layout.display != "none" and browser.channel.max == 1
    assert browser.opacity.layout.display == "none"  # no labels, no opacity slider
    low0, high0 = browser.window.value
    before = bytes(browser.images["image"].value)
    browser.channel.value = 1  # the window follows the channel's own intensity range
    low1, high1 = browser.window.value
    assert low1 > high0 and browser.window.min >= 40
    assert bytes(browser.images["image"].value) != before
    browser.window.value = (low1, low1 + 1)  # a narrow window saturates the frame
    assert (browser.frame_rgb() > 0).mean() > 0.4


def test_2d_volume_hides_slice_and_axis():
    image = np.random.default_rng(1).random((1, 1, 20, 30)).astype(np.float32)
    browser = SliceBrowser(image, spacing=(999, 1, 1), axis=2)
    assert browser.slice.layout.display == "none" and browser.axis.layout.display == "none"
    assert browser.axis.value == 0
    assert browser.frame_rgb().shape[:2] == (213, 320)  # 20 x 30 pixels, long side 320


def test_shape_mismatch_is_a_clear_error(case):
    image, labels = case
    with pytest.raises(ValueError, match="labels must be"):
        SliceBrowser(image, labels=labels[:, :5])
    with pytest.raises(ValueError, match="share their"):
        SliceBrowser([image, image[:, :5]])


def test_static_figure_renders_png(case):
    image, labels = case
    browser = SliceBrowser({"image": image}, labels={"gt": labels, "pred": labels}, spacing=(2, 1, 1))
    fig = browser.figure()
    assert len(fig.axes) == 3 and fig.axes[1].get_title().startswith("gt")
    png = figure_png(fig, dpi=50)
    height, width = _png_shape(png)
    assert png[:8] == PNG_MAGIC and 100 < height < 250 and 300 < width < 700


def test_montage_spans_labelled_slices(case):
    image, labels = case
    assert _montage_indices(12, labels[0], 0, 4) == [3, 5, 6, 8]
    assert _montage_indices(12, None, 0, 3) == [0, 6, 11]
    fig = slices_figure(image, labels, spacing=(2, 1, 1), n=4, ncols=2)
    assert [ax.get_title() for ax in fig.axes] == ["Z = 3", "Z = 5", "Z = 6", "Z = 8"]
    assert _png_shape(figure_png(fig, dpi=40))[0] > 50


def test_browser_layout_legend_and_display_bundle(monkeypatch):
    """Controls are wide enough to read (ipywidgets 8 cuts at ~64/80 px), panels keep their natural
    size, the legend names the labels, and display() carries the static picture with the widget."""
    import IPython.display

    image = np.random.default_rng(0).normal(size=(80, 40, 30)).astype(np.float32) * 300
    labels = np.zeros((80, 40, 30), np.uint8)
    labels[10:30, 5:20, 5:20], labels[40:50, 10:30, 10:25] = 1, 3
    browser = SliceBrowser(
        image, labels=labels, label_names={"background": 0, "gray": 1, "tumor": 3}, size=200
    )
    assert int(browser.slice.layout.width.removesuffix("px")) >= 400  # ~5 px per slice, not 120 px for 80
    assert browser.window.readout is False and " to " in browser.window_readout.value
    low, high = browser.window.value
    assert browser.window_readout.value == f"{low:.4g} to {high:.4g}"
    assert [(value, name) for value, name, _ in browser.legend] == [(1, "gray"), (3, "tumor")]
    assert "1 gray" in browser.legend_html.value and "3 tumor" in browser.legend_html.value
    colour = tuple(round(255 * c) for c in label_colors(4)[3])
    assert f"background:rgb({colour[0]},{colour[1]},{colour[2]})" in browser.legend_html.value
    panel = browser.images["image"]
    height, width = _png_shape(panel.value)
    assert (panel.layout.width, panel.layout.height) == (f"{width}px", f"{height}px")
    browser.axis.value = 2
    height, width = _png_shape(panel.value)
    assert panel.layout.width == f"{width}px" and panel.layout.height == f"{height}px"
    legend_texts = [t.get_text() for legend in browser.figure().legends for t in legend.get_texts()]
    assert legend_texts == ["1 gray", "3 tumor"]

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append((a, k)))
    browser._ipython_display_()
    (bundle,), kwargs = shown[0]
    assert kwargs == {"raw": True}
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == browser.widget.model_id
    assert bundle["text/plain"] == "SliceBrowser: image (run the cell to browse)"
    import base64

    assert base64.b64decode(bundle["image/png"])[:8] == PNG_MAGIC

    no_labels = SliceBrowser(image)
    assert no_labels.legend == [] and no_labels.legend_html.layout.display == "none"
