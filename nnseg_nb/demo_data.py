"""Small demo datasets in nnU-Net's raw format, built deterministically from one seed.

    folders = build_demo_datasets()                 # -> {"Dataset901_BrainTissue": Path(...), ...} in raw_root()
    folders = build_demo_datasets("raw", seed=1, only=["BrainTissue"])
    nnseg-nb demo-data -o raw --seed 1 --only 901   # the same from the command line

Four datasets (see :data:`DEMO_DATASETS` and ``data_demo/README.md``), each with ``imagesTr/labelsTr`` and
held-out test cases in ``imagesTs/labelsTs``:

- ``Dataset901_BrainTissue``: real brain MRI (T1; gray and white matter), cases drawn from the MNI ICBM152
  2009a template shipped in ``nnseg_nb/demo_assets`` by smooth random deformations, bias fields, contrast
  changes, Rician noise and slightly different spacings. Credit and notice: ``demo_assets/NOTICE.md``.
- ``Dataset902_AnisoSynth``: synthetic MRI with thick slices (4-5 mm, in-plane 0.8-1 mm): an organ and a small lesion.
- ``Dataset903_MultiChannel``: synthetic CT (in HU) + T2 of an abdomen-like phantom: an organ and a cyst.
- ``Dataset904_Shapes2D``: 2D grayscale PNGs of textured ellipses and triangles.

Every random draw of a case comes from ``np.random.default_rng([seed, dataset_id, case_index])``, so the same
seed gives identical files, and building fewer cases gives the first cases of the full build. A dataset is
built in a hidden temporary folder and renamed into place; a marker file (``.nnseg_demo.json``) records seed,
builder version and files, so a complete, current build is skipped the next time.

How each case is drawn is :mod:`nnseg_nb.demo_cases`; this module writes them as datasets.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np

from . import io, paths
from .dataset import write_dataset_json
from .demo_cases import MNI_ASSET as MNI_ASSET  # re-exported: the shipped template's file name
from .demo_cases import (
    CaseArrays,
    aniso_case,
    brain_case,
    case_rng,
    load_mni_asset,
    multichannel_case,
    shapes_case,
)
from .paths import parse_dataset_folder_name
from .utils import atomic_write_json, file_lock, load_json

MARKER_FILE = ".nnseg_demo.json"
MNI_CREDIT = (
    "MNI ICBM152 2009a nonlinear symmetric template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain "
    "Imaging Centre, Montreal Neurological Institute, McGill University"
)
SYNTHETIC_LICENCE = "CC0 (synthetic data made by nnseg_nb)"
MNI_REFERENCE = (
    "Fonov et al., NeuroImage 47 (2009) S102; Fonov et al., NeuroImage 54 (2011) 313-327; "
    "Collins et al., NeuroImage (1999)"
)


# --- writing a dataset -----------------------------------------------------------------------------


def _build(
    folder: str | os.PathLike,
    name: str,
    prefix: str,
    make_case: Callable[[np.random.Generator], CaseArrays],
    channel_names: dict,
    labels: dict,
    file_ending: str,
    seed: int,
    num_train: int,
    num_test: int,
    progress: bool,
    **dataset_json_extra,
) -> Path:
    """Write cases ``{prefix}_000 ...`` into imagesTr/labelsTr, the next ``num_test`` into imagesTs/labelsTs,
    then ``dataset.json``."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    dataset_id, short_name = parse_dataset_folder_name(name)
    for index in tqdm(
        range(num_train + num_test), desc=name, disable=None if progress else True, leave=False
    ):
        images_dir, labels_dir = ("imagesTr", "labelsTr") if index < num_train else ("imagesTs", "labelsTs")
        channels, seg, props = make_case(case_rng(seed, dataset_id, index))
        case = f"{prefix}_{index:03d}"
        for channel, image in enumerate(channels):
            io.write_image(image, folder / images_dir / f"{case}_{channel:04d}{file_ending}", props)
        io.write_seg(seg, folder / labels_dir / f"{case}{file_ending}", props)
    release = f"nnseg_nb demo data v{DEMO_DATASETS[name]['version']}, seed {seed}"
    write_dataset_json(
        folder,
        channel_names,
        labels,
        num_train,
        file_ending,
        name=short_name,
        numTest=num_test,
        **dataset_json_extra,
        release=release,
    )
    return folder


def build_brain_tissue(
    folder: str | os.PathLike, seed: int = 0, num_train: int = 12, num_test: int = 4, progress: bool = False
) -> Path:
    """Write ``Dataset901_BrainTissue`` (brain T1 MRI; gray / white matter) into ``folder``."""
    folder = _build(
        folder,
        "Dataset901_BrainTissue",
        "brain",
        partial(brain_case, load_mni_asset()),
        {"0": "T1"},
        {"background": 0, "gray_matter": 1, "white_matter": 2},
        ".nii.gz",
        seed,
        num_train,
        num_test,
        progress,
        description="Brain tissue segmentation on T1 MRI (skull-stripped, 2.1-2.9 mm): random smooth deformations, "
        "bias fields, contrast changes and Rician noise applied to the MNI ICBM152 2009a template; labels "
        "are the most probable tissue of the deformed probability maps. Built by nnseg_nb.demo_data.",
        reference=MNI_REFERENCE,
        licence=f"{MNI_CREDIT}. Permission to use, copy, modify, and distribute is granted provided the copyright "
        "notice appears in all copies (full notice: nnseg_nb/demo_assets/NOTICE.md and NOTICE.md here).",
    )
    (folder / "NOTICE.md").write_bytes(
        resources.files(__package__).joinpath("demo_assets", "NOTICE.md").read_bytes()
    )
    return folder


def build_aniso_synth(
    folder: str | os.PathLike, seed: int = 0, num_train: int = 12, num_test: int = 4, progress: bool = False
) -> Path:
    """Write ``Dataset902_AnisoSynth`` (synthetic thick-slice MRI; organ and lesion) into ``folder``."""
    return _build(
        folder,
        "Dataset902_AnisoSynth",
        "aniso",
        aniso_case,
        {"0": "MRI"},
        {"background": 0, "organ": 1, "lesion": 2},
        ".nii.gz",
        seed,
        num_train,
        num_test,
        progress,
        description="Synthetic anisotropic MRI: 16-24 slices of 4-5 mm, 0.8-1.0 mm in-plane; a large irregular organ "
        "with a small lesion inside. Half of the cases are zero outside the body. Built by nnseg_nb.demo_data.",
        licence=SYNTHETIC_LICENCE,
    )


def build_multi_channel(
    folder: str | os.PathLike, seed: int = 0, num_train: int = 12, num_test: int = 4, progress: bool = False
) -> Path:
    """Write ``Dataset903_MultiChannel`` (synthetic CT + T2; organ and cyst) into ``folder``."""
    return _build(
        folder,
        "Dataset903_MultiChannel",
        "multi",
        multichannel_case,
        {"0": "CT", "1": "T2"},
        {"background": 0, "organ": 1, "cyst": 2},
        ".nii.gz",
        seed,
        num_train,
        num_test,
        progress,
        description="Synthetic abdomen-like phantom seen by CT (HU: air -1000, fat -100, bone ~800) and T2 MRI, "
        "0.95-1.6 mm, 48-64 voxels per axis; an organ (enhanced on CT) with a fluid cyst (bright on T2). "
        "Built by nnseg_nb.demo_data.",
        licence=SYNTHETIC_LICENCE,
    )


def build_shapes_2d(
    folder: str | os.PathLike, seed: int = 0, num_train: int = 20, num_test: int = 6, progress: bool = False
) -> Path:
    """Write ``Dataset904_Shapes2D`` (128 x 128 grayscale PNGs; ellipses and triangles) into ``folder``."""
    return _build(
        folder,
        "Dataset904_Shapes2D",
        "shapes",
        shapes_case,
        {"0": "gray"},
        {"background": 0, "ellipse": 1, "triangle": 2},
        ".png",
        seed,
        num_train,
        num_test,
        progress,
        description="Synthetic 2D images, 128 x 128 grayscale PNG: textured ellipses and triangles of the same "
        "intensities on a smooth background with noise. Built by nnseg_nb.demo_data.",
        licence=SYNTHETIC_LICENCE,
    )


# name -> what it is and how to build it; `version` changes whenever a builder's output changes.
DEMO_DATASETS: dict[str, dict] = {
    "Dataset901_BrainTissue": {
        "description": "real brain MRI (T1) from the MNI ICBM152 template, gray and white matter; 12 train + 4 test",
        "builder": build_brain_tissue,
        "version": 1,
    },
    "Dataset902_AnisoSynth": {
        "description": "synthetic MRI with 4-5 mm slices, an organ and a small lesion; 12 train + 4 test",
        "builder": build_aniso_synth,
        "version": 1,
    },
    "Dataset903_MultiChannel": {
        "description": "synthetic CT (HU) + T2 of a phantom, an organ and a cyst; 12 train + 4 test",
        "builder": build_multi_channel,
        "version": 1,
    },
    "Dataset904_Shapes2D": {
        "description": "synthetic 2D PNGs, textured ellipses and triangles; 20 train + 6 test",
        "builder": build_shapes_2d,
        "version": 1,
    },
}


# --- building the datasets, skipping current builds ---------------------------------------------


def select_demo_datasets(only: Sequence[str | int] | None = None) -> list[str]:
    """The demo dataset names that ``only`` names (``Dataset901_BrainTissue``, ``BrainTissue``, ``901``), or all.

    >>> select_demo_datasets(["901", "shapes2d"])
    ['Dataset901_BrainTissue', 'Dataset904_Shapes2D']
    """
    if not only:
        return list(DEMO_DATASETS)
    selected, unknown = set(), []
    for query in only:
        query = str(query).strip()
        matches = [
            name
            for name in DEMO_DATASETS
            if query.lower() in (name.lower(), parse_dataset_folder_name(name)[1].lower())
            or (query.isdigit() and int(query) == parse_dataset_folder_name(name)[0])
        ]
        selected.update(matches) if matches else unknown.append(query)
    if unknown:
        raise ValueError(
            f"no demo dataset {', '.join(map(repr, unknown))}; there are {', '.join(DEMO_DATASETS)}"
        )
    return [name for name in DEMO_DATASETS if name in selected]


def _build_record(name: str, seed: int, num_train: int | None, num_test: int | None) -> dict:
    """What the marker of a build of ``name`` says (without its file list); case counts default to the builder's."""
    defaults = inspect.signature(DEMO_DATASETS[name]["builder"]).parameters
    return {
        "dataset": name,
        "version": DEMO_DATASETS[name]["version"],
        "seed": int(seed),
        "num_train": defaults["num_train"].default if num_train is None else int(num_train),
        "num_test": defaults["num_test"].default if num_test is None else int(num_test),
    }


def demo_build_status(
    folder: str | os.PathLike, seed: int = 0, num_train: int | None = None, num_test: int | None = None
) -> str:
    """``"current"`` (complete build, same seed, version and counts), ``"stale"`` (another demo build),
    ``"foreign"`` (a folder that is not a demo build) or ``"missing"``."""
    folder = Path(folder)
    if not folder.exists():
        return "missing"
    marker = folder / MARKER_FILE
    if folder.name not in DEMO_DATASETS or not marker.is_file():
        return "foreign"
    try:
        recorded = load_json(marker)
        files = recorded.pop("files")
    except (ValueError, KeyError, AttributeError):
        return "stale"
    expected = _build_record(folder.name, seed, num_train, num_test)
    complete = all((folder / file).is_file() for file in files)
    return "current" if recorded == expected and complete else "stale"


def build_demo_datasets(
    raw_root: str | os.PathLike | None = None,
    seed: int = 0,
    only: Sequence[str | int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    num_train: int | None = None,
    num_test: int | None = None,
) -> dict[str, Path]:
    """Build the demo datasets into ``raw_root``; a complete build from the same seed and version is kept.

    Args:
        raw_root: where the ``DatasetXXX_Name`` folders go (default :func:`nnseg_nb.paths.raw_root`).
        seed: every random draw follows from it (a non-negative integer); same seed, same files.
        only: names, short names or ids of the datasets to build (default all of :data:`DEMO_DATASETS`).
        overwrite: rebuild even a current build, and replace a folder of that name that is not a demo build.
        progress: show a progress bar per dataset.
        num_train, num_test: cases per dataset instead of each builder's default (quick tests).

    Returns:
        ``{name: folder}`` of the selected datasets.

    Raises:
        FileExistsError: a folder of that name (or id) exists and is not a demo build; nothing is replaced.
        ValueError: an unknown name in ``only``, a negative seed or case count.

    >>> build_demo_datasets("raw", only=["Shapes2D"], num_train=2, num_test=1, progress=False)
    {'Dataset904_Shapes2D': PosixPath('raw/Dataset904_Shapes2D')}
    """
    if int(seed) < 0 or any(n is not None and int(n) < 0 for n in (num_train, num_test)):
        raise ValueError(
            f"seed and case counts must be non-negative, got seed={seed}, num_train={num_train}, "
            f"num_test={num_test}"
        )
    root = Path(raw_root) if raw_root is not None else paths.raw_root()
    folders = {}
    for name in select_demo_datasets(only):
        target = root / name
        with file_lock(root / f".{name}.lock"):  # a concurrent build of the same dataset waits, then finds it
            status = demo_build_status(target, seed, num_train, num_test)
            if status == "foreign" and not overwrite:
                raise FileExistsError(
                    f"{target}: exists and is not an nnseg_nb demo build; pass overwrite=True "
                    "(--overwrite) to replace it"
                )
            if status != "current" or overwrite:
                _build_into_place(name, root, _build_record(name, seed, num_train, num_test), progress)
        folders[name] = target
    return folders


def _build_into_place(name: str, root: Path, record: dict, progress: bool) -> None:
    """Build in a hidden folder next to the target, write the marker last, then rename it into place."""
    from .convert import _new_dataset_folder  # the package's one atomic "build a dataset folder" helper

    dataset_id, short_name = parse_dataset_folder_name(name)
    with _new_dataset_folder(dataset_id, short_name, root, overwrite=True, sources=()) as (tmp, _):
        DEMO_DATASETS[name]["builder"](
            tmp,
            seed=record["seed"],
            num_train=record["num_train"],
            num_test=record["num_test"],
            progress=progress,
        )
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        atomic_write_json(tmp / MARKER_FILE, {**record, "files": files})
