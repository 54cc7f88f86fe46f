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
# # 07 · Experiments: nnU-Net as a baseline, a parameter sweep over a notebook
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/07_experiments.ipynb)
#
# **What you will learn**
# - how a researcher uses nnU-Net as a baseline: change one thing, keep the rest of nnU-Net as it is
# - how to run a guided notebook headless with other parameters (papermill, through `nnseg_nb.runner`)
# - how to sweep a grid of parameters over notebook 04 and collect every run's `results.json` in one table
# - how to compare the runs: a table, a plot of the final pseudo Dice, the training curves side by side
# - how the same grid runs on a cluster, one independent job per grid point (`docs/slurm_array.sh`)
#
# It runs in a few minutes on a CPU (`profile = "quick"`: four tiny trainings); on a GPU the grid
# trains nnU-Net's `3d_fullres` and a smaller variant for longer.

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
seed = 0  # the same seed for every run: the runs differ only in the swept parameters
out_dir = "runs/07_experiments"  # results.json, summary.csv and the sweep's run folders go here
dataset = "Dataset901_BrainTissue"  # the demo brain, trained by notebook 04
workers = 1  # runs at a time, one kernel each (on a machine with several GPUs: one per GPU)

# %%
profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
print("profile:", profile)

# %% [markdown]
# ## A baseline and a question
#
# nnU-Net is a strong baseline because it fixes everything but the data: a method paper changes one
# thing (the network, the loss, the schedule) and compares against nnU-Net trained the same way on
# the same folds. Notebook 04 is such an experiment in a file: its `parameters` cell lists what can be
# changed, and every run writes its headline figures to `results.json`. Here we ask a small question
# on the demo brain: how do the pseudo Dice and the training time change with the **width of the
# network** (the features of the first stage of notebook 04's `3d_quick`) and the **number of
# training steps per epoch**?
#
# First the data, planned and preprocessed once, here; the runs find it through nnU-Net's
# environment variables (`nnUNet_raw`, `nnUNet_preprocessed`) instead of preparing their own. Each
# run writes its own `3d_quick` into the plans, so the sweep gets a copy of the preprocessed folder
# (a few MB) and the plans that other notebooks use stay as they are.

# %%
import shutil
from pathlib import Path

from nnseg_nb import demo_data, paths, planning, preprocessing, runner

demo_data.build_demo_datasets(paths.raw_root(), progress=False)
planned = planning.plan_dataset(dataset, num_workers=2, progress=False)
preprocessing.preprocess_dataset(dataset, "3d_fullres", num_workers=2, progress=False)
sweep_preprocessed = Path(out_dir).resolve() / "nnUNet_preprocessed"
shutil.copytree(planned.plans_file.parent, sweep_preprocessed / planned.plans_file.parent.name, dirs_exist_ok=True)
data_env = {"nnUNet_raw": str(paths.raw_root().resolve()), "nnUNet_preprocessed": str(sweep_preprocessed)}

# %% [markdown]
# What notebook 04 lets us change (`runner.notebook_parameters` reads its `parameters` cell, as
# `papermill --help-notebook` does):

# %%
training_notebook = runner.notebooks_folder() / "04_training.py"
for name, parameter in runner.notebook_parameters(training_notebook).items():
    print(f"{name:<22} {parameter['default']!r:<26} {parameter['help']}")

# %% [markdown]
# ## The sweep
#
# `runner.run_batch` runs the notebook once per point of the grid (the cartesian product of the
# lists), each in a fresh kernel through papermill, into its own folder
# `<out_dir>/sweep/<parameter slug>/` with the executed notebook, `status.json`, `results.json` and,
# under it, the trained model. `nnseg-nb batch notebooks/04_training.py --grid quick_features=4,8
# --grid iterations_per_epoch=2,4 -p epochs 2` is the same from a terminal. A failed run does not
# stop the batch: it becomes a row with `status = "error"` and the cell and error that stopped it.
#
# Quick profile: 2 widths x 2 step counts, 2 epochs each (about a minute of CPU per run). Full
# profile: nnU-Net's `3d_fullres` against the small `3d_quick`, for 50 and 150 epochs of 250 steps.
# The runs share the sweep's plans file, to which notebook 04 writes its `3d_quick`: keep
# `workers = 1` (one run after the other) when the grid varies `quick_features`.

# %%
if profile == "quick":
    grid = {"quick_features": [4, 8], "iterations_per_epoch": [2, 4]}
    fixed = {"profile": "quick", "seed": seed, "epochs": 2}
else:
    grid = {"configuration": ["3d_quick", "3d_fullres"], "epochs": [50, 150]}
    fixed = {"profile": "full", "seed": seed}
points = runner.expand_grid(grid)
print(f"{len(points)} runs of {training_notebook.name}, each with {fixed}:")
for point in points:
    print("  ", runner.parameter_slug(point))

# %% tags=["nbval-ignore-output"]
sweep_root = Path(out_dir).resolve()


def progress(row):
    print(f"{row['run']}: {row['status']} in {row['duration_s']:.0f} s, "
          f"final pseudo Dice {row.get('final_pseudo_dice')}", flush=True)


rows = runner.run_batch(training_notebook, grid, workers=workers, out_root=sweep_root, name="sweep",
                        parameters=fixed, env=data_env, on_result=progress)

# %%
print(f"{len(rows)} runs: {sum(r['status'] == 'ok' for r in rows)} ok")
print("collected in", Path(rows[0]["run_dir"]).parent.name + "/batch_results.json")
for row in rows:
    if row["status"] != "ok":
        print("failed:", row["run"], row["error"])

# %% [markdown]
# ## The runs in one table
#
# `batch_results.json` holds one flat row per run: the swept parameters, the status and duration,
# and every key of the run's `results.json`. Written out as `summary.csv`, it opens in a spreadsheet
# or `pandas.read_csv`. The numbers below come from short CPU runs: their pseudo Dice depends on the
# CPU (bf16 or fp32), so they are shown, not checked.

# %%
import csv

from nnseg_nb.utils import load_json

batch = load_json(sweep_root / "sweep" / "batch_results.json")
columns = [*grid, "status", "duration_s", "epochs", "first_epoch_pseudo_dice", "final_pseudo_dice",
           "best_ema_pseudo_dice", "train_minutes"]
with open(Path(out_dir) / "summary.csv", "w", newline="") as file:
    writer = csv.DictWriter(file, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(batch)
print("summary.csv columns:", ", ".join(columns))

# %% tags=["nbval-ignore-output"]
header = "".join(f"{c[:20]:>22}" for c in columns)
print(header)
for row in batch:
    print("".join(f"{row.get(c) if not isinstance(row.get(c), float) else round(row[c], 3)!s:>22}"
                  for c in columns))

# %% [markdown]
# ## Comparing the runs
#
# Left: the final pseudo Dice against the steps per epoch, one line per width. Right: the pseudo
# Dice of every run, epoch by epoch, read back from each run's model folder
# (`viz.training.load_log`). With two epochs of a few steps the differences are mostly noise: the
# point is the workflow. The full profile's grid on a GPU answers the question properly.

# %% tags=["nbval-ignore-output"]
from matplotlib.figure import Figure

from nnseg_nb.viz import show_figure
from nnseg_nb.viz.training import load_log

swept, variant = list(grid)[1], list(grid)[0]
fig = Figure(figsize=(11, 3.6))
by_steps, curves = fig.subplots(1, 2)
for value in grid[variant]:
    done = [r for r in batch if r[variant] == value and r["status"] == "ok"]
    by_steps.plot([r[swept] for r in done], [r["final_pseudo_dice"] for r in done], "o-",
                  label=f"{variant} = {value}")
by_steps.set(xlabel=swept, ylabel="final pseudo Dice", ylim=(0, 1), title="final pseudo Dice")
by_steps.legend()
for row in batch:
    if row["status"] == "ok":
        log = load_log(Path(row["model_folder"]) / "fold_0")
        curves.plot(range(1, log.epochs + 1), log.mean_fg_dice, "o-", label=row["run"])
curves.set(xlabel="epoch", ylabel="pseudo Dice", ylim=(0, 1), title="pseudo Dice per epoch")
curves.legend(fontsize=7)
fig.tight_layout()
show_figure(fig)

# %% [markdown]
# ## The same grid on a cluster
#
# `run_batch` fans the runs out over local processes. On a cluster each grid point is an
# independent job: `docs/slurm_array.sh` is a Slurm job array whose task *i* reads line *i* of the
# grid and runs `nnseg-nb run notebooks/04_training.py -p NAME VALUE ...` (one papermill run, one
# GPU, its own run folder). Plan and preprocess once on shared storage first; collect the
# `results.json` files afterwards, as above.

# %%
script = runner.notebooks_folder().parent / "docs" / "slurm_array.sh"
print(script.read_text())

# %% tags=["nbval-ignore-output"]
best = max((r for r in batch if r["status"] == "ok"), key=lambda r: r["final_pseudo_dice"], default=None)
summary = {
    "profile": profile,
    "runs": len(batch),
    "runs_ok": sum(r["status"] == "ok" for r in batch),
    "best_run": best["run"] if best else None,
    "best_final_pseudo_dice": best["final_pseudo_dice"] if best else None,
    "sweep_minutes": round(sum(r["duration_s"] for r in batch) / 60, 2),
    "grid": grid,
}
notebook.write_results(out_dir, summary)
print(summary)
