"""unet.py and network.build_network against dynamic-network-architectures (tests/fixtures/make_network.py).

The fixtures hold nnU-Net's own networks: their state dicts (tiny ones in full, the demo brain's as
keys and shapes), outputs for a seeded input, and the statistics of their initial weights.
"""

import gzip
import io
import json
import math
from importlib import resources
from pathlib import Path

import pytest
import torch

from nnseg_nb.network import (
    PLAIN_CONV_UNET,
    build_network,
    deep_supervision_scales,
    network_channels,
    per_stage_per_axis,
)
from nnseg_nb.plans import ArchitecturePlan, ConfigurationPlan, load_plans
from nnseg_nb.unet import BasicBlockD, init_weights

FIXTURES = Path(__file__).parent / "fixtures" / "network"
TINY = json.loads((FIXTURES / "tiny.json").read_text())["cases"]
DEMO = json.loads((FIXTURES / "demo_brain.json").read_text())
LEAKY_SLOPE = 1e-2  # InitWeights_He(1e-2)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_network(name: str, deep_supervision: bool = True) -> torch.nn.Module:
    case = TINY[name]
    architecture = ArchitecturePlan.from_json(case["architecture"])
    return build_network(
        architecture, case["input_shape"][1], case["num_classes"], deep_supervision, seeded()
    )


def nnunet_tiny(name: str) -> dict:
    """What nnU-Net saved: its initialized state dict (as in a checkpoint), an input and its outputs."""
    data = gzip.decompress((FIXTURES / f"tiny_{name}.pt.gz").read_bytes())
    return torch.load(io.BytesIO(data), weights_only=True)


def keys_and_shapes(network: torch.nn.Module) -> list[list]:
    return [[key, list(value.shape)] for key, value in network.state_dict().items()]


@pytest.mark.parametrize("name", sorted(TINY))
def test_state_dict_keys_and_shapes_equal_nnunets(name):
    network = tiny_network(name)
    nnunet = nnunet_tiny(name)["state_dict"]
    assert keys_and_shapes(network) == [[key, list(value.shape)] for key, value in nnunet.items()]
    assert sum(p.numel() for p in network.parameters()) == TINY[name]["num_parameters"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_nnunet_weights_load_strictly_and_give_nnunets_outputs(name):
    nnunet = nnunet_tiny(name)
    network = tiny_network(name, deep_supervision=True).eval()
    network.load_state_dict(nnunet["state_dict"], strict=True)
    with torch.no_grad():
        outputs = network(nnunet["input"])
        network.decoder.deep_supervision = False  # as nnU-Net's inference sets it
        output = network(nnunet["input"])
    assert isinstance(outputs, list) and len(outputs) == len(nnunet["outputs"]) == len(network.decoder.stages)
    for ours, theirs in zip(outputs, nnunet["outputs"]):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert isinstance(output, torch.Tensor)
    torch.testing.assert_close(output, nnunet["output"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_our_state_dict_loads_into_a_fresh_network_and_round_trips(name):
    ours, other = (
        tiny_network(name),
        build_network(
            ArchitecturePlan.from_json(TINY[name]["architecture"]),
            TINY[name]["input_shape"][1],
            TINY[name]["num_classes"],
            generator=seeded(1),
        ),
    )
    assert not torch.equal(ours.decoder.seg_layers[0].weight, other.decoder.seg_layers[0].weight)
    other.load_state_dict(ours.state_dict(), strict=True)
    for (key, a), b in zip(ours.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), key


def test_deep_supervision_outputs_follow_the_scales_highest_resolution_first():
    case = TINY["plain_3d"]
    network = tiny_network("plain_3d")
    x = torch.randn(case["input_shape"], generator=seeded(2))
    strides = per_stage_per_axis(case["architecture"]["arch_kwargs"]["strides"], 3, 3, "strides")
    outputs = network(x)
    expected = [
        [int(n * s) for n, s in zip(x.shape[2:], scale)] for scale in deep_supervision_scales(strides)
    ]
    assert [list(o.shape[2:]) for o in outputs] == expected  # [[4, 8, 8], [4, 4, 4]]
    assert all(o.shape[:2] == (2, 3) for o in outputs)


def test_every_parameter_gets_a_gradient_with_deep_supervision():
    network = tiny_network("resenc_3d")
    x = torch.randn(TINY["resenc_3d"]["input_shape"], generator=seeded(3))
    sum(o.square().mean() for o in network(x)).backward()
    missing = [name for name, p in network.named_parameters() if p.grad is None]
    assert missing == []


def test_same_generator_same_weights():
    a, b = tiny_network("resenc_2d_dropout"), tiny_network("resenc_2d_dropout")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


# --- the demo brain's plans (planned by nnunetv2) ---------------------------------------------------


def demo_brain_architecture(name: str) -> ArchitecturePlan:
    if name == "3d_fullres_resenc":  # not in the plans: the fixture script derived it from 3d_fullres
        return ArchitecturePlan.from_json(DEMO["networks"][name]["architecture"])
    asset = resources.files("nnseg_nb") / "demo_assets" / "nnUNetPlans_Dataset901_by_nnunetv2.json"
    with resources.as_file(asset) as path:
        return load_plans(path).configuration(name).architecture


@pytest.fixture(scope="module")
def demo_networks() -> dict[str, torch.nn.Module]:
    return {
        name: build_network(
            demo_brain_architecture(name), DEMO["input_channels"], DEMO["num_classes"], True, seeded()
        )
        for name in DEMO["networks"]
    }


@pytest.mark.parametrize("name", ["3d_fullres", "2d", "3d_fullres_resenc"])
def test_demo_brain_networks_equal_nnunets_in_parameters_and_keys(name, demo_networks):
    network, nnunet = demo_networks[name], DEMO["networks"][name]
    assert sum(p.numel() for p in network.parameters()) == nnunet["num_parameters"]  # 16548076 for 3d_fullres
    assert keys_and_shapes(network) == nnunet["state_dict"]


def he_std(weight: torch.Tensor) -> float:
    """kaiming_normal_(a=0.01), fan_in mode: torch takes fan_in from dim 1 (also for transposed convs)."""
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    return math.sqrt(2 / (1 + LEAKY_SLOPE**2) / fan_in)


@pytest.mark.parametrize("name", ["3d_fullres", "3d_fullres_resenc"])
def test_init_draws_from_nnunets_distributions(name, demo_networks):
    """Not nnU-Net's random numbers, but its distributions: He-normal convs, zero biases, norms 1/0."""
    network, nnunet_init = demo_networks[name], DEMO["networks"][name]["init"]
    ours = dict(network.named_parameters())
    assert list(ours) == list(nnunet_init)
    for key, (numel, mean, std) in nnunet_init.items():
        values = ours[key].detach()
        assert values.numel() == numel
        if std == 0:  # biases 0, norm weights 1 (0 for the last norm of a residual block)
            assert torch.all(values == mean), key
            continue
        expected = he_std(values)
        sampling = 6 / math.sqrt(numel)  # six standard errors of a sample std (relative), and of a mean
        assert abs(std / expected - 1) < sampling, f"{key}: nnU-Net's std {std} vs He {expected}"
        assert abs(values.std().item() / expected - 1) < sampling, key
        assert abs(values.mean().item()) < sampling * expected, key


def test_residual_blocks_start_as_their_skip_path(demo_networks):
    blocks = [m for m in demo_networks["3d_fullres_resenc"].modules() if isinstance(m, BasicBlockD)]
    assert len(blocks) == 1 + 3 + 4 + 6 + 6
    assert all(not b.conv2.norm.weight.any() and not b.conv2.norm.bias.any() for b in blocks)
    assert all(torch.all(b.conv1.norm.weight == 1) for b in blocks)


def test_init_weights_leaves_norms_without_affine_alone():
    architecture = ArchitecturePlan.from_json(TINY["resenc_3d"]["architecture"])
    architecture.arch_kwargs["norm_op_kwargs"] = {"eps": 1e-5, "affine": False}
    network = build_network(architecture, 2, 3, generator=seeded())
    init_weights(network)
    assert network.encoder.stages[0].blocks[0].conv2.norm.weight is None


# --- errors and channels -------------------------------------------------------------------------------


def test_unknown_network_class_layer_or_argument_is_named():
    architecture = ArchitecturePlan.from_json(TINY["plain_2d"]["architecture"])
    with pytest.raises(ValueError, match="no network class 'my.UNet'"):
        build_network(
            ArchitecturePlan("my.UNet", architecture.arch_kwargs, architecture.kw_requires_import), 1, 2
        )
    bad_layer = {**architecture.arch_kwargs, "nonlin": "my.layers.Swish"}
    with pytest.raises(ValueError, match="nonlin 'my.layers.Swish' is not a layer"):
        build_network(ArchitecturePlan(PLAIN_CONV_UNET, bad_layer, architecture.kw_requires_import), 1, 2)
    extra = {**architecture.arch_kwargs, "block": None}
    with pytest.raises(ValueError, match=r"PlainConvUNet does not take arch_kwargs \['block'\]"):
        build_network(ArchitecturePlan(PLAIN_CONV_UNET, extra, architecture.kw_requires_import), 1, 2)
    wrong_length = {**architecture.arch_kwargs, "features_per_stage": [4, 8]}
    with pytest.raises(ValueError, match="features_per_stage has 2 entries, expected 3"):
        build_network(ArchitecturePlan(PLAIN_CONV_UNET, wrong_length, architecture.kw_requires_import), 1, 2)


def test_network_channels_regions_ignore_label_and_cascade():
    regions = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3, "ignore": 4},
        "regions_class_order": [1, 2, 3],
    }
    assert network_channels(ConfigurationPlan(), regions) == (2, 3)  # one sigmoid per region
    assert network_channels(ConfigurationPlan(previous_stage="3d_lowres"), regions) == (5, 3)
    v1 = {"modality": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "ignore": 2}}
    assert network_channels(ConfigurationPlan(), v1) == (1, 2)  # the ignore label gets no output


def test_nonlin_first_swaps_norm_and_nonlin_but_not_the_names():
    architecture = ArchitecturePlan.from_json(TINY["plain_2d"]["architecture"])
    architecture.arch_kwargs["nonlin_first"] = True
    layer = build_network(architecture, 1, 3, generator=seeded()).encoder.stages[0][0].convs[0]
    assert [type(m).__name__ for m in layer.all_modules] == ["Conv2d", "LeakyReLU", "InstanceNorm2d"]
    assert list(layer.state_dict()) == [
        "conv.weight", "conv.bias", "norm.weight", "norm.bias",
        "all_modules.0.weight", "all_modules.0.bias", "all_modules.2.weight", "all_modules.2.bias",
    ]  # fmt: skip
