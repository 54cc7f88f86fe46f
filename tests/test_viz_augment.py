"""The augmentation gallery and the deep-supervision figure on a small synthetic 3D patch."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from nnseg_nb import augment, network
from nnseg_nb.viz import figure_png
from nnseg_nb.viz.augment import (
    augmentation_gallery,
    deep_supervision_figure,
    draw_augmentations,
    unaugmented,
)

PATCH = (8, 24, 20)


@pytest.fixture(scope="module")
def patch():
    """A loaded (initial-size) patch: a bright ball (label 1) with a core (label 2), -1 at one border."""
    rotation, dummy_2d, mirror_axes = augment.rotation_and_mirroring_for(PATCH)
    loaded = augment.loaded_patch_size(PATCH, rotation, dummy_2d=dummy_2d)
    z, y, x = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in loaded], indexing="ij")
    radius = np.sqrt((z / 3) ** 2 + (y / 8) ** 2 + (x / 6) ** 2)
    seg = np.where(radius < 0.5, 2, np.where(radius < 1, 1, 0)).astype(np.int16)[None]
    seg[..., :2] = -1
    rng = np.random.default_rng(0)
    image = (seg[0] + 0.2 * rng.standard_normal(loaded)).astype(np.float32)[None]
    pipeline = augment.training_pipeline(PATCH, rotation, mirror_axes, dummy_2d)
    return torch.from_numpy(image), torch.from_numpy(seg), pipeline


def _png_shape(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


def test_same_seed_same_draw_and_equal_to_augment(patch):
    image, seg, pipeline = patch
    first, again, other = draw_augmentations(image, seg, pipeline, [7, 7, 8])
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.seg, again.seg)
    assert first.applied == again.applied
    assert not np.array_equal(first.image, other.image)
    reference = augment.augment(
        {"image": image[None], "seg": seg[None]}, pipeline, torch.Generator().manual_seed(7)
    )
    np.testing.assert_array_equal(first.image, reference["image"][0].numpy())
    np.testing.assert_array_equal(first.seg, reference["seg"][0].numpy())
    assert first.image.shape == (1, *PATCH) and first.seg.shape == (1, *PATCH)


def test_labels_stay_in_the_label_set(patch):
    image, seg, pipeline = patch
    draws = draw_augmentations(image, seg, pipeline, range(12))
    for draw in draws:
        assert set(np.unique(draw.seg).tolist()) <= {0, 1, 2}
    assert any((draw.seg == 2).any() for draw in draws)
    assert set(np.unique(unaugmented(image, seg, pipeline).seg).tolist()) == {0, 1, 2}


def test_captions_say_what_was_applied(patch):
    image, seg, pipeline = patch
    always = [
        augment.SpatialTransform(PATCH, (-0.5, 0.5), p_rotation=1, p_scaling=1, dummy_2d=True),
        augment.Mirror((0, 1, 2), p_per_axis=1.0),
        augment.RemoveLabel(),
    ]
    (draw,) = draw_augmentations(image, seg, always, [0])
    assert draw.applied[0].startswith("rotation ") and draw.applied[1].startswith("scaling x")
    assert draw.applied[2] == "flip zyx"
    plain = unaugmented(image, seg, pipeline)
    start = [(loaded - final) // 2 for loaded, final in zip(image.shape[1:], PATCH)]
    crop = tuple(slice(s, s + n) for s, n in zip(start, PATCH))
    np.testing.assert_array_equal(plain.image, image[(slice(None), *crop)].numpy())


def test_gallery_png_is_reproducible_and_seed_dependent(patch, tmp_path):
    image, seg, pipeline = patch
    pngs = [
        figure_png(
            augmentation_gallery(
                image, seg, pipeline, n=5, generator=torch.Generator().manual_seed(s), columns=3
            ),
            dpi=50,
        )
        for s in (0, 0, 1)
    ]
    assert pngs[0] == pngs[1] and pngs[0] != pngs[2]
    path = tmp_path / "gallery.png"
    path.write_bytes(pngs[0])
    height, width = _png_shape(path.read_bytes())
    assert 100 < height < 600 and 150 < width < 800
    fig = augmentation_gallery(image, seg, pipeline, n=5, columns=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 6 and all(ax.images[0].get_array().shape == (*PATCH[1:], 3) for ax in shown)


def test_deep_supervision_figure_panels_and_shapes(tmp_path):
    seg = torch.zeros(1, *PATCH, dtype=torch.int16)
    seg[0, 2:6, 6:18, 5:15] = 1
    scales = network.deep_supervision_scales([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]])
    fig = deep_supervision_figure(seg, scales)
    assert len(fig.axes) == len(scales) == 3
    expected = [(24, 20), (12, 10), (6, 5)]
    assert [ax.images[0].get_array().shape[:2] for ax in fig.axes] == expected
    path = tmp_path / "ds.png"
    path.write_bytes(figure_png(fig, dpi=50))
    height, width = _png_shape(path.read_bytes())
    assert 50 < height < 300 and 150 < width < 600
    # the coarsest panel keeps labels (a downsampled box is still there)
    assert fig.axes[-1].images[0].get_array().reshape(-1, 3).max() > 0


def test_intensity_histograms_inside_and_outside_the_mask():
    from nnseg_nb.viz.preprocessing import intensity_histograms

    volume = np.zeros((4, 10, 10))
    volume[:, 2:8, 2:8] = np.arange(36).reshape(6, 6)
    mask = volume > 0
    fig = intensity_histograms({"raw": volume, "doubled": 2 * volume}, mask, lines={"raw": [1.0, 30.0]})
    assert len(fig.axes) == 2
    assert "mean 18, std 10.1" in fig.axes[0].get_title() and "mean 36," in fig.axes[1].get_title()
    assert len(fig.axes[0].lines) == 2 and not fig.axes[1].lines
    counts = sum(patch.get_height() for patch in fig.axes[0].patches)
    assert counts == volume.size  # stacked: inside and outside together are every voxel
