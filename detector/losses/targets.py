"""Ground truth of a collated batch, padded to a dense (B, M) layout so assigners need no per-image loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from detector.errors import DetectorError


@dataclass
class PaddedTargets:
    """Per-image ground truth padded to the largest image's count ``M``.

    ``labels (Tensor[B, M])`` long class ids, ``boxes (Tensor[B, M, 4])`` xyxy pixels of the network input,
    ``mask (Tensor[B, M])`` True for real boxes (False for padding).
    """

    labels: Tensor
    boxes: Tensor
    mask: Tensor

    @property
    def max_boxes(self) -> int:
        return self.labels.shape[1]

    def to(self, device: torch.device, non_blocking: bool = False) -> PaddedTargets:
        return PaddedTargets(
            self.labels.to(device, non_blocking=non_blocking),
            self.boxes.to(device, non_blocking=non_blocking),
            self.mask.to(device, non_blocking=non_blocking),
        )


def batch_targets(batch: Mapping, batch_size: int, nc: int, device: torch.device) -> PaddedTargets:
    """The padded ground truth of ``batch``: its ``targets`` entry when the training step already padded it on
    the host (fixed size, no device synchronisation), else padded here from ``cls`` / ``bboxes`` / ``batch_idx``."""
    padded = batch.get("targets")
    if isinstance(padded, PaddedTargets):
        return padded
    return pad_targets(batch, batch_size, nc, device)


def pad_targets(
    batch: Mapping, batch_size: int, nc: int, device: torch.device, max_boxes: int | None = None
) -> PaddedTargets:
    """Collated ``batch`` (``cls (N,)``, ``bboxes (N, 4)`` xyxy, ``batch_idx (N,)``) -> ``PaddedTargets``.

    ``M`` is the largest image's box count, or ``max_boxes`` when given (a fixed size, so a captured training
    step sees the same shapes every batch; an image with more boxes raises ``DetectorError``). The checks read
    one small tensor back to the host: call this on the loader's CPU tensors and move the result, so the
    device never waits. A class id outside ``[0, nc)`` raises ``DetectorError`` (a dataset/model class-count
    mismatch).
    """
    cls = torch.as_tensor(batch["cls"], device=device).reshape(-1)
    boxes = torch.as_tensor(batch["bboxes"], device=device, dtype=torch.float32).reshape(-1, 4)
    batch_idx = torch.as_tensor(batch["batch_idx"], device=device).reshape(-1).long()
    n = cls.shape[0]
    if boxes.shape[0] != n or batch_idx.shape[0] != n:
        raise DetectorError(
            f"batch has {n} classes, {boxes.shape[0]} boxes and {batch_idx.shape[0]} batch indices; they must match"
        )
    if n == 0:
        m = max_boxes or 0
        return PaddedTargets(
            labels=torch.zeros(batch_size, m, dtype=torch.long, device=device),
            boxes=torch.zeros(batch_size, m, 4, device=device),
            mask=torch.zeros(batch_size, m, dtype=torch.bool, device=device),
        )
    labels = cls.long()
    counts = torch.bincount(batch_idx.clamp(min=0), minlength=batch_size)
    # one host sync for every check: bad input must stop here, not index out of range on the device
    checks = torch.stack((labels.min(), labels.max(), batch_idx.min(), batch_idx.max(), counts.max()))
    lo, hi, first_image, last_image, m = checks.tolist()
    if lo < 0 or hi >= nc:
        raise DetectorError(
            f"label class id {hi if hi >= nc else lo} is outside [0, {nc}): dataset and model nc differ"
        )
    if first_image < 0 or last_image >= batch_size:
        raise DetectorError(f"batch_idx values {first_image}..{last_image} do not fit a batch of {batch_size} images")
    if max_boxes is not None:
        if m > max_boxes:
            raise DetectorError(f"an image of this batch has {m} boxes, more than the fixed maximum of {max_boxes}")
        m = max_boxes
    order = torch.argsort(batch_idx, stable=True)
    sorted_idx = batch_idx[order]
    first = counts.cumsum(0) - counts  # index of each image's first box in sorted order
    slot = torch.arange(n, device=device) - first[sorted_idx]

    out_labels = torch.zeros(batch_size, m, dtype=torch.long, device=device)
    out_boxes = torch.zeros(batch_size, m, 4, device=device)
    out_mask = torch.zeros(batch_size, m, dtype=torch.bool, device=device)
    out_labels[sorted_idx, slot] = labels[order]
    out_boxes[sorted_idx, slot] = boxes[order]
    out_mask[sorted_idx, slot] = True
    return PaddedTargets(out_labels, out_boxes, out_mask)
