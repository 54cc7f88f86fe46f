"""nnU-Net's cross-validation folds and its ``splits_final.json``.

    train_ids, val_ids = load_fold("nnseg_data/preprocessed/Dataset901_BrainTissue", 0, case_ids)
    # 4/5 and 1/5 of the cases; the same as
    splits = load_or_create_splits("nnseg_data/preprocessed/Dataset901_BrainTissue", case_ids)
    train_ids, val_ids = fold_cases(splits, 0, case_ids)
    train_ids, val_ids = fold_cases(splits, "all", case_ids) # every case in both

The first training run of a dataset writes ``splits_final.json`` into the preprocessed dataset folder
(``nnUNet_preprocessed/DatasetXXX_Name/``): five folds, ``[{"train": [...], "val": [...]}, ...]``,
from scikit-learn's ``KFold(n_splits=5, shuffle=True, random_state=12345)`` over the sorted case
identifiers. The folds are therefore the same on every machine and the same as nnU-Net's, so results
of the two can be compared fold by fold. We reproduce ``KFold`` in a few lines instead of depending on
scikit-learn.

A ``splits_final.json`` that is already there, written by nnU-Net or by hand with any number of folds,
is used as it is and never overwritten. Asking for a fold beyond the file gives nnU-Net's fallback, a
seeded random 80:20 split.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnseg_nb.utils import atomic_write_json, load_json

SPLITS_FILE = "splits_final.json"
N_FOLDS = 5
SPLIT_SEED = 12345  # nnU-Net's seed for the folds, and (plus the fold) for the 80:20 fallback

Splits = list[dict[str, list[str]]]


def make_splits(identifiers: Sequence[str], n_folds: int = N_FOLDS, seed: int = SPLIT_SEED) -> Splits:
    """nnU-Net's k-fold split: scikit-learn's shuffled ``KFold`` over the sorted identifiers.

    The indices 0..n-1 are shuffled by ``np.random.RandomState(seed)``; fold k validates on the next
    ``n // n_folds`` of them (one more for the first ``n % n_folds`` folds). Both lists of a fold are
    in sorted order.

    >>> make_splits([f"case_{i}" for i in range(7)])[2]
    {'train': ['case_0', 'case_2', 'case_3', 'case_4', 'case_5', 'case_6'], 'val': ['case_1']}
    """
    keys = sorted(identifiers)
    n = len(keys)
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if n < n_folds:
        raise ValueError(
            f"{n_folds}-fold cross-validation needs at least {n_folds} cases, found {n}; "
            f"train on fold 'all' or write your own {SPLITS_FILE}"
        )
    order = np.arange(n)
    # the legacy RandomState stream is what scikit-learn shuffles with, so the folds equal nnU-Net's
    np.random.RandomState(seed).shuffle(order)
    fold_sizes = [n // n_folds + (k < n % n_folds) for k in range(n_folds)]
    splits, start = [], 0
    for size in fold_sizes:
        in_val = np.zeros(n, bool)
        in_val[order[start : start + size]] = True
        start += size
        splits.append(
            {
                "train": [key for key, v in zip(keys, in_val) if not v],
                "val": [key for key, v in zip(keys, in_val) if v],
            }
        )
    return splits


def random_80_20_split(identifiers: Sequence[str], fold: int) -> tuple[list[str], list[str]]:
    """nnU-Net's fallback for a fold beyond ``splits_final.json``: a random 80:20 split seeded by the fold.

    ``int(0.8 n)`` sorted identifiers are drawn without replacement by ``RandomState(12345 + fold)``;
    the training cases come in the order drawn, the validation cases sorted.

    >>> random_80_20_split([f"case_{i}" for i in range(5)], fold=5)
    (['case_3', 'case_0', 'case_4', 'case_1'], ['case_2'])
    """
    keys = sorted(identifiers)
    drawn = np.random.RandomState(SPLIT_SEED + fold).choice(len(keys), int(len(keys) * 0.8), replace=False)
    drawn_set = set(drawn.tolist())
    return [keys[i] for i in drawn], [key for i, key in enumerate(keys) if i not in drawn_set]


# --- splits_final.json ---------------------------------------------------------------------------------


def split_problems(splits, identifiers: Sequence[str] | None = None) -> list[str]:
    """Everything wrong with the content of a splits file, one sentence each (empty if it is valid).

    It must be a list of ``{"train": [...], "val": [...]}`` with case identifiers as strings; with
    ``identifiers``, every case it names must be one of them. Cases left out of a fold are allowed.

    >>> split_problems([{"train": ["a"], "val": ["x"]}], identifiers=["a", "b"])
    ["fold 0: 'val' names cases that are not in the dataset: x"]
    """
    if not isinstance(splits, list) or not splits:
        return ['must be a non-empty list of folds, each {"train": [...], "val": [...]}']
    known = None if identifiers is None else set(identifiers)
    problems = []
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) < {"train", "val"}:
            problems.append(f'fold {k}: must be {{"train": [...], "val": [...]}}, found {str(fold)[:80]}')
            continue
        for part in ("train", "val"):
            cases = fold[part]
            if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases):
                problems.append(f"fold {k}: {part!r} must be a list of case identifiers (strings)")
            elif known is not None and set(cases) - known:
                unknown = sorted(set(cases) - known)
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                problems.append(
                    f"fold {k}: {part!r} names cases that are not in the dataset: {', '.join(unknown[:5])}{more}"
                )
    return problems


def check_splits(path: str | os.PathLike, identifiers: Sequence[str] | None = None) -> Splits:
    """Read a ``splits_final.json`` and return its folds; raise ValueError naming the file if it is wrong.

    One line per problem (see ``split_problems``), each starting with the file's path.
    """
    path = Path(path)
    splits = load_json(path)
    problems = split_problems(splits, identifiers)
    if problems:
        raise ValueError("\n".join(f"{path}: {problem}" for problem in problems))
    return splits


def load_or_create_splits(
    preprocessed_dataset_folder: str | os.PathLike, identifiers: Sequence[str]
) -> Splits:
    """The folds of ``preprocessed_dataset_folder/splits_final.json``, written first if it is missing.

    An existing file (nnU-Net's, or your own with any number of folds) is checked against
    ``identifiers`` and used as it is, never overwritten. A missing one gets nnU-Net's five folds
    (``make_splits``), written atomically.

    Args:
        preprocessed_dataset_folder: ``nnUNet_preprocessed/DatasetXXX_Name`` (where the plans are).
        identifiers: every training case of the dataset.
    """
    path = Path(preprocessed_dataset_folder) / SPLITS_FILE
    if path.is_file():
        return check_splits(path, identifiers)
    splits = make_splits(identifiers)
    atomic_write_json(path, splits)
    return splits


def fold_cases(
    splits: Splits, fold: int | str, identifiers: Sequence[str], source: str | os.PathLike | None = None
) -> tuple[list[str], list[str]]:
    """Training and validation cases of one fold, as ``nnUNetTrainer.do_split`` chooses them.

    Args:
        splits: the folds (``load_or_create_splits``).
        fold: 0, 1, ... or ``"all"`` (every case for training, and the same cases for validation).
            A fold beyond ``splits`` gives ``random_80_20_split`` with a warning, as in nnU-Net.
        identifiers: every training case (used for ``"all"`` and the 80:20 fallback).
        source: the splits file, named in messages.

    >>> splits = make_splits([f"case_{i}" for i in range(7)])
    >>> [len(cases) for cases in fold_cases(splits, 0, [f"case_{i}" for i in range(7)])]
    [5, 2]
    """
    where = f"{source}: " if source is not None else ""
    if fold == "all":
        return list(identifiers), list(identifiers)
    if isinstance(fold, str) and fold.isdigit():
        fold = int(fold)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or fold < 0:
        raise ValueError(f"{where}fold must be 'all' or a number from 0, got {fold!r}")
    fold = int(fold)
    if fold >= len(splits):
        warnings.warn(
            f"{where}fold {fold} requested but the splits have only {len(splits)} folds; "
            f"using nnU-Net's seeded random 80:20 split instead",
            stacklevel=2,
        )
        return random_80_20_split(identifiers, fold)
    train, val = list(splits[fold]["train"]), list(splits[fold]["val"])
    if set(train) & set(val):
        warnings.warn(f"{where}fold {fold}: some validation cases are also training cases", stacklevel=2)
    return train, val


def load_fold(
    preprocessed_dataset_folder: str | os.PathLike, fold: int | str, identifiers: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Training and validation cases of ``fold``, exactly as ``nnUNetTrainer.do_split`` finds them.

    Fold ``"all"`` neither reads nor writes ``splits_final.json`` (nnU-Net does not); any other fold
    goes through ``load_or_create_splits`` and ``fold_cases``, whose messages name the file.

    Args:
        preprocessed_dataset_folder: ``nnUNet_preprocessed/DatasetXXX_Name``.
        fold: 0, 1, ... or ``"all"``.
        identifiers: every training case of the dataset.
    """
    if fold == "all":
        return fold_cases([], "all", identifiers)
    path = Path(preprocessed_dataset_folder) / SPLITS_FILE
    return fold_cases(
        load_or_create_splits(preprocessed_dataset_folder, identifiers), fold, identifiers, path
    )
