#!/bin/bash
# A parameter sweep over a guided notebook as a Slurm job array: one grid point per array task,
# each an independent papermill run (`nnseg-nb run`) with its own kernel, GPU and run folder.
# It is the cluster form of `nnseg-nb batch` (notebook 07 runs the same grid locally).
#
#   sbatch docs/slurm_array.sh                         # submits GRID below: 4 tasks, 0-3
#
# Before submitting: plan and preprocess once on shared storage, so the tasks only train:
#   export nnUNet_raw=/shared/nnseg_data/raw nnUNet_preprocessed=/shared/nnseg_data/preprocessed
#   nnseg-nb demo-data && nnseg-nb plan Dataset901_BrainTissue
#   nnseg-nb preprocess Dataset901_BrainTissue -c 3d_fullres
# (every task adds the same 3d_quick configuration to the plans, with an atomic write; a sweep over
# quick_features would have tasks rewrite that entry with different values, so run such a sweep with
# `nnseg-nb batch -j 1` or give each task its own nnUNet_preprocessed.)
#
#SBATCH --job-name=nnseg-sweep
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=runs/slurm/%x_%A_%a.log

set -euo pipefail

NOTEBOOK=notebooks/04_training.py
SWEEP=runs/sweep_04_training
# The grid, one line per task: NAME VALUE pairs given to the notebook's parameters cell.
GRID=(
    "configuration 3d_quick   epochs 50"
    "configuration 3d_quick   epochs 150"
    "configuration 3d_fullres epochs 50"
    "configuration 3d_fullres epochs 150"
)

read -r -a pairs <<< "${GRID[$SLURM_ARRAY_TASK_ID]}"
args=()
slug=""
for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    args+=(-p "${pairs[i]}" "${pairs[i + 1]}")
    slug+="${slug:+_}${pairs[i]}=${pairs[i + 1]}"
done
mkdir -p "$SWEEP/$slug" runs/slurm

# Each task: its own run folder (executed.ipynb, results.json, the trained model under it) and the
# seed fixed, so a task that is re-queued repeats its run. out_dir defaults to the run folder.
nnseg-nb run "$NOTEBOOK" -o "$SWEEP/$slug/executed.ipynb" -p profile full -p seed 0 "${args[@]}"

# Collect afterwards (on the login node), as notebook 07 does with batch_results.json:
#   for f in runs/sweep_04_training/*/results.json; do echo "$f: $(cat "$f")"; done
