"""Preprocessing time: nnseg_nb against nnU-Net v2 on the demo datasets, with nnU-Net's own plans.

    $NNUNET_PY benchmarks/preprocessing.py --out preprocessing.json [--workers 2] [--only 901]

Builds the demo datasets (seed 0) in a temporary folder, lets nnunetv2 extract the fingerprint and plan
each one, then for every configuration of those plans:

- end to end: ``DefaultPreprocessor.run`` (nnUNetv2_preprocess: read, preprocess, write .b2nd/.pkl) against
  ``nnseg_nb.preprocessing.preprocess_dataset`` (read, preprocess, write .npy/.json), both with the same
  number of spawned worker processes;
- compute only: ``run_case_npy`` against ``preprocess_case`` on the same arrays, in this process;
- equality: every case's data (max absolute difference), seg and class locations.

Heavy imports stay inside ``main`` so that nnseg_nb's spawned workers do not import torch and nnunetv2
(nnU-Net's workers must: they run its bound method).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _equality(ours_folder: Path, theirs_folder: Path) -> dict:
    import numpy as np

    from nnseg_nb.preprocessed import list_cases, load_case

    worst, seg_voxels, location_keys = 0.0, 0, 0
    cases = list_cases(theirs_folder)
    for case in cases:
        data, seg, properties = load_case(theirs_folder, case)
        our_data, our_seg, our_properties = load_case(ours_folder, case)
        worst = max(worst, float(np.abs(np.asarray(data) - our_data).max()))
        seg_voxels += int((np.asarray(seg) != our_seg).sum())
        location_keys += sum(
            not np.array_equal(v, our_properties["class_locations"].get(k))
            for k, v in properties["class_locations"].items()
        )
    return {
        "cases": len(cases),
        "max_abs_data_diff": worst,
        "seg_voxels_differing": seg_voxels,
        "class_location_keys_differing": location_keys,
    }


def _compute_only(raw: Path, plans: dict, configuration: str, dataset_json: dict) -> dict:
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnseg_nb import io
    from nnseg_nb.dataset import find_cases
    from nnseg_nb.preprocessing import preprocess_case

    cases = [
        (*io.read_case(c.images), io.read_seg(c.label)[0]) for c in find_cases(raw, dataset_json).values()
    ]
    manager = PlansManager(plans)
    manager_configuration = manager.get_configuration(configuration)
    start = time.perf_counter()
    for data, props, seg in cases:
        DefaultPreprocessor(verbose=False).run_case_npy(
            data, seg, dict(props), manager, manager_configuration, dataset_json
        )
    theirs = time.perf_counter() - start
    start = time.perf_counter()
    for data, props, seg in cases:
        preprocess_case(data, seg, props, plans, configuration, dataset_json)
    ours = time.perf_counter() - start
    return {"nnunetv2_s": theirs, "nnseg_nb_s": ours, "ratio": theirs / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both (default 2)")
    parser.add_argument("--only", nargs="*", default=None, help="demo datasets to run (names or ids)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp())
    for variable, sub in (
        ("nnUNet_raw", "raw"),
        ("nnUNet_preprocessed", "preprocessed"),
        ("nnUNet_results", "results"),
    ):
        os.environ[variable] = str(work / sub)  # before nnunetv2 is imported: it reads them once
    try:
        rows = _run(work, args.workers, args.only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=2)
        )


def _run(work: Path, workers: int, only: list[str] | None) -> list[dict]:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from nnseg_nb.demo_data import build_demo_datasets
    from nnseg_nb.preprocessing import preprocess_dataset

    rows = []
    for name, raw in build_demo_datasets(work / "raw", seed=0, only=only, num_test=0, progress=False).items():
        dataset_id = int(name[len("Dataset") : len("Dataset") + 3])
        extract_fingerprint_dataset(dataset_id, num_processes=workers, verbose=False, show_progress_bar=False)
        plans, _ = plan_experiment_dataset(dataset_id)
        dataset_json = json.loads((raw / "dataset.json").read_text())
        for configuration, settings in plans["configurations"].items():
            if "inherits_from" in settings:
                continue
            start = time.perf_counter()
            preprocessor = DefaultPreprocessor(verbose=False)
            preprocessor.show_progress_bar = False
            preprocessor.run(dataset_id, configuration, "nnUNetPlans", workers)
            theirs = time.perf_counter() - start
            start = time.perf_counter()
            (result,) = preprocess_dataset(
                raw,
                [configuration],
                plans=plans,
                output_folder=work / "ours" / name,
                num_workers=workers,
                progress=False,
                overwrite=True,
            )
            ours = time.perf_counter() - start
            start = time.perf_counter()
            preprocess_dataset(
                raw,
                [configuration],
                plans=plans,
                output_folder=work / "ours" / name,
                num_workers=workers,
                progress=False,
            )
            rerun = time.perf_counter() - start
            row = {
                "dataset": name,
                "configuration": configuration,
                "workers": workers,
                "end_to_end": {
                    "nnunetv2_s": theirs,
                    "nnseg_nb_s": ours,
                    "ratio": theirs / ours,
                    "nnseg_nb_up_to_date_rerun_s": rerun,
                },
                "compute_only": _compute_only(raw, plans, configuration, dataset_json),
                "equality": _equality(
                    result.folder, work / "preprocessed" / name / settings["data_identifier"]
                ),
            }
            rows.append(row)
            e, c, q = row["end_to_end"], row["compute_only"], row["equality"]
            print(
                f"{name} {configuration}: end to end nnunetv2 {e['nnunetv2_s']:.2f} s, nnseg_nb {e['nnseg_nb_s']:.2f} s "
                f"({e['ratio']:.2f}x); compute only {c['ratio']:.2f}x; {q['cases']} cases, max |data diff| "
                f"{q['max_abs_data_diff']:.3g}, seg voxels differing {q['seg_voxels_differing']}, "
                f"class-location keys differing {q['class_location_keys_differing']}",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
