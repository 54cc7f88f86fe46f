"""Cross-validation folds against nnunetv2's do_split (fixtures: tests/fixtures/make_splits.py)."""

import json
import warnings
from pathlib import Path

import pytest

from nnseg_nb.splits import (
    SPLITS_FILE,
    check_splits,
    fold_cases,
    load_fold,
    load_or_create_splits,
    make_splits,
    random_80_20_split,
    split_problems,
)

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "splits" / "splits.json").read_text())
SIZES = [n for n in FIXTURE["created"] if n != "custom"]


@pytest.mark.parametrize("n", SIZES)
def test_five_folds_match_nnunet(n):
    created = FIXTURE["created"][n]
    assert make_splits(created["identifiers"]) == created["splits"]


@pytest.mark.parametrize("entry", FIXTURE["folds"], ids=lambda e: f"n{e['n']}-fold{e['fold']}")
def test_fold_cases_match_do_split(entry):
    created = FIXTURE["created"][str(entry["n"])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = fold_cases(created["splits"], entry["fold"], created["identifiers"])
    assert (train, val) == (entry["train"], entry["val"])
    assert bool(caught) == (entry["fold"] >= len(created["splits"]))  # the 80:20 fallback warns


@pytest.mark.parametrize("n", SIZES)
def test_fold_all_trains_and_validates_on_every_case(n):
    ids = FIXTURE["created"][n]["identifiers"]
    assert fold_cases([], "all", ids) == (FIXTURE["all"][n]["train"], FIXTURE["all"][n]["val"])


def test_folds_partition_the_cases():
    ids = [f"c{i}" for i in range(23)]
    splits = make_splits(ids, n_folds=5, seed=7)
    assert sorted(c for fold in splits for c in fold["val"]) == sorted(ids)
    assert [len(fold["val"]) for fold in splits] == [5, 5, 5, 4, 4]  # the first n % k folds get one more
    assert all(sorted(fold["train"] + fold["val"]) == sorted(ids) for fold in splits)


def test_80_20_fallback_is_seeded_by_the_fold():
    ids = [f"c{i}" for i in range(10)]
    train, val = random_80_20_split(ids, 5)
    assert len(train) == 8 and sorted(train + val) == ids and random_80_20_split(ids, 5) == (train, val)
    assert random_80_20_split(ids, 6) != (train, val)


def test_too_few_cases_and_bad_folds_are_explained():
    with pytest.raises(ValueError, match="at least 5 cases, found 3"):
        make_splits(["a", "b", "c"])
    splits = make_splits([f"c{i}" for i in range(5)])
    with pytest.raises(ValueError, match="fold must be 'all' or a number"):
        fold_cases(splits, -1, [])
    with pytest.raises(ValueError, match="fold must be"):
        fold_cases(splits, "first", [])
    assert fold_cases(splits, "1", []) == fold_cases(splits, 1, [])


def test_missing_file_is_written_once_and_never_overwritten(tmp_path):
    ids = [f"case_{i}" for i in range(12)]
    assert load_or_create_splits(tmp_path, ids) == make_splits(ids)
    assert json.loads((tmp_path / SPLITS_FILE).read_text()) == make_splits(ids)
    own = [{"train": ids[:6], "val": ids[6:]}]
    (tmp_path / SPLITS_FILE).write_text(json.dumps(own))
    assert load_or_create_splits(tmp_path, ids) == own
    assert json.loads((tmp_path / SPLITS_FILE).read_text()) == own


def test_a_wrong_splits_file_is_refused_naming_the_file(tmp_path):
    ids = ["a", "b", "c"]
    path = tmp_path / SPLITS_FILE
    path.write_text(json.dumps([{"train": ["a", "zz"], "val": ["c"]}, {"train": ["a"]}]))
    with pytest.raises(ValueError) as error:
        load_or_create_splits(tmp_path, ids)
    lines = str(error.value).splitlines()
    assert lines[0] == f"{path}: fold 0: 'train' names cases that are not in the dataset: zz"
    assert lines[1].startswith(f"{path}: fold 1: must be")
    path.write_text("{}")
    with pytest.raises(ValueError, match="non-empty list of folds"):
        check_splits(path)
    path.write_text("[")
    with pytest.raises(ValueError, match="not valid JSON"):
        check_splits(path)
    assert split_problems([{"train": ["a"], "val": [1]}]) == [
        "fold 0: 'val' must be a list of case identifiers (strings)"
    ]


def test_overlapping_user_folds_warn_with_the_file_name(tmp_path):
    with pytest.warns(UserWarning, match=f"{SPLITS_FILE}: fold 0: some validation cases"):
        fold_cases([{"train": ["a", "b"], "val": ["b"]}], 0, ["a", "b"], source=tmp_path / SPLITS_FILE)


def test_load_fold_creates_the_file_except_for_fold_all(tmp_path):
    ids = [f"case_{i}" for i in range(10)]
    assert load_fold(tmp_path, "all", ids) == (ids, ids)
    assert not (tmp_path / SPLITS_FILE).exists()
    assert load_fold(tmp_path, 3, ids) == fold_cases(make_splits(ids), 3, ids)
    assert (tmp_path / SPLITS_FILE).is_file()
    with pytest.warns(UserWarning, match=f"{SPLITS_FILE}: fold 7 requested but the splits have only 5"):
        assert load_fold(tmp_path, 7, ids) == random_80_20_split(ids, 7)
    with pytest.raises(ValueError, match=f"{SPLITS_FILE}: fold must be"):
        load_fold(tmp_path, -2, ids)
