"""A preprocessed case on disk: the one place that knows the files, ours and nnU-Net's.

    save_case(folder, "case_001", data, seg, properties, preprocessing_key=key)   # ours, atomically
    list_cases(folder)                                   # ['case_001', ...]: ours or an nnU-Net folder
    arrays = open_case(folder, "case_001")               # CaseArrays: memory maps, nothing read yet
    data, seg, properties = load_case(folder, "case_001")   # properties with class_locations
    read_class_locations(folder, "case_001")             # {1: (N, 4) int64 [0, z, y, x], (1, 2): ...}
    is_up_to_date(folder, "case_001", key)               # written by this preprocessing, complete

Ours, per case: ``<case>.npy`` (C, Z, Y, X) float32 and ``<case>_seg.npy`` (1, Z, Y, X) int16 (both
memory-mappable), ``<case>_class_locations.npz`` (the foreground voxels the loader centres patches on)
and, written last, ``<case>.json``: the small properties (spacing, crop box, shapes) and the
``preprocessing_key`` that says which plans and source files made the case. Plain ``json.load`` reads it.

nnU-Net's (read only): ``<case>.pkl`` pickled properties with ``<case>.b2nd``/``<case>_seg.b2nd`` (blosc2,
nnU-Net 2.6+), ``<case>.npz`` (keys ``data``, ``seg``) or unpacked ``<case>.npy``/``<case>_seg.npy``.
The ``.pkl`` is read by :func:`nnseg_nb.io.load_nnunet_properties`: plain values and numpy arrays only
(any other object is refused), and files written under numpy 2 load under numpy 1.x too.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nnseg_nb.io import load_nnunet_properties
from nnseg_nb.utils import atomic_save_npy, atomic_write_bytes, atomic_write_json, load_json, to_builtin

ClassKey = int | tuple[int, ...]  # a foreground label, or a region (the union of its labels)

CLASS_LOCATIONS_SUFFIX = "_class_locations.npz"


# --- class locations ------------------------------------------------------------------------------------


def parse_class_key(key: str | int | tuple) -> ClassKey:
    """A ``class_locations`` key as nnU-Net prints it: ``"2"`` -> 2, ``"(1, 2)"`` or ``"[1, 2]"`` -> (1, 2).

    >>> parse_class_key("2"), parse_class_key("(-1, 0, 1)"), parse_class_key("(3,)")
    (2, (-1, 0, 1), (3,))
    """
    if isinstance(key, (int, tuple)):
        return key
    text = key.strip()
    if text[:1] in "([" and text[-1:] in ")]":
        return tuple(int(v) for v in text[1:-1].split(",") if v.strip())
    return int(text)


def class_locations_to_json(class_locations: dict[ClassKey, np.ndarray]) -> dict[str, list]:
    """JSON-ready class locations: keys as nnU-Net prints them (``"1"``, ``"(1, 2)"``), values as lists."""
    return {
        str(key): np.asarray(value, dtype=np.int64).reshape(-1, 4).tolist()
        for key, value in class_locations.items()
    }


def class_locations_from_json(class_locations: dict) -> dict[ClassKey, np.ndarray]:
    """Inverse of :func:`class_locations_to_json`: int/tuple keys, (N, 4) int64 arrays."""
    return {
        parse_class_key(key): np.asarray(value, dtype=np.int64).reshape(-1, 4)
        for key, value in class_locations.items()
    }


def _class_locations_npz(class_locations: dict[ClassKey, np.ndarray]) -> bytes:
    """The sidecar's bytes: the keys as text, the count per key and all locations in one (N, 4) array."""
    arrays = [np.asarray(v, dtype=np.int64).reshape(-1, 4) for v in class_locations.values()]
    buffer = io.BytesIO()
    np.savez(
        buffer,
        keys=np.array([str(k) for k in class_locations], dtype=str),
        counts=np.array([len(a) for a in arrays], dtype=np.int64),
        locations=np.concatenate(arrays) if arrays else np.zeros((0, 4), np.int64),
    )
    return buffer.getvalue()


def _read_class_locations_npz(path: Path) -> dict[ClassKey, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        keys, counts, locations = stored["keys"], stored["counts"], stored["locations"]
    parts = np.split(locations, np.cumsum(counts)[:-1]) if len(counts) else []
    return {parse_class_key(str(key)): part for key, part in zip(keys, parts)}


# --- ours: write ----------------------------------------------------------------------------------------


def save_case(
    folder: str | os.PathLike,
    case: str,
    data: np.ndarray,
    seg: np.ndarray,
    properties: dict,
    preprocessing_key: str | None = None,
) -> None:
    """Write a case in our format, each file atomically and ``<case>.json`` last, so a case whose JSON is
    there is complete. ``properties["class_locations"]`` (if any) goes to the ``.npz`` sidecar."""
    folder = Path(folder)
    properties = dict(properties)
    class_locations = properties.pop("class_locations", None)
    atomic_save_npy(folder / f"{case}.npy", data.astype(np.float32, copy=False))
    atomic_save_npy(folder / f"{case}_seg.npy", seg.astype(np.int16, copy=False))
    sidecar = folder / f"{case}{CLASS_LOCATIONS_SUFFIX}"
    if class_locations is not None:
        atomic_write_bytes(sidecar, _class_locations_npz(class_locations))
    elif sidecar.is_file():
        sidecar.unlink()  # a stale one from an earlier run
    stamp = {"preprocessing_key": preprocessing_key} if preprocessing_key is not None else {}
    atomic_write_json(folder / f"{case}.json", {**stamp, **properties})


def is_up_to_date(folder: str | os.PathLike, case: str, preprocessing_key: str) -> bool:
    """True if ``case`` was written by :func:`save_case` with this ``preprocessing_key`` and all its files
    are there; anything else (missing files, another key, an older or damaged file) means: redo it."""
    folder = Path(folder)
    files = [folder / f"{case}{end}" for end in (".npy", "_seg.npy", CLASS_LOCATIONS_SUFFIX, ".json")]
    if not all(f.is_file() for f in files):
        return False
    try:
        with open(files[-1]) as f:
            stored = json.load(f)
    except (ValueError, OSError):
        return False
    return isinstance(stored, dict) and stored.get("preprocessing_key") == preprocessing_key


# --- nnU-Net's files ------------------------------------------------------------------------------------


def open_b2nd(path: str | os.PathLike):
    """A ``.b2nd`` array (nnU-Net 2.6+'s blosc2 files) opened, not read: slicing it decompresses only the
    chunks the slice touches (``shape``, ``ndim`` and ``dtype`` as numpy's). Needs ``blosc2``."""
    try:
        import blosc2
    except ImportError:
        raise ImportError(
            f"{path}: reading nnU-Net's .b2nd files needs blosc2; install it with `pip install blosc2`"
        ) from None
    mmap = {} if os.name == "nt" else {"mmap_mode": "r"}  # as nnU-Net: blosc2 cannot memory-map on Windows
    return blosc2.open(urlpath=str(path), mode="r", dparams={"nthreads": 1}, **mmap)


def read_b2nd(path: str | os.PathLike) -> np.ndarray:
    """A whole ``.b2nd`` array, decompressed (see :func:`open_b2nd`)."""
    return open_b2nd(path)[...]


def _nnunet_properties(path: Path) -> dict:
    properties = load_nnunet_properties(path)  # nnU-Net pickles them: numpy arrays and plain values only
    class_locations = properties.pop("class_locations", None)
    properties = to_builtin(properties)
    if class_locations is not None:
        properties["class_locations"] = {
            key: np.asarray(value, dtype=np.int64).reshape(-1, 4) for key, value in class_locations.items()
        }
    return properties


# --- reading either format ------------------------------------------------------------------------------


class CaseArrays(NamedTuple):
    """Arrays to cut patches from: numpy memory maps, or opened blosc2 arrays for nnU-Net's ``.b2nd``
    (both slice like numpy and read only what a slice touches)."""

    data: np.ndarray  # (C, Z, Y, X) float32
    seg: np.ndarray  # (1, Z, Y, X) int16
    previous_seg: np.ndarray | None  # (1, Z, Y, X) previous-stage prediction (cascade), or None


def _require(file: Path, what: str) -> Path:
    if not file.is_file():
        raise FileNotFoundError(f"{file}: {what} not found")
    return file


def _arrays(folder: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    """Image and seg: memory-mapped ``.npy`` (ours, or nnU-Net's unpacked), opened ``.b2nd``, or a read ``.npz``."""
    if (folder / f"{case}.npy").is_file():
        data = np.load(folder / f"{case}.npy", mmap_mode="r")
        return data, np.load(
            _require(folder / f"{case}_seg.npy", f"segmentation of case {case!r}"), mmap_mode="r"
        )
    if (folder / f"{case}.b2nd").is_file():
        data = open_b2nd(folder / f"{case}.b2nd")  # first: without blosc2 that error is the one to see
        return data, open_b2nd(_require(folder / f"{case}_seg.b2nd", f"segmentation of case {case!r}"))
    if (folder / f"{case}.npz").is_file():
        with np.load(folder / f"{case}.npz") as arrays:
            return arrays["data"], arrays["seg"]
    raise FileNotFoundError(f"{folder}: no arrays for case {case!r} (.npy, .b2nd or .npz)")


def _properties_file(folder: Path, case: str) -> Path:
    for file in (folder / f"{case}.json", folder / f"{case}.pkl"):
        if file.is_file():
            return file
    raise FileNotFoundError(f"{folder}: no preprocessed case {case!r} (neither {case}.json nor {case}.pkl)")


def read_properties(folder: str | os.PathLike, case: str) -> dict:
    """A case's properties (lists and numbers), with ``class_locations`` when the case has them."""
    file = _properties_file(Path(folder), case)
    if file.suffix == ".pkl":
        return _nnunet_properties(file)
    properties = load_json(file)
    properties.pop("preprocessing_key", None)
    if "class_locations" in properties:  # written into the JSON by hand or by an older nnseg_nb
        properties["class_locations"] = class_locations_from_json(properties["class_locations"])
    elif (file.parent / f"{case}{CLASS_LOCATIONS_SUFFIX}").is_file():
        properties["class_locations"] = _read_class_locations_npz(
            file.parent / f"{case}{CLASS_LOCATIONS_SUFFIX}"
        )
    return properties


def read_class_locations(folder: str | os.PathLike, case: str) -> dict[ClassKey, np.ndarray]:
    """A case's ``class_locations``: ``{label or region tuple: (N, 4) int64 array of [0, z, y, x]}``."""
    sidecar = Path(folder) / f"{case}{CLASS_LOCATIONS_SUFFIX}"
    if sidecar.is_file():  # ours: no need to parse the properties
        return _read_class_locations_npz(sidecar)
    properties = read_properties(folder, case)
    if "class_locations" not in properties:
        raise ValueError(
            f"{_properties_file(Path(folder), case)}: no 'class_locations'; preprocess the case again to "
            "sample foreground patches"
        )
    return properties["class_locations"]


def load_case(folder: str | os.PathLike, case: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(data, seg, properties)`` of one case, ours or nnU-Net's: arrays memory-mapped where the format
    allows (``.b2nd`` are read whole here; :func:`open_case` keeps them opened), properties with lists,
    numbers and ``class_locations`` (int/tuple keys, (N, 4) int64 arrays)."""
    folder = Path(folder)
    properties = read_properties(folder, case)  # first: names the case if it is not there at all
    data, seg = _arrays(folder, case)
    if not isinstance(data, np.ndarray):  # an opened .b2nd
        data, seg = data[...], seg[...]
    return data, seg, properties


def list_cases(folder: str | os.PathLike) -> list[str]:
    """Sorted identifiers of the cases in a preprocessed folder (ours: ``.json``; nnU-Net's: ``.pkl``; a
    folder both tools wrote into lists each case once)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such preprocessed folder")
    return sorted(
        {p.stem for p in folder.iterdir() if p.suffix in (".json", ".pkl") and not p.name.startswith(".")}
    )


def open_case(
    folder: str | os.PathLike, case: str, previous_stage_folder: str | os.PathLike | None = None
) -> CaseArrays:
    """Open a case to cut patches from: ``.npy`` memory-mapped, nnU-Net's ``.b2nd`` opened so that a patch
    decompresses only the chunks it touches, nnU-Net's ``.npz`` read whole.

    ``previous_stage_folder`` holds ``<case>.npy`` (memory-mapped), ``<case>.b2nd`` (nnU-Net 2.8's
    ``predicted_next_stage`` files) or ``<case>.npz`` (key ``seg``) predictions on the same grid,
    (Z, Y, X) or (1, Z, Y, X).
    """
    folder = Path(folder)
    if not any((folder / f"{case}{end}").is_file() for end in (".npy", ".b2nd", ".npz")):
        _properties_file(folder, case)  # the clearer error when the case is not there at all
    data, seg = _arrays(folder, case)
    if data.ndim != 4 or seg.shape != (1, *data.shape[1:]):
        raise ValueError(
            f"{folder / case}: expected image (C, Z, Y, X) and seg (1, Z, Y, X), "
            f"got {data.shape} and {seg.shape}"
        )
    previous = None
    if previous_stage_folder is not None:
        previous = _open_previous_seg(Path(previous_stage_folder), case, data.shape[1:])
    return CaseArrays(data, seg, previous)


def _open_previous_seg(folder: Path, case: str, shape: tuple[int, ...]) -> np.ndarray:
    npy, b2nd, npz = folder / f"{case}.npy", folder / f"{case}.b2nd", folder / f"{case}.npz"
    if npy.is_file():
        previous = np.load(npy, mmap_mode="r")
    elif b2nd.is_file():
        previous = open_b2nd(b2nd)
        if previous.ndim == len(shape):  # (Z, Y, X): read, to add the axis
            previous = previous[...]
    elif npz.is_file():
        with np.load(npz) as archive:
            previous = archive["seg"] if "seg" in archive else archive[archive.files[0]]
    else:
        raise FileNotFoundError(
            f"{npy}: previous-stage segmentation of case {case!r} not found (.npy, .b2nd or .npz)"
        )
    if previous.shape == shape:
        previous = previous[None]
    if previous.shape != (1, *shape):
        raise ValueError(
            f"{folder / case}: previous-stage segmentation has shape {previous.shape}, "
            f"the case has {shape}; it must be on the same preprocessed grid"
        )
    return previous
