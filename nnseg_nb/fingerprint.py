"""The dataset fingerprint: what nnU-Net measures about a dataset before it plans anything.

    fingerprint = ensure_fingerprint("Dataset004_Hippocampus")   # computed once, then read from disk
    fingerprint["spacings"][0]                                    # [z, y, x] spacing of the first case
    fingerprint["foreground_intensity_properties_per_channel"]["0"]["percentile_99_5"]
    summarize_fingerprint(fingerprint)["spacing"]["median"]       # per axis, for a notebook

The content and the numbers are nnU-Net v2's (``DatasetFingerprintExtractor``). For every training
case: read the images and the label map, crop both to the nonzero box (:func:`crop_to_nonzero`), and
record the spacing, the shape after cropping and the fraction of the volume the crop kept. For the
intensity statistics (CT normalization clips to them), draw ``1e8 // num_cases`` foreground voxel
values per channel from each case, uniformly with replacement from a fresh ``RandomState(1234)``,
and pool the draws of all cases. "Foreground" is ``seg > 0``, which includes the ignore label: a
quirk of nnU-Net that we keep so the numbers stay the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnseg_nb import io
from nnseg_nb.dataset import find_cases, load_dataset_json
from nnseg_nb.parallel import map_in_processes
from nnseg_nb.paths import dataset_name as resolve_dataset_name
from nnseg_nb.paths import find_dataset, parse_dataset_folder_name, preprocessed_root
from nnseg_nb.preprocessing import crop_to_nonzero
from nnseg_nb.utils import atomic_write_json, load_json

FINGERPRINT_FILE = "dataset_fingerprint.json"
# nnU-Net draws 1e8 foreground values per channel in total (its `10e7`), split evenly over the cases.
FOREGROUND_SAMPLES_TOTAL = 10**8
# Each case gets a fresh RandomState with this seed, so its draws do not depend on the worker that ran it.
SAMPLING_SEED = 1234
PERCENTILES = (0.5, 50.0, 99.5)
# The mean and std of 1e8 float32 samples depend on numpy's summation order, which changed in numpy 2.3
# (older versions move them by 3-8e-6 relative; nnunetv2 on the same numpy moves the same way).
# Compare them with this relative tolerance; the samples, min, max and percentiles are exact.
SUMMATION_RTOL = 1e-4
# nnU-Net's default number of fingerprint processes (-np / -npfp).
DEFAULT_NUM_WORKERS = 8
FINGERPRINT_KEYS = (
    "foreground_intensity_properties_per_channel",
    "median_relative_size_after_cropping",
    "shapes_after_crop",
    "spacings",
)


@dataclass
class CaseFingerprint:
    """What one case contributes: its geometry and its foreground values.

    ``foreground`` is (C, N): either all of the case's foreground values (``drawn=False``) or the
    draws from them (``drawn=True``), whichever is smaller; a worker sends back the smaller array.
    """

    spacing: list[float]  # (Z, Y, X), as the reader returns it
    shape_after_crop: list[int]  # (Z, Y, X) of the nonzero box
    relative_size_after_cropping: float
    foreground: np.ndarray  # (C, N) float32; N = 0 without foreground
    drawn: bool = False


# --- one case ------------------------------------------------------------------------------------


def samples_per_case(num_cases: int, total: int = FOREGROUND_SAMPLES_TOTAL) -> int:
    """How many foreground values each case gives per channel: ``int(total // num_cases)``.

    >>> samples_per_case(14)
    7142857
    """
    return int(total // num_cases)


def foreground_values(data: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """The image values where ``seg > 0`` (the ignore label counts, as in nnU-Net), per channel.

    Args:
        data: (C, Z, Y, X) image; seg: (1, Z, Y, X) label map (-1 outside the nonzero mask is not foreground).

    Returns:
        (C, N) array in raster order, N = number of foreground voxels.
    """
    return data[:, seg[0] > 0]


def draw_foreground_samples(values: np.ndarray, num_samples: int, seed: int = SAMPLING_SEED) -> np.ndarray:
    """Draw ``num_samples`` values per channel uniformly with replacement, as nnU-Net does per case.

    One fresh ``RandomState(seed)`` serves the channels in order. The draws are those of nnU-Net's
    ``rng.choice(values[c], num_samples, replace=True)``, which picks exactly these indices (legacy
    ``randint`` gives the same stream for int32 and int64); indexing ourselves is about twice as fast.

    Args:
        values: (C, N) foreground values of one case, N > 0.

    Returns:
        (C, num_samples) array of ``values``' dtype.

    >>> draw_foreground_samples(np.array([[5., 7.]], np.float32), 4)
    array([[7., 7., 5., 7.]], dtype=float32)
    """
    rng = np.random.RandomState(seed)
    samples = np.empty((values.shape[0], num_samples), dtype=values.dtype)
    index_dtype = (
        np.int32 if values.shape[1] <= np.iinfo(np.int32).max else np.int64
    )  # int32: half the memory
    for channel, channel_values in enumerate(values):
        samples[channel] = channel_values[rng.randint(0, channel_values.size, num_samples, dtype=index_dtype)]
    return samples


def analyze_case(
    image_files: Sequence[str | os.PathLike], label_file: str | os.PathLike, num_samples: int
) -> CaseFingerprint:
    """Read one case, crop it to the nonzero box and measure it (see the module docstring)."""
    data, props = io.read_case(image_files)
    seg, _ = io.read_seg(label_file)
    if seg.shape[1:] != data.shape[1:]:
        raise ValueError(f"{label_file}: shape {seg.shape[1:]} differs from the image's {data.shape[1:]}")
    for array, path in ((data, image_files[0]), (seg, label_file)):
        if np.isnan(array).any():
            raise ValueError(f"{path}: contains NaN values")
    cropped, seg_cropped, _ = crop_to_nonzero(data, seg)
    values = foreground_values(cropped, seg_cropped)
    drawn = values.shape[1] > num_samples
    return CaseFingerprint(
        spacing=[float(s) for s in props["spacing"]],
        shape_after_crop=[int(n) for n in cropped.shape[1:]],
        relative_size_after_cropping=float(np.prod(cropped.shape[1:]) / np.prod(data.shape[1:])),
        foreground=draw_foreground_samples(values, num_samples) if drawn else values,
        drawn=drawn,
    )


# --- pooling ---------------------------------------------------------------------------------------


def intensity_statistics(values: np.ndarray) -> dict[str, float]:
    """nnU-Net's statistics of pooled foreground values (``std`` with ddof 0, linear percentiles).

    ``values`` is reordered in place (the percentiles partition it rather than a copy).

    >>> intensity_statistics(np.array([1., 2., 3., 4.], np.float32))["percentile_99_5"]
    3.985
    """
    if values.size == 0:
        raise ValueError("no foreground voxel (label > 0) in any case: the intensity statistics need some")
    mean, std = float(np.mean(values)), float(np.std(values))
    lowest, highest = float(np.min(values)), float(np.max(values))
    # Last, because it reorders `values`: mean and std sum in memory order, which must stay nnU-Net's.
    percentile_00_5, median, percentile_99_5 = np.percentile(values, PERCENTILES, overwrite_input=True)
    return {
        "max": highest,
        "mean": mean,
        "median": float(median),
        "min": lowest,
        "percentile_00_5": float(percentile_00_5),
        "percentile_99_5": float(percentile_99_5),
        "std": std,
    }


def pooled_intensity_statistics(
    cases: list[CaseFingerprint], num_samples: int
) -> dict[str, dict[str, float]]:
    """Per channel, concatenate every case's draws in case order and take :func:`intensity_statistics`.

    Cases whose worker sent all their foreground values get their draws here (the same draws: each
    case has its own ``RandomState``). The cases' arrays are released (``foreground`` becomes empty).

    Returns:
        ``{"0": {max, mean, median, min, percentile_00_5, percentile_99_5, std}, "1": ...}``
    """
    num_channels = cases[0].foreground.shape[0]
    draws = []  # (C, num_samples) per case with foreground, in case order
    for case in cases:
        if case.foreground.shape[1] > 0:
            draws.append(
                case.foreground if case.drawn else draw_foreground_samples(case.foreground, num_samples)
            )
        case.foreground = case.foreground[:, :0]
    # nnU-Net keeps a plain [] for a case without foreground, and concatenating it makes the pool
    # float64: the mean and std are then summed in float64, so ours are too.
    dtype = np.float64 if len(draws) < len(cases) else np.float32
    statistics = {}
    for channel in range(num_channels):
        pooled = np.concatenate([d[channel] for d in draws], dtype=dtype) if draws else np.zeros(0)
        if channel == num_channels - 1:
            draws = []  # free the per-case draws before the statistics make their temporaries
        statistics[str(channel)] = intensity_statistics(pooled)
    return statistics


# --- a dataset -------------------------------------------------------------------------------------


def _analyze_case_job(job: tuple) -> CaseFingerprint:
    return analyze_case(*job)


def extract_fingerprint(
    dataset_folder: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = True,
    num_foreground_samples: int | None = None,
) -> dict:
    """Compute the fingerprint of a raw dataset (reads every training case; writes nothing).

    Args:
        dataset_folder: a raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``).
        num_workers: processes reading cases in parallel (default: nnU-Net's 8, at most the CPU count).
        progress: show a progress bar.
        num_foreground_samples: foreground values drawn per channel over all cases (default
            ``FOREGROUND_SAMPLES_TOTAL``, nnU-Net's 1e8). Only tests and quick looks should change it:
            the statistics then differ from nnU-Net's.

    Returns:
        ``{"foreground_intensity_properties_per_channel": {"0": {max, mean, median, min,
        percentile_00_5, percentile_99_5, std}, ...}, "median_relative_size_after_cropping": float,
        "shapes_after_crop": [[z, y, x], ...], "spacings": [[z, y, x], ...]}``, one entry per case
        in sorted case order, exactly as nnU-Net's ``dataset_fingerprint.json``.
    """
    folder = Path(dataset_folder)
    dataset_json = load_dataset_json(folder)
    cases = list(find_cases(folder, dataset_json).values())
    _check_cases(folder, dataset_json, cases)
    total = FOREGROUND_SAMPLES_TOTAL if num_foreground_samples is None else num_foreground_samples
    num_samples = samples_per_case(len(cases), total)
    jobs = [(case.images, case.label, num_samples) for case in cases]
    num_workers = min(DEFAULT_NUM_WORKERS, os.cpu_count() or 1) if num_workers is None else num_workers
    results = map_in_processes(_analyze_case_job, jobs, num_workers, progress, desc="fingerprint")
    return {
        "foreground_intensity_properties_per_channel": pooled_intensity_statistics(results, num_samples),
        "median_relative_size_after_cropping": float(
            np.median([c.relative_size_after_cropping for c in results])
        ),
        "shapes_after_crop": [c.shape_after_crop for c in results],
        "spacings": [c.spacing for c in results],
    }


def _check_cases(folder: Path, dataset_json: dict, cases: list) -> None:
    """Every case has a label file and one image per channel of ``dataset.json``."""
    if not cases:
        raise FileNotFoundError(
            f"{folder}: no training cases (images named <case>_0000{dataset_json['file_ending']})"
        )
    missing = [case.identifier for case in cases if case.label is None]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no label file for {len(missing)} case(s): {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    num_channels = len(dataset_json["channel_names"])
    wrong = [case.identifier for case in cases if len(case.images) != num_channels]
    if wrong:
        raise ValueError(
            f"{folder}: dataset.json names {num_channels} channel(s) but case(s) "
            f"{', '.join(wrong[:5])} have another number of image files"
        )


# --- on disk ---------------------------------------------------------------------------------------


def fingerprint_path(dataset: str | int | os.PathLike) -> Path:
    """``<preprocessed>/<DatasetXXX_Name>/dataset_fingerprint.json``; ``dataset`` is a name, an id or a raw folder."""
    name = str(dataset)
    try:
        parse_dataset_folder_name(name)
    except ValueError:
        name = resolve_dataset_name(dataset)
    return preprocessed_root() / name / FINGERPRINT_FILE


def save_fingerprint(fingerprint: dict, path: str | os.PathLike) -> Path:
    """Write the fingerprint as nnU-Net does (keys in its order, indent 4), atomically."""
    atomic_write_json(path, fingerprint)
    return Path(path)


def load_fingerprint(path: str | os.PathLike) -> dict:
    """Read a ``dataset_fingerprint.json`` (ours or nnU-Net's); a missing key is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fingerprint file")
    fingerprint = load_json(path)
    missing = [key for key in FINGERPRINT_KEYS if key not in fingerprint]
    if missing:
        raise ValueError(f"{path}: not a dataset fingerprint (missing {', '.join(missing)})")
    return fingerprint


def ensure_fingerprint(
    dataset: str | int | os.PathLike,
    overwrite: bool = False,
    output: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict:
    """The dataset's fingerprint: read from ``output`` if it is there, else computed and written there.

    As nnU-Net, an existing file is reused unless ``overwrite`` (its ``--clean``).

    Args:
        dataset: raw dataset folder, ``DatasetXXX_Name``, ``Name`` or id.
        output: where the file lives (default :func:`fingerprint_path`).
    """
    folder = find_dataset(dataset)
    if output is None:
        try:
            parse_dataset_folder_name(folder.name)
        except ValueError:
            raise ValueError(
                f"{folder} is not named DatasetXXX_Name, so it has no default fingerprint "
                "location; pass output="
            ) from None
    path = Path(output) if output is not None else fingerprint_path(folder.name)
    if path.is_file() and not overwrite:
        return load_fingerprint(path)
    fingerprint = extract_fingerprint(folder, num_workers=num_workers, progress=progress)
    save_fingerprint(fingerprint, path)
    return fingerprint


# --- for reading ------------------------------------------------------------------------------------


def summarize_fingerprint(fingerprint: dict) -> dict:
    """Spacing and shape statistics per axis and the intensity summary per channel.

    >>> fp = {"spacings": [[3., 1., 1.], [5., 1., 1.]], "shapes_after_crop": [[10, 20, 20], [8, 20, 22]],
    ...       "median_relative_size_after_cropping": 0.9,
    ...       "foreground_intensity_properties_per_channel": {"0": {"mean": 1.0, "std": 2.0}}}
    >>> summarize_fingerprint(fp)["spacing"]
    {'median': [4.0, 1.0, 1.0], 'min': [3.0, 1.0, 1.0], 'max': [5.0, 1.0, 1.0]}
    """

    def per_axis(rows: list) -> dict[str, list[float]]:
        array = np.asarray(rows, dtype=float)
        return {
            "median": np.median(array, 0).tolist(),
            "min": array.min(0).tolist(),
            "max": array.max(0).tolist(),
        }

    return {
        "num_cases": len(fingerprint["spacings"]),
        "spacing": per_axis(fingerprint["spacings"]),
        "shape_after_crop": per_axis(fingerprint["shapes_after_crop"]),
        "median_relative_size_after_cropping": float(fingerprint["median_relative_size_after_cropping"]),
        "intensity_per_channel": {
            channel: dict(stats)
            for channel, stats in fingerprint["foreground_intensity_properties_per_channel"].items()
        },
    }


def summary_lines(fingerprint: dict) -> list[str]:
    """Three lines for a terminal: spacing, shape after crop, foreground intensities per channel."""
    summary = summarize_fingerprint(fingerprint)

    def axes(values: list[float]) -> str:
        return " x ".join(f"{v:.4g}" for v in values)

    spacing, shape = summary["spacing"], summary["shape_after_crop"]
    channels = "; ".join(
        f"channel {c}: mean {s['mean']:.4g}, std {s['std']:.4g}, 0.5-99.5% [{s['percentile_00_5']:.4g}, "
        f"{s['percentile_99_5']:.4g}]"
        for c, s in summary["intensity_per_channel"].items()
    )
    return [
        f"{summary['num_cases']} cases, spacing (Z, Y, X) median {axes(spacing['median'])} "
        f"(min {axes(spacing['min'])}, max {axes(spacing['max'])})",
        f"shape after crop median {axes(shape['median'])} (min {axes(shape['min'])}, max {axes(shape['max'])}), "
        f"median relative size {summary['median_relative_size_after_cropping']:.3f}",
        f"foreground intensities: {channels}",
    ]
