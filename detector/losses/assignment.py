"""The result every label assigner returns: which anchors are foreground and what they should predict."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def one_hot(labels: Tensor, nc: int) -> Tensor:
    """``labels (Tensor[...])`` long -> float ``Tensor[..., nc]``; unlike ``F.one_hot`` it does not read the
    labels back to the host to check their range (the targets were checked when they were padded)."""
    return (labels[..., None] == torch.arange(nc, device=labels.device)).float()


@dataclass
class Assignment:
    """Targets for every anchor of a batch.

    ``fg_mask (Tensor[B, A])`` bool foreground anchors; ``gt_index (Tensor[B, A])`` long index into the padded
    ground truth (meaningful where ``fg_mask``); ``target_boxes (Tensor[B, A, 4])`` xyxy pixels;
    ``target_scores (Tensor[B, A, nc])`` soft class targets (zero rows for background).
    """

    fg_mask: Tensor
    gt_index: Tensor
    target_boxes: Tensor
    target_scores: Tensor

    @classmethod
    def empty(cls, batch_size: int, num_anchors: int, nc: int, device: torch.device) -> Assignment:
        """All anchors background (a batch without any ground truth)."""
        return cls(
            fg_mask=torch.zeros(batch_size, num_anchors, dtype=torch.bool, device=device),
            gt_index=torch.zeros(batch_size, num_anchors, dtype=torch.long, device=device),
            target_boxes=torch.zeros(batch_size, num_anchors, 4, device=device),
            target_scores=torch.zeros(batch_size, num_anchors, nc, device=device),
        )
