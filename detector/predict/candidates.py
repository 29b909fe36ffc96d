"""The fused head post-processing as the runtime and the exporter use it: raw maps -> top-K candidates -> NMS.

``cuda_ops.decode_topk`` does DFL expectation, anchor decode, class max (or multi-label), score threshold and
per-image top-K in one pass and never writes the dense ``(B, 4 + nc, A)`` tensor. Around it:

- ``head_inputs``: the head's raw per-level maps flattened to ``(B, no, A)`` float32 with anchor points and
  strides (the same anchors ``BinnedHead.decode`` uses);
- ``nms_candidates``: per-image class-aware NMS over each image's valid candidates, giving the rows
  ``non_max_suppression`` gives (``x1, y1, x2, y2, score, class``);
- ``pack_dense``: candidates as a ``(B, 4 + nc, K)`` tensor in ``output0``'s layout (xyxy, then one score
  column per class, 0 elsewhere, -1 for empty slots), so every NMS that reads ``output0`` reads it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

DEFAULT_TOPK = 1000
"""Candidates kept per image before NMS: at predict thresholds (conf 0.25) a trained model has far fewer;
validation at conf 0.001 should use the dense path, which keeps up to 30000."""


@dataclass(frozen=True)
class Candidates:
    """Per-image top-K after thresholding, best first; slots past ``counts[b]`` are unused.

    ``boxes (Tensor[B, K, 4])`` xyxy input pixels, ``scores (Tensor[B, K])``, ``classes (Tensor[B, K])`` int,
    ``counts (Tensor[B])`` int.
    """

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    counts: Tensor

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.boxes, self.scores, self.classes, self.counts


def head_inputs(head, maps: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``maps [(B, no, H_i, W_i)]`` -> ``raw (Tensor[B, no, A])`` float32, ``points (Tensor[A, 2])`` (x, y) in
    grid units, ``strides (Tensor[A, 1])``, both float32."""
    maps = [m.float() for m in maps]  # decode in float32 whatever the body ran in
    b = maps[0].shape[0]
    raw = torch.cat([m.reshape(b, head.no, -1) for m in maps], 2)  # (B, no, A)
    points, strides = head.anchors(maps)
    return raw, points, strides


def nms_candidates(
    cand: Candidates,
    iou: float,
    max_det: int,
    agnostic: bool = False,
    classes: Sequence[int] | None = None,
) -> list[Tensor]:
    """Class-aware NMS per image over the valid candidates: one ``Tensor[n, 6]`` per image, best first.

    The counts are read on the host once per batch (NMS itself has data-dependent output sizes).
    """
    out = []
    for b, n in enumerate(cand.counts.tolist()):
        boxes, scores, cls = cand.boxes[b, :n].float(), cand.scores[b, :n].float(), cand.classes[b, :n].long()
        if classes is not None:
            keep = torch.isin(cls, torch.as_tensor(list(classes), device=cls.device))
            boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
        keep = batched_nms(boxes, scores, torch.zeros_like(cls) if agnostic else cls, iou)[:max_det]
        out.append(torch.cat((boxes[keep], scores[keep, None], cls[keep, None].float()), 1))
    return out


def pack_dense(cand: Candidates, nc: int) -> Tensor:
    """Candidates -> ``(Tensor[B, 4 + nc, K])``: boxes, then the score in its class's row (0 in the others);
    empty slots score -1 in every row, so a threshold >= 0 never keeps them."""
    k = cand.scores.shape[1]
    slot = torch.arange(k, device=cand.scores.device)
    valid = slot[None, :] < cand.counts.reshape(-1, 1)  # (B, K)
    onehot = cand.classes.long()[..., None] == torch.arange(nc, device=cand.scores.device)  # (B, K, nc)
    scores = torch.where(onehot, cand.scores[..., None], torch.zeros((), dtype=cand.scores.dtype))
    scores = torch.where(valid[..., None], scores, torch.full((), -1.0, dtype=cand.scores.dtype))
    return torch.cat((cand.boxes, scores), 2).transpose(1, 2)  # (B, 4 + nc, K)


def decode_candidates(
    raw: Tensor,
    points: Tensor,
    strides: Tensor,
    nc: int,
    bins: int,
    conf: float,
    k: int,
    multi_label: bool = False,
    impl: str = "auto",
) -> Candidates:
    """``cuda_ops.decode_topk`` on ``head_inputs``' tensors: the Triton kernel or its PyTorch reference."""
    import cuda_ops

    out = cuda_ops.decode_topk(
        raw, points, strides, nc=nc, reg_max=bins, conf=conf, k=k, multi_label=multi_label, impl=impl
    )
    return Candidates(*out)
