"""Subcommands that train networks: ``train`` (one fold) and ``cv`` (the five-fold cross-validation).

    nnseg-nb train 901 3d_fullres 0
    torchrun --nproc_per_node 2 -m nnseg_nb.cli train 901 3d_fullres 0
    nnseg-nb cv 904 -c 2d --folds 0 1

Each subcommand is a pair, ``_add_<name>_parser`` (arguments) and ``_cmd_<name>`` (a thin call into
:mod:`nnseg_nb.training` or :mod:`nnseg_nb.crossval`), mirroring ``nnUNetv2_train``. ``train`` also runs
under torchrun (DistributedDataParallel); :mod:`nnseg_nb.cli.__main__` makes ``-m nnseg_nb.cli`` work.
"""

from __future__ import annotations

import os

from nnseg_nb.cli.common import UserError

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


# --- cross-validation (nnseg_nb.crossval) -------------------------------------------------------


def _add_cv_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cv",
        help="train the folds of configurations, resumably, and merge their validations (nnUNetv2_train x 5)",
        description="Train every fold of each configuration that is not done yet (done: checkpoint_final.pth "
        "and validation/summary.json), resume interrupted ones, then write each configuration's "
        "crossval_results_folds_<folds>/ with its summary.json. A 3d_cascade_fullres fold starts once every "
        "3d_lowres fold of the run is done. Prints one line per fold.",
    )
    parser.add_argument("dataset", help="DatasetXXX_Name, Name or id (planned and preprocessed)")
    parser.add_argument("-c", "--configurations", nargs="+", required=True, help="e.g. 2d 3d_fullres")
    parser.add_argument("--folds", "-f", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds (0-4)")
    parser.add_argument(
        "-j", "--jobs", type=int, default=1, help="folds trained at once, each its own process"
    )
    parser.add_argument("--gpus", nargs="+", type=int, default=None, help="GPU ids the parallel folds share")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("-tr", "--trainer", default="nnUNetTrainer", help="trainer name (model folder)")
    parser.add_argument("--no-npz", action="store_true", help="do not keep validation probabilities")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (nnU-Net: 1000)")
    parser.add_argument("--iterations-per-epoch", type=int, default=None, help="nnU-Net: 250")
    parser.add_argument("--val-iterations", type=int, default=None, help="validation batches per epoch (50)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random stream (0)")
    parser.add_argument("--num-workers", type=int, default=None, help="loader processes per fold (2)")
    parser.add_argument(
        "-np", "--num-processes", type=int, default=None, help="processes scoring validations (min(4, CPUs))"
    )
    parser.set_defaults(func=_cmd_cv)


def _cmd_cv(args) -> int:
    import dataclasses

    from nnseg_nb import crossval
    from nnseg_nb.training import NNUNET

    if args.jobs < 1:
        raise UserError(f"-j must be at least 1, got {args.jobs}")
    options = {
        "num_epochs": args.epochs,
        "iterations_per_epoch": args.iterations_per_epoch,
        "val_iterations": args.val_iterations,
        "device": args.device,
        "seed": args.seed,
        "num_workers": args.num_workers,
    }
    settings = dataclasses.replace(NNUNET, **{k: v for k, v in options.items() if v is not None})
    result = crossval.cross_validate(
        args.dataset, args.configurations, args.folds, settings, jobs=args.jobs, gpus=args.gpus,
        plans_name=args.plans, trainer_name=args.trainer, save_probabilities=not args.no_npz,
        train_function=crossval.train_fold, num_workers=args.num_processes,
    )  # fmt: skip
    print(f"{len(result.outcomes)} folds in {result.seconds:.0f} s")
    return 1 if result.failed else 0
