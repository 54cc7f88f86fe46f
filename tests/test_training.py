"""The trainer: nnU-Net's schedule and checkpoints, learning, resuming after a kill, DDP, bad losses.

Every run trains a tiny custom configuration (``2d_tiny``: 3 stages, 8-32 features, 32 x 32 patches;
``inherits_from`` the planned ``2d``) on ``Dataset990_Blobs``, ten 48 x 48 PNGs with a bright and a dark
disk, planned and preprocessed by nnseg_nb once per module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnseg_nb.checkpoint import CHECKPOINT_KEYS, TrainingLog, load_checkpoint, pretrained_weights_for
from nnseg_nb.network import build_network
from nnseg_nb.plans import ArchitecturePlan
from nnseg_nb.training import (
    NNUNET,
    NonFiniteLossError,
    autocast_dtype,
    cpu_runs_bf16_natively,
    poly_lr,
    rank_batch,
    train,
)

FIXTURES = Path(__file__).parent / "fixtures" / "training"
REPO = Path(__file__).parents[1]
DATASET = "Dataset990_Blobs"
TINY = dict(
    n_stages=3,
    features_per_stage=[8, 16, 32],
    kernel_sizes=[[3, 3]] * 3,
    strides=[[1, 1], [2, 2], [2, 2]],
    n_conv_per_stage=[2, 2, 2],
    n_conv_per_stage_decoder=[2, 2],
)


def quick(**changes) -> dataclasses.replace:
    base = dataclasses.replace(
        NNUNET,
        num_epochs=2,
        iterations_per_epoch=3,
        val_iterations=1,
        num_workers=0,
        precision="fp32",
        progress=False,
        validate=False,
    )
    return dataclasses.replace(base, **changes)


def build_blobs(raw_root: Path, n_cases: int = 10, size: int = 48, seed: int = 0) -> Path:
    """An easy 2D task: noise around 100, a bright disk (label 1, ~170) and a dark one (label 2, ~40)."""
    folder = raw_root / DATASET
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n_cases):
        image = rng.normal(100, 8, (size, size))
        label = np.zeros((size, size), np.uint8)
        for value, brightness in ((1, 170), (2, 40)):
            cy, cx = rng.integers(10, size - 10, 2)
            radius = rng.integers(4, 9)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
            image[disk] = rng.normal(brightness, 8, disk.sum())
            label[disk] = value
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            folder / "imagesTr" / f"blob_{i:03d}_0000.png"
        )
        Image.fromarray(label).save(folder / "labelsTr" / f"blob_{i:03d}.png")
    dataset_json = {
        "channel_names": {"0": "gray"},
        "labels": {"background": 0, "bright": 1, "dark": 2},
        "numTraining": n_cases,
        "file_ending": ".png",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    return folder


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Raw and preprocessed roots with Dataset990_Blobs planned and preprocessed (2d, 2d_tiny, 2d_micro)."""
    from nnseg_nb.cli import main

    base = tmp_path_factory.mktemp("training")
    roots = {"nnUNet_raw": base / "raw", "nnUNet_preprocessed": base / "preprocessed"}
    build_blobs(roots["nnUNet_raw"])
    with pytest.MonkeyPatch.context() as patch:
        for name, root in roots.items():
            patch.setenv(name, str(root))
        assert main(["plan", DATASET]) == 0
        assert main(["preprocess", DATASET, "-c", "2d", "-np", "1"]) == 0
    plans_file = roots["nnUNet_preprocessed"] / DATASET / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    tiny_architecture = copy.deepcopy(plans["configurations"]["2d"]["architecture"])
    tiny_architecture["arch_kwargs"].update(TINY)
    plans["configurations"]["2d_tiny"] = {
        "inherits_from": "2d",
        "patch_size": [32, 32],
        "batch_size": 4,
        "architecture": tiny_architecture,
    }
    # the configuration nnunetv2 wrote tests/fixtures/training/nnunet_checkpoint.pth for
    fixture_plans = json.loads((FIXTURES / "blobs_plans.json").read_text())
    plans["configurations"]["2d_micro"] = fixture_plans["configurations"]["2d_micro"]
    plans_file.write_text(json.dumps(plans, indent=1))
    return roots


def run_train(roots, results: Path, **kwargs):
    settings = kwargs.pop("settings", quick())
    return train(
        DATASET,
        kwargs.pop("configuration", "2d_tiny"),
        kwargs.pop("fold", 0),
        settings,
        preprocessed=roots["nnUNet_preprocessed"],
        results=results,
        **kwargs,
    )


def cli(roots, results: Path, *args: str, **popen) -> subprocess.Popen:
    """``nnseg-nb train`` in a fresh process (one thread: the same arithmetic in every run)."""
    env = {
        **os.environ,
        **{k: str(v) for k, v in roots.items()},
        "nnUNet_results": str(results),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    command = [sys.executable, "-m", "nnseg_nb.cli", "train", DATASET, "2d_tiny", "0", *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


FOLD = "nnUNetTrainer__nnUNetPlans__2d_tiny/fold_0"


# --- schedule, precision, DDP split ---------------------------------------------------------------------


def test_poly_lr_equals_nnunets_scheduler():
    fixture = json.loads((FIXTURES / "poly_lr.json").read_text())
    for epoch, lr in fixture["lr_at_epoch_start"].items():
        assert poly_lr(
            int(epoch), fixture["initial_lr"], fixture["num_epochs"], fixture["exponent"]
        ) == pytest.approx(lr, rel=1e-12)


def test_bf16_only_where_the_cpu_has_it(tmp_path):
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor : 0\nflags : fpu sse avx2 fma\n")
    bf16 = tmp_path / "bf16"
    bf16.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert not cpu_runs_bf16_natively(avx2) and cpu_runs_bf16_natively(bf16)
    assert not cpu_runs_bf16_natively(tmp_path / "missing")
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert autocast_dtype(torch.device("mps"), "auto") is None
    assert autocast_dtype(torch.device("cuda"), "fp32") is None


def test_rank_batch_splits_as_nnunet():
    # nnUNetTrainer._set_batch_size_and_oversample, worked by hand for 0.33 oversampling
    assert [rank_batch(2, 0.33, r, 2) for r in range(2)] == [(1, 0.0), (1, 1.0)]
    assert [rank_batch(4, 0.33, r, 2) for r in range(2)] == [(2, 0.0), (2, 0.5)]
    assert [rank_batch(5, 0.33, r, 3) for r in range(3)] == [(2, 0.0), (2, 0.5), (1, 1.0)]
    assert rank_batch(7, 0.33, 0, 1) == (7, 0.33)
    with pytest.raises(ValueError, match="smaller than"):
        rank_batch(1, 0.33, 0, 2)


# --- training ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(roots, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    torch.set_num_threads(1)
    result = run_train(
        roots, results, settings=quick(num_epochs=5, iterations_per_epoch=10, val_iterations=3, validate=True)
    )
    return result


def test_training_learns_the_easy_task(trained):
    dice = trained.log.mean_fg_dice
    assert trained.stopped == "finished" and trained.epochs_done == 5
    assert dice[0] < 0.5 and dice[-1] > 0.75, dice  # from near chance to clearly segmenting both disks
    assert trained.log.lrs == pytest.approx([poly_lr(e, 1e-2, 5) for e in range(5)])
    ema = [dice[0]]
    for d in dice[1:]:
        ema.append(0.9 * ema[-1] + 0.1 * d)
    assert trained.log.ema_fg_dice == pytest.approx(ema)


def test_run_folder_has_nnunets_layout(trained):
    fold = trained.fold_folder
    model = fold.parent
    assert model.name == "nnUNetTrainer__nnUNetPlans__2d_tiny" and model.parent.name == DATASET
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (model / name).is_file()
    assert {p.name for p in fold.glob("checkpoint_*.pth")} == {"checkpoint_best.pth", "checkpoint_final.pth"}
    assert (fold / "progress.png").read_bytes()[:4] == b"\x89PNG"
    lines = (fold / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(5))
    assert len(list(fold.glob("training_log_*.txt"))) == 1
    summary = json.loads(
        (fold / "validation" / "summary.json").read_text()
    )  # the fold's cases, predicted whole
    assert len(summary["metric_per_case"]) == 2 and 0 <= summary["foreground_mean"]["Dice"] <= 1
    best = load_checkpoint(fold / "checkpoint_best.pth")
    assert best["_best_ema"] == max(trained.log.ema_fg_dice[: best["current_epoch"]])


def test_checkpoint_keys_equal_nnunetv2s(trained):
    ours = load_checkpoint(trained.fold_folder / "checkpoint_final.pth")
    theirs = torch.load(FIXTURES / "nnunet_checkpoint.pth", weights_only=False)
    assert set(CHECKPOINT_KEYS) == set(theirs)
    assert set(ours) == set(theirs) | {"nnseg_nb"}
    assert list(ours["logging"]) == list(theirs["logging"])
    assert set(ours["init_args"]) == set(theirs["init_args"])
    assert (
        ours["init_args"]["device"] == torch.device("cpu") and ours["init_args"]["configuration"] == "2d_tiny"
    )
    assert list(ours["optimizer_state"]) == list(theirs["optimizer_state"])
    ours_group, their_group = (set(c["optimizer_state"]["param_groups"][0]) for c in (ours, theirs))
    assert ours_group <= their_group
    # ours may lack only SGD options this torch does not have (the fixture's newer torch stores "fused"; 2.2 not)
    this_torch = set(torch.optim.SGD([torch.zeros(1)], lr=0.01).state_dict()["param_groups"][0])
    assert not (their_group - ours_group) & this_torch, their_group - ours_group
    assert ours["grad_scaler_state"] is None and theirs["grad_scaler_state"] is None  # no scaler on the CPU
    assert ours["current_epoch"] == 5 and ours["inference_allowed_mirroring_axes"] == (0, 1)
    assert all(len(values) == 5 for values in ours["logging"].values())


def test_resumes_from_an_nnunetv2_checkpoint(roots, tmp_path):
    theirs = torch.load(FIXTURES / "nnunet_checkpoint.pth", weights_only=False)
    fold = tmp_path / DATASET / "nnUNetTrainer__nnUNetPlans__2d_micro" / "fold_0"
    fold.mkdir(parents=True)
    shutil.copy(FIXTURES / "nnunet_checkpoint.pth", fold / "checkpoint_latest.pth")
    result = run_train(roots, tmp_path, configuration="2d_micro", continue_training=True)
    assert result.epochs_done == 2
    assert result.log.train_losses[0] == theirs["logging"]["train_losses"][0]  # epoch 0 is nnU-Net's
    assert result.log.lrs == pytest.approx([0.01, poly_lr(1, 1e-2, 2)])
    ours = load_checkpoint(fold / "checkpoint_final.pth")
    assert set(ours["network_weights"]) == set(theirs["network_weights"])


@pytest.mark.slow  # three fresh processes: ~25 s on a busy 2-core machine
def test_kill_mid_epoch_then_continue_equals_an_uninterrupted_run(roots, tmp_path):
    args = ["--epochs", "3", "--iterations-per-epoch", "10", "--val-iterations", "1", "-np", "0"]
    args += ["--precision", "fp32", "--quiet", "--no-validation"]
    reference = cli(roots, tmp_path / "reference", *args)
    killed = cli(roots, tmp_path / "killed", *args)
    jsonl = tmp_path / "killed" / DATASET / FOLD / "training_log.jsonl"
    deadline = time.time() + 120
    while not (jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 1):
        assert killed.poll() is None and time.time() < deadline, killed.communicate()[0]
        time.sleep(0.05)
    time.sleep(0.2)  # inside epoch 1
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    latest = load_checkpoint(tmp_path / "killed" / DATASET / FOLD / "checkpoint_latest.pth")
    assert latest["current_epoch"] in (1, 2)  # the epoch in progress is lost, never half-saved
    resumed = cli(roots, tmp_path / "killed", *args, "--continue")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert reference.wait(timeout=300) == 0, reference.communicate()[0]
    final = {
        name: load_checkpoint(tmp_path / name / DATASET / FOLD / "checkpoint_final.pth")
        for name in ("reference", "killed")
    }
    for key in ("train_losses", "val_losses", "lrs", "mean_fg_dice", "ema_fg_dice"):
        assert final["killed"]["logging"][key] == pytest.approx(
            final["reference"]["logging"][key], rel=1e-6
        ), key
    for key, weights in final["reference"]["network_weights"].items():
        torch.testing.assert_close(final["killed"]["network_weights"][key], weights, rtol=1e-5, atol=1e-6)


def test_two_process_gloo_ddp(roots, tmp_path):
    env = {
        **os.environ,
        **{k: str(v) for k, v in roots.items()},
        "nnUNet_results": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "nnseg_nb.cli", "train", DATASET, "2d_tiny", "0", "--device", "cpu", "--epochs", "2"]
    command += [
        "--iterations-per-epoch",
        "3",
        "--val-iterations",
        "2",
        "-np",
        "0",
        "--precision",
        "fp32",
        "--no-validation",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    fold = tmp_path / DATASET / FOLD
    text_logs = list(fold.glob("training_log_*.txt"))
    assert len(text_logs) == 1  # one writer
    assert "batch 2 on each of 2 process(es)" in text_logs[0].read_text()
    final = load_checkpoint(fold / "checkpoint_final.pth")
    assert final["current_epoch"] == 2 and not any(k.startswith("module.") for k in final["network_weights"])
    assert all(math.isfinite(v) for v in final["logging"]["train_losses"])


# --- stopping: Ctrl-C, a non-finite loss ---------------------------------------------------------------------


def test_interrupt_returns_cleanly_and_continue_finishes(roots, tmp_path):
    def stop_after_first_epoch(record, log):
        if record["epoch"] == 0:
            raise KeyboardInterrupt

    stopped = run_train(roots, tmp_path, settings=quick(num_epochs=3), callback=stop_after_first_epoch)
    assert stopped.stopped == "interrupted" and stopped.epochs_done == 1
    assert load_checkpoint(stopped.fold_folder / "checkpoint_latest.pth")["current_epoch"] == 1
    finished = run_train(roots, tmp_path, settings=quick(num_epochs=3), continue_training=True)
    assert finished.stopped == "finished" and finished.epochs_done == 3
    assert finished.log.train_losses[0] == stopped.log.train_losses[0]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(roots, tmp_path):
    first = run_train(roots, tmp_path, settings=quick(num_epochs=1))
    final = first.fold_folder / "checkpoint_final.pth"
    before = load_checkpoint(final)
    with pytest.raises(NonFiniteLossError, match="epoch 1, iteration 1"):
        run_train(roots, tmp_path, settings=quick(num_epochs=2, initial_lr=math.inf), continue_training=True)
    after = load_checkpoint(final)
    assert after["current_epoch"] == 1 and not (first.fold_folder / "checkpoint_latest.pth").exists()
    for key, weights in before["network_weights"].items():
        assert torch.equal(after["network_weights"][key], weights)


# --- inputs, fine-tuning ----------------------------------------------------------------------------------------


def test_unpreprocessed_configuration_names_the_command(roots, tmp_path):
    planned_only = tmp_path / "preprocessed" / DATASET
    planned_only.mkdir(parents=True)
    shutil.copy(roots["nnUNet_preprocessed"] / DATASET / "nnUNetPlans.json", planned_only)
    with pytest.raises(FileNotFoundError, match=f"run first: nnseg-nb preprocess {DATASET} -c 2d"):
        train(DATASET, "2d", 0, quick(), preprocessed=tmp_path / "preprocessed", results=tmp_path)
    with pytest.raises(FileNotFoundError, match="run first: nnseg-nb plan Dataset991"):
        train("Dataset991", "2d", 0, quick(), preprocessed=tmp_path / "preprocessed", results=tmp_path)


def test_pretrained_weights_skip_the_heads_and_check_shapes(trained):
    plans = json.loads((trained.fold_folder.parent / "plans.json").read_text())
    architecture = ArchitecturePlan.from_json(plans["configurations"]["2d_tiny"]["architecture"])
    checkpoint = load_checkpoint(trained.fold_folder / "checkpoint_final.pth")
    five_classes = build_network(architecture, 1, 5)  # another task: other heads
    weights = pretrained_weights_for(five_classes, checkpoint)
    assert not any(".seg_layers." in key for key in weights)
    assert set(weights) | {k for k in five_classes.state_dict() if ".seg_layers." in k} == set(
        five_classes.state_dict()
    )
    two_channels = build_network(architecture, 2, 3)  # other input channels: the first conv differs
    with pytest.raises(ValueError, match="shape"):
        pretrained_weights_for(two_channels, checkpoint, "x.pth")


def test_training_log_round_trips_nnunets_dict():
    log = TrainingLog()
    log.add_epoch(1.0, 0.9, [0.5, 0.25], 0.01, 10.0, 12.5)
    assert TrainingLog.from_json(json.loads(json.dumps(log.to_json()))) == log
    assert log.epoch_record(0)["epoch_seconds"] == 2.5


def test_training_curves_read_a_run_folder(trained):
    from nnseg_nb.viz.training import LiveCurves, load_log, training_curves

    log = load_log(trained.fold_folder)  # from training_log.jsonl
    assert log.mean_fg_dice == pytest.approx(trained.log.mean_fg_dice)
    from_checkpoint = load_log(trained.fold_folder / "checkpoint_final.pth")
    assert from_checkpoint.lrs == pytest.approx(trained.log.lrs)
    figure = training_curves(trained.fold_folder)
    assert [axis.get_title() for axis in figure.axes][:3] == [
        "loss (Dice + CE)",
        "validation pseudo Dice",
        "learning rate (poly)",
    ]
    assert len(figure.axes[1].lines[1].get_ydata()) == 5
    live = LiveCurves()
    live.update(log.epoch_record(0), log.truncated(1))  # outside IPython: draws, shows nothing
    live.update(log.epoch_record(1), log.truncated(2))
    assert len(live.figure.axes[0].lines[0].get_ydata()) == 2
