"""Training side by side: nnunetv2's nnUNetTrainer and nnseg_nb.training on the same plans, data and batch.

    $NNUNET_PY benchmarks/train.py --dataset 901 --configuration 3d_fullres \\
        --epochs 2 --iterations 10 --val-iterations 2 --out train.json

Needs ``$nnUNet_preprocessed/<Dataset>`` planned and preprocessed by nnunetv2 (``.b2nd``; nnseg_nb reads
those folders too) and ``$nnUNet_raw`` for the whole-case validation. Each run is a child process of this
script, so that peak memory is its own:

- **nnunetv2**: ``nnUNetTrainer`` on the CPU, its own loop (``run_training`` without the final
  validation), augmentation in ``nnUNet_n_proc_DA`` background processes (``--workers``, default 2 as
  on a 2-vCPU Colab runtime), fp32 (nnU-Net has no CPU autocast);
- **nnseg_nb fp32** and **nnseg_nb default** (``precision="auto"``: bf16 autocast where the CPU runs bf16
  natively): ``training.train`` with ``--workers`` loader processes cutting patches and the augmentation
  batched in the main process.

``--device cuda`` runs both on the GPU (nnU-Net: fp16 AMP and ``torch.compile``; ours: the same by default)
and adds **GPU busy**: ``nvidia-smi``'s ``utilization.gpu`` sampled every 100 ms over the timed steps.

Seconds per iteration: the wall time between consecutive training steps (data wait and augmentation
included), median over the steps after the first ``--warmup``. Peak memory: the child's max RSS (the main
process; the data workers are not added). Dice: each trainer's own online pseudo Dice after the same
iterations, and with ``--predict`` the fold-0 validation cases predicted whole by nnseg_nb's predictor from
each run's ``checkpoint_final.pth`` (nnunetv2's checkpoint loads here), scored alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import add_isa_argument, cpu_name, limit_kernels  # noqa: E402  (benchmarks/common.py)

# --- the two trainers, each run in a child process -----------------------------------------------------


def run_nnunet(args, results: Path) -> dict:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    os.environ["nnUNet_results"] = str(results)
    os.environ["nnUNet_n_proc_DA"] = str(args.workers)
    name = maybe_convert_to_dataset_name(args.dataset)
    folder = Path(os.environ["nnUNet_preprocessed"]) / name
    plans = load_json(folder / "nnUNetPlans.json")
    plans["continue_training"] = False
    trainer = nnUNetTrainer(
        plans, args.configuration, 0, load_json(folder / "dataset.json"), torch.device(args.device)
    )
    trainer.num_epochs, trainer.num_iterations_per_epoch = args.epochs, args.iterations
    trainer.num_val_iterations_per_epoch = args.val_iterations
    torch.manual_seed(args.seed)
    step_starts = []
    original_step = trainer.train_step

    def timed_step(batch):
        step_starts.append(time.perf_counter())
        return original_step(batch)

    trainer.train_step = timed_step
    trainer.on_train_start()
    for _ in range(trainer.num_epochs):  # nnUNetTrainer.run_training, without perform_actual_validation
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        outputs = [
            trainer.train_step(next(trainer.dataloader_train))
            for _ in range(trainer.num_iterations_per_epoch)
        ]
        trainer.on_train_epoch_end(outputs)
        with torch.no_grad():
            trainer.on_validation_epoch_start()
            val = [trainer.validation_step(next(trainer.dataloader_val)) for _ in range(args.val_iterations)]
            trainer.on_validation_epoch_end(val)
        trainer.on_epoch_end()
    trainer.on_train_end()
    log = trainer.logger.get_checkpoint()
    return {
        "step_seconds": _step_seconds(step_starts, args.iterations),
        "pseudo_dice": log["mean_fg_dice"],
        "ema": log["ema_fg_dice"],
        "model_folder": str(trainer.output_folder_base),
        "step_starts": step_starts,
    }


def run_ours(args, results: Path, precision: str) -> dict:
    import dataclasses

    import torch

    from nnseg_nb import training

    torch.manual_seed(args.seed)
    step_starts = []
    original_step = training.train_step

    def timed_step(*a, **k):
        step_starts.append(time.perf_counter())
        return original_step(*a, **k)

    training.train_step = timed_step
    epoch_ends = []
    settings = dataclasses.replace(
        training.NNUNET,
        num_epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        val_iterations=args.val_iterations,
        num_workers=args.workers,
        device=args.device,
        precision=precision,
        seed=args.seed,
        progress=False,
        validate=False,
    )
    trainer_name = f"nnsegTrainer_{precision}"
    result = training.train(
        args.dataset,
        args.configuration,
        0,
        settings,
        trainer_name=trainer_name,
        results=results,
        callback=lambda record, log: epoch_ends.append(record),
    )
    return {
        "step_seconds": _step_seconds(step_starts, args.iterations),
        "pseudo_dice": result.log.mean_fg_dice,
        "ema": result.log.ema_fg_dice,
        "model_folder": str(result.fold_folder.parent),
        "autocast": str(training.autocast_dtype(torch.device(args.device), precision) or "none (fp32)"),
        "step_starts": step_starts,
    }


def _step_seconds(starts: list[float], per_epoch: int) -> list[float]:
    """Intervals between consecutive step starts within each epoch: one step plus waiting for the next batch."""
    intervals = []
    for epoch_start in range(0, len(starts), per_epoch):
        chunk = starts[epoch_start : epoch_start + per_epoch]
        intervals += [b - a for a, b in zip(chunk, chunk[1:])]
    return intervals


def predict_dice(model_folder: str, device: str = "cpu") -> float:
    from nnseg_nb.predict import predict_validation

    summary = predict_validation(model_folder, 0, None, "checkpoint_final.pth", device=device)
    return float(summary["foreground_mean"]["Dice"])


class GpuBusy:
    """``nvidia-smi``'s ``utilization.gpu`` (the share of the last sample period in which a kernel ran),
    sampled every 100 ms in the background while the block runs; nothing off CUDA."""

    def __init__(self, device: str):
        self.enabled = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self.index = device.split(":")[1] if ":" in device else "0"
        self.samples: list[tuple[float, float]] = []  # (perf_counter, percent)

    def __enter__(self) -> GpuBusy:
        if self.enabled:
            query = ["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
            self.process = subprocess.Popen(
                ["nvidia-smi", *query, "-i", self.index], stdout=subprocess.PIPE, text=True
            )
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.strip())))
            except ValueError:  # "[N/A]" and the like
                pass

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.process.terminate()
            self.reader.join(timeout=2)


def gpu_busy_percent(samples: list, step_starts: list[float], warmup: int) -> float | None:
    """Mean utilization over the timed steps (from the first step after the warmup to the last step).

    >>> gpu_busy_percent([(0.5, 0.0), (1.5, 80.0), (2.5, 100.0), (9.0, 0.0)], [0.0, 1.0, 2.0, 3.0], 1)
    90.0
    """
    if not samples or len(step_starts) < 2:
        return None
    start, end = step_starts[min(warmup, len(step_starts) - 2)], step_starts[-1]
    window = [percent for t, percent in samples if start <= t <= end]
    return statistics.mean(window) if window else None


def child(args) -> None:
    results = Path(args.results)
    with GpuBusy(args.device) as busy:
        if args.child == "nnunet":
            out = run_nnunet(args, results)
        else:
            out = run_ours(args, results, args.child.split(":", 1)[1])
    out["gpu_samples"] = busy.samples
    if args.predict:
        out["validation_dice"] = predict_dice(out["model_folder"], args.device)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out, default=float), flush=True)


# --- the parent: run each child, summarize -------------------------------------------------------------


def summarize(name: str, out: dict, warmup: int) -> dict:
    steps = out["step_seconds"][warmup:] or out["step_seconds"]
    return {
        "run": name,
        "seconds_per_iteration": statistics.median(steps),
        "iterations_timed": len(steps),
        "peak_rss_mb": round(out["peak_rss_mb"]),
        "pseudo_dice_last_epoch": out["pseudo_dice"][-1],
        "ema_pseudo_dice": out["ema"][-1],
        "validation_dice": out.get("validation_dice"),
        "autocast": out.get("autocast", "none (fp32)"),
        "gpu_busy_percent": gpu_busy_percent(out.get("gpu_samples", []), out.get("step_starts", []), warmup),
    }


def merge_rounds(rounds: list[dict]) -> dict:
    """One row per run: the median over rounds of each round's median seconds per iteration."""
    row = dict(rounds[-1])
    row["seconds_per_iteration"] = statistics.median(r["seconds_per_iteration"] for r in rounds)
    row["seconds_per_iteration_per_round"] = [round(r["seconds_per_iteration"], 3) for r in rounds]
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    busy = [r["gpu_busy_percent"] for r in rounds if r["gpu_busy_percent"] is not None]
    row["gpu_busy_percent"] = statistics.median(busy) if busy else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="901")
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10, help="training iterations per epoch")
    parser.add_argument("--val-iterations", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="data processes of each trainer")
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (cuda: AMP and torch.compile, as nnU-Net)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="steps not timed (first of each run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--predict", action="store_true", help="also predict and score fold 0's validation cases"
    )
    parser.add_argument("--runs", nargs="+", default=["nnunet", "ours:fp32", "ours:auto"])
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the runs, every other round in reverse order"
    )
    add_isa_argument(parser)
    parser.add_argument("--results", default=None, help="results root (default: a fresh folder in /tmp)")
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import tempfile

    limit_kernels(
        args.isa
    )  # before torch is imported here (children inherit it), so the report says what ran
    import torch

    from nnseg_nb.training import cpu_runs_bf16_natively

    results = Path(args.results or tempfile.mkdtemp(prefix="bench_train_"))
    env = dict(os.environ)
    runs = list(args.runs)  # with --isa avx2 nnseg_nb's default ("ours:auto") is fp32, as on an AVX2 CPU
    per_round = {run: [] for run in runs}
    for round_index in range(args.rounds):
        for run in runs if round_index % 2 == 0 else runs[::-1]:
            command = [sys.executable, __file__, "--child", run, "--results"]
            command += [str(results / f"{run.replace(':', '_')}_round{round_index}")]
            for flag in (
                "dataset",
                "configuration",
                "epochs",
                "iterations",
                "val_iterations",
                "workers",
                "seed",
                "device",
            ):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            command += ["--predict"] if args.predict else []
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"{run} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            per_round[run].append(summarize(run, json.loads(lines[-1][len("RESULT ") :]), args.warmup))
            print(json.dumps(per_round[run][-1]), flush=True)
    rows = [merge_rounds(rounds) for rounds in per_round.values()]
    reference = next((r for r in rows if r["run"] == "nnunet"), None)
    for row in rows:
        if reference is not None:
            row["speedup_vs_nnunet"] = reference["seconds_per_iteration"] / row["seconds_per_iteration"]
    report = {
        "cpu": cpu_name(),
        "cpu_bf16_native": cpu_runs_bf16_natively(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "dataset": args.dataset,
        "configuration": args.configuration,
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations,
        "val_iterations": args.val_iterations,
        "workers": args.workers,
        "isa": args.isa,
        "rounds": args.rounds,
        "rows": rows,
    }
    isa = "kernels limited to AVX2" if args.isa == "avx2" else "native kernels"
    print(
        f"{report['cpu']} ({report['cores']} cores, bf16 native: {report['cpu_bf16_native']}, {isa}), "
        f"torch {torch.__version__}, {args.rounds} round(s)"
    )
    print(
        f"{'run':12} {'s/iter':>8} {'x nnU-Net':>10} {'peak MB':>8} {'pseudo Dice':>12} {'val Dice':>9} "
        f"{'GPU busy':>9}"
    )
    for row in rows:
        val = f"{row['validation_dice']:.4f}" if row["validation_dice"] is not None else "-"
        busy = f"{row['gpu_busy_percent']:.0f} %" if row["gpu_busy_percent"] is not None else "-"
        print(
            f"{row['run']:12} {row['seconds_per_iteration']:8.3f} {row.get('speedup_vs_nnunet', 1):10.2f} "
            f"{row['peak_rss_mb']:8d} {row['pseudo_dice_last_epoch']:12.4f} {val:>9} {busy:>9}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
