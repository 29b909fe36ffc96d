"""Anchors and box decoding of the raw head layout, written once for heads (eval output) and losses.

Raw layout (every head): per level ``(B, 4 * bins + nc, H_i, W_i)``: left/top/right/bottom distance
distributions over ``bins`` bins (distances ``0 .. bins - 1`` in stride units), then class logits. Anchor
points sit at ``(i + anchor_offset) * stride``. Decoding always runs in float32, whatever dtype the body ran in
(an fp16 model would otherwise round pixel coordinates to 0.5 px above 512 and 1 px above 1024).
"""

from __future__ import annotations

import torch
from torch import Tensor


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


class AnchorCache:
    """float32 anchors of a head's levels, rebuilt only when the map sizes or the device change (always while
    tracing, so an exported graph computes them from its input size; and when anchors made under
    ``torch.inference_mode`` would be used outside it)."""

    def __init__(self, strides: list[float], offset: float) -> None:
        self.strides = [float(s) for s in strides]
        self.offset = float(offset)
        self._cache: tuple[tuple, Tensor, Tensor] | None = None

    def __call__(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``points (Tensor[A, 2])`` in grid units and ``strides (Tensor[A, 1])`` for these raw maps."""
        shapes = [tuple(m.shape[2:]) for m in maps]
        key = (tuple(shapes), maps[0].device)
        stale = self._cache is None or self._cache[0] != key or torch.jit.is_tracing()
        # anchors made under inference_mode cannot enter autograd-tracked code later: remake them there
        # (checked eagerly only: torch.compile cannot trace is_inference(), and compiled training never is)
        if stale or (
            not torch.compiler.is_compiling()
            and self._cache[1].is_inference()
            and not torch.is_inference_mode_enabled()
        ):
            points, strides = make_anchors(shapes, self.strides, self.offset, maps[0].device, torch.float32)
            self._cache = (key, points, strides)
        return self._cache[1], self._cache[2]


def dist2bbox(distance: Tensor, points: Tensor, dim: int = -1) -> Tensor:
    """(left, top, right, bottom) distances from ``points`` -> (x1, y1, x2, y2) boxes along ``dim``."""
    lt, rb = distance.chunk(2, dim)
    return torch.cat((points - lt, points + rb), dim)


def bbox2dist(points: Tensor, boxes: Tensor, reg_max: float) -> Tensor:
    """Inverse of ``dist2bbox``: xyxy ``boxes (Tensor[..., 4])`` -> ltrb distances clamped to [0, reg_max]."""
    x1y1, x2y2 = boxes.chunk(2, -1)
    return torch.cat((points - x1y1, x2y2 - points), -1).clamp_(0, reg_max)


def dfl_expectation(logits: Tensor, dim: int = -1) -> Tensor:
    """Distribution focal integral: softmax over the bins along ``dim``, then the expected bin index.

    E.g. ``(B, 4, bins, A)`` with ``dim=2`` -> ``(B, 4, A)``; ``(B, A, 4, bins)`` with ``dim=-1`` -> ``(B, A, 4)``.
    """
    bins = logits.shape[dim]
    shape = [1] * logits.dim()
    shape[dim] = bins
    project = torch.arange(bins, device=logits.device, dtype=logits.dtype).view(shape)
    return (logits.softmax(dim) * project).sum(dim)


def flatten_maps(maps: list[Tensor], nc: int, bins: int) -> tuple[Tensor, Tensor]:
    """Raw per-level maps -> ``dist (Tensor[B, 4 * bins, A])`` and ``cls (Tensor[B, nc, A])`` logits, float32.

    Raises ``ValueError`` naming the expected layout when a map does not have it.
    """
    channels = 4 * bins + nc
    for m in maps:
        if m.dim() != 4 or m.shape[1] != channels:
            raise ValueError(f"raw map of shape {tuple(m.shape)} does not match (B, 4 * {bins} + {nc}, H, W)")
    b = maps[0].shape[0]
    flat = torch.cat([m.reshape(b, channels, -1) for m in maps], 2).float()  # (B, C, A)
    dist, cls = flat.split((4 * bins, nc), 1)
    return dist, cls


def decode_maps(maps: list[Tensor], nc: int, bins: int, anchors: AnchorCache) -> Tensor:
    """Raw maps -> ``(Tensor[B, 4 + nc, A])`` float32: xyxy boxes in input pixels, then sigmoid class scores."""
    dist, logits = flatten_maps(maps, nc, bins)
    b, _, a = dist.shape
    points, stride = anchors(maps)
    ltrb = dfl_expectation(dist.reshape(b, 4, bins, a), dim=2)  # (B, 4, A) in stride units
    boxes = dist2bbox(ltrb, points.t().unsqueeze(0), dim=1) * stride.t()
    return torch.cat((boxes, logits.sigmoid()), 1)
