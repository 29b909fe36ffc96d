"""Post-processing of decoded predictions: class-aware NMS and mapping boxes back to the original image.

Shared by validation and predict; ``deploy/`` keeps numpy twins tested for equality.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

# per image, before NMS: bounds NMS time when conf is tiny (validation uses 0.001). Kept below torchvision's
# switch to a per-class Python loop in batched_nms on CUDA (boxes.numel() > 100,000, i.e. 25,000 boxes)
MAX_CANDIDATES = 20000


def _candidates(
    scores: Tensor, conf: float, multi_label: bool, classes: Sequence[int] | None, max_candidates: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(image, anchor, class, score) of each image's ``max_candidates`` best candidates above ``conf``.

    ``scores (Tensor[B, A, nc])``. One batched top-k instead of a threshold-then-sort, so an untrained model at
    conf 0.001 (millions of candidates) costs no more than a trained one.
    """
    b, _, nc = scores.shape
    if classes is not None:
        keep = torch.zeros(nc, dtype=torch.bool, device=scores.device)
        keep[torch.as_tensor(list(classes), dtype=torch.long, device=scores.device)] = True
        scores = scores * keep
    if multi_label:
        flat = scores.reshape(b, -1)  # (B, A * nc), index = anchor * nc + class
    else:
        flat, best_cls = scores.max(-1)  # (B, A)
    top, index = flat.topk(min(max_candidates, flat.shape[1]), dim=1)  # (B, K), descending
    ok = top > conf
    image = torch.arange(b, device=scores.device)[:, None].expand_as(index)[ok]
    index, score = index[ok], top[ok]
    if multi_label:
        return image, index // nc, index % nc, score
    return image, index, best_cls[image, index], score


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
    b = pred.shape[0]
    boxes = pred[:, :4].transpose(1, 2)  # (B, A, 4)
    scores = pred[:, 4:].transpose(1, 2)  # (B, A, nc)
    image, anchor, cls, score = _candidates(scores, conf, multi_label, classes, max_candidates)

    counts = torch.bincount(image, minlength=b).tolist()  # candidates come grouped by image
    out = []
    for img_boxes, img_score, img_cls in zip(
        boxes[image, anchor].float().split(counts), score.float().split(counts), cls.split(counts)
    ):
        # per image: torchvision's per-class pass then scans one image's candidates, not the batch's
        keep = batched_nms(img_boxes, img_score, torch.zeros_like(img_cls) if agnostic else img_cls, iou)[:max_det]
        out.append(torch.cat((img_boxes[keep], img_score[keep, None], img_cls[keep, None].float()), 1).to(pred.dtype))
    return out


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
