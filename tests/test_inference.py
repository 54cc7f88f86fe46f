"""Sliding window against nnunetv2 2.8.1 (fixtures by tests/fixtures/make_inference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg_nb import devices, inference
from nnseg_nb.network import build_network
from nnseg_nb.plans import ArchitecturePlan

FIXTURES = Path(__file__).parent / "fixtures" / "inference"


@pytest.mark.parametrize("case", json.loads((FIXTURES / "steps.json").read_text()))
def test_steps_equal_nnunet(case):
    steps = inference.compute_steps_for_sliding_window(case["image_size"], case["tile_size"], case["step"])
    assert steps == case["steps"]


def test_gaussian_equals_nnunet():
    with np.load(FIXTURES / "gaussian.npz") as expected:
        for key in expected.files:
            tile = tuple(int(s) for s in key.split("x"))
            ours = inference.gaussian_importance_map(tile).float().numpy()
            np.testing.assert_array_equal(ours, expected[key], err_msg=key)


def test_padding_is_centred_with_the_odd_voxel_high():
    data = torch.arange(6.0).reshape(1, 1, 6)
    padded, back = inference.pad_to_patch_size(data, (3, 9))
    assert padded.shape == (1, 3, 9)
    assert padded[0, 1].tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0] and padded[0, 0].abs().sum() == 0
    padded, back = inference.pad_to_patch_size(torch.ones(1, 4), (7,))
    assert padded[0].tolist() == [0, 1, 1, 1, 1, 0, 0]
    assert torch.equal(padded[back], torch.ones(1, 4))


def _network(dim: int) -> torch.nn.Module:
    arch = ArchitecturePlan.from_json(json.loads((FIXTURES / "architectures.json").read_text())[f"{dim}d"])
    net = build_network(arch, 2, 3, deep_supervision=False)
    net.load_state_dict(torch.load(FIXTURES / f"tiny_unet_{dim}d.pt", weights_only=True))
    return net.eval()


@pytest.mark.parametrize("tiles_per_batch", [1, 3])
def test_sliding_window_logits_equal_nnunet_3d(tiles_per_batch):
    torch.set_num_threads(1)
    with np.load(FIXTURES / "logits.npz") as f:
        data, expected = f["data_3d"], f["logits_3d"]
    ours = inference.sliding_window_logits(
        _network(3),
        data,
        (8, 12, 8),
        3,
        mirror_axes=(0, 1, 2),
        tiles_per_batch=tiles_per_batch,
        precision="fp32",
    )
    assert ours.dtype == torch.float16 and ours.shape == expected.shape
    # fp16 accumulators: batched convolutions may differ in the last fp32 bit, which can flip one fp16 rounding
    np.testing.assert_allclose(ours.float().numpy(), expected, atol=2e-3, rtol=0)
    if tiles_per_batch == 1:
        assert np.mean(ours.float().numpy() == expected) > 0.99


def test_sliding_window_logits_equal_nnunet_2d_on_a_volume():
    torch.set_num_threads(1)
    with np.load(FIXTURES / "logits.npz") as f:
        data, expected = f["data_2d"], f["logits_2d"]
    ours = inference.sliding_window_logits(
        _network(2), data, (12, 8), 3, mirror_axes=(0, 1), tiles_per_batch=4, precision="fp32"
    )
    np.testing.assert_allclose(ours.float().numpy(), expected, atol=2e-3, rtol=0)


def test_mirroring_makes_a_flip_equivariant_prediction():
    torch.set_num_threads(1)
    net = _network(3)
    data = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 8, 12, 8)).astype(np.float32))
    plain = inference.predict_tiles_with_mirroring(net, data[None], (0, 1, 2))
    flipped = inference.predict_tiles_with_mirroring(net, torch.flip(data[None], (2, 4)), (0, 1, 2))
    torch.testing.assert_close(torch.flip(flipped, (2, 4)), plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(data[None]), plain, atol=1e-3)  # without mirroring it is not


def test_mirror_combinations_are_all_non_empty_subsets():
    assert inference.mirror_axes_combinations((0, 1, 2)) == [
        (2,),
        (3,),
        (4,),
        (2, 3),
        (2, 4),
        (3, 4),
        (2, 3, 4),
    ]
    assert inference.mirror_axes_combinations(None) == []


def test_bf16_detection_reads_cpu_flags(tmp_path, monkeypatch):
    (tmp_path / "avx2").write_text("processor: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    (tmp_path / "bf16").write_text("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not devices.cpu_runs_bf16_natively(tmp_path / "avx2")
    assert devices.cpu_runs_bf16_natively(tmp_path / "bf16")
    assert not devices.cpu_runs_bf16_natively(tmp_path / "missing")
    # torch's kernels limited to AVX2 (ATEN_CPU_CAPABILITY=avx2): bf16 would be emulated
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not devices.cpu_runs_bf16_natively(tmp_path / "bf16")
    assert inference.autocast_dtype(torch.device("cpu"), "fp32") is None
    assert inference.autocast_dtype(torch.device("cuda"), "auto") is torch.float16


def test_accumulators_fall_back_to_cpu_memory_when_the_device_is_full(monkeypatch):
    calls = []

    def accumulate(network, data, slicers, patch, heads, *rest):
        results_device = rest[3]  # after mirror_axes, tiles_per_batch, device
        calls.append(results_device.type)
        if results_device.type != "cpu":
            raise torch.OutOfMemoryError("full")
        return torch.ones((heads, *data.shape[1:]), dtype=torch.half)

    monkeypatch.setattr(inference, "_accumulate", accumulate)
    with pytest.warns(UserWarning, match="accumulating in CPU memory"):
        logits = inference.sliding_window_logits(None, torch.zeros(1, 4, 8, 8), (4, 8, 8), 2, device="meta")
    assert calls == ["meta", "cpu"] and logits.shape == (2, 4, 8, 8)

    def full(*args):
        raise torch.OutOfMemoryError("full")

    monkeypatch.setattr(inference, "_accumulate", full)
    with pytest.raises(torch.OutOfMemoryError):  # on the CPU there is nowhere to fall back to
        inference.sliding_window_logits(None, torch.zeros(1, 4, 8, 8), (4, 8, 8), 2, device="cpu")
