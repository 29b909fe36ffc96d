"""Anchor-free DFL detection heads: the shared ``DFLHead`` base (raw layout, decode) and DDetect (YOLOv9 / GELAN)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detector.nn.block import Head
from detector.nn.conv import Conv
from detector.registry import BLOCKS


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


def make_anchors(
    shapes: list[tuple[int, int]], strides: list[float], offset: float = 0.5, device=None, dtype=None
) -> tuple[Tensor, Tensor]:
    """Anchor points of every cell of every level, in grid units, and each point's stride.

    Returns ``points (Tensor[A, 2])`` as (x, y) and ``stride (Tensor[A, 1])``, A = sum(H_i * W_i).
    """
    points, stride_col = [], []
    for (h, w), s in zip(shapes, strides):
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).reshape(-1, 2))
        stride_col.append(torch.full((h * w, 1), s, device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_col)


def dist2bbox(distance: Tensor, points: Tensor, dim: int = -1) -> Tensor:
    """(left, top, right, bottom) distances from ``points`` -> (x1, y1, x2, y2) boxes along ``dim``."""
    lt, rb = distance.chunk(2, dim)
    return torch.cat((points - lt, points + rb), dim)


def bbox2dist(points: Tensor, boxes: Tensor, reg_max: float) -> Tensor:
    """Inverse of ``dist2bbox``: xyxy ``boxes (Tensor[..., 4])`` -> ltrb distances clamped to [0, reg_max]."""
    x1y1, x2y2 = boxes.chunk(2, -1)
    return torch.cat((points - x1y1, x2y2 - points), -1).clamp_(0, reg_max)


class DFL(nn.Module):
    """Distribution focal integral: softmax over ``reg_max`` bins, then the expected bin index.

    Shapes: (B, 4 * reg_max, A) -> (B, 4, A).
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, a = x.shape
        x = x.reshape(b, 4, self.reg_max, a).softmax(2)  # reshape: a channels_last input is not contiguous
        return torch.einsum("bkra,r->bka", x, self.project.to(x.dtype))


class BinnedHead(Head):
    """Base of heads whose boxes are ``bins``-bin distance distributions per side (DFL / GFL integral).

    Holds what decoding needs: ``bins``, the raw channel count ``no``, the integral ``dfl`` and cached anchors;
    subclasses build the convolutions and ``forward_raw``.
    """

    def __init__(self, nc: int, strides: list[float], bins: int, loss_weight: float = 1.0) -> None:
        super().__init__(nc, strides, loss_weight)
        self.bins = bins
        self.no = nc + 4 * bins
        self.dfl = DFL(bins)
        self._anchor_cache: tuple[tuple, Tensor, Tensor] | None = None

    def anchors(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Anchor points and strides for these map sizes, cached while the sizes stay the same."""
        key = tuple(m.shape[2:] for m in maps) + (maps[0].device, maps[0].dtype)
        if self._anchor_cache is None or self._anchor_cache[0] != key or torch.jit.is_tracing():
            shapes = [tuple(m.shape[2:]) for m in maps]
            pts, st = make_anchors(shapes, self.strides, self.anchor_offset, maps[0].device, maps[0].dtype)
            self._anchor_cache = (key, pts, st)
        return self._anchor_cache[1], self._anchor_cache[2]

    def decode(self, maps: list[Tensor]) -> Tensor:
        """Raw per-level maps -> ``(B, 4 + nc, A)`` with xyxy pixel boxes and sigmoid scores."""
        b = maps[0].shape[0]
        flat = torch.cat([m.reshape(b, self.no, -1) for m in maps], 2)  # (B, no, A); maps may be channels_last
        dist, logits = flat.split((4 * self.bins, self.nc), 1)
        points, stride = self.anchors(maps)
        boxes = dist2bbox(self.dfl(dist), points.t().unsqueeze(0), dim=1) * stride.t()
        return torch.cat((boxes, logits.sigmoid()), 1)


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
        self.reg_max = reg_max

    def init_bias(self) -> None:
        """Box bias 1.0; class bias so that the initial score is ~5 objects per 640x640 image."""
        for box, cls, s in zip(self.box, self.cls, self.strides):
            box[-1].bias.data[:] = 1.0
            cls[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)

    def forward_raw(self, xs: list[Tensor]) -> list[Tensor]:
        return [torch.cat((b(x), c(x)), 1) for x, b, c in zip(xs, self.box, self.cls)]


@BLOCKS.register()
class DDetect(DFLHead):
    """Decoupled anchor-free head with DFL box regression (YOLOv9 DDetect).

    Per level: box branch Conv3x3 -> c_box, Conv3x3 (groups 4), 1x1 (groups 4) -> 4*reg_max;
    cls branch Conv3x3 -> c_cls, Conv3x3, 1x1 -> nc. Widths come from the first (stride-8) input.
    Raw maps and decode: see ``DFLHead``.
    """

    def __init__(self, c1: list[int], nc: int, strides: list[float], reg_max: int = 16, loss_weight: float = 1.0):
        super().__init__(nc, strides, reg_max, loss_weight)
        c_box = make_divisible(max(c1[0] // 4, reg_max * 4, 16), 4)
        c_cls = max(c1[0], min(nc * 2, 128))
        self.box = nn.ModuleList(
            nn.Sequential(Conv(c, c_box, 3), Conv(c_box, c_box, 3, g=4), nn.Conv2d(c_box, 4 * reg_max, 1, groups=4))
            for c in c1
        )
        self.cls = nn.ModuleList(
            nn.Sequential(Conv(c, c_cls, 3), Conv(c_cls, c_cls, 3), nn.Conv2d(c_cls, nc, 1)) for c in c1
        )
        self.init_bias()
