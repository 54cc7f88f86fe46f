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
# # 05 · Inference and evaluation: predict unseen scans with a trained model and score the result
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/05_inference_and_evaluation.ipynb)
#
# **What you will learn**
# - how nnU-Net predicts a scan larger than its patch: overlapping tiles, weighted by a Gaussian
# - what test-time mirroring does, what it changes and what it costs
# - how a prediction goes back to the scan's own geometry, and how to browse its errors
# - how nnU-Net scores predictions (Dice, IoU per class; `summary.json`), plus HD95 and surface Dice
#
# It runs in a few minutes on a CPU (`profile = "quick"`: it first trains a tiny 2D model of the demo
# brain scans); on a GPU it uses notebook 04's `3d_fullres` model, trained with nnU-Net's full settings.

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
out_dir = "runs/05_inference_and_evaluation"  # results.json, predictions and summary.json go here
dataset = "Dataset901_BrainTissue"  # the demo brain MRI (gray and white matter); its 4 test scans have labels
model_folder = ""  # a trained model folder; "": quick: a tiny 2D model trained here, full: notebook 04's 3d_fullres
epochs = 0  # when this notebook trains: 0 = 5 epochs of 20 iterations (quick) or 1000 as nnU-Net (full)
fold = 0  # the fold to train / predict with
step_size = 0.5  # sliding-window step, as a fraction of the patch (nnUNetv2_predict -step_size)
num_workers = 2  # processes for planning, preprocessing and evaluation

# %%
import dataclasses
from pathlib import Path

from nnseg_nb import paths

profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # "runs/05_..." -> runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
print("profile:", profile)

# %% [markdown]
# ## 1 · A trained model
#
# Prediction needs a model folder: the plans and `dataset.json` the model was trained with and one
# checkpoint per fold (notebook 08 opens one in detail). On a GPU this notebook uses the `3d_fullres`
# model that notebook 04 trains with nnU-Net's settings (and trains it here if it is missing: hours).
# A 3D model predicts a scan with hundreds of network passes, too slow for a shared CPU, so on a CPU
# this notebook trains a tiny 2D model in a few minutes (its results then do not depend on which other
# notebook ran before): a custom configuration `2d_tiny` (4 stages of 8-64 features, 64×64 patches;
# 100 batches at a learning rate of 0.03 rather than nnU-Net's 0.01, which suits 250 000) that inherits
# everything else, the preprocessed data included, from `2d`. It lives in its own plans file,
# `nnsegTinyPlans.json`, next to nnU-Net's, as custom plans do in nnU-Net. Everything below works the
# same in 2D and 3D.

# %%
from nnseg_nb import demo_data, planning, preprocessing, training
from nnseg_nb.plans import ConfigurationPlan, save_plans

folders = demo_data.build_demo_datasets(paths.raw_root(), progress=False, only=[dataset])
planned = planning.plan_dataset(dataset, num_workers=num_workers, progress=False)  # = `nnseg-nb plan`
dataset_name = planned.plans.dataset_name
if profile == "quick":
    base, configuration, plans_name = "2d", "2d_tiny", "nnsegTinyPlans"
    settings = dataclasses.replace(training.NNUNET, num_epochs=epochs or 5, iterations_per_epoch=20,
                                   val_iterations=2, initial_lr=0.03, num_workers=0, seed=seed, progress=False)
else:
    base, configuration, plans_name = "3d_fullres", "3d_fullres", "nnUNetPlans"
    settings = dataclasses.replace(training.NNUNET, num_epochs=epochs or 1000, seed=seed)
if not model_folder:
    model_folder = training.model_folder(dataset_name, "nnUNetTrainer", plans_name, configuration,
                                         paths.results_root())
model_folder = Path(model_folder)
print(f"{dataset_name}, model {model_folder.name}")

# %% tags=["nbval-ignore-output"]
if not (model_folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():  # training warns on stderr
    plans = planned.plans
    if configuration == "2d_tiny":
        architecture = dataclasses.replace(plans.configuration("2d").architecture)
        architecture.arch_kwargs = {**architecture.arch_kwargs, "n_stages": 4, "features_per_stage": [8, 16, 32, 64],
                                    "kernel_sizes": [[3, 3]] * 4, "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
                                    "n_conv_per_stage": [2] * 4, "n_conv_per_stage_decoder": [2] * 3}
        plans = dataclasses.replace(plans, plans_name=plans_name, configurations={
            **plans.configurations,
            "2d_tiny": ConfigurationPlan(inherits_from="2d", patch_size=[64, 64], batch_size=8,
                                         architecture=architecture)})
        save_plans(plans, paths.preprocessed_root() / dataset_name / f"{plans_name}.json")
    preprocessing.preprocess_dataset(dataset_name, base, plans=plans, num_workers=num_workers,
                                     progress=False)  # 2d_tiny reads the data of 2d
    result = training.train(dataset_name, configuration, fold, settings, plans_name=plans_name,
                            continue_training=True)  # resumes an interrupted run; a finished one is kept
print("model in", paths.display(model_folder))  # trained above, or found trained (then no training ran)

# %%
print("model folder:", model_folder.name)

# %%
from nnseg_nb.inference import load_model

model = load_model(model_folder, folds=[fold], device=device)
plan = model.configuration
print(f"{model.configuration_name}: patch {plan.patch_size}, spacing {[round(s, 3) for s in plan.spacing]}, "
      f"batch {plan.batch_size}; mirror axes {model.mirror_axes}; labels {model.dataset_json['labels']}")

# %% [markdown]
# The model's numbers below (Dice, HD95, NSD) depend on the CPU that trained it: bf16 autocast where the
# CPU computes it natively, fp32 elsewhere; nbval leaves those cells out of its comparison.
#
# ## 2 · The sliding window
#
# The network sees one patch at a time, so a whole scan is predicted tile by tile. nnU-Net (1) pads
# the preprocessed scan to at least the patch size, (2) places tiles so that neighbours overlap by at
# least half a patch (`step_size = 0.5`; the starts are spread evenly from the first voxel to the last),
# (3) weights each tile's logits by a Gaussian that is highest in the middle (sigma = patch/8), because
# a network sees least context at a patch's border, and (4) divides the sum by the summed weights.
# A 2D configuration tiles every slice of a 3D scan this way. Below, the middle slice of a test scan:
# its tiles, one tile's weight, and every voxel's sum.

# %%
from nnseg_nb import dataset as datasets
from nnseg_nb import io
import torch

from nnseg_nb.inference import compute_steps_for_sliding_window, pad_to_patch_size
from nnseg_nb.predict import preprocess_for_prediction
from nnseg_nb.viz import show_figure
from nnseg_nb.viz.inference import sliding_window_figure

raw_folder = paths.find_dataset(dataset_name)
ending = model.dataset_json["file_ending"]
test_cases = datasets.find_image_cases(raw_folder / "imagesTs", ending)
case = sorted(test_cases)[0]
image, props = io.read_case(test_cases[case])
reference, _ = io.read_seg(raw_folder / "labelsTs" / f"{case}{ending}")
data, properties = preprocess_for_prediction(model, image, props)
padded, _ = pad_to_patch_size(torch.from_numpy(data), plan.patch_size)  # zeros up to the patch, centred
spatial = padded.shape[-len(plan.patch_size):]  # a 2D configuration tiles each slice of axis 0
steps = compute_steps_for_sliding_window(spatial, plan.patch_size, step_size)
n_tiles = int(np.prod([len(s) for s in steps])) * (data.shape[1] if len(plan.patch_size) == 2 else 1)
print(f"{case}: raw {image.shape[1:]}, spacing {[round(s, 2) for s in props['spacing']]} -> preprocessed "
      f"{data.shape[1:]}, padded {tuple(padded.shape[1:])}")
print(f"tile starts per axis: {steps}")
print(f"{n_tiles} tiles; with mirroring {n_tiles * 2 ** len(model.mirror_axes)} network passes")
show_figure(sliding_window_figure(padded[0].numpy(), plan.patch_size, step_size), dpi=70)

# %% [markdown]
# The summed weights are highest where tiles overlap and lowest at the scan's corners; dividing by them
# makes every voxel a weighted mean of the tiles that contain it, dominated by the tiles that see it in
# their centre.
#
# ## 3 · Test-time mirroring
#
# The network was trained on mirrored patches, so nnU-Net also predicts every tile mirrored along each
# subset of the mirror axes (4 passes in 2D, 8 in 3D), flips each prediction back and averages the
# logits. It multiplies the compute by as much and smooths the decisions where the network was unsure.

# %% tags=["nbval-ignore-output"]
import time

from nnseg_nb.evaluation import evaluate_arrays
from nnseg_nb.export import logits_to_segmentation
from nnseg_nb.viz.inference import mirroring_figure, mirroring_logits

start = time.perf_counter()
plain, mirrored = mirroring_logits(model, data, tile_step_size=step_size)
mirroring_seconds = time.perf_counter() - start
labels = datasets.LabelInfo.from_dataset_json(model.dataset_json)
dice_by_mode = {}
for name, logits in (("one pass", plain), (f"mirrored ({2 ** len(model.mirror_axes)} passes)", mirrored)):
    seg = logits_to_segmentation(logits, properties, model.plans, model.configuration_name, model.dataset_json)
    metrics = evaluate_arrays(reference[0], seg, labels.foreground_labels, distance_metrics_on=False)
    dice_by_mode[name] = {label: metrics[label]["Dice"] for label in labels.foreground_labels}
    print(f"{name:<20} Dice " + ", ".join(f"{k}: {v:.3f}" for k, v in dice_by_mode[name].items()))
changed = (plain.argmax(0) != mirrored.argmax(0)).mean()
print(f"mirroring changes the label of {changed:.2%} of the preprocessed voxels")
show_figure(mirroring_figure(data[0], plain, mirrored), dpi=70)

# %% tags=["nbval-ignore-output"]
print(f"one pass + mirrored prediction of {case}: {mirroring_seconds:.1f} s on {device}")

# %% [markdown]
# ## 4 · Predict the test scans
#
# `predict.predict_folder` is `nnUNetv2_predict -i imagesTs -o OUT`: each scan is preprocessed with the
# model's plans, predicted by sliding window with mirroring, and exported: the logits are resampled to
# the scan's spacing, turned into labels, put back into the uncropped scan and written with its
# geometry. The command line does the same: `nnseg-nb predict -m MODEL_FOLDER -i imagesTs -o OUT`.

# %%
from nnseg_nb.predict import PredictionSettings, predict_folder

predictions = Path(out_dir) / "predictions"
report = predict_folder(model, raw_folder / "imagesTs", predictions,
                        settings=PredictionSettings(tile_step_size=step_size, num_workers=1, progress=False))
print("written:", [Path(p).name for p in report.written], " failed:", report.failed)

# %% tags=["nbval-ignore-output"]
print(f"{len(report.written)} scans in {report.seconds:.1f} s on {device} ({report.seconds / len(report.written):.1f} s each)")

# %% [markdown]
# ## 5 · Score them
#
# nnU-Net scores each case and each class by counting true and false positives and negatives: Dice =
# 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN). It writes them with their means to `summary.json`
# (`foreground_mean` averages the classes). `nnseg_nb.evaluation` writes the same file, key for key,
# plus two distance metrics in millimetres: HD95 (the 95th percentile of the distances between the two
# surfaces) and NSD (the share of both surfaces within 1 mm of the other). The command line:
# `nnseg-nb evaluate labelsTs OUT`.

# %% tags=["nbval-ignore-output"]
from IPython.display import HTML, display

from nnseg_nb.evaluation import evaluate_folders_with_dataset_json, load_summary_json
from nnseg_nb.viz.evaluation import metric_figure, metric_rows, metric_table_html

summary_file = predictions / "summary.json"
evaluate_folders_with_dataset_json(raw_folder / "labelsTs", predictions, raw_folder / "dataset.json",
                                   output_file=summary_file, num_workers=num_workers, progress=False)
summary = load_summary_json(summary_file)  # read back, as any tool would
print("summary.json keys:", sorted(summary))
print(f"foreground mean Dice {summary['foreground_mean']['Dice']:.3f}, IoU {summary['foreground_mean']['IoU']:.3f}")
for label, metrics in summary["mean"].items():
    print(f"label {label}: Dice {metrics['Dice']:.3f}, HD95 {metrics['HD95']:.2f} mm, NSD {metrics['NSD']:.3f}")
rows = metric_rows(summary)
display(HTML(metric_table_html(rows)))

# %%
show_figure(metric_figure(summary, "Dice"), dpi=70)
show_figure(metric_figure(summary, "HD95"), dpi=70)

# %% [markdown]
# ## 6 · Browse a prediction and its errors
#
# The scan with the reference, the prediction, and the errors: 1 = missed (in the reference, predicted
# background: a false negative), 2 = extra (predicted, background in the reference: a false positive),
# 3 = the wrong tissue. Move the slider; headless, the static copy below shows the middle slice. The
# worst case by mean Dice is shown.

# %% tags=["nbval-ignore-output"]
from nnseg_nb.viz.inference import errors_figure, prediction_browser

per_case = {}
for row in rows:
    per_case.setdefault(row["case"], []).append(row["Dice"])
worst = min(sorted(per_case), key=lambda c: np.nanmean(per_case[c]))
worst_image, worst_props = io.read_case(test_cases[worst])
worst_reference, _ = io.read_seg(raw_folder / "labelsTs" / f"{worst}{ending}")
worst_prediction, _ = io.read_seg(predictions / f"{worst}{ending}")
browser = prediction_browser(worst_image[0], worst_reference, worst_prediction, spacing=worst_props["spacing"])
display(browser)

# %% tags=["nbval-ignore-output"]
print(f"worst case: {worst}, mean Dice {np.nanmean(per_case[worst]):.3f}")
browser.show_static()

# %%
show_figure(errors_figure(worst_image[0], worst_reference, worst_prediction, worst_props["spacing"], n=4), dpi=70)

# %% [markdown]
# ## Summary
#
# - A scan is predicted in overlapping tiles, Gaussian-weighted, averaged over mirrored passes (and
#   over folds, when several are given), then resampled back to its own geometry.
# - `summary.json` holds nnU-Net's per-case and mean Dice/IoU; HD95 and NSD say how far the boundaries are off.
# - The tiny CPU model saw 100 batches; nnU-Net trains 250 000. Run the notebook on a GPU
#   (`profile = "full"`) to evaluate the 3D model of notebook 04, trained with nnU-Net's 1000 epochs.
#
# Next: notebook 06 picks the best configuration and the postprocessing on cross-validation results.

# %%
notebook.write_results(out_dir, {
    "profile": profile,
    "dataset": dataset_name,
    "model": model_folder.name,
    "n_test_cases": len(report.written),
    "foreground_mean_dice": round(summary["foreground_mean"]["Dice"], 4),
    "mean_dice_per_label": {k: round(v["Dice"], 4) for k, v in summary["mean"].items()},
    "mean_hd95_mm_per_label": {k: round(v["HD95"], 3) for k, v in summary["mean"].items()},
    "tiles_per_case": n_tiles,
    "dice_with_and_without_mirroring": dice_by_mode,
    "timing": {"device": str(device), "predict_seconds": round(report.seconds, 2),
               "mirroring_case_seconds": round(mirroring_seconds, 2)},
})
print("results written")
