"""Pictures of prediction: the drawn tiles and weights are the sliding window's, the error map is right."""

from __future__ import annotations

import numpy as np
import pytest

from nnseg_nb import inference
from nnseg_nb.viz import inference as viz


def test_tile_boxes_are_the_sliding_window_tiles():
    boxes = viz.tile_boxes((20, 40, 30), (8, 24, 24))
    slicers = inference.sliding_window_slicers((20, 40, 30), (8, 24, 24), 0.5)
    assert [[(s.start, s.stop) for s in slicer[1:]] for slicer in slicers] == boxes


def test_weight_sum_is_the_gaussian_where_tiles_do_not_overlap():
    weights = viz.weight_sum((8, 24, 24), (8, 24, 24))
    np.testing.assert_array_equal(weights, inference.gaussian_importance_map((8, 24, 24)).float().numpy())
    overlapping = viz.weight_sum((8, 36, 24), (8, 24, 24))  # tiles start at y = 0 and 12
    assert overlapping[4, 18, 12] == pytest.approx(weights[4, 18, 12] + weights[4, 6, 12])


def test_error_map_marks_missed_extra_and_wrong_labels_and_skips_ignore():
    reference = np.array([0, 1, 1, 2, 0, 3, 3])
    prediction = np.array([0, 0, 1, 1, 2, 0, 1])
    assert viz.error_map(reference, prediction).tolist() == [0, 1, 0, 3, 2, 1, 3]
    assert viz.error_map(reference, prediction, ignore_label=3).tolist() == [0, 1, 0, 3, 2, 0, 0]
    with pytest.raises(ValueError, match="shape"):
        viz.error_map(reference, prediction[:3])


def test_figures_draw():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(10, 30, 28)).astype(np.float32)
    fig = viz.sliding_window_figure(volume, (8, 24, 24))
    assert len(fig.axes[0].patches) == 4  # 2 x 2 tiles in-plane through the middle slice
    logits = rng.normal(size=(3, 10, 30, 28)).astype(np.float32)
    fig = viz.mirroring_figure(volume, logits, logits + rng.normal(scale=0.3, size=logits.shape))
    assert any("label changed" in ax.get_title() for ax in fig.axes)
    seg = (volume > 0.5).astype(int)
    fig = viz.errors_figure(volume, seg, np.roll(seg, 1, axis=2), spacing=(3, 1, 1), n=2)
    assert "missed (FN)" in fig._suptitle.get_text()
