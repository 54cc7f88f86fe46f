"""nnseg_nb.io: every format round-trips its array and geometry; bad files fail naming the file."""

import pickle
import pickletools

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nnseg_nb import io

GEOMETRY_FIELDS = (
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


def oblique_affine() -> np.ndarray:
    """A rotated, anisotropic, translated voxel-to-world affine (no axis is aligned)."""
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot_z @ rot_x @ np.diag([0.7, 1.3, 2.5])
    affine[:3, 3] = [-12.5, 30.25, 7.0]
    return affine


def save_nifti(path, data, affine, qform_code=1, sform_code=2):
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=qform_code)
    image.header.set_sform(affine, code=sform_code)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)  # nibabel (i, j, k)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_nifti_round_trip_keeps_header_geometry_and_array(tmp_path, volume, ending):
    source = tmp_path / f"a{ending}"
    save_nifti(source, volume, oblique_affine())
    data, props = io.read_image(source)
    assert data.shape == (1, 8, 10, 12) and data.dtype == np.float32  # (C, Z, Y, X): transposed
    np.testing.assert_array_equal(data[0], volume.transpose(2, 1, 0))
    assert props["spacing"] == pytest.approx([2.5, 1.3, 0.7], abs=1e-6)

    copy = tmp_path / f"b{ending}"
    io.write_image(data, copy, props)
    original, written = nib.load(str(source)).header, nib.load(str(copy)).header
    for field in GEOMETRY_FIELDS:
        np.testing.assert_array_equal(written[field], original[field], err_msg=field)
    assert (written["qform_code"], written["sform_code"]) == (1, 2)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(copy)).dataobj), volume)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [source.name, copy.name]
    )  # no temp files left


def test_nibabel_read_equals_simpleitk_read(tmp_path, volume):
    path = tmp_path / "a.nii.gz"
    save_nifti(path, volume, oblique_affine())
    data, props = io.read_image(path)
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(data[0], sitk.GetArrayFromImage(image))
    assert props["spacing"] == pytest.approx(list(image.GetSpacing())[::-1], abs=1e-5)


@pytest.mark.parametrize("ending", [".nrrd", ".mha", ".mhd"])
def test_simpleitk_formats_round_trip_origin_and_direction(tmp_path, ending):
    array = np.arange(8 * 10 * 12, dtype=np.int16).reshape(8, 10, 12)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.75, 3.0))
    image.SetOrigin((10.0, -20.0, 5.5))
    direction = sitk.VersorTransform((0.3, 0.1, 0.9), 0.4).GetMatrix()  # a rotation
    image.SetDirection(direction)
    sitk.WriteImage(image, str(tmp_path / f"a{ending}"))

    data, props = io.read_image(tmp_path / f"a{ending}")
    assert data.shape == (1, 8, 10, 12)
    np.testing.assert_array_equal(data[0], array)
    assert props["spacing"] == [3.0, 0.75, 0.5]  # (Z, Y, X)
    io.write_image(data[0].astype(np.int16), tmp_path / f"out{ending}", props)
    back = sitk.ReadImage(str(tmp_path / f"out{ending}"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    assert back.GetOrigin() == pytest.approx(image.GetOrigin())
    assert back.GetDirection() == pytest.approx(image.GetDirection())
    assert back.GetSpacing() == pytest.approx(image.GetSpacing())


def test_detached_header_writes_its_data_file_under_the_final_name(tmp_path):
    io.write_image(np.ones((2, 3, 4), np.uint8), tmp_path / "x.mhd", {"spacing": [3.0, 2.0, 1.0]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mhd", "x.zraw"]
    assert "ElementDataFile = x.zraw" in (tmp_path / "x.mhd").read_text()
    data, props = io.read_image(tmp_path / "x.mhd")
    assert data.shape == (1, 2, 3, 4) and props["spacing"] == [3.0, 2.0, 1.0]


def test_geometry_survives_a_change_of_format(tmp_path, volume):
    """A NIfTI written as .nrrd (and back) keeps its physical position: what SimpleITK sees is unchanged."""
    save_nifti(tmp_path / "a.nii.gz", volume, oblique_affine())
    data, props = io.read_image(tmp_path / "a.nii.gz")
    io.write_image(data, tmp_path / "a.nrrd", props)
    original, converted = sitk.ReadImage(str(tmp_path / "a.nii.gz")), sitk.ReadImage(str(tmp_path / "a.nrrd"))
    assert converted.GetOrigin() == pytest.approx(original.GetOrigin(), abs=1e-4)
    assert converted.GetDirection() == pytest.approx(original.GetDirection(), abs=1e-5)
    assert converted.GetSpacing() == pytest.approx(original.GetSpacing(), abs=1e-5)
    data2, props2 = io.read_image(tmp_path / "a.nrrd")
    io.write_image(data2, tmp_path / "b.nii.gz", props2)
    np.testing.assert_allclose(nib.load(str(tmp_path / "b.nii.gz")).affine, oblique_affine(), atol=1e-4)


@pytest.mark.parametrize("ending", [".png", ".bmp", ".tif"])
def test_natural_2d_grayscale_and_rgb_give_channels(tmp_path, ending):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(10, 12), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / f"gray{ending}")
    Image.fromarray(rgb).save(tmp_path / f"rgb{ending}")

    data, props = io.read_image(tmp_path / f"gray{ending}")
    assert data.shape == (1, 1, 10, 12) and props["spacing"] == [999.0, 1.0, 1.0]
    np.testing.assert_array_equal(data[0, 0], gray)
    data, _ = io.read_image(tmp_path / f"rgb{ending}")
    assert data.shape == (3, 1, 10, 12)
    np.testing.assert_array_equal(data[:, 0], rgb.transpose(2, 0, 1))
    case, _ = io.read_case([tmp_path / f"rgb{ending}", tmp_path / f"gray{ending}"])
    assert case.shape == (4, 1, 10, 12)

    io.write_seg(gray[None], tmp_path / f"seg{ending}", props)  # (Z=1, Y, X)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"seg{ending}")), gray)


def test_multipage_tiff_is_refused_not_truncated(tmp_path):
    pages = [Image.fromarray(np.full((4, 5), i, np.uint8)) for i in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(io.ImageReadError, match="stack.tif.*multi-page"):
        io.read_image(tmp_path / "stack.tif")


def test_2d_nrrd_gets_nnunet_fake_slice_spacing(tmp_path):
    image = sitk.GetImageFromArray(np.arange(30, dtype=np.float32).reshape(5, 6))
    image.SetSpacing((0.5, 2.0))  # (x, y)
    image.SetOrigin((3.0, 4.0))
    sitk.WriteImage(image, str(tmp_path / "a.nrrd"))
    data, props = io.read_image(tmp_path / "a.nrrd")
    assert data.shape == (1, 1, 5, 6)
    assert props["spacing"] == [2.0 * 999, 2.0, 0.5]  # max in-plane spacing * 999, as nnU-Net's SimpleITKIO
    io.write_image(data, tmp_path / "b.nrrd", props)
    back = sitk.ReadImage(str(tmp_path / "b.nrrd"))
    assert back.GetDimension() == 2 and back.GetOrigin() == (3.0, 4.0) and back.GetSpacing() == (0.5, 2.0)


@pytest.mark.parametrize("max_value, dtype", [(254, np.uint8), (255, np.uint8), (300, np.uint16)])
def test_label_dtype_on_disk(tmp_path, max_value, dtype):
    seg = np.zeros((3, 4, 5), np.int64)
    seg[1, 2, 3] = max_value
    io.write_seg(seg, tmp_path / "s.nii.gz", {"spacing": [1.0, 1.0, 1.0]})
    on_disk = nib.load(str(tmp_path / "s.nii.gz"))
    assert on_disk.get_data_dtype() == dtype
    assert np.asanyarray(on_disk.dataobj).max() == max_value
    with pytest.raises(ValueError, match="0..65535"):
        io.write_seg(seg - 1, tmp_path / "t.nii.gz", {"spacing": [1.0, 1.0, 1.0]})


@pytest.mark.parametrize("ending, writable", [(".png", True), (".tif", True), (".bmp", False)])
def test_16_bit_labels_in_2d_files(tmp_path, ending, writable):
    seg = np.zeros((1, 4, 5), np.int64)
    seg[0, 1, 2] = 300
    props = {"spacing": [999.0, 1.0, 1.0]}
    if not writable:  # BMP has no 16-bit grayscale: refused, naming the file, before anything is written
        with pytest.raises(ValueError, match=r"s.bmp: 16-bit values \(up to 300\) need a .png or .tif file"):
            io.write_seg(seg, tmp_path / f"s{ending}", props)
        assert not list(tmp_path.iterdir())
        return
    io.write_seg(seg, tmp_path / f"s{ending}", props)
    back, _ = io.read_seg(tmp_path / f"s{ending}")
    np.testing.assert_array_equal(back[0], seg)


def test_float_segmentation_is_rounded_before_writing(tmp_path):
    io.write_seg(np.full((1, 2, 2, 2), 1.9999, np.float32), tmp_path / "s.nrrd", {"spacing": [1.0, 1.0, 1.0]})
    seg, _ = io.read_seg(tmp_path / "s.nrrd")
    assert seg.shape == (1, 2, 2, 2) and (seg == 2).all()


def test_truncated_and_fake_nifti_name_the_file(tmp_path, volume):
    save_nifti(tmp_path / "good.nii.gz", volume, np.eye(4))
    raw = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "notes.nii.gz").write_text("these are my notes, not an image\n")
    for name in ("truncated.nii.gz", "notes.nii.gz"):
        with pytest.raises(io.ImageReadError, match=str(tmp_path / name)):
            io.read_image(tmp_path / name)
    (tmp_path / "notes.nrrd").write_text("not an image either\n")
    with pytest.raises(io.ImageReadError, match="notes.nrrd"):
        io.read_image(tmp_path / "notes.nrrd")
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        io.read_image(tmp_path / "missing.nii.gz")


def test_4d_image_is_an_error(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), str(tmp_path / "four.nii.gz"))
    with pytest.raises(io.ImageReadError, match=r"four.nii.gz: 4D image .* 3D image is expected"):
        io.read_image(tmp_path / "four.nii.gz")
    # a trailing axis of length 1 is not a 4th dimension
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.float32), np.eye(4)), str(tmp_path / "thin.nii.gz"))
    assert io.read_image(tmp_path / "thin.nii.gz")[0].shape == (1, 6, 5, 4)


def test_read_case_stacks_channels_and_refuses_other_shapes(tmp_path, volume):
    save_nifti(tmp_path / "c_0000.nii.gz", volume, np.eye(4))
    save_nifti(tmp_path / "c_0001.nii.gz", volume * 2, np.eye(4))
    save_nifti(tmp_path / "c_0002.nii.gz", volume[:-1], np.eye(4))
    data, _ = io.read_case([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])
    assert data.shape == (2, 8, 10, 12)
    np.testing.assert_array_equal(data[1], 2 * data[0])
    with pytest.raises(ValueError, match="c_0002.nii.gz: shape"):
        io.read_case([tmp_path / "c_0000.nii.gz", tmp_path / "c_0002.nii.gz"])


def test_file_ending_keeps_double_endings():
    assert io.file_ending("a/b_0000.nii.gz") == ".nii.gz"
    assert io.file_ending("x.NRRD") == ".nrrd"
    assert io.reader_kind("x.png") == "natural2d" and io.reader_kind("x.mha") == "simpleitk"
    assert set(io.NNUNET_ENDINGS) < set(io.SUPPORTED_ENDINGS) and ".jpg" not in io.NNUNET_ENDINGS


# --- nnU-Net's pickled properties ---------------------------------------------------------------------


def _properties_pickle(numpy_core: str) -> bytes:
    """A protocol-2 pickle of properties whose stream names ``{numpy_core}.multiarray`` (numpy 2 writes
    ``numpy._core``, numpy 1 ``numpy.core``), whichever numpy runs the test: the names are rewritten."""
    properties = {"spacing": np.array([3.0, 0.5, 0.5]), "shape": (4, 5, 6), "mean": np.float32(1.5)}
    stream = pickle.dumps(properties, protocol=2)  # GLOBAL opcodes: "module\nname\n", safe to rewrite
    for spelling in ("numpy.core.", "numpy._core."):
        stream = stream.replace(f"c{spelling}multiarray\n".encode(), f"c{numpy_core}.multiarray\n".encode())
    return stream


@pytest.mark.parametrize("numpy_core", ["numpy._core", "numpy.core"])  # written under numpy 2, numpy 1
def test_properties_from_either_numpy_load_under_this_one(tmp_path, numpy_core):
    stream = _properties_pickle(numpy_core)
    named = {arg for op, arg, _ in pickletools.genops(stream) if op.name == "GLOBAL"}
    assert {f"{numpy_core}.multiarray _reconstruct", f"{numpy_core}.multiarray scalar"} <= named
    (tmp_path / "case.pkl").write_bytes(stream)
    properties = io.load_nnunet_properties(tmp_path / "case.pkl")
    np.testing.assert_array_equal(properties["spacing"], [3.0, 0.5, 0.5])
    assert properties["shape"] == (4, 5, 6)
    assert properties["mean"] == np.float32(1.5) and properties["mean"].dtype == np.float32


@pytest.mark.parametrize("module, name", [("os", "system"), ("numpy.testing._private.utils", "runstring")])
def test_properties_naming_other_objects_are_refused_naming_the_file(tmp_path, module, name):
    (tmp_path / "evil.pkl").write_bytes(f"c{module}\n{name}\n(S'true'\ntR.".encode())  # os.system("true")
    with pytest.raises(pickle.UnpicklingError, match=f"evil.pkl: refusing to load {module}.{name}"):
        io.load_nnunet_properties(tmp_path / "evil.pkl")


def test_properties_file_must_hold_a_dict(tmp_path):
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="list.pkl: holds a list, not a properties dict"):
        io.load_nnunet_properties(tmp_path / "list.pkl")
