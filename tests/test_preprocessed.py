"""``nnseg_nb.preprocessed``: our case files (small plain JSON, class locations in their own .npz, the
up-to-date stamp read with json.load) and the same reading functions for nnU-Net's folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnseg_nb import preprocessed
from nnseg_nb.preprocessing import sample_class_locations


def write_example(folder, key="abc"):
    seg = np.zeros((1, 6, 7, 8), np.int16)
    seg[0, 2:4, 3:5, 4:6] = 1
    seg[0, 5, 6, 7] = 2
    data = np.random.default_rng(0).random((2, 6, 7, 8)).astype(np.float32)
    locations = sample_class_locations(seg, [1, 2, (1, 2), 3])
    properties = {
        "spacing": np.array([3.0, 1.0, 1.0]),
        "shape_before_cropping": (6, 7, 8),
        "class_locations": locations,
    }
    preprocessed.save_case(folder, "c1", data, seg, properties, preprocessing_key=key)
    return data, seg, locations


def test_round_trip_with_class_locations_in_their_own_file(tmp_path):
    data, seg, locations = write_example(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c1.json",
        "c1.npy",
        "c1_class_locations.npz",
        "c1_seg.npy",
    ]
    with open(tmp_path / "c1.json") as f:
        stored = json.load(f)  # plain JSON, no class locations in it
    assert stored == {
        "preprocessing_key": "abc",
        "spacing": [3.0, 1.0, 1.0],
        "shape_before_cropping": [6, 7, 8],
    }
    assert preprocessed.list_cases(tmp_path) == ["c1"]
    (tmp_path / "c1.pkl").write_bytes(b"")  # nnU-Net preprocessed into the same folder: still one case
    assert preprocessed.list_cases(tmp_path) == ["c1"]
    (tmp_path / "c1.pkl").unlink()
    loaded, loaded_seg, properties = preprocessed.load_case(tmp_path, "c1")
    assert isinstance(loaded, np.memmap) and loaded_seg.dtype == np.int16
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_array_equal(loaded_seg, seg)
    assert "preprocessing_key" not in properties and properties["spacing"] == [3.0, 1.0, 1.0]
    for found in (properties["class_locations"], preprocessed.read_class_locations(tmp_path, "c1")):
        assert list(found) == [1, 2, (1, 2), 3]
        for key, value in locations.items():
            assert found[key].dtype == np.int64 and found[key].shape == (len(value), 4)
            np.testing.assert_array_equal(found[key], np.asarray(value).reshape(-1, 4))
    arrays = preprocessed.open_case(tmp_path, "c1")
    assert arrays.data.shape == (2, 6, 7, 8) and arrays.previous_seg is None


def test_up_to_date_reads_the_key_whatever_the_layout(tmp_path):
    write_example(tmp_path, key="abc")
    assert preprocessed.is_up_to_date(tmp_path, "c1", "abc")
    assert not preprocessed.is_up_to_date(tmp_path, "c1", "abd")
    stored = json.loads((tmp_path / "c1.json").read_text())
    (tmp_path / "c1.json").write_text(json.dumps(dict(reversed(stored.items()))))  # key last, one line
    assert preprocessed.is_up_to_date(tmp_path, "c1", "abc")
    (tmp_path / "c1.json").write_text('{"preprocessing_key": "abc", ')  # damaged: redo it
    assert not preprocessed.is_up_to_date(tmp_path, "c1", "abc")
    write_example(tmp_path, key="abc")
    (tmp_path / "c1_class_locations.npz").unlink()  # a missing file: redo it
    assert not preprocessed.is_up_to_date(tmp_path, "c1", "abc")


def test_class_locations_written_into_the_json_are_still_read(tmp_path):
    write_example(tmp_path)
    (tmp_path / "c1_class_locations.npz").unlink()
    stored = json.loads((tmp_path / "c1.json").read_text())
    stored["class_locations"] = {"1": [[0, 1, 2, 3]], "(1, 2)": []}
    (tmp_path / "c1.json").write_text(json.dumps(stored))
    found = preprocessed.read_class_locations(tmp_path, "c1")
    assert list(found) == [1, (1, 2)] and found[(1, 2)].shape == (0, 4)


def test_missing_case_and_missing_class_locations_are_named(tmp_path):
    write_example(tmp_path)
    with pytest.raises(FileNotFoundError, match="no preprocessed case 'c2'"):
        preprocessed.open_case(tmp_path, "c2")
    preprocessed.save_case(
        tmp_path, "c3", np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)), {"spacing": [1, 1, 1]}
    )
    with pytest.raises(ValueError, match="c3.json: no 'class_locations'"):
        preprocessed.read_class_locations(tmp_path, "c3")
