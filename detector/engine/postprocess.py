"""Post-processing of decoded predictions: class-aware NMS and mapping boxes back to the original image.

Shared by validation and predict; ``deploy/`` keeps numpy twins tested for equality.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

MAX_CANDIDATES = 30000  # per image, before NMS: bounds NMS time when conf is tiny (validation uses 0.001)


def _candidates(
    scores: Tensor, conf: float, multi_label: bool, classes: Sequence[int] | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(image, anchor, class, score) of every candidate above ``conf``; ``scores (Tensor[B, A, nc])``."""
    if classes is not None:
        keep = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        keep[torch.as_tensor(list(classes), dtype=torch.long, device=scores.device)] = True
        scores = scores * keep
    if multi_label:
        image, anchor, cls = (scores > conf).nonzero(as_tuple=True)
        return image, anchor, cls, scores[image, anchor, cls]
    best, cls = scores.max(-1)
    image, anchor = (best > conf).nonzero(as_tuple=True)
    return image, anchor, cls[image, anchor], best[image, anchor]


def _rank_within_image(image: Tensor, order_key: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Sort candidates by image, then by descending ``order_key``; return the order and each one's rank in its image."""
    by_score = order_key.argsort(descending=True, stable=True)
    by_image = image[by_score].argsort(stable=True)
    order = by_score[by_image]
    counts = torch.bincount(image, minlength=batch_size)
    first = counts.cumsum(0) - counts
    rank = torch.arange(order.numel(), device=image.device) - first[image[order]]
    return order, rank


def non_max_suppression(
    pred: Tensor,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    max_candidates: int = MAX_CANDIDATES,
) -> list[Tensor]:
    """Class-aware NMS over a batch of decoded predictions.

    Args:
        pred (Tensor[B, 4 + nc, A]): xyxy boxes then class scores in 0..1 (a head's eval output).
        conf: keep (box, class) pairs with score strictly above this.
        iou: suppress a box overlapping a higher-scored kept box of the same class (or any, if ``agnostic``)
            by more than this IoU.
        max_det: at most this many detections per image, the highest-scored.
        multi_label: a box may yield one detection per class above ``conf``; else only its best class.
        classes: keep only these class ids.
        max_candidates: per image, only the highest-scored candidates enter NMS.

    Returns:
        One ``Tensor[n, 6]`` per image: ``x1, y1, x2, y2, score, class``, sorted by descending score.
    """
    b, c, _ = pred.shape
    nc = c - 4
    boxes = pred[:, :4].transpose(1, 2)  # (B, A, 4)
    scores = pred[:, 4:].transpose(1, 2)  # (B, A, nc)
    image, anchor, cls, score = _candidates(scores, conf, multi_label, classes)

    order, rank = _rank_within_image(image, score, b)
    order = order[rank < max_candidates]
    image, anchor, cls, score = image[order], anchor[order], cls[order], score[order]

    group = image if agnostic else image * nc + cls  # NMS never crosses images
    keep = batched_nms(boxes[image, anchor].float(), score.float(), group, iou)  # sorted by descending score
    order, rank = _rank_within_image(image[keep], score[keep], b)
    keep = keep[order[rank < max_det]]  # grouped by image, each by descending score

    image = image[keep]
    dets = torch.cat((boxes[image, anchor[keep]], score[keep, None], cls[keep, None].to(pred.dtype)), 1)
    return list(dets.split(torch.bincount(image, minlength=b).tolist()))


def scale_boxes(
    boxes: Tensor,
    ratio_pad: tuple[float | Sequence[float], Sequence[float]],
    ori_shape: Sequence[int],
) -> Tensor:
    """Map xyxy boxes from the letterboxed input back to the original image, clipped to it.

    Args:
        boxes (Tensor[N, 4]): xyxy in pixels of the letterboxed image.
        ratio_pad: ``(ratio, (padw, padh))`` as the letterbox returned it; ``ratio`` is one gain or ``(rw, rh)``.
        ori_shape: ``(h0, w0)`` of the original image.

    Returns:
        Tensor[N, 4]: ``(boxes - pad) / ratio`` clipped to ``[0, w0] x [0, h0]`` (a new tensor).
    """
    ratio, (padw, padh) = ratio_pad
    rw, rh = (ratio, ratio) if isinstance(ratio, (int, float)) else (float(ratio[0]), float(ratio[1]))
    h0, w0 = int(ori_shape[0]), int(ori_shape[1])
    pad = boxes.new_tensor([padw, padh, padw, padh])
    gain = boxes.new_tensor([rw, rh, rw, rh])
    out = (boxes[..., :4] - pad) / gain
    limit = boxes.new_tensor([w0, h0, w0, h0])
    return torch.minimum(out.clamp(min=0), limit)
