"""Training curves: nnU-Net's ``progress.png`` and a figure that redraws live in a notebook.

    fig = training_curves(fold_folder)          # loss, pseudo Dice + EMA, learning rate (a Figure)
    live = LiveCurves()                         # in a notebook: one output that redraws each epoch
    train(..., callback=live.update)            # headless (papermill, CI) it leaves the last figure

``save_progress_png`` draws the three stacked panels of nnU-Net's ``LocalLogger.plot_progress_png``
(losses with the pseudo Dice and its EMA on a twin axis; epoch durations; the learning rate).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from matplotlib.figure import Figure

from nnseg_nb.checkpoint import TrainingLog, load_checkpoint
from nnseg_nb.utils import atomic_write_bytes
from nnseg_nb.viz.overlay import figure_png


def load_log(log_or_folder: TrainingLog | str | os.PathLike) -> TrainingLog:
    """A log itself, or read from a fold folder (``training_log.jsonl``, else a checkpoint) or a file."""
    if isinstance(log_or_folder, TrainingLog):
        return log_or_folder
    path = Path(log_or_folder)
    if path.is_dir():
        if (path / "training_log.jsonl").is_file():
            path = path / "training_log.jsonl"
        else:
            found = [
                path / n for n in ("checkpoint_final.pth", "checkpoint_latest.pth") if (path / n).is_file()
            ]
            if not found:
                raise FileNotFoundError(f"{path}: no training_log.jsonl and no checkpoint")
            path = found[0]
    if path.suffix == ".jsonl":
        log = TrainingLog()
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for key, values in log.to_json().items():
                values.append(record[key])
        return log
    return TrainingLog.from_json(load_checkpoint(path)["logging"])


def progress_figure(log: TrainingLog) -> Figure:
    """nnU-Net's progress.png layout: losses + pseudo Dice, epoch duration, learning rate."""
    epochs = list(range(log.epochs))
    fig = Figure(figsize=(10, 14))
    top, middle, bottom = fig.subplots(3, 1)
    top.plot(epochs, log.train_losses[: len(epochs)], color="b", label="loss_tr", linewidth=2)
    top.plot(epochs, log.val_losses[: len(epochs)], color="r", label="loss_val", linewidth=2)
    dice_axis = top.twinx()
    dice_axis.plot(epochs, log.mean_fg_dice[: len(epochs)], color="g", ls="dotted", label="pseudo dice")
    dice_axis.plot(
        epochs, log.ema_fg_dice[: len(epochs)], color="g", label="pseudo dice (mov. avg.)", linewidth=2
    )
    top.set(xlabel="epoch", ylabel="loss")
    dice_axis.set_ylabel("pseudo dice")
    top.legend(loc=(0, 1))
    dice_axis.legend(loc=(0.2, 1))
    durations = [e - s for s, e in zip(log.epoch_start_timestamps, log.epoch_end_timestamps)][: len(epochs)]
    middle.plot(epochs, durations, color="b", label="epoch duration", linewidth=2)
    middle.set_ylim(0, max(durations, default=1) * 1.1 or 1)
    middle.set(xlabel="epoch", ylabel="time [s]")
    middle.legend(loc=(0, 1))
    bottom.plot(epochs, log.lrs[: len(epochs)], color="b", label="learning rate", linewidth=2)
    bottom.set(xlabel="epoch", ylabel="learning rate")
    bottom.legend(loc=(0, 1))
    fig.tight_layout()
    return fig


def save_progress_png(log: TrainingLog, path: str | os.PathLike) -> None:
    """Write ``progress.png`` atomically (redrawn after every epoch, as nnU-Net does)."""
    atomic_write_bytes(path, figure_png(progress_figure(log), dpi=60))


def training_curves(log_or_folder: TrainingLog | str | os.PathLike) -> Figure:
    """Loss, pseudo Dice with its EMA, and the learning rate side by side, one point per epoch."""
    log = load_log(log_or_folder)
    epochs = list(range(log.epochs))
    fig = Figure(figsize=(13, 3.6))
    loss_axis, dice_axis, lr_axis = fig.subplots(1, 3)
    loss_axis.plot(epochs, log.train_losses, label="train", color="tab:blue")
    loss_axis.plot(epochs, log.val_losses, label="validation", color="tab:red")
    loss_axis.set(title="loss (Dice + CE)", xlabel="epoch")
    loss_axis.legend()
    dice_axis.plot(epochs, log.mean_fg_dice, ls="dotted", color="tab:green", label="pseudo Dice")
    dice_axis.plot(epochs, log.ema_fg_dice, color="tab:green", label="EMA (picks checkpoint_best)")
    dice_axis.set(title="validation pseudo Dice", xlabel="epoch", ylim=(0, 1))
    dice_axis.legend(loc="lower right")
    lr_axis.plot(epochs, log.lrs, color="tab:purple")
    lr_axis.set(title="learning rate (poly)", xlabel="epoch")
    fig.tight_layout()
    return fig


class LiveCurves:
    """Training curves redrawn in place after each epoch (pass ``update`` as ``train``'s callback).

    In Jupyter the figure lives in one display that is updated; headless under papermill or nbval the same
    display simply holds the last figure drawn. Outside IPython (a script) nothing is shown and
    ``figure`` keeps the last figure.
    """

    def __init__(self, every: int = 1):
        self.every, self.handle, self.figure = every, None, None

    def update(self, record: dict, log: TrainingLog) -> None:
        if record["epoch"] % self.every:
            return
        self.figure = training_curves(log)
        try:
            from IPython import get_ipython
        except ImportError:
            return
        if get_ipython() is None:
            return
        from IPython.display import Image, display

        image = Image(data=figure_png(self.figure, dpi=80), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
