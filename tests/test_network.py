"""network.py: the planner's feature-map count against nnU-Net's numbers and real networks."""

import json
from pathlib import Path

import pytest

from nnseg_nb.network import (
    PLAIN_CONV_UNET,
    RESIDUAL_ENCODER_UNET,
    conv_feature_map_size,
    decoder_feature_map_size,
    stage_sizes,
)

FIXTURE = Path(__file__).parent / "fixtures" / "planning" / "feature_map_sizes.json"


def test_resenc_3d_reference_value_from_nnunet_source():
    # residual_encoder_unet_planners.py __main__: ResEnc, 6 stages, 128^3, 3 classes, deep supervision -> 558319104
    kwargs = {
        "n_stages": 6,
        "features_per_stage": (32, 64, 128, 256, 320, 320),
        "kernel_sizes": 3,
        "strides": (1, 2, 2, 2, 2, 2),
        "n_blocks_per_stage": (1, 3, 4, 6, 6, 6),
        "n_conv_per_stage_decoder": (1, 1, 1, 1, 1),
    }
    assert (
        conv_feature_map_size(RESIDUAL_ENCODER_UNET, kwargs, (128, 128, 128), 3, deep_supervision=True)
        == 558_319_104
    )


def test_resenc_2d_reference_value_from_nnunet_source():
    kwargs = {
        "n_stages": 7,
        "features_per_stage": (32, 64, 128, 256, 512, 512, 512),
        "kernel_sizes": 3,
        "strides": (1, 2, 2, 2, 2, 2, 2),
        "n_blocks_per_stage": (1, 3, 4, 6, 6, 6, 6),
        "n_conv_per_stage_decoder": (1, 1, 1, 1, 1, 1),
    }
    assert (
        conv_feature_map_size(RESIDUAL_ENCODER_UNET, kwargs, (512, 512), 3, deep_supervision=True)
        == 129_793_792
    )


def test_plain_unet_hippocampus_estimate():
    # nnunet_v2.md 3.11: the Hippocampus 3d_fullres network at (40, 56, 40) counts 19,174,400 (no deep supervision)
    kwargs = {
        "n_stages": 4,
        "features_per_stage": [32, 64, 128, 256],
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3,
        "n_conv_per_stage": [2] * 4,
        "n_conv_per_stage_decoder": [2] * 3,
    }
    assert conv_feature_map_size(PLAIN_CONV_UNET, kwargs, (40, 56, 40), 3) == 19_174_400
    # by hand: encoder 2*F*voxels per stage; decoder (2 convs + transposed conv) * F * voxels; head 3 * voxels
    sizes = [40 * 56 * 40, 20 * 28 * 20, 10 * 14 * 10, 5 * 7 * 5]
    encoder = sum(2 * f * v for f, v in zip([32, 64, 128, 256], sizes))
    decoder = sum(3 * f * v for f, v in zip([32, 64, 128], sizes[:3])) + 3 * sizes[0]
    assert encoder + decoder == 19_174_400


def test_deep_supervision_adds_a_head_per_decoder_level():
    sizes = [[8, 8], [4, 4], [2, 2]]
    without = decoder_feature_map_size(sizes, [4, 8, 16], [1, 1], num_classes=5)
    with_ds = decoder_feature_map_size(sizes, [4, 8, 16], [1, 1], num_classes=5, deep_supervision=True)
    assert with_ds - without == 5 * 4 * 4


def test_stage_sizes_round_down_like_the_network():
    assert stage_sizes((41, 30), [[1, 1], [2, 2], [2, 1]]) == [[41, 30], [20, 15], [10, 15]]


@pytest.mark.parametrize("index", range(40))
def test_matches_dynamic_network_architectures(index):
    record = json.loads(FIXTURE.read_text())["networks"][index]
    count = conv_feature_map_size(
        record["network_class_name"],
        record["arch_kwargs"],
        record["patch_size"],
        record["num_classes"],
        record["deep_supervision"],
    )
    assert count == record["feature_map_size"]


def test_fixture_covers_both_networks_and_deep_supervision():
    records = json.loads(FIXTURE.read_text())["networks"]
    assert {r["network_class_name"] for r in records} == {PLAIN_CONV_UNET, RESIDUAL_ENCODER_UNET}
    assert {r["deep_supervision"] for r in records} == {True, False}
    assert {len(r["patch_size"]) for r in records} == {2, 3}


def test_unknown_network_and_wrong_lengths_are_errors():
    kwargs = {
        "n_stages": 2,
        "features_per_stage": [8, 16],
        "strides": [1, 2],
        "n_conv_per_stage": [2, 2],
        "n_conv_per_stage_decoder": [2],
    }
    with pytest.raises(ValueError, match="no feature-map count for network 'my.Net'"):
        conv_feature_map_size("my.Net", kwargs, (16, 16), 2)
    with pytest.raises(ValueError, match="features_per_stage has 3 entries, expected 2"):
        conv_feature_map_size(PLAIN_CONV_UNET, {**kwargs, "features_per_stage": [8, 16, 32]}, (16, 16), 2)
