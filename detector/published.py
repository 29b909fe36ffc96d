"""Published figures of a zoo model (the ``published:`` mapping of its YAML) and ours, measured the same way.

A model file may carry what its paper reports, e.g.::

    published: {params: 8.48e+6, gflops: 18.1, imgsz: 640, form: deploy, ap: 42.0, source: "DAMO-YOLO paper"}

The builder ignores the key; ``read_published`` checks it against ``Published`` and ``measure`` counts our model in
the published form and counting convention, so ``tools/zoo_table.py`` can put the two side by side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from detector.config import ConfigError, build, read_yaml
from detector.info import THOP_NORM_FLOPS, count_flops, count_params
from detector.model import DetectionModel, build_model
from detector.zoo import find_yaml


@dataclass(frozen=True)
class Published:
    """What a paper or the authors' release reports for a model.

    ``params``: parameter count. ``gflops``: 2 x multiply-adds of one image at ``imgsz`` (None where not published;
    papers that quote GMACs are stored as 2 x GMACs). ``form``: which form the figures describe: ``train`` (as
    trained: BatchNorm, re-parameterisable branches, auxiliary heads) or ``deploy`` (fused, auxiliary removed).
    ``flops``: the counting convention: ``conv`` (convolutions and matmuls only, as ``detector.info.count_flops``)
    or ``conv+bn`` (thop through Ultralytics, which also charges 8 FLOPs per BatchNorm output element: LeYOLO).
    ``ap``: COCO val AP; ``top1``: ImageNet top-1 (%). ``source``: where the figures come from.
    """

    params: float
    source: str
    gflops: float | None = None
    imgsz: int = 640
    form: Literal["train", "deploy"] = "deploy"
    flops: Literal["conv", "conv+bn"] = "conv"
    ap: float | None = None
    top1: float | None = None


def read_published(cfg: dict, where: str = "model") -> Published | None:
    """The checked ``published`` entry of a model dict (as read from its YAML), or None if it has none."""
    data = cfg.get("published")
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: `published` must be a mapping like {{params: 8.48e+6, gflops: 18.1, ...}}")
    for key in ("params", "gflops", "ap", "top1"):
        if isinstance(data.get(key), str):
            raise ConfigError(
                f"{where}: published key {key!r} is the text {data[key]!r}; YAML reads 8.5e6 as a string, "
                "write 8.5e+6 or 8500000"
            )
    return build(Published, data, f"{where}: published")


def published_of(name: str) -> Published | None:
    """``read_published`` for a zoo model name or YAML path."""
    path = find_yaml(name)
    return read_published(read_yaml(path) or {}, str(path))


@dataclass(frozen=True)
class Measured:
    """Our counts of one model: both forms, at ``imgsz``; GFLOPs in ``convention`` (see ``Published.flops``)."""

    imgsz: int
    convention: str
    train_params: int
    train_gflops: float
    deploy_params: int
    deploy_gflops: float


def flops_at(count: Callable[[nn.Module, int], float], model: nn.Module, imgsz: int, max_stride: int) -> float:
    """``count(model, imgsz)``, taken at half size x4 where that is exact (4x cheaper on CPU).

    FLOPs that grow exactly with the pixel count (convolutions, pointwise ops) satisfy f(s/2) = 4 f(s/4);
    a constant term (squeeze-excite on pooled features) or a super-linear one (attention over all tokens) breaks
    that equality. With non-negative terms the check is sufficient, so the full size runs only where needed.
    """
    if imgsz % (4 * max_stride) == 0:
        half, quarter = count(model, imgsz // 2), count(model, imgsz // 4)
        if abs(half - 4 * quarter) <= 1e-9 * half:
            return 4 * half
    return count(model, imgsz)


def measure(model: DetectionModel, imgsz: int, convention: str = "conv") -> Measured:
    """Params and GFLOPs of ``model`` as built (train form) and of its deploy form (made on a copy).

    ``convention="conv+bn"`` counts the train form (auxiliary heads included) with BatchNorm charged as thop does,
    the figure ``detector info`` reports as ``gflops``.
    """
    max_stride = int(max(model.strides))
    deploy = copy.deepcopy(model).to_deploy()
    if convention == "conv+bn":
        train_count: Callable[[nn.Module, int], float] = lambda m, s: count_flops(  # noqa: E731
            m, s, train_form=True, norm_flops=THOP_NORM_FLOPS
        )
    else:
        train_count = lambda m, s: count_flops(m, s, train_form=True)  # noqa: E731
    with torch.no_grad():
        train = flops_at(train_count, model, imgsz, max_stride)
        dep = flops_at(count_flops, deploy, imgsz, max_stride)
    return Measured(imgsz, convention, count_params(model), train / 1e9, count_params(deploy), dep / 1e9)


def measure_zoo_model(name: str) -> tuple[DetectionModel, Published | None, Measured]:
    """Build zoo model ``name`` and measure it at its published size (else its ``imgsz``, else 640)."""
    pub = published_of(name)
    model = build_model(name)
    imgsz = pub.imgsz if pub else int(model.yaml.get("imgsz", 640))
    return model, pub, measure(model, imgsz, pub.flops if pub else "conv")
