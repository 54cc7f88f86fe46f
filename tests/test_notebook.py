"""The helpers of a notebook's first cells: profile, seeding, results.json."""

import json

import numpy as np
import pytest
import torch

from nnseg_nb import notebook


def test_resolve_profile(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert notebook.resolve_profile("auto") == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert notebook.resolve_profile("auto") == "full"
    assert notebook.resolve_profile("quick") == "quick"
    with pytest.raises(ValueError, match="'auto', 'quick' or 'full'"):
        notebook.resolve_profile("fast")


@pytest.fixture
def restore_determinism():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_setup_seeds_everything_and_makes_out_dir(tmp_path, restore_determinism):
    device = notebook.setup(seed=3, out_dir=tmp_path / "a" / "b")
    draws = np.random.rand(3), torch.rand(3)
    notebook.setup(seed=3)
    assert np.array_equal(np.random.rand(3), draws[0]) and torch.equal(torch.rand(3), draws[1])
    assert (tmp_path / "a" / "b").is_dir() and device == torch.device("cpu")
    assert torch.are_deterministic_algorithms_enabled()
    assert notebook.device_summary().startswith("device: cpu, torch ")


def test_write_and_read_results(tmp_path):
    assert notebook.read_results(tmp_path) is None
    path = notebook.write_results(tmp_path / "out", {"dice": np.float32(0.5), "shape": np.array([2, 3])})
    assert path == tmp_path / "out" / "results.json"
    assert json.loads(path.read_text()) == {"dice": 0.5, "shape": [2, 3]}
    assert notebook.read_results(tmp_path / "out") == {"dice": 0.5, "shape": [2, 3]}
