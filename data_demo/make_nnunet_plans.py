"""Make the nnU-Net-written plans file that notebook 02 compares with ours.

Run with the nnU-Net reference venv, from the repository root::

    $NNUNET_PY data_demo/make_nnunet_plans.py

It builds ``Dataset901_BrainTissue`` (``nnseg_nb.demo_data``, seed 0, default case counts) in a
temporary ``nnUNet_raw``, then runs what ``nnUNetv2_plan_and_preprocess -d 901 --no_pp`` runs:
nnunetv2's ``DatasetFingerprintExtractor`` (its defaults: 1e8 foreground samples) and its default
``ExperimentPlanner`` (8 GB). The resulting ``nnUNetPlans.json`` is copied, unchanged, to
``nnseg_nb/demo_assets/nnUNetPlans_Dataset901_by_nnunetv2.json``: package data, so that the
notebook finds it after ``pip install git+...`` (Colab) through ``importlib.resources``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io as stdio
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # nnseg_nb (for the demo builder) without installing it in this venv
DATASET = "Dataset901_BrainTissue"
SEED = 0
OUTPUT = REPO / "nnseg_nb" / "demo_assets" / "nnUNetPlans_Dataset901_by_nnunetv2.json"


def main() -> None:
    from nnseg_nb.demo_data import build_demo_datasets

    with tempfile.TemporaryDirectory() as tmp:
        raw, preprocessed = Path(tmp) / "raw", Path(tmp) / "preprocessed"
        # nnunetv2.paths reads these once, at import: set them before the first nnunetv2 import
        os.environ.update(
            nnUNet_raw=str(raw),
            nnUNet_preprocessed=str(preprocessed),
            nnUNet_results=str(Path(tmp) / "results"),
        )
        from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
            DatasetFingerprintExtractor,
        )
        from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
            ExperimentPlanner,
        )
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprint_dataset,
            plan_experiment_dataset,
        )

        build_demo_datasets(raw, seed=SEED, only=[DATASET], progress=False)
        with contextlib.redirect_stdout(stdio.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extract_fingerprint_dataset(
                901,
                DatasetFingerprintExtractor,
                num_processes=2,
                check_dataset_integrity=True,
                clean=True,
                verbose=False,
            )
            _, plans_identifier = plan_experiment_dataset(901, ExperimentPlanner)
        shutil.copyfile(preprocessed / DATASET / f"{plans_identifier}.json", OUTPUT)
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("nnunetv2", "numpy"))
    print(f"{OUTPUT.relative_to(REPO)}: {OUTPUT.stat().st_size} bytes ({versions})")


if __name__ == "__main__":
    main()
