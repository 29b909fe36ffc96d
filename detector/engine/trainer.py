"""The training loop: ``Trainer(cfg, callbacks=[...]).train()`` and ``detector train [RECIPE.yaml] key=value ...``.

``engine.build`` turns the config into parts (model, data, loss, optimizer, schedule, EMA); ``engine.step``
runs one batch; this module only loops over epochs and batches and fires the callbacks' events (progress,
evaluation, early stopping, results, checkpoints: ``engine.callbacks``). Under ``torchrun`` the same code
runs DDP; rank 0 logs, validates and checkpoints.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from detector import __version__, progress
from detector.checkpoint import load_checkpoint, remove_stale_temporaries
from detector.config import ConfigError, check_limits, load, save_yaml
from detector.engine import callbacks as cb
from detector.engine.build import TrainParts, build_parts, load_resume, preflight
from detector.engine.distributed import barrier, broadcast_object, init_distributed, shutdown_distributed
from detector.engine.logs import close_log_files, duration, setup_logging
from detector.engine.resume_state import pick_rank_state
from detector.engine.rng import gather_rng_states, init_seeds, set_rng_state
from detector.engine.run_lock import RunLock
from detector.engine.runs import increment_run_dir, latest_checkpoint, run_dir_of_checkpoint
from detector.engine.settings import TrainConfig
from detector.engine.step import StepResult, TrainStep
from detector.engine.train_loss import LossMeter
from detector.engine.train_step import make_train_step

LOGGER = logging.getLogger("detector")
RESUME_KEEPS = ("resume", "device", "workers", "project")  # what a resume may still set on the command line


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data``; ``callbacks`` join the default ones, in ascending ``order``.

    What callbacks may read: ``cfg``, ``parts`` (``engine.build.TrainParts``), ``run_dir``, ``losses`` (this
    epoch's running means), and the loop's position ``epoch``, ``start_epoch``, ``iteration``, ``batch_index``,
    ``batch``, ``last_step``. What they may ask: ``request_stop(reason)``.
    """

    def __init__(self, cfg: TrainConfig, callbacks: list[cb.Callback] | None = None) -> None:
        self.cfg = cfg
        self.user_callbacks = list(callbacks or [])
        self.finish_reason = ""
        self.start_epoch = self.epoch = self.iteration = self.batch_index = 0
        self.batch: dict = {}
        self.rng_states: list[dict] = []
        self.last_step: StepResult | None = None
        self._lock: RunLock | None = None
        self._verbose_before = progress.enabled()  # restored by close()

    # -- the loop --------------------------------------------------------------------------------------------
    def train(self):
        """Run every epoch; returns the ``ValResult`` of ``best.pt`` on rank 0 (None elsewhere)."""
        t0 = time.monotonic()
        try:
            self.setup()
            self.emit("before_train")
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.run_epoch(epoch)
                self.emit("after_epoch")
                if broadcast_object(self.stop_requested, self.dist):
                    break
            self.finish_reason = self.finish_reason or f"completed {self.cfg.epochs} epochs"
            self.emit("after_train")
            if self.dist.is_main:
                LOGGER.info(f"{self.finish_reason} in {duration(time.monotonic() - t0)}; results in {self.run_dir}")
            barrier(self.dist)
        except KeyboardInterrupt:
            self.say_how_to_resume()
            raise
        finally:
            self.close()
        evaluator = self.callback(cb.Evaluator)
        return evaluator.final if evaluator is not None else None

    def run_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.begin_epoch(epoch)
        self.emit("before_epoch")
        self.losses.reset()
        nb = self.parts.batches_per_epoch
        for i, batch in enumerate(self.parts.train_loader):  # type: ignore[attr-defined]
            self.batch_index, self.batch, self.iteration = i, batch, i + nb * epoch
            self.emit("before_step")
            self.last_step = self.step(batch, epoch, self.iteration, last_in_epoch=i == nb - 1)
            self.losses.add(self.last_step.items)
            if i == nb - 1:
                self.losses.average_over_ranks(self.dist)  # before the last redraw and the epoch's results row
            self.emit("after_step")
        self.rng_states = gather_rng_states(self.dist)  # every rank's, so a resume continues each stream exactly

    def emit(self, event: str) -> None:
        for c in self.callbacks:
            getattr(c, event)(self)

    # -- what callbacks may ask ------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """End the run after this epoch's callbacks; ``reason`` is logged and saved as ``finished``."""
        self.finish_reason = self.finish_reason or reason

    @property
    def stop_requested(self) -> bool:
        return bool(self.finish_reason)

    def callback(self, kind: type[cb.Callback]) -> cb.Callback | None:
        """The first callback of type ``kind``, or None."""
        return next((c for c in getattr(self, "callbacks", []) if isinstance(c, kind)), None)

    # -- shortcuts to the parts ------------------------------------------------------------------------------
    @property
    def model(self):
        return self.parts.model

    @property
    def dist(self):
        return self.parts.dist

    @property
    def run_dir(self) -> Path:
        return self.parts.run_dir

    def epoch_losses(self) -> dict[str, float]:
        """Every head's loss parts averaged over the last epoch, by name (main head: ``box``; others ``aux_box``)."""
        return self.losses.as_dict()

    @property
    def loss_names(self) -> list[str]:
        return self.losses.main_names

    # -- building --------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Config checks, run dir (locked), parts, resume state and callbacks; a fresh run dir is removed
        again when building fails, so a bad config or bad data leaves no empty run folder."""
        dist, device = init_distributed(self.cfg.device)
        resume = None
        if self.cfg.resume:
            resume, self.cfg = load_resume(self.cfg)
        cfg = self.cfg
        check_limits(cfg, "config")
        progress.set_verbose(cfg.verbose and dist.is_main)  # bars: training, validation, labels, caching
        if cfg.batch % dist.world_size:
            raise ConfigError(f"batch={cfg.batch} must be divisible by the number of processes ({dist.world_size})")
        if resume is None:
            preflight(cfg)  # a wrong model or data name fails here, before a run dir exists
        init_seeds(cfg.seed, cfg.deterministic)
        run_dir, fresh = self.open_run_dir(dist, resume is not None)
        try:
            setup_logging(dist, run_dir)
            if dist.is_main:
                for path in remove_stale_temporaries(run_dir / "weights"):  # safe: the lock says no one writes here
                    LOGGER.warning(f"removed {path}, left by a checkpoint write that was cut off")
                save_yaml(cfg, run_dir / "args.yaml")
            self.parts = build_parts(cfg, dist, device, run_dir, resume)
        except BaseException:
            self.close()
            if fresh:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        self.step = self.make_step()
        self.losses = LossMeter(self.parts.loss.names, self.parts.loss.main_names, device)
        self.callbacks = sorted(self.default_callbacks() + self.user_callbacks, key=lambda c: c.order)
        if resume is not None:
            self.restore(resume)

    def open_run_dir(self, dist, resuming: bool) -> tuple[Path, bool]:
        """``(run dir, created by this run)``; rank 0 holds its lock from here to the end of the run."""
        run_dir, fresh = None, False
        if dist.is_main:
            if resuming:
                run_dir = run_dir_of_checkpoint(self.cfg.resume)
            else:
                fresh = not (Path(self.cfg.project) / self.cfg.name).is_dir() or not self.cfg.exist_ok
                run_dir = increment_run_dir(self.cfg.project, self.cfg.name, self.cfg.exist_ok)
            self._lock = RunLock(run_dir).acquire()
        return Path(broadcast_object(str(run_dir), dist)), fresh

    def make_step(self) -> TrainStep:
        """The per-batch step. Any callable ``(batch, epoch, iteration, last_in_epoch) -> StepResult`` with
        ``state_dict``/``load_state_dict`` fits here (e.g. a captured, sync-free step chosen by the config)."""
        return make_train_step(self.parts, after_backward=lambda: self.emit("after_backward"))

    def default_callbacks(self) -> list[cb.Callback]:
        if not self.dist.is_main:
            return []
        from detector.engine.validator import Validator

        p = self.parts
        validator = Validator(p.val_loader, p.names, self.cfg.val, p.device, run_dir=p.run_dir, loss=p.loss.main,
                              amp_dtype=p.amp_dtype)  # fmt: skip
        from detector.engine.loggers import build_loggers

        callbacks = cb.default_callbacks(validator, self.cfg.patience, self.cfg.save_period)
        results = next(c for c in callbacks if isinstance(c, cb.ResultsLogger))
        return callbacks + build_loggers(self.cfg.loggers, results)  # loggers=tensorboard,mlflow

    def restore(self, ckpt: dict) -> None:
        """Parts, step and callback states of a resumed run, and where its epochs and RNG streams continue."""
        skipped = self.parts.load_state_dict(ckpt)
        self.step.load_state_dict(ckpt["scheduler"])
        states = ckpt.get("callbacks") or legacy_callback_states(ckpt)
        for c in self.callbacks:
            c.load_state_dict(states.get(c.name, {}))
        self.start_epoch = int(ckpt["epoch"]) + 1
        state, skipped_rng = pick_rank_state(ckpt["rng"], self.dist.rank, self.dist.world_size)
        skipped += skipped_rng + set_rng_state(state)
        if self.dist.is_main:
            LOGGER.info(f"resuming {self.cfg.resume} from epoch {self.start_epoch + 1} of {self.cfg.epochs}")
            if skipped:
                LOGGER.warning("resuming on this machine skipped: " + "; ".join(skipped))

    def begin_epoch(self, epoch: int) -> None:
        """Train mode; sampler order, augmentation draws and close-mosaic follow the epoch (same on every rank)."""
        self.parts.model.train()
        train_set = self.parts.train_set
        mosaic_before = train_set.mosaic_enabled  # type: ignore[attr-defined]
        train_set.set_epoch(epoch, self.cfg.epochs)  # type: ignore[attr-defined]
        if mosaic_before and not train_set.mosaic_enabled and self.dist.is_main:  # type: ignore[attr-defined]
            LOGGER.info(f"mosaic off for the last {self.cfg.epochs - epoch} epochs")

    def checkpoint(self) -> dict:
        """The resumable state of this epoch as a weights-only-loadable dict (see ``detector.checkpoint``)."""
        return {
            **self.parts.state_dict(),
            "scheduler": self.step.state_dict(),
            "epoch": self.epoch,
            "rng": self.rng_states,
            "callbacks": {c.name: s for c in self.callbacks if (s := c.state_dict())},
            "version": __version__,
            "deploy": False,
            "finished": "",
        }

    def say_how_to_resume(self) -> None:
        if not hasattr(self, "parts") or not self.dist.is_main:
            return
        last = self.run_dir / "weights" / "last.pt"
        if last.is_file():
            LOGGER.warning(f"interrupted in epoch {self.epoch + 1}; resume with: detector train resume={last}")
        else:
            LOGGER.warning("interrupted before the first checkpoint was written; there is nothing to resume")

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        close_log_files()
        shutdown_distributed()
        progress.set_verbose(self._verbose_before)


def legacy_callback_states(ckpt: dict) -> dict:
    """Callback states of a checkpoint written before callbacks kept their own (best fitness at the top level)."""
    return {
        "Evaluator": {"best_fitness": ckpt.get("best_fitness"), "best_epoch": ckpt.get("best_epoch", -1)},
        "ResultsLogger": {"rows": int(ckpt["epoch"]) + 1},
    }


def parse_train_args(argv: list[str]) -> TrainConfig:
    """``[RECIPE.yaml] key=value ...`` -> ``TrainConfig``. With ``resume`` set, only device/workers/project may
    be given too: a resumed run keeps its saved config."""
    from detector.cli_args import split_argv

    files, overrides = split_argv(argv, TrainConfig)
    if len(files) > 1:
        raise ConfigError(f"command line: expected at most one recipe YAML, got {files}")
    if files:
        from detector.zoo import CONFIGS_DIR, find_yaml

        files = [str(find_yaml(files[0], CONFIGS_DIR, "recipe"))]
    if overrides.get("resume"):
        extra = sorted(set(overrides) - set(RESUME_KEEPS)) + (files or [])
        if extra:
            raise ConfigError(
                f"command line: resume continues a run with its saved config; cannot also set {extra} "
                "(to change them start a new run with model=PATH/TO/last.pt)"
            )
        # start from the run's saved config so unset keys (workers, device) keep their saved values
        project = overrides.get("project", TrainConfig.project)
        path = latest_checkpoint(project) if overrides["resume"] is True else Path(str(overrides["resume"]))
        saved = load_checkpoint(path).get("config") or {}
        overrides = {**saved, **overrides, "resume": str(path)}
    return load(TrainConfig, files, overrides)


def cli_train(argv: list[str]) -> int:
    """``detector train [RECIPE.yaml] key=value ...`` (also under ``torchrun``)."""
    from detector.cli_args import mode_help, wants_help

    if wants_help(argv):
        from detector.cli import MODES

        print(mode_help(MODES["train"]))
        return 0
    cfg = parse_train_args(argv)
    Trainer(cfg).train()
    return 0


__all__ = ["Trainer", "StepResult", "TrainParts", "cli_train", "parse_train_args"]
