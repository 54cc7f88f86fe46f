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
# # 00 · Quickstart: nnU-Net's whole pipeline on a demo brain, in minutes
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/00_quickstart.ipynb)
#
# **What you will learn**
# - the seven steps of nnU-Net: data, verify, plan, preprocess, train, predict, evaluate
# - the one library call (and the `nnseg-nb` command) behind each step, with a picture of its result
# - where each step leaves its files, in nnU-Net's own folder layout
#
# It runs in a few minutes on a CPU (`profile = "quick"`: a small network, a few epochs); on a GPU it
# trains nnU-Net's own `3d_fullres`. Notebooks 01 to 07 explain each step in depth.

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
seed = 0  # one seed for Python, numpy and torch
out_dir = "runs/00_quickstart"  # results.json, figures and the trained model go here
dataset = "Dataset901_BrainTissue"  # the demo brain: T1-like MRI, gray and white matter
fold = 0  # the cross-validation fold to train; its validation cases are predicted and scored
epochs = 0  # 0: 6 (quick) or 100 (full); nnU-Net trains 1000
num_workers = 2  # processes for fingerprint, preprocessing and patch loading

# %%
profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
quick = profile == "quick"
epochs = epochs or (6 if quick else 100)
print("profile:", profile)

# %% [markdown]
# ## 1 · Data
#
# nnU-Net reads a dataset from `nnUNet_raw/DatasetXXX_Name/`: `imagesTr/{case}_0000.nii.gz` (one
# file per channel), `labelsTr/{case}.nii.gz` and a `dataset.json` naming the channels and labels.
# The demo datasets are written there in a few seconds (`nnseg-nb demo-data`); without the
# environment variables the roots are under `./nnseg_data/`.

# %%
import numpy as np
from matplotlib.figure import Figure

from nnseg_nb import dataset as datasets
from nnseg_nb import demo_data, io, paths
from nnseg_nb.viz import show_figure
from nnseg_nb.viz.overlay import overlay_rgb

demo_data.build_demo_datasets(paths.raw_root(), progress=False)
raw_folder = paths.find_dataset(dataset)
dataset_json = datasets.load_dataset_json(raw_folder)
cases = datasets.find_cases(raw_folder, dataset_json)
print(f"{raw_folder.name}: {len(cases)} cases, channels {dataset_json['channel_names']}, labels {dataset_json['labels']}")


def slice_with_most_foreground(seg):
    return int(np.argmax((seg > 0).sum(axis=(1, 2))))


def show_slices(panels, title):
    fig = Figure(figsize=(3.2 * len(panels), 3.4))
    for ax, (name, rgb) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(rgb)
        ax.set(title=name, xticks=[], yticks=[])
    fig.suptitle(title)
    fig.tight_layout()
    show_figure(fig)


first = next(iter(cases.values()))
image, props = io.read_case(first.images)
seg, _ = io.read_seg(first.label)
z = slice_with_most_foreground(seg[0] if seg.ndim == 4 else seg)
label = seg[0] if seg.ndim == 4 else seg
show_slices([("image", overlay_rgb(image[0, z])), ("labels", overlay_rgb(image[0, z], label[z]))],
            f"{first.identifier}: shape {image.shape[1:]}, spacing {[round(s, 2) for s in props['spacing']]} mm")

# %% [markdown]
# ## 2 · Verify
#
# Before any work, check the dataset: every file readable, geometry equal between image and label,
# label values declared in `dataset.json` (`nnseg-nb verify`, nnU-Net's `--verify_dataset_integrity`).

# %%
from nnseg_nb.verify import verify_dataset

report = verify_dataset(dataset, progress=False)
print("ok:", report.ok)
print(report.summary())

# %% [markdown]
# ## 3 · Plan
#
# The fingerprint (spacings, shapes, intensities) decides the plans: target spacing, patch size,
# network topology and batch size per configuration (`nnseg-nb plan`, nnU-Net's
# `nnUNetv2_plan_and_preprocess`). On a CPU we add a small configuration of our own that inherits
# everything from `3d_fullres` but the patch (32³) and the network width (8 to 64 features), as
# notebook 04 explains; on a GPU we train `3d_fullres` itself.

# %%
from nnseg_nb import planning
from nnseg_nb.plans import ConfigurationPlan, save_plans

planned = planning.plan_dataset(dataset, num_workers=num_workers, progress=False)
plans = planned.plans
architecture = plans.configuration("3d_fullres").architecture.to_json()
kwargs = architecture["arch_kwargs"]
kwargs.update(n_stages=4, features_per_stage=[8, 16, 32, 64], kernel_sizes=kwargs["kernel_sizes"][:4],
              strides=kwargs["strides"][:4], n_conv_per_stage=kwargs["n_conv_per_stage"][:4],
              n_conv_per_stage_decoder=kwargs["n_conv_per_stage_decoder"][:3])
plans.configurations["3d_quick"] = ConfigurationPlan.from_json(
    {"inherits_from": "3d_fullres", "patch_size": [32, 32, 32], "architecture": architecture})
save_plans(plans, planned.plans_file)
configuration = "3d_quick" if quick else "3d_fullres"
print("\n".join(planning.summary_lines(plans)))
print("training:", configuration)

# %% [markdown]
# ## 4 · Preprocess
#
# Every case is cropped to its nonzero region, normalized (z-score inside the brain) and resampled
# to the target spacing, then stored for fast patch loading (`nnseg-nb preprocess`). `3d_quick`
# reads the data of `3d_fullres`.

# %%
from nnseg_nb import preprocessed, preprocessing

done = preprocessing.preprocess_dataset(dataset, "3d_fullres", num_workers=num_workers, progress=False)
data_folder = done[0].folder
case_ids = preprocessed.list_cases(data_folder)
data, pre_seg, pre_props = preprocessed.load_case(data_folder, case_ids[0])
print(f"{len(case_ids)} cases in {data_folder.name}/; {case_ids[0]}: {tuple(data.shape)} after cropping and resampling")
z = slice_with_most_foreground(pre_seg[0])
show_slices([("normalized", overlay_rgb(data[0, z])),
             ("labels (-1: outside the brain)", overlay_rgb(data[0, z], np.maximum(pre_seg[0, z], 0)))],
            f"{case_ids[0]} preprocessed: mean {float(np.mean(data[0][pre_seg[0] >= 0])):.2f} inside the brain")

# %% [markdown]
# ## 5 · Train
#
# One fold of the 5-fold cross-validation (`nnseg-nb train DATASET CONFIGURATION FOLD`, nnU-Net's
# `nnUNetv2_train`): random patches, augmented, Dice + cross-entropy with deep supervision, SGD with
# the poly schedule. The curve redraws after each epoch. On a GPU, when the last epoch is done, the
# trainer predicts the fold's validation cases whole and scores them into
# `fold_0/validation/summary.json`, as nnU-Net does; the quick profile skips that
# (`validate=False`) and predicts one case below. The losses and Dice come from a CPU run and vary
# with the CPU (bf16 or fp32), so they are not checked.

# %% tags=["nbval-ignore-output"]
import dataclasses
from pathlib import Path

from nnseg_nb import training
from nnseg_nb.viz.training import LiveCurves

results = Path(out_dir) / "nnUNet_results"
model_folder = training.model_folder(raw_folder.name, "nnUNetTrainer", "nnUNetPlans", configuration, results)
settings = dataclasses.replace(
    training.NNUNET, num_epochs=epochs, iterations_per_epoch=6 if quick else 250,
    val_iterations=3 if quick else 50, seed=seed, num_workers=num_workers, progress=not quick,
    validate=not quick,
)
live = LiveCurves()
result = training.train(raw_folder.name, configuration, fold, settings, results=results, callback=live.update)
print(f"{result.epochs_done} epochs; pseudo Dice per label after the last: "
      f"{[round(d, 3) for d in result.log.dice_per_class_or_region[-1]]}")

# %%
print("model folder:", model_folder.relative_to(results))
print("fold files:", sorted(p.name for p in (model_folder / f"fold_{fold}").iterdir()
                            if not p.name.startswith("training_log_")))

# %% [markdown]
# ## 6 · Predict
#
# `predict.load_model` reads the model folder (plans, dataset.json, the fold's final checkpoint);
# `predict_image` preprocesses a raw image as in training, slides the network over it (tiles
# overlapping by half a patch, Gaussian-weighted, averaged over mirrored copies) and returns the
# label map in the image's own geometry. `nnseg-nb predict -i FOLDER -o OUT -m MODEL_FOLDER` does it
# for a folder of files. We predict a case the network did not train on: the first validation case.
# nnU-Net averages 8 mirrored copies in 3D; the quick profile predicts without mirroring (about 6x
# faster on a CPU, slightly less accurate).

# %% tags=["nbval-ignore-output"]
from nnseg_nb.predict import PredictionSettings, load_model, predict_image
from nnseg_nb.utils import load_json

validation_cases = load_json(planned.plans_file.parent / "splits_final.json")[fold]["val"]
case = cases[validation_cases[0]]
image, props = io.read_case(case.images)
reference, _ = io.read_seg(case.label)
reference = reference[0] if reference.ndim == 4 else reference
model = load_model(model_folder, [fold], device=str(device))
prediction = predict_image(model, image, props, settings=PredictionSettings(use_mirroring=not quick, progress=False))
print(f"{case.identifier}: predicted {prediction.shape}, labels {np.unique(prediction).tolist()}")

# %% [markdown]
# ## 7 · Evaluate
#
# Dice per label of this case (`evaluation.evaluate_arrays`). For a folder of predictions,
# `nnseg-nb evaluate` writes nnU-Net's `summary.json` (per case, per label, and the means); on a GPU
# the trainer has written one for the fold's validation cases. After the quick profile's few dozen
# steps the white matter is found, but the network has not yet learned that the flat region around
# the brain (zero after normalization, like the mean inside) is background, and calls it gray
# matter: its Dice stays low until a longer training, as on the GPU profile.

# %% tags=["nbval-ignore-output"]
from nnseg_nb.evaluation import evaluate_arrays

labels = {name: value for name, value in dataset_json["labels"].items() if value > 0}
metrics = evaluate_arrays(reference, prediction, list(labels.values()), spacing=props["spacing"],
                          distance_metrics_on=False)
case_dice = {name: round(metrics[value]["Dice"], 3) for name, value in labels.items()}
print(f"{case.identifier} Dice:", case_dice)
results_json = {"profile": profile, "configuration": configuration, "epochs": result.epochs_done,
                "case": case.identifier, "case_mean_dice": round(float(np.mean(list(case_dice.values()))), 4),
                "case_dice": case_dice}
summary_file = model_folder / f"fold_{fold}" / "validation" / "summary.json"
if summary_file.is_file():  # written by the trainer when settings.validate
    summary = load_json(summary_file)
    results_json["validation_mean_dice"] = round(summary["foreground_mean"]["Dice"], 4)
    print(f"fold {fold} validation ({len(validation_cases)} cases), mean Dice:",
          {name: round(summary["mean"][str(value)]["Dice"], 3) for name, value in labels.items()})

# %% [markdown]
# ## 8 · Browse the prediction
#
# The validation case slice by slice: the image, the reference and the prediction over it (label 1 =
# gray matter, 2 = white matter), and the errors (1 = missed: in the reference, predicted background;
# 2 = extra: predicted where the reference has background; 3 = the wrong tissue). Move the `slice`
# slider or switch the axis; before the notebook runs (on GitHub, in Colab) the picture shows the
# slice with the most brain. Notebook 05 evaluates a whole test set and browses its worst case.

# %% tags=["nbval-ignore-output"]
from IPython.display import display

from nnseg_nb.viz.inference import prediction_browser

browser = prediction_browser(image[0], reference, prediction, spacing=props["spacing"], size=220)
browser.slice.value = slice_with_most_foreground(reference)
display(browser)

# %%
results_file = notebook.write_results(out_dir, results_json)  # the headline figures, read by `nnseg-nb demo`
print("wrote", paths.display(results_file))

# %% [markdown]
# ## Next
#
# - **01-03**: the data, the fingerprint and plans, preprocessing and augmentation, step by step
# - **04**: the network, the loss, the schedule, interrupting and resuming a training
# - **07**: nnU-Net as a baseline: sweeping parameters over a notebook, locally or on a cluster
#
# The same pipeline from a terminal:
#
# ```bash
# nnseg-nb demo-data
# nnseg-nb verify Dataset901_BrainTissue
# nnseg-nb plan Dataset901_BrainTissue
# nnseg-nb preprocess Dataset901_BrainTissue -c 3d_fullres
# nnseg-nb train Dataset901_BrainTissue 3d_fullres 0
# nnseg-nb predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d Dataset901_BrainTissue -c 3d_fullres -f 0
# ```
