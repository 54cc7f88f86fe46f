"""nnseg_nb.paths: lazily read roots with defaults, and dataset resolution by path, name or id."""

import pytest

from nnseg_nb import paths
from nnseg_nb.paths import (
    dataset_folder_name,
    dataset_name,
    find_dataset,
    list_datasets,
    parse_dataset_folder_name,
)

ENV_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@pytest.fixture
def raw(tmp_path, monkeypatch):
    """A raw root holding Dataset004_Hippocampus and Dataset027_ACDC (plus distractors)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "raw"
    for name in ("Dataset004_Hippocampus", "Dataset027_ACDC", "not_a_dataset", ".Dataset005_Hidden.tmp"):
        (root / name).mkdir(parents=True)
    (root / "Dataset099_File").write_text("a file, not a folder")
    monkeypatch.setenv("nnUNet_raw", str(root))
    return root


def test_roots_default_to_the_working_directory(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.raw_root() == tmp_path / "nnseg_data" / "raw"
    assert paths.preprocessed_root() == tmp_path / "nnseg_data" / "preprocessed"
    assert paths.results_root() == tmp_path / "nnseg_data" / "results"
    monkeypatch.setenv("nnUNet_raw", "")  # set but empty counts as unset
    assert paths.raw_root() == tmp_path / "nnseg_data" / "raw"


def test_environment_is_read_at_each_call_not_at_import(tmp_path, monkeypatch):
    for i, var in enumerate(ENV_VARS):
        monkeypatch.setenv(var, str(tmp_path / f"first{i}"))
    assert paths.raw_root() == tmp_path / "first0"
    assert paths.preprocessed_root() == tmp_path / "first1"
    assert paths.results_root() == tmp_path / "first2"
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "second"))
    assert paths.raw_root() == tmp_path / "second"


def test_folder_names():
    assert dataset_folder_name(4, "Hippocampus") == "Dataset004_Hippocampus"
    assert parse_dataset_folder_name("Dataset004_Hippocampus") == (4, "Hippocampus")
    assert parse_dataset_folder_name("Dataset120_Road_Segmentation") == (120, "Road_Segmentation")
    for bad in ("Task04_Hippocampus", "Dataset4_X", "Dataset004"):
        with pytest.raises(ValueError, match="DatasetXXX_Name"):
            parse_dataset_folder_name(bad)
    with pytest.raises(ValueError, match="between 0 and 999"):
        dataset_folder_name(1000, "X")
    with pytest.raises(ValueError, match="without spaces"):
        dataset_folder_name(1, "my data")


def test_list_datasets_only_lists_dataset_folders(raw, tmp_path):
    assert list_datasets(raw) == ["Dataset004_Hippocampus", "Dataset027_ACDC"]
    assert list_datasets(tmp_path / "nowhere") == []


@pytest.mark.parametrize(
    "query", ["Dataset004_Hippocampus", "Hippocampus", "hippocampus", "4", "004", 4, "Dataset004"]
)
def test_find_dataset_by_full_name_name_or_id(raw, query):
    assert find_dataset(query) == raw / "Dataset004_Hippocampus"


def test_find_dataset_by_path(raw, tmp_path):
    elsewhere = tmp_path / "somewhere" / "MyData"
    elsewhere.mkdir(parents=True)
    assert find_dataset(elsewhere) == elsewhere
    assert find_dataset(str(raw / "Dataset027_ACDC")) == raw / "Dataset027_ACDC"
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        find_dataset(tmp_path / "somewhere" / "Missing")


def test_dot_is_the_working_directory_by_name(raw, monkeypatch):
    """``nnseg-nb verify .`` inside a dataset folder: the folder's own name, not ``''``, is what gets parsed."""
    monkeypatch.chdir(raw / "Dataset027_ACDC")
    assert find_dataset(".") == raw / "Dataset027_ACDC" and find_dataset(".").name == "Dataset027_ACDC"
    monkeypatch.chdir(raw / "Dataset027_ACDC" / "..")
    assert find_dataset("Dataset004_Hippocampus/..").name == "raw"


def test_missing_dataset_lists_the_existing_ones(raw):
    with pytest.raises(FileNotFoundError) as error:
        find_dataset("Prostate")
    message = str(error.value)
    assert "'Prostate'" in message and str(raw) in message
    assert "Dataset004_Hippocampus, Dataset027_ACDC" in message
    with pytest.raises(FileNotFoundError, match="datasets there: none"):
        find_dataset(5, root=raw / "empty")


def test_ambiguous_id_is_an_error_naming_both(raw):
    (raw / "Dataset004_Other").mkdir()
    with pytest.raises(ValueError, match="ambiguous.*Dataset004_Hippocampus, Dataset004_Other"):
        find_dataset(4)
    assert find_dataset("Dataset004_Other") == raw / "Dataset004_Other"  # the full name is never ambiguous


def test_dataset_name_searches_all_three_roots(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.setenv(var, str(tmp_path / var))
    (tmp_path / "nnUNet_results" / "Dataset011_Only_Results").mkdir(parents=True)
    assert dataset_name(11) == "Dataset011_Only_Results"
    (tmp_path / "nnUNet_preprocessed" / "Dataset011_Only_Results").mkdir(parents=True)
    assert dataset_name("11") == "Dataset011_Only_Results"  # the same dataset in two roots is not ambiguous


def _clone(tmp_path, name="nnseg-nb"):
    """A folder that looks like a clone of this repository (a pyproject.toml naming the project)."""
    clone = tmp_path / "clone"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0.1.0"\n')
    return clone


def test_one_data_root_for_the_whole_clone(tmp_path, monkeypatch):
    """The CLI at the clone's root and a Jupyter kernel in notebooks/ read and write the same folders."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    clone = _clone(tmp_path)
    for where in (clone, clone / "notebooks"):
        monkeypatch.chdir(where)
        assert paths.find_clone() == clone and paths.project_root() == clone
        assert paths.raw_root() == clone / "nnseg_data" / "raw"
        assert paths.results_root() == clone / "nnseg_data" / "results"
        assert paths.runs_root() == clone / "runs"
        assert paths.in_project("runs/01_data") == clone / "runs" / "01_data"
    assert paths.in_project(tmp_path / "elsewhere") == tmp_path / "elsewhere"  # absolute: as given
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "mine"))
    assert paths.raw_root() == tmp_path / "mine"  # the variables still win


def test_another_project_is_not_a_clone(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    clone = _clone(tmp_path, name="nnseg-nb-fork-of-something")
    monkeypatch.chdir(clone / "notebooks")
    assert paths.find_clone() is None
    assert paths.project_root() == clone / "notebooks"  # outside a clone: the working directory
    assert paths.raw_root() == clone / "notebooks" / "nnseg_data" / "raw"


def test_display_hides_the_users_folders(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    clone = _clone(tmp_path)
    monkeypatch.chdir(clone / "notebooks")
    assert (
        paths.display(paths.raw_root() / "Dataset901_BrainTissue") == "nnseg_data/raw/Dataset901_BrainTissue"
    )
    assert paths.display(clone / "runs" / "01_data") == "runs/01_data"
    assert paths.display(clone) == "."
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.display(tmp_path / "data" / "x.nii.gz") == "~/data/x.nii.gz"
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    assert (
        paths.display(tmp_path / "pre" / "Dataset001_A" / "plans.json")
        == "$nnUNet_preprocessed/Dataset001_A/plans.json"
    )
    assert paths.display(tmp_path / "pre") == "$nnUNet_preprocessed"
    assert paths.display("/proc/elsewhere") == "/proc/elsewhere"
    assert paths.describe_roots().splitlines() == [
        "raw:          nnseg_data/raw",
        f"preprocessed: $nnUNet_preprocessed = {tmp_path / 'pre'}",
        "results:      nnseg_data/results",
    ]


def test_cli_demo_data_in_notebooks_uses_the_clones_root(tmp_path, monkeypatch, capsys):
    """`nnseg-nb demo-data` typed in notebooks/ writes where the notebooks' kernels read: <clone>/nnseg_data."""
    from nnseg_nb import cli, demo_data

    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    clone = _clone(tmp_path)
    monkeypatch.chdir(clone / "notebooks")
    built = []

    def fake_build(root, seed, only, overwrite):
        built.append(root)
        return {name: root / name for name in only}

    monkeypatch.setattr(demo_data, "build_demo_datasets", fake_build)
    assert cli.main(["demo-data", "--only", "904"]) == 0
    assert built == [clone / "nnseg_data" / "raw"]
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        f"project folder: {clone}",
        "raw:          nnseg_data/raw",
        "built      nnseg_data/raw/Dataset904_Shapes2D",
    ]
