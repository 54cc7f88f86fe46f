# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Training: nnU-Net's U-Net, its loss and schedule, and a real training run
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/04_training.ipynb)
#
# **What you will learn**
# - how the plans define the network: its stages, features and strides, and its size in parameters
# - how to add your own configuration to the plans (`inherits_from`), as nnU-Net allows
# - nnU-Net's loss: Dice + cross-entropy at every decoder level (deep supervision), and its weights
# - the poly learning-rate schedule
# - a real training run with a live curve, stopped half-way and resumed exactly where it stopped
# - what a checkpoint holds, and where nnU-Net's files (`progress.png`, logs, checkpoints) end up
#
# It runs in about 3 minutes on a CPU (`profile = "quick"`: a small configuration, a few epochs); on a
# GPU it trains nnU-Net's own `3d_fullres`.

# %% [markdown]
# ## Setup
# On Colab the next cell installs `nnseg_nb`; elsewhere it does nothing (install it with
# `pip install -e .` in a clone of the repository, or `conda env create -f environment.yml`).

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # a plain install imports at once; "-e" would need a restart
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "nnseg-nb @ git+https://github.com/nnseg-nb/nnseg_nb"], check=True)

# %% tags=["nbval-ignore-output"]
from nnseg_nb import notebook, paths

print(notebook.device_summary())

# %% tags=["parameters"]
profile = "auto"  # "quick" (CPU, minutes), "full" (nnU-Net's settings), "auto": full when a GPU is present
seed = 0  # one seed for Python, numpy and torch (weights, patches and augmentation derive from it)
out_dir = "runs/04_training"  # results.json and figures go here
dataset = "Dataset901_BrainTissue"  # the demo brain: T1-like MRI, gray and white matter
configuration = ""  # "": "3d_quick" (added below) on the quick profile, nnU-Net's "3d_fullres" on the full one
fold = 0  # cross-validation fold (0-4) or "all"
epochs = 0  # 0: 6 (quick) or 150 (full); nnU-Net trains 1000
iterations_per_epoch = 0  # 0: 6 (quick) or 250 (full, nnU-Net's)
precision = "auto"  # "auto": fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; or "fp32", "bf16", "fp16"
results_root = ""  # trained models; "": <out_dir>/nnUNet_results. On Colab e.g. "/content/drive/MyDrive/nnseg_nb_results"
num_workers = 2  # DataLoader processes cutting patches
quick_features = 8  # features of the first stage of "3d_quick" (doubled at each of its 4 stages)

# %%
profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
quick = profile == "quick"
configuration = configuration or ("3d_quick" if quick else "3d_fullres")
epochs = epochs or (6 if quick else 150)
iterations_per_epoch = iterations_per_epoch or (6 if quick else 250)
print("profile:", profile)
print(f"configuration {configuration}, fold {fold}: {epochs} epochs x {iterations_per_epoch} iterations")

# %% [markdown]
# ## The data and its plans
#
# The demo datasets are built once (a few seconds) into the raw root. `planning.plan_dataset` writes
# the fingerprint and plans (notebook 02) and `preprocessing.preprocess_dataset` the preprocessed cases
# of `3d_fullres` (notebook 03): what `nnseg-nb plan` and `nnseg-nb preprocess` do.

# %%
import dataclasses
from pathlib import Path

import torch
from matplotlib.figure import Figure

from nnseg_nb import demo_data, network, paths, planning, preprocessing, training
from nnseg_nb.plans import ConfigurationPlan, save_plans
from nnseg_nb.viz import show_figure

demo_data.build_demo_datasets(paths.raw_root(), progress=False)
planned = planning.plan_dataset(dataset, num_workers=num_workers, progress=False)  # = `nnseg-nb plan`
preprocessing.preprocess_dataset(dataset, "3d_fullres", num_workers=num_workers, progress=False)
plans = planned.plans
# the planner's own configurations (a 3d_quick left in the file by notebook 00 or an earlier run is kept too)
planner_made = dataclasses.replace(
    plans, configurations={name: c for name, c in plans.configurations.items() if name not in planned.kept})
print("\n".join(planning.summary_lines(planner_made)))

# %% [markdown]
# ## A configuration of your own
#
# nnU-Net's `3d_fullres` here is a 5-stage U-Net with 32 to 320 features on 64 x 80 x 64 patches:
# one training step takes many seconds on a laptop CPU, and nnU-Net runs 250 of them per epoch.
# For a run of a few minutes we add a **custom configuration** to the plans, as nnU-Net lets you do
# by hand: `"inherits_from": "3d_fullres"` takes every key of `3d_fullres` (spacing, normalization,
# preprocessed data) and overrides only those given: a 32³ patch and a 4-stage network with 8 to 64
# features (`quick_features` sets the first). It reads the same preprocessed folder (`data_identifier`
# is inherited), so nothing is preprocessed again. On a GPU the notebook trains nnU-Net's `3d_fullres`.

# %%
fullres = plans.configuration("3d_fullres")
stages = 4
architecture = fullres.architecture.to_json()
kwargs = architecture["arch_kwargs"]
kwargs.update(
    n_stages=stages,
    features_per_stage=[quick_features * 2**i for i in range(stages)],
    kernel_sizes=kwargs["kernel_sizes"][:stages],
    strides=kwargs["strides"][:stages],
    n_conv_per_stage=kwargs["n_conv_per_stage"][:stages],
    n_conv_per_stage_decoder=kwargs["n_conv_per_stage_decoder"][: stages - 1],
)
quick_configuration = {"inherits_from": "3d_fullres", "patch_size": [32, 32, 32], "architecture": architecture}
plans.configurations["3d_quick"] = ConfigurationPlan.from_json(quick_configuration)
save_plans(plans, planned.plans_file)

for name in ("3d_fullres", "3d_quick"):
    plan = plans.configuration(name)
    arch = plan.architecture.arch_kwargs
    print(f"{name:<11} patch {plan.patch_size}, batch {plan.batch_size}, data {plan.data_identifier}, "
          f"features {arch['features_per_stage']}")

# %% [markdown]
# nnU-Net keeps hand-added configurations when a dataset is planned again, and so does
# `plan_dataset`: it reports them as `kept`.

# %%
replanned = planning.plan_dataset(dataset, num_workers=num_workers, progress=False)
print("kept on replanning:", replanned.kept)
plans = replanned.plans

# %% [markdown]
# ## The network
#
# `network.build_network` turns a configuration's `architecture` into nnU-Net's `PlainConvUNet`
# (the same modules and weight initialization). The figure shows the U: per encoder stage the feature
# map size (patch // stride), the channels and the convolutions; the strides on the arrows; the skip
# connections; and, on the right, one output per decoder level for deep supervision.

# %%
from nnseg_nb.dataset import load_dataset_json
from nnseg_nb.viz.plans import topology_figure

dataset_json = load_dataset_json(paths.find_dataset(dataset))
plan = plans.configuration(configuration)
in_channels, out_channels = network.network_channels(plan, dataset_json)
print(f"labels {dataset_json['labels']}: {in_channels} input channel(s), {out_channels} outputs")
for name in ("3d_fullres", "3d_quick"):
    net = network.build_network(plans.configuration(name).architecture, in_channels, out_channels,
                                generator=torch.Generator().manual_seed(seed))
    print(f"{name:<11} {sum(p.numel() for p in net.parameters()):>11,} parameters")
show_figure(topology_figure(plans, configuration))

# %% [markdown]
# ## The loss: Dice + cross-entropy, at every decoder level
#
# nnU-Net's loss is the sum of a soft Dice loss (per sample, or over the whole batch when the plans
# say `batch_dice`) and the cross-entropy. With **deep supervision** the decoder gives an output at
# every level but the lowest: the full-resolution one and coarser ones (strides 2, 4, ...), each
# compared with the label map downsampled to its size. Their losses are added with weights 1, 1/2,
# 1/4, ..., normalized to sum to one, and the coarsest output gets weight 0 (its head exists but is
# not trained).

# %%
strides = plan.architecture.arch_kwargs["strides"]
scales = network.deep_supervision_scales(strides)
weights = network.deep_supervision_weights(len(scales))
net = network.build_network(plan.architecture, in_channels, out_channels, deep_supervision=True,
                            generator=torch.Generator().manual_seed(seed))
with torch.no_grad():
    outputs = net(torch.zeros(1, in_channels, *plan.patch_size))
print(f"{'output':<7} {'shape':<22} {'scale':<18} weight")
for i, (out, scale, weight) in enumerate(zip(outputs, scales, weights)):
    print(f"{i:<7} {str(tuple(out.shape)):<22} {str(scale):<18} {weight:.3f}")

# %% [markdown]
# ## The learning rate: poly schedule
#
# SGD with Nesterov momentum 0.99, starting at 0.01; at the start of each epoch the rate is set to
# `0.01 * (1 - epoch / epochs) ** 0.9`. It falls almost linearly and reaches about zero at the
# end, so a run of fewer epochs is a compressed copy of nnU-Net's 1000-epoch schedule.

# %%
print("nnU-Net, 1000 epochs:", {e: round(training.poly_lr(e), 5) for e in (0, 250, 500, 750, 999)})
print(f"this run, {epochs} epochs:", [round(training.poly_lr(e, num_epochs=epochs), 5) for e in range(min(epochs, 8))])
fig = Figure(figsize=(6, 2.8))
ax = fig.subplots()
ax.plot(range(1000), [training.poly_lr(e) for e in range(1000)], color="tab:purple")
ax.set(xlabel="epoch", ylabel="learning rate", title="nnU-Net's poly schedule (1000 epochs)")
fig.tight_layout()
show_figure(fig)

# %% [markdown]
# ## Training, with a live curve
#
# `training.train` is `nnUNetv2_train DATASET CONFIGURATION FOLD`: it writes nnU-Net's model folder
# `<results>/<Dataset>/nnUNetTrainer__nnUNetPlans__<configuration>/fold_<f>`. Each epoch runs
# `iterations_per_epoch` training steps on random patches (a third forced onto foreground,
# augmented) and a few validation batches whose true/false positives give the **pseudo Dice**, per
# label; its moving average (EMA) chooses `checkpoint_best.pth`.
#
# Where the models go: `results_root`, by default under `out_dir`. On Colab, set it to a folder of
# your Google Drive (`/content/drive/MyDrive/...`): the notebook mounts the Drive (it asks you to
# authorize) and the checkpoints survive the end of the runtime. Precision: on a GPU, fp16 autocast
# with a gradient scaler as nnU-Net; on a CPU nnU-Net uses fp32, and `precision="auto"` uses bf16
# autocast only where the CPU has native bf16 instructions (AVX512-BF16 or AMX), about twice as fast
# there. On Linux the loop also runs inside `devices.keep_freed_memory()`: each step's activations
# reuse the memory the last step freed, instead of a fresh page fault per 4 KiB (glibc returns big
# blocks to the kernel on free); on a 2-core EPYC that alone made a CPU step about 1.3x faster. The
# committed outputs of this notebook come from a CPU run, so its losses and Dice depend on the CPU:
# they are shown but not checked.
#
# When the last epoch is done, nnU-Net predicts the fold's validation cases whole and scores them
# (`fold_0/validation/summary.json`); the quick profile skips that (`validate=False`), notebook 00
# shows it. We stop the run half-way, as the stop button (Ctrl-C) would: the callback raises
# `KeyboardInterrupt` after epoch 3, `train` catches it and returns with `stopped="interrupted"`.

# %%
if results_root.startswith("/content/drive") and notebook.in_colab():
    from google.colab import drive

    drive.mount("/content/drive")
results = Path(results_root) if results_root else Path(out_dir) / "nnUNet_results"
dataset_name = paths.find_dataset(dataset).name
fold_folder = training.model_folder(dataset_name, "nnUNetTrainer", "nnUNetPlans", configuration, results) / f"fold_{fold}"
for old in fold_folder.glob("checkpoint_*.pth"):  # a fresh run: no checkpoint of an earlier run to resume
    old.unlink()

settings = dataclasses.replace(
    training.NNUNET, num_epochs=epochs, iterations_per_epoch=iterations_per_epoch,
    val_iterations=3 if quick else 50, seed=seed, precision=precision, num_workers=num_workers,
    progress=not quick, validate=not quick,
)
stop_after = epochs // 2

# %% tags=["nbval-ignore-output"]
from nnseg_nb.viz.training import LiveCurves, training_curves

live = LiveCurves()


def show_epoch(record, log):
    live.update(record, log)
    dice = ", ".join(f"{d:.3f}" for d in record["dice_per_class_or_region"])
    print(f"epoch {record['epoch']}: train loss {record['train_losses']:.3f}, pseudo Dice [{dice}], "
          f"EMA {record['ema_fg_dice']:.3f}, {record['epoch_seconds']:.0f} s")


def stop_half_way(record, log):
    show_epoch(record, log)
    if record["epoch"] + 1 == stop_after:
        raise KeyboardInterrupt  # what the notebook's stop button does


first = training.train(dataset_name, configuration, fold, settings, results=results, callback=stop_half_way)
print(device, "precision:", training.autocast_dtype(training.resolve_device(settings.device), precision) or "fp32")

# %%
print("stopped:", first.stopped, "after", first.epochs_done, "epochs")
print("files:", sorted(p.name for p in fold_folder.iterdir() if not p.name.startswith("training_log_")))

# %% [markdown]
# ## What a checkpoint holds
#
# `checkpoint_latest.pth` is rewritten (atomically) after every epoch in nnU-Net's format, so
# nnunetv2 can resume our runs and we can resume its runs: the network weights, the optimizer's
# state (its momentum buffers), the gradient scaler's state on fp16, the training log (the curves),
# the best EMA so far, the epochs done, the arguments the trainer was built with (plans,
# configuration, fold, dataset.json) and the mirror axes allowed at inference.

# %%
from nnseg_nb.checkpoint import load_checkpoint

checkpoint = load_checkpoint(fold_folder / "checkpoint_latest.pth")
for key in sorted(checkpoint):
    value = checkpoint[key]
    if isinstance(value, dict):
        summary = f"dict: {', '.join(list(value)[:6])}{', ...' if len(value) > 6 else ''}"
    elif isinstance(value, (int, str, tuple, list)) or value is None:
        summary = repr(value)
    else:
        summary = type(value).__name__
    print(f"{key:<34} {summary}")
print("weight tensors:", len(checkpoint["network_weights"]),
      " logged epochs:", len(checkpoint["logging"]["train_losses"]))

# %% [markdown]
# ## Resuming
#
# `continue_training=True` (nnU-Net's `--c`, our `nnseg-nb train ... --continue`) loads the newest
# checkpoint and trains on to `num_epochs`. Every random draw of a run is a function of the seed and
# the batch's index, so the resumed run draws the same patches and augmentations as a run that was
# never stopped.

# %% tags=["nbval-ignore-output"]
result = training.train(dataset_name, configuration, fold, settings, results=results,
                        continue_training=True, callback=show_epoch)

# %%
print("stopped:", result.stopped, "after", result.epochs_done, "epochs")
print("files:", sorted(p.name for p in fold_folder.iterdir() if not p.name.startswith("training_log_")))

# %% [markdown]
# ## nnU-Net's progress.png and the curves
#
# After every epoch the trainer redraws `progress.png` in the fold folder, as nnU-Net does: losses
# with the pseudo Dice and its EMA, the epoch durations and the learning rate. `training_curves`
# reads the same log (`training_log.jsonl`, or a checkpoint) for a compact view. On the demo brain
# the pseudo Dice of gray and white matter rises within the first few dozen steps.

# %% tags=["nbval-ignore-output"]
from IPython.display import Image, display

display(Image(filename=str(fold_folder / "progress.png"), width=420))
show_figure(training_curves(fold_folder))

# %% tags=["nbval-ignore-output"]
log = result.log
summary = {
    "profile": profile,
    "configuration": configuration,
    "epochs": result.epochs_done,
    "iterations_per_epoch": iterations_per_epoch,
    "best_ema_pseudo_dice": round(result.best_ema, 4),
    "first_epoch_pseudo_dice": round(log.mean_fg_dice[0], 4),
    "final_pseudo_dice": round(log.mean_fg_dice[-1], 4),
    "final_pseudo_dice_per_label": [round(d, 4) for d in log.dice_per_class_or_region[-1]],
    "train_minutes": round(sum(e - s for s, e in zip(log.epoch_start_timestamps, log.epoch_end_timestamps)) / 60, 2),
    "model_folder": str(fold_folder.parent),
}
notebook.write_results(out_dir, summary)
print(summary)

# %% [markdown]
# ## On a GPU, and from the command line
#
# On a GPU (`profile = "full"`, the default there) the notebook trains nnU-Net's `3d_fullres`
# (64 x 80 x 64 patches, batch 2, 16.5 M parameters) with nnU-Net's 250 iterations per epoch for
# 150 epochs, a shortened schedule for the small demo brain (nnU-Net's 1000 epochs are meant for
# real data sets: set `epochs = 1000`). The GPU profile has not been timed yet. The same run from a
# terminal, resumable with `--continue`:
#
# ```bash
# nnseg-nb plan Dataset901_BrainTissue
# nnseg-nb preprocess Dataset901_BrainTissue -c 3d_fullres
# nnseg-nb train Dataset901_BrainTissue 3d_fullres 0            # nnUNetv2_train Dataset901_BrainTissue 3d_fullres 0
# nnseg-nb train Dataset901_BrainTissue 3d_fullres 0 --continue # after an interruption
# ```
#
# The model folder is nnU-Net's, so nnU-Net's own `nnUNetv2_predict -d 901 -c 3d_fullres -f 0` can
# use it, and so can `nnseg_nb.inference` (`nnseg-nb predict`).
