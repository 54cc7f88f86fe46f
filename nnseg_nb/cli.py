"""The ``nnseg-nb`` command: one subcommand per nnU-Net stage, each a thin call into the library.

    nnseg-nb --help
    nnseg-nb <subcommand> --help

Subcommands mirror nnU-Net's ``nnUNetv2_*`` scripts. Each one is a pair of functions here,
``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (the call), registered in ``SUBCOMMANDS``.
A user error (:class:`UserError`, ``ValueError``, ``OSError`` such as a missing file) is printed as
one readable line per problem and exits 1; there is never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def _shown(path) -> str:
    """A path as the CLI prints it: relative to the project folder, ``$nnUNet_raw/...`` or ``~/...``
    (:func:`nnseg_nb.paths.display`), so that outputs copied into notebooks and docs name no one's home."""
    from nnseg_nb.paths import display

    return display(path)


class UserError(Exception):
    """An error in what the user asked for; ``problems`` are printed one per line."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# --- subcommands (each: _add_<name>_parser + _cmd_<name>) -------------------------------------


# --- verify / convert (nnseg_nb.verify, nnseg_nb.convert) ---------------------------------------


def _add_verify_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check a raw dataset (nnU-Net's --verify_dataset_integrity, and more)",
        description="Read every case of a raw dataset and report every problem, one line "
        "each (<file>: error|warning: <what>), then a summary. Exits 1 if "
        "there are errors, 0 otherwise (warnings allowed).",
    )
    parser.add_argument("dataset", help="raw dataset: folder, DatasetXXX_Name, Name or id")
    parser.add_argument(
        "-np",
        "--num-workers",
        type=int,
        default=None,
        help="processes reading cases (default min(4, CPU count))",
    )
    parser.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from nnseg_nb.verify import verify_dataset

    if args.num_workers is not None and args.num_workers < 1:
        raise UserError(f"-np must be at least 1, got {args.num_workers}")
    report = verify_dataset(args.dataset, num_workers=args.num_workers)
    print(report)
    return 0 if report.ok else 1


def _add_convert_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="make a v2 raw dataset from MSD, image/label folders or nnU-Net v1",
        description="Convert a dataset into nnU-Net v2's raw format (the source is not "
        "changed). Check the result with `nnseg-nb verify`.",
    )
    kinds = parser.add_subparsers(dest="source_kind", metavar="<kind>", required=True)
    msd = kinds.add_parser(
        "msd",
        help="a Medical Segmentation Decathlon TaskXX_Name folder",
        description="Split the 4D multi-modal images into _0000, _0001 ... files, copy the "
        "labels, convert imagesTs (nnUNetv2_convert_MSD_dataset).",
    )
    msd.add_argument("source", help="the TaskXX_Name folder")
    msd.add_argument(
        "-np", "--num-workers", type=int, default=None, help="processes (default min(4, CPU count))"
    )
    v1 = kinds.add_parser(
        "v1",
        help="an nnU-Net v1 TaskXXX_Name folder",
        description="Copy the image folders and rewrite dataset.json for v2 "
        "(nnUNetv2_convert_old_nnUNet_dataset).",
    )
    v1.add_argument("source", help="the TaskXXX_Name folder")
    v1.add_argument("--name", default=None, help="dataset name (default: from the task folder)")
    folders = kinds.add_parser(
        "folders",
        help="a folder of images and one of label maps, matched by name",
        description="Pair images and label maps by file name (labels may carry a suffix such "
        "as _seg) and write them as a v2 dataset; any format nnseg_nb reads, "
        "2D PNG/TIFF included.",
    )
    folders.add_argument("images", nargs="+", help="image folder, or one folder per channel")
    folders.add_argument("--labels", required=True, help="folder of label maps")
    folders.add_argument("--name", required=True, help="dataset name")
    folders.add_argument(
        "--channels",
        nargs="+",
        default=None,
        metavar="NAME",
        help="channel names, e.g. CT or T1 T2 (default: R G B for colour images, else image)",
    )
    folders.add_argument(
        "--label-names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="label names for values 0, 1, 2 ... (default: inferred from the label files)",
    )
    folders.add_argument(
        "--value-map",
        nargs="+",
        default=None,
        metavar="FROM=TO",
        help="rewrite label values, e.g. 255=1 for 0/255 masks",
    )
    folders.add_argument("--image-suffix", default="", help="removed from image names before matching")
    folders.add_argument(
        "--label-suffix", default=None, help="removed from label names (default: tried _seg, _mask ...)"
    )
    folders.add_argument(
        "--file-ending", default=None, help="of the new dataset (default: that of the images)"
    )
    folders.add_argument("--test-images", default=None, help="folder of test images for imagesTs")
    folders.add_argument(
        "-np", "--num-workers", type=int, default=None, help="processes (default min(4, CPU count))"
    )
    for kind_parser, id_help in (
        (msd, "default: XX of TaskXX"),
        (v1, "default: XXX of TaskXXX"),
        (folders, "required"),
    ):
        kind_parser.add_argument(
            "--id", type=int, default=None, required=kind_parser is folders, help=f"dataset id ({id_help})"
        )
        kind_parser.add_argument(
            "-o", "--output-root", default=None, help="where the dataset goes (default: the raw root)"
        )
        kind_parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing dataset of that name"
        )
        kind_parser.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    from nnseg_nb import convert
    from nnseg_nb.paths import raw_root

    common = dict(dataset_id=args.id, output_root=args.output_root, overwrite=args.overwrite)
    try:
        if args.source_kind == "msd":
            folder = convert.convert_msd(args.source, num_workers=args.num_workers, **common)
        elif args.source_kind == "v1":
            folder = convert.convert_v1(args.source, name=args.name, **common)
        else:
            folder = convert.convert_folders(
                args.images if len(args.images) > 1 else args.images[0],
                args.labels,
                args.name,
                channel_names=args.channels,
                labels=args.label_names,
                value_map=_parse_value_map(args.value_map),
                image_suffix=args.image_suffix,
                label_suffix=args.label_suffix,
                file_ending=args.file_ending,
                test_images_dir=args.test_images,
                num_workers=args.num_workers,
                **common,
            )
    except FileExistsError as e:
        raise UserError(str(e)) from None
    in_raw_root = folder.parent.resolve() == raw_root().resolve()
    print(
        f"wrote {_shown(folder)}\ncheck it with: nnseg-nb verify {folder.name if in_raw_root else _shown(folder)}"
    )
    return 0


def _parse_value_map(items: list[str] | None) -> dict[int, int] | None:
    if not items:
        return None
    try:
        return {int(a): int(b) for a, b in (item.split("=") for item in items)}
    except ValueError:
        raise UserError(
            f"--value-map takes FROM=TO integer pairs like 255=1, got {' '.join(items)}"
        ) from None


# --- fingerprint (nnseg_nb.fingerprint) -------------------------------------------------------


def _add_fingerprint_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "fingerprint",
        help="extract the dataset fingerprint (nnUNetv2_extract_fingerprint)",
        description="Measure spacings, shapes after cropping and foreground intensities "
        "of a raw dataset, as nnU-Net does. An existing file is kept "
        "unless --clean.",
    )
    parser.add_argument("dataset", help="raw dataset: folder, DatasetXXX_Name, Name or id")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="fingerprint file (default <preprocessed>/<DatasetXXX_Name>/dataset_fingerprint.json)",
    )
    parser.add_argument(
        "-np",
        "--num-workers",
        type=int,
        default=None,
        help="processes reading cases (default 8, at most the CPU count)",
    )
    parser.add_argument("--clean", action="store_true", help="recompute even if the file exists")
    parser.set_defaults(func=_cmd_fingerprint)


def _cmd_fingerprint(args) -> int:
    from nnseg_nb.fingerprint import ensure_fingerprint, fingerprint_path, summary_lines
    from nnseg_nb.paths import find_dataset, parse_dataset_folder_name

    if args.num_workers is not None and args.num_workers < 1:
        raise UserError(f"-np must be at least 1, got {args.num_workers}")
    folder = find_dataset(args.dataset)
    if args.output is None:
        try:
            parse_dataset_folder_name(folder.name)
        except ValueError:
            raise UserError(
                f"{folder} is not named DatasetXXX_Name, so it has no default output; give -o FILE"
            ) from None
    path = Path(args.output) if args.output else fingerprint_path(folder.name)
    kept = path.is_file() and not args.clean
    fingerprint = ensure_fingerprint(folder, overwrite=args.clean, output=path, num_workers=args.num_workers)
    print(f"kept the existing {_shown(path)} (--clean recomputes it)" if kept else f"wrote {_shown(path)}")
    print("\n".join(summary_lines(fingerprint)))
    return 0


# --- plan (nnseg_nb.planning) -------------------------------------------------------------------


def _add_plan_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan patch, network and batch size per configuration (nnUNetv2_plan_experiment)",
        description="Plan a dataset as nnUNetv2_plan_experiment does (ExperimentPlanner or a ResEnc preset), "
        "from its fingerprint and dataset.json. DATASET: compute the fingerprint if <preprocessed>/"
        "<DatasetXXX_Name>/dataset_fingerprint.json is missing, write <plans name>.json and a copy of "
        "dataset.json there. --fingerprint F --dataset-json J -o PLANS.json: plan from the two files "
        "alone. Configurations that an existing plans file has and this planner does not make are "
        "kept, as nnU-Net does.",
    )
    parser.add_argument(
        "dataset", nargs="?", default=None, help="raw dataset: folder, DatasetXXX_Name, Name or id"
    )
    parser.add_argument(
        "--planner",
        default="default",
        metavar="NAME",
        help="default (ExperimentPlanner, 8 GB), resenc-m (8 GB), resenc-l (24 GB) or resenc-xl "
        "(40 GB); default: default",
    )
    parser.add_argument(
        "--gpu-memory",
        type=float,
        default=None,
        metavar="GB",
        help="GPU memory target instead of the planner's (nnU-Net's -gpu_memory_target); the plans "
        "name stays the planner's unless --plans-name",
    )
    parser.add_argument(
        "--overwrite-target-spacing",
        type=float,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="3d_fullres target spacing in the images' axis order instead of the planned one",
    )
    parser.add_argument(
        "--plans-name",
        default=None,
        help="plans identifier: file <name>.json, data folders <name>_<configuration> (default: the "
        "planner's, e.g. nnUNetPlans; nnU-Net's -overwrite_plans_name)",
    )
    parser.add_argument(
        "--fingerprint", default=None, metavar="FILE", help="plan from this dataset_fingerprint.json"
    )
    parser.add_argument("--dataset-json", default=None, metavar="FILE", help="... and this dataset.json")
    parser.add_argument(
        "--dataset-name",
        default=None,
        help="dataset_name written into the plans with --fingerprint (default: the fingerprint's "
        "folder if it is named DatasetXXX_Name, else dataset.json's name)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="PLANS.json",
        help="plans file (default <preprocessed>/<DatasetXXX_Name>/<plans name>.json; required "
        "with --fingerprint)",
    )
    parser.add_argument(
        "-np",
        "--num-workers",
        type=int,
        default=None,
        help="processes for the fingerprint, if it has to be computed (default 8, at most the CPU count)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print the planner's decisions: target spacing, each shrink step, batch size, 3d_lowres",
    )
    parser.set_defaults(func=_cmd_plan)


def _plan_argument_problems(args) -> list[str]:
    import math

    from nnseg_nb.planning import PRESETS

    problems = []
    if args.planner not in PRESETS:
        problems.append(f"unknown --planner {args.planner!r}; choose one of {', '.join(PRESETS)}")
    if args.gpu_memory is not None and not 0 < args.gpu_memory < math.inf:
        problems.append(f"--gpu-memory must be a positive number of GB, got {args.gpu_memory:g}")
    if args.overwrite_target_spacing and not all(0 < s < math.inf for s in args.overwrite_target_spacing):
        problems.append(
            f"--overwrite-target-spacing must be three positive spacings, got "
            f"{' '.join(f'{s:g}' for s in args.overwrite_target_spacing)}"
        )
    if args.plans_name is not None and (
        not args.plans_name or any(c in args.plans_name for c in "/\\") or args.plans_name.endswith(".json")
    ):
        problems.append(
            f"--plans-name is a name such as nnUNetPlans_16GB (no folder, no .json), got {args.plans_name!r}"
        )
    if args.num_workers is not None and args.num_workers < 1:
        problems.append(f"-np must be at least 1, got {args.num_workers}")
    from_files = args.fingerprint is not None or args.dataset_json is not None
    if args.dataset is not None and from_files:
        problems.append("give either DATASET or --fingerprint with --dataset-json, not both")
    elif args.dataset is None and not from_files:
        problems.append("give a DATASET, or --fingerprint FILE --dataset-json FILE -o PLANS.json")
    elif from_files and (args.fingerprint is None or args.dataset_json is None or args.output is None):
        problems.append(
            "planning from files needs all of --fingerprint FILE, --dataset-json FILE and -o PLANS.json"
        )
    return problems


def _plan_settings(args):
    """The planner preset at the command line's GPU target; nnseg_nb's warnings become 'warning:' lines."""
    import warnings

    from nnseg_nb.planning import preset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = preset(args.planner, args.gpu_memory)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if not args.plans_name and settings.gpu_memory_target_gb != preset(args.planner).gpu_memory_target_gb:
        print(
            f"note: {settings.plans_name}.json will hold a plan for {settings.gpu_memory_target_gb:g} GB; "
            "--plans-name keeps it apart from the planner's default plans",
            file=sys.stderr,
        )
    return settings


def _plan_inputs_from_files(args) -> tuple[dict, dict, str | None, Path]:
    """``(fingerprint, dataset_json, dataset_name, plans file)`` from --fingerprint, --dataset-json and -o."""
    from nnseg_nb.dataset import load_dataset_json
    from nnseg_nb.fingerprint import load_fingerprint
    from nnseg_nb.paths import parse_dataset_folder_name

    problems, fingerprint, dataset_json = [], None, None
    try:
        fingerprint = load_fingerprint(args.fingerprint)
    except (ValueError, FileNotFoundError, TypeError) as e:  # TypeError: JSON that is not an object
        problems.append(
            str(e) if not isinstance(e, TypeError) else f"{args.fingerprint}: not a dataset fingerprint"
        )
    try:
        dataset_json = load_dataset_json(args.dataset_json)  # the file, or a folder holding it
    except (ValueError, FileNotFoundError) as e:
        problems.append(str(e))
    if problems:
        raise UserError(*problems)
    name, dataset_json_path = args.dataset_name, Path(args.dataset_json).resolve()
    for folder in (
        Path(args.fingerprint).resolve().parent,
        dataset_json_path if dataset_json_path.is_dir() else dataset_json_path.parent,
    ):
        try:
            parse_dataset_folder_name(folder.name)
            name = name or folder.name  # nnU-Net writes the dataset's folder name
        except ValueError:
            pass
    return fingerprint, dataset_json, name, Path(args.output)


def _plan_from_files(args, settings):
    """``nnseg-nb plan --fingerprint F --dataset-json J -o PLANS.json``: a PlannedDataset-like result."""
    from nnseg_nb.planning import merge_existing_plans, plan, save_plans

    fingerprint, dataset_json, dataset_name, output = _plan_inputs_from_files(args)
    trace = []
    try:
        plans = plan(fingerprint, dataset_json, settings, dataset_name=dataset_name, trace=trace)
    except ValueError as e:
        raise UserError(f"cannot plan {dataset_name or output.stem}: {e}") from None
    plans, kept = merge_existing_plans(plans, output)
    save_plans(plans, output)
    return plans, output, kept, trace


def _cmd_plan(args) -> int:
    from nnseg_nb.planning import format_explanation, plan_dataset, summary_lines, with_changes

    problems = _plan_argument_problems(args)
    if problems:
        raise UserError(*problems)
    settings = _plan_settings(args)
    spacing = args.overwrite_target_spacing
    if args.dataset is not None:
        done = plan_dataset(
            args.dataset,
            settings,
            plans_name=args.plans_name,
            overwrite_target_spacing=spacing,
            plans_file=args.output,
            num_workers=args.num_workers,
        )
        print(f"fingerprint: {'computing ' if done.fingerprint_computed else ''}{_shown(done.fingerprint_file)}")
        plans, output, kept, trace, settings = (
            done.plans,
            done.plans_file,
            done.kept,
            done.trace,
            done.settings,
        )
    else:
        settings = with_changes(settings, plans_name=args.plans_name, overwrite_target_spacing=spacing)
        plans, output, kept, trace = _plan_from_files(args, settings)
    if args.explain:
        print(format_explanation(trace) + "\n")
    print(
        f"wrote {_shown(output)} ({settings.planner_name}, {settings.gpu_memory_target_gb:g} GB GPU target)"
    )
    print("\n".join(summary_lines(plans, kept)))
    return 0


# --- preprocess (nnseg_nb.preprocessing) -----------------------------------------------------


def _add_preprocess_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="crop, normalize and resample a dataset (nnUNetv2_preprocess)",
        description="Preprocess every training case as nnU-Net's DefaultPreprocessor "
        "does, into <output>/<data_identifier>/<case>.npy, <case>_seg.npy, "
        "<case>_class_locations.npz and <case>.json. Cases already done with the same plans and "
        "source files are skipped unless --overwrite.",
    )
    parser.add_argument("dataset", help="raw dataset: folder, DatasetXXX_Name, Name or id")
    parser.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        required=True,
        metavar="CONFIG",
        help="configurations of the plans, e.g. 2d 3d_fullres",
    )
    parser.add_argument("--plans", default=None, help="plans JSON (default <output>/nnUNetPlans.json)")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="the dataset's preprocessed folder (default <preprocessed>/<DatasetXXX_Name>)",
    )
    parser.add_argument(
        "-np",
        "--num-workers",
        type=int,
        default=None,
        help="processes (default nnU-Net's: 8 for 2d and 3d_lowres, 4 otherwise; at most the CPU count)",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo cases that are up to date")
    parser.set_defaults(func=_cmd_preprocess)


def _cmd_preprocess(args) -> int:
    from nnseg_nb.preprocessing import preprocess_dataset

    if args.num_workers is not None and args.num_workers < 1:
        raise UserError(f"-np must be at least 1, got {args.num_workers}")
    results = preprocess_dataset(
        args.dataset,
        args.configurations,
        plans=args.plans,
        output_folder=args.output,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
    )
    for result in results:
        print(
            f"{result.configuration}: {len(result.processed)} preprocessed, {len(result.up_to_date)} up to date "
            f"-> {_shown(result.folder)}"
        )
    return 0


# --- demo-data (nnseg_nb.demo_data) ---------------------------------------------------------


def _add_demo_data_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-data",
        help="build the demo datasets (Dataset901-904) in the raw root",
        description="Build small raw datasets to learn and test on: real brain MRI "
        "(Dataset901_BrainTissue) and synthetic anisotropic, multi-channel "
        "and 2D sets. The same seed gives the same files; a complete build "
        "from the same seed is kept.",
    )
    parser.add_argument(
        "-o",
        "--output-root",
        default=None,
        help="raw root the DatasetXXX_Name folders go to (default $nnUNet_raw, else nnseg_data/raw in "
        "the clone's root, or in the working directory outside a clone)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="build only these: names, short names or ids (e.g. 901 Shapes2D)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild even if up to date, and replace a folder of that name that is not a demo build",
    )
    parser.set_defaults(func=_cmd_demo_data)


def _cmd_demo_data(args) -> int:
    from nnseg_nb.demo_data import build_demo_datasets, demo_build_status, select_demo_datasets
    from nnseg_nb.paths import describe_roots, project_root, raw_root

    root = Path(args.output_root) if args.output_root else raw_root()
    if not args.output_root:  # which raw root, and why; paths below are relative to the project folder
        print(f"project folder: {project_root()}\n{describe_roots().splitlines()[0]}")
    names = select_demo_datasets(args.only)
    current = {name for name in names if demo_build_status(root / name, args.seed) == "current"}
    try:
        folders = build_demo_datasets(root, seed=args.seed, only=names, overwrite=args.overwrite)
    except FileExistsError as e:
        raise UserError(str(e)) from None
    for name, folder in folders.items():
        print(f"{'up to date' if name in current and not args.overwrite else 'built':10s} {_shown(folder)}")
    print(f"seed {args.seed}; check one with: nnseg-nb verify {next(iter(folders))}")
    return 0


# --- notebooks: run / batch / demo (nnseg_nb.runner) ------------------------------------------


def _add_notebook_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter; VALUE is typed like papermill's (True, 3, 0.5, [64,64], text)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds")


def _notebook_parameters(pairs: list[list[str]]) -> dict:
    from nnseg_nb.runner import parse_value

    return {name: parse_value(value) for name, value in pairs}


def _result_line(status: str, name: str, duration_s: float, figures: dict) -> str:
    from nnseg_nb.runner import headline

    shown = "  ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in headline(figures).items()
    )
    return f"{status:5s} {name}  {duration_s:.1f} s  {shown}".rstrip()


def _add_run_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run one notebook headless and collect its results.json",
        description="Run a notebook (.py or .ipynb) with papermill in a fresh kernel.",
    )
    parser.add_argument("notebook", help="notebooks/NN_name.py or .ipynb")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="executed notebook (default runs/<name>/<parameters or time>/executed.ipynb)",
    )
    parser.add_argument(
        "--cwd", default=None, help="the kernel's working directory (default: the run folder)"
    )
    parser.add_argument("--log-output", action="store_true", help="stream the cells' output while running")
    _add_notebook_options(parser)
    parser.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from nnseg_nb.runner import NotebookError, run_notebook

    try:
        result = run_notebook(
            args.notebook,
            output=args.output,
            parameters=_notebook_parameters(args.parameter),
            cwd=args.cwd,
            timeout=args.timeout,
            log_output=args.log_output,
        )
    except NotebookError as e:
        raise UserError(e.summary) from None
    print(_result_line("ok", args.notebook, result.duration_s, result.results or {}))
    print(f"executed notebook: {_shown(result.output)}")
    return 0


def _add_batch_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="run a notebook over a parameter grid, in parallel",
        description="Run a notebook once per combination of the --grid values; "
        "results go to <out>/<name>/batch_results.json(l).",
    )
    parser.add_argument("notebook")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="values of one parameter (repeat for a cartesian product); JSON lists allowed",
    )
    parser.add_argument("-j", "--workers", type=int, default=1, help="runs at a time (one kernel each)")
    parser.add_argument(
        "-o", "--out", default=None, help="folder holding the batch folder (default runs/ of the project)"
    )
    parser.add_argument("--name", default=None, help="batch folder name (default: the notebook's name)")
    _add_notebook_options(parser)
    parser.set_defaults(func=_cmd_batch)


def _cmd_batch(args) -> int:
    from nnseg_nb.runner import ROW_FIELDS, parse_grid_item, run_batch

    if not args.grid:
        raise UserError("give at least one --grid NAME=V1,V2")
    grid = dict(parse_grid_item(item) for item in args.grid)
    grid_names = list(grid)

    def report(row: dict) -> None:
        params = " ".join(f"{k}={row[k]}" for k in grid_names)
        print(
            f"error {params}  {row['error']}"
            if row["status"] != "ok"
            else _result_line(
                "ok",
                params,
                row["duration_s"],
                {k: v for k, v in row.items() if k not in (*grid_names, *ROW_FIELDS)},
            ),
            flush=True,
        )

    rows = run_batch(
        args.notebook,
        grid,
        workers=args.workers,
        out_root=args.out,
        name=args.name,
        parameters=_notebook_parameters(args.parameter),
        timeout=args.timeout,
        on_result=report,
    )
    failed = sum(row["status"] != "ok" for row in rows)
    batch_dir = Path(rows[0]["run_dir"]).parent
    print(
        f"{len(rows)} runs: {len(rows) - failed} ok, {failed} failed -> {_shown(batch_dir / 'batch_results.json')}"
    )
    return 1 if failed else 0


def _add_demo_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="build the demo data and run every guided notebook (quick profile)",
        description="Build the demo datasets, run notebooks/NN_*.py in order, "
        "and write index.md / index.json.",
    )
    parser.add_argument(
        "-o", "--out", default=None, help="output folder (default runs/demo of the project: the clone's root)"
    )
    parser.add_argument(
        "--notebooks", default=None, help="folder of the notebooks (default: the repository's)"
    )
    _add_notebook_options(parser)
    parser.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from nnseg_nb.paths import describe_roots, project_root
    from nnseg_nb.runner import run_demo

    print(f"project folder: {project_root()}\n{describe_roots()}", flush=True)

    def report(entry: dict) -> None:
        print(
            _result_line("ok", entry["notebook"], entry["duration_s"], entry["headline"])
            if entry["status"] == "ok"
            else f"error {entry['error']}",
            flush=True,
        )

    index = run_demo(
        args.out,
        notebooks_folder=args.notebooks,
        parameters=_notebook_parameters(args.parameter),
        timeout=args.timeout,
        on_result=report,
    )
    failed = sum(e["status"] != "ok" for e in index["notebooks"])
    print(
        f"{len(index['notebooks'])} notebooks: {failed} failed -> {_shown(Path(index['out_root']) / 'index.md')}"
    )
    return 1 if failed else 0


def _add_record_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "record",
        help="store a notebook's golden outputs in its paired .ipynb",
        description="Run notebooks/NN_name.py in its folder with default parameters "
        "(as nbval does) and write the outputs into NN_name.ipynb.",
    )
    parser.add_argument("notebooks", nargs="+", help="the .py sources")
    parser.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds")
    parser.set_defaults(func=_cmd_record)


def _cmd_record(args) -> int:
    from nnseg_nb.runner import NotebookError, record_outputs

    for notebook in args.notebooks:
        try:
            print(f"recorded {record_outputs(notebook, timeout=args.timeout)}", flush=True)
        except NotebookError as e:
            raise UserError(e.summary) from None
    return 0


# --- train (nnseg_nb.training) ---------------------------------------------------------------


def _add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one fold of a configuration (nnU-Net's nnUNetv2_train)",
        description="Train DATASET CONFIG FOLD with nnU-Net's schedule into "
        "$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<CONFIG>/fold_<FOLD>. Several processes: "
        "torchrun --nproc_per_node N -m nnseg_nb.cli train ... (NCCL on GPUs, gloo on CPU).",
    )
    parser.add_argument("dataset", help="DatasetXXX_Name, name or id (planned and preprocessed)")
    parser.add_argument("configuration", help="e.g. 2d, 3d_fullres, or a custom configuration of the plans")
    parser.add_argument("fold", help="0-4 or 'all'")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 1000)")
    parser.add_argument("--iterations-per-epoch", type=int, default=None, help="default 250")
    parser.add_argument("--val-iterations", type=int, default=None, help="default 50")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the plans'")
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (default 1e-2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or mps (default: cuda if present)"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32",
    )
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile")
    parser.add_argument("--continue", dest="continue_training", action="store_true", help="resume the fold")
    parser.add_argument("--plans", default="nnUNetPlans", help="plans name (default nnUNetPlans)")
    parser.add_argument("--trainer-name", default="nnUNetTrainer", help="name of the output folder's trainer")
    parser.add_argument("--pretrained-weights", default=None, metavar="FILE", help="checkpoint to fine-tune")
    parser.add_argument("-np", "--num-workers", type=int, default=None, help="patch workers (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    parser.add_argument(
        "--no-validation", action="store_true", help="skip predicting the validation cases after training"
    )
    parser.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    import dataclasses

    import torch.distributed as dist

    from nnseg_nb.training import NNUNET, NonFiniteLossError, train

    overrides = {
        "num_epochs": args.epochs,
        "iterations_per_epoch": args.iterations_per_epoch,
        "val_iterations": args.val_iterations,
        "batch_size": args.batch_size,
        "initial_lr": args.lr,
        "seed": args.seed,
        "num_workers": args.num_workers,
    }
    settings = dataclasses.replace(
        NNUNET,
        **{k: v for k, v in overrides.items() if v is not None},
        device=args.device,
        precision=args.precision,
        compile={"auto": None, "on": True, "off": False}[args.compile],
        progress=not args.quiet,
        validate=not args.no_validation,
    )
    fold = args.fold if args.fold == "all" else int(args.fold) if args.fold.isdigit() else None
    if fold is None:
        raise UserError(f"fold must be a number or 'all', got {args.fold!r}")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # started by torchrun
    if distributed:
        import torch

        on_gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if on_gpu else "gloo")
        settings = dataclasses.replace(settings, progress=settings.progress and dist.get_rank() == 0)
    try:
        result = train(
            args.dataset,
            args.configuration,
            fold,
            settings,
            plans_name=args.plans,
            trainer_name=args.trainer_name,
            continue_training=args.continue_training,
            pretrained_weights=args.pretrained_weights,
        )
    except NonFiniteLossError as error:
        raise UserError(str(error)) from None
    finally:
        if distributed:
            dist.destroy_process_group()
    if result.stopped == "interrupted":
        return 130
    return 0


# --- evaluate, postprocessing, ensemble (nnseg_nb.evaluation, .postprocessing, .ensemble) -------


def _add_evaluate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predictions against references into summary.json (nnUNetv2_evaluate_simple)",
        description="Dice, IoU, TP/FP/FN/TN per case and class or region, as nnU-Net computes them, "
        "plus HD95 and normalized surface Dice in mm. Writes nnU-Net's summary.json.",
    )
    parser.add_argument("reference_folder", help="folder of reference label maps")
    parser.add_argument("prediction_folder", help="folder of predicted label maps (same file names)")
    parser.add_argument(
        "-l",
        "--labels",
        nargs="+",
        default=None,
        metavar="L",
        help="labels to score, e.g. 1 2; a region as 1,2 (default: from --dataset-json)",
    )
    parser.add_argument("-il", "--ignore-label", type=int, default=None, help="reference value not scored")
    parser.add_argument(
        "--dataset-json", default=None, help="dataset.json: labels or regions, ignore label and file ending"
    )
    parser.add_argument(
        "-o", "--output", default=None, help="summary file (default PRED_FOLDER/summary.json)"
    )
    parser.add_argument(
        "-np", "--num-workers", type=int, default=None, help="processes (default min(4, CPUs))"
    )
    parser.add_argument(
        "--chill", action="store_true", help="allow references without a prediction (they are not scored)"
    )
    parser.add_argument("--no-distance", action="store_true", help="leave out HD95 and NSD (faster)")
    parser.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1)")
    parser.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from nnseg_nb.dataset import load_dataset_json
    from nnseg_nb.evaluation import evaluate_folders, key_of, labels_or_regions_from_dataset_json

    if args.num_workers is not None and args.num_workers < 1:
        raise UserError(f"-np must be at least 1, got {args.num_workers}")
    ignore_label, file_ending = args.ignore_label, None
    if args.dataset_json:
        dataset_json = load_dataset_json(args.dataset_json)
        labels_or_regions = labels_or_regions_from_dataset_json(dataset_json)
        file_ending = dataset_json["file_ending"]
        ignore_label = dataset_json["labels"].get("ignore") if ignore_label is None else ignore_label
    if args.labels:
        try:
            labels_or_regions = [
                tuple(int(v) for v in x.split(",")) if "," in x else int(x) for x in args.labels
            ]
        except ValueError:
            raise UserError(
                f"-l takes integers, or regions such as 1,2; got {' '.join(args.labels)}"
            ) from None
    elif not args.dataset_json:
        raise UserError("give the labels to score with -l (e.g. -l 1 2) or a --dataset-json")
    output = Path(args.output) if args.output else Path(args.prediction_folder) / "summary.json"
    summary = evaluate_folders(
        args.reference_folder,
        args.prediction_folder,
        labels_or_regions,
        ignore_label,
        file_ending=file_ending,
        output_file=output,
        num_workers=args.num_workers,
        allow_missing_predictions=args.chill,
        distance_metrics_on=not args.no_distance,
        nsd_tolerance_mm=args.nsd_tolerance,
    )
    print(f"{len(summary['metric_per_case'])} cases -> {output}")
    for key, metrics in [*summary["mean"].items(), ("foreground", summary["foreground_mean"])]:
        name = key if key == "foreground" else key_of(key)
        extra = f"  HD95 {metrics['HD95']:.2f} mm  NSD {metrics['NSD']:.4f}" if "HD95" in metrics else ""
        print(f"{name:>12}  Dice {metrics['Dice']:.4f}  IoU {metrics['IoU']:.4f}{extra}")
    return 0


def _add_determine_postprocessing_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "determine-postprocessing",
        help="decide nnU-Net's largest-component postprocessing on CV predictions",
        description="Try keeping only the largest component of all foreground, then of each class or "
        "region, keeping what improves the mean Dice (nnUNetv2_determine_postprocessing). Writes "
        "postprocessing.json/.pkl and postprocessed/ into PRED_FOLDER.",
    )
    parser.add_argument(
        "prediction_folder", help="predicted label maps (e.g. crossval_results_folds_0_1_2_3_4)"
    )
    parser.add_argument("reference_folder", help="ground truth label maps (labelsTr or gt_segmentations)")
    parser.add_argument("--plans", default=None, help="plans file (accepted as nnU-Net's; not needed here)")
    parser.add_argument("--dataset-json", default=None, help="default PRED_FOLDER/dataset.json")
    parser.add_argument(
        "-np", "--num-workers", type=int, default=None, help="processes (default min(4, CPUs))"
    )
    parser.add_argument("--remove-postprocessed", action="store_true", help="do not keep postprocessed/")
    parser.set_defaults(func=_cmd_determine_postprocessing)


def _cmd_determine_postprocessing(args) -> int:
    from nnseg_nb.postprocessing import determine_postprocessing

    result = determine_postprocessing(
        args.prediction_folder,
        args.reference_folder,
        args.plans,
        args.dataset_json,
        num_workers=args.num_workers,
        keep_postprocessed_files=not args.remove_postprocessed,
    )
    for step in result.steps:
        verdict = "accepted" if step.accepted else "rejected"
        print(
            f"{verdict}: largest component of {step.operation['labels_or_regions']} "
            f"({step.judged_on} Dice {step.dice_before:.5f} -> {step.dice_after:.5f})"
        )
    print(f"postprocessing: {result.postprocessing_kwargs or 'none'} -> {Path(args.prediction_folder)}")
    return 0


def _add_apply_postprocessing_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "apply-postprocessing",
        help="apply a postprocessing.json/.pkl to a folder (nnUNetv2_apply_postprocessing)",
        description="Apply the operations of a postprocessing.json (or nnU-Net's postprocessing.pkl) to "
        "every label map of IN, writing them to OUT with the same geometry.",
    )
    parser.add_argument("-i", "--input", required=True, help="folder of label maps")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("-pp", "--postprocessing", required=True, help="postprocessing.json or .pkl")
    parser.add_argument("--file-ending", default=None, help="default: IN/dataset.json's, else .nii.gz")
    parser.add_argument(
        "-np", "--num-workers", type=int, default=None, help="processes (default min(4, CPUs))"
    )
    parser.set_defaults(func=_cmd_apply_postprocessing)


def _cmd_apply_postprocessing(args) -> int:
    from nnseg_nb.postprocessing import apply_postprocessing

    written = apply_postprocessing(
        args.input, args.output, args.postprocessing, args.file_ending, num_workers=args.num_workers
    )
    print(f"postprocessed {len(written)} files -> {args.output}")
    return 0


def _add_ensemble_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ensemble",
        help="average the probabilities of several prediction folders (nnUNetv2_ensemble)",
        description="For every case, average the .npz probabilities of the input folders (predicted "
        "with --save_probabilities) and write the label map with the first folder's geometry.",
    )
    parser.add_argument("-i", "--input", nargs="+", required=True, help="prediction folders")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--save-npz", action="store_true", help="also write the averaged .npz and .pkl")
    parser.add_argument("--dataset-json", default=None, help="default: the first folder's dataset.json")
    parser.add_argument(
        "-np", "--num-workers", type=int, default=None, help="processes (default min(4, CPUs))"
    )
    parser.set_defaults(func=_cmd_ensemble)


def _cmd_ensemble(args) -> int:
    from nnseg_nb.ensemble import ensemble_folders

    written = ensemble_folders(
        args.input, args.output, args.save_npz, num_workers=args.num_workers, dataset_json=args.dataset_json
    )
    print(f"ensembled {len(written)} cases of {len(args.input)} folders -> {args.output}")
    return 0


def _add_find_best_configuration_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "find-best-configuration",
        help="rank trained configurations and pair ensembles on CV Dice (nnUNetv2_find_best_configuration)",
        description="Gather each model's fold validations, ensemble every pair, pick the best foreground "
        "mean Dice, determine its postprocessing and write inference_information.json and "
        "inference_instructions.txt into the dataset's results folder.",
    )
    parser.add_argument("dataset", help="DatasetXXX_Name, Name or id")
    parser.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        default=["2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"],
        help="candidate configurations (those not in the plans are skipped)",
    )
    parser.add_argument("-tr", "--trainers", nargs="+", default=["nnUNetTrainer"], help="trainer names")
    parser.add_argument("-p", "--plans", nargs="+", default=["nnUNetPlans"], help="plans identifiers")
    parser.add_argument("-f", "--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds")
    parser.add_argument("--disable-ensembling", action="store_true", help="single models only")
    parser.add_argument(
        "-np", "--num-workers", type=int, default=None, help="processes (default min(4, CPUs))"
    )
    parser.set_defaults(func=_cmd_find_best_configuration)


def _cmd_find_best_configuration(args) -> int:
    from nnseg_nb.model_selection import TrainedModel, find_best_configuration, inference_instructions

    models = [TrainedModel(c, t, p) for t in args.trainers for c in args.configurations for p in args.plans]
    info = find_best_configuration(
        args.dataset, models, not args.disable_ensembling, args.folds, num_workers=args.num_workers
    )
    for identifier, dice in info["all_results"].items():
        print(f"{dice:.5f}  {identifier}")
    print(inference_instructions(info))
    return 0


# --- predict (nnseg_nb.predict) ------------------------------------------------------------------


def _add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict images with a trained model (nnUNetv2_predict / nnUNetv2_predict_from_modelfolder)",
        description="Sliding-window prediction as nnU-Net's: the model folder's plans, step 0.5, Gaussian "
        "weights, mirroring, fold logits averaged; outputs with the inputs' geometry. Give the model "
        "folder (-m) or the dataset and configuration (-d, -c) to find it in the results root.",
    )
    parser.add_argument("-i", "--input", required=True, help="folder of {case}_{XXXX}{file_ending} images")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument(
        "-m", "--model-folder", default=None, help="<Trainer>__<Plans>__<configuration> folder"
    )
    parser.add_argument("-d", "--dataset", default=None, help="dataset name or id (with -c)")
    parser.add_argument(
        "-c", "--configuration", default=None, help="configuration, e.g. 3d_fullres (with -d)"
    )
    parser.add_argument("-tr", "--trainer", default="nnUNetTrainer", help="trainer name (with -d)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans name (with -d)")
    parser.add_argument(
        "-f", "--folds", nargs="+", default=None, help="folds, or 'all' (default: every fold_k)"
    )
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="default cpu")
    parser.add_argument("--step-size", type=float, default=0.5, help="tile step, a fraction of the patch")
    parser.add_argument("--no-mirroring", action="store_true", help="no mirroring test-time augmentation")
    parser.add_argument("--save-probabilities", action="store_true", help="also {case}.npz + {case}.pkl")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast: auto = fp16 on CUDA, bf16 on CPUs with native bf16, else fp32",
    )
    parser.add_argument("-np", "--num-workers", type=int, default=2, help="preprocessing/export threads")
    parser.add_argument(
        "--prev-stage-predictions", default=None, help="cascade: the previous stage's outputs"
    )
    parser.add_argument("--continue-prediction", action="store_true", help="skip cases already predicted")
    parser.set_defaults(func=_cmd_predict)


def _predict_model_folder(args) -> Path:
    from nnseg_nb.paths import find_dataset, results_root

    if args.model_folder:
        if args.dataset or args.configuration:
            raise UserError("give either -m MODEL_FOLDER or -d DATASET -c CONFIGURATION, not both")
        return Path(args.model_folder)
    if not (args.dataset and args.configuration):
        raise UserError("give -m MODEL_FOLDER, or -d DATASET and -c CONFIGURATION")
    dataset_folder = find_dataset(args.dataset, results_root())
    return dataset_folder / f"{args.trainer}__{args.plans}__{args.configuration}"


def _cmd_predict(args) -> int:
    from nnseg_nb.inference import load_model
    from nnseg_nb.predict import PredictionSettings, predict_folder

    if args.num_workers < 1:
        raise UserError(f"-np must be at least 1, got {args.num_workers}")
    if not 0 < args.step_size <= 1:
        raise UserError(f"--step-size must be in (0, 1], got {args.step_size}")
    folds = None
    if args.folds:
        try:
            folds = [f if f == "all" else int(f) for f in args.folds]
        except ValueError:
            raise UserError(f"-f takes fold numbers or 'all', got {' '.join(args.folds)}") from None
    model = load_model(_predict_model_folder(args), folds, args.checkpoint, args.device)
    settings = PredictionSettings(
        tile_step_size=args.step_size,
        use_mirroring=not args.no_mirroring,
        save_probabilities=args.save_probabilities,
        precision=args.precision,
        num_workers=args.num_workers,
        overwrite=not args.continue_prediction,
    )
    report = predict_folder(model, args.input, args.output, args.prev_stage_predictions, settings)
    print(
        f"{len(report.written)} case(s) -> {args.output} in {report.seconds:.1f} s"
        + (f", {len(report.skipped)} skipped (already predicted)" if report.skipped else "")
    )
    if report.failed:
        raise UserError(*report.failed.values())
    return 0


# --- registry: name -> (add_parser, help) -------------------------------------------------------
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "verify": _add_verify_parser,
    "convert": _add_convert_parser,
    "fingerprint": _add_fingerprint_parser,
    "plan": _add_plan_parser,
    "preprocess": _add_preprocess_parser,
    "train": _add_train_parser,
    "run": _add_run_parser,
    "batch": _add_batch_parser,
    "demo": _add_demo_parser,
    "demo-data": _add_demo_data_parser,
    "record": _add_record_parser,
    "evaluate": _add_evaluate_parser,
    "determine-postprocessing": _add_determine_postprocessing_parser,
    "apply-postprocessing": _add_apply_postprocessing_parser,
    "ensemble": _add_ensemble_parser,
    "find-best-configuration": _add_find_best_configuration_parser,
    "predict": _add_predict_parser,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnseg-nb",
        description="nnU-Net v2, faithful and readable: datasets, planning, preprocessing, notebooks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for add_parser in SUBCOMMANDS.values():
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `nnseg-nb verify 901 | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush would fail again
        return 1
    except (ValueError, OSError) as e:  # OSError: missing files, permissions, a full disk
        for line in str(e).splitlines() or [type(e).__name__]:  # several problems: one line each
            print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
