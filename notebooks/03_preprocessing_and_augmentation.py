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
# # 03 · Preprocessing and augmentation: from raw scans to the patches the network trains on
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/03_preprocessing_and_augmentation.ipynb)
#
# **What you will learn**
# - how nnU-Net crops each scan to its nonzero region, and why background outside it gets the label -1
# - its normalization schemes: z-score (with or without the nonzero mask) for MRI, clip-and-standardize for CT
# - how it resamples thick-slice scans: cubic in-plane, nearest neighbour along the slice axis
# - what a preprocessed case on disk holds, and how the loader uses it to force a third of each batch onto foreground
# - what nnU-Net's training augmentation does to one patch, and the targets of deep supervision
#
# It runs in a few minutes on a CPU (`profile = "quick"`); on a GPU it uses nnU-Net's full settings.

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
out_dir = "runs/03_preprocessing_and_augmentation"  # results.json and figures go here
dataset = "Dataset902_AnisoSynth"  # the demo set with thick slices (half its scans are zero outside the body)
configuration = "3d_fullres"  # the configuration to preprocess and sample patches from
num_workers = 2  # preprocessing processes (nnU-Net's -np)
gallery_draws = 11  # random augmentations of one patch to show
timed_batches = 0  # batches timed for the augmentation throughput; 0: 10 (quick) or 50 (full)

# %%
profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
if timed_batches == 0:
    timed_batches = 10 if profile == "quick" else 50
print("profile:", profile)

# %% [markdown]
# ## The data, its fingerprint and its plans
#
# The demo datasets are built once (a few seconds) into the raw root. Notebook 01 looked at the
# fingerprint and notebook 02 at the planner; here we only need their results: the plans say, per
# configuration, the target spacing, the normalization scheme of each channel and how to resample.
# `planning.plan_dataset` writes both to the dataset's preprocessed folder: it is what `nnseg-nb plan`
# runs, so this folder is the one the command would make.

# %%
from pathlib import Path

import torch

from nnseg_nb import augment, dataset as datasets, demo_data, io, loader, network, paths, planning, preprocessed, preprocessing
from nnseg_nb.fingerprint import ensure_fingerprint, load_fingerprint
from nnseg_nb.viz import show_figure

folders = demo_data.build_demo_datasets(paths.raw_root(), progress=False)
print("demo datasets:", ", ".join(folders))

raw_folder = paths.find_dataset(dataset)
dataset_name = raw_folder.name
dataset_json = datasets.load_dataset_json(raw_folder)
cases = datasets.find_cases(raw_folder, dataset_json)
planned = planning.plan_dataset(dataset_name, num_workers=num_workers, progress=False)  # = `nnseg-nb plan`
plans, fingerprint = planned.plans, load_fingerprint(planned.fingerprint_file)
print(f"{dataset_name}: {len(cases)} training cases, channels {dataset_json['channel_names']}, "
      f"labels {dataset_json['labels']}")
print("\n".join(planning.summary_lines(plans)))

# %%
plan = plans.configuration(configuration)
print("transpose_forward:", plans.transpose_forward)
print("target spacing (mm):", [round(s, 3) for s in plan.spacing])
print("normalization:", plan.normalization_schemes, " use_mask_for_norm:", plan.use_mask_for_norm)
print("median relative size after cropping:", round(fingerprint["median_relative_size_after_cropping"], 3))
print("resampling of images:", plan.resampling_fn_data, plan.resampling_fn_data_kwargs)
print("resampling of labels:", plan.resampling_fn_seg, plan.resampling_fn_seg_kwargs)

# %% [markdown]
# ## 1 · Crop to the nonzero region
#
# Some scanners write exact zeros outside the body. nnU-Net crops every case to the bounding box of
# the voxels where any channel is nonzero (holes filled), which saves memory and compute. Inside the
# box, background voxels outside that mask get the label **-1**: normalization can ignore them, and
# augmentation keeps them apart from the background inside the body (they become 0 right before the
# loss). Half of this dataset's scans are zero outside the body; the others have noise everywhere and
# are not cropped at all.

# %%
print(f"{'case':<14} {'shape':<15} {'cropped':<15} {'kept':>5}  bbox (half-open, per axis)")
raw_cases = {}
for name, case in cases.items():
    data, props = io.read_case(case.images)
    seg, _ = io.read_seg(case.label)
    raw_cases[name] = (data, seg, props)
    cropped, cropped_seg, bbox = preprocessing.crop_to_nonzero(data, seg)
    kept = cropped[0].size / data[0].size
    print(f"{name:<14} {str(data.shape[1:]):<15} {str(cropped.shape[1:]):<15} {kept:>5.0%}  {bbox}")

# %%
crop_case = next(name for name, (data, _, _) in raw_cases.items() if (data == 0).any())
data, seg, props = raw_cases[crop_case]
cropped, cropped_seg, bbox = preprocessing.crop_to_nonzero(data, seg)
print(f"{crop_case}: {data.shape[1:]} -> {cropped.shape[1:]}, bbox {bbox}")
print("labels after cropping:", {int(k): int(v) for k, v in zip(*np.unique(cropped_seg, return_counts=True))})
print(f"voxels labelled -1 (background outside the nonzero mask): {(cropped_seg == -1).mean():.1%}")

# %% [markdown]
# ## 2 · Normalization
#
# Each channel gets the scheme the plans name for it. **ZScore** (MRI and anything not CT) subtracts
# the scan's own mean and divides by its own std. With `use_mask_for_norm`, both are computed inside
# the nonzero mask only and the outside stays 0. nnU-Net turns that on when cropping shrinks the
# median scan below 3/4 of its size (here to 0.70 of it: the plans above say `use_mask_for_norm:
# [True]`), so that the zeros of the air do not set the statistics. Below are both on one cropped
# scan. Without the mask, the zeros (light) pull the mean down and widen the std: the body ends up
# around 0.5 with a std of 0.56 instead of 0 and 1, and the air becomes a large negative value.

# %%
from nnseg_nb.viz.preprocessing import intensity_histograms

channel = cropped[0]
inside = cropped_seg[0] >= 0
whole = preprocessing.zscore_normalization(channel.copy(), cropped_seg[0], use_mask_for_norm=False)
masked = preprocessing.zscore_normalization(channel.copy(), cropped_seg[0], use_mask_for_norm=True)
for title, values in (("raw", channel), ("z-score, whole scan", whole), ("z-score inside the mask", masked)):
    print(f"{title:<24} inside the mask: mean {values[inside].mean():7.3f}, std {values[inside].std():7.3f};"
          f" outside: {np.unique(values[~inside]).round(3)[:3]}")
show_figure(intensity_histograms({"raw": channel, "z-score, whole scan": whole, "z-score inside the mask": masked},
                                 inside), dpi=70)

# %% [markdown]
# **CT** values are Hounsfield units, the same physical scale in every scan, so nnU-Net keeps that
# scale: it clips each scan to the 0.5 and 99.5 percentiles of the *foreground* intensities of the
# whole training set, then subtracts their mean and divides by their std (the fingerprint's numbers,
# not the scan's). The CT channel of Dataset903_MultiChannel shows it: air (-1000 HU) and dense bone are
# clipped, the organs keep their contrast. The T2 channel of the same dataset gets z-score.

# %%
ct_name = "Dataset903_MultiChannel"
ct_folder = paths.find_dataset(ct_name)
ct_json = datasets.load_dataset_json(ct_folder)
ct_properties = ensure_fingerprint(ct_name, num_workers=num_workers, progress=False)[
    "foreground_intensity_properties_per_channel"]["0"]
print("channels:", ct_json["channel_names"])
print("CT foreground statistics of the training set:",
      {k: round(ct_properties[k], 1) for k in ("percentile_00_5", "percentile_99_5", "mean", "std")})
ct_case = next(iter(datasets.find_cases(ct_folder, ct_json).values()))
ct_data, _ = io.read_case(ct_case.images)
ct_seg, _ = io.read_seg(ct_case.label)
hu = ct_data[0]
ct_normalized = preprocessing.ct_normalization(hu.copy(), intensity_properties=ct_properties)
low, high = ct_properties["percentile_00_5"], ct_properties["percentile_99_5"]
print(f"{ct_case.identifier}: {(hu < low).mean():.1%} of voxels clipped up to {low:g} HU, "
      f"{(hu > high).mean():.1%} down to {high:g} HU")
print(f"after: range {ct_normalized.min():.2f} .. {ct_normalized.max():.2f}, "
      f"labelled foreground mean {ct_normalized[ct_seg[0] > 0].mean():.2f}")
show_figure(intensity_histograms({"CT (HU)": hu, "CTNormalization": ct_normalized}, ct_seg[0] > 0,
                                 lines={"CT (HU)": [low, high]}, names=("labelled foreground", "the rest"),
                                 log=True), dpi=70)

# %% [markdown]
# The fingerprint's statistics come from the labelled foreground (dark); the dashed lines are the
# clipping percentiles. Counts are on a log scale: the air would hide everything else.
#
# ## 3 · Resampling thick slices separately
#
# Every case is resampled to the configuration's target spacing. This dataset's slices are 4-5 mm
# thick and 0.8-1 mm apart in-plane, more than 3 times coarser, so nnU-Net resamples the slice axis
# on its own: each slice in-plane with cubic splines (order 3), then along the slice axis with
# nearest neighbour (order 0), so that two thick slices are never blended into a made-up one. Label
# maps go the same way, in-plane label by label with linear interpolation.

# %%
from nnseg_nb.resampling import compute_new_shape, determine_do_sep_z_and_axis

resample_case = crop_case
data, seg, props = raw_cases[resample_case]
spacing = [props["spacing"][a] for a in plans.transpose_forward]
_, _, bbox = preprocessing.crop_to_nonzero(data, seg)
cropped_shape = [hi - lo for lo, hi in bbox]
separate, axis = determine_do_sep_z_and_axis(None, spacing, plan.spacing)
print(f"{resample_case}: spacing {[round(s, 3) for s in spacing]} -> {[round(s, 3) for s in plan.spacing]}")
print(f"cropped shape {cropped_shape} -> {compute_new_shape(cropped_shape, spacing, plan.spacing)}")
print(f"separate slice axis: {separate} (axis {axis}); largest/smallest spacing {max(spacing) / min(spacing):.1f}")

# %% [markdown]
# A cut across the slices shows the difference. The plan's resampling (middle) repeats the nearest
# thick slice where a new one is needed; cubic interpolation along the slice axis (right) instead
# invents slices between two that are 4.8 mm apart, and blurs the organ's edge across them.

# %%
from nnseg_nb.resampling import resample_data_or_seg_to_shape
from nnseg_nb.viz.preprocessing import through_plane_figure

cropped, _, _ = preprocessing.crop_to_nonzero(data, seg)
new_shape = compute_new_shape(cropped.shape[1:], spacing, plan.spacing)
separate_z = resample_data_or_seg_to_shape(cropped, new_shape, spacing, plan.spacing,
                                           **plan.resampling_fn_data_kwargs)  # what preprocessing does
cubic_everywhere = resample_data_or_seg_to_shape(cropped, new_shape, spacing, plan.spacing, order=3,
                                                 force_separate_z=False)
repeated = sum(np.array_equal(separate_z[0, k], separate_z[0, k - 1]) for k in range(1, new_shape[0]))
print(f"{new_shape[0]} slices from {cropped.shape[1]}: {repeated} are copies of the slice before (nearest along z)")
print(f"largest change from cubic along z instead: {np.abs(separate_z - cubic_everywhere).max():.0f} "
      f"(intensities up to {cropped.max():.0f})")
show_figure(through_plane_figure({"raw (cropped)": (cropped[0], spacing),
                                  "plan: cubic in-plane, nearest along z": (separate_z[0], plan.spacing),
                                  "cubic along every axis": (cubic_everywhere[0], plan.spacing)}), dpi=70)

# %%
from nnseg_nb.viz.preprocessing import preprocessing_figure_for_case

show_figure(preprocessing_figure_for_case(cases[resample_case], plans, configuration, dataset_json), dpi=70)

# %% [markdown]
# Both slices are drawn in millimetres, so they line up; the dashed box is the crop.
#
# ## 4 · Preprocess the dataset
#
# The same function as `nnseg-nb preprocess Dataset902_AnisoSynth -c 3d_fullres -np 2`: read, crop,
# normalize, resample every training case in worker processes and write three files per case. A case
# already preprocessed with the same plans and files is skipped.

# %%
results = preprocessing.preprocess_dataset(dataset_name, configuration, plans=plans, num_workers=num_workers,
                                           progress=False)
prepared = results[0]
case_ids = preprocessed.list_cases(prepared.folder)
print(f"{configuration}: {len(case_ids)} cases in {prepared.folder.relative_to(paths.preprocessed_root())}")

# %% tags=["nbval-ignore-output"]
print(f"{len(prepared.processed)} preprocessed now, {len(prepared.up_to_date)} up to date, in {paths.display(prepared.folder)}")

# %% [markdown]
# One case on disk: the image as float32 `(C, Z, Y, X)`, the labels as int16 `(1, Z, Y, X)` (-1
# outside the nonzero mask), a small JSON with the geometry needed to undo all of it after prediction,
# and `class_locations` (in their own `.npz`): a sample of voxel coordinates of each foreground class,
# which is how the loader finds foreground without scanning the volume. `nnseg_nb.preprocessed` reads
# these files, and nnU-Net's own preprocessed folders too.

# %%
example = case_ids[0]
print("files:", sorted(p.name for p in prepared.folder.glob(f"{example}*")))
image, labels, properties = preprocessed.load_case(prepared.folder, example)
print(f"image {image.dtype} {image.shape}, labels {labels.dtype} {labels.shape}, "
      f"label values {np.unique(labels).tolist()}")
for key in ("spacing", "shape_before_cropping", "bbox_used_for_cropping", "shape_after_cropping_and_before_resampling"):
    value = properties[key]
    print(f"  {key}: {[round(v, 3) for v in value] if key == 'spacing' else value}")
for key, locations in properties["class_locations"].items():
    print(f"  class_locations[{key}]: {len(locations)} voxels of {int((labels == key).sum())}, "
          f"e.g. (channel, z, y, x) {locations[0].tolist()}")
shapes = [list(preprocessed.load_case(prepared.folder, c)[0].shape[1:]) for c in case_ids]
print("preprocessed shapes: median", np.median(shapes, axis=0).tolist(), " min", np.min(shapes, axis=0).tolist(),
      " max", np.max(shapes, axis=0).tolist())

# %% [markdown]
# ## 5 · Foreground oversampling
#
# The loader cuts random patches, but foreground is often small, so nnU-Net forces the **last third
# of every batch** to be centred on a foreground voxel: which positions are forced is fixed,
# `j >= round(batch_size * (1 - 0.33))`, and a forced patch picks a class present in the case, then
# one of its `class_locations`. With this plan's batch size of 2 that is one patch of two, more than
# a third. The loader cuts the larger *loaded* patch, so that rotating it still fills the final one.

# %%
rotation_range, dummy_2d, mirror_axes = augment.rotation_and_mirroring_for(plan.patch_size)
loaded_size = augment.loaded_patch_size(plan.patch_size, rotation_range, dummy_2d=dummy_2d)
print(f"patch {plan.patch_size}, loaded {loaded_size}; rotation ±{np.degrees(rotation_range[1]):.0f}°, "
      f"dummy 2D {dummy_2d}, mirror axes {mirror_axes}")
for batch_size in (2, 3, 6, 12):
    forced = loader.SamplerSettings(patch_size=tuple(plan.patch_size), batch_size=batch_size).forced_foreground()
    print(f"batch size {batch_size:>2}: forced positions {[j for j, f in enumerate(forced) if f]}")

# %%
from nnseg_nb.viz.sampling import patch_sampling_figure

sampler = loader.SamplerSettings(patch_size=tuple(plan.patch_size), loaded_patch_size=loaded_size, batch_size=6)
batch = loader.sample_batch(prepared.folder, case_ids, sampler, loader.batch_rng(seed, 0))
for j, (case, forced, selected) in enumerate(zip(batch["case_ids"], batch["forced_foreground"].tolist(),
                                                  batch["selected_classes"])):
    seg_patch = batch["seg"][j]
    print(f"sample {j}: {case}  {'forced, class ' + str(selected) if forced else 'random':<16} "
          f"foreground {(seg_patch > 0).float().mean().item():.1%} of the loaded patch, "
          f"outside the volume or mask {(seg_patch < 0).float().mean().item():.1%}")
forced_fraction = float(batch["forced_foreground"].float().mean())
print(f"forced to foreground: {forced_fraction:.3f} of the batch")
show_figure(patch_sampling_figure(batch, prepared.folder, patch_size=plan.patch_size, columns=3), dpi=60)

# %% [markdown]
# ## 6 · Augmentation
#
# Every training batch then goes through nnU-Net's augmentation, batched in torch on the training
# device: rotation and scaling (p 0.2 each), then the final patch from the centre, Gaussian noise,
# blur, brightness, contrast, simulated low resolution, gamma (inverted and not) and mirroring. This
# patch is more than 3 times wider than deep, so nnU-Net augments it slice by slice ("dummy 2D"): any
# in-plane angle, no rotation out of the thick slices. Each panel is one random draw of the whole
# pipeline on the same patch, and the caption says what it applied. Each step has its own probability
# (rotation 0.2, scaling 0.2, noise 0.1, blur 0.2, brightness and contrast 0.15, low resolution 0.25,
# gamma 0.1 inverted and 0.3 not, each axis flipped with 0.5), so a draw gets a few of them, and over a
# training run every combination comes up.

# %%
from nnseg_nb.viz.augment import augmentation_gallery, deep_supervision_figure, draw_augmentations

pipeline = augment.training_pipeline(plan.patch_size, rotation_range, mirror_axes, dummy_2d,
                                     use_mask_for_norm=plan.use_mask_for_norm)
print("pipeline:", [type(step).__name__ for step in pipeline])
j = len(batch["case_ids"]) - 1  # a forced-foreground sample
gallery = augmentation_gallery(batch["image"][j], batch["seg"][j], pipeline, n=gallery_draws,
                               generator=torch.Generator().manual_seed(seed), device=device)
show_figure(gallery, dpi=75)

# %% [markdown]
# The network predicts at several resolutions of its decoder (deep supervision), and each output is
# compared with the target downsampled to its size (nearest neighbour, `DownsampleSegForDS`). The
# scales come from the pooling strides: here the slice axis is pooled later than the in-plane axes.

# %%
scales = network.deep_supervision_scales(plan.architecture.strides)
(draw,) = draw_augmentations(batch["image"][j], batch["seg"][j], pipeline, [seed], device)
print("strides:", plan.architecture.strides)
print("target shapes:", [tuple(round(n * s) for n, s in zip(plan.patch_size, scale)) for scale in scales])
show_figure(deep_supervision_figure(draw.seg, scales), dpi=70)

# %% [markdown]
# ## 7 · How fast?
#
# Augmentation runs on the training device, a batch at a time. Below: samples per second of the whole
# training pipeline (with the deep-supervision targets) on batches of the plan's size from the loader,
# on this machine (timings vary from run to run). `benchmarks/augment.py` compares it with nnU-Net's
# own pipeline (batchgeneratorsv2, sample by sample in its loader processes); run
# `python benchmarks/augment.py` in an environment that has `nnunetv2` installed. Measured on a
# 2-core CPU, on one core: Dataset901's 64×80×64 patch 40.6 samples/s against nnU-Net's 19.2 (2.1×), this
# dataset's dummy-2D patch 112 against 65 (1.7×), 128³ 6.2 against 2.25 (2.7×); with both cores 1.7–4.0×.

# %%
import time

training = augment.training_pipeline(plan.patch_size, rotation_range, mirror_axes, dummy_2d,
                                     use_mask_for_norm=plan.use_mask_for_norm, deep_supervision_scales=scales)
timing_sampler = loader.SamplerSettings(patch_size=tuple(plan.patch_size), loaded_patch_size=loaded_size,
                                        batch_size=plan.batch_size)
timing_batches = [loader.sample_batch(prepared.folder, case_ids, timing_sampler, loader.batch_rng(seed, k))
                  for k in range(timed_batches + 1)]
generator = torch.Generator().manual_seed(seed)


def augment_on_device(batch: dict) -> dict:
    on_device = {"image": batch["image"].to(device), "seg": batch["seg"].to(device)}
    return augment.augment(on_device, training, generator)


out = augment_on_device(timing_batches[0])  # warm-up (first calls allocate and pick kernels)
print("augmented batch: image", tuple(out["image"].shape), " targets", [tuple(t.shape) for t in out["seg"]])

# %% tags=["nbval-ignore-output"]
if device.type == "cuda":
    torch.cuda.synchronize()
start = time.perf_counter()
for timing_batch in timing_batches[1:]:
    out = augment_on_device(timing_batch)
if device.type == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
samples_per_s = timed_batches * plan.batch_size / seconds
print(f"{timed_batches} batches of {plan.batch_size} on {device} ({torch.get_num_threads()} torch threads): "
      f"{samples_per_s:.1f} samples/s, {seconds / timed_batches * 1000:.0f} ms per batch")

# %% [markdown]
# ## Summary
#
# - Preprocessing is crop → normalize → resample, per case, with the numbers the plans fixed; what it
#   writes is what the loader reads.
# - The loader forces the last third of each batch onto foreground, and cuts a larger patch so that
#   augmentation can rotate it.
# - Augmentation is random per sample and step; the targets are downsampled for deep supervision.
#
# Next: the network that trains on these patches.

# %%
notebook.write_results(out_dir, {
    "profile": profile,
    "dataset": dataset_name,
    "n_cases_preprocessed": len(case_ids),
    "preprocessed_median_shape": np.median(shapes, axis=0).tolist(),
    "patch_size": list(plan.patch_size),
    "forced_foreground_fraction": round(forced_fraction, 3),
    "augment_samples_per_s": round(samples_per_s, 1),
    "timing": {"device": str(device), "batches": timed_batches, "batch_size": plan.batch_size,
               "seconds": round(seconds, 3)},
})
print("results written")
