"""Typed run configuration for ``detector train`` and ``detector val``.

Loaded with ``detector.config.load``: recipe YAML <- command-line ``key=value`` (nested keys with dots,
``optim.lr0=0.01``). Every field has a default, so ``detector train model=gelan-t data=bccd`` is a full run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from detector.config import ConfigError, Range
from detector.data.augment import AugmentConfig
from detector.ops import NMSConfig

VAL_NMS = NMSConfig.val()  # the defaults of validation's NMS keys (docs/interfaces.md: which mode uses which)

UNIT = Range(0, 1)  # probabilities, thresholds, fractions
POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
IMAGE_SIZE = Range(32)  # the largest model stride; smaller sizes leave no feature map
WORKERS = Range(-1)  # -1 = from the machine (detector.data.loader.auto_workers)


@dataclass
class OptimConfig:
    """Optimiser and schedule. ``None`` means "the default of the chosen optimiser" (see ``engine.optim``)."""

    optimizer: Literal["auto", "SGD", "AdamW"] = "auto"  # auto: AdamW for runs < 10k iterations, else SGD
    lr0: float | None = None  # SGD 0.01, AdamW 0.002
    lrf: float = 0.01  # final lr = lr0 * lrf
    momentum: float | None = None  # SGD 0.937, AdamW beta1 0.9
    weight_decay: float = 5e-4  # per nominal batch; scaled by batch * accumulate / nbs
    schedule: Literal["linear", "cosine"] = "linear"
    warmup_epochs: float = 3.0
    warmup_min_iters: int = 100
    warmup_momentum: float = 0.8
    warmup_bias_lr: float | None = None  # SGD 0.1, AdamW 0.0
    nbs: int = 64  # nominal batch: gradients accumulate over ceil(nbs / batch) batches
    clip_grad: float = 10.0  # max gradient norm (0 = no clipping)
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0

    limits: ClassVar[dict[str, Range]] = {
        "lr0": POSITIVE, "lrf": Range(0, 1, open_low=True), "momentum": Range(0, 1, open_high=True),
        "weight_decay": NON_NEGATIVE, "warmup_epochs": NON_NEGATIVE, "warmup_min_iters": NON_NEGATIVE,
        "warmup_momentum": Range(0, 1, open_high=True), "warmup_bias_lr": NON_NEGATIVE, "nbs": AT_LEAST_ONE,
        "clip_grad": NON_NEGATIVE, "ema_decay": Range(0, 1, open_high=True), "ema_tau": POSITIVE,
    }  # fmt: skip


@dataclass
class ValConfig:
    """Validation during training (and the defaults of ``detector val``)."""

    split: str = "val"
    conf: float = VAL_NMS.conf
    iou: float = VAL_NMS.iou
    max_det: int = VAL_NMS.max_det
    multi_label: bool = VAL_NMS.multi_label  # a box may count once per class above conf (the COCO mAP convention)
    agnostic: bool = VAL_NMS.agnostic  # NMS across classes
    classes: list[int] | None = None  # evaluate only these class ids' detections (None: all)
    batch: int | None = None  # default: 2x the training batch
    period: int = 1  # validate every N epochs (the last epoch always)
    save_json: bool = False
    plots: bool = True

    limits: ClassVar[dict[str, Range]] = {
        "conf": UNIT, "iou": UNIT, "max_det": AT_LEAST_ONE, "batch": AT_LEAST_ONE, "period": AT_LEAST_ONE,
    }  # fmt: skip

    def nms(self) -> NMSConfig:
        """The NMS these keys describe; a value out of range raises ``ConfigError`` naming the key."""
        try:
            return NMSConfig.val(conf=self.conf, iou=self.iou, max_det=self.max_det, multi_label=self.multi_label,
                                 agnostic=self.agnostic, classes=self.classes)  # fmt: skip
        except ValueError as e:
            raise ConfigError(f"val: {e}") from None


@dataclass
class TrainConfig:
    """Everything a training run reads. Saved as ``args.yaml`` in the run dir and inside every checkpoint."""

    model: str = "gelan-t"  # zoo name, model YAML, or a .pt checkpoint to start from
    weights: str = ""  # initialise from this checkpoint (ours, or made by `detector convert`); also pretrained=
    data: str = ""  # dataset YAML (path or name under configs/data)
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16  # total over all processes
    device: str = ""  # "" = cuda:0 if available else cpu; "cpu", "cuda", "0", "cuda:1", "0,1" (torchrun)
    workers: int = -1  # dataloader workers per process; -1 = from the machine (detector.data.loader.auto_workers)
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: bool | str = False  # True = latest run under `project`, or a path to last.pt
    seed: int = 0
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    patience: int = 50  # stop after this many epochs without a better fitness (0 = never)
    cache: bool | str = False  # keep decoded resized images: False, True / "ram", "disk"
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler)
    sync_bn: bool = False  # SyncBatchNorm under DDP
    graph: bool = False  # capture the training step in CUDA graphs and replay it (eager, saying why, where it cannot)
    fused_bn: bool = True  # fused BatchNorm + SiLU Triton kernels in Conv blocks when training on CUDA
    save_period: int = 0  # also keep weights/epochN.pt every N epochs (0 = off)
    plots: bool = True
    loggers: list[str] = field(default_factory=list)  # tensorboard, mlflow (pip install 'detector[log]')
    verbose: bool = True  # progress bars (training, validation, label scanning, caching)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # includes close_mosaic (last N epochs)
    # loss settings handed to every head's loss builder, which validates them (tal: box, cls, dfl, topk, ...)
    loss: dict[str, Any] = field(default_factory=dict)
    val: ValConfig = field(default_factory=ValConfig)

    limits: ClassVar[dict[str, Range]] = {
        "epochs": AT_LEAST_ONE, "imgsz": IMAGE_SIZE, "batch": AT_LEAST_ONE, "workers": WORKERS,
        "patience": NON_NEGATIVE, "save_period": NON_NEGATIVE,
    }  # fmt: skip
    aliases: ClassVar[dict[str, str]] = {"pretrained": "weights"}  # the name other frameworks use


@dataclass
class ValRunConfig:
    """``detector val model=CKPT data=DATA ...``; unset values come from the checkpoint's training config."""

    model: str = ""  # checkpoint path, or an exported .onnx / .engine (then data= is needed)
    data: str | None = None  # default: the data the checkpoint was trained on
    split: str = "val"  # val, test or train
    imgsz: int | None = None  # default: the training imgsz
    batch: int = 16
    device: str = ""  # "" = cuda:0 if available else cpu
    workers: int = -1  # -1 = from the machine (detector.data.loader.auto_workers)
    conf: float = VAL_NMS.conf  # score threshold (low, as mAP wants)
    iou: float = VAL_NMS.iou  # NMS IoU threshold
    max_det: int = VAL_NMS.max_det
    multi_label: bool = VAL_NMS.multi_label  # a box may count once per class above conf
    agnostic: bool = VAL_NMS.agnostic  # NMS across classes
    classes: list[int] | None = None  # keep only these class ids
    save_json: bool = False  # predictions.json (COCO results) and metrics.json
    plots: bool = True  # PR curve, confusion matrix, labelled batches
    project: str = "runs/val"
    name: str = "exp"
    exist_ok: bool = False
    verbose: bool = True  # progress bars

    limits: ClassVar[dict[str, Range]] = {
        "imgsz": IMAGE_SIZE, "batch": AT_LEAST_ONE, "workers": WORKERS, "conf": UNIT, "iou": UNIT,
        "max_det": AT_LEAST_ONE,
    }  # fmt: skip
