"""``nnseg-nb plan``: nnunetv2's plans for the demo datasets through the command line, the files it
writes next to them, ``--explain``, and one readable line per user error.

The fixtures in ``fixtures/planning/demo`` are nnunetv2 2.8.1's preprocessed folders for the four
demo datasets (``make_planning_demo.py``): its fingerprint, its dataset.json copy and one plans file
per planner run listed in ``runs.json``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from test_planning import (
    differences,  # key order, int vs float, values: the planning parity test's comparison
)

from nnseg_nb import cli, fingerprint, planning
from nnseg_nb.dataset import load_dataset_json
from nnseg_nb.demo_data import build_demo_datasets
from nnseg_nb.fingerprint import load_fingerprint

FIXTURES = Path(__file__).parent / "fixtures" / "planning" / "demo"
RUNS = json.loads((FIXTURES / "runs.json").read_text())["runs"]
PLANNER_OPTION = {
    "ExperimentPlanner": "default",
    "nnUNetPlannerResEncM": "resenc-m",
    "nnUNetPlannerResEncL": "resenc-l",
    "nnUNetPlannerResEncXL": "resenc-xl",
}


def plan_options(run: dict) -> list[str]:
    """The ``nnseg-nb plan`` options for one of nnunetv2's runs (its planner class and keyword arguments)."""
    kwargs = run["kwargs"]
    options = ["--planner", PLANNER_OPTION[run["planner"]]]
    if "gpu_memory_target_in_gb" in kwargs:
        options += ["--gpu-memory", str(kwargs["gpu_memory_target_in_gb"])]
    if "overwrite_plans_name" in kwargs:
        options += ["--plans-name", kwargs["overwrite_plans_name"]]
    if "overwrite_target_spacing" in kwargs:
        options += ["--overwrite-target-spacing", *map(str, kwargs["overwrite_target_spacing"])]
    return options


def plan_from_files(folder: Path, output: Path, *options: str) -> int:
    return cli.main(
        [
            "plan",
            "--fingerprint",
            str(folder / "dataset_fingerprint.json"),
            "--dataset-json",
            str(folder / "dataset.json"),
            "-o",
            str(output),
            *options,
        ]
    )


# --- (a) parity: the plans file is nnunetv2's --------------------------------------------------------


def test_fixture_runs_cover_every_dataset_and_option():
    assert {run["dataset"] for run in RUNS} == {
        "Dataset901_BrainTissue",
        "Dataset902_AnisoSynth",
        "Dataset903_MultiChannel",
        "Dataset904_Shapes2D",
    }
    options = {option for run in RUNS for option in plan_options(run)}
    assert {"resenc-m", "resenc-l", "--gpu-memory", "--plans-name", "--overwrite-target-spacing"} <= options
    lowres = [
        run
        for run in RUNS
        if "3d_lowres" in json.loads((FIXTURES / run["plans_file"]).read_text())["configurations"]
    ]
    assert lowres, "no run covers 3d_lowres + 3d_cascade_fullres"


@pytest.mark.parametrize("run", RUNS, ids=[run["plans_file"] for run in RUNS])
def test_plans_from_files_equal_nnunet(run, tmp_path, capsys):
    """Every field of every configuration and every top-level field, in nnU-Net's order; the file is byte-identical."""
    output = tmp_path / "plans.json"
    assert plan_from_files(FIXTURES / run["dataset"], output, *plan_options(run)) == 0
    ours, nnunet_file = json.loads(output.read_text()), FIXTURES / run["plans_file"]
    assert differences(ours, json.loads(nnunet_file.read_text())) == []
    assert output.read_bytes() == nnunet_file.read_bytes()
    assert "error" not in capsys.readouterr().err


def test_resenc_with_another_gpu_target_warns_and_keeps_the_name(tmp_path, capsys):
    folder = FIXTURES / "Dataset904_Shapes2D"
    assert plan_from_files(folder, tmp_path / "p.json", "--planner", "resenc-m", "--gpu-memory", "0.25") == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "warning: planner preset 'resenc-m' is tuned for 8 GB; planning for 0.25 GB instead"
    assert err[1].startswith("note: nnUNetResEncUNetMPlans.json will hold a plan for 0.25 GB")
    assert (
        json.loads((tmp_path / "p.json").read_text())["plans_name"] == "nnUNetResEncUNetMPlans"
    )  # as nnU-Net


def test_dataset_name_outside_a_dataset_folder(tmp_path):
    """The only field that needs the dataset's folder: nnU-Net writes its name, DatasetXXX_Name.

    From files in a folder with another name it is ``--dataset-name``, else dataset.json's ``name``.
    """
    source = FIXTURES / "Dataset902_AnisoSynth"
    for file in ("dataset_fingerprint.json", "dataset.json"):
        (tmp_path / file).write_bytes((source / file).read_bytes())
    nnunet = json.loads((source / "nnUNetPlans.json").read_text())
    assert plan_from_files(tmp_path, tmp_path / "a.json") == 0
    plans = json.loads((tmp_path / "a.json").read_text())
    assert (
        plans["dataset_name"] == "AnisoSynth"
        and differences({**plans, "dataset_name": nnunet["dataset_name"]}, nnunet) == []
    )
    assert plan_from_files(tmp_path, tmp_path / "b.json", "--dataset-name", "Dataset902_AnisoSynth") == 0
    assert (tmp_path / "b.json").read_bytes() == (source / "nnUNetPlans.json").read_bytes()


def table_row(out: str, configuration: str) -> list[str]:
    """The cells of a configuration's row in the summary table (columns are 2+ spaces apart)."""
    return re.split(
        r"\s{2,}", next(line for line in out.splitlines() if line.startswith(configuration + " "))
    )


# --- (b) DATASET mode: fingerprint, plans and dataset.json in the preprocessed folder ----------------


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """A 3-case AnisoSynth build under $nnUNet_raw, an empty $nnUNet_preprocessed, few intensity samples."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setattr(fingerprint, "FOREGROUND_SAMPLES_TOTAL", 30_000)  # 1e8 is nnU-Net's; values only
    build_demo_datasets(tmp_path / "raw", only=["AnisoSynth"], num_train=3, num_test=0, progress=False)
    return tmp_path


def test_dataset_mode_writes_fingerprint_plans_and_dataset_json(roots, capsys):
    raw, preprocessed = (
        roots / "raw" / "Dataset902_AnisoSynth",
        roots / "preprocessed" / "Dataset902_AnisoSynth",
    )
    assert cli.main(["plan", "902", "-np", "1"]) == 0
    out = capsys.readouterr().out
    shown = "$nnUNet_preprocessed/Dataset902_AnisoSynth"  # paths as the user's root variable, not /tmp/...
    assert f"fingerprint: computing {shown}/dataset_fingerprint.json" in out
    assert f"wrote {shown}/nnUNetPlans.json (ExperimentPlanner, 8 GB GPU target)" in out
    assert sorted(p.name for p in preprocessed.iterdir()) == [
        "dataset.json",
        "dataset_fingerprint.json",
        "nnUNetPlans.json",
    ]
    assert (preprocessed / "dataset.json").read_bytes() == (raw / "dataset.json").read_bytes()
    fp = load_fingerprint(preprocessed / "dataset_fingerprint.json")
    assert len(fp["spacings"]) == 3
    expected = planning.plan(fp, load_dataset_json(raw), dataset_name="Dataset902_AnisoSynth")
    assert json.loads((preprocessed / "nnUNetPlans.json").read_text()) == expected.to_json()
    fullres = expected.configuration("3d_fullres")
    assert table_row(out, "3d_fullres") == [
        "3d_fullres",
        " x ".join(map(str, fullres.patch_size)),
        str(fullres.batch_size),
        " x ".join(f"{s:.4g}" for s in fullres.spacing),
        str(fullres.architecture.n_stages),
    ]

    # a ResEnc preset: its own file name, the default planner's data folders for 2d and 3d_fullres
    assert cli.main(["plan", "Dataset902_AnisoSynth", "--planner", "resenc-m"]) == 0
    resenc = planning.load_plans(preprocessed / "nnUNetResEncUNetMPlans.json")
    assert resenc.configuration("3d_fullres").data_identifier == "nnUNetPlans_3d_fullres"
    reused = "fingerprint: $nnUNet_preprocessed/Dataset902_AnisoSynth/dataset_fingerprint.json"
    assert reused in capsys.readouterr().out


@pytest.mark.parametrize("dataset", ["Dataset902_AnisoSynth", "Dataset904_Shapes2D"])
def test_dataset_mode_on_the_full_demo_build_gives_nnunets_plans(dataset, tmp_path, monkeypatch, capsys):
    """Raw images -> our fingerprint -> our plans equal nnunetv2's, except the intensity statistics.

    Those are drawn from 1e5 foreground values here instead of nnU-Net's 1e8 (seconds instead of a
    minute); test_fingerprint checks them against nnunetv2's. The plans copy them from the fingerprint.
    """
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(fingerprint, "FOREGROUND_SAMPLES_TOTAL", 10**5)
    build_demo_datasets(
        tmp_path / "raw", only=[dataset], num_test=0, progress=False
    )  # the fixture's training cases
    assert cli.main(["plan", dataset, "-np", "1"]) == 0
    preprocessed, nnunet_folder = tmp_path / "preprocessed" / dataset, FIXTURES / dataset
    ours_fp, nnunet_fp = (
        load_fingerprint(folder / "dataset_fingerprint.json") for folder in (preprocessed, nnunet_folder)
    )
    for key in ("spacings", "shapes_after_crop", "median_relative_size_after_cropping"):
        assert ours_fp[key] == nnunet_fp[key]
    ours, nnunet = (
        json.loads((folder / "nnUNetPlans.json").read_text()) for folder in (preprocessed, nnunet_folder)
    )
    intensities = "foreground_intensity_properties_per_channel"
    assert ours.pop(intensities) == ours_fp[intensities] and nnunet.pop(intensities) == nnunet_fp[intensities]
    assert differences(ours, nnunet) == []


def test_replanning_keeps_a_custom_configuration(roots, capsys):
    plans_file = roots / "preprocessed" / "Dataset902_AnisoSynth" / "nnUNetPlans.json"
    assert cli.main(["plan", "AnisoSynth", "-np", "1"]) == 0
    first = json.loads(plans_file.read_text())
    custom = {"inherits_from": "3d_fullres", "batch_size": 4, "patch_size": [16, 64, 64]}
    edited = {**first, "configurations": {**first["configurations"], "3d_fullres_bs4": custom}}
    edited["configurations"]["2d"] = {
        **edited["configurations"]["2d"],
        "batch_size": 99,
    }  # planner's own: replanned
    plans_file.write_text(json.dumps(edited, indent=4))
    capsys.readouterr()
    assert cli.main(["plan", "AnisoSynth"]) == 0
    again = json.loads(plans_file.read_text())
    assert list(again["configurations"]) == [*first["configurations"], "3d_fullres_bs4"]
    assert again["configurations"]["3d_fullres_bs4"] == custom
    assert again["configurations"]["2d"] == first["configurations"]["2d"]
    row = table_row(capsys.readouterr().out, "3d_fullres_bs4")
    assert row[1:3] == ["16 x 64 x 64", "4"] and row[5] == "inherits 3d_fullres, kept from the existing file"


def test_splits_final_is_copied_and_must_agree(roots, capsys):
    """nnU-Net copies the raw folder's splits_final.json next to the plans and refuses one with other folds."""
    raw, preprocessed = (
        roots / "raw" / "Dataset902_AnisoSynth",
        roots / "preprocessed" / "Dataset902_AnisoSynth",
    )
    splits = [{"train": ["aniso_000", "aniso_001"], "val": ["aniso_002"]}]
    (raw / "splits_final.json").write_text(json.dumps(splits))
    assert cli.main(["plan", "902", "-np", "1"]) == 0
    assert json.loads((preprocessed / "splits_final.json").read_text()) == splits
    (raw / "splits_final.json").write_text(
        json.dumps([{"train": ["aniso_000"], "val": ["aniso_001", "aniso_002"]}])
    )
    (preprocessed / "nnUNetPlans.json").unlink()
    capsys.readouterr()
    [line] = _errors(capsys, ["plan", "902"])
    assert not (preprocessed / "nnUNetPlans.json").exists()
    assert (
        line
        == f"error: {preprocessed / 'splits_final.json'} has other folds than {raw / 'splits_final.json'}; "
        "remove one of them"
    )


# --- (c) --explain -----------------------------------------------------------------------------------


def _explained(tmp_path, capsys, dataset: str, *options: str) -> str:
    assert plan_from_files(FIXTURES / dataset, tmp_path / "plans.json", "--explain", *options) == 0
    return capsys.readouterr().out


def test_explain_shows_the_decisions_with_nnunets_numbers(tmp_path, capsys):
    """AnisoSynth: thick slices get the 10th-percentile spacing; nnU-Net's patch, batch size, no 3d_lowres."""
    out = _explained(tmp_path, capsys, "Dataset902_AnisoSynth")
    nnunet = json.loads((FIXTURES / "Dataset902_AnisoSynth" / "nnUNetPlans.json").read_text())[
        "configurations"
    ]
    z_spacing = nnunet["3d_fullres"]["spacing"][0]
    assert f"its 10th percentile {z_spacing:.4g} replaces the median" in out
    patch = "(" + ", ".join(map(str, nnunet["3d_fullres"]["patch_size"])) + ")"
    assert f"padded to {patch}" in out
    assert "[3d_lowres]\n  3d_lowres: not needed: the fullres patch covers" in out
    assert f"batch size {nnunet['2d']['batch_size']}, set by the 5% dataset cap" in out
    assert (
        out.index("[dataset]") < out.index("[3d_fullres]") < out.index("wrote ")
    )  # the trace, then the table


def test_explain_shows_shrinking_and_why_3d_lowres_exists(tmp_path, capsys):
    """0.1 GB: every shrink step down to nnU-Net's fullres patch, then 3d_lowres at nnU-Net's spacing."""
    out = _explained(tmp_path, capsys, "Dataset902_AnisoSynth", "--gpu-memory", "0.1")
    nnunet = json.loads((FIXTURES / "Dataset902_AnisoSynth" / "nnUNetPlans_100MB.json").read_text())[
        "configurations"
    ]
    fullres_section = out.split("[3d_fullres]")[1].split("[3d_lowres]")[0]
    shrinks = [line for line in fullres_section.splitlines() if "shrink:" in line]
    assert len(shrinks) == 14 and all("vs limit 7,000,000" in line for line in shrinks)  # 560e6 * 0.1 / 8
    fullres_patch = "(" + ", ".join(map(str, nnunet["3d_fullres"]["patch_size"])) + ")"
    assert f"-> patch {fullres_patch}, " in shrinks[-1]
    lowres_spacing = "(" + ", ".join(f"{s:.4g}" for s in nnunet["3d_lowres"]["spacing"]) + ")"
    lowres_patch = "(" + ", ".join(map(str, nnunet["3d_lowres"]["patch_size"])) + ")"
    assert f"spacing {lowres_spacing}" in out and f"-> patch {lowres_patch}, " in out
    assert "3d_cascade_fullres refines its output" in out
    assert "batch_dice True (3d_lowres has it False)" in out


# --- (d) user errors: one line each, exit 1, nothing written ----------------------------------------


def _errors(capsys, argv: list[str]) -> list[str]:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines)
    return lines


def test_user_errors_are_one_line_each(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    dataset_json = str(FIXTURES / "Dataset904_Shapes2D" / "dataset.json")
    good_fp = str(FIXTURES / "Dataset904_Shapes2D" / "dataset_fingerprint.json")
    (tmp_path / "broken.json").write_text('{"spacings": [[1, 1, 1]')
    (tmp_path / "partial.json").write_text('{"spacings": [[1, 1, 1]]}')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "badshape.json").write_text(
        json.dumps({**load_fingerprint(good_fp), "spacings": [[1.0, 1.0]]})
    )
    out = str(tmp_path / "plans.json")

    def files(fp: str) -> list[str]:
        return ["plan", "--fingerprint", fp, "--dataset-json", dataset_json, "-o", out]

    [line] = _errors(capsys, ["plan", "Dataset999_Nothing"])
    assert "no dataset 'Dataset999_Nothing'" in line
    [line] = _errors(capsys, files(str(tmp_path / "broken.json")))
    assert "broken.json: not valid JSON" in line
    [line] = _errors(capsys, files(str(tmp_path / "partial.json")))
    assert "partial.json: not a dataset fingerprint (missing" in line
    [line] = _errors(capsys, files(str(tmp_path / "list.json")))
    assert "list.json: not a dataset fingerprint" in line
    [line] = _errors(capsys, files(str(tmp_path / "missing.json")))
    assert "missing.json: no such fingerprint file" in line
    [line] = _errors(capsys, files(str(tmp_path / "badshape.json")))
    assert line.startswith("error: cannot plan Dataset904_Shapes2D: the fingerprint needs one 3-axis spacing")
    [line] = _errors(capsys, files(good_fp) + ["--planner", "resenc-xxl"])
    assert (
        line == "error: unknown --planner 'resenc-xxl'; choose one of default, resenc-m, resenc-l, resenc-xl"
    )
    for gb in ("0", "-2", "inf", "nan"):
        [line] = _errors(capsys, files(good_fp) + ["--gpu-memory", gb])
        assert line == f"error: --gpu-memory must be a positive number of GB, got {float(gb):g}"
    assert (
        len(_errors(capsys, files(good_fp) + ["--planner", "xl", "--gpu-memory", "0"])) == 2
    )  # one per problem
    [line] = _errors(capsys, files(good_fp) + ["--plans-name", "a/b.json"])
    assert "--plans-name is a name" in line
    [line] = _errors(capsys, ["plan"])
    assert "give a DATASET" in line
    [line] = _errors(capsys, ["plan", "--fingerprint", good_fp, "--dataset-json", dataset_json])
    assert "needs all of --fingerprint FILE, --dataset-json FILE and -o PLANS.json" in line
    assert not os.path.exists(out)
    Path(out).write_text("{}")  # an existing plans file that is not one: named, not replaced
    [line] = _errors(capsys, files(good_fp))
    assert line == (
        f"error: {out}: not nnU-Net plans: no plans_name, transpose_forward, transpose_backward, "
        "configurations"
    )
    assert Path(out).read_text() == "{}"


# --- (e) help ---------------------------------------------------------------------------------------


def test_help_names_every_preset_and_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert text.startswith("usage: nnseg-nb plan")
    for word in [
        *planning.PRESETS,
        "--gpu-memory",
        "--overwrite-target-spacing Z Y X",
        "--plans-name",
        "--fingerprint FILE",
        "--dataset-json FILE",
        "-o PLANS.json",
        "--explain",
        "nnUNetv2_plan_experiment",
    ]:
        assert word in text
    assert list(cli.SUBCOMMANDS).index("plan") == list(cli.SUBCOMMANDS).index("fingerprint") + 1
