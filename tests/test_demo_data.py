"""The demo datasets: valid nnU-Net raw datasets with the properties each one is meant to teach, deterministic by seed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnseg_nb import cli, demo_data
from nnseg_nb.dataset import LabelInfo, find_cases, find_test_cases, load_dataset_json
from nnseg_nb.demo_data import DEMO_DATASETS, build_demo_datasets, demo_build_status, select_demo_datasets
from nnseg_nb.io import read_case, read_seg


@pytest.fixture(scope="module")
def full_build(tmp_path_factory) -> dict[str, Path]:
    """Every demo dataset at its default size, seed 0 (a few seconds)."""
    return build_demo_datasets(tmp_path_factory.mktemp("raw"), seed=0, progress=False)


def read_all(folder: Path, test: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """{case: (image (C, Z, Y, X), seg (Z, Y, X) int, props)} of the training (or test) cases."""
    cases = (find_test_cases if test else find_cases)(folder, load_dataset_json(folder))
    out = {}
    for case, files in cases.items():
        image, props = read_case(files.images)
        seg, seg_props = read_seg(files.label)
        assert seg.shape[1:] == image.shape[1:], case
        np.testing.assert_allclose(seg_props["spacing"], props["spacing"])
        out[case] = (image, seg[0].astype(int), props)
    return out


# --- every dataset -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DEMO_DATASETS))
def test_each_dataset_is_a_valid_raw_dataset(full_build, name):
    folder = full_build[name]
    assert folder.name == name and folder.parent.is_dir()
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert {"channel_names", "labels", "numTraining", "file_ending", "name", "description", "licence"} <= set(
        dataset_json
    )
    defaults = demo_data._build_record(name, 0, None, None)
    train, test = read_all(folder), read_all(folder, test=True)
    assert dataset_json["numTraining"] == len(train) == defaults["num_train"]
    assert dataset_json["numTest"] == len(test) == defaults["num_test"]
    assert len(train) + len(test) >= 14
    assert not set(train) & set(test)
    declared = set(LabelInfo.from_dataset_json(dataset_json).all_labels)
    channels = len(dataset_json["channel_names"])
    for image, seg, _props in [*train.values(), *test.values()]:
        assert image.shape[0] == channels and image.dtype == np.float32
        assert set(np.unique(seg)) <= declared
        assert np.isfinite(image).all()
    for cases in (train, test):  # every label in the training set and in the test set
        assert set().union(*(np.unique(seg).tolist() for _, seg, _ in cases.values())) == declared


def test_brain_tissue_is_realistic(full_build):
    folder = full_build["Dataset901_BrainTissue"]
    dataset_json = load_dataset_json(folder)
    assert dataset_json["channel_names"] == {"0": "T1"}
    assert dataset_json["labels"] == {"background": 0, "gray_matter": 1, "white_matter": 2}
    assert "Louis Collins" in dataset_json["licence"] and "Fonov" in dataset_json["reference"]
    assert "Copyright (C) 1993-2009 Louis Collins" in (folder / "NOTICE.md").read_text()
    spacings = []
    for case, (image, seg, props) in read_all(folder).items():
        brain = image[0] > 0
        assert 56 <= min(image.shape[1:]) and max(image.shape[1:]) <= 100, (case, image.shape)
        for label in (1, 2):  # gray and white matter each a plausible part of the brain
            assert 0.10 < (seg == label).sum() / brain.sum() < 0.60, (case, label)
        assert not (seg[~brain] > 0).any()  # tissue only where there is image
        # skull-stripped: zero outside, so crop-to-nonzero removes a margin on every side
        nonzero = np.argwhere(brain)
        assert (nonzero.min(0) > 0).all() and (nonzero.max(0) < np.array(brain.shape) - 1).all(), case
        assert 0.25 < brain.mean() < 0.6
        affine = _affine(props)
        np.testing.assert_allclose(np.abs(np.diag(affine)[:3]), props["spacing"][::-1], rtol=1e-5)
        assert np.abs(affine[:3, 3]).max() > 20  # a real position (MNI space), not the origin
        spacings.append(props["spacing"])
    spacings = np.array(spacings)
    assert (spacings >= 2.0).all() and (spacings <= 3.0).all()
    assert len(np.unique(spacings.round(3), axis=0)) == len(spacings)  # every case needs resampling


def _affine(props: dict) -> np.ndarray:
    import nibabel as nib

    header = nib.Nifti1Header()
    for field, value in props["nifti"].items():
        header[field] = value
    return header.get_best_affine()


def test_aniso_synth_has_thick_varying_slices_and_a_small_lesion(full_build):
    cases = read_all(full_build["Dataset902_AnisoSynth"])
    spacings = np.array([props["spacing"] for _, _, props in cases.values()])
    assert (spacings[:, 0] >= 4.0).all() and (spacings[:, 0] <= 5.0).all()
    assert (spacings[:, 1:] >= 0.8).all() and (spacings[:, 1:] <= 1.0).all()
    assert (spacings[:, 0] / spacings[:, 1] > 3).all()  # nnU-Net's anisotropy threshold
    assert spacings[:, 0].std() > 0.1 and spacings[:, 1].std() > 0.02
    cropped = 0
    for image, seg, _ in cases.values():
        assert 16 <= image.shape[1] <= 24 and all(96 <= n <= 128 for n in image.shape[2:])
        organ, lesion = (seg >= 1).sum(), (seg == 2).sum()
        assert 0 < lesion < 0.1 * organ and organ < 0.3 * seg.size
        zero = image[0] == 0
        if zero.any():  # a case that is zero outside the body: crop-to-nonzero removes a margin in-plane
            nonzero = np.argwhere(~zero)
            assert (nonzero.min(0)[1:] > 0).all() and (
                nonzero.max(0)[1:] < np.array(zero.shape[1:]) - 1
            ).all()
            cropped += 1
    assert 0 < cropped < len(cases)  # some cases have a nonzero mask smaller than the image, some not


def test_multichannel_has_hu_like_ct_and_t2(full_build):
    folder = full_build["Dataset903_MultiChannel"]
    assert load_dataset_json(folder)["channel_names"] == {"0": "CT", "1": "T2"}
    for image, seg, props in read_all(folder).values():
        ct, t2 = image
        assert ct.min() <= -990 and 300 < ct.max() < 3072  # air, soft tissue, bone
        assert abs(np.median(ct[ct > -500]) - 20) < 80  # the body is soft tissue and fat
        assert t2.min() >= 0 and t2.max() > 100
        assert 48 <= min(ct.shape) and max(ct.shape) <= 64
        assert all(0.9 < s < 1.6 for s in props["spacing"])
        # CT: the organ is enhanced, the cyst is fluid; T2: the cyst is the brightest, the organ above muscle
        muscle = (seg == 0) & (ct > 0) & (ct < 150)
        assert np.median(ct[seg == 1]) > np.median(ct[muscle]) + 20 > np.median(ct[seg == 2]) + 20
        assert (
            t2[seg == 2].mean() > 1.5 * t2[seg == 1].mean() and t2[seg == 1].mean() > 1.1 * t2[muscle].mean()
        )


def test_shapes_2d_are_pngs(full_build):
    folder = full_build["Dataset904_Shapes2D"]
    assert load_dataset_json(folder)["file_ending"] == ".png"
    for image, seg, props in read_all(folder).values():
        assert image.shape == (1, 1, 128, 128) and props["spacing"] == [999.0, 1.0, 1.0]
        assert 0 <= image.min() and image.max() <= 255 and image.std() > 10
        assert set(np.unique(seg)) == {0, 1, 2}  # both shapes in every image


# --- determinism, subsets, up-to-date check ------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != demo_data.MARKER_FILE
    }


def test_same_seed_same_files_and_a_subset_is_the_start_of_the_full_build(tmp_path, full_build):
    small = dict(num_train=2, num_test=1, progress=False)
    a = build_demo_datasets(tmp_path / "a", seed=0, **small)
    b = build_demo_datasets(tmp_path / "b", seed=0, **small)
    for name in DEMO_DATASETS:
        files_a, files_b = _files(a[name]), _files(b[name])
        assert files_a == files_b, name  # byte-identical, images and labels
        full_train = read_all(full_build[name])
        for case, (image, seg, _props) in read_all(a[name]).items():
            np.testing.assert_array_equal(image, full_train[case][0])
            np.testing.assert_array_equal(seg, full_train[case][1])


def test_another_seed_gives_other_cases(tmp_path):
    a = build_demo_datasets(tmp_path / "a", seed=0, num_train=1, num_test=0, progress=False)
    b = build_demo_datasets(tmp_path / "b", seed=1, num_train=1, num_test=0, progress=False)
    for name in DEMO_DATASETS:
        ((image_a, seg_a, _),) = read_all(a[name]).values()
        ((image_b, seg_b, _),) = read_all(b[name]).values()
        assert image_a.shape != image_b.shape or not np.array_equal(image_a, image_b), name
        assert seg_a.shape != seg_b.shape or not np.array_equal(seg_a, seg_b), name


def test_a_current_build_is_kept_and_anything_else_rebuilt(tmp_path):
    small = dict(only=["Shapes2D"], num_train=2, num_test=1, progress=False)
    folder = build_demo_datasets(tmp_path, **small)["Dataset904_Shapes2D"]
    marker = json.loads((folder / demo_data.MARKER_FILE).read_text())
    assert marker["seed"] == 0 and marker["version"] == DEMO_DATASETS["Dataset904_Shapes2D"]["version"]
    assert "labelsTs/shapes_002.png" in marker["files"]
    label = folder / "labelsTr" / "shapes_000.png"
    stamp = label.stat().st_mtime_ns
    assert demo_build_status(folder, 0, 2, 1) == "current"
    build_demo_datasets(tmp_path, **small)
    assert label.stat().st_mtime_ns == stamp  # skipped
    assert demo_build_status(folder, 1, 2, 1) == "stale"  # another seed
    assert demo_build_status(folder, 0, 3, 1) == "stale"  # other counts
    label.unlink()
    assert demo_build_status(folder, 0, 2, 1) == "stale"  # incomplete
    build_demo_datasets(tmp_path, **small)
    assert label.is_file() and demo_build_status(folder, 0, 2, 1) == "current"
    stamp = label.stat().st_mtime_ns
    build_demo_datasets(tmp_path, overwrite=True, **small)
    assert label.stat().st_mtime_ns != stamp
    left = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")
    assert left == ["Dataset904_Shapes2D"]  # no temporary folders left


def test_a_folder_that_is_no_demo_build_is_not_replaced(tmp_path):
    mine = tmp_path / "Dataset904_Shapes2D"
    (mine / "imagesTr").mkdir(parents=True)
    (mine / "dataset.json").write_text("{}")
    assert demo_build_status(mine) == "foreign"
    with pytest.raises(FileExistsError, match="not an nnseg_nb demo build"):
        build_demo_datasets(tmp_path, only=[904], num_train=1, num_test=0, progress=False)
    assert (mine / "dataset.json").read_text() == "{}"
    build_demo_datasets(tmp_path, only=[904], num_train=1, num_test=0, progress=False, overwrite=True)
    assert load_dataset_json(mine)["numTraining"] == 1
    (tmp_path / "Dataset901_Other").mkdir()  # the id is taken by another dataset
    with pytest.raises(FileExistsError, match="901"):
        build_demo_datasets(tmp_path, only=[901], num_train=1, num_test=0, progress=False)


def test_an_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def crashing_case(rng):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_data, "shapes_case", crashing_case)
    with pytest.raises(KeyboardInterrupt):
        build_demo_datasets(tmp_path, only=["Shapes2D"], num_train=2, num_test=0, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [".Dataset904_Shapes2D.lock"]


def test_concurrent_builds_of_one_dataset_make_one_build(tmp_path, monkeypatch):
    """Notebooks under pytest-xdist build the demo data at the same time: one builds, the others wait."""
    from concurrent.futures import ThreadPoolExecutor

    builds = []
    build_into_place = demo_data._build_into_place
    monkeypatch.setattr(
        demo_data, "_build_into_place", lambda *args: builds.append(1) or build_into_place(*args)
    )
    small = dict(only=["Shapes2D"], num_train=3, num_test=1, progress=False)
    with ThreadPoolExecutor(4) as pool:  # flock locks per open file, so threads exclude each other too
        folders = list(pool.map(lambda _: build_demo_datasets(tmp_path, **small), range(4)))
    assert len(builds) == 1 and all(f == folders[0] for f in folders)
    assert demo_build_status(folders[0]["Dataset904_Shapes2D"], 0, 3, 1) == "current"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".Dataset904_Shapes2D.lock", "Dataset904_Shapes2D"]


def test_select_demo_datasets():
    assert select_demo_datasets(None) == list(DEMO_DATASETS)
    assert select_demo_datasets(["Dataset903_MultiChannel", 901, "braintissue"]) == [
        "Dataset901_BrainTissue",
        "Dataset903_MultiChannel",
    ]
    with pytest.raises(ValueError, match="no demo dataset 'Liver'"):
        select_demo_datasets(["Liver"])
    with pytest.raises(ValueError, match="non-negative"):
        build_demo_datasets("unused", seed=-1)


def test_the_shipped_template(tmp_path):
    asset = demo_data.load_mni_asset()
    assert asset["t1"].shape == asset["gm"].shape == asset["wm"].shape
    np.testing.assert_array_equal(asset["spacing"], [2.0, 2.0, 2.0])
    assert 0.3 < (asset["t1"] > 0).mean() < 0.7 and asset["t1"].max() > 0.9
    assert ((asset["gm"] + asset["wm"]) <= 1.0 + 2 / 17).all()  # probabilities (quantized to 1/15)
    assets = Path(demo_data.__file__).parent / "demo_assets"
    assert (assets / demo_data.MNI_ASSET).stat().st_size < 500_000
    assert "Permission to use, copy" in (assets / "NOTICE.md").read_text()


# --- command line --------------------------------------------------------------------------------


def test_cli_builds_and_reports_where(tmp_path, capsys, full_build):
    root = next(iter(full_build.values())).parent
    assert cli.main(["demo-data", "-o", str(root)]) == 0  # all there already: nothing rebuilt
    out = capsys.readouterr().out
    for name in DEMO_DATASETS:
        assert f"up to date {root / name}" in out

    assert cli.main(["demo-data", "-o", str(tmp_path), "--only", "904", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert f"built      {tmp_path / 'Dataset904_Shapes2D'}" in out and "seed 3" in out
    assert json.loads((tmp_path / "Dataset904_Shapes2D" / demo_data.MARKER_FILE).read_text())["seed"] == 3

    assert cli.main(["demo-data", "-o", str(tmp_path), "--only", "Liver"]) == 1
    assert "error: no demo dataset 'Liver'" in capsys.readouterr().err
    os.remove(tmp_path / "Dataset904_Shapes2D" / demo_data.MARKER_FILE)  # now it looks like someone else's
    assert cli.main(["demo-data", "-o", str(tmp_path), "--only", "904"]) == 1
    assert "not an nnseg_nb demo build" in capsys.readouterr().err
