"""Subcommands that make and check raw datasets: ``demo-data``, ``convert``, ``verify``.

    nnseg-nb demo-data --only 904
    nnseg-nb convert msd Task04_Hippocampus
    nnseg-nb verify 4

Each subcommand is a pair, ``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (a thin call into
:mod:`nnseg_nb.demo_data`, :mod:`nnseg_nb.convert` or :mod:`nnseg_nb.verify`); :mod:`nnseg_nb.cli`
registers the parsers. The source data is never changed: convert writes a new ``DatasetXXX_Name``
folder and verify only reads.
"""

from __future__ import annotations

from pathlib import Path

from nnseg_nb.cli.common import UserError, _shown

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
