"""Element-wise (aligned) IoU variants for pairs of xyxy boxes, with fixed shapes and no host synchronisation.

torchvision's ``box_iou`` / ``generalized_box_iou`` / ``complete_box_iou`` are pairwise (N x M) and 2-D only, and
its element-wise losses write the intersection through a boolean mask (``inter[mask] = ...``), which costs a
device-to-host synchronisation and blocks CUDA-graph capture. These helpers compute the same formulas (the same
operations in the same order, so the values are equal to torchvision's) with ``torch.where`` over any
broadcastable leading shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MIN_SIDE = 1e-6  # keeps the CIoU aspect term (atan(w / h)) finite for degenerate boxes
_EPS = 1e-7


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = _EPS) -> Tensor:
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


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection (zero where the boxes do not overlap) and union areas, unclamped sides as torchvision has them."""
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    xk1, yk1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xk2, yk2 = torch.min(x2, x2g), torch.min(y2, y2g)
    overlap = (yk2 > yk1) & (xk2 > xk1)
    inter = torch.where(overlap, (xk2 - xk1) * (yk2 - yk1), torch.zeros_like(xk1))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter, union


def _enclosing(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Corners of the smallest box enclosing both, ``(xc1, yc1, xc2, yc2)``."""
    return (
        torch.min(boxes1[..., 0], boxes2[..., 0]),
        torch.min(boxes1[..., 1], boxes2[..., 1]),
        torch.max(boxes1[..., 2], boxes2[..., 2]),
        torch.max(boxes1[..., 3], boxes2[..., 3]),
    )


def complete_iou(boxes1: Tensor, boxes2: Tensor, eps: float = _EPS) -> Tensor:
    """CIoU of xyxy ``boxes1``, ``boxes2 (Tensor[..., 4])`` (broadcast) -> ``Tensor[...]``; boxes need x2>x1, y2>y1.

    ``IoU - centre_distance^2 / enclosing_diagonal^2 - alpha * v`` with the aspect term
    ``v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2`` and ``alpha = v / (1 - IoU + v)`` (no gradient).
    """
    inter, union = _inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    xc1, yc1, xc2, yc2 = _enclosing(boxes1, boxes2)
    diagonal = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    centre_distance = (((x2 + x1) / 2 - (x1g + x2g) / 2) ** 2) + (((y2 + y1) / 2 - (y1g + y2g) / 2) ** 2)
    diou_loss = 1 - iou + (centre_distance / diagonal)
    v = (4 / (math.pi**2)) * torch.pow(torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1)), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return 1.0 - (diou_loss + alpha * v)


def generalized_iou(boxes1: Tensor, boxes2: Tensor, eps: float = _EPS) -> Tensor:
    """GIoU of xyxy ``boxes1``, ``boxes2 (Tensor[..., 4])`` (broadcast) -> ``Tensor[...]`` in [-1, 1]."""
    inter, union = _inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    xc1, yc1, xc2, yc2 = _enclosing(boxes1, boxes2)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    return iou - ((area_c - union) / (area_c + eps))


def _upcast(boxes: Tensor) -> Tensor:
    """Half-precision boxes in float32 (their areas overflow fp16); float32/float64 as they are."""
    return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()


def aligned_ciou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Complete IoU of matched pairs ``boxes1, boxes2 (Tensor[..., 4])`` xyxy -> ``Tensor[...]`` in [-1.5, 1];
    zero-size boxes are widened by 1e-6 first so the aspect term stays finite."""
    return complete_iou(_with_min_size(_upcast(boxes1)), _with_min_size(_upcast(boxes2)))


def aligned_giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of matched pairs ``boxes1, boxes2 (Tensor[..., 4])`` xyxy -> ``Tensor[...]`` in [-1, 1]."""
    return generalized_iou(_upcast(boxes1), _upcast(boxes2))
