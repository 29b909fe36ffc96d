"""Anchor-free DFL detection heads: the shared ``DFLHead`` base (raw layout, decode) and DDetect (YOLOv9 / GELAN).

``make_anchors``, ``dist2bbox`` and ``bbox2dist`` live in ``detector.ops.decode`` (re-exported here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detector.nn.block import Head
from detector.nn.conv import Conv
from detector.ops.decode import AnchorCache, bbox2dist, decode_maps, dist2bbox, make_anchors
from detector.registry import BLOCKS

__all__ = ["BinnedHead", "DDetect", "DFLHead", "bbox2dist", "dist2bbox", "make_anchors", "make_divisible"]


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


class BinnedHead(Head):
    """Base of heads whose boxes are ``bins``-bin distance distributions per side (DFL / GFL integral).

    ``reg_max`` means the same in every such head: the number of bins per side (distances ``0 .. reg_max - 1``
    in stride units), so ``bins == reg_max``. Holds what decoding needs (``bins``, the raw channel count ``no``,
    cached anchors); subclasses build the convolutions and ``forward_raw``. Decoding: ``detector.ops.decode``.
    """

    def __init__(self, nc: int, strides: list[float], bins: int, loss_weight: float = 1.0) -> None:
        super().__init__(nc, strides, loss_weight)
        if int(bins) < 2:
            raise ValueError(f"reg_max={bins}: a distance distribution needs at least 2 bins")
        self.bins = self.reg_max = int(bins)
        self.no = nc + 4 * self.bins
        self.anchors = AnchorCache(self.strides, self.anchor_offset)

    def decode(self, maps: list[Tensor]) -> Tensor:
        """Raw per-level maps -> ``(B, 4 + nc, A)`` float32 with xyxy pixel boxes and sigmoid scores."""
        return decode_maps(maps, self.nc, self.bins, self.anchors)


class DFLHead(BinnedHead):
    """Base of the anchor-free DFL heads: per-level ``box`` and ``cls`` branches, shared raw layout and decode.

    A subclass builds ``self.box`` and ``self.cls`` (one ``nn.Sequential`` per level, the last layer of each a
    plain biased ``nn.Conv2d`` to ``4 * reg_max`` and ``nc`` channels) and then calls ``init_bias()``.

    Training: list of raw maps ``(B, 4*reg_max + nc, H_i, W_i)``.
    Eval: ``(B, 4 + nc, A)``: xyxy boxes in input pixels, then sigmoid class scores.
    """

    loss = "tal"
    box: nn.ModuleList
    cls: nn.ModuleList

    def __init__(self, nc: int, strides: list[float], reg_max: int = 16, loss_weight: float = 1.0) -> None:
        super().__init__(nc, strides, reg_max, loss_weight)

    def init_bias(self, box_bias: float = 1.0) -> None:
        """Box bias ``box_bias``; class bias so that the initial score is ~5 objects per 640x640 image."""
        for box, cls, s in zip(self.box, self.cls, self.strides):
            box[-1].bias.data[:] = box_bias
            cls[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)

    def forward_raw(self, xs: list[Tensor]) -> list[Tensor]:
        return [torch.cat((b(x), c(x)), 1) for x, b, c in zip(xs, self.box, self.cls)]


@BLOCKS.register()
class DDetect(DFLHead):
    """Decoupled anchor-free head with DFL box regression (YOLOv9 DDetect), also in Ultralytics' widths.

    Per level: box branch Conv3x3 -> c_box, Conv3x3 (``box_groups`` groups), 1x1 (``box_groups``) -> 4*reg_max;
    cls branch Conv3x3 -> c_cls, Conv3x3, 1x1 -> nc. Widths come from the first (stride-8) input ``c1[0]``:

    - ``c_box = max(c1[0] // 4, 4 * reg_max, 16)``, rounded up to a multiple of ``box_groups``;
    - ``c_cls = max(c1[0], min(cls_per_class * nc, cls_cap))``.

    The defaults are the YOLOv9 paper's DDetect (``box_groups: 4, cls_per_class: 2, cls_cap: 128, box_bias:
    1.0``); Ultralytics' ``Detect`` of its yolov9t..e is ``box_groups: 1, cls_per_class: 1, cls_cap: 100,
    box_bias: 2.0`` (``box_bias`` is only the initial box-output bias). Raw maps and decode: see ``DFLHead``.
    """

    def __init__(
        self,
        c1: list[int],
        nc: int,
        strides: list[float],
        reg_max: int = 16,
        loss_weight: float = 1.0,
        box_groups: int = 4,
        cls_per_class: int = 2,
        cls_cap: int = 128,
        box_bias: float = 1.0,
    ):
        super().__init__(nc, strides, reg_max, loss_weight)
        if box_groups < 1 or (4 * reg_max) % box_groups:
            raise ValueError(f"box_groups={box_groups}: must be >= 1 and divide 4 * reg_max = {4 * reg_max}")
        c_box = make_divisible(max(c1[0] // 4, reg_max * 4, 16), box_groups)
        c_cls = max(c1[0], min(nc * cls_per_class, cls_cap))
        g = box_groups
        self.box = nn.ModuleList(
            nn.Sequential(Conv(c, c_box, 3), Conv(c_box, c_box, 3, g=g), nn.Conv2d(c_box, 4 * reg_max, 1, groups=g))
            for c in c1
        )
        self.cls = nn.ModuleList(
            nn.Sequential(Conv(c, c_cls, 3), Conv(c_cls, c_cls, 3), nn.Conv2d(c_cls, nc, 1)) for c in c1
        )
        self.init_bias(box_bias)
