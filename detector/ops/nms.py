"""Class-aware NMS of decoded predictions under an ``NMSConfig``.

Shared by validation, ``Detector`` and the benchmark; ``deploy.postprocess`` keeps the numpy twin, tested for
equality.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from deploy.contract import NMSConfig

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
    if bool((top[:, 1:] == top[:, :-1]).any()):  # ties (e.g. cells of uniform padding): topk orders them anyhow
        # equal scores in index order, so the numpy twin and every run keep the same ones
        index, order = index.sort(dim=1)
        top, order = top.gather(1, order).sort(dim=1, descending=True, stable=True)
        index = index.gather(1, order)
    ok = top > conf
    image = torch.arange(b, device=scores.device)[:, None].expand_as(index)[ok]
    index, score = index[ok], top[ok]
    if multi_label:
        return image, index // nc, index % nc, score
    return image, index, best_cls[image, index], score


def non_max_suppression(
    pred: Tensor, cfg: NMSConfig | None = None, max_candidates: int = MAX_CANDIDATES
) -> list[Tensor]:
    """Class-aware NMS over a batch of decoded predictions.

    Args:
        pred (Tensor[B, 4 + nc, A]): xyxy boxes then class scores in 0..1 (a head's eval output).
        cfg: conf, iou, max_det, multi_label, agnostic, classes (see ``NMSConfig``); default
            ``NMSConfig.predict()``.
        max_candidates: per image, only the highest-scored candidates enter NMS.

    Returns:
        One ``Tensor[n, 6]`` per image: ``x1, y1, x2, y2, score, class``, sorted by descending score.
    """
    cfg = cfg or NMSConfig.predict()
    b = pred.shape[0]
    boxes = pred[:, :4].transpose(1, 2)  # (B, A, 4)
    scores = pred[:, 4:].transpose(1, 2)  # (B, A, nc)
    image, anchor, cls, score = _candidates(scores, cfg.conf, cfg.multi_label, cfg.classes, max_candidates)

    counts = torch.bincount(image, minlength=b).tolist()  # candidates come grouped by image
    out = []
    for img_boxes, img_score, img_cls in zip(
        boxes[image, anchor].float().split(counts), score.float().split(counts), cls.split(counts)
    ):
        # per image: torchvision's per-class pass then scans one image's candidates, not the batch's
        groups = torch.zeros_like(img_cls) if cfg.agnostic else img_cls
        keep = batched_nms(img_boxes, img_score, groups, cfg.iou)[: cfg.max_det]
        out.append(torch.cat((img_boxes[keep], img_score[keep, None], img_cls[keep, None].float()), 1).to(pred.dtype))
    return out
