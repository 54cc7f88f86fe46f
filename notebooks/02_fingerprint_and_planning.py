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
# # 02 · Fingerprint and planning: how nnU-Net picks spacing, patch, network and batch size
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/02_fingerprint_and_planning.ipynb)
#
# **What you will learn**
# - what the dataset fingerprint measures (spacings, shapes after cropping, foreground intensities)
# - nnU-Net's rules that turn it into plans: target spacing, axis order, patch size, U-Net topology, batch size
# - how the patch looks on a real image at each configuration's spacing, and what U-Net it implies
# - how GPU memory and the planner preset (default, ResEnc M/L/XL) change patch and batch size
# - how thick-slice data is handled (the 10th-percentile rule, axis order, separate-z resampling, `3d_lowres`)
# - that our plans equal the plans file nnU-Net itself writes for the same data
#
# It runs in well under a minute on a CPU; nothing here needs a GPU (planning is arithmetic).

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
import dataclasses
import json
from importlib import resources

import numpy as np
from IPython.display import display

from nnseg_nb import dataset, demo_data, fingerprint, io, notebook, paths, planning, resampling
from nnseg_nb.viz import show_figure
from nnseg_nb.viz.planning_widget import planning_widget
from nnseg_nb.viz.plans import configuration_differences, fingerprint_figure, patch_boxes_figure, topology_figure

print(notebook.device_summary())

# %% tags=["parameters"]
profile = "auto"  # "quick" (CPU, minutes), "full" (nnU-Net's settings), "auto": full when a GPU is present
seed = 0  # one seed for Python, numpy and torch
out_dir = "runs/02_fingerprint_and_planning"  # results.json goes here

# %%
profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # "runs/02_..." -> runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
print("profile:", profile)  # planning is cheap: both profiles do exactly what nnU-Net does

# %% [markdown]
# ## 1. The fingerprint
#
# nnU-Net plans from a few numbers per training case, measured once (`nnUNetv2_extract_fingerprint`):
#
# - the **spacing** (mm per voxel, per axis) and the **shape after cropping** to the nonzero region
#   (the box around all voxels that are nonzero in any channel);
# - the fraction of the image that crop kept (its median decides whether normalization uses the mask, below 0.75);
# - **foreground intensities**: `1e8 // n_cases` values drawn with replacement from the voxels with label > 0
#   of each case, pooled per channel; mean, std, median, min, max and the 0.5 and 99.5 percentiles.
#   CT normalization clips to those percentiles; other schemes ignore them.
#
# We fingerprint two demo datasets: the brain MRI (901) and the thick-slice MRI (902). The fingerprint is
# written where nnU-Net keeps it, `nnUNet_preprocessed/DatasetXXX/dataset_fingerprint.json`.

# %% tags=["nbval-ignore-output"]
demo_folders = demo_data.build_demo_datasets(paths.raw_root(), progress=False)  # seconds; skipped when up to date
brain_folder, aniso_folder = demo_folders["Dataset901_BrainTissue"], demo_folders["Dataset902_AnisoSynth"]
fingerprints, dataset_jsons = {}, {}
for folder in (brain_folder, aniso_folder):
    fingerprints[folder.name] = fingerprint.extract_fingerprint(folder, num_workers=1, progress=False)
    dataset_jsons[folder.name] = dataset.load_dataset_json(folder)
    written = fingerprint.save_fingerprint(fingerprints[folder.name], fingerprint.fingerprint_path(folder.name))
    print("written:", paths.display(written))  # relative to the project folder (or as $nnUNet_preprocessed/...)

# %%
brain_fp, brain_json = fingerprints["Dataset901_BrainTissue"], dataset_jsons["Dataset901_BrainTissue"]
print("keys:", sorted(brain_fp))
print("spacing of the first 3 cases (Z, Y, X):", [[round(s, 3) for s in case] for case in brain_fp["spacings"][:3]])
print("shape after crop of the first 3 cases:  ", brain_fp["shapes_after_crop"][:3])
for line in fingerprint.summary_lines(brain_fp):
    print(line)

# %% [markdown]
# Each dot below is one case. The brain cases have nearly isotropic voxels of 2.2-2.75 mm; the
# intensity panel shows the T1 values inside the brain's labels (gray and white matter).

# %%
show_figure(fingerprint_figure(brain_fp, brain_json), dpi=80)

# %% [markdown]
# ## 2. From fingerprint to plans
#
# `planning.plan` is nnU-Net's `ExperimentPlanner` (default settings: 8 GB of GPU memory), step by step:
#
# 1. **Target spacing** (`3d_fullres`): the median spacing per axis. Exception for thick slices: if the
#    coarsest axis is more than 3x coarser than the others *and* has fewer than a third as many voxels, its
#    10th percentile is used instead (section 4).
# 2. **Axis order**: the coarsest axis goes first (`transpose_forward`); everything after works in that order.
# 3. **Median image** at the target spacing; `n_voxels_dataset` = its voxel count x the number of cases.
# 4. **Initial patch** per configuration: the volume of a 256³ cube (2d: 2048²) with the aspect ratio of
#    1/spacing, clipped to the median image.
# 5. **Topology**: halve each axis (stride 2) while it has at least 8 voxels and is less than 2x coarser than
#    the finest axis being pooled (an axis pooled alone needs 12 voxels), so the bottleneck keeps ≥ 4 voxels per
#    axis. Kernels are 3, or 1 along an axis still 2x or more coarser than the finest. Features: 32, doubling
#    per stage, at most 320 (3D) or 512 (2D). The patch is padded to a multiple of the total stride.
# 6. **Memory**: nnU-Net's stand-in for GPU memory is the number of feature-map elements the network produces
#    for one patch. Its reference: 560e6 fit a batch of 2 in 3D, 85e6 a batch of 12 in 2D, on 8 GB (scaled by
#    GB / 8). While a batch of 2 would exceed that, the patch shrinks along the axis that is largest relative
#    to the median image, and the topology is recomputed.
# 7. **Batch size**: what fits (`round(reference / estimate x 2)`, 2D: `x 12`), capped so that one batch
#    holds at most 5% of the dataset's voxels, and at least 2.
# 8. **`3d_lowres`**: only when the fullres patch covers less than 25% of the median image (section 4).

# %%
brain_plans = planning.plan(brain_fp, brain_json, planning.DEFAULT, dataset_name="Dataset901_BrainTissue")
print("\n".join(planning.summary_lines(brain_plans)))
print("transpose_forward:", brain_plans.transpose_forward)

# %% [markdown]
# `planning.explain` runs the same planner and records each decision with its numbers. Read the batch
# sizes: the 3D budget fits 16 patches of 64 x 80 x 64, but 5% of this small dataset is less than one
# patch, so the minimum of 2 wins; the 2D batch is set by the 5% cap.

# %%
print(planning.format_explanation(planning.explain(brain_fp, brain_json)))

# %% [markdown]
# ### The patch on a real case
#
# The boxes are the patches to scale, centred on the first training case, on three orthogonal slices.
# Each row shows the slices resampled to that configuration's spacing, in millimetres. The 3D patch is a
# little *larger* than the median image: it was clipped to the median image, then padded up to a multiple of
# 16 (4 poolings per axis). The 2d patch covers a whole slice, so it shows as one slice in the other views.

# %%
brain_case = dataset.find_cases(brain_folder, brain_json)["brain_000"]
brain_image, brain_props = io.read_case(brain_case.images)
brain_seg, _ = io.read_seg(brain_case.label)
print("case brain_000:", brain_image.shape, "spacing", [round(s, 3) for s in brain_props["spacing"]])
show_figure(patch_boxes_figure(brain_plans, brain_image, brain_props["spacing"], seg=brain_seg), dpi=70)

# %% [markdown]
# ### The U-Net that fits the patch
#
# Each encoder stage works at the patch size divided by the product of the strides so far. The first conv of a
# stage has the stride (downsampling is a strided convolution, not pooling). The decoder mirrors the encoder:
# a transposed conv, concatenation with the skip, then convs. Every decoder level also has a 1x1 segmentation
# output. During training all of them are supervised (deep supervision) with weights 1, ½, ¼, ..., normalized
# to sum 1; the lowest-resolution output gets weight 0.

# %%
show_figure(topology_figure(brain_plans, "3d_fullres"), dpi=75)
fullres_arch = brain_plans.configuration("3d_fullres").architecture
print("strides:", fullres_arch.strides)
print("kernel sizes:", fullres_arch.kernel_sizes)
print("features per stage:", fullres_arch.features_per_stage, "| 2d:",
      brain_plans.configuration("2d").architecture.features_per_stage)

# %% [markdown]
# ### GPU memory and planner presets
#
# nnU-Net's default planner targets 8 GB. The ResEnc presets use a residual encoder
# (1, 3, 4, 6, 6, ... blocks per stage, one conv per decoder level), their own budgets (M: 8 GB, L: 24 GB,
# XL: 40 GB) and no 5% batch cap. Move the slider: less memory shrinks the patch; more memory raises the batch
# size where the cap allows. Picking a preset moves the slider to that preset's own target. (Before you run
# the cell, it shows the patches at 8 GB as a plain picture.)

# %% tags=["nbval-ignore-output"]
widget = planning_widget(brain_fp, brain_json, brain_image, brain_props["spacing"],
                         dataset_name="Dataset901_BrainTissue")
display(widget)

# %% [markdown]
# The same numbers as a table (3d_fullres patch and batch size):

# %%
print(f"{'planner':<10}" + "".join(f"{gb:>19g} GB" for gb in (0.25, 1, 8, 24, 40)))
for name in planning.PRESETS:
    cells = []
    for gb in (0.25, 1, 8, 24, 40):
        settings = dataclasses.replace(planning.PRESETS[name], gpu_memory_target_gb=float(gb))
        fullres = planning.plan(brain_fp, brain_json, settings).configuration("3d_fullres")
        cells.append(f"{' x '.join(map(str, fullres.patch_size))}, bs {fullres.batch_size}")
    print(f"{name:<10}" + "".join(f"{cell:>22}" for cell in cells))

# %% [markdown]
# ## 3. nnU-Net's own plans file
#
# The package ships the `nnUNetPlans.json` that nnU-Net 2.8.1 wrote for this dataset
# (`nnUNetv2_plan_and_preprocess -d 901`, made by `data_demo/make_nnunet_plans.py`). Our plans are a
# `Plans` dataclass in the same layout, so the two can be compared configuration by configuration.
#
# One honest caveat: the plans copy the fingerprint's intensity statistics, and their mean and standard
# deviation are sums over 1e8 float32 samples. numpy changed the order in which it adds them (version 2.3),
# which moves the last digits (3-8e-6 relative; nnU-Net on the same numpy moves the same way). So those two
# numbers are compared within a relative tolerance of `fingerprint.SUMMATION_RTOL`; everything else, the
# samples, percentiles, spacings, patches, topologies and batch sizes, must be equal.

# %%
asset = resources.files("nnseg_nb") / "demo_assets" / "nnUNetPlans_Dataset901_by_nnunetv2.json"
nnunet_plans = planning.Plans.from_json(json.loads(asset.read_text()))
print(nnunet_plans.experiment_planner_used, "->", ", ".join(nnunet_plans.configurations))
print(f"(intensity mean and std compared within {fingerprint.SUMMATION_RTOL:g} relative: float32 summation order)")
for name, keys in configuration_differences(brain_plans, nnunet_plans).items():
    print(f"{name:<11}", "equal" if not keys else f"differs in {', '.join(keys)}")

# %% [markdown]
# Every figure takes a plans file from anywhere (a path, a dict or `Plans`): here nnU-Net's file drawn on the
# same case.

# %%
show_figure(patch_boxes_figure(nnunet_plans, brain_image, brain_props["spacing"], configurations=["3d_fullres"],
                               seg=brain_seg), dpi=70)

# %% [markdown]
# ## 4. Thick slices: Dataset902_AnisoSynth
#
# MRI is often acquired as thick slices: here 4-5 mm between slices, 0.8-1 mm in plane, about 20 slices.
# Resampling the median spacing would make a few coarse slices carry most of the decision, so nnU-Net uses
# the **10th percentile** of the slice spacing when that axis is both > 3x coarser and has < 1/3 as many
# voxels as the others. The thinner target keeps more slices; the images with thick slices are upsampled.

# %%
aniso_fp, aniso_json = fingerprints["Dataset902_AnisoSynth"], dataset_jsons["Dataset902_AnisoSynth"]
aniso_spacings = np.array(aniso_fp["spacings"])
print("slice spacings (sorted):", np.sort(aniso_spacings[:, 0]).round(2).tolist())
print(f"median {np.median(aniso_spacings[:, 0]):.3f} mm, "
      f"10th percentile {np.percentile(aniso_spacings[:, 0], 10):.3f} mm")
aniso_trace = planning.explain(aniso_fp, aniso_json)
print("\n".join(record.message for record in aniso_trace if record.step == "target_spacing"))
aniso_plans = planning.plan(aniso_fp, aniso_json, dataset_name="Dataset902_AnisoSynth")
print("\n".join(planning.summary_lines(aniso_plans)))

# %% [markdown]
# **Axis order.** The coarse axis is already the first one here. Had the files stored it last,
# `transpose_forward` would move it to the front and the configurations would be the same, as we check by
# permuting the fingerprint's axes:

# %%
permuted_fp = {**aniso_fp, "spacings": [s[1:] + s[:1] for s in aniso_fp["spacings"]],
               "shapes_after_crop": [s[1:] + s[:1] for s in aniso_fp["shapes_after_crop"]]}
permuted_plans = planning.plan(permuted_fp, aniso_json, dataset_name="Dataset902_AnisoSynth")
print("thick axis last -> transpose_forward", permuted_plans.transpose_forward,
      "backward", permuted_plans.transpose_backward)
differences = configuration_differences(aniso_plans, permuted_plans)
print("same configurations:", all(not keys for name, keys in differences.items() if name != "plans"))

# %% [markdown]
# **The network of thick slices.** The first stages pool only in plane (stride 1 x 2 x 2) and use 1 x 3 x 3
# kernels, until the in-plane spacing has caught up with the slice spacing; only then does Z get pooled too.

# %%
show_figure(topology_figure(aniso_plans, "3d_fullres"), dpi=75)

# %% [markdown]
# **Separate-z resampling.** When the current or the target spacing is anisotropic (max / min > 3), nnU-Net
# resamples in plane first (cubic for images, order 3) and then along the coarse axis with nearest neighbour
# (`order_z = 0`), so that thick slices are not blurred into each other.

# %%
case_spacing = aniso_fp["spacings"][0]
target = aniso_plans.configuration("3d_fullres").spacing
print("case 0 spacing", [round(s, 3) for s in case_spacing], "-> target", [round(s, 3) for s in target])
print("separate z, axis:", resampling.determine_do_sep_z_and_axis(None, case_spacing, target))
print("image resampling kwargs:", aniso_plans.configuration("3d_fullres").resampling_fn_data_kwargs)

# %% [markdown]
# **`3d_lowres` and the cascade.** At 8 GB the fullres patch covers the whole median image, so there is no
# `3d_lowres`. With a tiny budget (0.1 GB) the patch shrinks below 25% of the median image: nnU-Net then
# coarsens the spacing by 3% at a time (the in-plane axes first, while they are more than 2x finer than the
# coarsest) until the patch covers 25% of the downsampled image. `3d_lowres` trains on that coarse image and
# `3d_cascade_fullres` refines its output at full resolution (it inherits everything from `3d_fullres`).

# %%
small_plans = planning.plan(aniso_fp, aniso_json, planning.preset("default", 0.1), dataset_name="Dataset902_AnisoSynth")
print("\n".join(planning.summary_lines(small_plans)))
lowres_trace = [r for r in planning.explain(aniso_fp, aniso_json, planning.preset("default", 0.1))
                if r.step == "3d_lowres"]
for record in (lowres_trace[0], lowres_trace[-2], lowres_trace[-1]):  # the first and last try, the verdict
    print(record.message)
aniso_case = dataset.find_cases(aniso_folder, aniso_json)["aniso_000"]
aniso_image, aniso_props = io.read_case(aniso_case.images)
aniso_seg, _ = io.read_seg(aniso_case.label)
show_figure(patch_boxes_figure(small_plans, aniso_image, aniso_props["spacing"], seg=aniso_seg), dpi=70)

# %% [markdown]
# ## Summary
#
# The plans are a pure function of the fingerprint and a few constants: the same data gives the same plans
# file as nnU-Net's, number for number (the intensity mean and std to within float32 summation order). The next notebook applies them: cropping, resampling to the target
# spacing and normalization.

# %%
brain_fullres = brain_plans.configuration("3d_fullres")
results = {
    "profile": profile,
    "brain_target_spacing": [round(s, 4) for s in brain_fullres.spacing],
    "brain_3d_fullres_patch": brain_fullres.patch_size,
    "brain_3d_fullres_batch": brain_fullres.batch_size,
    "brain_2d_patch": brain_plans.configuration("2d").patch_size,
    "brain_2d_batch": brain_plans.configuration("2d").batch_size,
    "aniso_target_spacing": [round(s, 4) for s in aniso_plans.configuration("3d_fullres").spacing],
    "aniso_3d_fullres_patch": aniso_plans.configuration("3d_fullres").patch_size,
    "equal_to_nnunet": not any(configuration_differences(brain_plans, nnunet_plans).values()),
}
notebook.write_results(out_dir, results)
print(json.dumps(results))
