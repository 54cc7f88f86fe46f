"""Training augmentation throughput: nnseg_nb (batched torch) against nnU-Net v2 (batchgeneratorsv2, per sample).

    /work/nnunet_venv/bin/python benchmarks/augment.py --out augment.json            # synthetic volume
    /work/nnunet_venv/bin/python benchmarks/augment.py --data PREPROCESSED_FOLDER --plans nnUNetPlans.json

Both libraries get the same crops of ``initial_patch_size`` (image float32, seg int16, as nnU-Net's loader
makes them) and return the final patch with its deep-supervision targets. nnU-Net runs its own
``nnUNetTrainer.get_training_transforms`` sample by sample, in 1 or 2 processes of one thread each (what its
data-loader workers do); nnseg_nb augments batches of 2 in one process with ``torch.set_num_threads(1/2)``,
and on CUDA when there is a GPU. Loading and the transfer between worker processes are not timed. Each
setting is timed over a few rounds and the fastest round is kept, since other processes share the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnseg_nb import augment  # noqa: E402

BATCH_SIZE = 2


def synthetic_case(shape=(160, 192, 160), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(1, *shape) smooth image and (1, *shape) int16 labels: a body (0, -1 outside) holding two organs."""
    rng = np.random.RandomState(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    body = sum(g**2 for g in grids) < 0.9
    seg = np.where(body, 0, -1).astype(np.int16)
    image = rng.normal(0, 0.3, shape).astype(np.float32)
    for label, (center, radius) in enumerate([((0.2, -0.1, 0.3), 0.3), ((-0.3, 0.25, -0.2), 0.2)], start=1):
        inside = sum((g - c) ** 2 for g, c in zip(grids, center)) < radius**2
        seg[inside] = label
        image[inside] += label
    image[~body] = 0
    return image[None], seg[None]


def load_case(folder: Path, case: str | None) -> tuple[np.ndarray, np.ndarray]:
    from nnseg_nb.preprocessing import load_preprocessed_case, preprocessed_case_identifiers

    case = case or preprocessed_case_identifiers(folder)[0]
    data, seg, _ = load_preprocessed_case(folder, case)
    return np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(seg, dtype=np.int16)


def crops(image: np.ndarray, seg: np.ndarray, size, count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` random crops of ``size`` (image padded with 0, seg with -1 where they leave the volume)."""
    rng = np.random.RandomState(seed)
    pad = [(0, 0)] + [(s, s) for s in size]
    image, seg = np.pad(image, pad), np.pad(seg, pad, constant_values=-1)
    out = []
    for _ in range(count):
        start = [rng.randint(s // 2, dim - s - s // 2 + 1) for s, dim in zip(size, image.shape[1:])]
        box = (slice(None), *[slice(a, a + s) for a, s in zip(start, size)])
        out.append((torch.from_numpy(image[box].copy()), torch.from_numpy(seg[box].copy())))
    return out


def default_ds_scales(patch) -> list[list[float]]:
    """Deep-supervision scales of a plain 3D U-Net plan for this patch (halving until 4 voxels)."""
    steps = int(math.log2(min(patch) / 4))
    return augment.deep_supervision_scales([[1] * len(patch)] + [[2] * len(patch)] * min(steps, 5))


def from_plans(path: Path, configuration: str) -> dict:
    plans = json.loads(path.read_text())
    config = plans["configurations"][configuration]
    while "inherits_from" in config and "patch_size" not in config:
        config = {**plans["configurations"][config["inherits_from"]], **config}
    return {"patch_size": tuple(config["patch_size"]),
            "ds_scales": augment.deep_supervision_scales(config["pool_op_kernel_sizes"]),
            "use_mask_for_norm": list(config["use_mask_for_norm"])}


# --- the two pipelines -------------------------------------------------------------------------------------


def nnunet_transforms(patch, ds_scales, use_mask_for_norm):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    rotation, dummy_2d, mirror_axes = augment.rotation_and_mirroring_for(patch)
    return nnUNetTrainer.get_training_transforms(patch, rotation, ds_scales, mirror_axes, dummy_2d,
                                                 use_mask_for_norm=use_mask_for_norm)


def nnseg_pipeline(patch, ds_scales, use_mask_for_norm):
    rotation, dummy_2d, mirror_axes = augment.rotation_and_mirroring_for(patch)
    return augment.training_pipeline(patch, rotation, mirror_axes, dummy_2d, use_mask_for_norm=use_mask_for_norm,
                                     deep_supervision_scales=ds_scales)


def run_nnunet(samples, transforms) -> None:
    """One batch the way nnU-Net's loader makes it: every sample augmented alone, then stacked."""
    outputs = [transforms(**{"image": image.clone(), "segmentation": seg.clone()}) for image, seg in samples]
    torch.stack([o["image"] for o in outputs])
    [torch.stack([o["segmentation"][k] for o in outputs]) for k in range(len(outputs[0]["segmentation"]))]


def run_nnseg(samples, pipeline, generator) -> None:
    batch = {"image": torch.stack([s[0] for s in samples]), "seg": torch.stack([s[1] for s in samples])}
    augment.augment(batch, pipeline, generator)


_WORKER = {}  # per worker process: its crops and its pipeline, made before any timing


def _init_worker(library, patch, ds_scales, use_mask, image, seg, size, count) -> None:
    torch.set_num_threads(1)
    _WORKER["patches"] = crops(image, seg, size, count)
    _WORKER["generator"] = generator = torch.Generator()
    if library == "nnunet":
        transforms = nnunet_transforms(patch, ds_scales, use_mask)
        _WORKER["run"] = lambda samples: run_nnunet(samples, transforms)
    else:
        pipeline = nnseg_pipeline(patch, ds_scales, use_mask)
        _WORKER["run"] = lambda samples: run_nnseg(samples, pipeline, generator)


def _work(indices) -> None:
    np.random.seed(indices[0])  # batchgeneratorsv2 draws from the global generators; same work every round
    torch.manual_seed(indices[0])
    _WORKER["generator"].manual_seed(indices[0])
    for i in range(0, len(indices), BATCH_SIZE):
        _WORKER["run"]([_WORKER["patches"][j] for j in indices[i:i + BATCH_SIZE]])


def time_processes(library, patch, ds_scales, use_mask, image, seg, size, count, workers, rounds) -> float:
    """Samples per second of ``workers`` single-threaded processes, each augmenting its share of the batches."""
    chunks = [list(range(2 * w, count, 2 * workers)) for w in range(workers)]
    chunks = [[j for i in chunk for j in (i, i + 1) if j < count] for chunk in chunks]
    context = multiprocessing.get_context("fork")
    best = math.inf
    with context.Pool(workers, _init_worker, (library, patch, ds_scales, use_mask, image, seg, size, count)) as pool:
        pool.map(_work, [chunk[:BATCH_SIZE] for chunk in chunks], chunksize=1)  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            pool.map(_work, chunks, chunksize=1)
            best = min(best, time.perf_counter() - start)
    return count / best


def time_nnseg(pipeline, patches, threads, rounds, device="cpu") -> float:
    """Samples per second of nnseg_nb's batched augmentation with ``threads`` torch threads (or on CUDA)."""
    torch.set_num_threads(threads)
    batches = [{"image": torch.stack([p[0] for p in patches[i:i + BATCH_SIZE]]).to(device),
                "seg": torch.stack([p[1] for p in patches[i:i + BATCH_SIZE]]).to(device)}
               for i in range(0, len(patches), BATCH_SIZE)]
    augment.augment(batches[0], pipeline, torch.Generator().manual_seed(1))  # warm-up
    best = math.inf
    for _ in range(rounds):
        generator = torch.Generator().manual_seed(0)  # every round does the same work, so the fastest is the least disturbed
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            augment.augment(batch, pipeline, generator)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(patches) / best


def benchmark(patch, ds_scales, use_mask, image, seg, count, rounds) -> list[dict]:
    rotation, dummy_2d, _ = augment.rotation_and_mirroring_for(patch)
    size = augment.initial_patch_size(patch, rotation, dummy_2d=dummy_2d)
    patches = crops(image, seg, size, count)
    pipeline = nnseg_pipeline(patch, ds_scales, use_mask)
    common = (patch, ds_scales, use_mask, image, seg, size, count)
    rows = []

    def row(device, cores, how, nnunet, ours):
        rows.append({"patch_size": list(patch), "initial_patch_size": list(size), "device": device, "cores": cores,
                     "nnseg_nb": how, "nnunet_samples_per_s": nnunet, "nnseg_samples_per_s": ours,
                     "ratio": ours / nnunet})
        print(f"{str(patch):>16} {device} x{cores} {how:>10}   nnU-Net {nnunet:7.2f}/s ({nnunet / cores:6.2f}/core)   "
              f"nnseg_nb {ours:7.2f}/s ({ours / cores:6.2f}/core)   ratio {ours / nnunet:5.2f}", flush=True)

    for cores in (1, 2):
        nnunet = time_processes("nnunet", *common, cores, rounds)
        row("cpu", cores, f"{cores} thread" + "s" * (cores > 1), nnunet, time_nnseg(pipeline, patches, cores, rounds))
        if cores > 1:
            row("cpu", cores, f"{cores} procs", nnunet, time_processes("nnseg", *common, cores, rounds))
    if torch.cuda.is_available():
        row("cuda", 1, "1 GPU", rows[0]["nnunet_samples_per_s"], time_nnseg(pipeline, patches, 1, rounds, "cuda"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="preprocessed folder (ours or nnU-Net's); default: synthetic")
    parser.add_argument("--case", help="case identifier in --data (default: the first)")
    parser.add_argument("--plans", type=Path, help="plans JSON: take patch size, DS scales and masking from it")
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--samples", type=int, default=64, help="samples per timed round at 64^3 (half at 128^3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    image, seg = load_case(args.data, args.case) if args.data else synthetic_case()
    settings = [{"patch_size": (64, 64, 64), "ds_scales": default_ds_scales((64, 64, 64)), "use_mask_for_norm": None}]
    if args.plans:
        settings = [from_plans(args.plans, args.configuration)]
    settings.append({"patch_size": (128, 128, 128), "ds_scales": default_ds_scales((128, 128, 128)),
                     "use_mask_for_norm": settings[0]["use_mask_for_norm"]})
    print(f"input {tuple(image.shape)}, batch {BATCH_SIZE}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, CUDA {torch.cuda.is_available()}")
    rows = []
    for s in settings:
        count = args.samples if max(s["patch_size"]) <= 96 else max(args.samples // 2, 2 * BATCH_SIZE)
        rows += benchmark(s["patch_size"], s["ds_scales"], s["use_mask_for_norm"], image, seg, count, args.rounds)
    if args.out:
        args.out.write_text(json.dumps({"input_shape": list(image.shape), "batch_size": BATCH_SIZE,
                                        "torch": torch.__version__, "machine": platform.platform(),
                                        "cpus": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
