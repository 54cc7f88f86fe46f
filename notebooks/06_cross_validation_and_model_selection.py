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
# # 06 · Cross-validation and model selection: five folds, the best configuration, postprocessing, ensembles
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/06_cross_validation_and_model_selection.ipynb)
#
# **What you will learn**
# - how nnU-Net trains five folds per configuration, and how a cross-validation run resumes
# - how the fold validations are merged into one cross-validation result (`crossval_results_folds_0_1_2_3_4`)
# - how `find_best_configuration` ranks every configuration and every pair ensemble on CV Dice
# - how the largest-component postprocessing is decided: kept only where the Dice strictly improves
# - what the recommended inference looks like, and running it on new images
#
# It runs in about two minutes on a CPU (`profile = "quick"`: tiny networks, a few iterations per fold);
# on a GPU it trains nnU-Net's own 2d network with its full schedule (hours).

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

from nnseg_nb import notebook, paths

print(notebook.device_summary())

# %% tags=["parameters"]
profile = "auto"  # "quick" (CPU, minutes), "full" (nnU-Net's settings), "auto": full when a GPU is present
seed = 0  # one seed for Python, numpy and torch
out_dir = "runs/06_cross_validation_and_model_selection"  # results.json and figures go here
dataset = "Dataset904_Shapes2D"  # 2D demo set: textured ellipses (1) and triangles (2)
folds = [0, 1, 2, 3, 4]  # nnU-Net's five folds
epochs = 0  # per fold; 0: 4 (quick) or 1000 (full, nnU-Net's)
iterations_per_epoch = 0  # 0: 5 (quick) or 250 (full)
jobs = 1  # folds trained at once (separate processes; one GPU each where there are several)

# %%
profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
epochs = epochs or (4 if profile == "quick" else 1000)
iterations_per_epoch = iterations_per_epoch or (5 if profile == "quick" else 250)
print("profile:", profile, f"- {epochs} epochs x {iterations_per_epoch} iterations per fold")

# %% [markdown]
# ## Two configurations to compare
#
# Shapes2D is a 2D dataset, so nnU-Net plans one configuration, `2d`. To have two candidates we add a
# custom one the way nnU-Net users do: a new entry in the plans that `inherits_from` `2d` and changes one
# thing, here the patch size (64 x 64 instead of the whole 128 x 128 image). Both read the same
# preprocessed data. The quick profile shrinks both networks (4x fewer features) so that ten trainings fit
# in two minutes on a CPU; the full profile keeps nnU-Net's network.

# %%
import dataclasses
from pathlib import Path

import torch

from nnseg_nb import crossval, demo_data, io, model_selection, paths, planning, preprocessing
from nnseg_nb.training import NNUNET
from nnseg_nb.utils import atomic_write_json, load_json
from nnseg_nb.viz import show_figure

if profile == "quick":
    torch.set_num_threads(1)  # tiny networks: one thread is faster than two fighting over a busy CPU
demo_data.build_demo_datasets(paths.raw_root(), only=[dataset], progress=False)
planned = planning.plan_dataset(dataset, num_workers=2, progress=False)  # = `nnseg-nb plan`
dataset_name = planned.plans_file.parent.name

plans_json = load_json(planned.plans_file)
architecture = plans_json["configurations"]["2d"]["architecture"]
if profile == "quick":
    features = [max(4, f // 4) for f in architecture["arch_kwargs"]["features_per_stage"]]
    architecture = {**architecture, "arch_kwargs": {**architecture["arch_kwargs"], "features_per_stage": features}}
base = "2d_quick" if profile == "quick" else "2d"
configurations = [base, f"{base}_patch64"]
if profile == "quick":
    plans_json["configurations"]["2d_quick"] = {"inherits_from": "2d", "architecture": architecture}
plans_json["configurations"][f"{base}_patch64"] = {"inherits_from": base, "patch_size": [64, 64]}
atomic_write_json(planned.plans_file, plans_json)
preprocessing.preprocess_dataset(dataset_name, ["2d"], num_workers=2, progress=False)  # = `nnseg-nb preprocess`
print(dataset_name, "configurations:", configurations)

# %% [markdown]
# ## Five folds per configuration
#
# `crossval.cross_validate` is what `nnseg-nb cv DATASET -c ...` runs: for every configuration and fold it
# trains the fold (`training.train`, nnU-Net's `nnUNetv2_train DATASET CONFIG FOLD --npz`), predicts the
# fold's validation cases with the sliding window and scores them (`fold_k/validation/summary.json`). The
# `.npz` probabilities are kept: ensembling needs them. A fold that is already done is skipped, an
# interrupted one continues from its last checkpoint, so the same call (or command) resumes a run.
# Then each configuration's five validation folders are merged into `crossval_results_folds_0_1_2_3_4`
# and scored together: that is the number nnU-Net compares configurations on.

# %% tags=["nbval-ignore-output"]
settings = dataclasses.replace(NNUNET, num_epochs=epochs, iterations_per_epoch=iterations_per_epoch,
                               val_iterations=2 if profile == "quick" else 50, seed=seed,
                               num_workers=0 if profile == "quick" else 2, progress=False)
scoring = 1 if profile == "quick" else None  # processes scoring validations: one is faster for 4 small cases
cv = crossval.cross_validate(dataset_name, configurations, folds, settings, jobs=jobs, num_workers=scoring)
print(f"{len(cv.outcomes)} folds in {cv.seconds:.0f} s")

# %% [markdown]
# Run it again and every fold is skipped: the run is resumable.

# %% tags=["nbval-ignore-output"]
again = crossval.cross_validate(dataset_name, configurations, folds, settings, num_workers=scoring)

# %% [markdown]
# ## The cross-validation table
#
# Each dot is one fold's validation Dice (foreground mean over ellipse and triangle), the box their
# spread. The folds' validation sets are disjoint and together cover every training case, so the merged
# score is computed over all 20 cases at once.

# %%
from IPython.display import HTML, display

from nnseg_nb.viz import crossval as cv_viz
from nnseg_nb.viz.evaluation import metric_table_html

results_folder = paths.results_root() / dataset_name
table = cv_viz.fold_dice_table(results_folder, configurations, folds)
rows = cv_viz.cv_rows(table)
for row, configuration in zip(rows, configurations):
    row["merged CV Dice"] = cv.summaries[configuration]["foreground_mean"]["Dice"]
display(HTML(metric_table_html(rows)))
show_figure(cv_viz.cv_dice_figure(table))

# %% [markdown]
# ## The best configuration or pair ensemble
#
# `model_selection.find_best_configuration` (`nnseg-nb find-best-configuration`, nnU-Net's
# `nnUNetv2_find_best_configuration`) scores each configuration's merged CV predictions, then ensembles
# every pair by averaging their fold `.npz` probabilities and scores that too. The best foreground-mean Dice
# wins (the first one on a tie). It then decides the postprocessing on the winner and writes
# `inference_information.json` and `inference_instructions.txt`.

# %%
models = [model_selection.TrainedModel(c) for c in configurations]
info = model_selection.find_best_configuration(dataset_name, models, folds=folds, num_workers=scoring,
                                               progress=False)
best = info["best_model_or_ensemble"]
for key, dice in info["all_results"].items():
    print(f"{dice:.4f}  {key}")
print("selected:", [m["configuration"] for m in best["selected_model_or_models"]])
for gain in cv_viz.ensemble_gains(info["all_results"]):
    print(f"ensemble {gain['ensemble']}: {gain['dice']:.4f}, {gain['gain']:+.4f} over its better member")
show_figure(cv_viz.ensemble_figure(info["all_results"]))

# %% [markdown]
# ## Postprocessing: keep only the largest component?
#
# nnU-Net tries removing all but the largest connected component, first for all foreground as one object
# (kept only if the foreground-mean Dice strictly improves and no class gets worse), then per class (kept if
# that class's Dice strictly improves). A dataset with several objects of a class per image, like this
# one, usually loses from it; one organ per scan usually gains. The decision is in `postprocessing.json`.

# %%
from nnseg_nb.postprocessing import remove_all_but_largest_component
from nnseg_nb.viz.evaluation import postprocessing_figure

source = Path(best["postprocessing_file"]).parent
record = load_json(source / "postprocessing.json")
print("accepted operations:", record["postprocessing_kwargs"] or "none")
print(f"CV Dice before {best['result_on_crossval_pre_pp']:.4f}, after {best['result_on_crossval_post_pp']:.4f}")
show_figure(postprocessing_figure(record))

# %% [markdown]
# What the all-foreground candidate does to one case: the case where it removes the most voxels. Magenta
# marks what it would set to background; whether that hurts depends on whether those voxels were a second
# real object or a stray false positive.

# %%
dataset_json = load_json(source / "dataset.json")
ending = dataset_json["file_ending"]
removed_voxels = {}
for path in sorted(source.glob(f"*{ending}")):
    seg = io.read_seg(path)[0][0]
    removed_voxels[path.name] = int(((seg > 0) & (remove_all_but_largest_component(seg, [1, 2]) == 0)).sum())
case_file = max(removed_voxels, key=removed_voxels.get)
case = case_file[: -len(ending)]
before = io.read_seg(source / case_file)[0][0]
after = remove_all_but_largest_component(before, [1, 2])
reference = io.read_seg(paths.raw_root() / dataset_name / "labelsTr" / case_file)[0][0]
image = io.read_image(paths.raw_root() / dataset_name / "imagesTr" / f"{case}_0000{ending}")[0][0]
print(f"{case}: {removed_voxels[case_file]} voxels removed by the all-foreground candidate")
show_figure(cv_viz.removed_component_figure(image, before, after, reference, title=case))

# %% [markdown]
# ## The recommended inference
#
# `inference_instructions.txt` holds the commands nnU-Net would run on new images (nnU-Net's own command
# names: these files work with nnunetv2 too). Below, the same steps with nnseg_nb on the test images:
# predict with every fold of the selected model(s), ensemble if a pair won, apply the postprocessing.

# %%
# nnU-Net writes absolute paths into the instructions; shown here relative to the project folder
print((results_folder / "inference_instructions.txt").read_text().replace(str(paths.project_root()) + "/", ""))

# %% tags=["nbval-ignore-output"]
from nnseg_nb.ensemble import ensemble_folders
from nnseg_nb.inference import load_model
from nnseg_nb.postprocessing import apply_postprocessing
from nnseg_nb.predict import PredictionSettings, predict_folder

images = paths.raw_root() / dataset_name / "imagesTs"
prediction_root = Path(out_dir) / "predictions"
selected = best["selected_model_or_models"]
outputs = []
for member in selected:
    folder = results_folder / f"{member['trainer']}__{member['plans_identifier']}__{member['configuration']}"
    output = prediction_root / member["configuration"]
    predict_settings = PredictionSettings(save_probabilities=len(selected) > 1, progress=False)
    predict_folder(load_model(folder, folds, device=device), images, output, settings=predict_settings)
    outputs.append(output)
final = outputs[0]
if len(selected) > 1:
    final = prediction_root / "ensemble"
    ensemble_folders(outputs, final, dataset_json=source / "dataset.json", progress=False)
postprocessed = apply_postprocessing(final, prediction_root / "postprocessed", best["postprocessing_file"],
                                     ending, progress=False)
print(len(postprocessed), "test images predicted ->", prediction_root / "postprocessed")

# %%
from nnseg_nb.viz.overlay import overlay_rgb
from matplotlib.figure import Figure

first = sorted(postprocessed)[0]
test_image = io.read_image(images / f"{Path(first).name[: -len(ending)]}_0000{ending}")[0][0, 0]
test_seg = io.read_seg(first)[0][0, 0]
figure = Figure(figsize=(3.2, 3.4), layout="constrained")
axes = figure.add_subplot()
axes.imshow(overlay_rgb(test_image, test_seg), interpolation="nearest")
axes.set_title(Path(first).name, fontsize=9)
axes.set_axis_off()
show_figure(figure)

# %% [markdown]
# ## Summary
#
# - Cross-validation trains each configuration on five folds; the merged validations give one CV Dice per
#   configuration, computed over every training case.
# - The best configuration or pair ensemble is chosen on that number; ensembling averages probabilities.
# - Largest-component postprocessing is kept only where it strictly helps the CV Dice.
# - `inference_instructions.txt` says what to run on new images; nnseg_nb runs the same steps.

# %%
notebook.write_results(out_dir, {
    "profile": profile,
    "dataset": dataset_name,
    "configurations": configurations,
    "folds": list(folds),
    "epochs_per_fold": epochs,
    "cv_dice": {c: round(cv.summaries[c]["foreground_mean"]["Dice"], 4) for c in configurations},
    "fold_dice": {c: {str(f): round(v, 4) for f, v in table[c].items()} for c in configurations},
    "best": "+".join(m["configuration"] for m in selected),
    "best_cv_dice": round(best["result_on_crossval_pre_pp"], 4),
    "best_cv_dice_postprocessed": round(best["result_on_crossval_post_pp"], 4),
    "postprocessing_operations": len(record["postprocessing_kwargs"]),
    "cv_seconds": round(cv.seconds, 1),
})
print("results written")
