"""Mosaic (four images around a random centre on a 2S x 2S canvas) and MixUp (blend two samples)."""

from __future__ import annotations

import cv2
import numpy as np

from detector.data.crop_resize import paste
from detector.data.geometry import PAD_VALUE
from detector.data.targets import Targets


def mosaic_centre(size: int, rng: np.random.Generator) -> tuple[int, int]:
    """The mosaic's centre ``(xc, yc)`` on the ``2 * size`` canvas, drawn in its middle half, so every image keeps
    at least part of itself in view after the usual crop to the central ``size x size``."""
    xc, yc = (int(v) for v in rng.uniform(0.5 * size, 1.5 * size, 2))
    return xc, yc


def mosaic4(parts: list[tuple[np.ndarray, Targets]], size: int, rng: np.random.Generator) -> tuple[np.ndarray, Targets]:
    """Tile four ``(img (ndarray[h, w, 3]), targets)`` (longer side <= ``size``) around a random centre.

    Returns a ``(2 * size, 2 * size, 3)`` canvas padded with 114 and the boxes moved onto it, each cut to the
    part of its image that is visible.
    """
    canvas = np.empty((2 * size, 2 * size, 3), dtype=np.uint8)
    return canvas, mosaic_into(canvas, (0, 0), parts, size, mosaic_centre(size, rng))


def mosaic_into(
    out: np.ndarray,
    origin: tuple[int, int],
    parts: list[tuple[np.ndarray, Targets]],
    size: int,
    centre: tuple[int, int],
) -> Targets:
    """Fill ``out`` (ndarray[h, w, 3] uint8) with the part of the mosaic canvas (``mosaic4`` around ``centre``)
    that starts at canvas point ``origin`` ``(x, y)``; ``out`` may reach past the canvas (padding there too).
    Returns the boxes of the whole canvas.

    Building only the part a warp reads saves most of the fill and copies: a view of a full-size canvas for
    ``warp`` (``geometry.source_window``: the rest is never read, and the warpAffine call and its pixels stay
    those of the whole canvas), or the crop a zoom-and-shift resizes (``crop_resize``).
    """
    if len(parts) != 4:
        raise ValueError(f"mosaic4 needs 4 images, got {len(parts)}")
    s2 = 2 * size
    out[...] = PAD_VALUE
    xc, yc = centre
    moved = []
    for k, (img, t) in enumerate(parts):
        h, w = img.shape[:2]
        # window (x1a, y1a, x2a, y2a) on the canvas; the image's corner nearest the centre sits on the centre
        x1a, x2a = (max(xc - w, 0), xc) if k in (0, 2) else (xc, min(xc + w, s2))
        y1a, y2a = (max(yc - h, 0), yc) if k in (0, 1) else (yc, min(yc + h, s2))
        x1b = w - (x2a - x1a) if k in (0, 2) else 0  # where the window starts inside the image
        y1b = h - (y2a - y1a) if k in (0, 1) else 0
        moved.append(t.scaled(1, 1, x1a - x1b, y1a - y1b).clipped(x1a, y1a, x2a, y2a))
        paste(out, origin, img[y1b : y1b + (y2a - y1a), x1b : x1b + (x2a - x1a)], (x1a, y1a))
    return Targets.concat(moved)


def mixup(
    a: tuple[np.ndarray, Targets], b: tuple[np.ndarray, Targets], rng: np.random.Generator
) -> tuple[np.ndarray, Targets]:
    """Blend two same-size samples with a weight drawn from Beta(32, 32) (near 0.5); keep both sets of boxes."""
    r = rng.beta(32.0, 32.0)
    img = cv2.addWeighted(a[0], r, b[0], 1 - r, 0)
    return img, Targets.concat([a[1], b[1]])
