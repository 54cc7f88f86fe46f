"""Training augmentation throughput: nnseg_nb (batched torch) against nnU-Net v2 (batchgeneratorsv2, per sample).

    $NNUNET_PY benchmarks/augment.py --out augment.json            # synthetic volume
    $NNUNET_PY benchmarks/augment.py --data PREPROCESSED_FOLDER --plans nnUNetPlans.json

Both libraries get the same crops of ``augment.loaded_patch_size`` (image float32, seg int16, as nnU-Net's loader
makes them) and return the final patch with its deep-supervision targets. nnU-Net runs its own
``nnUNetTrainer.get_training_transforms`` sample by sample, in 1 or 2 processes of one thread each (what its
data-loader workers do); nnseg_nb augments batches of 2 in one process with ``torch.set_num_threads(1/2)``,
in 2 Python threads with one torch thread each, in 2 single-threaded processes, and on CUDA if there is one. Loading and the transfer between worker
processes are not timed. Rounds interleave the settings and each keeps its fastest round, so that other load
on the machine hits both libraries alike; every round of a setting does the same work (fixed seeds), but the
two libraries draw different random parameters, so use enough samples.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnseg_nb import augment, network  # noqa: E402

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
    from nnseg_nb.preprocessed import list_cases, load_case

    case = case or list_cases(folder)[0]
    data, seg, _ = load_case(folder, case)
    return np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(seg, dtype=np.int16)


def crop_starts(shape, size, count: int, seed: int = 0) -> list[list[int]]:
    """Lower corners of ``count`` random crops of ``size``, reaching up to half a crop out of the volume."""
    rng = np.random.RandomState(seed)
    return [
        [rng.randint(-(s - s // 2), dim - s // 2 + 1) for s, dim in zip(size, shape)] for _ in range(count)
    ]


def crop(image: np.ndarray, seg: np.ndarray, start, size) -> tuple[torch.Tensor, torch.Tensor]:
    """One crop (image padded with 0, seg with -1 where it leaves the volume), as torch tensors."""
    inside = (
        slice(None),
        *[slice(max(a, 0), min(a + s, dim)) for a, s, dim in zip(start, size, image.shape[1:])],
    )
    pad = [(0, 0)] + [(max(-a, 0), max(a + s - dim, 0)) for a, s, dim in zip(start, size, image.shape[1:])]
    return (
        torch.from_numpy(np.pad(image[inside], pad)),
        torch.from_numpy(np.pad(seg[inside], pad, constant_values=-1)),
    )


def stacked_batches(image, seg, size, starts) -> list[dict]:
    batches = []
    for i in range(0, len(starts), BATCH_SIZE):
        pairs = [crop(image, seg, start, size) for start in starts[i : i + BATCH_SIZE]]
        batches.append(
            {"image": torch.stack([p[0] for p in pairs]), "seg": torch.stack([p[1] for p in pairs])}
        )
    return batches


def default_ds_scales(patch) -> list[list[float]]:
    """Deep-supervision scales of a plain 3D U-Net plan for this patch (halving until 4 voxels)."""
    steps = int(math.log2(min(patch) / 4))
    return network.deep_supervision_scales([[1] * len(patch)] + [[2] * len(patch)] * min(steps, 5))


def from_plans(path: Path, configuration: str) -> dict:
    """Patch size, deep-supervision scales and masking of a configuration (ours or nnU-Net's plans file)."""
    from nnseg_nb.plans import load_plans

    config = load_plans(path).configuration(configuration)  # inherits_from resolved
    return {
        "patch_size": tuple(config.patch_size),
        "ds_scales": network.deep_supervision_scales(config.architecture.strides),
        "use_mask_for_norm": list(config.use_mask_for_norm),
    }


# --- the two pipelines -------------------------------------------------------------------------------------


def nnunet_transforms(patch, ds_scales, use_mask_for_norm):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    rotation, dummy_2d, mirror_axes = augment.rotation_and_mirroring_for(patch)
    return nnUNetTrainer.get_training_transforms(
        patch, rotation, ds_scales, mirror_axes, dummy_2d, use_mask_for_norm=use_mask_for_norm
    )


def nnseg_pipeline(patch, ds_scales, use_mask_for_norm):
    rotation, dummy_2d, mirror_axes = augment.rotation_and_mirroring_for(patch)
    return augment.training_pipeline(
        patch,
        rotation,
        mirror_axes,
        dummy_2d,
        use_mask_for_norm=use_mask_for_norm,
        deep_supervision_scales=ds_scales,
    )


def run_nnunet(samples, transforms) -> None:
    """One batch the way nnU-Net's loader makes it: every sample augmented alone, then stacked."""
    outputs = [transforms(**{"image": image.clone(), "segmentation": seg.clone()}) for image, seg in samples]
    torch.stack([o["image"] for o in outputs])
    [torch.stack([o["segmentation"][k] for o in outputs]) for k in range(len(outputs[0]["segmentation"]))]


def run_nnseg(samples, pipeline, generator) -> None:
    batch = {"image": torch.stack([s[0] for s in samples]), "seg": torch.stack([s[1] for s in samples])}
    augment.augment(batch, pipeline, generator)


_WORKER = {}  # per worker process: the volume, where to crop, and the pipeline


def _init_worker(library, patch, ds_scales, use_mask, image, seg, size, starts) -> None:
    torch.set_num_threads(1)
    _WORKER.update(image=image, seg=seg, size=size, starts=starts, generator=torch.Generator())
    if library == "nnunet":
        transforms = nnunet_transforms(patch, ds_scales, use_mask)
        _WORKER["run"] = lambda samples: run_nnunet(samples, transforms)
    else:
        pipeline = nnseg_pipeline(patch, ds_scales, use_mask)
        _WORKER["run"] = lambda samples: run_nnseg(samples, pipeline, _WORKER["generator"])


def _work(indices) -> float:
    """Augment the crops ``indices`` in batches; seconds taken, not counting making the crops."""
    samples = [crop(_WORKER["image"], _WORKER["seg"], _WORKER["starts"][i], _WORKER["size"]) for i in indices]
    np.random.seed(indices[0])  # batchgeneratorsv2 draws from the global generators; same work every round
    torch.manual_seed(indices[0])
    _WORKER["generator"].manual_seed(indices[0])
    start = time.perf_counter()
    for i in range(0, len(samples), BATCH_SIZE):
        _WORKER["run"](samples[i : i + BATCH_SIZE])
    return time.perf_counter() - start


class Processes:
    """``workers`` single-threaded processes, each augmenting its share of the batches (nnU-Net's loader).
    A round takes as long as the slowest worker."""

    def __init__(self, library, workers, patch, ds_scales, use_mask, image, seg, size, starts):
        count = len(starts)
        chunks = [list(range(2 * w, count, 2 * workers)) for w in range(workers)]
        self.chunks = [[j for i in chunk for j in (i, i + 1) if j < count] for chunk in chunks]
        self.pool = multiprocessing.get_context("fork").Pool(
            workers, _init_worker, (library, patch, ds_scales, use_mask, image, seg, size, starts)
        )
        self.pool.map(_work, [chunk[:BATCH_SIZE] for chunk in self.chunks], chunksize=1)  # warm-up

    def seconds(self) -> float:
        return max(self.pool.map(_work, self.chunks, chunksize=1))


class InProcess:
    """nnseg_nb's batched augmentation in this process: ``threads`` torch threads, or ``batch_threads`` Python
    threads each augmenting its own batches with one torch thread (ATen releases the GIL), or on CUDA."""

    def __init__(self, pipeline, batches, threads=1, batch_threads=1, device="cpu"):
        self.pipeline, self.threads, self.batch_threads, self.device = (
            pipeline,
            threads,
            batch_threads,
            device,
        )
        self.batches = [{k: v.to(device) for k, v in batch.items()} for batch in batches]
        self.executor = ThreadPoolExecutor(batch_threads) if batch_threads > 1 else None
        torch.set_num_threads(threads)
        augment.augment(self.batches[0], pipeline, torch.Generator().manual_seed(1))  # warm-up

    def _run(self, batches) -> None:
        for i, batch in batches:
            augment.augment(
                batch, self.pipeline, torch.Generator().manual_seed(i)
            )  # the same work every round

    def seconds(self) -> float:
        torch.set_num_threads(self.threads)
        numbered = list(enumerate(self.batches))
        if self.device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if self.executor is None:
            self._run(numbered)
        else:
            list(
                self.executor.map(
                    self._run, [numbered[k :: self.batch_threads] for k in range(self.batch_threads)]
                )
            )
        if self.device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def benchmark(patch, ds_scales, use_mask, image, seg, count, rounds) -> list[dict]:
    """Samples per second of every setting; rounds interleave the settings, and each keeps its fastest round,
    so that other load on the machine hits both libraries alike."""
    rotation, dummy_2d, _ = augment.rotation_and_mirroring_for(patch)
    size = augment.loaded_patch_size(patch, rotation, dummy_2d=dummy_2d)
    starts = crop_starts(image.shape[1:], size, count)
    pipeline = nnseg_pipeline(patch, ds_scales, use_mask)
    common = (patch, ds_scales, use_mask, image, seg, size, starts)
    settings = {
        ("nnunet", "cpu", 1, "1 process"): Processes("nnunet", 1, *common),  # forked before the batches
        ("nnunet", "cpu", 2, "2 processes"): Processes("nnunet", 2, *common),
        ("nnseg", "cpu", 2, "2 processes"): Processes("nnseg", 2, *common),
    }
    batches = stacked_batches(image, seg, size, starts)
    settings.update(
        {
            ("nnseg", "cpu", 1, "1 thread"): InProcess(pipeline, batches),
            ("nnseg", "cpu", 2, "2 threads"): InProcess(pipeline, batches, threads=2),
            ("nnseg", "cpu", 2, "2 batch threads"): InProcess(pipeline, batches, batch_threads=2),
        }
    )
    if torch.cuda.is_available():
        settings[("nnseg", "cuda", 1, "1 GPU")] = InProcess(pipeline, batches, device="cuda")
    best = {key: math.inf for key in settings}
    for _ in range(rounds):
        for key, setting in settings.items():
            best[key] = min(best[key], setting.seconds())
    for setting in settings.values():
        if isinstance(setting, Processes):
            setting.pool.terminate()
        elif setting.executor is not None:
            setting.executor.shutdown()
    speed = {key: count / seconds for key, seconds in best.items()}
    rows = []
    order = ["1 thread", "2 threads", "2 batch threads", "2 processes", "1 GPU"]
    for (library, device, cores, how), ours in sorted(
        speed.items(), key=lambda item: order.index(item[0][3]) if item[0][0] == "nnseg" else -1
    ):
        if library != "nnseg":
            continue
        # the GPU's target is against what nnU-Net gets from 2 CPU cores (a 2-vCPU Colab runtime)
        baseline_cores = 2 if device == "cuda" else cores
        nnunet = speed[
            ("nnunet", "cpu", baseline_cores, f"{baseline_cores} process" + "es" * (baseline_cores > 1))
        ]
        rows.append(
            {
                "patch_size": list(patch),
                "loaded_patch_size": list(size),
                "device": device,
                "cores": cores,
                "nnseg_nb": how,
                "nnunet_cores": baseline_cores,
                "nnunet_samples_per_s": nnunet,
                "nnseg_samples_per_s": ours,
                "ratio": ours / nnunet,
            }
        )
        print(
            f"{str(patch):>16} {device} x{cores}  nnU-Net x{baseline_cores} {nnunet:7.2f}/s "
            f"({nnunet / baseline_cores:6.2f}/core)   "
            f"nnseg_nb {how:>15} {ours:7.2f}/s ({ours / cores:6.2f}/core)   ratio {ours / nnunet:5.2f}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="preprocessed folder (ours or nnU-Net's); default: synthetic"
    )
    parser.add_argument("--case", help="case identifier in --data (default: the first)")
    parser.add_argument(
        "--plans", type=Path, help="plans JSON: take patch size, DS scales and masking from it"
    )
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument(
        "--samples", type=int, default=64, help="samples per timed round at 64^3 (half at 128^3)"
    )
    parser.add_argument(
        "--at-128",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a 128^3 patch (--no-at-128: only the plans' or the 64^3 patch)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    image, seg = load_case(args.data, args.case) if args.data else synthetic_case()
    settings = [
        {"patch_size": (64, 64, 64), "ds_scales": default_ds_scales((64, 64, 64)), "use_mask_for_norm": None}
    ]
    if args.plans:
        settings = [from_plans(args.plans, args.configuration)]
    if args.at_128:
        settings.append(
            {
                "patch_size": (128, 128, 128),
                "ds_scales": default_ds_scales((128, 128, 128)),
                "use_mask_for_norm": settings[0]["use_mask_for_norm"],
            }
        )
    print(
        f"input {tuple(image.shape)}, batch {BATCH_SIZE}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, CUDA {torch.cuda.is_available()}"
    )
    rows = []
    for s in settings:
        count = args.samples if max(s["patch_size"]) <= 96 else max(args.samples // 2, 2 * BATCH_SIZE)
        rows += benchmark(
            s["patch_size"], s["ds_scales"], s["use_mask_for_norm"], image, seg, count, args.rounds
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "input_shape": list(image.shape),
                    "batch_size": BATCH_SIZE,
                    "torch": torch.__version__,
                    "machine": platform.platform(),
                    "cpus": os.cpu_count(),
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
