"""The "tal" detection loss (GELAN / YOLOv9 DDetect): task-aligned assignment, BCE, CIoU and DFL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.losses.box_iou import aligned_ciou
from detector.losses.dfl import dfl_targets, distribution_focal_loss
from detector.losses.head_outputs import HeadOutputReader, foreground_box_pairs
from detector.losses.loss_config import resolve_loss_config
from detector.losses.rank_normalizer import normalizer
from detector.losses.targets import batch_targets
from detector.losses.task_aligned_assigner import TaskAlignedAssigner
from detector.registry import LOSSES


@dataclass
class LossConfig:
    """Hyper-parameters of the "tal" loss: part gains and the assigner's top-k and exponents."""

    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0


@LOSSES.register("tal")
class TaskAlignedLoss:
    """``loss(maps, batch) -> (loss, items)`` for heads with the shared raw layout (see ``detector.nn.block.Head``).

    Normalisation: every part is divided by the sum of the soft class targets (at least 1). ``loss`` is
    ``(box + cls + dfl) * batch_size`` after gains; ``items`` the detached gained parts in ``names`` order.
    Box and DFL terms are computed for every anchor and weighted by zero off the foreground (fixed shapes, no
    boolean-mask reads), so the loss never synchronises with the host and can be captured in a CUDA graph.
    """

    names = ("box", "cls", "dfl")
    config_class = LossConfig

    def __init__(self, head: Any, cfg: LossConfig | Mapping | None = None) -> None:
        self.cfg = resolve_loss_config(cfg, LossConfig, "tal")
        self.nc = int(head.nc)
        self.bins = int(head.bins)
        self.read = HeadOutputReader(head)
        self.assigner = TaskAlignedAssigner(self.nc, self.cfg.topk, self.cfg.alpha, self.cfg.beta)

    def __call__(self, maps: list[Tensor], batch: Mapping) -> tuple[Tensor, Tensor]:
        out = self.read(maps)
        b = out.batch_size
        gt = batch_targets(batch, b, self.nc, out.cls_logits.device)
        pred_grid = out.boxes_grid()  # (B, A, 4) grid units
        assignment = self.assigner(
            out.cls_logits.detach().sigmoid(), (pred_grid * out.strides).detach(), out.points_px, gt
        )
        target_scores = assignment.target_scores
        score_sum = normalizer(target_scores.sum())  # max(sum, 1); over every rank's share under DDP

        cls_loss = F.binary_cross_entropy_with_logits(out.cls_logits, target_scores, reduction="sum") / score_sum

        fg = assignment.fg_mask  # (B, A)
        weight = target_scores.sum(-1) * fg  # (B, A), zero for background anchors
        pred_fg, target_grid = foreground_box_pairs(assignment, out, pred_grid)
        box_loss = ((1.0 - aligned_ciou(pred_fg, target_grid)) * weight).sum() / score_sum

        dfl = distribution_focal_loss(out.dist_logits, dfl_targets(out.points, target_grid, self.bins))
        dfl_loss = (dfl * weight).sum() / score_sum

        parts = torch.stack((box_loss * self.cfg.box, cls_loss * self.cfg.cls, dfl_loss * self.cfg.dfl))
        return parts.sum() * b, parts.detach()
