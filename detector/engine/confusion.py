"""Detection confusion matrix: predictions matched to ground truth by IoU, with a background row/column."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou


class ConfusionMatrix:
    """``matrix[pred_class, true_class]`` counts over ``nc + 1`` classes, the last one being background.

    A prediction (score >= ``conf``) matches the ground-truth box it overlaps most (IoU >= ``iou``), each box
    and prediction used at most once; unmatched predictions count as (class, background), missed boxes as
    (background, class).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.45) -> None:
        self.nc, self.conf, self.iou = nc, conf, iou
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def update(self, det: Tensor, gt_boxes: Tensor, gt_cls: Tensor) -> None:
        """``det (Tensor[N, 6])`` [x1, y1, x2, y2, score, cls]; ``gt_boxes (Tensor[M, 4])`` xyxy; ``gt_cls (Tensor[M])``."""
        bg = self.nc
        det = det[det[:, 4] >= self.conf]
        pc, tc = det[:, 5].long().cpu().numpy(), gt_cls.long().cpu().numpy()
        if len(tc) == 0 or len(pc) == 0:
            np.add.at(self.matrix, (pc, np.full_like(pc, bg)), 1)
            np.add.at(self.matrix, (np.full_like(tc, bg), tc), 1)
            return
        iou = box_iou(gt_boxes.float(), det[:, :4].float())  # (M, N)
        gi, pi = torch.nonzero(iou >= self.iou, as_tuple=True)
        pairs = np.stack([gi.cpu().numpy(), pi.cpu().numpy(), iou[gi, pi].cpu().numpy()], 1)
        # greedy one-to-one matching, best IoU first
        pairs = pairs[np.argsort(-pairs[:, 2], kind="stable")]
        pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]
        pairs = pairs[np.argsort(-pairs[:, 2], kind="stable")]
        pairs = pairs[np.unique(pairs[:, 0], return_index=True)[1]]
        g, p = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
        np.add.at(self.matrix, (pc[p], tc[g]), 1)
        missed = np.setdiff1d(np.arange(len(tc)), g)
        extra = np.setdiff1d(np.arange(len(pc)), p)
        np.add.at(self.matrix, (np.full(len(missed), bg), tc[missed]), 1)
        np.add.at(self.matrix, (pc[extra], np.full(len(extra), bg)), 1)
