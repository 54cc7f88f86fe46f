"""Read and write images in the axis order nnU-Net works in, keeping their geometry.

Every reader returns ``(array, props)``: the array is ``(C, Z, Y, X)`` float32 (SimpleITK's order,
the one nnU-Net uses internally), and ``props`` is a JSON-serializable dict with ``"spacing"`` in the
same ``(Z, Y, X)`` order plus what is needed to write the file back with the same geometry::

    data, props = read_case(["imagesTr/brain_000_0000.nii.gz"])   # data: (1, Z, Y, X)
    seg, _ = read_seg("labelsTr/brain_000.nii.gz")                  # seg:  (1, Z, Y, X)
    write_seg(seg[0], "prediction/brain_000.nii.gz", props)         # same affine / origin / direction

Formats:
- NIfTI (``.nii``, ``.nii.gz``) through nibabel. The voxel array ``(i, j, k)`` is transposed to
  ``(k, j, i)``, which is exactly what SimpleITK returns for the same file; the header's affine fields
  are kept verbatim, so ``write(read(x))`` reproduces the file's geometry exactly.
- 2D natural images (``.png``, ``.bmp``, ``.tif``, ``.tiff``, ``.jpg``) through Pillow: ``(C, 1, H, W)``
  with spacing ``(999, 1, 1)`` as in nnU-Net's ``NaturalImage2DIO``; RGB gives three channels.
- Everything else SimpleITK reads (``.nrrd``, ``.mha``, ``.mhd``, ``.gipl``, ``.nhdr`` ...). A 2D image
  becomes ``(C, 1, Y, X)`` with spacing ``(999 * max, sy, sx)``, as in nnU-Net's ``SimpleITKIO``.

Labels are written as uint8, or uint16 when a value exceeds 255.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NIFTI_ENDINGS = (".nii.gz", ".nii")
NATURAL_2D_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
# What nnseg_nb reads (used to check a dataset's `file_ending`).
SUPPORTED_ENDINGS = (
    NIFTI_ENDINGS + NATURAL_2D_ENDINGS + (".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
)
# What nnU-Net v2's own readers accept (their `supported_file_endings`): a dataset in another format works
# here but not in nnU-Net (.jpg is left out there on purpose: lossy compression breaks label maps).
NNUNET_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl", ".png", ".bmp", ".tif", ".tiff")

# Header fields that carry a NIfTI file's geometry; copied verbatim so a written file matches the read one.
_NIFTI_GEOMETRY_FIELDS = (
    "pixdim",
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
    "xyzt_units",
)
# nnU-Net gives 2D images a huge spacing along the fake slice axis so that no stage ever resamples it.
FAKE_2D_SPACING = 999.0


class ImageReadError(ValueError):
    """A file could not be read as an image; the message names the file."""


def file_ending(path: str | os.PathLike) -> str:
    """The file ending, with double endings kept: ``'a_0000.nii.gz'`` -> ``'.nii.gz'``."""
    name = Path(path).name.lower()
    for double in (".nii.gz", ".gipl.gz"):
        if name.endswith(double):
            return double
    return Path(path).suffix.lower()


def reader_kind(path: str | os.PathLike) -> str:
    """Which backend reads ``path``: ``'nibabel'``, ``'natural2d'`` or ``'simpleitk'``."""
    ending = file_ending(path)
    if ending in NIFTI_ENDINGS:
        return "nibabel"
    if ending in NATURAL_2D_ENDINGS:
        return "natural2d"
    return "simpleitk"


# --- readers of one file: (array (C, Z, Y, X) float32, props) ------------------------------------


def _read_nifti(path: Path) -> tuple[np.ndarray, dict]:
    import nibabel as nib

    image = nib.load(str(path))
    array = np.asarray(image.dataobj)
    if array.ndim > 3 and all(s == 1 for s in array.shape[3:]):
        array = array.reshape(array.shape[:3])
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ImageReadError(
            f"{path}: {array.ndim}D image of shape {array.shape} where a 3D image is expected"
        )
    header = image.header
    zooms = [float(z) for z in header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    geometry = {field: np.asarray(header[field]).tolist() for field in _NIFTI_GEOMETRY_FIELDS}
    props = {"spacing": zooms[::-1], "reader": "nibabel", "nifti": geometry}
    return array.transpose(2, 1, 0)[None].astype(np.float32), props


def _read_sitk(path: Path) -> tuple[np.ndarray, dict]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ImageReadError(
            f"{path}: SimpleITK cannot read it ({str(e).strip().splitlines()[-1]})"
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{path}: vector images with {image.GetNumberOfComponentsPerPixel()} components per voxel are not supported"
        )
    array = sitk.GetArrayFromImage(image)
    dimension = image.GetDimension()
    spacing = list(image.GetSpacing())[::-1]
    if dimension == 2:
        array = array[None]
        spacing = [max(spacing) * FAKE_2D_SPACING] + spacing
    elif dimension != 3:
        raise ImageReadError(f"{path}: {dimension}D image where a 3D image is expected")
    props = {
        "spacing": [float(s) for s in spacing],
        "reader": "simpleitk",
        "sitk": {
            "dimension": dimension,
            "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()),
            "direction": list(image.GetDirection()),
        },
    }
    return array[None].astype(np.float32), props


def _read_natural_2d(path: Path) -> tuple[np.ndarray, dict]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:  # Pillow would silently return the first page only
                raise ImageReadError(
                    f"{path}: multi-page (3D) TIFF with {image.n_frames} pages; only 2D images are supported"
                )
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageReadError(f"{path}: not a readable 2D image ({e})") from None
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array.transpose(2, 0, 1)
    else:
        raise ImageReadError(f"{path}: unexpected 2D image shape {array.shape}")
    props = {"spacing": [FAKE_2D_SPACING, 1.0, 1.0], "reader": "natural2d"}
    return array[:, None].astype(np.float32), props


_READERS = {"nibabel": _read_nifti, "simpleitk": _read_sitk, "natural2d": _read_natural_2d}


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read one image file as ``(C, Z, Y, X)`` float32 and its props (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return _READERS[reader_kind(path)](path)
    except ImageReadError:
        raise
    except (
        Exception
    ) as e:  # truncated gzip, garbage bytes, bad header ...: say which file, not where in nibabel
        detail = str(e).replace(str(path), path.name)
        raise ImageReadError(f"{path}: cannot be read as an image ({type(e).__name__}: {detail})") from None


def read_case(image_files: Sequence[str | os.PathLike]) -> tuple[np.ndarray, dict]:
    """Read the channel files of one case and stack them into ``(C, Z, Y, X)`` float32.

    All channels must have the same shape and spacing (ValueError naming the files otherwise);
    a different origin or direction only warns, as in nnU-Net. ``props`` are those of the first file.
    """
    if not image_files:
        raise ValueError("read_case needs at least one image file")
    arrays, first_props = [], None
    for path in image_files:
        array, props = read_image(path)
        if first_props is None:
            first_props = props
        else:
            _check_same_geometry(
                Path(image_files[0]), first_props, arrays[0].shape, Path(path), props, array.shape
            )
        arrays.append(array)
    return np.concatenate(arrays, axis=0), first_props


def read_seg(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a label map as ``(1, Z, Y, X)`` float32 (values are checked elsewhere)."""
    seg, props = read_image(path)
    if seg.shape[0] != 1:
        raise ImageReadError(f"{path}: a segmentation must have one channel, found {seg.shape[0]}")
    return seg, props


def _check_same_geometry(ref_path, ref_props, ref_shape, path, props, shape) -> None:
    if tuple(ref_shape[1:]) != tuple(shape[1:]):
        raise ValueError(
            f"{path}: shape {tuple(shape[1:])} differs from {ref_path.name} {tuple(ref_shape[1:])}"
        )
    if not np.allclose(ref_props["spacing"], props["spacing"]):
        raise ValueError(
            f"{path}: spacing {props['spacing']} differs from {ref_path.name} {ref_props['spacing']}"
        )
    mismatch = geometry_mismatch(ref_props, props)
    if mismatch:
        warnings.warn(f"{path}: {mismatch} differs from {ref_path.name}", stacklevel=3)


def geometry_mismatch(props_a: dict, props_b: dict, atol: float = 1e-4) -> str | None:
    """Name what differs in the orientation/position of two images ('affine', 'origin', 'direction'), or None."""
    if "nifti" in props_a and "nifti" in props_b:
        a, b = _nifti_affine(props_a), _nifti_affine(props_b)
        return None if np.allclose(a, b, atol=atol) else "affine"
    if "sitk" in props_a and "sitk" in props_b:
        for key in ("origin", "direction"):
            if not np.allclose(props_a["sitk"][key], props_b["sitk"][key], atol=atol):
                return key
    return None


def _nifti_affine(props: dict) -> np.ndarray:
    header = _nifti_header(props, np.float32)
    return header.get_best_affine()


def _nifti_header(props: dict, dtype) -> object:
    import nibabel as nib

    header = nib.Nifti1Header()
    for field, value in props["nifti"].items():
        header[field] = value
    header.set_data_dtype(dtype)
    return header


# --- writers ---------------------------------------------------------------------------------------


def label_dtype(seg: np.ndarray) -> np.dtype:
    """uint8 for label values up to 255, uint16 above (as nnU-Net writes segmentations)."""
    if seg.size and (seg.min() < 0 or seg.max() > 65535):
        raise ValueError(f"label values must be in 0..65535, found {seg.min()}..{seg.max()}")
    return np.dtype(np.uint8 if (not seg.size or seg.max() <= 255) else np.uint16)


def write_seg(seg: np.ndarray, path: str | os.PathLike, props: dict) -> None:
    """Write a ``(Z, Y, X)`` (or ``(1, Z, Y, X)``) label map with the geometry in ``props``."""
    seg = np.asarray(seg)
    if seg.ndim == 4 and seg.shape[0] == 1:
        seg = seg[0]
    seg = np.rint(seg) if seg.dtype.kind == "f" else seg
    write_image(seg.astype(label_dtype(seg)), path, props)


def write_image(array: np.ndarray, path: str | os.PathLike, props: dict) -> None:
    """Write a ``(Z, Y, X)`` or one-channel ``(1, Z, Y, X)`` array with the geometry in ``props``.

    The backend is chosen by the file ending of ``path``; geometry that the target format cannot hold
    (e.g. an affine in a PNG) is dropped. The file appears atomically (temporary name, then rename).
    """
    array = np.asarray(array)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"{path}: write_image writes one channel, got {array.shape[0]}")
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a (Z, Y, X) array, got shape {array.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = {"nibabel": _write_nifti, "simpleitk": _write_sitk, "natural2d": _write_natural_2d}[
        reader_kind(path)
    ]
    # Write under the final name in a private temporary folder, then move in: readers never see half a file,
    # and a detached header (x.mhd) keeps naming its data file (x.zraw) by its final name.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        writer(array, tmp_dir / path.name, props)
        for produced in sorted(tmp_dir.iterdir(), key=lambda f: f.name == path.name):  # the header last
            os.replace(produced, path.parent / produced.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _write_nifti(array: np.ndarray, path: Path, props: dict) -> None:
    import nibabel as nib

    data = array.transpose(2, 1, 0)
    if "nifti" in props:
        header = _nifti_header(props, array.dtype)
        image = nib.Nifti1Image(data, header.get_best_affine(), header=header)
        # Nifti1Image recomputes q/s-forms from the affine; restore the original fields verbatim.
        for field, value in props["nifti"].items():
            image.header[field] = value
    else:
        if "sitk" in props:  # e.g. a .nrrd label written as .nii.gz: keep its position and orientation
            affine = _affine_from_sitk(props["sitk"])
        else:
            affine = np.diag(list(props.get("spacing", [1.0, 1.0, 1.0])[::-1]) + [1.0])
        image = nib.Nifti1Image(data, affine)
        image.header.set_qform(affine, code=1)
        image.header.set_sform(affine, code=1)
    image.header.set_data_dtype(array.dtype)
    nib.save(image, str(path))


def _write_sitk(array: np.ndarray, path: Path, props: dict) -> None:
    import SimpleITK as sitk

    geometry = props.get("sitk")
    if geometry is None and "nifti" in props:  # a NIfTI image written as .nrrd/.mha: same physical geometry
        geometry = _sitk_geometry_from_affine(_nifti_affine(props))
    if geometry is not None and geometry.get("dimension") == 2:
        image = sitk.GetImageFromArray(array[0])
    else:
        image = sitk.GetImageFromArray(array)
    if geometry is not None:
        image.SetSpacing(geometry["spacing"])
        image.SetOrigin(geometry["origin"])
        image.SetDirection(geometry["direction"])
    else:
        image.SetSpacing([float(s) for s in props.get("spacing", [1.0, 1.0, 1.0])[::-1]])
    sitk.WriteImage(image, str(path), True)


# ITK stores origin and direction in LPS coordinates, NIfTI its affine in RAS: x and y change sign.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _affine_from_sitk(geometry: dict) -> np.ndarray:
    """The RAS voxel-to-world affine of a SimpleITK geometry (as ITK's NIfTI writer computes it)."""
    dim = geometry["dimension"]
    direction, spacing, origin = np.eye(3), np.ones(3), np.zeros(3)
    direction[:dim, :dim] = np.reshape(geometry["direction"], (dim, dim))
    spacing[:dim] = geometry["spacing"]
    origin[:dim] = geometry["origin"]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def _sitk_geometry_from_affine(affine: np.ndarray) -> dict:
    """SimpleITK spacing, origin and direction (LPS) of a RAS NIfTI affine; inverse of ``_affine_from_sitk``."""
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    return {
        "dimension": 3,
        "spacing": spacing.tolist(),
        "origin": (_LPS_TO_RAS @ affine[:3, 3]).tolist(),
        "direction": (lps / spacing).ravel().tolist(),
    }


def _write_natural_2d(array: np.ndarray, path: Path, props: dict) -> None:
    from PIL import Image

    if array.shape[0] != 1:
        raise ValueError(f"{path}: a 2D image file holds one slice, got {array.shape[0]}")
    plane = array[0]
    if plane.dtype == np.uint16:
        if _pil_format(path) not in ("PNG", "TIFF"):
            raise ValueError(
                f"{path}: 16-bit values (up to {plane.max()}) need a .png or .tif file, not {path.suffix}"
            )
        Image.fromarray(plane.astype(np.uint16)).save(path, format=_pil_format(path))
    else:
        if plane.dtype != np.uint8:
            if plane.min() < 0 or plane.max() > 255:
                raise ValueError(f"{path}: values {plane.min()}..{plane.max()} do not fit an 8-bit image")
            plane = np.rint(plane).astype(np.uint8)
        Image.fromarray(plane).save(path, format=_pil_format(path))


def _pil_format(path: Path) -> str:
    return {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}[
        file_ending(path)
    ]


def _nifti_fields(nibabel_stuff: dict) -> dict:
    """The header fields nibabel writes for an image made from this affine (what NibabelIO.write_seg does)."""
    import nibabel as nib

    header = nib.Nifti1Image(
        np.zeros((1, 1, 1), np.uint8), np.asarray(nibabel_stuff["original_affine"])
    ).header
    return {field: np.asarray(header[field]).tolist() for field in _NIFTI_GEOMETRY_FIELDS}


# What a pickle of dicts, tuples, sets, numbers and numpy arrays/scalars names, in numpy 1 and 2 spellings:
# the only objects a properties file may ask for. Not all of ``numpy``: it holds functions that run code.
_NUMPY_PICKLE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype")} | {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")  # numpy 1's and numpy 2's
    for module, name in [("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")]
}  # _frombuffer: arrays pickled with protocol 5
_PLAIN_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("_codecs", "encode"),  # bytes in protocol 2
}


def _numpy_module(module: str) -> str:
    """``numpy._core.*`` (numpy 2's name) as ``numpy.core.*`` when the running numpy is 1.x.

    numpy 2 still imports ``numpy.core.*``, so a numpy 1 pickle loads there; numpy 1 has no ``numpy._core``.

    >>> import importlib                                   # numpy 1.26: numpy.core.multiarray
    >>> importlib.import_module(_numpy_module("numpy._core.multiarray")).__name__.endswith("core.multiarray")
    True
    """
    if int(np.__version__.split(".")[0]) < 2 and (
        module == "numpy._core" or module.startswith("numpy._core.")
    ):
        return "numpy.core" + module[len("numpy._core") :]
    return module


class SafeUnpickler(pickle.Unpickler):
    """Reads nnU-Net's pickles: plain values and numpy arrays/scalars only, any other object is refused
    with an error naming the file. numpy 2's ``numpy._core`` names load under numpy 1.x too.

    Subclasses that expect more objects answer for them in ``find_class`` and defer the rest here.

    >>> import io as std_io
    >>> SafeUnpickler(std_io.BytesIO(pickle.dumps(np.arange(3))), "a.pkl").load()
    array([0, 1, 2])
    """

    def __init__(self, file, path: str | os.PathLike | None = None, **pickle_options):
        super().__init__(file, **pickle_options)
        self.path = path  # for errors; torch.load (which passes encoding=) names the file itself

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_PICKLE_GLOBALS:
            return super().find_class(_numpy_module(module), name)
        if (module, name) in _PLAIN_PICKLE_GLOBALS:
            return super().find_class(module, name)
        where = f"{self.path}: " if self.path is not None else ""
        raise pickle.UnpicklingError(
            f"{where}refusing to load {module}.{name} (only plain values and numpy arrays are read)"
        )


def load_nnunet_properties(path: str | os.PathLike) -> dict:
    """The dict nnU-Net pickled into a ``.pkl`` (a preprocessed case's, or a prediction's properties).

    Safe to call on a file from elsewhere: only plain values and numpy arrays/scalars are loaded, anything
    else is an error naming the file. Files written under numpy 2 load under numpy 1.x too.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "case.pkl"
    ...     _ = path.write_bytes(pickle.dumps({"spacing": np.array([1.0, 0.5, 0.5])}))
    ...     load_nnunet_properties(path)["spacing"]
    array([1. , 0.5, 0.5])
    """
    with open(path, "rb") as f:
        properties = SafeUnpickler(f, path).load()
    if not isinstance(properties, dict):
        raise ValueError(f"{path}: holds a {type(properties).__name__}, not a properties dict")
    return properties


def props_from_nnunet(properties: dict, path: str | os.PathLike) -> dict:
    """Our props (``read_case``'s) from the properties nnU-Net's reader/writers store in its ``.pkl`` files.

    Props that are already ours pass through unchanged; ``path`` names the file in errors. Used where
    nnU-Net's files meet ours: its preprocessed cases and its probability ``.pkl`` files.
    """
    if "reader" in properties:
        return properties
    spacing = [float(s) for s in properties["spacing"]]
    if "sitk_stuff" in properties:
        sitk = properties["sitk_stuff"]
        if "original_orientation" in sitk:
            raise ValueError(f"{path}: written by SimpleITKIOWithReorient, which is not supported")
        return {
            "spacing": spacing,
            "reader": "simpleitk",
            "sitk": {
                "dimension": len(sitk["spacing"]),
                "spacing": [float(s) for s in sitk["spacing"]],
                "origin": [float(s) for s in sitk["origin"]],
                "direction": [float(s) for s in sitk["direction"]],
            },
        }
    if "nibabel_stuff" in properties:
        if "reoriented_affine" in properties["nibabel_stuff"]:
            raise ValueError(f"{path}: written by NibabelIOWithReorient, which is not supported")
        return {"spacing": spacing, "reader": "nibabel", "nifti": _nifti_fields(properties["nibabel_stuff"])}
    return {"spacing": spacing, "reader": "natural2d"}
