"""Ship the tiny model that nnU-Net v2 itself trained as package data, for notebook 08.

Run from the repository root, after ``tests/fixtures/make_nnunet_model.py`` (nnunetv2 2.8.1) made
``tests/fixtures/inference_model/``::

    .venv/bin/python data_demo/make_nnunet_model.py

It copies, unchanged, the part of that fixture a reader needs into ``nnseg_nb/demo_assets/nnunet_model/``
(package data, so ``nnseg_nb.model_folders.demo_model()`` finds it after ``pip install git+...``):

- ``nnUNet_results/Dataset990_TinyInfer/nnUNetTrainerTiny__nnUNetPlans__3d_tiny/``: the model folder
  (plans, dataset.json, fingerprint, ``fold_0`` and ``fold_1`` checkpoints without optimizer state,
  fold 0's ``validation/`` with nnU-Net's summary.json);
- ``imagesTs/``: the two test images;
- ``nnunet_predictions/``: what ``nnUNetv2_predict`` (step 0.5, Gaussian, mirroring, folds 0+1) made of
  them, label maps and probabilities (``.npz``; the ``.pkl`` files are left out: nothing here unpickles).

About 0.9 MB. The data are synthetic (CC0).
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "tests" / "fixtures" / "inference_model"
OUTPUT = REPO / "nnseg_nb" / "demo_assets" / "nnunet_model"
DATASET = "Dataset990_TinyInfer"


def main() -> None:
    if not SOURCE.is_dir():
        raise SystemExit(f"error: {SOURCE}: missing; run tests/fixtures/make_nnunet_model.py first")
    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    shutil.copytree(SOURCE / "nnUNet_results", OUTPUT / "nnUNet_results")
    shutil.copytree(SOURCE / "nnUNet_raw" / DATASET / "imagesTs", OUTPUT / "imagesTs")
    shutil.copytree(
        SOURCE / "nnunet_predictions", OUTPUT / "nnunet_predictions", ignore=shutil.ignore_patterns("*.pkl")
    )
    size = sum(p.stat().st_size for p in OUTPUT.rglob("*") if p.is_file())
    print(f"wrote {OUTPUT.relative_to(REPO)} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
