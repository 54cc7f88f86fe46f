"""Ensembling: label maps, merged probabilities and geometry equal to nnunetv2 2.8.1's ensemble_folders.

Fixture: tests/fixtures/make_ensemble.py (labels with SimpleITKIO properties, regions with NibabelIO's).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnseg_nb import cli
from nnseg_nb.ensemble import average_probabilities, ensemble_folders
from nnseg_nb.io import load_nnunet_properties

FIXTURES = Path(__file__).parent / "fixtures" / "ensemble"


def _geometry(path: Path) -> tuple:
    image = sitk.ReadImage(str(path))
    return image.GetSpacing(), image.GetOrigin(), image.GetDirection()


@pytest.mark.parametrize("setup", ["labels", "regions"])
def test_ensemble_equals_nnunet(setup, tmp_path):
    out = tmp_path / "out"
    written = ensemble_folders(
        [FIXTURES / setup / "a", FIXTURES / setup / "b"], out, save_merged_probabilities=True, num_workers=1
    )
    assert [p.name for p in written] == ["case_0.nii.gz", "case_1.nii.gz"]
    nnunet = FIXTURES / setup / "nnunet"
    for case in ("case_0", "case_1"):
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(nnunet / f"{case}.nii.gz")))
        np.testing.assert_array_equal(ours, theirs)
        assert len(np.unique(theirs)) == 3  # every label occurs: the test can tell labels apart
        ours_geometry, their_geometry = (
            _geometry(out / f"{case}.nii.gz"),
            _geometry(nnunet / f"{case}.nii.gz"),
        )
        for a, b in zip(ours_geometry, their_geometry):
            np.testing.assert_allclose(a, b, atol=1e-6)
        with np.load(out / f"{case}.npz") as a, np.load(nnunet / f"{case}.npz") as b:
            np.testing.assert_array_equal(a["probabilities"], b["probabilities"])
        assert (
            pickle.loads((out / f"{case}.pkl").read_bytes()).keys()
            == load_nnunet_properties(nnunet / f"{case}.pkl").keys()
        )
    assert json.loads((out / "dataset.json").read_text()) == json.loads((nnunet / "dataset.json").read_text())


def test_average_is_float32_and_in_nnunets_order():
    files = [FIXTURES / "labels" / m / "case_0.npz" for m in ("a", "b")]
    average = average_probabilities(files)
    a, b = (np.load(f)["probabilities"] for f in files)
    assert average.dtype == np.float32
    np.testing.assert_array_equal(average, (a + b) / np.float32(2))


def test_folders_must_hold_the_same_cases(tmp_path):
    shutil.copytree(FIXTURES / "labels" / "b", tmp_path / "b")
    (tmp_path / "b" / "case_1.npz").unlink()
    with pytest.raises(ValueError, match=r"b: no case_1.npz"):
        ensemble_folders([FIXTURES / "labels" / "a", tmp_path / "b"], tmp_path / "out", num_workers=1)


def test_cli_ensemble(tmp_path, capsys):
    a, b = FIXTURES / "regions" / "a", FIXTURES / "regions" / "b"
    assert cli.main(["ensemble", "-i", str(a), str(b), "-o", str(tmp_path / "o"), "-np", "1"]) == 0
    assert "2 cases" in capsys.readouterr().out
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / "case_1.nii.gz")))
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(FIXTURES / "regions" / "nnunet" / "case_1.nii.gz")))
    np.testing.assert_array_equal(ours, theirs)
    assert not (tmp_path / "o" / "case_1.npz").exists()
    assert cli.main(["ensemble", "-i", str(a), str(tmp_path / "missing"), "-o", str(tmp_path / "p")]) == 1
    assert "no case_0.npz, case_1.npz" in capsys.readouterr().err
