"""Distribution focal loss (GFL): cross-entropy against the two bins that bracket a continuous target."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from detector.nn.heads import bbox2dist


def dfl_targets(points: Tensor, boxes: Tensor, bins: int) -> Tensor:
    """ltrb targets in stride units, clamped so the upper bracketing bin exists.

    ``points (Tensor[..., 2])`` and ``boxes (Tensor[..., 4])`` xyxy (broadcast), both in grid units ->
    ``Tensor[..., 4]`` in
    ``[0, bins - 1 - 0.01]``.
    """
    return bbox2dist(points, boxes, bins - 1 - 0.01)


def distribution_focal_loss(dist_logits: Tensor, target: Tensor) -> Tensor:
    """DFL per anchor, averaged over the four sides.

    ``dist_logits (Tensor[..., 4, bins])``, ``target (Tensor[..., 4])`` continuous bin positions in
    ``[0, bins - 1)`` -> ``Tensor[...]``. Zero only for a one-hot prediction of an integer target.
    """
    lead, bins = dist_logits.shape[:-2], dist_logits.shape[-1]
    target = target.expand(*lead, 4)
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = 1.0 - w_left
    logits = dist_logits.reshape(-1, bins)
    ce_left = F.cross_entropy(logits, left.reshape(-1), reduction="none").view(*lead, 4)
    ce_right = F.cross_entropy(logits, right.reshape(-1), reduction="none").view(*lead, 4)
    return (ce_left * w_left + ce_right * w_right).mean(-1)
