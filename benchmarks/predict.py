"""Prediction time and peak memory: nnUNetv2_predict against nnseg-nb predict, same model, same inputs.

    .venv/bin/python benchmarks/predict.py [--model tiny brain] [--cases 4] [--out predict.json]
        [--isa avx2] [--device cuda]

Models:
- ``tiny``: the model folder nnunetv2 trained for the parity test (tests/fixtures/make_nnunet_model.py:
  3-stage U-Net, 8..32 features, patch 8x24x24, folds 0+1), on its two test images copied ``--cases`` times;
- ``brain``: nnU-Net's own 3d_fullres plans for the demo brain dataset (Dataset901, 5-stage U-Net, 32..320
  features, patch 64x80x64) with random weights (fold 0), on demo brain test images (seed 0).

Each run is a fresh process (``$NNUNET_PY`` for nnU-Net's ``nnUNetPredictor.predict_from_files``,
this interpreter for ``nnseg_nb.predict.predict_folder``); seconds per case are timed from the loaded model to
the last file written (imports and model loading are reported apart); peak memory is the process's maximum resident set (``ru_maxrss``, plus its children for nnU-Net's
worker processes). Both: step 0.5, Gaussian, mirroring, CPU. Ours runs with ``--precision auto`` (bf16 on
CPUs with native bf16) and fp32. The label maps are compared voxel by voxel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import add_isa_argument, cpu_name, limit_kernels  # noqa: E402  (benchmarks/common.py)

# the nnU-Net reference interpreter (benchmarks/README.md says how to build it)
NNUNET_PYTHON = os.environ.get("NNUNET_PY", "nnunet_venv/bin/python")
TINY = ROOT / "tests/fixtures/inference_model"
TINY_MODEL = TINY / "nnUNet_results/Dataset990_TinyInfer/nnUNetTrainerTiny__nnUNetPlans__3d_tiny"

NNUNET_RUN = """
import json, resource, sys, time, torch
t0 = time.perf_counter()
from nnunetv2.inference import predict_from_raw_data as p
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
class nnUNetTrainerTiny(nnUNetTrainer):
    pass
known = p.recursive_find_trainer_class_by_name
p.recursive_find_trainer_class_by_name = lambda name, *a, **k: nnUNetTrainerTiny if name == "nnUNetTrainerTiny" else known(name, *a, **k)
model, inputs, output, folds, workers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
device = torch.device(sys.argv[6])
predictor = p.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                              perform_everything_on_device=device.type == "cuda", device=device, allow_tqdm=False)
predictor.initialize_from_trained_model_folder(model, folds, "checkpoint_final.pth")
t1 = time.perf_counter()
predictor.predict_from_files(inputs, output, save_probabilities=False, overwrite=True,
                             num_processes_preprocessing=workers, num_processes_segmentation_export=workers)
seconds, setup = time.perf_counter() - t1, t1 - t0
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
print(json.dumps({"seconds": seconds, "setup_seconds": setup, "peak_rss_mb": rss / 1024, "peak_gpu_mb": gpu}))
"""

OURS_RUN = """
import json, resource, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[7])
import torch
from nnseg_nb.inference import load_model
from nnseg_nb.predict import PredictionSettings, predict_folder
model, inputs, output, folds, workers, precision = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
device = torch.device(sys.argv[8])
loaded = load_model(model, folds, device=device)
t1 = time.perf_counter()
report = predict_folder(loaded, inputs, output,
                        settings=PredictionSettings(precision=precision, num_workers=workers, progress=False))
assert not report.failed, report.failed
seconds, setup = time.perf_counter() - t1, t1 - t0
gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
print(json.dumps({"seconds": seconds, "setup_seconds": setup,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mb": gpu}))
"""


def tiny_inputs(folder: Path, copies: int) -> tuple[Path, list]:
    images = TINY / "nnUNet_raw/Dataset990_TinyInfer/imagesTs"
    folder.mkdir(parents=True)
    for i in range(copies):
        for f in sorted(images.iterdir()):
            shutil.copy(f, folder / f.name.replace("test_", f"c{i}_test_"))
    return TINY_MODEL, [0, 1]


def brain_inputs(work: Path, cases: int) -> tuple[Path, list]:
    import torch

    from nnseg_nb.demo_data import build_brain_tissue
    from nnseg_nb.network import build_network, network_channels
    from nnseg_nb.plans import load_plans
    from nnseg_nb.utils import atomic_write_json, load_json

    raw = build_brain_tissue(work / "Dataset901_BrainTissue", seed=0, num_train=0, num_test=cases)
    shutil.move(str(raw / "imagesTs"), str(work / "inputs"))
    plans_file = ROOT / "nnseg_nb/demo_assets/nnUNetPlans_Dataset901_by_nnunetv2.json"
    model = work / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model / "fold_0").mkdir(parents=True)
    shutil.copy(plans_file, model / "plans.json")
    dataset_json = load_json(raw / "dataset.json")
    atomic_write_json(model / "dataset.json", dataset_json)
    configuration = load_plans(plans_file).configuration("3d_fullres")
    torch.manual_seed(0)
    network = build_network(configuration.architecture, *network_channels(configuration, dataset_json))
    checkpoint = {
        "network_weights": network.state_dict(),
        "init_args": {"configuration": "3d_fullres"},
        "current_epoch": 0,
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, model / "fold_0" / "checkpoint_final.pth")
    return model, [0]


def run(python: str, script: str, args: list[str], threads: int | None) -> dict:
    env = dict(os.environ)  # with --isa avx2, main() has put the limit there
    if threads:  # torch's intra-op threads in both tools (nnU-Net: min(nnUNet_def_n_proc, CPUs))
        env.update(OMP_NUM_THREADS=str(threads), nnUNet_def_n_proc=str(threads))
    result = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def agreement(a: Path, b: Path) -> float:

    from nnseg_nb import io

    equal = total = 0
    for f in sorted(a.glob("*.nii.gz")):
        x, y = io.read_seg(f)[0], io.read_seg(b / f.name)[0]
        equal, total = equal + int((x == y).sum()), total + x.size
    return equal / total


def benchmark(
    name: str, cases: int, workers: int, threads: int | None, isa: str = "native", device: str = "cpu"
) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench_predict_{name}_"))
    try:
        if name == "tiny":
            model, folds = tiny_inputs(work / "inputs", max(1, cases // 2))
        else:
            model, folds = brain_inputs(work, cases)
        inputs = work / "inputs"
        n = len(list(inputs.glob("*_0000.nii.gz")))
        common = [str(model), str(inputs)]
        rows = {
            "nnunetv2": run(
                NNUNET_PYTHON,
                NNUNET_RUN,
                [*common, str(work / "nnunet"), json.dumps(folds), str(workers), device],
                threads,
            )
        }
        for precision in ("auto", "fp32") if isa == "native" else ("auto",):  # AVX2: auto is fp32
            args = [
                *common,
                str(work / precision),
                json.dumps(folds),
                str(workers),
                precision,
                str(ROOT),
                device,
            ]
            rows[f"nnseg_nb ({precision})"] = run(sys.executable, OURS_RUN, args, threads)
            rows[f"nnseg_nb ({precision})"]["voxels_equal_to_nnunet"] = agreement(
                work / precision, work / "nnunet"
            )
        for row in rows.values():
            row["seconds_per_case"] = row["seconds"] / n
        return {"model": name, "cases": n, "folds": folds, "rows": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["tiny", "brain"], choices=["tiny", "brain"])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="preprocessing/export workers, both tools")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in both tools (default: their own defaults)"
    )
    add_isa_argument(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both tools; AMP on CUDA as nnU-Net)")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()
    if not Path(NNUNET_PYTHON).is_file():
        sys.exit(
            f"no nnU-Net interpreter at {NNUNET_PYTHON}: set NNUNET_PY (benchmarks/README.md builds one)"
        )
    limit_kernels(args.isa)  # before torch is imported here, so the report below says what ran
    from nnseg_nb.devices import cpu_runs_bf16_natively

    results = {
        "cpu": cpu_name(),
        "native_bf16": cpu_runs_bf16_natively(),
        "threads": args.threads,
        "isa": args.isa,
        "device": args.device,
        "benchmarks": [],
    }
    kernels = "kernels limited to AVX2" if args.isa == "avx2" else "native kernels"
    print(
        f"CPU: {results['cpu']} (native bf16: {results['native_bf16']}, {kernels}), {os.cpu_count()} CPUs, "
        f"threads {args.threads}"
    )
    for name in args.model:
        result = benchmark(name, args.cases, args.workers, args.threads, args.isa, args.device)
        results["benchmarks"].append(result)
        base = result["rows"]["nnunetv2"]
        print(f"\n{name}: {result['cases']} cases, folds {result['folds']}")
        for tool, row in result["rows"].items():
            ratio = base["seconds_per_case"] / row["seconds_per_case"]
            agree = (
                f"  labels equal nnU-Net's: {row['voxels_equal_to_nnunet']:.4%}"
                if "voxels_equal_to_nnunet" in row
                else ""
            )
            gpu = f" (GPU {row['peak_gpu_mb']:.0f} MB)" if row.get("peak_gpu_mb") else ""
            print(
                f"  {tool:<18} {row['seconds_per_case']:7.2f} s/case (+{row['setup_seconds']:.1f} s imports and "
                f"model load)  peak {row['peak_rss_mb']:7.0f} MB{gpu}  speed-up {ratio:4.2f}x{agree}"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
