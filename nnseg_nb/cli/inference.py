"""Subcommands that use trained models: predict, evaluate, postprocess, ensemble, pick the best.

    nnseg-nb predict -i imagesTs -o pred -d 901 -c 3d_fullres -f 0
    nnseg-nb evaluate labelsTr pred --dataset-json dataset.json
    nnseg-nb find-best-configuration 901 -c 2d 3d_fullres

Each subcommand is a pair, ``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (a thin call into
:mod:`nnseg_nb.predict`, :mod:`nnseg_nb.evaluation`, :mod:`nnseg_nb.postprocessing`,
:mod:`nnseg_nb.ensemble` or :mod:`nnseg_nb.model_selection`), mirroring nnU-Net's ``nnUNetv2_predict``,
``nnUNetv2_evaluate_folder``, ``nnUNetv2_determine_postprocessing``, ``nnUNetv2_apply_postprocessing``,
``nnUNetv2_ensemble`` and ``nnUNetv2_find_best_configuration``.
"""

from __future__ import annotations

from pathlib import Path

from nnseg_nb.cli.common import UserError

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
