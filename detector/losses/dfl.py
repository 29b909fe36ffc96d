"""Distribution focal loss (GFL): cross-entropy against the two bins that bracket a continuous target."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from detector.nn.heads import bbox2dist


def dfl_targets(points: Tensor, boxes: Tensor, bins: int) -> Tensor:
    """ltrb targets in stride units, clamped so the upper bracketing bin exists.

    ``points (Tensor[N, 2])`` and ``boxes (Tensor[N, 4])`` xyxy, both in grid units -> ``Tensor[N, 4]`` in
    ``[0, bins - 1 - 0.01]``.
    """
    return bbox2dist(points, boxes, bins - 1 - 0.01)


def distribution_focal_loss(dist_logits: Tensor, target: Tensor) -> Tensor:
    """DFL per anchor, averaged over the four sides.

    ``dist_logits (Tensor[N, 4, bins])``, ``target (Tensor[N, 4])`` continuous bin positions in
    ``[0, bins - 1)`` -> ``Tensor[N]``. Zero only for a one-hot prediction of an integer target.
    """
    n, _, bins = dist_logits.shape
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = 1.0 - w_left
    logits = dist_logits.reshape(-1, bins)
    ce_left = F.cross_entropy(logits, left.reshape(-1), reduction="none").view(n, 4)
    ce_right = F.cross_entropy(logits, right.reshape(-1), reduction="none").view(n, 4)
    return (ce_left * w_left + ce_right * w_right).mean(-1)
