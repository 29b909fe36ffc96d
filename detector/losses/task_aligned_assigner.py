"""Task-aligned label assignment (TOOD / YOLOv8-v9 style), batched over images.

Candidates are anchor centres strictly inside a ground-truth box. Each (GT, candidate) pair gets the alignment
``score ** alpha * CIoU ** beta`` (score = the predicted probability of the GT's class, CIoU clamped at 0); each GT
keeps its ``topk`` best-aligned candidates; an anchor kept by several GTs goes to the one its predicted box
overlaps most. Class targets are soft: ``align * maxIoU / maxAlign`` per GT, so the best-aligned anchor of a GT
is asked for that GT's best IoU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detector.losses.assignment import Assignment, one_hot
from detector.losses.box_iou import aligned_ciou
from detector.losses.targets import PaddedTargets


def points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """Whether each point lies strictly inside each box.

    ``points (Tensor[A, 2])`` xy, ``boxes (Tensor[B, M, 4])`` xyxy -> ``Tensor[B, M, A]`` bool.
    """
    x, y = points[:, 0], points[:, 1]
    b = boxes[..., None, :]  # (B, M, 1, 4)
    return (x > b[..., 0]) & (y > b[..., 1]) & (x < b[..., 2]) & (y < b[..., 3])


def resolve_multiple_claims(claims: Tensor, preference: Tensor) -> Tensor:
    """Keep, for anchors claimed by several GTs, only the claim with the highest ``preference``.

    ``claims (Tensor[B, M, A])`` bool, ``preference (Tensor[B, M, A])`` -> ``Tensor[B, M, A]`` bool with at most
    one True per anchor.
    """
    contested = claims.sum(1, keepdim=True) > 1  # (B, 1, A)
    best = preference.masked_fill(~claims, float("-inf")).argmax(1, keepdim=True)  # (B, 1, A)
    only_best = torch.zeros_like(claims).scatter_(1, best, True)
    return torch.where(contested, only_best & claims, claims)


def gather_targets(claims: Tensor, gt: PaddedTargets) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """From one-claim-per-anchor ``claims (Tensor[B, M, A])`` -> ``fg_mask (B, A)``, ``gt_index (B, A)``,
    ``labels (B, A)`` and ``boxes (B, A, 4)`` of the claiming GT."""
    fg_mask = claims.any(1)
    gt_index = claims.to(torch.uint8).argmax(1)  # (B, A)
    labels = gt.labels.gather(1, gt_index)
    boxes = gt.boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
    return fg_mask, gt_index, labels, boxes


class TaskAlignedAssigner:
    """Batched task-aligned assigner; see the module docstring for the rule."""

    def __init__(self, nc: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> None:
        self.nc = nc
        self.topk = topk
        self.alpha = alpha
        self.beta = beta
        self.eps = eps

    @torch.no_grad()
    def __call__(self, scores: Tensor, pred_boxes: Tensor, points: Tensor, gt: PaddedTargets) -> Assignment:
        """Assign targets.

        ``scores (Tensor[B, A, nc])`` class probabilities, ``pred_boxes (Tensor[B, A, 4])`` xyxy pixels,
        ``points (Tensor[A, 2])`` anchor centres in pixels, ``gt`` the padded ground truth (pixels).
        """
        b, a, _ = scores.shape
        if gt.max_boxes == 0:
            return Assignment.empty(b, a, self.nc, scores.device)

        candidates = points_in_boxes(points, gt.boxes) & gt.mask[..., None]  # (B, M, A)
        overlaps = self._candidate_ciou(candidates, pred_boxes, gt)
        class_scores = scores.transpose(1, 2).gather(1, gt.labels[..., None].expand(-1, -1, a))  # (B, M, A)
        align = class_scores.pow(self.alpha) * overlaps.pow(self.beta) * candidates

        k = min(self.topk, a)
        top = align.topk(k, dim=-1).indices  # (B, M, k), distinct anchors per GT
        claims = torch.zeros_like(candidates).scatter_(-1, top, True) & candidates
        claims = resolve_multiple_claims(claims, overlaps)

        fg_mask, gt_index, labels, boxes = gather_targets(claims, gt)
        align = align * claims
        max_align = align.amax(-1, keepdim=True)  # (B, M, 1)
        max_iou = (overlaps * claims).amax(-1, keepdim=True)
        quality = (align * max_iou / (max_align + self.eps)).amax(1)  # (B, A)
        target_scores = one_hot(labels, self.nc) * (quality * fg_mask)[..., None]
        return Assignment(fg_mask, gt_index, boxes, target_scores)

    @staticmethod
    def _candidate_ciou(candidates: Tensor, pred_boxes: Tensor, gt: PaddedTargets) -> Tensor:
        """CIoU (clamped at 0) of each candidate pair, zero elsewhere -> ``Tensor[B, M, A]``.

        Computed densely over every (GT, anchor) pair and masked, rather than gathered for the candidates only:
        the gather needs ``nonzero`` (a host synchronisation and a data-dependent shape).
        """
        ciou = aligned_ciou(gt.boxes[:, :, None], pred_boxes[:, None])  # (B, M, A)
        # where, not a product: a degenerate predicted box can give NaN off the candidates
        return torch.where(candidates, ciou.clamp(min=0), 0.0).to(pred_boxes.dtype)
