"""Trainer hooks: progress bar, evaluation, early stopping, results logging, checkpoints.

A callback overrides any of the seven events; each receives the ``Trainer`` (read-only: the loop's position
``epoch`` / ``iteration`` / ``batch_index`` / ``batch`` / ``last_step``, and the built parts). Events, in
order: ``before_train``, then per epoch ``before_epoch``, per batch ``before_step`` / ``after_backward`` /
``after_step``, then ``after_epoch``; finally ``after_train``.

Each callback owns its state: ``state_dict()`` is saved in the checkpoint under ``callbacks[name]`` and handed
back to ``load_state_dict`` before ``before_train`` when the run resumes. Callbacks run in ascending ``order``
(ties: the order they were given); one that reads another takes it as a constructor argument, so what it
reads is named, never an attribute left on the trainer. The only thing a callback asks of the trainer is
``trainer.request_stop(reason)``.
"""

from __future__ import annotations

import copy
import csv
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from detector import progress
from detector.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from detector.engine.train_loss import check_finite

if TYPE_CHECKING:
    from detector.engine.trainer import Trainer
    from detector.engine.validator import Validator, ValResult

LOGGER = logging.getLogger("detector")


class Callback:
    """Base class: every event is a no-op, no state, ``order`` 100 (after the default callbacks)."""

    order: int = 100

    @property
    def name(self) -> str:
        """Key of this callback's state in the checkpoint."""
        return type(self).__name__

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...

    def before_train(self, trainer: Trainer) -> None: ...
    def before_epoch(self, trainer: Trainer) -> None: ...
    def before_step(self, trainer: Trainer) -> None: ...
    def after_backward(self, trainer: Trainer) -> None: ...
    def after_step(self, trainer: Trainer) -> None: ...
    def after_epoch(self, trainer: Trainer) -> None: ...
    def after_train(self, trainer: Trainer) -> None: ...


class ProgressBar(Callback):
    """One tqdm bar per epoch: epoch, GPU memory, running mean of each main-head loss, instances, image size.

    The loss values are read from the device only when the bar redraws (at most every 0.5 s and on the
    last batch), so the step itself never waits for the GPU. A NaN/inf loss stops the run there.
    """

    order = 10
    refresh_s = 0.5

    def before_train(self, trainer: Trainer) -> None:
        names = trainer.losses.main_names
        self.header = ("%11s" * (4 + len(names))) % ("Epoch", "GPU_mem", *(f"{n}_loss" for n in names),
                                                     "Instances", "Size")  # fmt: skip

    def before_epoch(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        LOGGER.info("\n" + self.header)
        self.pbar = tqdm(
            total=trainer.parts.batches_per_epoch,
            bar_format="{l_bar}{bar:10}{r_bar}",
            leave=True,
            disable=not progress.enabled(),
        )
        self.last = 0.0
        self.done = 0

    def after_step(self, trainer: Trainer) -> None:
        self.done += 1
        last = self.done == trainer.parts.batches_per_epoch
        now = time.monotonic()
        if not last and now - self.last < self.refresh_s:
            return
        self.last = now
        losses = trainer.losses.main_mean().tolist()
        parts = trainer.parts
        hint = "With amp=True try amp=False; " if parts.amp_dtype is not None else ""
        check_finite(losses, f"epoch {trainer.epoch + 1}, batch {trainer.batch_index}",
                     f"{hint}lower optim.lr0 (now {parts.opt.lr0:g}) or check the labels")  # fmt: skip
        mem = torch.cuda.memory_reserved(parts.device) / 1e9 if parts.device.type == "cuda" else 0.0
        self.pbar.set_description(
            ("%11s" * 2 + "%11.4g" * (len(losses) + 2))
            % (f"{trainer.epoch + 1}/{trainer.cfg.epochs}", f"{mem:.3g}G", *losses, trainer.last_step.instances,
               trainer.cfg.imgsz)
        )  # fmt: skip
        self.pbar.update(self.done - self.pbar.n)

    def after_epoch(self, trainer: Trainer) -> None:
        self.pbar.close()


class Evaluator(Callback):
    """Validates the EMA weights after each ``val.period`` epochs (and the last); tracks the best fitness.

    Owns ``metrics`` (this epoch's numbers by name, ``{}`` when validation was skipped), ``improved`` (this
    epoch set a new best), ``best_fitness`` / ``best_epoch`` (its checkpoint state) and ``final`` (the
    ``ValResult`` of ``best.pt``, validated again with plots after training).
    """

    order = 20

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        self.metrics: dict[str, float] = {}
        self.improved = False
        self.best_fitness: float | None = None
        self.best_epoch = -1
        self.final: ValResult | None = None

    def state_dict(self) -> dict:
        return {"best_fitness": self.best_fitness, "best_epoch": self.best_epoch, "metrics": dict(self.metrics)}

    def load_state_dict(self, state: dict) -> None:
        self.best_fitness = state.get("best_fitness")
        self.best_epoch = int(state.get("best_epoch", -1))

    def after_epoch(self, trainer: Trainer) -> None:
        final = trainer.epoch + 1 == trainer.cfg.epochs or trainer.stop_requested
        self.improved, self.metrics = False, {}
        if not final and (trainer.epoch + 1) % max(trainer.cfg.val.period, 1):
            return
        result = self.validator(trainer.parts.ema.ema)
        self.metrics = result.summary()
        if self.best_fitness is None or result.fitness > self.best_fitness:
            self.best_fitness, self.best_epoch, self.improved = result.fitness, trainer.epoch, True

    def after_train(self, trainer: Trainer) -> None:
        """Validate ``best.pt`` once more, now with plots (PR curve, confusion matrix, prediction grids)."""
        best = trainer.run_dir / "weights" / "best.pt"
        if not best.is_file():
            return
        model = copy.deepcopy(trainer.parts.ema.ema)
        model.load_state_dict(load_checkpoint(best)["model"])
        LOGGER.info(f"\nvalidating {best}")
        cfg = trainer.cfg
        self.final = self.validator(model, plots=cfg.plots and cfg.val.plots, save_json=cfg.val.save_json)


class EarlyStopping(Callback):
    """Stops the run when ``evaluator``'s best fitness has not improved for ``patience`` epochs (0 = never)."""

    order = 30

    def __init__(self, evaluator: Evaluator, patience: int) -> None:
        self.evaluator, self.patience = evaluator, patience

    def after_epoch(self, trainer: Trainer) -> None:
        best = self.evaluator.best_epoch
        if self.patience > 0 and best >= 0 and trainer.epoch - best >= self.patience:
            reason = (
                f"stopped early after epoch {trainer.epoch + 1}: no improvement for {self.patience} epochs "
                f"(best epoch {best + 1})"
            )
            LOGGER.info(reason)
            trainer.request_stop(reason)


class ResultsLogger(Callback):
    """``results.csv`` (one row per epoch: train losses, ``evaluator``'s metrics, each parameter group's lr),
    ``results.png`` and the labelled grids of the first training batches. ``last_row`` is that epoch's row, which
    the experiment loggers (``detector.engine.loggers``: ``loggers=tensorboard,mlflow``) send on.

    State: how many epochs the csv holds, so a resumed run first drops the rows of an epoch that was cut off
    before its checkpoint.
    """

    order = 40
    plot_every_s = 60.0  # results.png is redrawn at most this often (matplotlib costs ~1 s) and at the end

    def __init__(self, evaluator: Evaluator | None = None) -> None:
        self.evaluator = evaluator
        self.rows = 0
        self.last_row: dict = {}

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = int(state.get("rows", 0))

    def before_train(self, trainer: Trainer) -> None:
        self.csv = trainer.run_dir / "results.csv"
        self.last_plot = time.monotonic()
        if self.csv.is_file():
            drop_rows_after(self.csv, self.rows)

    def after_step(self, trainer: Trainer) -> None:
        if trainer.cfg.plots and trainer.epoch == trainer.start_epoch and trainer.batch_index < 3:
            from detector.engine.plots import plot_batch

            b = trainer.batch
            plot_batch(
                b["img"], b["batch_idx"], b["cls"], b["bboxes"], trainer.parts.names,
                trainer.run_dir / f"train_batch{trainer.batch_index}.jpg",
            )  # fmt: skip

    def after_epoch(self, trainer: Trainer) -> None:
        row: dict = {"epoch": trainer.epoch + 1}
        row.update({f"train/{k}": v for k, v in trainer.losses.as_dict().items()})
        if self.evaluator is not None:
            row.update(self.evaluator.metrics)
        row.update(group_lrs(trainer.parts.optimizer))
        write_csv_row(self.csv, row)
        self.rows = trainer.epoch + 1
        self.last_row = row
        if trainer.cfg.plots and time.monotonic() - self.last_plot > self.plot_every_s:
            self.plot()

    def after_train(self, trainer: Trainer) -> None:
        if trainer.cfg.plots and self.csv.is_file():
            self.plot()

    def plot(self) -> None:
        from detector.engine.plots import plot_results

        plot_results(self.csv)
        self.last_plot = time.monotonic()


class Checkpointer(Callback):
    """Writes ``weights/last.pt`` every epoch, ``best.pt`` when ``evaluator`` saw a new best, ``epochN.pt``
    every ``save_period`` epochs; at the end marks both files finished and drops the optimiser state.

    Runs after every callback whose state it saves (lowest ``order`` first), so the checkpoint holds their
    state after this epoch.
    """

    order = 50

    def __init__(self, evaluator: Evaluator | None, save_period: int = 0) -> None:
        self.evaluator, self.save_period = evaluator, save_period

    def after_epoch(self, trainer: Trainer) -> None:
        ckpt = trainer.checkpoint()
        wdir = trainer.run_dir / "weights"
        save_checkpoint(ckpt, wdir / "last.pt")
        if self.evaluator is not None and self.evaluator.improved:
            copy_checkpoint(wdir / "last.pt", wdir / "best.pt")  # the same bytes: copy, not serialise twice
        if self.save_period > 0 and (trainer.epoch + 1) % self.save_period == 0:
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


def default_callbacks(validator: Validator, patience: int, save_period: int) -> list[Callback]:
    """Progress, evaluation, early stopping, results and checkpoints, wired to each other explicitly."""
    evaluator = Evaluator(validator)
    return [
        ProgressBar(),
        evaluator,
        EarlyStopping(evaluator, patience),
        ResultsLogger(evaluator),
        Checkpointer(evaluator, save_period),
    ]


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr/<group name>": lr}`` for every parameter group (groups without a name: ``lr/<index>``)."""
    return {f"lr/{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


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
