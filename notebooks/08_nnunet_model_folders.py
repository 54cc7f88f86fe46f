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
# # 08 · nnU-Net model folders: open a model that nnU-Net v2 trained, and predict with it
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/08_nnunet_model_folders.ipynb)
#
# **What you will learn**
# - what a model folder `<Trainer>__<Plans>__<configuration>` holds, and how nnU-Net shares one as a zip
# - how to read its plans (patch, network) and its training log straight from the checkpoint
# - how to predict new images with a model nnU-Net trained, without installing nnU-Net
# - how to check that our prediction agrees with `nnUNetv2_predict`'s, voxel by voxel
#
# The default model is tiny and was trained by nnU-Net 2.8.1 itself; it ships with `nnseg_nb`. Point
# `model` at your own model folder or at the URL of a published nnU-Net model zip to open that one.
# It runs in well under a minute on a CPU.

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
import numpy as np

from nnseg_nb import notebook

print(notebook.device_summary())

# %% tags=["parameters"]
profile = "auto"  # "quick" (CPU, minutes), "full" (nnU-Net's settings), "auto": full when a GPU is present
seed = 0  # one seed for Python, numpy and torch
out_dir = "runs/08_nnunet_model_folders"  # results.json, predictions and figures go here
model = ""  # "": the tiny model nnU-Net 2.8.1 trained (ships with nnseg_nb); a model folder; a model zip or its URL
images = ""  # a folder of {case}_0000.nii.gz to predict; "": the demo model's two test images
nnunet_predictions = ""  # nnUNetv2_predict's output for `images`, to compare with; "": the demo's (if `model` is "")
folds = ""  # e.g. "0,1"; "": every fold_k that has checkpoint_final.pth

# %%
from pathlib import Path

from nnseg_nb import paths

profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # "runs/08_..." -> runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
print("profile:", profile)

# %% [markdown]
# ## 1 · The model folder
#
# nnU-Net writes everything it trained for one dataset, trainer, plans and configuration into one
# folder, `nnUNet_results/<Dataset>/<Trainer>__<Plans>__<configuration>/`: the plans and `dataset.json`
# it trained with (prediction needs exactly those), the dataset fingerprint, and one `fold_<k>` per
# cross-validation fold, with its checkpoints, `progress.png`, the training log and `validation/`
# (the fold's held-out cases, predicted and scored in `summary.json`).
#
# To share a model, nnU-Net zips such folders (`nnUNetv2_export_model_to_zip`), with paths relative
# to `nnUNet_results`; installing it (`nnUNetv2_install_pretrained_model_from_zip`) is unzipping it
# there. `model_folders.install_model_zip` does the same, from a file or a URL.

# %%
from nnseg_nb import model_folders

demo = model_folders.demo_model()
if not model:
    model_folder = demo.model_folder
elif str(model).endswith(".zip") or str(model).startswith(("http://", "https://")):
    installed = model_folders.install_model_zip(model, paths.results_root())  # downloads a URL first
    print("installed:", *[p.name for p in installed])
    model_folder = installed[0]
else:
    model_folder = Path(model)
images = Path(images) if images else demo.images
if nnunet_predictions:
    nnunet_predictions = Path(nnunet_predictions)
else:
    nnunet_predictions = demo.nnunet_predictions if model_folder == demo.model_folder else None

for path in sorted(model_folder.rglob("*")):
    if path.is_file():
        print(f"{str(path.relative_to(model_folder)):<42} {path.stat().st_size / 1024:7.1f} KB")

# %%
info = model_folders.describe_model_folder(model_folder)
print("\n".join(info.lines()))

# %% [markdown]
# The demo model is tiny on purpose: nnU-Net trained a custom configuration, `3d_tiny` (a 3-stage
# U-Net with 8-32 features on 8×24×24 patches, inheriting everything else from `3d_fullres`), with its
# own trainer subclass `nnUNetTrainerTiny` (4 epochs of 12 iterations, on a CPU), on 6 synthetic
# scans: two nested blobs, `outer` and `inner`. Folds 0 and 1 were trained. A real model has 5 folds
# of 1000 epochs; nothing below depends on the size.
#
# ## 2 · The plans it was trained with
#
# `plans.json` in the model folder is a copy of the plans at training time. It fixes everything the
# model expects: the target spacing, the normalization, the patch and the network. The trainer name
# and the configuration come from the folder's name (and the checkpoint's `init_args`); the network
# itself is rebuilt from the plans, so any trainer's checkpoint loads as long as its network is the
# plans' one.

# %%
from nnseg_nb import dataset as datasets
from nnseg_nb import io, planning
from nnseg_nb.plans import load_plans
from nnseg_nb.utils import load_json
from nnseg_nb.viz import show_figure
from nnseg_nb.viz.plans import patch_boxes_figure, topology_figure

plans = load_plans(model_folder / "plans.json")
plan = plans.configuration(info.configuration)
print("\n".join(planning.summary_lines(plans)))  # every configuration of the plans file
print("transpose_forward:", plans.transpose_forward, " normalization:", plan.normalization_schemes,
      " use_mask_for_norm:", plan.use_mask_for_norm)
print("network:", plan.architecture.network_class_name.rsplit(".", 1)[-1],
      " features:", plan.architecture.features_per_stage, " strides:", plan.architecture.strides)

dataset_json = load_json(model_folder / "dataset.json")
image_cases = datasets.find_image_cases(images, dataset_json["file_ending"])
first_case = sorted(image_cases)[0]
image, props = io.read_case(image_cases[first_case])
print(f"{len(image_cases)} image(s) to predict; {first_case}: shape {image.shape[1:]}, "
      f"spacing {[round(s, 3) for s in props['spacing']]}")
show_figure(patch_boxes_figure(plans, image, props["spacing"], configurations=[info.configuration]), dpi=70)

# %% [markdown]
# The patch, drawn to scale on the middle of a test image: a real model's patch covers a large part
# of a scan; here the tiny patch needs several tiles per image (see notebook 05 for the sliding window).
# Below, the network the plans describe, with the shape of each stage's features.

# %%
show_figure(topology_figure(plans, info.configuration), dpi=70)

# %% [markdown]
# ## 3 · Its training curve, from the checkpoint
#
# Every nnU-Net checkpoint carries the whole training log (`logging`): per epoch the mean training and
# validation losses, the pseudo Dice of each class on the validation patches (`dice_per_class_or_region`),
# their mean and its exponential moving average (`ema_fg_dice`, which picks `checkpoint_best.pth`), the
# learning rate and the epoch's start and end times. It is how `progress.png` is drawn, and it is all a
# published zip needs to show how its model trained (zips leave the text logs out).

# %%
from nnseg_nb.checkpoint import TrainingLog
from nnseg_nb.inference import load_checkpoint
from nnseg_nb.viz.training import training_curves

fold_folders = [model_folder / f"fold_{f.fold}" for f in info.folds if "checkpoint_final.pth" in f.checkpoints]
checkpoint = load_checkpoint(fold_folders[0] / "checkpoint_final.pth")
log = TrainingLog.from_json(checkpoint["logging"])
print("checkpoint keys:", sorted(checkpoint))
print(f"{fold_folders[0].name}: trainer {checkpoint['trainer_name']}, configuration "
      f"{checkpoint['init_args']['configuration']}, mirror axes {checkpoint['inference_allowed_mirroring_axes']}")
for epoch in range(len(log.train_losses)):
    print(f"epoch {epoch}: train loss {log.train_losses[epoch]:.3f}, val loss {log.val_losses[epoch]:.3f}, "
          f"pseudo Dice {[round(d, 3) for d in log.dice_per_class_or_region[epoch]]}, "
          f"EMA {log.ema_fg_dice[epoch]:.3f}, lr {log.lrs[epoch]:.4f}")
show_figure(training_curves(log), dpi=70)

# %% [markdown]
# The loss is nnU-Net's Dice + cross-entropy, where the Dice term counts negatively: it falls below zero
# as the network learns. The learning rate follows the poly schedule, `lr0 × (1 - epoch/epochs)^0.9`.
#
# ## 4 · Predict new images
#
# `inference.load_model` reads `plans.json`, `dataset.json` and each fold's checkpoint, rebuilds the
# network from the plans and keeps the folds' weights. `predict.predict_folder` then does what
# `nnUNetv2_predict -i IMAGES -o OUT` does: preprocess each case with the model's plans, predict it by
# sliding window with mirroring, average the folds' logits, and export the label map (and the
# probabilities, here) with the input's geometry. The same from the command line:
# `nnseg-nb predict -m MODEL_FOLDER -i IMAGES -o OUT`.

# %%
from nnseg_nb.inference import load_model
from nnseg_nb.predict import PredictionSettings, predict_folder

fold_list = [int(f) if f.strip().isdigit() else f.strip() for f in folds.split(",")] if folds else None
loaded = load_model(model_folder, folds=fold_list, device=device)
print(f"folds {loaded.folds}, configuration {loaded.configuration_name}, patch {loaded.configuration.patch_size}, "
      f"mirror axes {loaded.mirror_axes}")
our_predictions = Path(out_dir) / "predictions"
precision = "fp32" if device.type == "cpu" else "auto"  # nnU-Net predicts in fp32 on a CPU, fp16 on a GPU
settings = PredictionSettings(save_probabilities=True, precision=precision, num_workers=1, progress=False)
report = predict_folder(loaded, images, our_predictions, settings=settings)
print("written:", [Path(p).name for p in report.written], " failed:", report.failed)

# %% tags=["nbval-ignore-output"]
print(f"{len(report.written)} case(s) in {report.seconds:.1f} s on {device}; predictions in {paths.display(our_predictions)}")

# %% [markdown]
# ## 5 · Does it agree with nnU-Net's own prediction?
#
# The demo model comes with what `nnUNetv2_predict` (nnU-Net 2.8.1: step 0.5, Gaussian weighting,
# mirroring, folds 0 and 1, float32 on a CPU) wrote for the same two images. We compare the label maps
# voxel by voxel, the Dice of each label between the two, and the largest difference of any class
# probability. Both computed in float32, they differ only by the order of floating-point sums. (With
# `precision="auto"` a CPU that computes bfloat16 natively predicts about twice as fast; that moves
# probabilities by up to about 1 % and can flip a voxel that sits exactly on a boundary.)

# %%
labels = datasets.LabelInfo.from_dataset_json(dataset_json)
agreement = []
if nnunet_predictions is not None:
    agreement = model_folders.segmentation_agreement(our_predictions, nnunet_predictions,
                                                     labels.foreground_labels)
    for row in agreement:
        dice = ", ".join(f"{k}: {v:.4f}" for k, v in row["Dice"].items())
        print(f"{row['case']}: {row['agreement']:.2%} of {row['voxels']} voxels agree "
              f"(the two label maps differ in {row['differing']}); Dice ours vs nnU-Net {dice}")
else:
    print("no nnU-Net predictions given: set nnunet_predictions to compare")

# %% tags=["nbval-ignore-output"]
for row in agreement:  # float rounding differs between CPUs, hence not part of the golden output
    print(f"{row['case']}: largest probability difference {row.get('max_probability_difference', float('nan')):.4f}")

# %% [markdown]
# Browse a case: the image, nnU-Net's prediction as the reference, ours, and where they differ
# (1 = only nnU-Net labelled it, 2 = only we did, 3 = both, with different labels). Move the slider;
# headless, the static copy below shows the middle slice.

# %% tags=["nbval-ignore-output"]
from IPython.display import display

from nnseg_nb.viz.inference import errors_figure, prediction_browser

case = sorted(image_cases)[0]
ours, _ = io.read_seg(our_predictions / f"{case}.nii.gz")
reference = io.read_seg(nnunet_predictions / f"{case}.nii.gz")[0] if nnunet_predictions is not None else ours
browser = prediction_browser(image[0], reference, ours, spacing=props["spacing"])
display(browser)

# %%
browser.show_static()

# %%
show_figure(errors_figure(image[0], reference, ours, props["spacing"], n=4), dpi=70)

# %% [markdown]
# ## Summary
#
# - A model folder is plans + dataset.json + one checkpoint per fold; the checkpoint holds the weights,
#   the training log and the mirror axes for test-time augmentation.
# - nnseg_nb opens nnU-Net's folders (and writes the same layout when it trains), so a model trained
#   with either predicts with either.
# - Our prediction with nnU-Net's model agrees with nnU-Net's own, up to floating-point rounding.
#
# Your own model: `model = "/path/to/nnUNet_results/DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres"`,
# `images = "/path/to/imagesTs"`, and optionally `nnunet_predictions` with what nnU-Net predicted for them.

# %%
notebook.write_results(out_dir, {
    "profile": profile,
    "model": f"{info.dataset}/{model_folder.name}",
    "folds": [str(f) for f in loaded.folds],
    "epochs_trained": info.folds[0].epochs,
    "n_cases_predicted": len(report.written),
    "min_voxel_agreement_with_nnunet": round(min(r["agreement"] for r in agreement), 5) if agreement else None,
    "min_dice_with_nnunet": (round(min(min(r["Dice"].values()) for r in agreement), 5) if agreement else None),
    "per_case": agreement,
})
print("results written")
