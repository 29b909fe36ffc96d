"""A head's raw per-level maps flattened into per-anchor predictions, with anchor points and strides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from detector.losses.assignment import Assignment
from detector.ops.decode import AnchorCache, dfl_expectation, dist2bbox, flatten_maps


@dataclass
class HeadOutputs:
    """Raw predictions of one head for a batch, anchor-major, in float32.

    ``dist_logits (Tensor[B, A, 4, bins])`` ltrb distance-bin logits, ``cls_logits (Tensor[B, A, nc])``,
    ``points (Tensor[A, 2])`` anchor centres in grid units of their level, ``strides (Tensor[A, 1])``.
    """

    dist_logits: Tensor
    cls_logits: Tensor
    points: Tensor
    strides: Tensor

    @property
    def batch_size(self) -> int:
        return self.cls_logits.shape[0]

    @property
    def points_px(self) -> Tensor:
        """Anchor centres in input pixels, ``Tensor[A, 2]``."""
        return self.points * self.strides

    def distances(self) -> Tensor:
        """Expected ltrb distance in stride units (softmax over bins, then the mean bin), ``Tensor[B, A, 4]``."""
        return dfl_expectation(self.dist_logits, dim=-1)

    def boxes_grid(self) -> Tensor:
        """Decoded xyxy boxes in grid units of each anchor's level, ``Tensor[B, A, 4]``."""
        return dist2bbox(self.distances(), self.points)


def foreground_box_pairs(assignment: Assignment, out: HeadOutputs, pred_grid: Tensor) -> tuple[Tensor, Tensor]:
    """(predicted, target) boxes in grid units of each anchor's level, both ``Tensor[B, A, 4]``: the prediction
    and its assigned GT box on the foreground, a unit box for both elsewhere.

    Background anchors get a weight of zero in the box losses; a well-formed stand-in pair keeps every IoU term
    finite there, so the zero weight also zeroes their gradient (a degenerate predicted box can make CIoU NaN,
    and a NaN times zero is not zero).
    """
    fg = assignment.fg_mask[..., None]
    unit = pred_grid.new_zeros(4)  # (0, 0, 1, 1), built on the device: no host data to copy (capture-safe)
    unit[2:] = 1.0
    target = assignment.target_boxes / out.strides
    return torch.where(fg, pred_grid, unit), torch.where(fg, target, unit)


class HeadOutputReader:
    """Splits raw maps ``[(B, 4 * bins + nc, H_i, W_i)]`` of ``head`` (attributes ``nc``, ``bins``, ``strides``,
    ``anchor_offset``) into ``HeadOutputs``, with the layout and anchors of ``detector.ops.decode``."""

    def __init__(self, head: Any) -> None:
        self.nc = int(head.nc)
        self.bins = int(head.bins)
        self.strides = [float(s) for s in head.strides]
        self.anchors = AnchorCache(self.strides, float(head.anchor_offset))

    def __call__(self, maps: list[Tensor]) -> HeadOutputs:
        if len(maps) != len(self.strides):
            raise ValueError(f"loss got {len(maps)} maps for a head with {len(self.strides)} strides")
        dist, cls = flatten_maps(maps, self.nc, self.bins)  # (B, 4 * bins, A), (B, nc, A)
        b = dist.shape[0]
        points, strides = self.anchors(maps)
        return HeadOutputs(dist.transpose(1, 2).reshape(b, -1, 4, self.bins), cls.transpose(1, 2), points, strides)
