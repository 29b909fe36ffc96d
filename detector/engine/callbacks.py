"""Trainer hooks: progress bar, EMA, evaluation, checkpoints, early stopping, results logging.

A callback overrides any of the seven events; each receives the ``Trainer``. Events, in order:
``before_train``, then per epoch ``before_epoch``, per batch ``before_step`` / ``after_backward`` /
``after_step``, then ``after_epoch``; finally ``after_train``. Callbacks that own resumable state restore it
in ``before_train`` from ``trainer.resume_ckpt`` (the loaded checkpoint dict, or None).
"""

from __future__ import annotations

import copy
import csv
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from detector.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from detector.engine.ema import ModelEMA

if TYPE_CHECKING:
    from detector.engine.trainer import Trainer

LOGGER = logging.getLogger("detector")


class Callback:
    """Base class: every event is a no-op."""

    def before_train(self, trainer: Trainer) -> None: ...
    def before_epoch(self, trainer: Trainer) -> None: ...
    def before_step(self, trainer: Trainer) -> None: ...
    def after_backward(self, trainer: Trainer) -> None: ...
    def after_step(self, trainer: Trainer) -> None: ...
    def after_epoch(self, trainer: Trainer) -> None: ...
    def after_train(self, trainer: Trainer) -> None: ...


class EMAHook(Callback):
    """Keeps ``trainer.ema`` (the weights that are validated and saved), updated after every optimiser step."""

    def before_train(self, trainer: Trainer) -> None:
        cfg = trainer.cfg.optim
        trainer.ema = ModelEMA(trainer.model, cfg.ema_decay, cfg.ema_tau)
        if trainer.resume_ckpt is not None:
            trainer.ema.ema.load_state_dict(trainer.resume_ckpt["model"])
            trainer.ema.load_state_dict(trainer.resume_ckpt["ema"])

    def after_step(self, trainer: Trainer) -> None:
        if trainer.optimizer_stepped:
            trainer.ema.update(trainer.model)


class ProgressBar(Callback):
    """One tqdm bar per epoch: epoch, GPU memory, running mean of each main-head loss, instances, image size.

    The loss values are read from the device only when the bar redraws (at most every 0.5 s and on the
    last batch), so the step itself never waits for the GPU.
    """

    refresh_s = 0.5

    def before_train(self, trainer: Trainer) -> None:
        names = trainer.loss_names
        self.header = ("%11s" * (4 + len(names))) % (
            "Epoch",
            "GPU_mem",
            *(f"{n}_loss" for n in names),
            "Instances",
            "Size",
        )

    def before_epoch(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        LOGGER.info("\n" + self.header)
        self.pbar = tqdm(total=trainer.batches_per_epoch, bar_format="{l_bar}{bar:10}{r_bar}", leave=True)
        self.last = 0.0
        self.done = 0

    def after_step(self, trainer: Trainer) -> None:
        self.done += 1
        last = self.done == trainer.batches_per_epoch
        now = time.monotonic()
        if not last and now - self.last < self.refresh_s:
            return
        self.last = now
        losses = trainer.epoch_loss_mean().tolist()
        trainer.check_finite(losses)
        mem = torch.cuda.memory_reserved(trainer.device) / 1e9 if trainer.device.type == "cuda" else 0.0
        self.pbar.set_description(
            ("%11s" * 2 + "%11.4g" * (len(losses) + 2))
            % (f"{trainer.epoch + 1}/{trainer.cfg.epochs}", f"{mem:.3g}G", *losses, trainer.instances, trainer.imgsz)
        )
        self.pbar.update(self.done - self.pbar.n)

    def after_epoch(self, trainer: Trainer) -> None:
        self.pbar.close()


class Evaluator(Callback):
    """Validates the EMA weights after each ``val.period`` epochs (and the last); tracks the best fitness.

    Sets ``trainer.metrics`` (12 COCO stats, P, R and val losses by name), ``trainer.fitness``,
    ``trainer.best_fitness``, ``trainer.best_epoch`` and ``trainer.is_best``.
    """

    def __init__(self, validator) -> None:
        self.validator = validator

    def before_train(self, trainer: Trainer) -> None:
        ckpt = trainer.resume_ckpt or {}
        trainer.best_fitness = ckpt.get("best_fitness")
        trainer.best_epoch = int(ckpt.get("best_epoch", -1))

    def after_epoch(self, trainer: Trainer) -> None:
        final = trainer.epoch + 1 == trainer.cfg.epochs or trainer.stop
        trainer.is_best = False
        if not final and (trainer.epoch + 1) % max(trainer.cfg.val.period, 1):
            trainer.metrics = {}
            return
        result = self.validator(trainer.ema.ema)
        trainer.metrics = result.summary()
        trainer.fitness = result.fitness
        if trainer.best_fitness is None or result.fitness > trainer.best_fitness:
            trainer.best_fitness, trainer.best_epoch, trainer.is_best = result.fitness, trainer.epoch, True

    def after_train(self, trainer: Trainer) -> None:
        """Validate ``best.pt`` once more, now with plots (PR curve, confusion matrix, prediction grids)."""
        best = trainer.run_dir / "weights" / "best.pt"
        if not best.is_file():
            return
        model = copy.deepcopy(trainer.ema.ema)
        model.load_state_dict(load_checkpoint(best)["model"])
        LOGGER.info(f"\nvalidating {best}")
        cfg = trainer.cfg
        trainer.final_result = self.validator(model, plots=cfg.plots and cfg.val.plots, save_json=cfg.val.save_json)


class Checkpointer(Callback):
    """Writes ``weights/last.pt`` every epoch, ``best.pt`` when fitness improved, ``epochN.pt`` every
    ``save_period`` epochs; at the end marks both files finished and drops the optimiser state."""

    def after_epoch(self, trainer: Trainer) -> None:
        ckpt = trainer.checkpoint()
        wdir = trainer.run_dir / "weights"
        save_checkpoint(ckpt, wdir / "last.pt")
        if trainer.is_best:
            copy_checkpoint(wdir / "last.pt", wdir / "best.pt")  # the same bytes: copy, not serialise twice
        period = trainer.cfg.save_period
        if period > 0 and (trainer.epoch + 1) % period == 0:
            copy_checkpoint(wdir / "last.pt", wdir / f"epoch{trainer.epoch + 1}.pt")

    def after_train(self, trainer: Trainer) -> None:
        wdir = trainer.run_dir / "weights"
        for name in ("last.pt", "best.pt"):
            path = wdir / name
            if path.is_file():
                ckpt = load_checkpoint(path)
                for key in ("optimizer", "scaler", "train_model"):
                    ckpt.pop(key, None)
                ckpt["finished"] = trainer.finish_reason
                save_checkpoint(ckpt, path)


class EarlyStopping(Callback):
    """Stops the run when the fitness has not improved for ``patience`` epochs (0 = never)."""

    def after_epoch(self, trainer: Trainer) -> None:
        patience = trainer.cfg.patience
        if patience > 0 and trainer.best_epoch >= 0 and trainer.epoch - trainer.best_epoch >= patience:
            trainer.stop = True
            trainer.finish_reason = (
                f"stopped early after epoch {trainer.epoch + 1}: no improvement for {patience} epochs "
                f"(best epoch {trainer.best_epoch + 1})"
            )
            LOGGER.info(trainer.finish_reason)


class ResultsLogger(Callback):
    """``results.csv`` (one row per epoch), TensorBoard scalars when installed, ``results.png`` and the
    labelled grids of the first training batches."""

    plot_every_s = 60.0  # results.png is redrawn at most this often (matplotlib costs ~1 s) and at the end

    def before_train(self, trainer: Trainer) -> None:
        self.csv = trainer.run_dir / "results.csv"
        self.last_plot = time.monotonic()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(trainer.run_dir))
        except ImportError:  # tensorboard is optional
            pass
        if trainer.resume_ckpt is not None and self.csv.is_file():
            drop_rows_after(self.csv, trainer.start_epoch)  # rows of an epoch that was cut off before its checkpoint

    def after_step(self, trainer: Trainer) -> None:
        if trainer.cfg.plots and trainer.epoch == trainer.start_epoch and trainer.batch_index < 3:
            from detector.engine.plots import plot_batch

            b = trainer.batch
            plot_batch(
                b["img"], b["batch_idx"], b["cls"], b["bboxes"], trainer.names,
                trainer.run_dir / f"train_batch{trainer.batch_index}.jpg",
            )  # fmt: skip

    def after_epoch(self, trainer: Trainer) -> None:
        row = {"epoch": trainer.epoch + 1}
        row.update({f"train/{k}": v for k, v in trainer.epoch_losses().items()})
        row.update(trainer.metrics)
        row["lr"] = trainer.optimizer.param_groups[1]["lr"]
        write_csv_row(self.csv, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.tb.add_scalar(k, v, trainer.epoch + 1)
        if trainer.cfg.plots and time.monotonic() - self.last_plot > self.plot_every_s:
            self.plot()

    def after_train(self, trainer: Trainer) -> None:
        if trainer.cfg.plots and self.csv.is_file():
            self.plot()
        if self.tb is not None:
            self.tb.close()

    def plot(self) -> None:
        from detector.engine.plots import plot_results

        plot_results(self.csv)
        self.last_plot = time.monotonic()


def write_csv_row(path: Path, row: dict) -> None:
    """Append ``row``; a new column (e.g. metrics first appearing after a skipped validation) rewrites the file."""
    rows: list[dict] = []
    fields = list(row)
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            old = list(reader.fieldnames or [])
        fields = old + [k for k in row if k not in old]
        if fields == old:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fields).writerow({k: _fmt(v) for k, v in row.items()})
            return
    rows.append({k: _fmt(v) for k, v in row.items()})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)


def drop_rows_after(path: Path, epochs_done: int) -> None:
    """Keep only the rows of the first ``epochs_done`` epochs."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if int(r["epoch"]) <= epochs_done]
        fields = list(reader.fieldnames or [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)
