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
# # 01 · Data: the nnU-Net dataset format, your own data, and checking it
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/01_data.ipynb)
#
# **What you will learn**
# - how nnU-Net v2 expects a dataset on disk: `DatasetXXX_Name/` with `dataset.json`, `imagesTr`, `labelsTr`
# - what each key of `dataset.json` means, and nnU-Net's rules for labels
# - how an image becomes an array `(C, Z, Y, X)` with a spacing, and why the axis order matters
# - how to turn your own folder of images and masks into an nnU-Net dataset
# - how `verify` finds everything that is wrong with a dataset, at once
#
# It runs in well under a minute on a CPU; nothing here needs a GPU.

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
import json
import shutil
from pathlib import Path

import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

from nnseg_nb import convert, dataset, demo_data, io, notebook, paths
from nnseg_nb.utils import atomic_write_json, load_json
from nnseg_nb.verify import verify_dataset
from nnseg_nb.viz import SliceBrowser, overlay_rgb, show_figure

print(notebook.device_summary())

# %% tags=["parameters"]
profile = "auto"  # "quick" (CPU, minutes), "full" (nnU-Net's settings), "auto": full when a GPU is present
seed = 0  # one seed for Python, numpy and torch
out_dir = "runs/01_data"  # results.json, the converted and the broken dataset go here

# %%
profile = notebook.resolve_profile(profile)
out_dir = paths.in_project(out_dir)  # "runs/01_data" -> runs/ of the project, wherever the kernel runs
device = notebook.setup(seed, out_dir)
print("profile:", profile)

# %% [markdown]
# ## 1. The demo datasets
#
# nnU-Net finds its data through three folders, named by environment variables: `nnUNet_raw` (datasets as
# you give them), `nnUNet_preprocessed` and `nnUNet_results`. nnseg_nb honours the same variables and, when
# they are unset, uses `nnseg_data/raw` and its siblings in the *project folder*: the root of your clone of
# the repository (outside a clone, the working directory). So this notebook, whose kernel runs in
# `notebooks/`, the `nnseg-nb` command typed at the clone's root and `nnseg-nb demo` all share one copy of
# the data, and every notebook writes its `out_dir` under the project's `runs/`. Paths are printed relative
# to the project folder.
#
# `build_demo_datasets` writes four small datasets into the raw folder (a few seconds; a second call finds
# them up to date and skips them). They are built from one seed, so everybody gets identical files:
#
# - `Dataset901_BrainTissue`: real brain MRI (T1) from the MNI ICBM152 template, deformed per case; gray and white matter.
# - `Dataset902_AnisoSynth`: synthetic MRI with thick slices (4-5 mm) and 1 mm pixels; an organ and a small lesion.
# - `Dataset903_MultiChannel`: a synthetic phantom seen by CT and T2 MRI (two channels); an organ and a cyst.
# - `Dataset904_Shapes2D`: 2D grayscale PNGs of ellipses and triangles.

# %% tags=["nbval-ignore-output"]
raw = paths.raw_root()
demo_folders = demo_data.build_demo_datasets(raw, progress=False)  # the demo data's own seed (0): shared by all notebooks
print(paths.describe_roots())
print("this notebook's out_dir:", paths.display(out_dir))

# %%
# Other notebooks may add datasets of their own to the raw root: list the demo ones.
names = [name for name in paths.list_datasets(raw) if name in demo_folders]
print(f"{'dataset':<25} {'train':>5} {'test':>4}  {'channels':<9} {'labels':<44} {'ending':<7} spacing of case 0 (z, y, x)")
n_training_cases = 0
for name in names:
    folder = raw / name
    dataset_json = dataset.load_dataset_json(folder)
    cases = dataset.find_cases(folder, dataset_json)
    test_cases = dataset.find_test_cases(folder, dataset_json)
    n_training_cases += len(cases)
    _, props = io.read_case(next(iter(cases.values())).images)
    channels = ", ".join(dataset_json["channel_names"].values())
    labels = ", ".join(f"{value}={label}" for label, value in dataset_json["labels"].items())
    spacing = " x ".join(f"{s:.2f}" for s in props["spacing"])
    print(f"{name:<25} {len(cases):>5} {len(test_cases):>4}  {channels:<9} {labels:<44} "
          f"{dataset_json['file_ending']:<7} {spacing}")

# %% [markdown]
# The 2D dataset has a spacing of 999 along Z: nnU-Net treats a 2D image as a volume of one slice
# `(C, 1, Y, X)` and gives that fake axis a huge spacing, so that no step ever resamples along it.
#
# ## 2. The nnU-Net v2 raw format
#
# A raw dataset is one folder named `DatasetXXX_Name` (a three-digit id, `001`-`010` are reserved for the
# Medical Segmentation Decathlon). Inside:
#
# - `imagesTr/{case}_{XXXX}{file_ending}`: one file **per channel** of each training case; `XXXX` is the
#   4-digit channel index (`_0000`, `_0001`, ...). The case identifier is the name without that suffix.
# - `labelsTr/{case}{file_ending}`: one label map per training case, with no channel suffix.
# - `imagesTs/`: optional test images, named like `imagesTr`. nnU-Net itself never reads it.
# - `dataset.json`: what the channels and labels are.
#
# Our demo data also ships `labelsTs/` (labels of the test cases, to evaluate predictions later) and a
# `NOTICE.md` with the template's licence: extra files that nnU-Net ignores.

# %%
def show_tree(folder: Path, files_shown: int = 3) -> None:
    """Print a dataset folder: its files, and the first few files of each subfolder."""
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if entry.is_dir():
            files = sorted(p.name for p in entry.iterdir() if not p.name.startswith("."))
            print(f"{entry.name}/  ({len(files)} files)")
            for file in files[:files_shown]:
                print(f"    {file}")
            if len(files) > files_shown:
                print("    ...")
        else:
            print(entry.name)


brain_folder = paths.find_dataset("Dataset901_BrainTissue")  # also takes "BrainTissue" or 901
print(brain_folder.name + "/")
show_tree(brain_folder)

# %% [markdown]
# `dataset.json` has four required keys. Everything else (`name`, `description`, `licence`, ...) is
# for people; nnU-Net ignores it.

# %%
brain_json = dataset.load_dataset_json(brain_folder)
required = {key: brain_json[key] for key in dataset.REQUIRED_KEYS}
print(json.dumps(required, indent=2))
print("other keys (ignored by nnU-Net):", ", ".join(k for k in brain_json if k not in required))

# %% [markdown]
# What each key means, and the rules nnU-Net enforces:
#
# - **`channel_names`**: `{"0": "T1"}`, one entry per channel file `_0000`, `_0001`, ... The name is not
#   just a label: it **chooses the intensity normalization**. `"CT"` (any case) gets CT normalization (clip to
#   the 0.5-99.5 percentiles of the foreground intensities of the whole dataset, then subtract their mean and
#   divide by their standard deviation); `"noNorm"`, `"zscore"`, `"rescale_to_0_1"` and `"rgb_to_0_1"` get
#   those schemes; **any other name** (T1, T2, MRI, ...) gets per-image z-scoring. So call a CT channel `CT`.
# - **`labels`**: name -> integer value in the label maps. `"background": 0` is required. The values must be
#   **consecutive** integers 0, 1, 2, ... (no gaps). An optional label named exactly `ignore` marks voxels
#   that are not annotated (they count neither as right nor wrong); its value must be the **largest**,
#   max(others) + 1. A value may also be a list, e.g. `"tumor_core": [2, 3]`: that makes a **region**, a
#   union of labels; with regions the network predicts each region with its own sigmoid output (overlapping
#   classes, as in BraTS), and `regions_class_order` says which label to write for each region.
# - **`numTraining`**: the number of training cases; it must equal the number of cases in `imagesTr`.
# - **`file_ending`**: with its dot: `".nii.gz"`, `".png"`, `".nrrd"`, ... Every image and label has it;
#   it also picks the reader.
#
# `LabelInfo` reads the labels the way nnU-Net's `LabelManager` does, and `label_problems` states the rules
# a `labels` dict breaks:

# %%
label_info = dataset.LabelInfo.from_dataset_json(brain_json)
print("901: foreground labels", label_info.foreground_labels, "| network outputs:", label_info.num_segmentation_heads)

regions = {"labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3},
           "regions_class_order": [1, 2, 3]}
region_info = dataset.LabelInfo.from_dataset_json(regions)
print("BraTS-style regions:", region_info.foreground_regions, "| network outputs:", region_info.num_segmentation_heads)

for labels in ({"background": 0, "liver": 1, "tumor": 3},
               {"background": 0, "liver": 1, "ignore": 5},
               {"liver": 1, "tumor": 2}):
    print(labels, "->", "; ".join(dataset.label_problems(labels)))

# %% [markdown]
# ## 3. Reading a case
#
# `find_cases` groups the files of each case; `io.read_case` reads a case's channel files into one array.
# Whatever the file format, the result is the same: a float32 array of shape `(C, Z, Y, X)` and a `props`
# dict whose `spacing` (voxel size in mm) is in the **same axis order**.

# %%
brain_cases = dataset.find_cases(brain_folder, brain_json)
case = brain_cases["brain_000"]
print("images:", [p.name for p in case.images], "| label:", case.label.name)

image, props = io.read_case(case.images)
seg, _ = io.read_seg(case.label)
print("image:", image.shape, image.dtype, "| label map:", seg.shape)
print("spacing (z, y, x) in mm:", [round(s, 3) for s in props["spacing"]])
print(f"intensities: {image.min():.0f} .. {image.max():.0f}")
print("voxels per label:", {name: int((seg == value).sum()) for name, value in brain_json["labels"].items()})

# %% [markdown]
# **Why the axis order matters.** A NIfTI file stores its voxels as (x, y, z), and nibabel returns them in
# that order; SimpleITK, which nnU-Net uses to read `.nii.gz`, returns the same voxels as `(z, y, x)` but
# reports spacing and origin in (x, y, z). If the array and the spacing come from different conventions, the
# 2.6 mm axis is treated as a 2.5 mm one, and a thick-slice scan gets resampled and patched along the wrong
# axis without any error. nnseg_nb therefore puts every array and every spacing in SimpleITK's array order
# `(Z, Y, X)`, as nnU-Net does internally.

# %%
import nibabel as nib
import SimpleITK as sitk

file = case.images[0]
itk_image = sitk.ReadImage(str(file))
print("nibabel array:  ", nib.load(file).shape, " (x, y, z)")
print("SimpleITK array:", sitk.GetArrayFromImage(itk_image).shape, " (z, y, x)")
print("nnseg_nb array: ", image.shape, " (c, z, y, x)")
print("SimpleITK spacing:", tuple(round(s, 3) for s in itk_image.GetSpacing()), " (x, y, z)")
print("nnseg_nb spacing: ", tuple(round(s, 3) for s in props["spacing"]), " (z, y, x)")
print("origin (mm, LPS):  ", tuple(round(s, 1) for s in itk_image.GetOrigin()))
print("direction:        ", np.reshape(itk_image.GetDirection(), (3, 3)).round(3).tolist())

# %% [markdown]
# The origin (where voxel 0 lies in the scanner's world) and the direction (how the voxel axes are turned)
# do not change the array, but they travel in `props`: a prediction written with `io.write_seg(seg, file,
# props)` lands exactly on the scan in any viewer.
#
# ## 4. Looking at the data
#
# The slice browser shows a volume slice by slice with the labels on top: pick the axis, the slice and the
# intensity window. Each slice is shown at its physical aspect ratio (from the spacing); the legend names
# the labels with `dataset.json`'s names. Until you run the cell (on GitHub, or in a headless run) it shows
# the same view as a plain picture.

# %% tags=["nbval-ignore-output"]
browser = SliceBrowser({"T1": image}, labels={"gray (1) and white (2) matter": seg}, spacing=props["spacing"],
                       label_names=brain_json["labels"])
display(browser)

# %% [markdown]
# A multi-channel case has one file per channel, all on the same voxel grid. Here are the CT (in Hounsfield
# units: air -1000, fat about -100, bone about +800) and the T2 MRI of one phantom, side by side with the
# same labels, on the slice with the most cyst. The two channels tell different things: the organ (1) is
# brighter than the tissue around it on CT, the fluid-filled cyst (2) is close to water on CT (0 HU) but
# bright on T2.

# %%
multi_folder = paths.find_dataset(903)
multi_case = dataset.find_cases(multi_folder)["multi_000"]
multi_image, multi_props = io.read_case(multi_case.images)
multi_seg, _ = io.read_seg(multi_case.label)
print("channels:", [p.name for p in multi_case.images], "->", multi_image.shape)
for name, value in dataset.load_dataset_json(multi_folder)["labels"].items():
    ct_mean, t2_mean = (float(channel[multi_seg[0] == value].mean()) for channel in multi_image)
    print(f"mean intensity in {name:<10}  CT {ct_mean:5.0f} HU   T2 {t2_mean:4.0f}")
multi_browser = SliceBrowser({"CT (_0000)": multi_image[:1], "T2 (_0001)": multi_image[1:]}, labels=multi_seg,
                             spacing=multi_props["spacing"],
                             label_names=dataset.load_dataset_json(multi_folder)["labels"])
multi_browser.slice.value = int(np.argmax((multi_seg[0] == 2).sum(axis=(1, 2))))  # the Z slice with the most cyst
multi_browser.show_static()

# %% [markdown]
# An anisotropic scan has much thicker slices than pixels. Cut along Y (across the slices) and shown at the
# true aspect ratio, each slice becomes a band about 5 times taller than a pixel is wide (Z points up).
# nnU-Net's planner notices this and treats that axis differently (next notebook).

# %%
aniso_case = dataset.find_cases(paths.find_dataset(902))["aniso_000"]
aniso_image, aniso_props = io.read_case(aniso_case.images)
aniso_seg, _ = io.read_seg(aniso_case.label)
print("shape (c, z, y, x):", aniso_image.shape, "| spacing (z, y, x):", [round(s, 2) for s in aniso_props["spacing"]])
aniso_browser = SliceBrowser({"MRI": aniso_image}, labels={"organ (1) and lesion (2)": aniso_seg},
                             spacing=aniso_props["spacing"], axis=1,
                             label_names=dataset.load_dataset_json(paths.find_dataset(902))["labels"])
aniso_browser.slice.value = int(np.argmax((aniso_seg[0] == 2).sum(axis=(0, 2))))  # the Y cut with the most lesion
aniso_browser.show_static()

# %% [markdown]
# ## 5. Your own data: converting a folder
#
# Many tutorials and public datasets come as two folders: images in one, masks with the same names in the
# other, masks saved as black and white (0 and 255). Here we make such a folder from a few of the 2D
# shapes, as if it were yours:

# %%
my_data = Path(out_dir) / "my_data"
shutil.rmtree(my_data, ignore_errors=True)  # start clean when the notebook runs again
shape_cases = list(dataset.find_cases(paths.find_dataset(904)).values())[:8]
for number, shape_case in enumerate(shape_cases):
    shape_image, shape_props = io.read_case(shape_case.images)
    shape_seg, _ = io.read_seg(shape_case.label)
    io.write_image(shape_image.astype(np.uint8), my_data / "input" / f"img_{number:02d}.png", shape_props)
    mask = np.where(shape_seg > 0, 255, 0).astype(np.uint8)  # any shape is "foreground", saved as 0/255
    io.write_image(mask, my_data / "ground_truth" / f"img_{number:02d}_mask.png", shape_props)
show_tree(my_data)
print("mask values:", np.unique(io.read_seg(my_data / "ground_truth" / "img_00_mask.png")[0]).astype(int).tolist())

# %% [markdown]
# `convert.convert_folders` matches images and masks by name (the `_mask` suffix is recognised, as are
# `_seg`, `_label`, `_gt`, ...), renames the files to nnU-Net's scheme, rewrites label values with
# `value_map` (255 would otherwise be an undeclared label) and writes `dataset.json`. The dataset is built
# in a hidden temporary folder and renamed into place only when complete. Here it goes into `out_dir`; leave
# out `output_root` to put it into the raw root, where `nnseg-nb plan 950` would find it.

# %%
converted = convert.convert_folders(
    my_data / "input", my_data / "ground_truth", name="MyShapes", dataset_id=950,
    channel_names={"0": "gray"},             # not CT or a scheme name: z-score normalization
    labels={"background": 0, "shape": 1},
    value_map={255: 1},                      # the masks' 255 becomes label 1
    output_root=Path(out_dir) / "raw", overwrite=True, progress=False)
print(converted.name + "/")
show_tree(converted)
converted_json = dataset.load_dataset_json(converted)
print(json.dumps({key: converted_json[key] for key in dataset.REQUIRED_KEYS}))
print("label values now:", np.unique(io.read_seg(converted / "labelsTr" / "img_00.png")[0]).astype(int).tolist())

# %% [markdown]
# The same conversion from a terminal (with `-o` for another output root):
#
# ```
# nnseg-nb convert folders input --labels ground_truth --name MyShapes --id 950 \
#     --channels gray --label-names background shape --value-map 255=1
# ```
#
# Always check a new dataset before planning. `verify_dataset` reads every case and reports every problem
# it finds (none here), then a summary:

# %%
converted_report = verify_dataset(converted, progress=False)
print(converted_report.summary())

# %%
fig = Figure(figsize=(8, 2.3), layout="constrained")
converted_cases = dataset.find_cases(converted, converted_json)
for ax, converted_case in zip(fig.subplots(1, 4), list(converted_cases.values())[:4]):
    shape_image, _ = io.read_case(converted_case.images)
    shape_seg, _ = io.read_seg(converted_case.label)
    ax.imshow(overlay_rgb(shape_image[0, 0], shape_seg[0, 0], (0, 255), alpha=0.4))
    ax.set_title(converted_case.identifier, fontsize=9)
    ax.set_axis_off()
show_figure(fig, dpi=80)

# %% [markdown]
# ## 6. `verify` catches a broken dataset
#
# Real datasets break in boring ways: a mask with a stray value, a channel file that never got copied, a
# download cut short, a label map resampled with linear interpolation. nnU-Net stops at the first such
# problem (or, worse, trains on it). Let us break a copy of the multi-channel dataset in eight ways:

# %%
broken_root = Path(out_dir) / "broken"
shutil.rmtree(broken_root, ignore_errors=True)
broken = Path(shutil.copytree(multi_folder, broken_root / multi_folder.name))
images_tr, labels_tr = broken / "imagesTr", broken / "labelsTr"

# 1. a label value that dataset.json does not declare (it declares 0, 1, 2)
label_map, label_props = io.read_seg(labels_tr / "multi_000.nii.gz")
label_map[0, 20:24, 20:24, 20:24] = 3
io.write_seg(label_map, labels_tr / "multi_000.nii.gz", label_props)

# 2. a missing channel: the T2 file of case multi_001 was never copied
(images_tr / "multi_001_0001.nii.gz").unlink()

# 3. NaN voxels in an image (a failed conversion)
ct, ct_props = io.read_image(images_tr / "multi_002_0000.nii.gz")
ct[0, 0, :5, :5] = np.nan
io.write_image(ct, images_tr / "multi_002_0000.nii.gz", ct_props)

# 4. a truncated file (a download cut short)
truncated = images_tr / "multi_003_0001.nii.gz"
truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

# 5. a label map one slice short of its image
label_map, label_props = io.read_seg(labels_tr / "multi_004.nii.gz")
io.write_seg(label_map[:, :-1], labels_tr / "multi_004.nii.gz", label_props)

# 6. a label map saved by a tool that dropped the header: spacing 1 x 1 x 1 mm, no origin
label_map, _ = io.read_seg(labels_tr / "multi_005.nii.gz")
io.write_seg(label_map, labels_tr / "multi_005.nii.gz", {"spacing": [1.0, 1.0, 1.0]})

# 7. a label map resampled with linear interpolation: values between classes
label_map, label_props = io.read_seg(labels_tr / "multi_006.nii.gz")
blurred = label_map.copy()
blurred[..., 1:] = (label_map[..., 1:] + label_map[..., :-1]) / 2
io.write_image(blurred, labels_tr / "multi_006.nii.gz", label_props)

# 8. dataset.json promises more cases than there are
broken_json = load_json(broken / "dataset.json")
broken_json["numTraining"] = 14
atomic_write_json(broken / "dataset.json", broken_json)

# %% [markdown]
# One call finds all of it. Each line names the file and the problem (paths are shown relative to the
# dataset folder); errors stop nnU-Net, warnings deserve a look.

# %%
report = verify_dataset(broken, progress=False)
for problem in report.problems:
    print(f"{Path(problem.file).relative_to(broken.parent)}: {problem.severity}: {problem.message}")
print()
print(report.summary())

# %% [markdown]
# Note the warning on `multi_005.nii.gz`: besides its spacing, the label map lost its position in space
# (its affine: origin and orientation). nnU-Net only warns about that, since some tools write slightly different
# headers for aligned images, but a label map that does not lie on its image is as wrong as one with
# the wrong values.
#
# The same check from a terminal is `nnseg-nb verify DATASET` (a folder, `DatasetXXX_Name`, `Name` or id
# in the raw root). It prints the same lines and exits with code 1 when there are errors, so a script or CI
# job can stop on a broken dataset. Here we run it as a separate process (`python -m nnseg_nb.cli` is
# `nnseg-nb` for this notebook's Python), from the folder above the dataset:

# %%
result = subprocess.run([sys.executable, "-m", "nnseg_nb.cli", "verify", broken.name, "-np", "1"],
                        cwd=broken.parent, capture_output=True, text=True)
print(f"$ nnseg-nb verify {broken.name} -np 1")
print(result.stdout.rstrip())
print("exit code:", result.returncode)

# %% [markdown]
# ## Summary
#
# - A raw dataset is `DatasetXXX_Name/` with `dataset.json`, `imagesTr/{case}_{XXXX}`, `labelsTr/{case}`;
#   channel names choose the normalization, labels are consecutive from background 0.
# - Every array is `(C, Z, Y, X)` with its spacing in the same order; geometry travels in `props`.
# - `convert.convert_folders` (or `nnseg-nb convert`) turns a folder of images and masks into a dataset;
#   `verify_dataset` (or `nnseg-nb verify`) lists everything wrong with it, file by file.
#
# Next: `02_fingerprint_and_planning` measures these datasets and plans nnU-Net's configurations for them.

# %%
results_file = notebook.write_results(out_dir, {
    "profile": profile,
    "n_datasets": len(names),
    "n_training_cases": n_training_cases,
    "brain_case_shape": list(image.shape),
    "converted_cases": converted_report.num_cases,
    "converted_errors": len(converted_report.errors),
    "broken_errors": len(report.errors),
    "broken_warnings": len(report.warnings),
    "cli_exit_code": result.returncode,
})
print("wrote", paths.display(results_file))
