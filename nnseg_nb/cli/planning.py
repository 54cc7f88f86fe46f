"""Subcommands from raw dataset to preprocessed data: ``fingerprint``, ``plan``, ``preprocess``.

    nnseg-nb fingerprint 902
    nnseg-nb plan 902 --planner resenc-m
    nnseg-nb preprocess 902 -c 3d_fullres

Each subcommand is a pair, ``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (a thin call into
:mod:`nnseg_nb.fingerprint`, :mod:`nnseg_nb.planning` or :mod:`nnseg_nb.preprocessing`), mirroring
``nnUNetv2_extract_fingerprint``, ``nnUNetv2_plan_experiment`` and ``nnUNetv2_preprocess``. ``plan`` also
works from files alone (``--fingerprint F --dataset-json J -o PLANS.json``), so its argument checks live here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nnseg_nb.cli.common import UserError, _shown

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
        print(
            f"fingerprint: {'computing ' if done.fingerprint_computed else ''}{_shown(done.fingerprint_file)}"
        )
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
