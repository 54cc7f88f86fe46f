"""Pick the best configuration or pair ensemble from cross-validation, as ``nnUNetv2_find_best_configuration``.

    info = find_best_configuration("Dataset901_BrainTissue", folds=(0, 1, 2, 3, 4))
    info["best_model_or_ensemble"]["selected_model_or_models"]   # [{"configuration": "3d_fullres", ...}]
    print(inference_instructions(info))                          # what to run on new images

Steps (nnU-Net 2.8.1's ``find_best_configuration``):

1. Candidates: nnUNetTrainer / nnUNetPlans x {2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres} by default.
   A configuration missing from the plans is skipped; a present one without a trained model folder is
   an error.
2. Each candidate's fold validations are gathered into ``crossval_results_folds_0_1_...`` and scored
   against ``labelsTr`` (or ``gt_segmentations`` when the raw dataset is absent): its foreground mean Dice.
3. With ensembling allowed, every *pair* of candidates (no triples) is ensembled from the folds'
   ``.npz`` probabilities into ``ensembles/ensemble___A___B___0_1_...`` and scored against
   ``gt_segmentations``.
4. The best foreground mean Dice wins; on a tie the first (single models come before ensembles).
5. Postprocessing is determined on the winner (nnseg_nb.postprocessing).
6. ``inference_information.json`` and ``inference_instructions.txt`` are written into the dataset's results
   folder, with nnU-Net's keys and commands (``nnUNetv2_*``: nnseg_nb writes files nnU-Net can use).
   As in nnU-Net, a cascade's previous-stage predict command is not generated (its check compares a key
   with configuration names, so it never fires).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nnseg_nb.ensemble import ensemble_cases
from nnseg_nb.evaluation import evaluate_folders, labels_or_regions_from_dataset_json, load_summary_json
from nnseg_nb.postprocessing import determine_postprocessing
from nnseg_nb.utils import atomic_write_bytes, atomic_write_json, load_json

# nnU-Net's default number of processes, written into the instructions it generates.
NNUNET_DEFAULT_NUM_PROCESSES = 8


@dataclass(frozen=True)
class TrainedModel:
    """One candidate: a trainer, a plans identifier and a configuration (its folder name joins them)."""

    configuration: str
    trainer: str = "nnUNetTrainer"
    plans: str = "nnUNetPlans"

    @property
    def identifier(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"


DEFAULT_MODELS = tuple(TrainedModel(c) for c in ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"))


def folds_string(folds: Sequence[int]) -> str:
    """``(0, 1, 2) -> "0_1_2"``, as in nnU-Net's folder names."""
    return "_".join(str(f) for f in folds)


def _dataset_folders(dataset: str) -> tuple[Path, Path, Path]:
    from nnseg_nb.paths import dataset_name, preprocessed_root, raw_root, results_root

    name = dataset_name(dataset, [raw_root(), preprocessed_root(), results_root()])
    return raw_root() / name, preprocessed_root() / name, results_root() / name


def _scored_labels(model_folder: Path) -> tuple[dict, list, int | None]:
    dataset_json = load_json(model_folder / "dataset.json")
    return (
        dataset_json,
        labels_or_regions_from_dataset_json(dataset_json),
        dataset_json["labels"].get("ignore"),
    )


# --- cross-validation results ------------------------------------------------------------------


def accumulate_cv_results(
    model_folder: str | os.PathLike,
    merged_folder: str | os.PathLike,
    folds: Sequence[int],
    reference_folder: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Copy every fold's ``validation/`` label maps into ``merged_folder`` and score them there.

    ``plans.json`` and ``dataset.json`` are copied too (postprocessing reads them). A case predicted by
    two folds, or a missing fold, is an error. Returns the summary (also written as ``summary.json``).
    """
    model_folder, merged_folder = Path(model_folder), Path(merged_folder)
    dataset_json, labels_or_regions, ignore_label = _scored_labels(model_folder)
    ending = dataset_json["file_ending"]
    if merged_folder.is_dir():
        shutil.rmtree(merged_folder)
    merged_folder.mkdir(parents=True)
    for name in ("dataset.json", "plans.json"):
        shutil.copy(model_folder / name, merged_folder / name)
    for fold in folds:
        validation = model_folder / f"fold_{fold}" / "validation"
        if not validation.is_dir():
            raise FileNotFoundError(
                f"{validation}: fold {fold} of {model_folder.name} is missing; train it first"
            )
        for path in sorted(validation.glob(f"*{ending}")):
            if (merged_folder / path.name).exists():
                raise ValueError(f"{path}: more than one fold has a prediction for {path.name}")
            shutil.copy(path, merged_folder / path.name)
    return evaluate_folders(
        reference_folder,
        merged_folder,
        labels_or_regions,
        ignore_label,
        ending,
        merged_folder / "summary.json",
        num_workers,
        distance_metrics_on=False,
        progress=progress,
    )


def ensemble_crossvalidations(
    model_folders: Sequence[str | os.PathLike],
    output_folder: str | os.PathLike,
    folds: Sequence[int],
    num_workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Ensemble the fold validations (``.npz``) of several models; copies the first one's plans and dataset.json."""
    model_folders = [Path(m) for m in model_folders]
    dataset_json = load_json(model_folders[0] / "dataset.json")
    members: dict[str, list[Path]] = {}
    for model in model_folders:
        found: dict[str, Path] = {}
        for fold in folds:
            validation = model / f"fold_{fold}" / "validation"
            files = sorted(validation.glob("*.npz")) if validation.is_dir() else []
            if not files:
                raise FileNotFoundError(
                    f"{validation}: no .npz probabilities; run the validation with --npz to ensemble"
                )
            for path in files:
                if path.stem in found:
                    raise ValueError(f"{path}: case {path.stem} is in more than one fold of {model.name}")
                found[path.stem] = path
        for case, path in found.items():
            members.setdefault(case, []).append(path)
    incomplete = sorted(case for case, files in members.items() if len(files) != len(model_folders))
    if incomplete:
        raise ValueError(f"not every model has predictions for {', '.join(incomplete)}")
    written = ensemble_cases(members, output_folder, dataset_json, num_workers=num_workers, progress=progress)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(model_folders[0] / name, Path(output_folder) / name)
    return written


# --- the selection -----------------------------------------------------------------------------


def available_models(models: Sequence[TrainedModel], preprocessed: Path, results: Path) -> list[TrainedModel]:
    """The candidates whose configuration is in their plans; a planned but untrained one is an error."""
    available = []
    for model in models:
        plans_file = preprocessed / f"{model.plans}.json"
        if not plans_file.is_file():
            raise FileNotFoundError(f"{plans_file}: no plans file for {model.identifier}")
        if model.configuration not in load_json(plans_file)["configurations"]:
            continue
        if not (results / model.identifier).is_dir():
            raise FileNotFoundError(
                f"{results / model.identifier}: {model.identifier} is planned but not trained "
                "(train all folds, with --npz to allow ensembling)"
            )
        available.append(model)
    return available


def find_best_configuration(
    dataset: str | int,
    models: Sequence[TrainedModel] = DEFAULT_MODELS,
    allow_ensembling: bool = True,
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    num_workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Rank the candidates and pair ensembles on CV foreground mean Dice; write nnU-Net's result files.

    The roots come from ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` (nnseg_nb.paths).
    Returns the ``inference_information.json`` content.
    """
    raw, preprocessed, results = _dataset_folders(str(dataset))
    gt_folder = preprocessed / "gt_segmentations"
    candidates = available_models(models, preprocessed, results)
    if not candidates:
        raise ValueError(f"{results}: none of {[m.identifier for m in models]} is planned and trained")
    tag = folds_string(folds)
    all_results: dict[str, dict] = {}
    for model in candidates:
        folder = results / model.identifier
        reference = raw / "labelsTr" if (raw / "labelsTr").is_dir() else gt_folder
        merged = folder / f"crossval_results_folds_{tag}"
        summary = accumulate_cv_results(folder, merged, folds, reference, num_workers, progress)
        all_results[model.identifier] = {"source": merged, "result": summary["foreground_mean"]["Dice"]}
    if allow_ensembling:
        for i, first in enumerate(candidates):
            for second in candidates[i + 1 :]:
                name = f"ensemble___{first.identifier}___{second.identifier}___{tag}"
                output = results / "ensembles" / name
                ensemble_crossvalidations(
                    [results / first.identifier, results / second.identifier],
                    output,
                    folds,
                    num_workers,
                    progress,
                )
                _, labels_or_regions, ignore_label = _scored_labels(results / first.identifier)
                summary = evaluate_folders(
                    gt_folder,
                    output,
                    labels_or_regions,
                    ignore_label,
                    load_json(output / "dataset.json")["file_ending"],
                    output / "summary.json",
                    num_workers,
                    distance_metrics_on=False,
                    progress=progress,
                )
                all_results[name] = {"source": output, "result": summary["foreground_mean"]["Dice"]}

    best_score = max(r["result"] for r in all_results.values())
    best = next(k for k, r in all_results.items() if r["result"] == best_score)  # first wins a tie
    source = all_results[best]["source"]
    determine_postprocessing(source, gt_folder, None, source / "dataset.json", num_workers, progress=progress)
    info = {
        "folds": list(folds),
        "dataset_name_or_id": results.name,
        "considered_models": [asdict(m) for m in candidates],
        "ensembling_allowed": allow_ensembling,
        "all_results": {k: r["result"] for k, r in all_results.items()},
        "best_model_or_ensemble": {
            "result_on_crossval_pre_pp": all_results[best]["result"],
            "result_on_crossval_post_pp": load_summary_json(source / "postprocessed" / "summary.json")[
                "foreground_mean"
            ]["Dice"],
            "postprocessing_file": str(source / "postprocessing.pkl"),
            "some_plans_file": str(source / "plans.json"),
            "selected_model_or_models": [_selected(identifier) for identifier in _members(best)],
        },
    }
    atomic_write_json(results / "inference_information.json", info, sort_keys=True)
    atomic_write_bytes(results / "inference_instructions.txt", inference_instructions(info).encode())
    return info


def _members(key: str) -> list[str]:
    """Model identifiers of a result key: itself, or the two of ``ensemble___A___B___folds``."""
    return key.split("___")[1:3] if key.startswith("ensemble___") else [key]


def _selected(identifier: str) -> dict:
    trainer, plans, configuration = identifier.split("__")
    return {"configuration": configuration, "trainer": trainer, "plans_identifier": plans}


def inference_instructions(info: dict, num_processes: int = NNUNET_DEFAULT_NUM_PROCESSES) -> str:
    """The text of nnU-Net's ``inference_instructions.txt`` for an ``inference_information`` dict."""
    selected = info["best_model_or_ensemble"]["selected_model_or_models"]
    is_ensemble = len(selected) > 1
    folds = "".join(f" {f}" for f in info["folds"])
    lines = ["***Run inference like this:***\n"]
    if is_ensemble:
        lines.append(
            "An ensemble won! What a surprise! Run the following commands to run predictions with the "
            "ensemble members:\n"
        )
    outputs = []
    for j, model in enumerate(selected):
        output = f"OUTPUT_FOLDER_MODEL_{j + 1}" if is_ensemble else "OUTPUT_FOLDER"
        outputs.append(output)
        command = (
            f"nnUNetv2_predict -d {info['dataset_name_or_id']} -i INPUT_FOLDER -o {output} -f {folds} "
            f"-tr {model['trainer']} -c {model['configuration']} -p {model['plans_identifier']}"
        )
        lines.append(command + (" --save_probabilities" if is_ensemble else ""))
    if is_ensemble:
        lines.append("\nThe run ensembling with:\n")
        lines.append(f"nnUNetv2_ensemble -i {' '.join(outputs)} -o OUTPUT_FOLDER -np {num_processes}")
    lines.append("\n***Once inference is completed, run postprocessing like this:***\n")
    best = info["best_model_or_ensemble"]
    lines.append(
        f"nnUNetv2_apply_postprocessing -i OUTPUT_FOLDER -o OUTPUT_FOLDER_PP -pp_pkl_file "
        f"{best['postprocessing_file']} -np {num_processes} -plans_json {best['some_plans_file']}"
    )
    return "\n".join(lines) + "\n"
