"""The "aota" detection loss (DAMO-YOLO ZeroHead): AlignedOTA assignment, QFL, GIoU and DFL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from detector.losses.aligned_ota_assigner import AlignedOTAAssigner
from detector.losses.box_iou import aligned_giou
from detector.losses.dfl import dfl_targets, distribution_focal_loss
from detector.losses.head_outputs import HeadOutputReader, foreground_box_pairs
from detector.losses.loss_config import resolve_loss_config
from detector.losses.quality_focal_loss import quality_focal_loss
from detector.losses.rank_normalizer import normalizer
from detector.losses.targets import batch_targets
from detector.registry import LOSSES


@dataclass
class AlignedOTALossConfig:
    """Hyper-parameters of the "aota" loss (DAMO-YOLO defaults)."""

    box: float = 2.0  # GIoU
    cls: float = 1.0  # QFL
    dfl: float = 0.25
    qfl_beta: float = 2.0
    center_radius: float = 2.5
    candidate_topk: int = 10
    cls_cost: float = 1.0
    iou_cost: float = 3.0


@LOSSES.register("aota")
class AlignedOTALoss:
    """``loss(maps, batch) -> (loss, items)`` for DAMO-YOLO's ZeroHead (``bins = reg_max``, 17, anchors offset 0).

    Normalisation as in GFL/DAMO: QFL is summed over anchors and classes and divided by the number of positives
    (at least 1); GIoU and DFL are weighted per positive by its highest predicted class probability (detached)
    and divided by the sum of those weights (at least 1). ``loss`` = gained sum * batch size. Like "tal", every
    term is computed for all anchors with zero weight off the foreground: no host synchronisation.
    """

    names = ("box", "cls", "dfl")
    config_class = AlignedOTALossConfig

    def __init__(self, head: Any, cfg: AlignedOTALossConfig | Mapping | None = None) -> None:
        self.cfg = resolve_loss_config(cfg, AlignedOTALossConfig, "aota")
        self.nc = int(head.nc)
        self.bins = int(head.bins)
        self.read = HeadOutputReader(head)
        c = self.cfg
        self.assigner = AlignedOTAAssigner(self.nc, c.center_radius, c.candidate_topk, c.cls_cost, c.iou_cost)

    def __call__(self, maps: list[Tensor], batch: Mapping) -> tuple[Tensor, Tensor]:
        out = self.read(maps)
        b = out.batch_size
        gt = batch_targets(batch, b, self.nc, out.cls_logits.device)
        pred_grid = out.boxes_grid()
        assignment, _ = self.assigner(
            out.cls_logits.detach(), (pred_grid * out.strides).detach(), out.points_px, out.strides, gt
        )
        fg = assignment.fg_mask
        num_pos = normalizer(fg.sum()).to(out.cls_logits.dtype)  # over every rank's share under DDP
        cls_loss = quality_focal_loss(out.cls_logits, assignment.target_scores, self.cfg.qfl_beta).sum() / num_pos

        weight = out.cls_logits.detach().sigmoid().amax(-1) * fg  # (B, A), zero for background anchors
        weight_sum = normalizer(weight.sum())  # over every rank's share under DDP
        pred_fg, target_grid = foreground_box_pairs(assignment, out, pred_grid)
        box_loss = ((1.0 - aligned_giou(pred_fg, target_grid)) * weight).sum() / weight_sum

        dfl = distribution_focal_loss(out.dist_logits, dfl_targets(out.points, target_grid, self.bins))
        dfl_loss = (dfl * weight).sum() / weight_sum

        parts = torch.stack((box_loss * self.cfg.box, cls_loss * self.cfg.cls, dfl_loss * self.cfg.dfl))
        return parts.sum() * b, parts.detach()
