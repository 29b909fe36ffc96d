"""The training engine: ``Trainer(cfg).train()`` and ``detector train [RECIPE.yaml] key=value ...``.

The trainer owns the loop and the optimisation (epochs of the data, forward, loss over every head, backward,
accumulation, clipping, AMP, lr schedule); everything else (progress, EMA, evaluation, checkpoints, early
stopping, results) is a ``Callback``. Under ``torchrun`` the same code runs DDP; rank 0 logs, validates and checkpoints.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import detector.losses  # noqa: F401  (registers every loss in LOSSES)
from detector import __version__
from detector.checkpoint import load_checkpoint
from detector.config import ConfigError, build, load, parse_overrides, save_yaml, to_dict
from detector.engine import callbacks as cb
from detector.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed, shutdown_distributed
from detector.engine.ema import ModelEMA, unwrap
from detector.engine.optim import LRSchedule, build_optimizer, resolve_optimizer
from detector.engine.runs import increment_run_dir, latest_checkpoint, run_dir_of_checkpoint
from detector.engine.settings import TrainConfig, keys_help
from detector.engine.train_step import TrainStep, build_train_step
from detector.errors import DetectorError
from detector.model import DetectionModel, build_model, load_model_dict
from detector.nn.conv import use_fused_bn
from detector.registry import LOSSES

LOGGER = logging.getLogger("detector")
RESUME_KEEPS = ("resume", "device", "workers", "project")  # what a resume may still set on the command line


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data``; ``callbacks`` are added after the default ones.

    Attributes callbacks read: ``cfg``, ``run_dir``, ``dist``, ``device``, ``model`` (maybe DDP-wrapped),
    ``ema``, ``optimizer``, ``names``, ``epoch``, ``start_epoch``, ``iteration``, ``batch``, ``batch_index``,
    ``optimizer_stepped``, ``metrics``, ``fitness``, ``best_fitness``, ``best_epoch``, ``stop``.
    """

    def __init__(self, cfg: TrainConfig, callbacks: list[cb.Callback] | None = None) -> None:
        self.cfg = cfg
        self.user_callbacks = list(callbacks or [])
        self.callbacks: list[cb.Callback] = []
        self.ema: ModelEMA | None = None
        self.resume_ckpt: dict | None = None
        self.metrics: dict[str, float] = {}
        self.fitness: float | None = None
        self.best_fitness: float | None = None
        self.best_epoch = -1
        self.is_best = False
        self.stop = False
        self.finish_reason = ""
        self.start_epoch = 0
        self.epoch = 0
        self.iteration = 0
        self.batch_index = 0
        self.batch: dict = {}
        self.instances = 0
        self.optimizer_stepped = False
        self.last_opt_step = -1
        self.rng_states: list[dict] = []
        self.final_result = None  # ValResult of best.pt after training (rank 0)

    # -- setup -----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Process group, run dir, data, model, losses, optimiser, resume state and callbacks."""
        self.dist, self.device = init_distributed(self.cfg.device)
        if self.cfg.resume:
            self.resume_ckpt, self.cfg = load_resume(self.cfg)
        cfg = self.cfg
        if cfg.batch % self.dist.world_size:
            raise ConfigError(
                f"batch={cfg.batch} must be divisible by the number of processes ({self.dist.world_size})"
            )
        if self.resume_ckpt is None:
            preflight(cfg)  # a wrong model or data name fails here, before a run dir exists
        init_seeds(cfg.seed, cfg.deterministic)
        self.run_dir = self.make_run_dir()
        setup_logging(self.dist, self.run_dir)
        if self.dist.is_main:
            save_yaml(cfg, self.run_dir / "args.yaml")
        self.imgsz = cfg.imgsz
        self.build_data()
        self.build_model_and_losses()
        self.build_optimisation()
        if self.resume_ckpt is not None:
            self.restore_training_state(self.resume_ckpt)
        self.step = self.build_step()
        self.callbacks = self.default_callbacks() + self.user_callbacks

    def make_run_dir(self) -> Path:
        if self.resume_ckpt is not None:
            run_dir = run_dir_of_checkpoint(self.cfg.resume)
        elif self.dist.is_main:
            run_dir = increment_run_dir(self.cfg.project, self.cfg.name, self.cfg.exist_ok)
        else:
            run_dir = None
        return Path(broadcast_object(str(run_dir), self.dist))

    def build_data(self) -> None:
        from detector.data import build_dataloader

        cfg, d = self.cfg, self.dist
        cache = {False: None, True: "ram"}.get(cfg.cache, cfg.cache)  # type: ignore[call-overload]
        self.train_loader, self.train_set = build_dataloader(
            cfg.data, "train", imgsz=cfg.imgsz, batch=cfg.batch // d.world_size, augment=cfg.augment,
            workers=cfg.workers, shuffle=True, seed=cfg.seed, rank=d.rank if d.enabled else -1,
            world_size=d.world_size, cache=cache, rect=False,
        )  # fmt: skip
        self.names = class_names(self.train_set.names)
        self.batches_per_epoch = len(self.train_loader)
        if self.batches_per_epoch == 0:
            raise DetectorError(f"{cfg.data}: the train split has no usable images")
        if d.is_main:
            report_problems(self.train_set, "train", self.run_dir)
        self.val_loader = self.val_set = None
        if d.is_main:
            self.val_loader, self.val_set = build_dataloader(
                cfg.data, cfg.val.split, imgsz=cfg.imgsz, batch=cfg.val.batch or cfg.batch * 2, augment=None,
                workers=cfg.workers, shuffle=False, seed=cfg.seed, rank=-1, world_size=1, cache=cache, rect=True,
            )  # fmt: skip
            report_problems(self.val_set, cfg.val.split, self.run_dir)

    def build_model_and_losses(self) -> None:
        cfg = self.cfg
        if self.resume_ckpt is not None:
            model = DetectionModel(self.resume_ckpt["model_yaml"])
            model.load_state_dict(self.resume_ckpt["train_model"])
        else:
            model = initial_model(cfg.model, len(self.names))
        model.names = dict(enumerate(self.names))
        model = model.to(self.device).train()
        use_fused_bn(model, cfg.fused_bn)
        heads = model.heads()
        self.main_tag = next(t for t, h in heads.items() if h is model.main_head)
        self.heads = dict(sorted(heads.items(), key=lambda th: th[0] != self.main_tag))  # main head first
        self.losses = {tag: LOSSES.get(head.loss)(head, cfg.loss) for tag, head in self.heads.items()}
        names = self.losses[self.main_tag].names
        self.loss_names = list(names)
        self.all_loss_names = [
            n if t == self.main_tag else f"{t}_{n}" for t in self.heads for n in self.losses[t].names
        ]
        if self.dist.enabled:
            if cfg.sync_bn and self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif cfg.sync_bn and self.dist.is_main:
                LOGGER.warning("sync_bn=True needs CUDA; each CPU process keeps its own BatchNorm statistics")
            # every parameter gets a gradient every step (TrainStep.compute_loss ties all raw maps into the loss)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.model = model
        if self.dist.is_main:
            n = sum(p.numel() for p in unwrap(model).parameters())
            LOGGER.info(
                f"model {unwrap(model).yaml.get('name', cfg.model)}: {n / 1e6:.2f}M parameters, nc={len(self.names)}"
            )

    def build_optimisation(self) -> None:
        cfg, nb = self.cfg, self.batches_per_epoch
        self.accumulate_nominal = max(round(cfg.optim.nbs / cfg.batch), 1)
        steps = math.ceil(len(self.train_set) / max(cfg.batch, cfg.optim.nbs)) * cfg.epochs
        self.opt = resolve_optimizer(cfg.optim, steps, cfg.batch, self.accumulate_nominal)
        self.optimizer = build_optimizer(self.model, self.opt)
        warm = (
            max(round(cfg.optim.warmup_epochs * nb), cfg.optim.warmup_min_iters) if cfg.optim.warmup_epochs > 0 else 0
        )
        self.warmup_iters = min(warm, cfg.epochs * nb // 2)  # a short run still spends half its time trained
        self.schedule = LRSchedule(cfg.optim, self.opt, cfg.epochs, self.warmup_iters)
        self.amp_dtype = amp_dtype(self.device, cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if self.dist.is_main:
            amp = f"AMP {str(self.amp_dtype).replace('torch.', '')}" if self.amp_dtype else "no AMP"
            LOGGER.info(
                f"optimizer: {self.opt.describe()}; accumulate {self.accumulate_nominal} x batch {cfg.batch} "
                f"(nominal {cfg.optim.nbs}); warmup {self.warmup_iters} iterations; {amp}; device {self.device}"
            )

    def build_step(self) -> TrainStep:
        """The forward/loss/backward/optimiser step, eager or captured in CUDA graphs (``graph=True``)."""
        return build_train_step(
            self.model, self.heads, self.losses, self.optimizer, self.scaler, device=self.device,
            amp_dtype=self.amp_dtype, clip_grad=self.cfg.optim.clip_grad, world_size=self.dist.world_size,
            graph=self.cfg.graph, log=self.dist.is_main,
        )  # fmt: skip

    def restore_training_state(self, ckpt: dict) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt.get("scaler") or {})
        self.last_opt_step = int(ckpt["scheduler"]["last_opt_step"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        states = ckpt["rng"]
        self.resume_rng = states[self.dist.rank] if len(states) == self.dist.world_size else states[0]
        if self.dist.is_main:
            LOGGER.info(f"resuming {self.cfg.resume} from epoch {self.start_epoch + 1} of {self.cfg.epochs}")

    def default_callbacks(self) -> list[cb.Callback]:
        if not self.dist.is_main:
            return []
        from detector.engine.validator import Validator

        validator = Validator(
            self.val_loader, self.names, self.cfg.val, self.device, run_dir=self.run_dir,
            loss=self.losses[self.main_tag], amp_dtype=self.amp_dtype,
        )  # fmt: skip
        return [
            cb.ProgressBar(),
            cb.EMAHook(),
            cb.Evaluator(validator),
            cb.EarlyStopping(),
            cb.ResultsLogger(),
            cb.Checkpointer(),
        ]

    # -- the loop --------------------------------------------------------------------------------------------
    def train(self):
        """Run every epoch; returns the ``ValResult`` of ``best.pt`` on rank 0 (None elsewhere)."""
        t0 = time.monotonic()
        try:
            self.setup()
            self.emit("before_train")
            if self.resume_ckpt is not None:
                set_rng_state(self.resume_rng)
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.epoch = epoch
                self.train_one_epoch()
                self.emit("after_epoch")
                self.stop = bool(broadcast_object(self.stop, self.dist))
                if self.stop:
                    break
            if not self.finish_reason:
                self.finish_reason = f"completed {self.cfg.epochs} epochs"
            self.emit("after_train")
            if self.dist.is_main:
                LOGGER.info(f"{self.finish_reason} in {duration(time.monotonic() - t0)}; results in {self.run_dir}")
            barrier(self.dist)
        finally:
            shutdown_distributed()
        return self.final_result

    def emit(self, event: str) -> None:
        for c in self.callbacks:
            getattr(c, event)(self)

    def train_one_epoch(self) -> None:
        self.model.train()
        # sampler order, augmentation draws and close-mosaic all follow the epoch (same on every rank)
        mosaic_before = self.train_set.mosaic_enabled
        self.train_set.set_epoch(self.epoch, self.cfg.epochs)
        if mosaic_before and not self.train_set.mosaic_enabled and self.dist.is_main:
            LOGGER.info(f"mosaic off for the last {self.cfg.epochs - self.epoch} epochs")
        self.emit("before_epoch")
        self.loss_sum = torch.zeros(len(self.all_loss_names), device=self.device)
        self.loss_count = 0
        nb = self.batches_per_epoch
        for i, batch in enumerate(self.train_loader):
            self.batch_index, self.batch = i, batch
            self.iteration = i + nb * self.epoch
            self.emit("before_step")
            self.train_step(batch, last_in_epoch=i == nb - 1)
            self.emit("after_step")
        # every rank's RNG state here, so a resumed run continues each rank's random streams exactly
        self.rng_states = gather_rng_states(self.dist)

    def train_step(self, batch: dict, last_in_epoch: bool) -> None:
        """Forward, loss, backward; an optimiser step every ``accumulate`` batches and at the end of the epoch
        (so an epoch never leaves gradients behind, and a resume continues exactly)."""
        ni = self.iteration
        self.schedule.apply(self.optimizer, self.epoch, ni)
        self.accumulate = self.accumulation(ni)
        will_step = ni - self.last_opt_step >= self.accumulate or last_in_epoch
        defer_sync = self.dist.enabled and not will_step
        items = self.step.forward_backward(batch, defer_sync)
        self.emit("after_backward")
        if will_step:
            self.step.optimizer_phase()
            self.last_opt_step = ni
        self.optimizer_stepped = will_step
        self.loss_sum += items
        self.loss_count += 1
        self.instances = int(batch["cls"].shape[0])

    def accumulation(self, ni: int) -> int:
        """Batches per optimiser step: ramps from 1 to ``nbs / batch`` during warmup."""
        if ni < self.warmup_iters:
            return max(1, round(float(np.interp(ni, [0, self.warmup_iters], [1, self.cfg.optim.nbs / self.cfg.batch]))))
        return self.accumulate_nominal

    # -- helpers for callbacks -------------------------------------------------------------------------------
    def epoch_loss_mean(self) -> Tensor:
        """Mean of each main-head loss part over this epoch's batches so far (on the device)."""
        return self.loss_sum[: len(self.loss_names)] / max(self.loss_count, 1)

    def epoch_losses(self) -> dict[str, float]:
        """Every head's loss parts averaged over the epoch, by name (main head: ``box``; others ``aux_box``)."""
        values = (self.loss_sum / max(self.loss_count, 1)).tolist()
        return dict(zip(self.all_loss_names, values))

    def check_finite(self, losses: list[float]) -> None:
        if not all(math.isfinite(v) for v in losses):
            hint = " With amp=True try amp=False;" if self.amp_dtype is not None else ""
            raise DetectorError(
                f"training diverged: loss {losses} at epoch {self.epoch + 1}, batch {self.batch_index}.{hint} "
                f"lower optim.lr0 (now {self.opt.lr0:g}) or check the labels"
            )

    def checkpoint(self) -> dict:
        """The resumable state of this epoch as a weights-only-loadable dict (see ``detector.checkpoint``)."""
        model = unwrap(self.model)
        return {
            "model": (self.ema.ema if self.ema is not None else model).state_dict(),
            "train_model": model.state_dict(),
            "model_yaml": model.yaml,
            "names": list(self.names),
            "config": to_dict(self.cfg),
            "epoch": self.epoch,
            "best_fitness": self.best_fitness,
            "best_epoch": self.best_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"last_opt_step": self.last_opt_step, "warmup_iters": self.warmup_iters},
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {"updates": 0},
            "rng": self.rng_states,
            "metrics": dict(self.metrics),
            "version": __version__,
            "deploy": False,
            "finished": "",
        }


# -- free functions ------------------------------------------------------------------------------------------
def load_resume(cfg: TrainConfig) -> tuple[dict, TrainConfig]:
    """The checkpoint to resume and its saved config (with this call's device/workers)."""
    path = latest_checkpoint(cfg.project) if cfg.resume is True else Path(str(cfg.resume))
    ckpt = load_checkpoint(path)
    saved = build(TrainConfig, ckpt.get("config") or {}, f"{path}: saved config")
    if ckpt.get("finished") or ("optimizer" in ckpt and int(ckpt["epoch"]) + 1 >= saved.epochs):
        why = ckpt.get("finished") or f"completed {saved.epochs} epochs"
        raise DetectorError(
            f"{path}: this run already finished ({why}); there is nothing to resume. To train longer, start a new "
            f"run from its weights: detector train model={path} data={saved.data} epochs=N"
        )
    if "optimizer" not in ckpt or "train_model" not in ckpt:
        raise DetectorError(f"{path}: holds no training state (optimizer, train weights); it cannot be resumed")
    saved.resume, saved.device, saved.workers = str(path), cfg.device, cfg.workers
    return ckpt, saved


def preflight(cfg: TrainConfig) -> None:
    """Cheap checks of what the run names: the model (zoo name, YAML or checkpoint) and the dataset definition."""
    from detector.data import resolve_dataset

    if cfg.model.endswith(".pt"):
        if not Path(cfg.model).is_file():
            raise DetectorError(f"model={cfg.model}: checkpoint not found")
    else:
        load_model_dict(cfg.model)
    if not cfg.data:
        raise ConfigError("data is not set: pass data=DATA (a dataset YAML, a VOC folder or a name such as bccd)")
    resolve_dataset(cfg.data)


def initial_model(model: str, nc: int) -> DetectionModel:
    """A zoo name / YAML builds fresh weights; a ``.pt`` checkpoint starts from its (EMA) weights, keeping every
    tensor whose shape still fits (the class layers change when ``nc`` does)."""
    if not model.endswith(".pt"):
        return build_model(model, nc=nc)
    ckpt = load_checkpoint(model)
    if ckpt.get("deploy"):
        raise DetectorError(
            f"{model}: holds the fused deploy form, which cannot be trained; use the training checkpoint"
        )
    net = DetectionModel(load_model_dict(ckpt["model_yaml"], nc=nc))
    own = net.state_dict()
    fits = {k: v for k, v in ckpt["model"].items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(fits, strict=False)
    LOGGER.info(f"transferred {len(fits)}/{len(own)} tensors from {model}")
    return net


def class_names(names) -> list[str]:
    """Dataset names as a list, whether given as a list or a {index: name} dict."""
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    return [str(n) for n in names]


def report_problems(dataset, split: str, run_dir: Path) -> None:
    """Say which files were skipped and why (the run goes on with the rest); kept in ``data_problems.txt``."""
    problems = list(getattr(dataset, "problems", None) or [])
    if not problems:
        return
    lines = [f"{p['file']}: {p['problem']}" if isinstance(p, dict) else str(p) for p in problems]
    LOGGER.warning(
        f"{split}: {len(lines)} data problem(s); unusable files are skipped and bad boxes dropped, using the rest:"
    )
    for line in lines[:20]:
        LOGGER.warning(f"  {line}")
    if len(lines) > 20:
        LOGGER.warning(f"  ... and {len(lines) - 20} more, see {run_dir / 'data_problems.txt'}")
    with open(run_dir / "data_problems.txt", "a", encoding="utf-8") as f:
        f.write("".join(f"{split}: {line}\n" for line in lines))


def duration(seconds: float) -> str:
    """``42.0`` -> ``"42.0 s"``, ``5400`` -> ``"1.50 h"``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a GradScaler); no AMP on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def init_seeds(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic  # fixed training shapes: let cuDNN pick the fastest kernels


def rng_state() -> dict:
    """This process's RNG states as tensors and primitives (weights-only loadable)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def gather_rng_states(info: DistInfo) -> list[dict]:
    """Every rank's ``rng_state()``, in rank order."""
    state = rng_state()
    if not info.enabled:
        return [state]
    import torch.distributed as dist

    out: list = [None] * info.world_size
    dist.all_gather_object(out, state)
    return out


def setup_logging(info: DistInfo, run_dir: Path, log_name: str = "train.log") -> None:
    """INFO to stdout on rank 0 (warnings only elsewhere), and a copy in ``run_dir/log_name``."""
    LOGGER.setLevel(logging.INFO if info.is_main else logging.WARNING)
    LOGGER.propagate = False
    for h in list(LOGGER.handlers):
        LOGGER.removeHandler(h)
        h.close()
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(stream)
    if info.is_main:
        file = logging.FileHandler(run_dir / log_name, encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOGGER.addHandler(file)


def parse_train_args(argv: list[str]) -> TrainConfig:
    """``[RECIPE.yaml] key=value ...`` -> ``TrainConfig``. With ``resume`` set, only device/workers/project may
    be given too: a resumed run keeps its saved config."""
    files = [a for a in argv if "=" not in a]
    pairs = [a for a in argv if "=" in a]
    if len(files) > 1:
        raise ConfigError(f"command line: expected at most one recipe YAML, got {files}")
    if files:
        from detector.zoo import CONFIGS_DIR, find_yaml

        files = [str(find_yaml(files[0], CONFIGS_DIR, "recipe"))]
    overrides = parse_overrides(pairs)
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
    if any(a in ("-h", "--help", "help") for a in argv):
        print(keys_help(TrainConfig(), "detector train [RECIPE.yaml | recipe-name] key=value ..."))
        return 0
    cfg = parse_train_args(argv)
    Trainer(cfg).train()
    return 0
