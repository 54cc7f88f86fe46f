"""Turn other dataset layouts into nnU-Net v2 raw datasets (the source is only read, never changed).

    convert_msd("downloads/Task04_Hippocampus")                 # -> nnseg_data/raw/Dataset004_Hippocampus
    convert_v1("nnUNet_raw_data/Task501_Liver", dataset_id=501)  # nnU-Net v1 task -> Dataset501_Liver
    convert_folders("input", "ground_truth", name="Nuclei", dataset_id=900,
                    channel_names={"0": "R", "1": "G", "2": "B"}, labels={"background": 0, "nucleus": 1})

Each converter builds the dataset in a hidden temporary folder next to the target and renames it into
place when complete, so a failed or interrupted conversion leaves nothing half-written. An existing
dataset is only replaced with ``overwrite=True``; a dataset id already used by another name is refused.
Check the result with :func:`nnseg_nb.verify.verify_dataset`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import io
from .dataset import label_problems, upgrade_v1_dataset_json, write_dataset_json
from .parallel import map_in_processes
from .paths import dataset_folder_name, list_datasets, parse_dataset_folder_name, raw_root
from .utils import load_json

# dataset.json keys of MSD / nnU-Net v1 that v2 does not have (the file lists are replaced by the folders).
_V1_ONLY_KEYS = ("modality", "training", "test", "numTest", "tensorImageSize")
# Label file name endings tried, in order, when matching labels to images by name.
LABEL_SUFFIXES = ("", "_seg", "_label", "_labels", "_mask", "_masks", "_gt", "_segmentation")


# --- the target folder, written atomically ----------------------------------------------------------


@contextmanager
def _new_dataset_folder(
    dataset_id: int,
    name: str,
    output_root: str | os.PathLike | None,
    overwrite: bool,
    sources: Sequence[Path],
) -> Iterator[tuple[Path, Path]]:
    """Yield ``(empty temporary folder, target)``; on success the folder becomes the target in one rename."""
    root = Path(output_root) if output_root is not None else raw_root()
    target = root / dataset_folder_name(dataset_id, name)
    for source in sources:
        a, b = Path(source).resolve(), target.resolve()
        if a == b or a in b.parents or b in a.parents:
            raise ValueError(
                f"{target}: the new dataset would overlap its source {source}; choose another id or output root"
            )
    clashes = [
        n
        for n in list_datasets(root)
        if n != target.name and parse_dataset_folder_name(n)[0] == int(dataset_id)
    ]
    if clashes:
        raise FileExistsError(
            f"{root / clashes[0]}: dataset id {int(dataset_id):03d} is taken; choose another id"
        )
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists; pass overwrite=True (--overwrite) to replace it")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        yield tmp, target
        if target.exists():  # overwrite: swap the folders, then delete the old one
            old = tmp.with_name(tmp.name + ".old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _parse_task_folder(folder: Path) -> tuple[int, str]:
    """``Task04_Hippocampus`` or ``Task004_Hippocampus`` -> ``(4, 'Hippocampus')``."""
    match = re.fullmatch(r"Task(\d+)_(.+)", folder.name)
    if not match:
        raise ValueError(f"{folder}: expected a folder named TaskXX_Name (or pass dataset_id and name)")
    return int(match.group(1)), match.group(2)


def _visible_files(folder: Path, ending: str | None = None) -> list[Path]:
    """Files of ``folder`` without hidden ones (macOS ``._`` files, ``.DS_Store``), sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and (ending is None or p.name.endswith(ending))
    )


def _require_dirs(source: Path, *names: str) -> None:
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")
    for name in names:
        if not (source / name).is_dir():
            raise FileNotFoundError(f"{source / name}: missing folder")


def _is_already_split(images_dir: Path, ending: str, v1_json: dict) -> bool:
    """True when the images are ``case_0000`` files (nnU-Net v1), not one (4D) file per case (MSD).

    Both layouts list ``./imagesTr/case.nii.gz`` under ``training``; which of the two files exists decides.
    """
    listed = [
        Path(e["image"]).name for e in v1_json.get("training") or [] if isinstance(e, dict) and e.get("image")
    ]
    if listed:
        split = [n[: -len(ending)] + "_0000" + ending for n in listed if n.endswith(ending)]
        return not any((images_dir / n).is_file() for n in listed) and any(
            (images_dir / n).is_file() for n in split
        )
    files = _visible_files(images_dir, ending)
    return bool(files) and all(re.search(r"_\d{4}" + re.escape(ending) + "$", p.name) for p in files)


# --- (a) Medical Segmentation Decathlon -------------------------------------------------------------


def convert_msd(
    source: str | os.PathLike,
    dataset_id: int | None = None,
    output_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Convert an MSD ``TaskXX_Name`` folder into ``DatasetXXX_Name`` (what ``nnUNetv2_convert_MSD_dataset`` does).

    Multi-modal 4D NIfTI images are split into one file per channel (``_0000``, ``_0001`` ...) with the
    source header's geometry kept exactly; 3D images and the label maps are copied byte for byte;
    ``imagesTs`` is converted too. Hidden files (``._case.nii.gz`` from macOS archives) are skipped.

    Args:
        source: the ``TaskXX_Name`` folder (with ``dataset.json``, ``imagesTr``, ``labelsTr``).
        dataset_id: the new id (default: XX).
        output_root: where the dataset goes (default: the raw root, ``$nnUNet_raw``).
    Returns:
        The new dataset folder.
    """
    source = Path(source)
    _require_dirs(source, "imagesTr", "labelsTr")
    task_id, name = _parse_task_folder(source)
    msd_json = load_json(source / "dataset.json") if (source / "dataset.json").is_file() else None
    if not isinstance(msd_json, dict) or "modality" not in msd_json:
        raise ValueError(
            f"{source / 'dataset.json'}: missing or not an MSD dataset.json (it needs 'modality')"
        )
    if _is_already_split(source / "imagesTr", ".nii.gz", msd_json):
        raise ValueError(
            f"{source / 'imagesTr'}: images are already split into _0000 files; "
            "this is an nnU-Net v1 task: use convert_v1"
        )
    num_channels = len(msd_json["modality"])
    images = [(p, "imagesTr") for p in _visible_files(source / "imagesTr", ".nii.gz")]
    images += [(p, "imagesTs") for p in _visible_files(source / "imagesTs", ".nii.gz")]
    dataset_id = task_id if dataset_id is None else dataset_id
    with _new_dataset_folder(dataset_id, name, output_root, overwrite, [source]) as (tmp, target):
        jobs = [(str(path), str(tmp / folder), num_channels) for path, folder in images]
        map_in_processes(
            _split_4d_nifti, jobs, num_workers=num_workers, progress=progress, desc="split 4D images"
        )
        _copy_files(_visible_files(source / "labelsTr", ".nii.gz"), tmp / "labelsTr")
        dataset_json = upgrade_v1_dataset_json(msd_json)
        num_training = dataset_json.get("numTraining", sum(folder == "imagesTr" for _, folder in images))
        _write_v2_json(tmp, dataset_json, num_training, ".nii.gz")
    return target


def _split_4d_nifti(job: tuple[str, str, int]) -> None:
    """Write the volumes of a 4D NIfTI as ``{case}_{c:04d}.nii.gz`` files with the source's header (a 3D one is copied)."""
    import nibabel as nib

    path, out_dir, num_channels = Path(job[0]), Path(job[1]), job[2]
    case = path.name[: -len(".nii.gz")]
    out_dir.mkdir(parents=True, exist_ok=True)
    image = nib.load(str(path))
    volumes = image.shape[3] if len(image.shape) == 4 else 1
    if len(image.shape) not in (3, 4) or volumes != num_channels:
        raise ValueError(
            f"{path}: shape {image.shape} holds {volumes} volume(s), "
            f"but dataset.json 'modality' lists {num_channels} channel(s)"
        )
    if len(image.shape) == 3:
        shutil.copyfile(path, out_dir / f"{case}_0000.nii.gz")
        return
    data = np.asanyarray(image.dataobj)  # scaled by scl_slope/inter, as every reader sees it
    for channel in range(volumes):
        # No affine given: the copied header keeps its q/s-form fields verbatim (nibabel would re-derive them).
        volume = nib.Nifti1Image(data[..., channel], None, header=image.header.copy())
        volume.header.set_data_dtype(data.dtype)
        nib.save(volume, str(out_dir / f"{case}_{channel:04d}.nii.gz"))


def _copy_files(files: Sequence[Path], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, out_dir / path.name)


def _write_v2_json(folder: Path, dataset_json: dict, num_training: int, file_ending: str) -> dict:
    extra = {
        k: v
        for k, v in dataset_json.items()
        if k not in _V1_ONLY_KEYS + ("channel_names", "labels", "numTraining", "file_ending")
    }
    return write_dataset_json(
        folder, dataset_json["channel_names"], dataset_json["labels"], num_training, file_ending, **extra
    )


# --- (c) nnU-Net v1 task ----------------------------------------------------------------------------


def convert_v1(
    source: str | os.PathLike,
    dataset_id: int | None = None,
    name: str | None = None,
    output_root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert an nnU-Net v1 ``TaskXXX_Name`` folder (images already split into ``_0000`` files) to v2.

    The image folders (``imagesTr``, ``labelsTr``, ``imagesTs``, ``labelsTs``, ``imagesVal``,
    ``labelsVal``) are copied without hidden files; ``dataset.json`` gets ``channel_names``,
    name -> value ``labels`` and ``file_ending`` (what ``nnUNetv2_convert_old_nnUNet_dataset`` does).
    """
    source = Path(source)
    _require_dirs(source, "imagesTr", "labelsTr")
    task_id, task_name = (
        _parse_task_folder(source) if (dataset_id is None or name is None) else (dataset_id, name)
    )
    raw_json = load_json(source / "dataset.json") if (source / "dataset.json").is_file() else None
    dataset_json = upgrade_v1_dataset_json(raw_json) if isinstance(raw_json, dict) else {}
    if "channel_names" not in dataset_json or "labels" not in dataset_json:
        raise ValueError(
            f"{source / 'dataset.json'}: missing or without 'modality'/'channel_names' and 'labels'"
        )
    ending = dataset_json["file_ending"]
    if _visible_files(source / "imagesTr", ending) and not _is_already_split(
        source / "imagesTr", ending, raw_json
    ):
        raise ValueError(
            f"{source / 'imagesTr'}: images are not split into _0000 files; "
            "this looks like an MSD task: use convert_msd"
        )
    dataset_id = task_id if dataset_id is None else dataset_id
    with _new_dataset_folder(dataset_id, name or task_name, output_root, overwrite, [source]) as (
        tmp,
        target,
    ):
        for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "imagesVal", "labelsVal"):
            if (source / folder).is_dir():
                _copy_files(_visible_files(source / folder), tmp / folder)
        num_training = dataset_json.get("numTraining", len(_visible_files(source / "labelsTr", ending)))
        _write_v2_json(tmp, dataset_json, num_training, ending)
    return target


# --- (b) a folder of images and a folder of labels ---------------------------------------------------


def convert_folders(
    images_dir: str | os.PathLike | Sequence[str | os.PathLike],
    labels_dir: str | os.PathLike,
    name: str,
    dataset_id: int,
    channel_names: dict | Sequence[str] | None = None,
    labels: dict | Sequence[str] | None = None,
    *,
    output_root: str | os.PathLike | None = None,
    file_ending: str | None = None,
    image_suffix: str = "",
    label_suffix: str | None = None,
    value_map: dict | None = None,
    test_images_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Make a v2 dataset from images and label maps matched by file name (``input/a.png`` + ``ground_truth/a.png``).

    Args:
        images_dir: folder of images, or one folder per channel (files matched by name across them).
        labels_dir: folder of label maps; ``a_seg.nii.gz`` matches ``a.nii.gz`` via ``label_suffix``.
        name, dataset_id: the new ``DatasetXXX_Name``.
        channel_names: ``{"0": "CT"}`` or ``["T1", "T2"]``; default ``R, G, B(, A)`` for colour images,
            else ``image`` (z-score normalization).
        labels: ``{"background": 0, "tumor": 1}`` or ``["background", "tumor"]``; default: inferred from the
            values in the label files (``label_1``, ``label_2`` ...; values that are not 0..K are renumbered).
        file_ending: of the new dataset (default: that of the images); other formats are converted.
        image_suffix: removed from image names before matching (e.g. ``"_img"``).
        label_suffix: removed from label names before matching; default: the first of
            ``LABEL_SUFFIXES`` that matches every image.
        value_map: label values to rewrite, e.g. ``{255: 1}`` for 0/255 masks.
        test_images_dir: folder (or folders, one per channel) of test images for ``imagesTs``.
    Returns:
        The new dataset folder.
    """
    channel_dirs = (
        [Path(images_dir)] if isinstance(images_dir, (str, os.PathLike)) else [Path(d) for d in images_dir]
    )
    channel_files = [_files_by_case(d, image_suffix) for d in channel_dirs]
    cases = _match_channels(channel_dirs, channel_files)
    label_files, label_suffix = _match_labels(Path(labels_dir), cases, label_suffix)
    file_ending = file_ending or io.file_ending(channel_files[0][cases[0]])
    file_ending = file_ending if file_ending.startswith(".") else "." + file_ending
    if file_ending not in io.SUPPORTED_ENDINGS:
        raise ValueError(
            f"file ending {file_ending!r} cannot be written (supported: {', '.join(io.SUPPORTED_ENDINGS)})"
        )
    channels_per_dir = [io.read_image(files[cases[0]])[0].shape[0] for files in channel_files]
    channel_names = _channel_names_for(channel_names, channels_per_dir)
    found = map_in_processes(
        _label_values,
        [str(label_files[c]) for c in cases],
        num_workers=num_workers,
        progress=progress,
        desc="read labels",
    )
    labels, value_map = _decide_labels(labels, value_map, dict(zip(cases, found)), label_files)
    sources = [*channel_dirs, Path(labels_dir)]
    with _new_dataset_folder(dataset_id, name, output_root, overwrite, sources) as (tmp, target):
        jobs = [
            (
                [str(files[case]) for files in channel_files],
                str(label_files[case]),
                case,
                str(tmp),
                file_ending,
                value_map,
            )
            for case in cases
        ]
        map_in_processes(
            _convert_case, jobs, num_workers=num_workers, progress=progress, desc="convert cases"
        )
        if test_images_dir is not None:
            _convert_test_images(test_images_dir, image_suffix, tmp, file_ending, num_workers, progress)
        note = f"converted by nnseg_nb from {', '.join(map(str, channel_dirs))} and {labels_dir}"
        if value_map:
            note += f"; label values rewritten {value_map}"
        write_dataset_json(tmp, channel_names, labels, len(cases), file_ending, name=name, description=note)
    return target


def _files_by_case(folder: Path, suffix: str, required: bool = True) -> dict[str, Path]:
    """``{case: file}`` for the readable image files of ``folder``: the name without ending and ``suffix``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = {}
    for path in _visible_files(folder):
        ending = io.file_ending(path)
        stem = path.name[: -len(ending)] if ending else path.name
        if ending not in io.SUPPORTED_ENDINGS or not stem.endswith(suffix):
            continue
        case = stem[: len(stem) - len(suffix)]
        if case in files:
            raise ValueError(f"{path}: case {case!r} also has {files[case].name}; keep one file per case")
        files[case] = path
    if not files and required:
        raise ValueError(
            f"{folder}: no image files{f' ending in {suffix!r}' if suffix else ''} "
            f"(readable endings: {', '.join(io.SUPPORTED_ENDINGS)})"
        )
    return files


def _match_channels(channel_dirs: list[Path], channel_files: list[dict[str, Path]]) -> list[str]:
    cases = sorted(channel_files[0])
    for folder, files in zip(channel_dirs[1:], channel_files[1:]):
        if set(files) != set(cases):
            odd = sorted(set(files) ^ set(cases))
            raise ValueError(f"{folder}: its cases differ from {channel_dirs[0]}'s: {', '.join(odd[:10])}")
    return cases


def _match_labels(
    labels_dir: Path, cases: list[str], label_suffix: str | None
) -> tuple[dict[str, Path], str]:
    suffixes = LABEL_SUFFIXES if label_suffix is None else (label_suffix,)
    candidates = {s: _files_by_case(labels_dir, s, required=False) for s in suffixes}
    best = max(suffixes, key=lambda s: sum(c in candidates[s] for c in cases))
    matched = candidates[best]
    missing = [c for c in cases if c not in matched]
    if missing:
        tried = ", ".join(repr(s) for s in suffixes)
        raise ValueError(
            f"{labels_dir}: no label file for {len(missing)} image(s): {', '.join(missing[:10])} "
            f"(label names tried: <case><suffix><ending>, suffix one of {tried})"
        )
    return {c: matched[c] for c in cases}, best


def _channel_names_for(channel_names: dict | Sequence[str] | None, channels_per_dir: list[int]) -> dict:
    """``channel_names`` for dataset.json, one per channel read (an RGB file holds three)."""
    num_channels = sum(channels_per_dir)
    if channel_names is None:
        if len(channels_per_dir) == 1 and num_channels in (3, 4):
            return {str(i): n for i, n in enumerate("RGBA"[:num_channels])}
        return {str(i): "image" if num_channels == 1 else f"channel_{i}" for i in range(num_channels)}
    names = (
        {str(k): v for k, v in channel_names.items()}
        if isinstance(channel_names, dict)
        else {str(i): n for i, n in enumerate(channel_names)}
    )
    if len(names) != num_channels:
        raise ValueError(
            f"channel_names has {len(names)} entries but the images hold {num_channels} channel(s)"
        )
    return names


def _label_values(path: str) -> list[int]:
    """Distinct values of a label file (its one channel; identical colour channels count as one)."""
    seg, _ = io.read_image(path)
    if seg.shape[0] > 1:
        if not all(np.array_equal(seg[0], seg[c]) for c in range(1, seg.shape[0])):
            raise ValueError(
                f"{path}: a colour label map (channels differ); label maps need one channel of integers"
            )
        seg = seg[:1]
    if not np.all(np.isfinite(seg)) or not np.all(seg == np.round(seg)):
        raise ValueError(f"{path}: label maps must hold integers (found non-integer or NaN values)")
    return [int(v) for v in np.unique(seg)]


def _decide_labels(
    labels: dict | Sequence[str] | None,
    value_map: dict | None,
    found: dict[str, list[int]],
    label_files: dict[str, Path],
) -> tuple[dict, dict]:
    """The ``labels`` of dataset.json and the value rewrite that makes the files match them."""
    value_map = {int(k): int(v) for k, v in (value_map or {}).items()}
    source_values = sorted({v for vs in found.values() for v in vs})
    if labels is None:
        foreground = sorted({value_map.get(v, v) for v in source_values} - {0})
        renumber = {v: i + 1 for i, v in enumerate(foreground)}  # e.g. 0/255 masks become 0/1
        final = {s: renumber.get(value_map.get(s, s), 0) for s in source_values}
        names = ["foreground"] if len(foreground) == 1 else [f"label_{v}" for v in foreground]
        labels = {"background": 0, **{n: renumber[v] for n, v in zip(names, foreground)}}
        return labels, {s: d for s, d in final.items() if s != d}
    if not isinstance(labels, dict):
        labels = {str(n): i for i, n in enumerate(labels)}
    problems = label_problems(labels)
    if problems:
        raise ValueError("labels: " + "; ".join(problems))
    declared = {x for v in labels.values() for x in (v if isinstance(v, (list, tuple)) else [v])}
    for case, vs in found.items():
        undeclared = sorted({value_map.get(v, v) for v in vs} - declared)
        if undeclared:
            raise ValueError(
                f"{label_files[case]}: values {undeclared} are not in labels {labels}; "
                "map them with value_map (e.g. {255: 1})"
            )
    return dict(labels), value_map


def _convert_case(job: tuple) -> None:
    """Write one case's channel files and label map into ``imagesTr``/``labelsTr`` of the new dataset."""
    image_files, label_file, case, out, file_ending, value_map = job
    out = Path(out)
    _write_channels([Path(p) for p in image_files], out / "imagesTr", case, file_ending)
    label_file, target = Path(label_file), out / "labelsTr" / f"{case}{file_ending}"
    target.parent.mkdir(parents=True, exist_ok=True)
    seg, props = io.read_image(label_file)
    if io.file_ending(label_file) == file_ending and not value_map and seg.shape[0] == 1:
        shutil.copyfile(label_file, target)  # byte for byte: nothing to change
        return
    seg = np.rint(seg[0]).astype(np.int64)  # colour label maps were checked to have identical channels
    if value_map:
        seg = _apply_value_map(seg, value_map)
    io.write_seg(seg, target, props)


def _apply_value_map(seg: np.ndarray, value_map: dict[int, int]) -> np.ndarray:
    mapped = seg.copy()
    for src, dst in value_map.items():
        mapped[seg == src] = dst  # compare against the original so that chains like {1: 2, 2: 1} swap
    return mapped


def _write_channels(image_files: list[Path], out_dir: Path, case: str, file_ending: str) -> None:
    """Copy files already in ``file_ending`` (one RGB PNG stays one file), convert the others channel by channel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = 0
    for path in image_files:
        if io.file_ending(path) == file_ending:
            shutil.copyfile(path, out_dir / f"{case}_{index:04d}{file_ending}")
            index += 1
            continue
        data, props = io.read_image(path)
        for channel in data:
            io.write_image(channel, out_dir / f"{case}_{index:04d}{file_ending}", props)
            index += 1


def _convert_test_images(
    test_images_dir, image_suffix: str, out: Path, file_ending: str, num_workers: int | None, progress: bool
) -> None:
    dirs = (
        [Path(test_images_dir)]
        if isinstance(test_images_dir, (str, os.PathLike))
        else [Path(d) for d in test_images_dir]
    )
    files = [_files_by_case(d, image_suffix) for d in dirs]
    cases = _match_channels(dirs, files)
    jobs = [([str(f[case]) for f in files], case, str(out / "imagesTs"), file_ending) for case in cases]
    map_in_processes(
        _write_test_case, jobs, num_workers=num_workers, progress=progress, desc="convert test images"
    )


def _write_test_case(job: tuple) -> None:
    image_files, case, out_dir, file_ending = job
    _write_channels([Path(p) for p in image_files], Path(out_dir), case, file_ending)
