"""Mosaic (four images around a random centre on a 2S x 2S canvas) and MixUp (blend two samples)."""

from __future__ import annotations

import cv2
import numpy as np

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
    return mosaic4_at(parts, size, mosaic_centre(size, rng))


def mosaic4_at(
    parts: list[tuple[np.ndarray, Targets]],
    size: int,
    centre: tuple[int, int],
    window: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, Targets]:
    """``mosaic4`` around a given ``centre``; with ``window`` ``(x1, y1, x2, y2)`` only that part of the canvas is
    filled in: the rest of the ``2 * size`` canvas is left uninitialised (whatever the memory held) and must not
    be read. Boxes are those of the whole canvas either way.

    A warp that reads only part of the canvas (``geometry.source_window``: a zoom-in reads a third of it on
    average) then costs only that part's fill and copies, and its pixels are exactly those of the whole canvas:
    the canvas keeps its size, so the warp itself is the same call (a cropped canvas would change OpenCV's
    float32 source coordinates and with them a few pixels).
    """
    if len(parts) != 4:
        raise ValueError(f"mosaic4 needs 4 images, got {len(parts)}")
    s2 = 2 * size
    wx1, wy1, wx2, wy2 = window or (0, 0, s2, s2)
    canvas = np.empty((s2, s2, 3), dtype=np.uint8)
    canvas[wy1:wy2, wx1:wx2] = PAD_VALUE
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
        # the part of this tile inside the built window, if any
        cx1, cy1, cx2, cy2 = max(x1a, wx1), max(y1a, wy1), min(x2a, wx2), min(y2a, wy2)
        if cx1 < cx2 and cy1 < cy2:
            sx, sy = x1b + cx1 - x1a, y1b + cy1 - y1a
            canvas[cy1:cy2, cx1:cx2] = img[sy : sy + cy2 - cy1, sx : sx + cx2 - cx1]
    return canvas, Targets.concat(moved)


def mixup(
    a: tuple[np.ndarray, Targets], b: tuple[np.ndarray, Targets], rng: np.random.Generator
) -> tuple[np.ndarray, Targets]:
    """Blend two same-size samples with a weight drawn from Beta(32, 32) (near 0.5); keep both sets of boxes."""
    r = rng.beta(32.0, 32.0)
    img = cv2.addWeighted(a[0], r, b[0], 1 - r, 0)
    return img, Targets.concat([a[1], b[1]])
