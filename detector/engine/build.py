"""The factory of a training run: config -> ``TrainParts`` (model, data, loss, optimizer, schedule, scaler, EMA).

Building does everything that can fail on a bad config or bad data before the first step; the loop
(``engine.trainer``) then only runs steps and fires events. ``preflight`` checks what the run names (model,
data, whether the model's heads have a training loss) before a run directory exists.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from detector import __version__
from detector.checkpoint import load_checkpoint
from detector.config import ConfigError, build, to_dict
from detector.data.labels import class_names
from detector.engine.amp import amp_dtype
from detector.engine.distributed import DistInfo
from detector.engine.ema import ModelEMA, unwrap
from detector.engine.logs import report_problems
from detector.engine.memory_format import model_to_channels_last
from detector.engine.optim import LRSchedule, ResolvedOptim, build_optimizer, resolve_optimizer
from detector.engine.resume_state import restore_scaler
from detector.engine.runs import latest_checkpoint
from detector.engine.settings import TrainConfig
from detector.engine.train_loss import TrainLoss
from detector.errors import DetectorError
from detector.model import DetectionModel, build_model, load_model_dict
from detector.nn.conv import use_fused_bn
from detector.registry import LOSSES

LOGGER = logging.getLogger("detector")


@dataclass
class TrainParts:
    """Everything a run trains with. ``model`` may be DDP-wrapped; ``ema.ema`` is validated and saved."""

    cfg: TrainConfig
    dist: DistInfo
    device: torch.device
    run_dir: Path
    names: list[str]
    train_loader: object
    train_set: object
    val_loader: object | None  # rank 0 only
    model: nn.Module
    loss: TrainLoss
    ema: ModelEMA
    opt: ResolvedOptim
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    warmup_iters: int
    accumulate: int  # batches per optimiser step after warmup (nbs / batch)
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)  # type: ignore[arg-type]

    def state_dict(self) -> dict:
        """The parts' share of a checkpoint (see ``detector.checkpoint`` for the layout)."""
        model = unwrap(self.model)
        return {
            "model": self.ema.ema.state_dict(),
            "train_model": model.state_dict(),
            "model_yaml": model.yaml,
            "names": list(self.names),
            "config": to_dict(self.cfg),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict(),
            "version": __version__,
        }

    def load_state_dict(self, ckpt: dict) -> list[str]:
        """Optimiser, scaler and EMA of a resumed run (the training weights were loaded when the model was built);
        returns what did not apply on this machine (see ``detector.engine.resume_state``)."""
        names = [g.get("name") for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for g, name in zip(self.optimizer.param_groups, names):  # checkpoints from before groups had names
            g.setdefault("name", name)
        skipped = restore_scaler(self.scaler, ckpt.get("scaler"))
        self.ema.ema.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        return skipped


def build_parts(
    cfg: TrainConfig, dist: DistInfo, device: torch.device, run_dir: Path, resume: dict | None
) -> TrainParts:
    """Build every part of a run; ``resume`` (a loaded checkpoint) supplies the training weights."""
    train_loader, train_set, val_loader = build_data(cfg, dist, run_dir, device)
    names = class_names(train_set.names)
    model = build_train_model(cfg, names, device, resume)
    loss = TrainLoss(model, cfg.loss)
    ema = ModelEMA(model, cfg.optim.ema_decay, cfg.optim.ema_tau)  # before DDP: it copies the plain model
    model = wrap_distributed(model, cfg, dist, device)
    nb = len(train_loader)
    accumulate = max(round(cfg.optim.nbs / cfg.batch), 1)
    steps = math.ceil(len(train_set) / max(cfg.batch, cfg.optim.nbs)) * cfg.epochs
    opt = resolve_optimizer(cfg.optim, steps, cfg.batch, accumulate)
    warm = max(round(cfg.optim.warmup_epochs * nb), cfg.optim.warmup_min_iters) if cfg.optim.warmup_epochs > 0 else 0
    warmup_iters = min(warm, cfg.epochs * nb // 2)  # a short run still spends half its time trained
    dtype = amp_dtype(device, cfg.amp)
    parts = TrainParts(
        cfg=cfg, dist=dist, device=device, run_dir=run_dir, names=names, train_loader=train_loader,
        train_set=train_set, val_loader=val_loader, model=model, loss=loss, ema=ema, opt=opt,
        optimizer=build_optimizer(model, opt), schedule=LRSchedule(cfg.optim, opt, cfg.epochs, warmup_iters),
        warmup_iters=warmup_iters, accumulate=accumulate,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), amp_dtype=dtype,
    )  # fmt: skip
    if dist.is_main:
        n = sum(p.numel() for p in unwrap(model).parameters())
        amp = f"AMP {str(dtype).replace('torch.', '')}" if dtype else "no AMP"
        LOGGER.info(f"model {unwrap(model).yaml.get('name', cfg.model)}: {n / 1e6:.2f}M parameters, nc={len(names)}")
        LOGGER.info(
            f"optimizer: {opt.describe()}; accumulate {accumulate} x batch {cfg.batch} (nominal {cfg.optim.nbs}); "
            f"warmup {warmup_iters} iterations; {amp}; device {device}"
        )
    return parts


def build_data(cfg: TrainConfig, dist: DistInfo, run_dir: Path, device: torch.device):
    """``(train loader, train dataset, val loader or None)``; the val loader exists on rank 0 only."""
    from detector.data import build_dataloader
    from detector.data.loader import auto_workers

    workers = {r: auto_workers(cfg.workers, device.type, r) for r in ("train", "val")}

    cache = {False: None, True: "ram"}.get(cfg.cache, cfg.cache)  # type: ignore[call-overload]
    train_loader, train_set = build_dataloader(
        cfg.data, "train", imgsz=cfg.imgsz, batch=cfg.batch // dist.world_size, augment=cfg.augment,
        workers=workers["train"], shuffle=True, seed=cfg.seed, rank=dist.rank if dist.enabled else -1,
        world_size=dist.world_size, cache=cache, rect=False,
    )  # fmt: skip
    if len(train_loader) == 0:
        raise DetectorError(f"{cfg.data}: the train split has no usable images")
    val_loader = None
    if dist.is_main:
        report_problems(train_set, "train", run_dir)
        val_loader, val_set = build_dataloader(
            cfg.data, cfg.val.split, imgsz=cfg.imgsz, batch=cfg.val.batch or cfg.batch * 2, augment=None,
            workers=workers["val"], shuffle=False, seed=cfg.seed, rank=-1, world_size=1, cache=cache, rect=True,
        )  # fmt: skip
        report_problems(val_set, cfg.val.split, run_dir)
    return train_loader, train_set, val_loader


def build_train_model(cfg: TrainConfig, names: list[str], device: torch.device, resume: dict | None) -> nn.Module:
    if resume is not None:
        model = DetectionModel(resume["model_yaml"])
        model.load_state_dict(resume["train_model"])
    else:
        model = initial_model(cfg.model, len(names))
        if cfg.weights:
            from detector.convert.init_weights import load_weights

            LOGGER.info(f"weights={cfg.weights}: {load_weights(model, cfg.weights).summary()}")
    model.names = dict(enumerate(names))
    use_fused_bn(model, cfg.fused_bn)  # the fused BatchNorm + SiLU kernel where it runs (CUDA)
    return model_to_channels_last(model.to(device).train(), device)


def wrap_distributed(model: nn.Module, cfg: TrainConfig, dist: DistInfo, device: torch.device) -> nn.Module:
    """DDP (with SyncBatchNorm if asked, CUDA only) under torchrun; the model itself otherwise."""
    if not dist.enabled:
        return model
    if cfg.sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif cfg.sync_bn and dist.is_main:
        LOGGER.warning("sync_bn=True needs CUDA; each CPU process keeps its own BatchNorm statistics")
    # every parameter gets a gradient every step (TrainLoss ties all raw maps into the loss)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


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
    """Cheap checks of what the run names: the model (zoo name, YAML or checkpoint), that its heads can be
    trained here, and the dataset definition."""
    from detector.data import resolve_dataset

    if cfg.model.endswith(".pt"):
        if not Path(cfg.model).is_file():
            raise DetectorError(f"model={cfg.model}: checkpoint not found")
        model_dict = load_checkpoint(cfg.model)["model_yaml"]
    else:
        model_dict = load_model_dict(cfg.model)
    check_trainable(cfg.model, model_dict)
    if not cfg.data:
        raise ConfigError("data is not set: pass data=DATA (a dataset YAML, a VOC folder or a name such as bccd)")
    resolve_dataset(cfg.data)


def check_trainable(name: str, model_dict: dict) -> None:
    """Every head must name a registered loss; an image classifier (``models/classify``) is refused plainly."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = DetectionModel(model_dict)
    for tag, head in model.heads().items():
        loss = getattr(head, "loss", None)
        if loss in LOSSES:
            continue
        if loss == "ce":
            raise DetectorError(
                f"model={name} is an image classifier (head {type(head).__name__!r}, loss 'ce'), kept to check "
                "backbone sizes; detector train trains detectors only: pick a detection model such as gelan-t"
            )
        raise DetectorError(f"model={name}: head {tag!r} names loss {loss!r}, which is not one of {sorted(LOSSES)}")


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
