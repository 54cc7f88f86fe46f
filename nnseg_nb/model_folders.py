"""Trained model folders as nnU-Net v2 lays them out: find them, install a shared zip, look inside, compare.

    demo = demo_model()                              # a tiny model trained by nnunetv2 2.8.1, shipped here
    describe_model_folder(demo.model_folder).lines()  # trainer, plans, configuration, folds, epochs, Dice
    install_model_zip("https://.../model.zip")        # nnUNetv2_install_pretrained_model_from_zip (+ URL)
    find_model_folders(results_root())                # every <Trainer>__<Plans>__<configuration> below
    segmentation_agreement("ours", "nnunet", [1, 2])  # per case: voxels that agree, Dice per label

A model folder is ``<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration>/`` with ``plans.json``,
``dataset.json``, ``dataset_fingerprint.json`` and one ``fold_<k>/`` per trained fold (``checkpoint_final.pth``,
``checkpoint_best.pth``, ``progress.png``, ``validation/summary.json``). nnU-Net shares trained models as a
zip of such folders, paths relative to ``nnUNet_results`` (``nnUNetv2_export_model_to_zip``); installing one
is unzipping it there.

The demo model (``demo_model()``) was trained by nnU-Net 2.8.1 itself (``tests/fixtures/make_nnunet_model.py``:
6 synthetic cases, a custom 3-stage ``3d_tiny`` configuration, 4 epochs, folds 0 and 1), with the two test
images it has never seen and what ``nnUNetv2_predict`` made of them, so a notebook can check that our
prediction of the same images agrees with nnU-Net's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np

from nnseg_nb import io
from nnseg_nb.inference import load_checkpoint
from nnseg_nb.paths import results_root
from nnseg_nb.utils import load_json

DEMO_DATASET = "Dataset990_TinyInfer"
DEMO_MODEL = "nnUNetTrainerTiny__nnUNetPlans__3d_tiny"


@dataclass(frozen=True)
class DemoModel:
    """The model folder nnU-Net trained, two test images, and nnU-Net's predictions of them."""

    model_folder: Path
    images: Path  # imagesTs: {case}_0000.nii.gz
    nnunet_predictions: Path  # nnUNetv2_predict's output for ``images``: {case}.nii.gz and {case}.npz


def demo_model() -> DemoModel:
    """The tiny model trained by nnunetv2 2.8.1 that ships with nnseg_nb (package data, about 0.9 MB)."""
    root = Path(str(resources.files("nnseg_nb").joinpath("demo_assets", "nnunet_model")))
    return DemoModel(
        root / "nnUNet_results" / DEMO_DATASET / DEMO_MODEL, root / "imagesTs", root / "nnunet_predictions"
    )


def parse_model_folder_name(name: str) -> tuple[str, str, str]:
    """``"nnUNetTrainer__nnUNetPlans__3d_fullres"`` -> ``("nnUNetTrainer", "nnUNetPlans", "3d_fullres")``.

    >>> parse_model_folder_name("nnUNetTrainer__nnUNetResEncUNetMPlans__2d")
    ('nnUNetTrainer', 'nnUNetResEncUNetMPlans', '2d')
    """
    parts = name.split("__")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{name!r} is not a model folder name (<Trainer>__<Plans>__<configuration>)")
    return parts[0], parts[1], parts[2]


def is_model_folder(folder: str | os.PathLike) -> bool:
    """A folder with ``plans.json`` and ``dataset.json`` whose name is ``<Trainer>__<Plans>__<configuration>``."""
    folder = Path(folder)
    try:
        parse_model_folder_name(folder.name)
    except ValueError:
        return False
    return (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()


def find_model_folders(root: str | os.PathLike) -> list[Path]:
    """Every model folder at or below ``root``, sorted (``root`` itself may be one)."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob("plans.json") if is_model_folder(p.parent)})


# --- what a folder holds --------------------------------------------------------------------------------


@dataclass
class FoldInfo:
    """One ``fold_<k>`` of a model folder, read from its newest checkpoint and validation summary."""

    fold: str
    checkpoints: list[str]
    epochs: int | None = None  # epochs trained (the checkpoint's current_epoch)
    best_ema_pseudo_dice: float | None = None  # what chose checkpoint_best.pth
    final_pseudo_dice: list[float] | None = None  # per class, the last epoch's online pseudo Dice
    validation_dice: dict[str, float] | None = None  # validation/summary.json: mean Dice per class


@dataclass
class ModelFolderInfo:
    """What :func:`describe_model_folder` found."""

    folder: Path
    dataset: str
    trainer: str
    plans: str
    configuration: str
    labels: dict[str, int]
    channels: dict[str, str]
    folds: list[FoldInfo] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short printable summary, one line per fold."""
        out = [
            f"{self.dataset}: trainer {self.trainer}, plans {self.plans}, configuration {self.configuration}",
            f"channels {self.channels}, labels {self.labels}",
        ]
        for f in self.folds:
            text = f"fold {f.fold}: {', '.join(f.checkpoints)}"
            if f.epochs is not None:
                text += f"; {f.epochs} epochs"
            if f.best_ema_pseudo_dice is not None:
                text += f", best EMA pseudo Dice {f.best_ema_pseudo_dice:.3f}"
            if f.validation_dice:
                text += ", validation Dice " + ", ".join(
                    f"{k}: {v:.3f}" for k, v in f.validation_dice.items()
                )
            out.append(text)
        return out


def _fold_info(fold_folder: Path) -> FoldInfo:
    checkpoints = sorted(p.name for p in fold_folder.glob("checkpoint_*.pth"))
    info = FoldInfo(fold_folder.name[len("fold_") :], checkpoints)
    newest = next((n for n in ("checkpoint_final.pth", "checkpoint_latest.pth") if n in checkpoints), None)
    if newest is not None:
        checkpoint = load_checkpoint(fold_folder / newest)
        logging = checkpoint.get("logging") or {}
        info.epochs = int(checkpoint.get("current_epoch", 0)) or None
        best = checkpoint.get("_best_ema")
        info.best_ema_pseudo_dice = float(best) if best is not None else None
        per_class = logging.get("dice_per_class_or_region") or []
        info.final_pseudo_dice = [float(d) for d in per_class[-1]] if per_class else None
    summary = fold_folder / "validation" / "summary.json"
    if summary.is_file():
        means = load_json(summary).get("mean", {})
        info.validation_dice = {str(k): float(v["Dice"]) for k, v in means.items()}
    return info


def describe_model_folder(folder: str | os.PathLike) -> ModelFolderInfo:
    """Read a model folder's name, dataset.json and each fold's checkpoint and validation summary.

    >>> describe_model_folder(demo_model().model_folder).folds[0].epochs
    4
    """
    folder = Path(folder)
    if not is_model_folder(folder):
        raise FileNotFoundError(
            f"{folder}: not a model folder (needs plans.json, dataset.json and a name "
            "<Trainer>__<Plans>__<configuration>)"
        )
    trainer, plans, configuration = parse_model_folder_name(folder.name)
    dataset_json = load_json(folder / "dataset.json")
    folds = sorted(
        (p for p in folder.glob("fold_*") if p.is_dir()),
        key=lambda p: (not p.name[5:].isdigit(), int(p.name[5:]) if p.name[5:].isdigit() else 0),
    )
    return ModelFolderInfo(
        folder=folder,
        dataset=folder.parent.name,
        trainer=trainer,
        plans=plans,
        configuration=configuration,
        labels=dict(dataset_json["labels"]),
        channels=dict(dataset_json.get("channel_names") or dataset_json.get("modality") or {}),
        folds=[_fold_info(p) for p in folds],
    )


# --- shared zips ----------------------------------------------------------------------------------------


def _download(url: str, target: Path) -> None:
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=100) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def _safe_members(archive: zipfile.ZipFile, zip_name: str) -> list[str]:
    """The archive's member names; an absolute path or a ``..`` would write outside the target: refused."""
    names = archive.namelist()
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{zip_name}: member {name!r} would be written outside the results folder")
    return names


def install_model_zip(source: str | os.PathLike, results: str | os.PathLike | None = None) -> list[Path]:
    """Unzip a model shared by ``nnUNetv2_export_model_to_zip`` into ``results`` (default ``nnUNet_results``).

    ``source`` is a zip file or an http(s) URL (downloaded to a temporary file first), as
    ``nnUNetv2_install_pretrained_model_from_zip`` and ``nnUNetv2_download_pretrained_model_by_url``.
    Returns the model folders the zip held, in ``results``. Existing files of the same name are replaced.
    """
    results = Path(results) if results is not None else results_root()
    results.mkdir(parents=True, exist_ok=True)
    is_url = str(source).startswith(("http://", "https://"))
    with tempfile.TemporaryDirectory(dir=results) as tmp:
        zip_file = Path(tmp) / "model.zip" if is_url else Path(source)
        if is_url:
            _download(str(source), zip_file)
        if not zip_file.is_file():
            raise FileNotFoundError(f"{zip_file}: no such zip file")
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(zip_file) as archive:
                names = _safe_members(archive, str(source))
                archive.extractall(unpacked)
        except zipfile.BadZipFile:
            raise ValueError(f"{source}: not a zip file") from None
        for item in sorted(unpacked.rglob("*")):  # file by file: a dataset folder may hold other models
            if item.is_file():
                target = results / item.relative_to(unpacked)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(item), target)
    tops = sorted({PurePosixPath(n.replace("\\", "/")).parts[0] for n in names})
    folders = sorted({f for top in tops for f in find_model_folders(results / top)})
    if not folders:
        raise ValueError(f"{source}: the zip holds no model folder (<Trainer>__<Plans>__<configuration>)")
    return folders


# --- two sets of predictions ----------------------------------------------------------------------------


def segmentation_agreement(
    predictions: str | os.PathLike,
    other: str | os.PathLike,
    labels: Sequence[int],
    file_ending: str = ".nii.gz",
) -> list[dict]:
    """Compare two folders of label maps case by case (e.g. ours and ``nnUNetv2_predict``'s).

    Returns one row per case found in both: ``case``, ``voxels``, ``agreement`` (the share of voxels with
    the same label), ``differing`` (their count), ``Dice`` per label (``{label: value}``, NaN when the label
    is in neither) and, where both folders hold ``{case}.npz`` probabilities, ``max_probability_difference``.
    """
    predictions, other = Path(predictions), Path(other)
    cases = sorted(
        p.name[: -len(file_ending)] for p in predictions.glob(f"*{file_ending}") if (other / p.name).is_file()
    )
    if not cases:
        raise FileNotFoundError(f"{predictions} and {other} have no {file_ending} case in common")
    rows = []
    for case in cases:
        a, _ = io.read_seg(predictions / f"{case}{file_ending}")
        b, _ = io.read_seg(other / f"{case}{file_ending}")
        if a.shape != b.shape:
            raise ValueError(
                f"{case}: shapes differ, {a.shape[1:]} in {predictions}, {b.shape[1:]} in {other}"
            )
        row = {
            "case": case,
            "voxels": int(a.size),
            "agreement": float((a == b).mean()),
            "differing": int((a != b).sum()),
        }
        dice = {}
        for label in labels:
            in_a, in_b = a == label, b == label
            total = int(in_a.sum() + in_b.sum())
            dice[int(label)] = 2 * int((in_a & in_b).sum()) / total if total else float("nan")
        row["Dice"] = dice
        npz_a, npz_b = predictions / f"{case}.npz", other / f"{case}.npz"
        if npz_a.is_file() and npz_b.is_file():
            with np.load(npz_a) as pa, np.load(npz_b) as pb:
                row["max_probability_difference"] = float(
                    np.abs(
                        pa["probabilities"].astype(np.float32) - pb["probabilities"].astype(np.float32)
                    ).max()
                )
        rows.append(row)
    return rows
