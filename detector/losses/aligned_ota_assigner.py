"""AlignedOTA label assignment (DAMO-YOLO), batched over images with padded dynamic-k selection.

Valid anchors are those whose centre lies inside some GT box or within ``center_radius * stride`` of its centre.
For every (GT, valid anchor) pair the cost is
``cls_weight * C_cls + iou_weight * -log(IoU + 1e-7) + 1e8 * not(in box and in centre region)`` with
``C_cls = sum_c BCE(p_c, IoU * onehot_c) * |IoU * onehot_c - p_c| ** 2``. Each GT takes its ``k`` cheapest anchors,
``k = max(1, int(sum of its top-10 IoUs))``; an anchor taken by several GTs keeps the cheapest one. Class targets
are the IoU of the anchor's predicted box with its GT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.losses.assignment import Assignment, one_hot
from detector.losses.box_iou import aligned_box_iou
from detector.losses.targets import PaddedTargets
from detector.losses.task_aligned_assigner import gather_targets, points_in_boxes, resolve_multiple_claims

_OUTSIDE_COST = 1e8  # finite: such anchors are chosen only when a GT has too few anchors in box and centre


def points_near_centres(points: Tensor, strides: Tensor, boxes: Tensor, radius: float) -> Tensor:
    """Whether each point is strictly within ``radius * stride`` (per axis) of each box centre.

    ``points (Tensor[A, 2])``, ``strides (Tensor[A, 1])``, ``boxes (Tensor[B, M, 4])`` -> ``Tensor[B, M, A]``.
    """
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, M, 2)
    reach = radius * strides[:, 0]  # (A,)
    dx = (points[:, 0] - centres[..., 0, None]).abs()
    dy = (points[:, 1] - centres[..., 1, None]).abs()
    return (dx < reach) & (dy < reach)


def soft_classification_cost(logits: Tensor, labels: Tensor, ious: Tensor) -> Tensor:
    """``C_cls`` for every (GT, anchor) pair without materialising ``(B, M, A, nc)``.

    ``logits (Tensor[B, A, nc])``, ``labels (Tensor[B, M])``, ``ious (Tensor[B, M, A])`` -> ``Tensor[B, M, A]``.
    The target is zero for every class but the GT's, so the sum is (all classes at target 0) - (the GT class at
    target 0) + (the GT class at target IoU).
    """
    b, a, _ = logits.shape
    prob = logits.sigmoid()
    as_negative = F.softplus(logits) * prob.square()  # BCE(p, 0) * p^2, (B, A, nc)
    all_negative = as_negative.sum(-1)[:, None, :]  # (B, 1, A)
    index = labels[..., None].expand(-1, -1, a)  # (B, M, A)
    gt_logit = logits.transpose(1, 2).gather(1, index)
    gt_negative = as_negative.transpose(1, 2).gather(1, index)
    gt_prob = prob.transpose(1, 2).gather(1, index)
    gt_positive = F.binary_cross_entropy_with_logits(gt_logit, ious, reduction="none") * (ious - gt_prob).square()
    return all_negative - gt_negative + gt_positive


class AlignedOTAAssigner:
    """Batched AlignedOTA; see the module docstring for the rule."""

    def __init__(
        self,
        nc: int,
        center_radius: float = 2.5,
        candidate_topk: int = 10,
        cls_weight: float = 1.0,
        iou_weight: float = 3.0,
    ) -> None:
        self.nc = nc
        self.center_radius = center_radius
        self.candidate_topk = candidate_topk
        self.cls_weight = cls_weight
        self.iou_weight = iou_weight

    @torch.no_grad()
    def __call__(
        self, logits: Tensor, pred_boxes: Tensor, points: Tensor, strides: Tensor, gt: PaddedTargets
    ) -> tuple[Assignment, Tensor]:
        """Assign targets.

        ``logits (Tensor[B, A, nc])`` class logits, ``pred_boxes (Tensor[B, A, 4])`` xyxy pixels,
        ``points (Tensor[A, 2])`` anchor points in pixels, ``strides (Tensor[A, 1])``, ``gt`` padded ground truth.
        Returns the ``Assignment`` (class targets = matched IoU) and the matched IoU ``Tensor[B, A]``.
        """
        b, a, _ = logits.shape
        if gt.max_boxes == 0:
            return Assignment.empty(b, a, self.nc, logits.device), logits.new_zeros(b, a)

        real = gt.mask[..., None]  # (B, M, 1)
        in_box = points_in_boxes(points, gt.boxes) & real
        in_centre = points_near_centres(points, strides, gt.boxes, self.center_radius) & real
        valid = (in_box | in_centre).any(1, keepdim=True)  # (B, 1, A): DAMO's candidate set, shared by all GTs
        pair_ok = valid & real  # (B, M, A)

        ious = aligned_box_iou(gt.boxes[:, :, None], pred_boxes[:, None]) * pair_ok  # (B, M, A)
        cost = (
            self.cls_weight * soft_classification_cost(logits, gt.labels, ious)
            + self.iou_weight * -torch.log(ious + 1e-7)
            + _OUTSIDE_COST * ~(in_box & in_centre)
        ).masked_fill(~pair_ok, float("inf"))

        claims = self._dynamic_k_claims(cost, ious, gt.mask)
        claims = resolve_multiple_claims(claims, -cost)

        fg_mask, gt_index, labels, boxes = gather_targets(claims, gt)
        matched_iou = (ious * claims).sum(1)  # (B, A), one claim per anchor at most
        target_scores = one_hot(labels, self.nc) * matched_iou[..., None]
        return Assignment(fg_mask, gt_index, boxes, target_scores), matched_iou

    def _dynamic_k_claims(self, cost: Tensor, ious: Tensor, gt_mask: Tensor) -> Tensor:
        """Each real GT claims its ``k`` cheapest finite-cost anchors -> ``Tensor[B, M, A]`` bool.

        ``k = max(1, int(sum of top-``candidate_topk`` IoUs))`` <= ``candidate_topk``, so one padded top-k of that
        width serves every GT; ranks beyond each GT's own ``k`` are masked off.
        """
        width = min(self.candidate_topk, cost.shape[-1])
        dynamic_k = ious.topk(width, dim=-1).values.sum(-1).int().clamp(min=1)  # (B, M)
        cheapest_cost, cheapest = cost.topk(width, dim=-1, largest=False)  # (B, M, width)
        rank = torch.arange(width, device=cost.device)
        keep = (rank < dynamic_k[..., None]) & torch.isfinite(cheapest_cost) & gt_mask[..., None]
        return torch.zeros_like(cost, dtype=torch.bool).scatter_(-1, cheapest, keep)
