"""Quality focal loss (GFL): BCE against soft IoU targets, scaled by |target - p| ** beta."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def quality_focal_loss(logits: Tensor, targets: Tensor, beta: float = 2.0) -> Tensor:
    """Element-wise QFL. ``logits``, ``targets (Tensor[..., nc])`` with targets in [0, 1] -> same shape.

    Negatives (target 0) reduce to ``BCE(p, 0) * p ** beta``; a positive's own class uses its IoU target.
    """
    modulator = (targets - logits.sigmoid()).abs().pow(beta)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * modulator
