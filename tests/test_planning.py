"""planning.py: plans equal to nnunetv2 2.8.1's planners, the plans file, and the worked examples."""

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nnseg_nb import planning
from nnseg_nb.network import PLAIN_CONV_UNET, RESIDUAL_ENCODER_UNET
from nnseg_nb.planning import (
    DEFAULT,
    PRESETS,
    RESENC_L,
    RESENC_M,
    RESENC_XL,
    Plans,
    batch_size_for,
    explain,
    format_explanation,
    load_plans,
    plan,
    save_plans,
)

FIXTURES = Path(__file__).parent / "fixtures" / "planning"
CASES = sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "feature_map_sizes")
SETTINGS_BY_PLANNER = {
    "ExperimentPlanner": DEFAULT,
    "nnUNetPlannerResEncM": RESENC_M,
    "nnUNetPlannerResEncL": RESENC_L,
    "nnUNetPlannerResEncXL": RESENC_XL,
}
RUNS = [
    (case, i)
    for case in CASES
    for i in range(len(json.loads((FIXTURES / f"{case}.json").read_text())["runs"]))
]


def load_case(case: str) -> dict:
    return json.loads((FIXTURES / f"{case}.json").read_text())


def settings_for(run: dict) -> planning.PlannerSettings:
    """Our settings for one of the fixture's planner runs (class name + nnU-Net constructor kwargs)."""
    kwargs, changes = run["kwargs"], {}
    if "gpu_memory_target_in_gb" in kwargs:
        changes["gpu_memory_target_gb"] = float(kwargs["gpu_memory_target_in_gb"])
    if "overwrite_target_spacing" in kwargs:
        changes["overwrite_target_spacing"] = tuple(kwargs["overwrite_target_spacing"])
    for key in ("plans_name", "suppress_transpose"):
        if key in kwargs:
            changes[key] = kwargs[key]
    return dataclasses.replace(SETTINGS_BY_PLANNER[run["planner"]], **changes)


def differences(ours, theirs, path="plans") -> list[str]:
    """Every place two JSON values differ: keys and their order, lengths, types (int vs float) and values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if list(ours) != list(theirs):
            return [f"{path}: keys {list(ours)} != {list(theirs)}"]
        return [d for key in ours for d in differences(ours[key], theirs[key], f"{path}.{key}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path}: {ours} != {theirs}"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in differences(a, b, f"{path}[{i}]")]
    if type(ours) is not type(theirs):
        return [f"{path}: {ours!r} ({type(ours).__name__}) != {theirs!r} ({type(theirs).__name__})"]
    if isinstance(ours, float):
        # Same arithmetic as nnU-Net, so equal in practice; the tolerance only absorbs a last-bit
        # difference another numpy version's percentile might make.
        return (
            []
            if math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=0)
            else [f"{path}: {ours!r} != {theirs!r}"]
        )
    return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]


def hippocampus_inputs(n=260, shape=(36, 50, 35)):
    fingerprint = {
        "spacings": [[1.0, 1.0, 1.0]] * n,
        "shapes_after_crop": [list(shape)] * n,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {"mean": 1.0}},
    }
    dataset_json = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    return fingerprint, dataset_json


# --- parity with nnunetv2 ----------------------------------------------------------------------------


@pytest.mark.parametrize("case,run_index", RUNS)
def test_plans_equal_nnunet(case, run_index):
    data = load_case(case)
    run = data["runs"][run_index]
    ours = plan(
        data["fingerprint"], data["dataset_json"], settings_for(run), dataset_name=data["dataset_name"]
    )
    assert differences(ours.to_json(), run["plans"]) == []


def test_fixtures_cover_the_planner():
    runs = [(load_case(case), run) for case in CASES for run in load_case(case)["runs"]]
    assert len(CASES) >= 10 and {run["planner"] for _, run in runs} == set(SETTINGS_BY_PLANNER)
    configurations = [set(run["plans"]["configurations"]) for _, run in runs]
    assert {"2d"} in configurations and {"2d", "3d_fullres"} in configurations
    assert {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"} in configurations
    assert {tuple(run["plans"]["transpose_forward"]) for _, run in runs} >= {(0, 1, 2), (2, 0, 1)}
    assert {run["plans"]["image_reader_writer"] for _, run in runs} >= {
        "SimpleITKIO",
        "NibabelIO",
        "NaturalImage2DIO",
    }
    assert any("gpu_memory_target_in_gb" in run["kwargs"] for _, run in runs)
    assert any("ignore" in data["dataset_json"]["labels"] for data, _ in runs)
    assert all(data["versions"]["nnunetv2"].startswith("2.8.") for data, _ in runs)


@pytest.mark.parametrize("case", CASES)
def test_nnunet_plans_round_trip(case, tmp_path):
    for run in load_case(case)["runs"]:
        plans = Plans.from_json(run["plans"])
        assert differences(plans.to_json(), run["plans"]) == []
        save_plans(plans, tmp_path / "plans.json")
        # byte for byte what nnU-Net's save_json(sort_keys=False) writes
        assert (tmp_path / "plans.json").read_text() == json.dumps(run["plans"], indent=4)
        assert load_plans(tmp_path / "plans.json") == plans


def test_our_plans_file_is_nnunets_file(tmp_path):
    data = load_case("liver_ct")
    run = data["runs"][0]
    save_plans(
        plan(data["fingerprint"], data["dataset_json"], dataset_name=data["dataset_name"]),
        tmp_path / "p.json",
    )
    assert (tmp_path / "p.json").read_text() == json.dumps(run["plans"], indent=4)


def test_plan_does_not_change_its_inputs():
    data = load_case("liver_ct")
    before = copy.deepcopy(data)
    plans = plan(data["fingerprint"], data["dataset_json"], RESENC_L, dataset_name=data["dataset_name"])
    plans.foreground_intensity_properties_per_channel["0"]["mean"] = -1
    assert data == before


# --- the plans file: accessors, inheritance, unknown keys ---------------------------------------------


def liver_plans() -> Plans:
    return Plans.from_json(load_case("liver_ct")["runs"][0]["plans"])


def test_typed_accessors():
    plans = liver_plans()
    fullres, lowres = plans.configuration("3d_fullres"), plans.configuration("3d_lowres")
    assert plans.transpose_forward == [0, 1, 2] and plans.configuration_names == [
        "2d",
        "3d_lowres",
        "3d_fullres",
        "3d_cascade_fullres",
    ]
    assert fullres.data_identifier == "nnUNetPlans_3d_fullres" and fullres.dimension == 3
    assert fullres.normalization_schemes == ["CTNormalization"] and fullres.use_mask_for_norm == [False]
    assert fullres.resampling_fn_data_kwargs == {
        "is_seg": False,
        "order": 3,
        "order_z": 0,
        "force_separate_z": None,
    }
    assert fullres.batch_dice is True and lowres.batch_dice is False
    assert lowres.next_stage_names == ["3d_cascade_fullres"] and fullres.next_stage_names == []
    arch = fullres.architecture
    assert arch.network_class_name == PLAIN_CONV_UNET and arch.n_stages == len(arch.strides) == len(
        arch.kernel_sizes
    )
    assert arch.blocks_per_stage == [2] * arch.n_stages and arch.n_conv_per_stage_decoder == [2] * (
        arch.n_stages - 1
    )
    assert arch.features_per_stage[:4] == [32, 64, 128, 256] and arch.kw_requires_import == [
        "conv_op",
        "norm_op",
        "dropout_op",
        "nonlin",
    ]


def test_resenc_architecture_and_shared_data_identifiers():
    data = load_case("liver_ct")
    plans = plan(data["fingerprint"], data["dataset_json"], RESENC_L, dataset_name=data["dataset_name"])
    fullres = plans.configuration("3d_fullres")
    assert fullres.architecture.network_class_name == RESIDUAL_ENCODER_UNET
    assert fullres.architecture.blocks_per_stage == [1, 3, 4, 6, 6, 6][: fullres.architecture.n_stages]
    assert [plans.configurations[c].data_identifier for c in ("2d", "3d_fullres", "3d_lowres")] == [
        "nnUNetPlans_2d",
        "nnUNetPlans_3d_fullres",
        "nnUNetResEncUNetLPlans_3d_lowres",
    ]
    assert plans.experiment_planner_used == "nnUNetPlannerResEncL"


def test_cascade_inherits_fullres():
    plans = liver_plans()
    cascade = plans.configuration("3d_cascade_fullres")
    fullres = plans.configuration("3d_fullres").to_json()
    assert cascade.previous_stage == "3d_lowres" and cascade.inherits_from == "3d_fullres"
    assert {
        k: v for k, v in cascade.to_json().items() if k not in ("inherits_from", "previous_stage")
    } == fullres
    assert plans.configurations["3d_cascade_fullres"].to_json() == {
        "inherits_from": "3d_fullres",
        "previous_stage": "3d_lowres",
    }


def test_custom_configurations_and_unknown_keys_survive():
    raw = load_case("liver_ct")["runs"][0]["plans"]
    raw = copy.deepcopy(raw) | {"my_top_level_note": {"a": [1, 2]}}
    raw["configurations"]["3d_fullres"]["architecture"]["my_arch_note"] = 1
    raw["configurations"]["3d_fullres_bs4"] = {"inherits_from": "3d_fullres", "batch_size": 4, "my_key": "x"}
    raw["configurations"]["3d_fullres_bs4_big"] = {
        "inherits_from": "3d_fullres_bs4",
        "patch_size": [160, 160, 160],
    }
    plans = Plans.from_json(raw)
    assert plans.to_json() == raw
    deepest = plans.configuration("3d_fullres_bs4_big")
    assert (
        deepest.batch_size == 4 and deepest.patch_size == [160, 160, 160] and deepest.extra == {"my_key": "x"}
    )
    assert deepest.spacing == raw["configurations"]["3d_fullres"]["spacing"]
    assert plans.inheritance_chain("3d_fullres_bs4_big") == [
        "3d_fullres_bs4_big",
        "3d_fullres_bs4",
        "3d_fullres",
    ]


def test_replanning_keeps_custom_configurations():
    old = Plans.from_json(load_case("liver_ct")["runs"][0]["plans"])
    old.configurations["3d_fullres_bs4"] = planning.ConfigurationPlan(
        inherits_from="3d_fullres", batch_size=4
    )
    old.configurations["2d"].batch_size = 99
    data = load_case("liver_ct")
    new = plan(data["fingerprint"], data["dataset_json"], dataset_name=data["dataset_name"])
    merged = planning.keep_custom_configurations(new, old)
    assert list(merged.configurations) == list(new.configurations) + ["3d_fullres_bs4"]
    assert merged.configurations["2d"].batch_size == new.configurations["2d"].batch_size != 99


def test_inheritance_cycles_and_missing_configurations_are_errors():
    plans = liver_plans()
    plans.configurations["a"] = planning.ConfigurationPlan(inherits_from="b")
    plans.configurations["b"] = planning.ConfigurationPlan(inherits_from="a")
    plans.configurations["self"] = planning.ConfigurationPlan(inherits_from="self")
    plans.configurations["orphan"] = planning.ConfigurationPlan(inherits_from="3d_highres")
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        plans.configuration("a")
    with pytest.raises(ValueError, match="cycle: self -> self"):
        plans.configuration("self")
    with pytest.raises(ValueError, match=r"'3d_highres' \(inherits_from of 'orphan'\) is not in the plans"):
        plans.configuration("orphan")
    with pytest.raises(ValueError, match="'3d' is not in the plans; available: 2d, 3d_lowres, 3d_fullres"):
        plans.configuration("3d")
    plans.configurations["empty"] = planning.ConfigurationPlan(batch_size=2)
    with pytest.raises(ValueError, match="'empty' has no data_identifier, patch_size"):
        plans.configuration("empty")


def test_load_plans_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nnUNetPlans.json: no plans file"):
        load_plans(tmp_path / "nnUNetPlans.json")
    (tmp_path / "x.json").write_text('{"configurations": {}}')
    with pytest.raises(ValueError, match=r"x.json: not nnU-Net plans: no plans_name, transpose_forward"):
        load_plans(tmp_path / "x.json")


# --- the worked examples of nnunet_v2.md 3.11 --------------------------------------------------------


def test_hippocampus_worked_example():
    fingerprint, dataset_json = hippocampus_inputs()
    plans = plan(fingerprint, dataset_json, dataset_name="Dataset004_Hippocampus")
    assert plans.configuration_names == ["2d", "3d_fullres"] and plans.transpose_forward == [0, 1, 2]
    fullres, two_d = plans.configuration("3d_fullres"), plans.configuration("2d")
    assert (
        fullres.spacing == [1.0, 1.0, 1.0] and fullres.patch_size == [40, 56, 40] and fullres.batch_size == 9
    )
    assert fullres.architecture.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert fullres.architecture.kernel_sizes == [[3, 3, 3]] * 4
    assert fullres.architecture.features_per_stage == [32, 64, 128, 256] and fullres.batch_dice is False
    assert two_d.patch_size == [56, 40] and two_d.batch_size == 366 and two_d.batch_dice is True
    assert two_d.architecture.features_per_stage == [32, 64, 128, 256]
    assert (
        fullres.normalization_schemes == ["ZScoreNormalization"]
        and plans.image_reader_writer == "SimpleITKIO"
    )


@pytest.mark.parametrize("settings,batch_size", [(RESENC_M, 58), (RESENC_L, 178), (RESENC_XL, 183)])
def test_hippocampus_resenc_batch_sizes(settings, batch_size):
    fullres = plan(*hippocampus_inputs(), settings).configuration("3d_fullres")
    assert fullres.patch_size == [40, 56, 40] and fullres.batch_size == batch_size


def test_liver_like_ct_worked_example():
    fingerprint = {
        "spacings": [[1.0, 0.768, 0.768]] * 131,
        "shapes_after_crop": [[432, 512, 512]] * 131,
        "median_relative_size_after_cropping": 1.0,
    }
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": 131,
        "file_ending": ".nii.gz",
    }
    trace = []
    plans = plan(fingerprint, dataset_json, trace=trace)
    fullres, lowres, two_d = (plans.configuration(c) for c in ("3d_fullres", "3d_lowres", "2d"))
    assert fullres.patch_size == [128, 128, 128] and fullres.batch_size == 2 and fullres.batch_dice is True
    assert fullres.architecture.features_per_stage == [32, 64, 128, 256, 320, 320]
    shrunk = [r.values["patch_size"] for r in trace if r.step == "shrink" and r.configuration == "3d_fullres"]
    assert shrunk[:3] == [[224, 320, 256], [224, 256, 256], [192, 256, 256]] and shrunk[-1] == [128, 128, 128]
    assert np.allclose(lowres.spacing, [2.427, 1.864, 1.864], atol=1e-3)
    assert lowres.median_image_size_in_voxels == [178, 211, 211] and lowres.patch_size == [128, 128, 128]
    assert lowres.batch_size == 2 and lowres.next_stage == "3d_cascade_fullres"
    assert sum(r.step == "3d_lowres" and r.message.startswith("try") for r in trace) == 30
    assert two_d.patch_size == [512, 512] and two_d.architecture.n_stages == 8 and two_d.batch_size == 12


def test_prostate_like_anisotropic_worked_example():
    z = [3.0] * 4 + [3.6] * 20 + [4.0] * 8
    fingerprint = {
        "spacings": [[s, 0.625, 0.625] for s in z],
        "shapes_after_crop": [[20, 320, 320]] * 32,
        "median_relative_size_after_cropping": 1.0,
    }
    dataset_json = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "PZ": 1, "TZ": 2},
        "numTraining": 32,
        "file_ending": ".nii.gz",
    }
    plans = plan(fingerprint, dataset_json)
    fullres, two_d = plans.configuration("3d_fullres"), plans.configuration("2d")
    assert fullres.spacing[0] == pytest.approx(3.06) and fullres.median_image_size_in_voxels == [
        24.0,
        320.0,
        320.0,
    ]
    assert (
        fullres.patch_size == [24, 256, 256]
        and fullres.architecture.n_stages == 7
        and fullres.batch_size == 2
    )
    assert fullres.architecture.strides == [
        [1, 1, 1],
        [1, 2, 2],
        [1, 2, 2],
        [2, 2, 2],
        [2, 2, 2],
        [1, 2, 2],
        [1, 2, 2],
    ]
    assert fullres.architecture.kernel_sizes == [[1, 3, 3], [1, 3, 3]] + [[3, 3, 3]] * 5
    assert two_d.patch_size == [320, 320] and two_d.architecture.n_stages == 7 and two_d.batch_size == 32


# --- explain() -----------------------------------------------------------------------------------------


def test_explain_is_plans_own_trace():
    data = load_case("liver_ct")
    trace = []
    plan(data["fingerprint"], data["dataset_json"], RESENC_L, trace=trace)
    assert explain(data["fingerprint"], data["dataset_json"], RESENC_L) == trace


def test_explain_hippocampus_batch_reason():
    records = explain(*hippocampus_inputs())
    fullres = [r for r in records if r.configuration == "3d_fullres" and r.step == "batch_size"][0]
    assert fullres.values == {"batch_size": 9, "by_memory": 58, "by_dataset": 9}
    assert "5% dataset cap" in fullres.message
    assert [r.message for r in records if r.step == "3d_lowres"] == [
        "not needed: the fullres patch covers 142.2% of the median image (threshold 25%)"
    ]
    assert not any(r.step == "shrink" for r in records)


def test_explain_reasons_in_fixture_cases():
    def records(case):
        data = load_case(case)
        return explain(data["fingerprint"], data["dataset_json"])

    prostate = [r for r in records("prostate_aniso") if r.step == "target_spacing"][0]
    assert "10th percentile" in prostate.message and prostate.values["axis"] == 0
    dropped = [r.message for r in records("lowres_dropped") if r.step == "3d_lowres"]
    assert dropped[-1].startswith("dropped: the lowres median image is only 1.19x smaller")
    liver = records("liver_ct")
    kept = [r.message for r in liver if r.step == "3d_lowres"][-1]
    assert kept.startswith("kept after") and "3d_cascade_fullres" in kept
    shrink = [r for r in liver if r.step == "shrink" and r.configuration == "3d_fullres"][0]
    assert "estimate" in shrink.message and "limit 560,000,000" in shrink.message
    rgb = [r for r in records("natural_2d_rgb") if r.step == "shrink"][-1]
    assert rgb.message.endswith("vs limit 510,000,000")  # 2D: a batch of 2 must fit in 6 x 85e6
    gray = [r for r in records("natural_2d_gray") if r.step == "batch_size"][0]
    assert gray.values["batch_size"] == 2 and "minimum batch size" in gray.message
    assert (
        "no 3D configurations"
        in [r.message for r in records("natural_2d_gray") if r.configuration == "3d_fullres"][0]
    )


def test_format_explanation_groups_by_configuration():
    text = format_explanation(explain(*hippocampus_inputs()))
    assert text.splitlines()[0] == "[dataset]" and "[3d_fullres]" in text and "[2d]" in text
    assert "  batch_size: batch size 366" in text


# --- rules, one at a time -----------------------------------------------------------------------------


def test_batch_size_rounds_halves_to_even():
    # budget 560e6 x reference batch 2 / estimate: 448e6 gives 2.5 -> 2, 320e6 gives 3.5 -> 4
    huge = 1e12
    assert batch_size_for(448_000_000, (128, 128, 128), huge, 3, DEFAULT) == 2
    assert batch_size_for(320_000_000, (128, 128, 128), huge, 3, DEFAULT) == 4
    # the 5% cap: 130,000 voxels x 0.05 / 1000 = 6.5 -> 6; 150,000 -> 7.5 -> 8
    assert batch_size_for(1, (10, 10, 10), 130_000, 3, DEFAULT) == 6
    assert batch_size_for(1, (10, 10, 10), 150_000, 3, DEFAULT) == 8
    assert batch_size_for(1, (10, 10, 10), 1_000, 3, DEFAULT) == 2  # never below min_batch_size


def test_shrink_conditions_differ_in_2d_only():
    # default: a batch of 2 must fit (2D: estimate > 6 x budget); ResEnc: one patch must fit
    assert not planning.shrink_is_needed(300_000_000, 2, DEFAULT)
    assert planning.shrink_is_needed(511_000_000, 2, DEFAULT)
    assert planning.shrink_is_needed(136_000_000, 2, RESENC_M)
    assert planning.shrink_is_needed(560_000_001, 3, DEFAULT) and not planning.shrink_is_needed(
        560_000_000, 3, DEFAULT
    )


def test_shrink_step_does_not_skip_valid_sizes():
    # 256 is divisible by 64 (6 pools): 192 would skip 224 = 7 x 32
    topology = planning.pool_and_conv_props([1.0, 1.0, 1.0], [256, 256, 256])
    assert topology.divisible_by == [64, 64, 64]
    assert planning.shrink_patch(topology, 2, [1.0, 1.0, 1.0], DEFAULT).patch_size == [256, 256, 224]


def test_axis_to_shrink_prefers_the_last_of_ties():
    assert planning.axis_to_shrink([128, 128, 128], [256.0, 256.0, 256.0]) == 2
    assert planning.axis_to_shrink([128, 128, 64], [256.0, 256.0, 256.0]) == 1
    assert planning.axis_to_shrink([64, 128, 64], [100.0, 256.0, 256.0]) == 0


def test_topology_rules():
    # coarse axis joins the pooling once the fine axes have caught up; its kernel is 1 until then
    t = planning.pool_and_conv_props([4.0, 1.0, 1.0], [32, 256, 256])
    assert t.strides[:3] == [[1, 1, 1], [1, 2, 2], [1, 2, 2]] and t.kernel_sizes[0] == [1, 3, 3]
    assert t.kernel_sizes[-1] == [3, 3, 3] and len(t.kernel_sizes) == t.n_stages
    # a lone axis needs 3 x min edge to pool: (8, 64) -> (4, 32) -> (4, 16) -> (4, 8), and 8 < 12 stops
    t = planning.pool_and_conv_props([1.0, 1.0], [8, 64])
    assert t.pools_per_axis == [1, 3] and t.patch_size == [8, 64]
    assert planning.pad_shape([36, 50, 35.5], [8, 8, 8]) == [40, 56, 40]
    assert planning.pad_shape([40, 1], [8, 1]) == [40, 1]


def test_target_spacing_rule():
    spacings = np.array([[5.0, 0.7, 0.7]] * 6 + [[0.6, 0.7, 0.7]] * 4)
    shapes = np.array([[40, 500, 500]] * 10)
    # 10th percentile 0.6 is finer than in-plane: clamped to 0.7 + 1e-5
    assert planning.fullres_target_spacing(spacings, shapes).tolist() == [0.7 + 1e-5, 0.7, 0.7]
    # enough slices: the median stays
    assert planning.fullres_target_spacing(spacings, np.array([[200, 500, 500]] * 10)).tolist() == [
        5.0,
        0.7,
        0.7,
    ]


def test_transpose():
    assert planning.transpose_axes([0.8, 0.8, 4.0]) == ([2, 0, 1], [1, 2, 0])
    assert planning.transpose_axes([1.0, 3.0, 1.0]) == ([1, 0, 2], [1, 0, 2])
    assert planning.transpose_axes([1.0, 1.0, 1.0]) == ([0, 1, 2], [0, 1, 2])
    assert planning.transpose_axes([0.8, 0.8, 4.0], suppress=True) == ([0, 1, 2], [0, 1, 2])


def test_normalization_by_channel_name():
    dataset_json = {
        "channel_names": {
            "0": "cT",
            "1": "NONORM",
            "2": "zscore",
            "3": "rescale_to_0_1",
            "4": "RGB_to_0_1",
            "5": "FLAIR",
        }
    }
    schemes, use_mask = planning.normalization_schemes(dataset_json, 0.5)
    assert schemes == [
        "CTNormalization",
        "NoNormalization",
        "ZScoreNormalization",
        "RescaleTo01Normalization",
        "RGBTo01Normalization",
        "ZScoreNormalization",
    ]
    assert use_mask == [False, False, True, False, False, True]
    assert planning.normalization_schemes(dataset_json, 0.75)[1] == [False] * 6
    assert planning.normalization_schemes({"modality": {"0": "CT"}}, 1.0)[0] == ["CTNormalization"]


def test_reader_writer_from_dataset_json():
    def reader(ending, **extra):
        return planning.default_image_reader_writer({"file_ending": ending, **extra})

    assert [reader(e) for e in (".nii.gz", ".nii", ".png", ".nrrd", ".tiff")] == [
        "SimpleITKIO",
        "NibabelIO",
        "NaturalImage2DIO",
        "SimpleITKIO",
        "Tiff3DIO",
    ]
    assert reader(".nii.gz", overwrite_image_reader_writer="NibabelIOWithReorient") == "NibabelIOWithReorient"
    with pytest.raises(ValueError, match="no nnU-Net reader for file ending '.jpg'"):
        reader(".jpg")


# --- settings -----------------------------------------------------------------------------------------


def test_presets():
    assert PRESETS == {"default": DEFAULT, "resenc-m": RESENC_M, "resenc-l": RESENC_L, "resenc-xl": RESENC_XL}
    assert [p.planner_name for p in PRESETS.values()] == [
        "ExperimentPlanner",
        "nnUNetPlannerResEncM",
        "nnUNetPlannerResEncL",
        "nnUNetPlannerResEncXL",
    ]
    assert DEFAULT.data_identifier("2d") == "nnUNetPlans_2d"
    assert RESENC_XL.data_identifier("3d_fullres") == "nnUNetPlans_3d_fullres"
    assert RESENC_XL.data_identifier("3d_lowres") == "nnUNetResEncUNetXLPlans_3d_lowres"
    assert (
        planning.memory_budget(3, RESENC_XL) == 3_600_000_000 and planning.memory_budget(2, RESENC_L) == 380e6
    )


def test_gpu_memory_override():
    assert planning.preset("default", gpu_memory_target_gb=16).gpu_memory_target_gb == 16
    assert planning.memory_budget(3, planning.preset("default", 16)) == 1_120_000_000
    with pytest.warns(UserWarning, match="tuned for 24 GB"):
        assert planning.memory_budget(3, planning.preset("resenc-l", 48)) == 4_200_000_000
    with pytest.raises(ValueError, match="unknown planner preset 'resenc-s'; known: default, resenc-m"):
        planning.preset("resenc-s")


def test_settings_and_inputs_are_checked():
    with pytest.raises(ValueError, match="shrink_while must be"):
        planning.PlannerSettings(shrink_while="sometimes")
    with pytest.raises(ValueError, match="overwrite_target_spacing must be three positive spacings"):
        planning.PlannerSettings(overwrite_target_spacing=(1.0, 1.0))
    fingerprint, dataset_json = hippocampus_inputs()
    with pytest.raises(ValueError, match="the fingerprint has no 'spacings'"):
        plan({k: v for k, v in fingerprint.items() if k != "spacings"}, dataset_json)
    with pytest.raises(ValueError, match="one 3-axis spacing and shape per case"):
        plan(fingerprint | {"shapes_after_crop": [[36, 50, 35]] * 3}, dataset_json)
    with pytest.raises(ValueError, match="dataset.json has no channel_names"):
        plan(fingerprint, {k: v for k, v in dataset_json.items() if k != "channel_names"})
