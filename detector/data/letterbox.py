"""Letterbox: resize keeping the aspect ratio, then pad to a target shape (numpy/OpenCV only).

Shared by the data pipeline, ``predict`` and ``deploy/``: a box in the letterboxed image maps back to the
original with ``original = (letterboxed - (padw, padh)) / ratio``.
"""

from __future__ import annotations

import cv2
import numpy as np


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int],
    stride: int = 32,
    auto: bool = False,
    scaleup: bool = True,
    color: int | tuple[int, int, int] = 114,
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit ``img (ndarray[H, W, C])`` into ``new_shape`` ``(h, w)`` (an int means square).

    Args:
        stride: with ``auto``, pad only up to the next multiple of ``stride`` instead of to ``new_shape``.
        auto: minimal padding (rectangular output), used for single-image inference.
        scaleup: allow enlarging; False only shrinks (validation keeps small images small).
        color: padding value, one for all channels or one per channel.

    Returns:
        ``(out, ratio, (padw, padh))``: the padded image, the resize factor, and the left/top padding in
        pixels (the image content starts at column ``padw``, row ``padh``).
    """
    h, w = img.shape[:2]
    nh, nw = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    rw, rh = max(1, round(w * r)), max(1, round(h * r))
    dw, dh = nw - rw, nh - rh
    if auto:
        dw, dh = dw % stride, dh % stride
    if (rw, rh) != (w, h):
        interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (rw, rh), interpolation=interp)
    left, top = dw // 2, dh // 2
    if dw or dh:
        value = (color,) * 3 if isinstance(color, int) else tuple(color)
        img = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=value)
    return img, r, (left, top)
