"""Cross-validation: train the folds of one or more configurations, resumably, then merge their validations.

    from nnseg_nb.crossval import cross_validate
    from nnseg_nb.training import QUICK_CPU
    result = cross_validate("Dataset904_Shapes2D", ["2d"], folds=(0, 1, 2, 3, 4), settings=QUICK_CPU)
    #  2d fold 0: trained, 20 epochs, validation Dice 0.9012 (41 s)      <- one line per fold
    result.summaries["2d"]["foreground_mean"]["Dice"]      # the merged CV Dice, as nnU-Net reports it
    result.merged_folders["2d"]    # .../nnUNetTrainer__nnUNetPlans__2d/crossval_results_folds_0_1_2_3_4

This is what a user of nnU-Net types as five ``nnUNetv2_train DATASET CONFIG FOLD --npz`` per configuration
followed by the aggregation step of ``nnUNetv2_find_best_configuration`` (``accumulate_cv_results``):

- A fold is *done* when its folder holds ``checkpoint_final.pth`` and ``validation/summary.json`` (and, when
  probabilities are kept for ensembling, the validation ``.npz`` files). Done folds are skipped, so a
  second run of the same command only does what is missing.
- Any other fold with a checkpoint is resumed (the trainer's ``continue_training``, nnU-Net's ``--c``):
  an interrupted training goes on from ``checkpoint_latest.pth``; a finished one whose validation is
  missing only predicts its validation cases.
- The cascade: ``3d_cascade_fullres`` reads the segmentations that ``3d_lowres``'s validations wrote into
  ``<lowres model>/predicted_next_stage/3d_cascade_fullres/``. Each case is there only once every
  lowres fold is done (each fold predicts its own validation cases), so cascade folds start after all
  lowres folds of the run.
- ``jobs > 1`` trains that many folds at once, each in a fresh process; with several GPUs each process
  sees one GPU (``CUDA_VISIBLE_DEVICES``), so five folds on five GPUs train side by side. The default is
  one fold after the other in this process.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from nnseg_nb.cascade import next_stage_folder
from nnseg_nb.model_selection import accumulate_cv_results, folds_string
from nnseg_nb.paths import dataset_name, display, model_folder, preprocessed_root, raw_root, results_root
from nnseg_nb.plans import Plans, load_plans
from nnseg_nb.preprocessed import list_cases
from nnseg_nb.splits import load_fold, load_or_create_splits
from nnseg_nb.utils import load_json

ALL_FOLDS = (0, 1, 2, 3, 4)

# What a fold folder says about its state (``fold_state``).
DONE = "done"  # checkpoint_final.pth and validation/summary.json: nothing to do
VALIDATE = "validate"  # trained (checkpoint_final.pth) but not validated
CONTINUE = "continue"  # interrupted: a latest or best checkpoint, no final one
NEW = "new"  # nothing yet


@dataclass(frozen=True)
class FoldJob:
    """One fold of one configuration; everything a (possibly separate) process needs to train it."""

    dataset: str
    configuration: str
    fold: int
    settings: object  # training.TrainingSettings, None for training.NNUNET (untyped: no torch import here)
    plans_name: str = "nnUNetPlans"
    trainer_name: str = "nnUNetTrainer"
    save_probabilities: bool = True
    preprocessed: Path | None = None
    results: Path | None = None
    next_stage_files: tuple[Path, ...] = ()  # the next-stage inputs this fold's validation must leave
    num_workers: int | None = None  # processes scoring the validation (None: min(4, CPUs))


@dataclass
class FoldOutcome:
    """What happened to one fold in a run."""

    configuration: str
    fold: int
    state_before: str  # DONE, VALIDATE, CONTINUE or NEW
    status: str  # "skipped", "trained" or "failed"
    seconds: float = 0.0
    epochs: int | None = None
    validation_dice: float | None = None  # foreground mean Dice of fold_k/validation/summary.json
    error: str | None = None

    def line(self) -> str:
        """The progress line printed when the fold ends."""
        text = f"{self.configuration} fold {self.fold}: {self.status}"
        if self.status == "skipped":
            text += " (done before)"
        if self.epochs is not None and self.status == "trained":
            text += f", {self.epochs} epochs"
        if self.validation_dice is not None:
            text += f", validation Dice {self.validation_dice:.4f}"
        if self.status != "skipped":
            text += f" ({self.seconds:.0f} s)"
        if self.error:
            text += f": {self.error}"
        return text


@dataclass
class CrossValidationResult:
    """The folds' outcomes and, per configuration, the merged CV folder and its summary."""

    outcomes: list[FoldOutcome] = field(default_factory=list)
    merged_folders: dict[str, Path] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> list[FoldOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


# --- where things are ----------------------------------------------------------------------------------


def fold_state(fold_folder: str | os.PathLike, save_probabilities: bool = False) -> str:
    """DONE, VALIDATE, CONTINUE or NEW for a ``fold_k`` folder (see the module docstring).

    With ``save_probabilities`` a fold counts as validated only if its ``validation/`` has ``.npz`` files.
    """
    fold_folder = Path(fold_folder)
    if (fold_folder / "checkpoint_final.pth").is_file():
        validation = fold_folder / "validation"
        validated = (validation / "summary.json").is_file()
        if validated and save_probabilities:
            validated = any(validation.glob("*.npz"))
        return DONE if validated else VALIDATE
    if any((fold_folder / name).is_file() for name in ("checkpoint_latest.pth", "checkpoint_best.pth")):
        return CONTINUE
    return NEW


def validation_dice(fold_folder: str | os.PathLike) -> float | None:
    """The foreground mean Dice of a fold's ``validation/summary.json``, None if it has none."""
    path = Path(fold_folder) / "validation" / "summary.json"
    return float(load_json(path)["foreground_mean"]["Dice"]) if path.is_file() else None


# --- one fold ---------------------------------------------------------------------------------------------


def train_fold(job: FoldJob, continue_training: bool) -> int | None:
    """Train (or resume) one fold with ``training.train``, then validate it; returns its epochs.

    The trainer's own validation is switched off: ``validate_fold`` predicts it (``predict.predict_validation``,
    with ``.npz`` probabilities if ``job.save_probabilities``), and for a configuration with a next stage
    also writes the next stage's inputs (``cascade.predict_next_stage``).
    """
    from nnseg_nb.training import NNUNET, train

    settings = job.settings if job.settings is not None else NNUNET
    # the validation is predicted below, with the .npz ensembling needs (nnU-Net's --npz)
    settings = dataclasses.replace(settings, validate=False)
    result = train(
        job.dataset,
        job.configuration,
        job.fold,
        settings,
        plans_name=job.plans_name,
        trainer_name=job.trainer_name,
        continue_training=continue_training,
        preprocessed=job.preprocessed,
        results=job.results,
    )
    if result.stopped != "finished":
        raise KeyboardInterrupt
    validate_fold(job, settings.device)
    return result.epochs_done


def validate_fold(job: FoldJob, device: str = "auto") -> None:
    """Predict a trained fold's validation cases (and next-stage inputs) where they are missing."""
    from nnseg_nb.cascade import predict_next_stage
    from nnseg_nb.devices import resolve_device
    from nnseg_nb.predict import PredictionSettings, predict_validation

    device = str(resolve_device(device))
    folder = model_folder(
        job.dataset, job.trainer_name, job.plans_name, job.configuration, job.results or results_root()
    )
    pre = Path(job.preprocessed or preprocessed_root()) / job.dataset
    if fold_state(folder / f"fold_{job.fold}", job.save_probabilities) != DONE:
        settings = PredictionSettings(save_probabilities=job.save_probabilities, progress=False)
        predict_validation(
            folder, job.fold, pre, device=device, settings=settings, num_workers=job.num_workers
        )
    if any(not path.is_file() for path in job.next_stage_files):
        predict_next_stage(folder, job.fold, pre, device=device)


def run_fold(job: FoldJob, train_function: Callable = train_fold, gpu: int | None = None) -> FoldOutcome:
    """Bring one fold to DONE; any error is caught into the outcome (the other folds go on).

    ``gpu`` is set as ``CUDA_VISIBLE_DEVICES`` first, so it only takes effect in a fresh process (``jobs > 1``).
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    folder = (
        model_folder(
            job.dataset, job.trainer_name, job.plans_name, job.configuration, job.results or results_root()
        )
        / f"fold_{job.fold}"
    )
    state = fold_state(folder, job.save_probabilities)
    if state == DONE and any(not path.is_file() for path in job.next_stage_files):
        state = VALIDATE
    outcome = FoldOutcome(job.configuration, job.fold, state, "skipped")
    if state == DONE:
        outcome.validation_dice = validation_dice(folder)
        return outcome
    started = time.time()
    try:
        outcome.epochs = train_function(job, state != NEW)
        outcome.status = "trained"
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - reported on the fold's line; the other folds go on
        outcome.status, outcome.error = "failed", f"{type(error).__name__}: {error}"
    outcome.seconds = time.time() - started
    outcome.validation_dice = validation_dice(folder)
    missing = [path for path in job.next_stage_files if not path.is_file()]
    if outcome.status == "trained" and missing:
        outcome.status, outcome.error = "failed", f"{missing[0]}: next-stage input not written"
    if outcome.status == "trained" and fold_state(folder, job.save_probabilities) != DONE:
        outcome.status, outcome.error = (
            "failed",
            f"{folder}: no checkpoint_final.pth or validation after training",
        )
    return outcome


# --- the run ------------------------------------------------------------------------------------------------


def stage_order(plans: Plans, configurations: Sequence[str]) -> list[str]:
    """The configurations with each previous stage before the configurations that read it.

    >>> from types import SimpleNamespace as N
    >>> plans = N(configuration=lambda c: N(previous_stage="3d_lowres" if c == "3d_cascade_fullres" else None))
    >>> stage_order(plans, ["3d_cascade_fullres", "2d", "3d_lowres"])
    ['3d_lowres', '3d_cascade_fullres', '2d']
    """
    ordered: list[str] = []

    def add(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in ordered:
            return
        if name in seen:
            raise ValueError(f"configurations {' -> '.join(seen + (name,))} form a cycle of previous stages")
        previous = plans.configuration(name).previous_stage
        if previous in configurations:
            add(previous, seen + (name,))
        ordered.append(name)

    for name in configurations:
        add(name)
    return ordered


def _check_next_stage_inputs(job: FoldJob, plans: Plans, cases: list[str]) -> None:
    """A cascade fold whose previous stage is not in this run needs every case already predicted."""
    previous = plans.configuration(job.configuration).previous_stage
    folder = next_stage_folder(
        job.results or results_root(),
        job.dataset,
        previous,
        job.configuration,
        job.trainer_name,
        job.plans_name,
    )
    present = {p.name.split(".")[0] for p in folder.glob("*")} if folder.is_dir() else set()
    missing = [c for c in cases if c not in present]
    if missing:
        raise ValueError(
            f"{folder}: {len(missing)} of {len(cases)} cases have no {previous} prediction "
            f"(e.g. {missing[0]}); run all 5 folds of {previous} first (nnseg-nb cv DATASET -c {previous})"
        )


def cross_validate(
    dataset: str | int,
    configurations: Sequence[str],
    folds: Sequence[int] = ALL_FOLDS,
    settings=None,
    *,
    jobs: int = 1,
    gpus: Sequence[int] | None = None,
    plans_name: str = "nnUNetPlans",
    trainer_name: str = "nnUNetTrainer",
    save_probabilities: bool = True,
    preprocessed: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    raw: str | os.PathLike | None = None,
    train_function: Callable = train_fold,
    num_workers: int | None = None,
    echo: Callable[[str], None] | None = print,
) -> CrossValidationResult:
    """Train every (configuration, fold) not yet done, then merge each configuration's validations.

    Args:
        dataset: ``DatasetXXX_Name``, name or id, planned and preprocessed for ``configurations``.
        configurations: e.g. ``["2d", "3d_fullres"]`` or ``["3d_lowres", "3d_cascade_fullres"]``.
        folds: the folds of ``splits_final.json`` to train (written first if missing).
        settings: ``training.TrainingSettings`` (default ``training.NNUNET``); with ``jobs > 1`` the
            per-epoch printing is switched off (the fold lines remain).
        jobs: folds trained at once (separate processes). ``gpus``: the GPU ids they share round robin
            (default: every GPU torch sees when ``jobs > 1``; none on a CPU).
        save_probabilities: keep the validation ``.npz`` probabilities (``--npz``), which ensembling needs.
        preprocessed, results, raw: roots; default the nnU-Net environment variables (nnseg_nb.paths).
        train_function: ``(FoldJob, continue_training) -> epochs``; default ``train_fold``.
        num_workers: processes scoring the fold validations and merged folders (default min(4, CPUs);
            1 scores in the calling process, faster for a few small cases).
        echo: where each fold's line goes (``print``; None for silence).

    Returns:
        CrossValidationResult. The merged folders are written only for configurations whose folds all
        finished; failed folds are listed in ``result.failed`` (and their lines say why).
    """
    started = time.time()
    preprocessed = Path(preprocessed) if preprocessed is not None else preprocessed_root()
    results = Path(results) if results is not None else results_root()
    name = dataset_name(dataset, roots=[preprocessed])
    plans = load_plans(
        _required(preprocessed / name / f"{plans_name}.json", f"run first: nnseg-nb plan {name}")
    )
    for configuration in configurations:
        plans.configuration(configuration)  # names the available ones if it is missing
    order = stage_order(plans, configurations)
    if jobs > 1 and getattr(settings, "progress", False):
        settings = dataclasses.replace(settings, progress=False)
    cases = _training_cases(preprocessed / name, plans, order)
    load_or_create_splits(preprocessed / name, cases)  # once, before any parallel fold reads it

    def job(configuration: str, fold: int) -> FoldJob:
        next_files = tuple(
            next_stage_folder(results, name, configuration, n, trainer_name, plans_name) / f"{case}.npy"
            for n in plans.configuration(configuration).next_stage_names
            for case in load_fold(preprocessed / name, fold, cases)[1]
        )
        return FoldJob(name, configuration, fold, settings, plans_name, trainer_name, save_probabilities,
                       preprocessed, results, next_files, num_workers)  # fmt: skip

    result = CrossValidationResult()
    say = echo or (lambda line: None)
    jobs_in_order = [job(c, f) for c in order for f in folds]
    waits_for = {
        (c, f): [(p, g) for p in order if p == plans.configuration(c).previous_stage for g in folds]
        for c in order
        for f in folds
    }
    for j in jobs_in_order:
        if plans.configuration(j.configuration).previous_stage and not waits_for[(j.configuration, j.fold)]:
            _check_next_stage_inputs(j, plans, cases)
    outcomes = _run_jobs(jobs_in_order, waits_for, jobs, _gpu_list(gpus, jobs), train_function, say)
    result.outcomes = sorted(
        outcomes, key=lambda o: (order.index(o.configuration), list(folds).index(o.fold))
    )

    reference = _reference_folder(Path(raw) if raw is not None else raw_root(), preprocessed, name)
    for configuration in order:
        if any(o.status == "failed" for o in result.outcomes if o.configuration == configuration):
            say(f"{configuration}: not merged, a fold failed")
            continue
        folder = model_folder(name, trainer_name, plans_name, configuration, results)
        merged = folder / f"crossval_results_folds_{folds_string(folds)}"
        summary = accumulate_cv_results(folder, merged, folds, reference, num_workers, progress=False)
        result.merged_folders[configuration], result.summaries[configuration] = merged, summary
        say(
            f"{configuration}: cross-validation Dice {summary['foreground_mean']['Dice']:.4f} -> {display(merged)}"
        )
    result.seconds = time.time() - started
    return result


def _required(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {hint}")
    return path


def _training_cases(dataset_folder: Path, plans: Plans, configurations: list[str]) -> list[str]:
    """The preprocessed cases (of the first configuration); splits are made from them."""
    data_folder = dataset_folder / plans.configuration(configurations[0]).data_identifier
    cases = list_cases(data_folder) if data_folder.is_dir() else []
    if not cases:
        raise FileNotFoundError(
            f"{data_folder}: not preprocessed; run first: nnseg-nb preprocess {dataset_folder.name} "
            f"-c {configurations[0]}"
        )
    return cases


def _reference_folder(raw: Path, preprocessed: Path, name: str) -> Path:
    """``labelsTr`` of the raw dataset, or ``gt_segmentations`` when the raw data is absent (as nnU-Net)."""
    labels = raw / name / "labelsTr"
    return labels if labels.is_dir() else preprocessed / name / "gt_segmentations"


def _gpu_list(gpus: Sequence[int] | None, jobs: int) -> list[int | None]:
    """One entry per parallel slot: a GPU id, or None (no GPU to pin)."""
    if gpus is None and jobs > 1:
        import torch

        gpus = list(range(torch.cuda.device_count()))
    if not gpus or jobs <= 1:
        return [None] * max(jobs, 1)
    return [gpus[i % len(gpus)] for i in range(jobs)]


def _run_jobs(
    jobs: list[FoldJob], waits_for: dict, n_parallel: int, slots: list[int | None], train_function, say
) -> list[FoldOutcome]:
    """Run the fold jobs, each once the folds it waits for are done; in this process if ``n_parallel == 1``."""
    finished: dict[tuple[str, int], FoldOutcome] = {}
    pending = list(jobs)

    def ready(j: FoldJob) -> bool:
        return all(key in finished for key in waits_for[(j.configuration, j.fold)])

    def blocked(j: FoldJob) -> str | None:
        failed = [k for k in waits_for[(j.configuration, j.fold)] if finished[k].status == "failed"]
        return f"{failed[0][0]} fold {failed[0][1]} failed" if failed else None

    def record(outcome: FoldOutcome) -> None:
        finished[(outcome.configuration, outcome.fold)] = outcome
        say(outcome.line())

    if n_parallel <= 1:
        for j in pending:
            reason = blocked(j)
            record(run_fold(j, train_function) if reason is None else _not_run(j, reason))
        return list(finished.values())

    free = list(slots)
    # A fresh process per fold (its own single-worker pool), so CUDA_VISIBLE_DEVICES is set before CUDA
    # starts; ProcessPoolExecutor's max_tasks_per_child would do it, but only from Python 3.11.
    running: dict[Future, tuple[FoldJob, int | None, ProcessPoolExecutor]] = {}
    try:
        while pending or running:
            for j in [j for j in pending if ready(j)]:
                reason = blocked(j)
                if reason is not None:
                    pending.remove(j)
                    record(_not_run(j, reason))
                elif free:
                    pending.remove(j)
                    gpu = free.pop(0)
                    pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
                    running[pool.submit(run_fold, j, train_function, gpu)] = (j, gpu, pool)
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                j, gpu, pool = running.pop(future)
                pool.shutdown()
                free.append(gpu)
                try:
                    record(future.result())
                except Exception as error:  # noqa: BLE001 - the process itself died
                    record(FoldOutcome(j.configuration, j.fold, NEW, "failed", error=repr(error)))
    finally:
        for _, _, pool in running.values():  # interrupted: stop what still runs
            pool.shutdown(wait=False, cancel_futures=True)
    return list(finished.values())


def _not_run(j: FoldJob, reason: str) -> FoldOutcome:
    return FoldOutcome(j.configuration, j.fold, NEW, "failed", error=f"not run: {reason}")
