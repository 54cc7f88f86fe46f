"""Predict images with a trained model: in memory (notebooks), file by file, a folder, or a fold's validation.

    model = load_model(model_folder, folds=[0, 1, 2, 3, 4])
    seg = predict_image(model, image, props)                  # image: (C, Z, Y, X) as io.read_case returns
    predict_folder(model, "imagesTs", "predictions")          # {case}_0000.nii.gz ... -> {case}.nii.gz
    predict_validation(model_folder, fold=0)                  # fold_0/validation/*.nii.gz + summary.json

Each case is preprocessed with the model's plans exactly as in training (``preprocess_case``), predicted
by sliding window (``nnseg_nb.inference``) and exported with the input's geometry (``nnseg_nb.export``).
While one case is predicted, the next is preprocessed and the previous exported, in threads (nnU-Net:
worker processes). A case that cannot be read or predicted is reported and the others go on.

A cascade stage (``3d_cascade_fullres``) needs the previous stage's segmentations: they are read as a
label map, go through the same transpose/crop/resample, and their one-hot encoding of the foreground labels
is appended to the image channels, as nnU-Net does.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnseg_nb import io
from nnseg_nb.dataset import find_image_cases
from nnseg_nb.export import export_prediction, logits_to_segmentation
from nnseg_nb.inference import CHECKPOINT_NAME, TILE_STEP_SIZE, Model, load_model, predict_logits
from nnseg_nb.preprocessed import load_case as load_preprocessed_case
from nnseg_nb.preprocessing import preprocess_case
from nnseg_nb.utils import atomic_write_json, load_json

# An input whose spacing differs from the training median by more than this factor on an axis is predicted,
# with a warning: the network never saw structures at that scale (nnU-Net says nothing).
SPACING_WARNING_FACTOR = 2.0


@dataclass
class PredictionSettings:
    """How to predict (nnUNetv2_predict's flags)."""

    tile_step_size: float = TILE_STEP_SIZE
    use_mirroring: bool = True
    save_probabilities: bool = False
    tiles_per_batch: int | None = None  # None: the configuration's batch size
    precision: str = "auto"  # see devices.autocast_dtype
    num_workers: int = 2  # threads that preprocess and export around the prediction
    overwrite: bool = True  # False: skip cases whose output exists (nnU-Net's --continue_prediction)
    progress: bool = True


@dataclass
class PredictionReport:
    """What a folder prediction did: written files, skipped cases, and a message per failed case."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# --- one case --------------------------------------------------------------------------------------


def one_hot_previous_stage(seg: np.ndarray, foreground_labels: Sequence[int], dtype=np.float32) -> np.ndarray:
    """(1, Z, Y, X) previous-stage labels -> (len(foreground_labels), Z, Y, X), one channel per label.

    >>> one_hot_previous_stage(np.array([[[[0, 1, 2, -1]]]]), [1, 2])[:, 0, 0]
    array([[0., 1., 0., 0.],
           [0., 0., 1., 0.]], dtype=float32)
    """
    return np.stack([seg[0] == label for label in foreground_labels]).astype(dtype)


def spacing_warning(model: Model, props: dict, name: str) -> str | None:
    """A warning text when the image's spacing is far (``SPACING_WARNING_FACTOR``) from the training median."""
    median = model.plans.original_median_spacing_after_transp
    if not median:
        return None
    spacing = [props["spacing"][a] for a in model.plans.transpose_forward]
    if any(max(s / m, m / s) > SPACING_WARNING_FACTOR for s, m in zip(spacing, median) if s > 0 and m > 0):
        return f"{name}: spacing {spacing} is far from the training data's median {median}; check the result"
    return None


def preprocess_for_prediction(
    model: Model,
    image: np.ndarray,
    props: dict,
    previous_stage: np.ndarray | None = None,
    name: str = "image",
) -> tuple[np.ndarray, dict]:
    """Preprocess an image as in training; a cascade stage also gets the previous stage's one-hot channels."""
    image_channels = model.num_input_channels - (
        len(model.labels.foreground_labels) if model.configuration.previous_stage else 0
    )
    if image.ndim != 4 or image.shape[0] != image_channels:
        raise ValueError(
            f"{name}: the model takes {image_channels} image channel(s), got shape {image.shape}"
        )
    if model.configuration.previous_stage and previous_stage is None:
        raise ValueError(
            f"{name}: {model.configuration_name} is a cascade stage; it needs the prediction of "
            f"{model.configuration.previous_stage} (--prev-stage-predictions)"
        )
    warning = spacing_warning(model, props, name)
    if warning:
        warnings.warn(warning, stacklevel=2)
    data, seg, properties = preprocess_case(
        image, previous_stage, props, model.plans, model.configuration_name, model.dataset_json
    )
    properties.pop("class_locations", None)
    if previous_stage is not None:
        data = np.concatenate([data, one_hot_previous_stage(seg, model.labels.foreground_labels, data.dtype)])
    return data, properties


def predict_image(
    model: Model,
    image: np.ndarray,
    props: dict,
    previous_stage: np.ndarray | None = None,
    settings: PredictionSettings | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predict an in-memory image; returns the label map (Z, Y, X) in the image's axis order and shape, and
    with ``settings.save_probabilities`` also the (C, Z, Y, X) probabilities. With ``settings.progress`` (the
    default) a bar counts the sliding window's tiles.

    >>> image, props = io.read_case(["case_0000.nii.gz"])     # doctest: +SKIP
    >>> seg = predict_image(model, image, props)               # doctest: +SKIP
    """
    settings = settings or PredictionSettings()
    data, properties = preprocess_for_prediction(model, image, props, previous_stage)
    logits = _logits(model, data, settings, tile_progress=settings.progress)
    return logits_to_segmentation(
        logits,
        properties,
        model.plans,
        model.configuration_name,
        model.dataset_json,
        settings.save_probabilities,
    )


def _logits(
    model: Model, data: np.ndarray, settings: PredictionSettings, tile_progress: bool = False
) -> np.ndarray:
    return predict_logits(
        model,
        data,
        settings.tile_step_size,
        settings.use_mirroring,
        settings.tiles_per_batch,
        settings.precision,
        progress=tile_progress,  # one image: a bar over its tiles; a folder has a bar over its cases
    ).numpy()


# --- many cases -------------------------------------------------------------------------------------


@dataclass
class _Job:
    name: str
    output_stem: str
    prepare: object  # () -> (data, properties): reads and preprocesses, in a worker thread
    also_export: object = None  # (logits, properties) -> None: an extra export (the next cascade stage)


def _run_jobs(model: Model, jobs: list[_Job], settings: PredictionSettings, report: PredictionReport) -> None:
    """Preprocess ahead, predict on the main thread, export behind: one case's failure is only reported."""
    with ThreadPoolExecutor(max_workers=max(1, settings.num_workers)) as pool:
        queue, exports, remaining = deque(), [], iter(jobs)

        def submit_next() -> None:
            job = next(remaining, None)
            if job is not None:
                queue.append((job, pool.submit(job.prepare)))

        for _ in range(max(1, settings.num_workers)):
            submit_next()
        with _progress(len(jobs), settings.progress) as bar:
            while queue:
                job, prepared = queue.popleft()
                try:
                    data, properties = prepared.result()
                    submit_next()
                    logits = _logits(model, data, settings)
                    exports.append(
                        (
                            job,
                            pool.submit(
                                export_prediction,
                                logits,
                                properties,
                                model.plans,
                                model.configuration_name,
                                model.dataset_json,
                                job.output_stem,
                                settings.save_probabilities,
                            ),
                        )
                    )
                    if job.also_export is not None:
                        exports.append((job, pool.submit(job.also_export, logits, properties)))
                except Exception as e:  # noqa: BLE001  (reported per case; the others go on)
                    submit_next()
                    report.failed[job.name] = _message(job.name, e)
                bar.update()
        for job, exported in exports:
            try:
                written = exported.result()
                if written is not None:  # the next-stage export writes no label file of its own
                    report.written.append(written)
            except Exception as e:  # noqa: BLE001
                report.failed[job.name] = _message(job.name, e)


def _message(name: str, error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if name in text else f"{name}: {text}"


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cases", disable=not enabled)


def _write_folder_info(model: Model, output_folder: Path, settings: PredictionSettings) -> None:
    output_folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_folder / "dataset.json", model.dataset_json)
    atomic_write_json(output_folder / "plans.json", model.plans.to_json())
    args = {
        "model_folder": str(model.folder),
        "folds": model.folds,
        "configuration": model.configuration_name,
        **{k: v for k, v in vars(settings).items() if k != "progress"},
    }
    atomic_write_json(output_folder / "predict_from_raw_data_args.json", args)


def predict_files(
    model: Model,
    cases: dict[str, Sequence[str | os.PathLike]],
    output_folder: str | os.PathLike,
    previous_stage_folder: str | os.PathLike | None = None,
    settings: PredictionSettings | None = None,
) -> PredictionReport:
    """Predict ``{case: [channel files]}`` into ``output_folder/{case}{file_ending}`` (+ .npz/.pkl).

    ``previous_stage_folder``: a cascade's previous-stage segmentations, ``{case}{file_ending}``.
    """
    settings = settings or PredictionSettings()
    output_folder = Path(output_folder)
    _write_folder_info(model, output_folder, settings)
    ending = model.dataset_json["file_ending"]
    report, jobs = PredictionReport(), []
    start = time.perf_counter()
    for case, files in cases.items():
        stem = output_folder / case
        if not settings.overwrite and Path(f"{stem}{ending}").is_file():
            report.skipped.append(case)
            continue
        previous = Path(previous_stage_folder) / f"{case}{ending}" if previous_stage_folder else None
        jobs.append(_Job(case, str(stem), _reader(model, case, list(files), previous)))
    _run_jobs(model, jobs, settings, report)
    report.seconds = time.perf_counter() - start
    return report


def _reader(model: Model, case: str, files: list, previous: Path | None):
    def prepare() -> tuple[np.ndarray, dict]:
        image, props = io.read_case(files)
        seg = None
        if previous is not None:
            if not previous.is_file():
                raise FileNotFoundError(f"{previous}: no previous-stage prediction for case {case}")
            seg, _ = io.read_seg(previous)
        return preprocess_for_prediction(model, image, props, seg, name=str(files[0]))

    return prepare


def predict_folder(
    model: Model,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    previous_stage_folder: str | os.PathLike | None = None,
    settings: PredictionSettings | None = None,
) -> PredictionReport:
    """Predict every ``{case}_{XXXX}{file_ending}`` case of ``input_folder`` (nnUNetv2_predict -i -o).

    A case with the wrong number of channel files is reported as failed, the others are predicted.
    """
    input_folder = Path(input_folder)
    if not input_folder.is_dir():
        raise FileNotFoundError(f"{input_folder}: no such input folder")
    cases = find_image_cases(input_folder, model.dataset_json["file_ending"])
    if not cases:
        raise FileNotFoundError(
            f"{input_folder}: no images named {{case}}_0000{model.dataset_json['file_ending']}"
        )
    n_channels = len(model.dataset_json.get("channel_names") or model.dataset_json.get("modality"))
    wrong = {c: f for c, f in cases.items() if len(f) != n_channels}
    report = predict_files(
        model,
        {c: f for c, f in cases.items() if c not in wrong},
        output_folder,
        previous_stage_folder,
        settings,
    )
    for case, files in wrong.items():
        report.failed[case] = (
            f"{input_folder / case}: {len(files)} channel file(s) ({', '.join(p.name for p in files)}), "
            f"the model takes {n_channels}"
        )
    return report


# --- validation after training ------------------------------------------------------------------------


def predict_validation(
    model_folder: str | os.PathLike,
    fold: int | str,
    preprocessed_dataset_folder: str | os.PathLike | None = None,
    checkpoint_name: str = CHECKPOINT_NAME,
    device: str = "cpu",
    settings: PredictionSettings | None = None,
    num_workers: int | None = None,
) -> dict:
    """nnU-Net's ``perform_actual_validation``: predict the fold's validation cases from their preprocessed
    arrays, export them to ``fold_k/validation/{case}{file_ending}`` with the raw geometry, and score them
    against ``gt_segmentations`` into ``fold_k/validation/summary.json``. Returns the summary.

    ``preprocessed_dataset_folder``: ``nnUNet_preprocessed/<DatasetName>`` (default: from the results path,
    ``<results>/<DatasetName>/<model>`` -> ``preprocessed_root()/<DatasetName>``). ``num_workers``: processes
    scoring the cases (default min(4, CPUs); 1 scores here, which is faster for a few small cases).
    """
    from nnseg_nb.evaluation import evaluate_folders, labels_or_regions_from_dataset_json
    from nnseg_nb.paths import preprocessed_root

    model_folder = Path(model_folder)
    model = load_model(model_folder, [fold], checkpoint_name, device)
    settings = settings or PredictionSettings()
    pre = Path(preprocessed_dataset_folder or preprocessed_root() / model_folder.parent.name)
    splits = load_json(pre / "splits_final.json")
    if fold == "all":
        raise ValueError("fold 'all' trains on every case: it has no validation cases")
    cases = splits[int(fold)]["val"]
    data_folder = pre / model.configuration.data_identifier
    previous_folder = None
    if model.configuration.previous_stage:
        previous_folder = (
            model_folder.parent
            / model_folder.name.replace(model.configuration_name, model.configuration.previous_stage)
            / "predicted_next_stage"
            / model.configuration_name
        )
    output = model_folder / f"fold_{fold}" / "validation"
    output.mkdir(parents=True, exist_ok=True)
    jobs = [
        _Job(
            c,
            str(output / c),
            _preprocessed_reader(model, data_folder, c, previous_folder),
            _next_stage_exporter(model, pre, c) if model.configuration.next_stage_names else None,
        )
        for c in cases
    ]
    report = PredictionReport()
    _run_jobs(model, jobs, settings, report)
    if report.failed:
        raise RuntimeError("validation failed for:\n" + "\n".join(report.failed.values()))
    return evaluate_folders(
        pre / "gt_segmentations",
        output,
        labels_or_regions_from_dataset_json(model.dataset_json),
        ignore_label=model.labels.ignore_label,
        file_ending=model.dataset_json["file_ending"],
        output_file=output / "summary.json",
        num_workers=num_workers,
        progress=settings.progress,
    )


def _preprocessed_reader(model: Model, folder: Path, case: str, previous_folder: Path | None):
    def prepare() -> tuple[np.ndarray, dict]:

        data, _, properties = load_preprocessed_case(folder, case)
        data = np.asarray(data, dtype=np.float32)
        if previous_folder is not None:
            previous = _load_previous_stage(previous_folder, case)
            data = np.concatenate([data, one_hot_previous_stage(previous, model.labels.foreground_labels)])
        properties.pop("class_locations", None)
        return data, {**properties, **io.props_from_nnunet(properties, folder / case)}

    return prepare


def _next_stage_exporter(model: Model, preprocessed_dataset_folder: Path, case: str):
    """nnU-Net's ``resample_and_save``: a lowres prediction for the cascade, on the next stage's preprocessed
    grid, as ``<model>/predicted_next_stage/<next>/{case}.npy`` ((Z, Y, X) labels; cascade.export_next_stages)."""

    def export(logits: np.ndarray, properties: dict) -> None:
        from nnseg_nb.cascade import export_next_stages

        spacing = [properties["spacing"][axis] for axis in model.plans.transpose_forward]
        export_next_stages(
            logits, case, model.plans, model.configuration_name, model.dataset_json, spacing, model.folder,
            preprocessed_dataset_folder,
        )  # fmt: skip

    return export


def _load_previous_stage(folder: Path, case: str) -> np.ndarray:
    from nnseg_nb.preprocessed import read_b2nd

    if (folder / f"{case}.b2nd").is_file():
        seg = read_b2nd(folder / f"{case}.b2nd")
    elif (folder / f"{case}.npy").is_file():
        seg = np.load(folder / f"{case}.npy")
    else:
        raise FileNotFoundError(f"{folder}: no previous-stage prediction for {case} (.b2nd or .npy)")
    return seg if seg.ndim == 4 else seg[None]
