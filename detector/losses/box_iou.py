"""Element-wise (aligned) IoU variants for pairs of xyxy boxes.

torchvision's ``box_iou`` / ``generalized_box_iou`` / ``complete_box_iou`` are pairwise (N x M) and 2-D only;
losses and assigners need the IoU of matched pairs (or of broadcast batched grids), so these helpers work
element-wise over any broadcastable leading shape. CIoU and GIoU reuse torchvision's element-wise loss ops.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

_MIN_SIDE = 1e-6  # keeps the CIoU aspect term (atan(w / h)) finite for degenerate boxes


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Plain IoU of ``boxes1 (Tensor[..., 4])`` and ``boxes2 (Tensor[..., 4])``, xyxy, broadcast -> ``Tensor[...]``."""
    x1 = torch.maximum(boxes1[..., 0], boxes2[..., 0])
    y1 = torch.maximum(boxes1[..., 1], boxes2[..., 1])
    x2 = torch.minimum(boxes1[..., 2], boxes2[..., 2])
    y2 = torch.minimum(boxes1[..., 3], boxes2[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area1 = (boxes1[..., 2] - boxes1[..., 0]).clamp(min=0) * (boxes1[..., 3] - boxes1[..., 1]).clamp(min=0)
    area2 = (boxes2[..., 2] - boxes2[..., 0]).clamp(min=0) * (boxes2[..., 3] - boxes2[..., 1]).clamp(min=0)
    return inter / (area1 + area2 - inter + eps)


def _with_min_size(boxes: Tensor) -> Tensor:
    """Push x2/y2 to at least x1/y1 + 1e-6 so zero-size boxes do not produce 0/0 in the aspect term."""
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat((x1y1, torch.maximum(x2y2, x1y1 + _MIN_SIDE)), -1)


def aligned_ciou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Complete IoU of matched pairs ``boxes1, boxes2 (Tensor[N, 4])`` xyxy -> ``Tensor[N]`` in [-1.5, 1]."""
    if boxes1.numel() == 0:
        return boxes1.sum(-1) * 0.0  # empty, but still in the autograd graph (DDP expects every head used)
    return 1.0 - complete_box_iou_loss(_with_min_size(boxes1), _with_min_size(boxes2), reduction="none")


def aligned_giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of matched pairs ``boxes1, boxes2 (Tensor[N, 4])`` xyxy -> ``Tensor[N]`` in [-1, 1]."""
    if boxes1.numel() == 0:
        return boxes1.sum(-1) * 0.0  # empty, but still in the autograd graph (DDP expects every head used)
    return 1.0 - generalized_box_iou_loss(boxes1, boxes2, reduction="none")
